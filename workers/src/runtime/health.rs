//! `/healthz` (the process is alive), `/readyz` (started with its consumers in place, not
//! draining, NATS connected and Redis answering — checked on each request) and `/metrics` (Prometheus text).

use crate::store::Store;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Readiness as the workers report it, plus the connections `/readyz` checks live.
#[derive(Clone, Default)]
pub(crate) struct Health {
    ready: Arc<AtomicBool>,
    deps: Arc<OnceLock<Dependencies>>,
    /// Durables found deleted under this running process (see `runloop::watch_pending`).
    missing: Arc<Mutex<BTreeSet<String>>>,
}

/// What a worker needs to make progress: checked on every `/readyz`, so an orchestrator
/// sees a lost broker or store, not only a finished start-up.
#[derive(Clone)]
struct Dependencies {
    nats: async_nats::Client,
    store: Store,
    /// The worker's runtime: the Redis check runs there, so a reconnect it starts drives the
    /// worker's connection from the worker's runtime, not from the health server's (`run
    /// all` serves health on a thread of its own).
    runtime: tokio::runtime::Handle,
}

impl Health {
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    /// The connections `/readyz` checks from now on (consumers were created at start-up,
    /// before the worker was marked ready). Called on the worker's runtime.
    pub(crate) fn watch(&self, nats: async_nats::Client, store: Store) {
        let runtime = tokio::runtime::Handle::current();
        let _ = self.deps.set(Dependencies {
            nats,
            store,
            runtime,
        });
    }

    pub(crate) fn consumer_missing(&self, durable: &str) {
        if let Ok(mut missing) = self.missing.lock() {
            missing.insert(durable.to_owned());
        }
    }
    pub(crate) fn consumer_found(&self, durable: &str) {
        if let Ok(mut missing) = self.missing.lock() {
            missing.remove(durable);
        }
    }

    /// `Ok` when ready; otherwise what is missing, for the `/readyz` body.
    pub(crate) async fn check(&self) -> Result<(), String> {
        if !self.is_ready() {
            return Err("starting or draining".into());
        }
        let missing: Vec<String> = self
            .missing
            .lock()
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        if !missing.is_empty() {
            return Err(format!(
                "consumer {} deleted; restart to recreate",
                missing.join(", ")
            ));
        }
        let Some(deps) = self.deps.get() else {
            return Ok(());
        };
        if deps.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("NATS is not connected".into());
        }
        let mut conn = deps.store.connection();
        let ping = async move {
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<()>(&mut conn);
            tokio::time::timeout(Duration::from_millis(1_000), ping).await
        };
        match deps.runtime.spawn(ping).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(_)) | Err(_)) | Err(_) => Err("Redis does not answer".into()),
        }
    }
}

/// The process-wide Prometheus recorder (one per process, however many workers run in it).
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Delivery latency as a real histogram (buckets), not the default summary, so it
        // aggregates across instances.
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full(crate::io::metrics::DELIVERY_SECONDS.to_owned()),
            crate::io::metrics::DELIVERY_BUCKETS,
        ) {
            Ok(builder) => builder,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // A second recorder (tests running several pipelines in one process) keeps the first.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves the endpoints on `addr` until `shutdown`; returns the bound address. The process
/// is ready when every one of `parts` is (`run all` runs each worker on a runtime of its own,
/// with its own connections and readiness).
pub(crate) async fn serve(
    addr: &str,
    parts: Vec<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { prometheus().render() }))
        .with_state(Arc::<[Health]>::from(parts));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "health server stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(parts): State<Arc<[Health]>>) -> (StatusCode, String) {
    for part in parts.iter() {
        if let Err(why) = part.check().await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            );
        }
    }
    (StatusCode::OK, "ready\n".to_owned())
}
