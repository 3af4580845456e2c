//! The worker runtime every worker shares: its context (connections, store, publisher,
//! shutdown), the one run loop, ordered lanes, pull pacing, retry pacing, the outbox every
//! published event is built in, the binding-ending protocol, and the health server.

pub(crate) mod ending;
pub(crate) mod health;
pub(crate) mod lanes;
pub mod leases;
pub(crate) mod outbox;
pub(crate) mod pulls;
pub(crate) mod retry;
pub mod runloop;

use crate::config::Config;
use crate::io::{nats, redis, trace};
use crate::store::Store;
use std::sync::Arc;
use threadline_schemas::Subjects;
use tokio_util::sync::CancellationToken;

/// A worker's context: the handles one process's workers share. Cheap to clone.
#[derive(Clone)]
pub struct WorkerContext {
    /// The settings, with the deployment's lane count resolved.
    pub config: Arc<Config>,
    /// The deployment's subjects (its prefix).
    pub(crate) subjects: Subjects,
    /// The NATS connection (core NATS: the credentials announcements).
    pub nats: async_nats::Client,
    /// Publishes to JetStream and waits for the stream to store each message.
    pub(crate) publisher: nats::Publisher,
    /// Session and binding state in Redis.
    pub(crate) store: Store,
    /// Cancelled on SIGTERM: run loops stop pulling and drain.
    pub(crate) shutdown: CancellationToken,
    /// Readiness and consumer state for the health endpoints.
    pub(crate) health: health::Health,
    /// Spans and trace context for every handled event; OTLP export when configured.
    pub(crate) telemetry: trace::Telemetry,
    /// Builds every event the workers publish, for this deployment's subjects and lanes.
    pub(crate) outbox: outbox::Outbox,
}

impl WorkerContext {
    /// The delivery subject for posts to `conversation`: its channel's partition, so every
    /// post to one conversation goes through one ordered lane.
    pub fn deliver_subject(&self, conversation: &threadline_schemas::ConversationRef) -> String {
        self.outbox.deliver_subject(conversation)
    }

    /// Connects to NATS and Redis (waiting for them, so start-up order does not matter) and
    /// makes sure the streams exist.
    pub async fn connect(
        config: Arc<Config>,
        shutdown: CancellationToken,
    ) -> Result<WorkerContext, nats::TopologyError> {
        let telemetry = trace::Telemetry::new(&config)?;
        WorkerContext::connect_with(config, shutdown, health::Health::default(), telemetry).await
    }

    /// [`WorkerContext::connect`] reporting readiness to `health` and tracing through
    /// `telemetry`, which may be shared with workers on other runtimes of the process.
    pub(crate) async fn connect_with(
        config: Arc<Config>,
        shutdown: CancellationToken,
        health: health::Health,
        telemetry: trace::Telemetry,
    ) -> Result<WorkerContext, nats::TopologyError> {
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
        Ok(WorkerContext {
            outbox: outbox::Outbox::new(subjects.clone(), config.lanes()),
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
