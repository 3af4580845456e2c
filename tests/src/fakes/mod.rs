//! Loopback fakes of chat-platform HTTP APIs, with scripted fault injection.
//!
//! Each fake binds `127.0.0.1:0`, serves on a tokio task and keeps everything
//! in memory, so a test can point a real adapter at it (through the
//! `THREADLINE_*_API_BASE` settings) and then inspect exactly what the platform
//! would have stored. Dropping a fake's handle shuts its server down.
//!
//! Faults are a FIFO queue per fake: the next message-creating request
//! (Discord message post or thread create, webhook POST) consumes one fault.
//! Other routes (reads) are never faulted, so tests can always read back state.

pub mod discord;
pub mod discord_gateway;
pub mod matrix;
pub(crate) mod openapi;
pub mod slack;
pub mod telegram;
pub mod webhook;

pub use discord::{DiscordMessage, DiscordThread, FakeDiscord};
pub use slack::{FakeSlack, SlackMessage};
pub use webhook::{FakeWebhook, WebhookDelivery};

use std::{
    collections::HashSet,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{connect_info::Connected, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::{IncomingStream, Listener},
    Json, Router,
};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A scripted misbehaviour of the platform for one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer 429 with the platform's rate-limit shape and Retry-After of this many ms.
    RateLimited {
        /// The Retry-After, in milliseconds.
        retry_after_ms: u64,
    },
    /// Answer 500 (platform error shape) without storing anything.
    ServerError,
    /// Sleep this long, then handle the request normally.
    Slow {
        /// The delay before handling, in milliseconds.
        delay_ms: u64,
    },
    /// Store/apply the request exactly as a success would, then never answer
    /// (hold the connection open for `hold_ms`, then drop it without a response).
    AcceptThenHang {
        /// How long the connection is held open, in milliseconds.
        hold_ms: u64,
    },
    /// Answer `status` (a 3xx) with `Location: location`, storing nothing: an endpoint
    /// that moved, or a plain-HTTP URL redirected to HTTPS.
    Redirect {
        /// The 3xx status to answer.
        status: u16,
        /// The `Location` header to send.
        location: String,
    },
}

/// Random faults for chaos runs: each message-creating request, when the scripted queue
/// is empty, draws one of these with the given probabilities (seeded, so a run repeats).
#[derive(Clone, Debug)]
pub struct FaultMix {
    /// Seeds the draws: the same seed, the same faults in the same order.
    pub seed: u64,
    /// Probability of a 500 ([`Fault::ServerError`]).
    pub server_error: f64,
    /// Probability of a 429 ([`Fault::RateLimited`]).
    pub rate_limited: f64,
    /// The Retry-After of those 429s, in milliseconds.
    pub retry_after_ms: u64,
    /// Probability of a slow answer ([`Fault::Slow`]).
    pub slow: f64,
    /// How long a slow answer is delayed, in milliseconds.
    pub slow_ms: u64,
    /// Probability of storing the request but never answering ([`Fault::AcceptThenHang`]).
    pub accept_then_hang: f64,
    /// How long such a connection is held open before it is dropped, in milliseconds.
    pub hang_ms: u64,
}

/// How many faults of each kind a fake injected.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    /// 500s answered.
    pub server_error: u64,
    /// 429s answered.
    pub rate_limited: u64,
    /// Answers delayed.
    pub slow: u64,
    /// Requests stored but never answered.
    pub accept_then_hang: u64,
}

/// A fake's fault source: the scripted queue first, then the random mix.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    queue: std::collections::VecDeque<Fault>,
    mix: Option<(FaultMix, rand::rngs::StdRng)>,
    pub(crate) counts: FaultCounts,
}

impl Faults {
    pub(crate) fn push_back(&mut self, fault: Fault) {
        self.queue.push_back(fault);
    }

    pub(crate) fn set_mix(&mut self, mix: Option<FaultMix>) {
        use rand::SeedableRng;
        self.mix = mix.map(|m| {
            let rng = rand::rngs::StdRng::seed_from_u64(m.seed);
            (m, rng)
        });
    }

    /// The fault for the next message-creating request, if any.
    pub(crate) fn next(&mut self) -> Option<Fault> {
        use rand::Rng;
        let fault = self.queue.pop_front().or_else(|| {
            let (mix, rng) = self.mix.as_mut()?;
            let roll: f64 = rng.random();
            let mut edge = mix.server_error;
            if roll < edge {
                return Some(Fault::ServerError);
            }
            edge += mix.rate_limited;
            if roll < edge {
                return Some(Fault::RateLimited {
                    retry_after_ms: mix.retry_after_ms,
                });
            }
            edge += mix.slow;
            if roll < edge {
                return Some(Fault::Slow {
                    delay_ms: mix.slow_ms,
                });
            }
            edge += mix.accept_then_hang;
            if roll < edge {
                return Some(Fault::AcceptThenHang {
                    hold_ms: mix.hang_ms,
                });
            }
            None
        });
        match &fault {
            Some(Fault::ServerError) => self.counts.server_error += 1,
            Some(Fault::RateLimited { .. }) => self.counts.rate_limited += 1,
            Some(Fault::Slow { .. }) => self.counts.slow += 1,
            Some(Fault::AcceptThenHang { .. }) => self.counts.accept_then_hang += 1,
            Some(Fault::Redirect { .. }) | None => {}
        }
        fault
    }
}

/// What a handler must do about the fault it drew, after any `Slow` delay was served.
#[derive(Clone, Debug)]
enum Plan {
    Proceed,
    RateLimited {
        retry_after_ms: u64,
    },
    ServerError,
    /// Handle normally, then hold the connection for this many ms and drop it.
    HangAfter {
        hold_ms: u64,
    },
    Redirect {
        status: u16,
        location: String,
    },
}

impl Plan {
    /// Turns a drawn fault into a plan. `Slow` is served here, so that the
    /// delay happens before the request touches any state — as a slow
    /// platform would behave from the client's point of view.
    async fn from_fault(fault: Option<Fault>) -> Plan {
        match fault {
            None => Plan::Proceed,
            Some(Fault::RateLimited { retry_after_ms }) => Plan::RateLimited { retry_after_ms },
            Some(Fault::ServerError) => Plan::ServerError,
            Some(Fault::Slow { delay_ms }) => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Plan::Proceed
            }
            Some(Fault::AcceptThenHang { hold_ms }) => Plan::HangAfter { hold_ms },
            Some(Fault::Redirect { status, location }) => Plan::Redirect { status, location },
        }
    }
}

/// HTTP `Retry-After` is whole seconds; rounding up keeps a client that only
/// reads the header from retrying before the fake's window is over.
pub(crate) fn retry_after_header_secs(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1000)
}

/// Locks fake state, shrugging off poisoning: a panicking test thread must not
/// turn every later request into a second, confusing panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits until `read` returns at least `n` items or `timeout` passes, and
/// returns its last answer (the caller asserts on the count).
/// Uses tokio's clock so tests with paused time behave.
pub(crate) async fn wait_for_len<T>(
    n: usize,
    timeout: Duration,
    mut read: impl FnMut() -> Vec<T>,
) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = read();
        if all.len() >= n || tokio::time::Instant::now() >= deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A status and a JSON body: a success or an error in the platform's own shape.
pub(crate) type Reply = (StatusCode, Value);

pub(crate) fn reply((status, body): Reply) -> Response {
    (status, Json(body)).into_response()
}

/// Answers a handler's outcome, success or error alike.
pub(crate) fn reply_either(outcome: Result<Reply, Reply>) -> Response {
    reply(outcome.unwrap_or_else(|e| e))
}

/// A fake's state behind its lock, shared by the handle and the handlers.
pub(crate) type Shared<S> = Arc<Mutex<S>>;

/// Bookkeeping every fake keeps next to its platform's own state.
#[derive(Debug, Default)]
pub(crate) struct Common {
    /// Every request received, including rejected, faulted and unknown-route ones.
    pub(crate) request_count: usize,
    pub(crate) faults: Faults,
    /// `(path, traceparent)` of every request that carried a W3C `traceparent` header.
    pub(crate) traceparents: Vec<(String, String)>,
}

/// What the shared machinery needs from a platform's state: its bookkeeping,
/// and the platform's own answers to the two faults that answer at once.
pub(crate) trait Platform: Send + 'static {
    fn common(&mut self) -> &mut Common;

    /// The platform's 429 for `Fault::RateLimited`.
    fn rate_limited(retry_after_ms: u64) -> Response;

    /// The platform's 500 for `Fault::ServerError`.
    fn server_error() -> Response;
}

/// Serves `routes` (with the platform's own 404 and 405 fallbacks already set)
/// over `state` on a free loopback port.
pub(crate) async fn serve<S: Platform>(state: S, routes: Router<Shared<S>>) -> (Server, Shared<S>) {
    let shared = Arc::new(Mutex::new(state));
    let router = routes
        // A layer (not per-handler counting) so 404s and 405s count too.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_request::<S>,
        ))
        .with_state(Arc::clone(&shared));
    (Server::start(router).await, shared)
}

/// Runs `f` on a fake's bookkeeping, under its lock.
pub(crate) fn with_common<S: Platform, T>(
    shared: &Shared<S>,
    f: impl FnOnce(&mut Common) -> T,
) -> T {
    f(lock(shared).common())
}

async fn count_request<S: Platform>(
    State(shared): State<Shared<S>>,
    req: Request,
    next: Next,
) -> Response {
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(|v| (req.uri().path().to_owned(), v.to_owned()));
    with_common(&shared, |c| {
        c.request_count += 1;
        c.traceparents.extend(traceparent);
    });
    next.run(req).await
}

/// Runs a message-creating request under the fault source. Auth has run; the
/// fault is drawn next (a real rate limiter answers before the request's
/// content is looked at) and a rate limit or server error answers at once, in
/// the platform's own shape. Otherwise `handle` runs under the lock — for
/// `AcceptThenHang` too, whose answer is then never sent.
pub(crate) async fn faulted<S: Platform>(
    shared: &Shared<S>,
    conn: &ConnCtl,
    handle: impl FnOnce(&mut S) -> Response,
) -> Response {
    let fault = with_common(shared, |c| c.faults.next());
    let plan = Plan::from_fault(fault).await;
    match &plan {
        Plan::RateLimited { retry_after_ms } => return S::rate_limited(*retry_after_ms),
        Plan::ServerError => return S::server_error(),
        Plan::Redirect { status, location } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND);
            return (status, [(header::LOCATION, location.clone())]).into_response();
        }
        Plan::Proceed | Plan::HangAfter { .. } => {}
    }
    let response = handle(&mut lock(shared));
    if let Plan::HangAfter { hold_ms } = plan {
        return hang_up(conn, hold_ms).await;
    }
    response
}

/// The tokens a fake accepts, and the one each accepted request used, so
/// token-rotation tests can see which one that was.
#[derive(Debug)]
pub(crate) struct Tokens {
    accepted: HashSet<String>,
    seen: Vec<String>,
}

impl Tokens {
    pub(crate) fn new(initial: &str) -> Tokens {
        Tokens {
            accepted: HashSet::from([initial.to_owned()]),
            seen: Vec::new(),
        }
    }

    /// Whether `token` is accepted; an accepted one is recorded as seen.
    pub(crate) fn check(&mut self, token: &str) -> bool {
        let ok = self.accepted.contains(token);
        if ok {
            self.seen.push(token.to_owned());
        }
        ok
    }

    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.clone()
    }

    pub(crate) fn set(&mut self, tokens: &[&str]) {
        self.accepted = tokens.iter().map(|t| (*t).to_owned()).collect();
    }
}

/// The token of an `Authorization: <scheme> <token>` header (`scheme` is
/// `"Bearer "` or `"Bot "`, with its space).
pub(crate) fn auth_token<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(scheme))
}

/// The inspection methods every fake handle shares, for a handle with a
/// `shared: Shared<S>` field (`S: Platform`). With `tokens`, `S` also needs a
/// `tokens: Tokens` field. `$what` names the requests that draw faults.
macro_rules! handle_methods {
    ($fake:ty, faults: $what:literal) => {
        impl $fake {
            /// Every request received, including rejected, faulted, repeated and
            /// unknown-route ones.
            pub fn request_count(&self) -> usize {
                $crate::fakes::with_common(&self.shared, |c| c.request_count)
            }

            #[doc = concat!("Queues a fault for the next ", $what, ".")]
            pub fn push_fault(&self, f: $crate::fakes::Fault) {
                $crate::fakes::with_common(&self.shared, |c| c.faults.push_back(f));
            }

            /// Injects random faults (after any scripted ones); `None` turns them off.
            pub fn set_fault_mix(&self, mix: Option<$crate::fakes::FaultMix>) {
                $crate::fakes::with_common(&self.shared, |c| c.faults.set_mix(mix));
            }

            /// `(path, traceparent)` of each request that carried one, in arrival order.
            pub fn traceparents_seen(&self) -> Vec<(String, String)> {
                $crate::fakes::with_common(&self.shared, |c| c.traceparents.clone())
            }

            /// How many faults were injected so far, by kind.
            pub fn fault_counts(&self) -> $crate::fakes::FaultCounts {
                $crate::fakes::with_common(&self.shared, |c| c.faults.counts.clone())
            }
        }
    };
    ($fake:ty, faults: $what:literal, tokens) => {
        $crate::fakes::handle_methods!($fake, faults: $what);

        impl $fake {
            /// The token of each accepted (authenticated) request, in arrival order.
            pub fn tokens_seen(&self) -> Vec<String> {
                $crate::fakes::lock(&self.shared).tokens.seen()
            }

            /// Replaces the set of accepted tokens (all authenticate as the same bot user).
            pub fn set_tokens(&self, tokens: &[&str]) {
                $crate::fakes::lock(&self.shared).tokens.set(tokens);
            }
        }
    };
}
pub(crate) use handle_methods;

/// A fault mix that fails every message-creating request with a server error.
#[cfg(test)]
pub(crate) fn server_errors_only() -> FaultMix {
    FaultMix {
        seed: 7,
        server_error: 1.0,
        rate_limited: 0.0,
        retry_after_ms: 0,
        slow: 0.0,
        slow_ms: 0,
        accept_then_hang: 0.0,
        hang_ms: 0,
    }
}

/// A plain client for the fakes' own calls (webhook pushes), bounded by `timeout`.
pub(crate) fn plain_client(timeout: Duration) -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: install one before building a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
pub(crate) fn test_client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`; building a client without
    // a process-wide provider panics even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .expect("build reqwest client")
}

/// Per-connection control, handed to handlers as `ConnectInfo<ConnCtl>`.
///
/// It exists so `Fault::AcceptThenHang` can drop a connection without writing
/// a response: axum offers no way for a handler to abort its connection, so the
/// fake's listener wraps every socket in a stream that fails all I/O once killed.
#[derive(Clone, Debug)]
pub(crate) struct ConnCtl {
    #[allow(dead_code)] // kept for Debug output in hyper/axum traces
    peer: SocketAddr,
    killed: Arc<AtomicBool>,
}

impl ConnCtl {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, FakeListener>> for ConnCtl {
    fn connect_info(stream: IncomingStream<'_, FakeListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Holds the connection for `hold_ms`, then makes sure the response the
/// handler returns is never written: the killed stream fails hyper's write,
/// and hyper closes the socket.
async fn hang_up(conn: &ConnCtl, hold_ms: u64) -> Response {
    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
    conn.kill();
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// A TCP listener whose connections can be killed from inside a handler.
pub(crate) struct FakeListener {
    inner: TcpListener,
}

impl Listener for FakeListener {
    type Io = KillableStream;
    type Addr = ConnCtl;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    // Small JSON answers otherwise wait on Nagle + delayed ACK.
                    let _ = stream.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    let ctl = ConnCtl {
                        peer,
                        killed: Arc::clone(&killed),
                    };
                    return (
                        KillableStream {
                            inner: stream,
                            killed,
                        },
                        ctl,
                    );
                }
                Err(e) => {
                    // Typically EMFILE under heavy tests: back off instead of spinning.
                    tracing::debug!(error = %e, "fake platform accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnCtl {
            peer: self.inner.local_addr()?,
            killed: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A TCP stream that fails every read and write once its `ConnCtl` was killed.
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by fault injection",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A running fake server; dropping it shuts the server down.
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Binds a loopback port and serves `router` on a tokio task.
    ///
    /// Panics if the port cannot be bound: this is test scaffolding and there
    /// is nothing sensible a test could do instead.
    pub(crate) async fn start(router: Router) -> Server {
        let inner = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake platform: bind 127.0.0.1:0");
        let addr = inner
            .local_addr()
            .expect("fake platform: local_addr of a bound listener");
        let (shutdown, mut rx) = watch::channel(false);
        let service = router.into_make_service_with_connect_info::<ConnCtl>();
        tokio::spawn(async move {
            // Graceful: stop accepting, close idle keep-alive connections at
            // once, let in-flight requests finish (a hung one ends at its hold).
            let served = axum::serve(FakeListener { inner }, service)
                .with_graceful_shutdown(async move {
                    // Err means the handle is gone, which also means "stop".
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "fake platform server ended with an error");
            }
        });
        Server { addr, shutdown }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
