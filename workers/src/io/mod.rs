//! Connections and I/O below the store: NATS (connection, JetStream topology, publishing),
//! Redis connections, tracing and metric names.

pub(crate) mod metrics;
pub mod nats;
pub mod redis;
pub mod trace;

/// Whether `error` (or an error it wraps) is a TLS handshake that failed for good: a
/// certificate we do not trust, a client certificate the server wants, no common protocol.
/// Retrying will not help, so start-up stops with it instead of waiting.
pub(crate) fn tls_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    // rustls errors reach us inside an `io::Error` (whose `source()` skips them) or behind
    // an `Arc` (redis-rs), so besides the type check the message is matched: rustls's
    // `Display` of the permanent handshake failures.
    const PERMANENT: [&str; 4] = [
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
        "peer misbehaved",
    ];
    let mut current = Some(error);
    while let Some(e) = current {
        let inner_is_rustls = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        let text = e.to_string();
        if e.is::<rustls::Error>() || inner_is_rustls || PERMANENT.iter().any(|p| text.contains(p))
        {
            return true;
        }
        current = e.source();
    }
    false
}
