//! What every worker shares: connections, the JetStream topology, the one run loop,
//! retry pacing, metrics names, and the health server.

pub mod health;
pub mod metrics;
pub mod nats;
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
        let partition = crate::deliver::partition(conversation, self.config.delivery_partitions);
        self.subjects
            .deliver_partition(&conversation.channel, partition)
    }

    /// Connects to NATS and Redis (waiting for them, so start-up order does not matter) and
    /// makes sure the streams exist.
    pub async fn connect(
        config: Arc<Config>,
        shutdown: CancellationToken,
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
        let telemetry = trace::Telemetry::new(&config)?;
        Ok(Plumbing {
            telemetry,
            publisher: nats::Publisher::new(js),
            subjects,
            nats,
            store,
            shutdown,
            health: health::Health::default(),
            config,
        })
    }
}
