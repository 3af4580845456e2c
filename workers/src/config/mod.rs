//! Settings: defaults, then a TOML file (`--config` / `THREADLINE_CONFIG`), then environment
//! variables (`THREADLINE_*`, docs/design.md §4), all into one [`Config`].
//!
//! [`Config`] is one flat struct because the file and the variables are flat (`nats_url`,
//! not `connections.nats_url`); the types and rules of each concern live beside it:
//! - `sources`: loading, and the variables' names derived from the fields;
//! - `connections`: NATS and Redis credentials (inline or from files);
//! - `delivery`: lanes, attempts and timeouts, the unknown-outcome policy;
//! - `lifecycle`: binding lifetimes and own authors per channel;
//! - `channels`: the native platforms, their tokens and Discord's personas;
//! - `webhooks`: generic HTTP channels;
//! - `telemetry`: log format;
//! - `redact`: [`Secret`] and URLs printed without user info.

mod channels;
mod connections;
mod delivery;
mod lifecycle;
mod listen;
mod redact;
mod sources;
mod telemetry;
mod webhooks;

pub(crate) use channels::PLATFORMS;
pub use channels::{Persona, Platform, PlatformConfig};
pub use delivery::{UnknownOutcome, DEFAULT_DELIVERY_PARTITIONS};
pub use listen::ListenMode;
pub use redact::Secret;
pub(crate) use redact::{redact_url, redact_urls};
pub use sources::{env_vars, CONFIG_FILE_ENV};
pub use telemetry::LogFormat;
pub use webhooks::WebhookConfig;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything a Threadline process needs to know. Each field is a top-level key of the
/// TOML file and a `THREADLINE_<FIELD>` variable ([`env_vars`]); durations are in
/// milliseconds (`_ms`).
///
/// `Debug` (what `threadline config` prints) shows secrets as `<redacted>` and URLs without
/// their user info.
#[derive(derive_more::Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    // --- Connections (NATS, Redis) ---
    /// One NATS server URL, or several separated by commas (the seeds of a cluster; the
    /// client also learns the other members from the server it reaches). Default
    /// `nats://127.0.0.1:4222`.
    #[debug("{:?}", redact_urls(nats_url))]
    pub nats_url: String,
    /// One Redis URL; with `redis_cluster`, the seed nodes of a Redis Cluster separated by
    /// commas. Default `redis://127.0.0.1:6379`.
    #[debug("{:?}", redact_urls(redis_url))]
    pub redis_url: String,
    /// `redis_url` names Redis Cluster seed nodes: slots are followed to their owners.
    /// Default false.
    pub redis_cluster: bool,
    /// Replicas of every stream Threadline creates: 1 (the default) for a single server, 3
    /// for a three-node NATS cluster (R3 survives the loss of one node).
    pub stream_replicas: usize,
    /// Subject prefix, stream names and Redis key namespace, so deployments can share NATS
    /// and Redis. Default `tl`.
    pub subject_prefix: String,
    /// Redis response timeout. Default 5 000; redis-rs's own 500 ms is too short under load
    /// (docs/pitfalls.md, Redis).
    pub redis_timeout_ms: u64,
    // Connection security (docs/security.md). Each secret may be given inline or as a file
    // (`*_file`, a mounted container secret; the file wins). NATS takes at most one of
    // user/password, token, NKey seed and credentials file.
    /// NATS user name (with `nats_password`); not a secret. Default unset.
    pub nats_user: Option<String>,
    /// NATS password (with `nats_user`). Default unset.
    pub nats_password: Option<Secret>,
    /// A file holding the NATS password; wins over `nats_password`.
    pub nats_password_file: Option<PathBuf>,
    /// NATS token authentication. Default unset.
    pub nats_token: Option<Secret>,
    /// A file holding the NATS token; wins over `nats_token`.
    pub nats_token_file: Option<PathBuf>,
    /// An NKey seed (`SU…`); the server knows the public key. Default unset.
    pub nats_nkey_seed: Option<Secret>,
    /// A file holding the NKey seed; wins over `nats_nkey_seed`.
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT + NKey seed) for decentralised (operator) auth.
    pub nats_credentials_file: Option<PathBuf>,
    /// PEM CA that signed the NATS server's certificate; setting it requires TLS.
    pub nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (`verify: true`).
    pub nats_tls_cert_file: Option<PathBuf>,
    /// PEM key of `nats_tls_cert_file`.
    pub nats_tls_key_file: Option<PathBuf>,
    /// Prefix of the reply subjects (default `_INBOX`). Give Threadline its own (e.g.
    /// `_INBOX_threadline`) when publishers share the account: pulled messages arrive on
    /// reply subjects, and a user allowed `_INBOX.>` could otherwise read them.
    pub nats_inbox_prefix: Option<String>,
    /// Redis ACL user (with `redis_password`; the password alone authenticates `default`).
    pub redis_username: Option<String>,
    /// Redis password. Default unset.
    pub redis_password: Option<Secret>,
    /// A file holding the Redis password; wins over `redis_password`.
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA that signed the Redis server's certificate (`rediss://` URLs).
    pub redis_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for `tls-auth-clients yes`.
    pub redis_tls_cert_file: Option<PathBuf>,
    /// PEM key of `redis_tls_cert_file`.
    pub redis_tls_key_file: Option<PathBuf>,

    // --- Event handling and delivery ---
    /// Events one worker handles at once, per consumer. Default 256: fewer means smaller
    /// pulls and smaller Redis write batches, so more CPU per event; beyond the default a
    /// worker only holds more memory.
    pub concurrency: usize,
    /// How long JetStream waits for an ack before redelivering. Default 30 000.
    pub ack_wait_ms: u64,
    /// Failed attempts before an event is given up (`tl.out.failed` + dead letter).
    /// Default 10.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max_ms`. Default 500.
    pub retry_base_ms: u64,
    /// Longest retry delay. Default 60 000.
    pub retry_max_ms: u64,
    /// Largest inbound event, in bytes; larger ones are rejected (`payload_too_large`).
    /// Default 1 MiB.
    pub max_event_bytes: usize,
    /// How long a post's claim protects an in-flight platform call from a second instance:
    /// longer than any single platform call (`http_timeout_ms`). Default 20 000.
    pub claim_lease_ms: u64,
    /// How long a completion waits for a `pending` binding before falling back.
    /// Default 120 000.
    pub pending_timeout_ms: u64,
    /// How long a completion of an unknown session waits for its spawn to be processed
    /// before it falls back (`unknown_session`): a completion may overtake its spawn.
    /// Default 10 000.
    pub unknown_session_grace_ms: u64,
    /// How long dedup records (routing decisions, post claims) are kept. Default 7 days.
    pub dedup_ttl_ms: u64,
    /// Limit of one platform HTTP call. Default 10 000.
    pub http_timeout_ms: u64,
    /// Delivery lanes per channel (`tl.deliver.<channel>.<n>`, a durable consumer each,
    /// pulled by one deliverer instance at a time): at most this many instances post for a
    /// channel at once. The same value everywhere in a deployment: the first worker records
    /// it in Redis, a worker configured otherwise refuses to start, and a worker that leaves
    /// it unset (the default) takes the recorded one (see [`Config::lanes`]).
    #[debug("{}", match delivery_partitions {
        Some(n) => n.to_string(),
        None => format!("unset (the deployment's recorded count; a new deployment gets {DEFAULT_DELIVERY_PARTITIONS})"),
    })]
    pub delivery_partitions: Option<u32>,
    /// How long a deliverer instance owns a delivery lane without renewing it (renewed every
    /// third of it). One instance pulls each lane, in batches; when it dies, another takes
    /// the lane over after this long (see `runtime::lanes`). Default 10 000.
    pub lane_lease_ms: u64,
    /// Posts a lane's owner holds at once (the lane consumer's `max_ack_pending`): posts to
    /// different conversations of a lane run concurrently, each conversation in order.
    /// Default 64.
    pub lane_batch: u32,
    /// A deliverer instance refreshes a binding's `last_activity_at` at most this often:
    /// a busy thread's posts would otherwise each cost a store write, for a time nobody
    /// needs finer than this (idle timeouts are minutes to hours). 0: on every post.
    /// Default 500.
    pub touch_interval_ms: u64,
    /// How often deliverers re-read their token source, besides `credentials_rotated`.
    /// Default 60 000.
    pub credentials_reload_ms: u64,

    // --- Lifecycle and retention ---
    /// Binding idle timeout when neither the spawn nor the channel names one.
    /// Default 24 hours.
    pub default_idle_timeout_ms: u64,
    /// How often the binding sweeper looks for expired bindings. Default 30 000.
    pub sweep_interval_ms: u64,
    /// How long ended sessions and bindings are kept for inspection before expiring.
    /// Default 7 days.
    pub ended_ttl_ms: u64,
    /// How long input, delivery and outbound streams keep messages. Default 7 days.
    pub stream_max_age_ms: u64,
    /// Grace period for in-flight work on SIGTERM. Default 20 000.
    pub drain_timeout_ms: u64,
    /// Tokio worker threads of each worker's runtime. 0 (the default): one, a current-thread
    /// runtime. A `run binder`, `run router` or `run deliver …` process runs one worker
    /// (scaled by running more of them); `run all` runs each of its workers on a runtime of
    /// its own; the operator commands use one thread per core. One thread spends less CPU
    /// per event than two, and a current-thread runtime less than a one-thread multi-thread
    /// one: its connections write many events' commands at once (`app::runtime_builder`).
    pub worker_threads: u32,

    // --- Channels ---
    /// The `discord` channel.
    pub discord: PlatformConfig,
    /// The `slack` channel.
    pub slack: PlatformConfig,
    /// The `telegram` channel.
    pub telegram: PlatformConfig,
    /// The `matrix` channel; `api_base` is the homeserver URL (`homeserver` is accepted too).
    pub matrix: PlatformConfig,
    /// Generic HTTP channels, `webhook:<name>`, by name; from the environment as one table,
    /// `THREADLINE_WEBHOOKS='{ops={url="…",threads=true}}'`. Default none.
    pub webhooks: BTreeMap<String, WebhookConfig>,

    // --- Listening ---
    /// Where the HTTP listener modes are served (Slack events, the Telegram webhook, the
    /// Matrix appservice, inbound webhooks), one server per process. Default
    /// `127.0.0.1:8088`.
    pub listen_addr: String,
    /// How long a listener replica holds a poll, a sync or a Gateway shard without renewing
    /// it (renewed every third of it): a dead replica's share moves after this long.
    /// Default 10 000.
    pub listen_lease_ms: u64,

    // --- Telemetry and health ---
    /// Where `/healthz`, `/readyz` and `/metrics` are served; empty turns the server off.
    /// Default `127.0.0.1:9090`.
    pub health_addr: String,
    /// How logs are written; default `text`.
    pub log_format: LogFormat,
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`; `/v1/traces` is
    /// appended) to export spans to; empty (the default) exports nothing. Trace context is
    /// carried through every hop either way.
    pub otlp_endpoint: String,
    /// How often each process reads its consumers' pending counts for `/metrics`.
    /// Default 5 000.
    pub pending_poll_ms: u64,

    /// The file this configuration was loaded from; re-read when credentials rotate. Not a
    /// setting.
    #[serde(skip)]
    pub source_file: Option<PathBuf>,
}

const DAY_MS: u64 = 24 * 3_600_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            nats_url: "nats://127.0.0.1:4222".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_cluster: false,
            stream_replicas: 1,
            subject_prefix: "tl".into(),
            redis_timeout_ms: 5_000,
            nats_user: None,
            nats_password: None,
            nats_password_file: None,
            nats_token: None,
            nats_token_file: None,
            nats_nkey_seed: None,
            nats_nkey_seed_file: None,
            nats_credentials_file: None,
            nats_tls_ca_file: None,
            nats_tls_cert_file: None,
            nats_tls_key_file: None,
            nats_inbox_prefix: None,
            redis_username: None,
            redis_password: None,
            redis_password_file: None,
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,

            concurrency: 256,
            ack_wait_ms: 30_000,
            max_attempts: 10,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            max_event_bytes: threadline_schemas::DEFAULT_MAX_EVENT_BYTES,
            claim_lease_ms: 20_000,
            pending_timeout_ms: 120_000,
            unknown_session_grace_ms: 10_000,
            dedup_ttl_ms: 7 * DAY_MS,
            http_timeout_ms: 10_000,
            delivery_partitions: None,
            lane_lease_ms: 10_000,
            lane_batch: 64,
            touch_interval_ms: 500,
            credentials_reload_ms: 60_000,

            default_idle_timeout_ms: DAY_MS,
            sweep_interval_ms: 30_000,
            ended_ttl_ms: 7 * DAY_MS,
            stream_max_age_ms: 7 * DAY_MS,
            drain_timeout_ms: 20_000,
            worker_threads: 0,

            discord: PlatformConfig::with_base("https://discord.com/api/v10"),
            slack: PlatformConfig::with_base("https://slack.com/api"),
            telegram: PlatformConfig::with_base("https://api.telegram.org"),
            matrix: PlatformConfig::with_base("https://matrix.org"),
            webhooks: BTreeMap::new(),

            listen_addr: "127.0.0.1:8088".into(),
            listen_lease_ms: 10_000,

            health_addr: "127.0.0.1:9090".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: String::new(),
            pending_poll_ms: 5_000,

            source_file: None,
        }
    }
}

/// A fresh directory for one test's files.
#[cfg(test)]
pub(crate) fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tl-config-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}
