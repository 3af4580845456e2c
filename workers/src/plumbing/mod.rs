//! What every worker shares: connections, the JetStream topology, the one run loop,
//! retry pacing, metrics names, and the health server.

pub mod health;
pub mod lanes;
pub mod metrics;
pub mod nats;
pub mod pulls;
pub mod redis;
pub mod retry;
pub mod runloop;
pub mod trace;

use crate::config::Config;
use crate::store::Store;
use std::sync::Arc;
use threadline_schemas::Subjects;
use tokio_util::sync::CancellationToken;

/// Handles one process's workers share. Cheap to clone.
#[derive(Clone)]
pub struct Plumbing {
    pub config: Arc<Config>,
    pub subjects: Subjects,
    pub nats: async_nats::Client,
    pub publisher: nats::Publisher,
    pub store: Store,
    /// Cancelled on SIGTERM: run loops stop pulling and drain.
    pub shutdown: CancellationToken,
    pub health: health::Health,
    /// Spans and trace context for every handled event; OTLP export when configured.
    pub telemetry: trace::Telemetry,
}

impl Plumbing {
    /// The delivery subject for posts to `conversation`: its channel's partition, so every
    /// post to one conversation goes through one ordered lane.
    pub fn deliver_subject(&self, conversation: &threadline_schemas::ConversationRef) -> String {
        let partition = crate::deliver::partition(conversation, self.config.lanes());
        self.subjects
            .deliver_partition(&conversation.channel, partition)
    }

    /// Connects to NATS and Redis (waiting for them, so start-up order does not matter) and
    /// makes sure the streams exist.
    pub async fn connect(
        config: Arc<Config>,
        shutdown: CancellationToken,
    ) -> Result<Plumbing, nats::TopologyError> {
        let telemetry = trace::Telemetry::new(&config)?;
        Plumbing::connect_with(config, shutdown, health::Health::default(), telemetry).await
    }

    /// [`Plumbing::connect`] reporting readiness to `health` and tracing through
    /// `telemetry`, which may be shared with workers on other runtimes of the process.
    pub async fn connect_with(
        config: Arc<Config>,
        shutdown: CancellationToken,
        health: health::Health,
        telemetry: trace::Telemetry,
    ) -> Result<Plumbing, nats::TopologyError> {
        let subjects = Subjects::new(config.subject_prefix.clone());
        let nats = nats::connect(&config).await?;
        let js = nats::jetstream(&nats);
        nats::ensure_streams(&js, &subjects, &config).await?;
        let store = Store::new(
            redis::connect_store(&config, &shutdown)
                .await
                .map_err(|e| nats::TopologyError::Redis(e.to_string()))?,
            &config,
        );
        // Every worker maps conversations to lanes (the binder and router publish to them,
        // deliverers pull them), so every worker agrees with the deployment: the first one
        // records its count, one configured otherwise refuses to start, and one that leaves
        // it unset takes the recorded count (a deployment set up with another default keeps
        // its lanes across an upgrade).
        let recorded = store
            .record_lane_count(config.lanes())
            .await
            .map_err(|e| nats::TopologyError::Redis(e.to_string()))?;
        let config = match config.delivery_partitions {
            Some(_) if recorded != config.lanes() => {
                return Err(nats::TopologyError::LaneCount {
                    configured: config.lanes(),
                    recorded,
                    key: store.keys().lane_count(),
                })
            }
            Some(_) => config,
            None => Arc::new(Config {
                delivery_partitions: Some(recorded),
                ..(*config).clone()
            }),
        };
        Ok(Plumbing {
            telemetry,
            publisher: nats::Publisher::new(js),
            subjects,
            nats,
            store,
            shutdown,
            health,
            config,
        })
    }
}

/// Whether `error` (or an error it wraps) is a TLS handshake that failed for good: a
/// certificate we do not trust, a client certificate the server wants, no common protocol.
/// Retrying will not help, so start-up stops with it instead of waiting.
pub fn tls_refused(error: &(dyn std::error::Error + 'static)) -> bool {
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
