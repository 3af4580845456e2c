//! NATS: the connection, the JetStream topology every worker creates or verifies at
//! start-up, and the publisher whose every publish is acknowledged by the stream before a
//! handler may return (so an input is acked only after what it produced is stored).
//!
//! Everything here must be accepted by nats-server 2.9: one `filter_subject` per consumer
//! (2.9 silently ignores `filter_subjects`, docs/pitfalls.md 6), no subject transforms, no consumer
//! `backoff` (it rewrites `ack_wait`, docs/pitfalls.md 2) and no server-side `max_deliver` — the run
//! loop counts attempts itself, so the server never drops a message silently.

use crate::config::redact_urls;
use crate::config::Config;
use crate::error::WorkError;
use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use bytes::Bytes;
use serde::Serialize;
use std::time::Duration;
use threadline_schemas::Subjects;

/// Why a worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// NATS did not answer (start-up waits for it before giving up with this).
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server list, without credentials.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// A JetStream API request (stream or consumer create, info) failed.
    #[error("JetStream request failed for {what}: {reason}")]
    JetStream {
        /// The stream or consumer the request was for.
        what: String,
        /// The server's or client's error.
        reason: String,
    },
    /// A stream of our name exists with other subjects.
    #[error(
        "stream {stream} exists with subjects {found:?}, expected {expected:?}; \
         another deployment may use the same subject prefix (THREADLINE_SUBJECT_PREFIX)"
    )]
    StreamConflict {
        /// The stream's name.
        stream: String,
        /// The subjects this deployment needs.
        expected: Vec<String>,
        /// The subjects the stream has.
        found: Vec<String>,
    },
    /// A consumer of our name exists with another filter.
    #[error(
        "consumer {consumer} on {stream} filters {found:?}, expected {expected:?}; \
         delete it or choose another subject prefix"
    )]
    ConsumerConflict {
        /// The stream the consumer is on.
        stream: String,
        /// The consumer's durable name.
        consumer: String,
        /// The filter subject this deployment needs.
        expected: String,
        /// The filter subject the consumer has.
        found: String,
    },
    /// Redis did not answer, or answered with an error, while starting.
    #[error("cannot connect to Redis: {0}")]
    Redis(String),
    /// This process's `delivery_partitions` is not the one the deployment's lanes were set
    /// up with: routers would publish posts to lanes no deliverer pulls, or spread one
    /// conversation's posts over two lanes, out of order.
    #[error(
        "delivery_partitions is {configured} here, but this deployment's delivery lanes were \
         set up with {recorded} (Redis key {key}); every process must use the same value: set \
         delivery_partitions = {recorded} (THREADLINE_DELIVERY_PARTITIONS). To change it \
         deliberately: stop every router, wait until `threadline doctor` shows no backlog on \
         any lane, delete that key, and restart every worker with the new value"
    )]
    LaneCount {
        /// This process's `delivery_partitions`.
        configured: u32,
        /// The count the deployment recorded.
        recorded: u32,
        /// The Redis key holding the recorded count.
        key: String,
    },
    /// The tracing exporter cannot be set up.
    #[error(transparent)]
    Telemetry(#[from] super::trace::TelemetryError),
    /// The server answered and refused us: credentials or TLS; retrying will not help.
    #[error("NATS at {url} refused the connection: {reason}; check the NATS credentials and TLS settings")]
    Refused {
        /// The server list, without credentials.
        url: String,
        /// What the server or the TLS handshake said.
        reason: String,
    },
    /// The security settings are inconsistent or a secret file cannot be read.
    #[error("invalid NATS/Redis security configuration: {0}")]
    Config(String),
}

/// The four streams of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `tl.in.>`: what other services publish.
    Inbound,
    /// `tl.deliver.>`: platform work for the deliverers.
    Deliver,
    /// `tl.out.>` and `tl.agent.>`: what Threadline reports and session input.
    Outbound,
    /// `tl.dlq.>`: dead letters, with the original bytes.
    DeadLetter,
}

impl StreamKind {
    /// Every stream, in the order they are created.
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Inbound,
        StreamKind::Deliver,
        StreamKind::Outbound,
        StreamKind::DeadLetter,
    ];

    /// `TL_IN`, `TL_DELIVER`, … derived from the subject prefix.
    pub fn name(self, subjects: &Subjects) -> String {
        let base: String = subjects
            .prefix()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let suffix = match self {
            StreamKind::Inbound => "IN",
            StreamKind::Deliver => "DELIVER",
            StreamKind::Outbound => "OUT",
            StreamKind::DeadLetter => "DLQ",
        };
        format!("{base}_{suffix}")
    }

    /// The subjects the stream holds.
    pub fn subjects(self, subjects: &Subjects) -> Vec<String> {
        match self {
            StreamKind::Inbound => vec![subjects.in_all()],
            StreamKind::Deliver => vec![subjects.deliver_all()],
            StreamKind::Outbound => vec![subjects.out_all(), subjects.agent_all()],
            StreamKind::DeadLetter => vec![subjects.dlq_all()],
        }
    }

    /// The stream's configuration; only fields nats-server 2.9 understands.
    pub fn config(self, subjects: &Subjects, config: &Config) -> stream::Config {
        let max_age = match self {
            // Dead letters wait for an operator; keep them four times longer.
            StreamKind::DeadLetter => Duration::from_millis(config.stream_max_age_ms * 4),
            StreamKind::Inbound | StreamKind::Deliver | StreamKind::Outbound => {
                Duration::from_millis(config.stream_max_age_ms)
            }
        };
        stream::Config {
            name: self.name(subjects),
            subjects: self.subjects(subjects),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age,
            // The first line of dedup for publisher retries (same Nats-Msg-Id); the workers
            // are idempotent beyond it. Clamped by the server to max_age.
            duplicate_window: Duration::from_secs(120),
            discard: stream::DiscardPolicy::Old,
            // R3 on a three-node cluster: a stream keeps accepting and serving messages
            // while one node is down. Consumers inherit it (their `num_replicas` stays 0).
            num_replicas: config.stream_replicas.max(1),
            ..Default::default()
        }
    }
}

/// Connects with unbounded reconnects, so a broker restart is a pause, not a crash.
///
/// A first attempt without retries tells a server that refuses us (wrong credentials, a
/// certificate we do not trust) from one that is not up yet: the first fails start-up at
/// once with the reason, the second is waited for.
pub async fn connect(config: &Config) -> Result<async_nats::Client, TopologyError> {
    let url = redact_urls(&config.nats_url);
    let options = connect_options(config).await?;
    match options.connect(server_list(&config.nats_url)).await {
        Ok(client) => return Ok(client),
        Err(e) => match e.kind() {
            async_nats::ConnectErrorKind::Authentication
            | async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Tls
            | async_nats::ConnectErrorKind::ServerParse => {
                return Err(TopologyError::Refused {
                    url,
                    reason: e.to_string(),
                })
            }
            // async-nats reports a failed certificate check as an I/O error.
            async_nats::ConnectErrorKind::Io if super::tls_refused(&e) => {
                return Err(TopologyError::Refused {
                    url,
                    reason: e.to_string(),
                })
            }
            async_nats::ConnectErrorKind::Dns
            | async_nats::ConnectErrorKind::TimedOut
            | async_nats::ConnectErrorKind::Io
            | async_nats::ConnectErrorKind::MaxReconnects => {
                tracing::warn!(%url, error = %e, "NATS is not reachable yet; retrying");
            }
        },
    }
    connect_options(config)
        .await?
        .retry_on_initial_connect()
        .connect(server_list(&config.nats_url))
        .await
        .map_err(|e| TopologyError::Connect {
            url,
            reason: e.to_string(),
        })
}

/// The servers of a comma-separated `nats_url` (a cluster's seeds; async-nats parses one
/// URL per entry and rotates through them on reconnect).
pub fn server_list(nats_url: &str) -> Vec<&str> {
    nats_url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Name, timeouts, credentials and TLS from the configuration (docs/security.md).
pub(crate) async fn connect_options(
    config: &Config,
) -> Result<async_nats::ConnectOptions, TopologyError> {
    let invalid = |reason: String| TopologyError::Config(reason);
    let password = config.nats_password().map_err(|e| invalid(e.to_string()))?;
    let token = config.nats_token().map_err(|e| invalid(e.to_string()))?;
    let seed = config
        .nats_nkey_seed()
        .map_err(|e| invalid(e.to_string()))?;
    let creds = config.nats_credentials_file.as_ref();
    let methods = [
        password.is_some() || config.nats_user.is_some(),
        token.is_some(),
        seed.is_some(),
        creds.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(invalid(
            "more than one NATS authentication is configured; set only one of \
             nats_user/nats_password, nats_token, nats_nkey_seed, nats_credentials_file"
                .into(),
        ));
    }
    let mut options = match creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                invalid(format!(
                    "cannot use nats_credentials_file {}: {e}",
                    path.display()
                ))
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    options = options
        .name("threadline")
        .connection_timeout(Duration::from_secs(5));
    match (&config.nats_user, password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                "nats_user and nats_password (or nats_password_file) go together".into(),
            ))
        }
    }
    if let Some(token) = token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(seed) = seed {
        options = options.nkey(seed.expose().to_owned());
    }
    if let Some(prefix) = &config.nats_inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(ca) = &config.nats_tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&config.nats_tls_cert_file, &config.nats_tls_key_file) {
        (Some(cert), Some(key)) => {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                "nats_tls_cert_file and nats_tls_key_file go together".into(),
            ))
        }
    }
    Ok(options)
}

/// A JetStream context with a timeout that rides out a short broker restart.
/// How long a stopping worker (or a lane handed back) waits for its last acks to reach the
/// broker. Plain acks are only queued in the client (docs/pitfalls.md 7), so they are flushed; but a
/// broker that is gone would hold the flush, and the process, forever. What misses the
/// flush is redelivered after `ack_wait`.
pub(crate) const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Flushes what `client` has queued, giving up after [`FINAL_FLUSH`].
pub(crate) async fn flush_queued(client: &async_nats::Client) -> Result<(), String> {
    match tokio::time::timeout(FINAL_FLUSH, client.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("NATS did not answer within {FINAL_FLUSH:?}")),
    }
}

/// The JetStream context of `client`, with a request timeout that outlasts a busy server.
pub fn jetstream(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone())
}

/// Creates the deployment's streams, or checks that existing ones carry our subjects.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &Config,
) -> Result<(), TopologyError> {
    for kind in StreamKind::ALL {
        let wanted = kind.config(subjects, config);
        let mut stream = match js.get_or_create_stream(wanted.clone()).await {
            Ok(stream) => stream,
            // Another worker starting at the same moment created it between our lookup and
            // our create: nats-server 2.9 then answers "subjects overlap with an existing
            // stream" (or "name already in use"). It is there now, and is checked below as
            // any existing stream is. A real conflict (a foreign stream owning our
            // subjects under another name) leaves nothing under our name.
            Err(create) => {
                js.get_stream(&wanted.name)
                    .await
                    .map_err(|_| TopologyError::JetStream {
                        what: format!("stream {}", wanted.name),
                        reason: create.to_string(),
                    })?
            }
        };
        let found = stream
            .info()
            .await
            .map_err(|e| TopologyError::JetStream {
                what: format!("stream {} info", wanted.name),
                reason: e.to_string(),
            })?
            .config
            .clone();
        if found.subjects != wanted.subjects {
            return Err(TopologyError::StreamConflict {
                stream: wanted.name,
                expected: wanted.subjects,
                found: found.subjects,
            });
        }
        if found.max_age != wanted.max_age
            || found.duplicate_window != wanted.duplicate_window
            || found.num_replicas != wanted.num_replicas
        {
            tracing::info!(stream = %wanted.name, "updating stream retention and replicas to the configured values");
            js.update_stream(wanted.clone())
                .await
                .map_err(|e| TopologyError::JetStream {
                    what: format!("stream {} update", wanted.name),
                    reason: e.to_string(),
                })?;
        }
    }
    Ok(())
}

/// A durable pull consumer shared by every instance of one worker. Created when missing;
/// an existing one must filter the same subject (else a worker would silently see other
/// events, or none).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    subjects: &Subjects,
    kind: StreamKind,
    durable: &str,
    filter_subject: String,
    max_ack_pending: i64,
    config: &Config,
) -> Result<consumer::PullConsumer, TopologyError> {
    let stream_name = kind.name(subjects);
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| TopologyError::JetStream {
            what: format!("stream {stream_name}"),
            reason: e.to_string(),
        })?;
    let wanted = pull_config(durable, &filter_subject, max_ack_pending, config);
    let mut consumer: consumer::PullConsumer =
        match stream.get_or_create_consumer(durable, wanted.clone()).await {
            Ok(consumer) => consumer,
            // A create racing another instance's may be refused as a stream's is (above);
            // if the consumer is there now, it is checked below as any existing one is.
            Err(create) => {
                stream
                    .get_consumer(durable)
                    .await
                    .map_err(|_| TopologyError::JetStream {
                        what: format!("consumer {durable} on {stream_name}"),
                        reason: create.to_string(),
                    })?
            }
        };
    let found = consumer
        .info()
        .await
        .map_err(|e| TopologyError::JetStream {
            what: format!("consumer {durable} info"),
            reason: e.to_string(),
        })?
        .config
        .clone();
    if found.filter_subject != filter_subject {
        return Err(TopologyError::ConsumerConflict {
            stream: stream_name,
            consumer: durable.to_owned(),
            expected: filter_subject,
            found: found.filter_subject,
        });
    }
    if found.ack_wait != wanted.ack_wait || found.max_ack_pending != wanted.max_ack_pending {
        tracing::info!(
            consumer = durable,
            "updating consumer to the configured ack_wait and max_ack_pending"
        );
        consumer = stream
            .create_consumer(wanted)
            .await
            .map_err(|e| TopologyError::JetStream {
                what: format!("consumer {durable} update"),
                reason: e.to_string(),
            })?;
    }
    Ok(consumer)
}

/// The configuration of one durable pull consumer; the one definition workers create and
/// `threadline doctor` checks against.
pub(crate) fn pull_config(
    durable: &str,
    filter_subject: &str,
    max_ack_pending: i64,
    config: &Config,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subject: filter_subject.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait(),
        // Unlimited: the run loop decides when an event is given up, and dead-letters it.
        max_deliver: -1,
        max_ack_pending,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// One durable consumer of the topology: its stream, name, filter and how many
/// unacknowledged messages it allows. Workers create consumers from these; `doctor`
/// checks a deployment against the same list ([`expected_consumers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream the consumer reads.
    pub stream: StreamKind,
    /// Its durable name (shared by every instance of the worker).
    pub durable: String,
    /// The one subject it filters on (nats-server 2.9 honours only one).
    pub filter_subject: String,
    /// How many messages may be delivered and not yet acknowledged.
    pub max_ack_pending: i64,
}

impl ConsumerSpec {
    fn inbound(durable: &str, filter_subject: String, config: &Config) -> Self {
        ConsumerSpec {
            stream: StreamKind::Inbound,
            durable: durable.to_owned(),
            filter_subject,
            max_ack_pending: (config.concurrency as i64 * 4).max(64),
        }
    }
    pub(crate) fn binder_spawn(subjects: &Subjects, config: &Config) -> Self {
        Self::inbound("binder-spawn", subjects.in_spawn(), config)
    }
    pub(crate) fn binder_control(subjects: &Subjects, config: &Config) -> Self {
        Self::inbound("binder-control", subjects.in_control(), config)
    }
    pub(crate) fn binder_conversation(subjects: &Subjects, config: &Config) -> Self {
        Self::inbound(
            "binder-conversation",
            subjects.in_conversation_any(),
            config,
        )
    }
    pub(crate) fn router_completion(subjects: &Subjects, config: &Config) -> Self {
        Self::inbound("router-completion", subjects.in_completion(), config)
    }
    pub(crate) fn router_message(subjects: &Subjects, config: &Config) -> Self {
        Self::inbound("router-message", subjects.in_message_any(), config)
    }
    pub(crate) fn router_send(subjects: &Subjects, config: &Config) -> Self {
        Self::inbound("router-send", subjects.in_send(), config)
    }
    /// One ordered delivery lane of a channel. One instance owns it at a time and holds up
    /// to `lane_batch` posts from it, ordering them per conversation (`runtime::lanes`).
    pub fn deliver_lane(
        subjects: &Subjects,
        channel: &str,
        partition: u32,
        config: &Config,
    ) -> Self {
        ConsumerSpec {
            stream: StreamKind::Deliver,
            durable: durable_name("deliver", Some(&format!("{channel}-p{partition}"))),
            filter_subject: subjects.deliver_partition(channel, partition),
            max_ack_pending: config.lane_batch.clamp(1, 1_024) as i64,
        }
    }

    /// The pull consumer configuration of this spec.
    pub(crate) fn config(&self, config: &Config) -> consumer::pull::Config {
        pull_config(
            &self.durable,
            &self.filter_subject,
            self.max_ack_pending,
            config,
        )
    }

    /// Creates or verifies this consumer (see [`ensure_consumer`]).
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
        subjects: &Subjects,
        config: &Config,
    ) -> Result<consumer::PullConsumer, TopologyError> {
        ensure_consumer(
            js,
            subjects,
            self.stream,
            &self.durable,
            self.filter_subject.clone(),
            self.max_ack_pending,
            config,
        )
        .await
    }
}

/// Every durable consumer a deployment with `config` runs: the binder's, the router's, and
/// each configured channel's delivery lanes.
pub fn expected_consumers(subjects: &Subjects, config: &Config) -> Vec<ConsumerSpec> {
    let mut specs = vec![
        ConsumerSpec::binder_spawn(subjects, config),
        ConsumerSpec::binder_control(subjects, config),
        ConsumerSpec::binder_conversation(subjects, config),
        ConsumerSpec::router_completion(subjects, config),
        ConsumerSpec::router_message(subjects, config),
        ConsumerSpec::router_send(subjects, config),
    ];
    for channel in config.channels() {
        for partition in 0..config.lanes() {
            specs.push(ConsumerSpec::deliver_lane(
                subjects, &channel, partition, config,
            ));
        }
    }
    specs
}

/// A durable consumer name for a channel: NATS names cannot hold `.`, `*`, `>` or `:`.
pub(crate) fn durable_name(worker: &str, channel: Option<&str>) -> String {
    let raw = match channel {
        Some(channel) => format!("{worker}-{channel}"),
        None => worker.to_owned(),
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One message to publish: subject, dedup id and payload. `runtime::outbox` builds every
/// one the workers send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// Where it goes.
    pub(crate) subject: String,
    /// `Nats-Msg-Id`: JetStream drops a re-publish within the duplicate window.
    pub(crate) msg_id: String,
    /// The encoded body (or a dead letter's original bytes).
    pub(crate) payload: Bytes,
    /// Headers besides the message id; the trace context is added when it is sent.
    pub(crate) headers: HeaderMap,
}

impl Outgoing {
    /// An event encoded as MessagePack.
    pub(crate) fn event<T: Serialize>(subject: String, msg_id: String, event: &T) -> Outgoing {
        Outgoing {
            subject,
            msg_id,
            payload: Bytes::from(threadline_schemas::encode(event)),
            headers: HeaderMap::new(),
        }
    }
}

/// Publishes to JetStream and waits for the stream's acknowledgement.
#[derive(Clone)]
pub(crate) struct Publisher {
    js: jetstream::Context,
}

impl Publisher {
    /// A publisher on `js`.
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Publisher { js }
    }

    /// Publishes one message; returns once the stream stored it.
    pub(crate) async fn send(&self, out: Outgoing) -> Result<(), WorkError> {
        self.send_all(vec![out]).await
    }

    /// Publishes in order, pipelined: every message is sent before the first
    /// acknowledgement is awaited, and all of them must be stored for success.
    pub(crate) async fn send_all(&self, outs: Vec<Outgoing>) -> Result<(), WorkError> {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(outs.len());
        for mut out in outs {
            // The handled event's trace continues in whatever it publishes.
            super::trace::inject_nats(&mut out.headers);
            let mut message = jetstream::message::PublishMessage::build()
                .payload(out.payload)
                .headers(out.headers);
            message = message.message_id(crate::ids::msg_id::header_safe(out.msg_id));
            let ack = self
                .js
                .send_publish(out.subject, message)
                .await
                .map_err(|e| WorkError::Nats(e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| WorkError::Nats(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact_url;

    #[test]
    fn names_are_nats_safe() {
        let s = Subjects::new("prod.tl");
        assert_eq!(StreamKind::Inbound.name(&s), "PROD_TL_IN");
        assert_eq!(
            durable_name("deliver", Some("webhook:ops")),
            "deliver-webhook_ops"
        );
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("nats://user:pw@127.0.0.1:4222"),
            "nats://<redacted>@127.0.0.1:4222"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_urls("nats://u:p@a:4222, nats://b:4222,"),
            "nats://<redacted>@a:4222,nats://b:4222"
        );
    }

    #[test]
    fn a_comma_list_is_several_servers() {
        assert_eq!(
            server_list("nats://a:4222,nats://b:4222 , nats://c:4222"),
            vec!["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert_eq!(server_list("nats://a:4222"), vec!["nats://a:4222"]);
    }
}
