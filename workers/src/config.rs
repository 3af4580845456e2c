//! Settings: defaults, then a TOML file (`--config` / `THREADLINE_CONFIG`), then environment
//! variables (`THREADLINE_*`, docs/design.md §4). Platform URLs and tokens come only from here —
//! never from events — so an event cannot point Threadline at another host or identity.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A credential, held by `secrecy` (zeroed when dropped). Its `Debug` never shows the
/// value, and it has no `Display`, so it cannot leak into logs or errors by formatting.
/// It serialises transparently: a configuration file is where a secret belongs.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }
    /// The value, for the one place that sends it (an `Authorization` header, a connect).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}
impl Eq for Secret {}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Accepts numbers too: figment parses `THREADLINE_NATS_PASSWORD=123456` as an integer,
/// which is still a password.
struct SecretVisitor;

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a secret string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything a Threadline process needs to know.
///
/// `Debug` (what `threadline config` prints) shows secrets as `<redacted>` and URLs without
/// their user info.
#[derive(derive_more::Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// One server URL, or several separated by commas (the seeds of a NATS cluster; the
    /// client also learns the other members from the server it reaches).
    #[debug("{:?}", redact_urls(nats_url))]
    pub nats_url: String,
    /// One Redis URL; with `redis_cluster`, the seed nodes of a Redis Cluster separated by
    /// commas.
    #[debug("{:?}", redact_urls(redis_url))]
    pub redis_url: String,
    /// `redis_url` names Redis Cluster seed nodes: slots are followed to their owners.
    pub redis_cluster: bool,
    /// Replicas of every stream Threadline creates: 1 for a single server, 3 for a
    /// three-node NATS cluster (R3 survives the loss of one node).
    pub stream_replicas: usize,
    /// Subject prefix and Redis key namespace, so deployments can share NATS and Redis.
    pub subject_prefix: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; empty turns the server off.
    pub health_addr: String,
    pub log_format: LogFormat,
    /// Events one worker handles at once (per consumer). 256: in the benchmark 64 cost 12%
    /// more CPU per completion (smaller pulls, smaller Redis write batches); 1024 gained
    /// nothing and took the router past 64 MiB.
    pub concurrency: usize,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait_ms: u64,
    /// Failed attempts before an event is given up (`tl.out.failed` + dead letter).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_event_bytes: usize,
    /// How long a post's claim protects an in-flight platform call from a second instance.
    /// Longer than any single platform call (`http_timeout_ms`).
    pub claim_lease_ms: u64,
    /// How long a completion waits for a `pending` binding before falling back.
    pub pending_timeout_ms: u64,
    /// How long a completion of an unknown session waits for its spawn to be processed
    /// before it falls back (`unknown_session`): a completion may overtake its spawn.
    pub unknown_session_grace_ms: u64,
    /// How long dedup records (routing decisions, post claims) are kept.
    pub dedup_ttl_ms: u64,
    /// How long ended sessions and bindings are kept for inspection before expiring.
    pub ended_ttl_ms: u64,
    pub default_idle_timeout_ms: u64,
    pub http_timeout_ms: u64,
    /// Redis response timeout (redis-rs defaults to 500 ms, too short under load: docs/pitfalls.md, Redis).
    pub redis_timeout_ms: u64,
    /// How long input, delivery and outbound streams keep messages.
    pub stream_max_age_ms: u64,
    /// Grace period for in-flight work on SIGTERM.
    pub drain_timeout_ms: u64,
    /// Tokio worker threads of each worker's runtime. 0 (the default): one, a current-thread
    /// runtime. A `run binder`, `run router` or `run deliver …` process runs one worker
    /// (scaled by running more of them); `run all` runs each of its workers on a runtime of
    /// its own; the operator commands use one thread per core. One thread spends less CPU
    /// per event than two, and a current-thread runtime less than a one-thread multi-thread
    /// one: its connections write many events' commands at once (`app::runtime_builder`,
    /// measured in commit 73880db).
    pub worker_threads: u32,
    pub discord: PlatformConfig,
    pub slack: PlatformConfig,
    pub telegram: PlatformConfig,
    /// `api_base` is the homeserver URL (`homeserver` is accepted too).
    pub matrix: PlatformConfig,
    /// Delivery lanes per channel (`tl.deliver.<channel>.<n>`, a durable consumer each,
    /// pulled by one deliverer instance at a time): at most this many instances post for a
    /// channel at once. The same value everywhere in a deployment: the first worker records
    /// it in Redis, a worker configured otherwise refuses to start, and a worker that leaves
    /// it unset takes the recorded one (see [`Config::lanes`]).
    #[debug("{}", match delivery_partitions {
        Some(n) => n.to_string(),
        None => format!("unset (the deployment's recorded count; a new deployment gets {DEFAULT_DELIVERY_PARTITIONS})"),
    })]
    pub delivery_partitions: Option<u32>,
    /// How long a deliverer instance owns a delivery lane without renewing it (renewed every
    /// third of it). One instance pulls each lane, in batches; when it dies, another takes
    /// the lane over after this long (see `runtime::lanes`).
    pub lane_lease_ms: u64,
    /// Posts a lane's owner holds at once (the lane consumer's `max_ack_pending`): posts to
    /// different conversations of a lane run concurrently, each conversation in order.
    pub lane_batch: u32,
    /// A deliverer instance refreshes a binding's `last_activity_at` at most this often:
    /// a busy thread's posts would otherwise each cost a store write, for a time nobody
    /// needs finer than this (idle timeouts are minutes to hours). 0: on every post.
    pub touch_interval_ms: u64,
    /// Generic HTTP channels, `webhook:<name>`; TOML only.
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// How often the binding sweeper looks for expired bindings.
    pub sweep_interval_ms: u64,
    /// How often deliverers re-read their token source, besides `credentials_rotated`.
    pub credentials_reload_ms: u64,
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`; `/v1/traces` is
    /// appended) to export spans to; empty (the default) exports nothing. Trace context is
    /// carried through every hop either way.
    pub otlp_endpoint: String,
    /// How often each process reads its consumers' pending counts for `/metrics`.
    pub pending_poll_ms: u64,
    // Connection security (docs/security.md). Each secret may be given inline or as a file
    // (`*_file`, a mounted container secret; the file wins). NATS takes at most one of
    // user/password, token, NKey seed and credentials file.
    /// NATS user name (with `nats_password`); not a secret.
    pub nats_user: Option<String>,
    pub nats_password: Option<Secret>,
    pub nats_password_file: Option<PathBuf>,
    pub nats_token: Option<Secret>,
    pub nats_token_file: Option<PathBuf>,
    /// An NKey seed (`SU…`); the server knows the public key.
    pub nats_nkey_seed: Option<Secret>,
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT + NKey seed) for decentralised (operator) auth.
    pub nats_credentials_file: Option<PathBuf>,
    /// PEM CA that signed the NATS server's certificate; setting it requires TLS.
    pub nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (`verify: true`).
    pub nats_tls_cert_file: Option<PathBuf>,
    pub nats_tls_key_file: Option<PathBuf>,
    /// Prefix of the reply subjects (default `_INBOX`). Give Threadline its own (e.g.
    /// `_INBOX_threadline`) when publishers share the account: pulled messages arrive on
    /// reply subjects, and a user allowed `_INBOX.>` could otherwise read them.
    pub nats_inbox_prefix: Option<String>,
    /// Redis ACL user (with `redis_password`; the password alone authenticates `default`).
    pub redis_username: Option<String>,
    pub redis_password: Option<Secret>,
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA that signed the Redis server's certificate (`rediss://` URLs).
    pub redis_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for `tls-auth-clients yes`.
    pub redis_tls_cert_file: Option<PathBuf>,
    pub redis_tls_key_file: Option<PathBuf>,
    /// The file this configuration was loaded from; re-read when credentials rotate.
    #[serde(skip)]
    pub source_file: Option<PathBuf>,
}

/// Per-channel binding lifecycle and identity settings (the same keys in `[discord]` and
/// in each `[webhooks.<name>]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelPolicy {
    /// Idle timeout for bindings on this channel when the spawn names none.
    pub idle_timeout_ms: Option<u64>,
    /// Maximum binding age on this channel when the spawn names none (default: off).
    pub max_age_ms: Option<u64>,
    /// Author ids that are Threadline itself (bot user, persona webhooks): their messages
    /// are never input. The bot's id is also learned from the platform's answers.
    pub own_author_ids: Vec<String>,
}

/// What to do with a post whose earlier attempt may have landed, on a platform that offers
/// neither an idempotency key nor a way to read recent messages (Telegram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownOutcome {
    /// Post again: a possible duplicate rather than a possible loss.
    #[default]
    Repost,
    /// Do not post again: a possible loss rather than a possible duplicate.
    Skip,
}

/// A native platform adapter (`[discord]`, `[slack]`, `[telegram]`, `[matrix]`); enabled
/// when it has a `token` or a `token_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformConfig {
    /// The API base URL (Matrix: the homeserver). Tests point it at a loopback fake.
    pub api_base: String,
    /// `[matrix] homeserver` / `THREADLINE_MATRIX_HOMESERVER`: the documented Matrix name of
    /// `api_base`, which it replaces when set ([`Config::load`]). A field of its own, not a
    /// serde alias: the defaults always carry `api_base`, and an alias of a key already
    /// present is a duplicate field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub homeserver: Option<String>,
    pub token: Secret,
    /// A file holding the token (a mounted secret); takes precedence over `token` and is
    /// re-read on rotation.
    pub token_file: Option<PathBuf>,
    pub idle_timeout_ms: Option<u64>,
    pub max_age_ms: Option<u64>,
    pub own_author_ids: Vec<String>,
    /// Only used where the platform has no idempotency key and no read-back.
    pub unknown_outcome: UnknownOutcome,
    /// Discord only: a persona (channel webhook) per parent channel id. Posts to that
    /// channel and its threads go out under the persona; farewells always as the bot.
    pub personas: BTreeMap<String, Persona>,
    /// Discord only: how long a message nonce is trusted to deduplicate a re-send (Discord
    /// checks it "in the past few minutes"); an attempt in doubt for longer is read back.
    pub nonce_window_ms: Option<u64>,
}

/// A Discord channel webhook Threadline posts through, so output carries an agent's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    pub webhook_id: String,
    pub webhook_token: Secret,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

impl PlatformConfig {
    fn with_base(api_base: &str) -> Self {
        PlatformConfig {
            api_base: api_base.into(),
            homeserver: None,
            token: Secret::default(),
            token_file: None,
            idle_timeout_ms: None,
            max_age_ms: None,
            own_author_ids: Vec::new(),
            unknown_outcome: UnknownOutcome::default(),
            personas: BTreeMap::new(),
            nonce_window_ms: None,
        }
    }

    fn enabled(&self) -> bool {
        !self.token.is_empty() || self.token_file.is_some()
    }
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig::with_base("")
    }
}

/// Lanes per channel of a new deployment. Each busy lane is a consumer nats-server serves on
/// its own, so 16 busy lanes cost it more per post than 4 (measured in commit 2b8f11c,
/// "Four lanes for a new deployment"). Four instances posting for one channel at once is already past
/// what any platform lets one bot post.
pub const DEFAULT_DELIVERY_PARTITIONS: u32 = 4;

/// The native platforms, by channel name.
pub const PLATFORMS: [&str; 4] = ["discord", "slack", "telegram", "matrix"];

/// One generic webhook channel (the bridge to WhatsApp, Signal, Feishu, …).
#[derive(derive_more::Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[debug("{:?}", redact_url(url))]
    pub url: String,
    /// Whether the receiver understands threads (`create_thread` and thread posts).
    #[serde(default)]
    pub threads: bool,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token; re-read on rotation.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_webhook_chars")]
    pub max_message_chars: usize,
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    #[serde(default)]
    pub own_author_ids: Vec<String>,
}

fn default_webhook_chars() -> usize {
    4000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats_url: "nats://127.0.0.1:4222".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_cluster: false,
            stream_replicas: 1,
            subject_prefix: "tl".into(),
            health_addr: "127.0.0.1:9090".into(),
            log_format: LogFormat::Text,
            concurrency: 256,
            ack_wait_ms: 30_000,
            max_attempts: 10,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            max_event_bytes: threadline_schemas::DEFAULT_MAX_EVENT_BYTES,
            claim_lease_ms: 20_000,
            pending_timeout_ms: 120_000,
            unknown_session_grace_ms: 10_000,
            dedup_ttl_ms: 7 * 24 * 3_600_000,
            ended_ttl_ms: 7 * 24 * 3_600_000,
            default_idle_timeout_ms: 24 * 3_600_000,
            http_timeout_ms: 10_000,
            redis_timeout_ms: 5_000,
            stream_max_age_ms: 7 * 24 * 3_600_000,
            drain_timeout_ms: 20_000,
            worker_threads: 0,
            discord: PlatformConfig::with_base("https://discord.com/api/v10"),
            slack: PlatformConfig::with_base("https://slack.com/api"),
            telegram: PlatformConfig::with_base("https://api.telegram.org"),
            matrix: PlatformConfig::with_base("https://matrix.org"),
            delivery_partitions: None,
            lane_lease_ms: 10_000,
            lane_batch: 64,
            touch_interval_ms: 500,
            webhooks: BTreeMap::new(),
            sweep_interval_ms: 30_000,
            credentials_reload_ms: 60_000,
            otlp_endpoint: String::new(),
            pending_poll_ms: 5_000,
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
            source_file: None,
        }
    }
}

/// Top-level keys that may come from `THREADLINE_<KEY>`; other `THREADLINE_*` variables
/// (e.g. the test harness's) are not ours and are ignored rather than refused.
const ENV_TOP_LEVEL: &[&str] = &[
    "nats_url",
    "redis_url",
    "subject_prefix",
    "health_addr",
    "log_format",
    "concurrency",
    "ack_wait_ms",
    "max_attempts",
    "retry_base_ms",
    "retry_max_ms",
    "max_event_bytes",
    "claim_lease_ms",
    "pending_timeout_ms",
    "unknown_session_grace_ms",
    "dedup_ttl_ms",
    "ended_ttl_ms",
    "default_idle_timeout_ms",
    "http_timeout_ms",
    "redis_timeout_ms",
    "stream_max_age_ms",
    "drain_timeout_ms",
    "worker_threads",
    "sweep_interval_ms",
    "credentials_reload_ms",
    "delivery_partitions",
    "lane_lease_ms",
    "lane_batch",
    "touch_interval_ms",
    "redis_cluster",
    "stream_replicas",
    // A whole table in one variable, so a deployment configured only by environment (a
    // container) can still have webhook channels: `{ops={url="…",threads=true}}`.
    "webhooks",
    "otlp_endpoint",
    "pending_poll_ms",
    "nats_user",
    "nats_password",
    "nats_password_file",
    "nats_token",
    "nats_token_file",
    "nats_nkey_seed",
    "nats_nkey_seed_file",
    "nats_credentials_file",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
    "nats_inbox_prefix",
    "redis_username",
    "redis_password",
    "redis_password_file",
    "redis_tls_ca_file",
    "redis_tls_cert_file",
    "redis_tls_key_file",
];
const PLATFORM_ENV_FIELDS: &[&str] = &[
    "api_base",
    "homeserver",
    "token",
    "token_file",
    "idle_timeout_ms",
    "max_age_ms",
    "unknown_outcome",
    // Structured values in one variable: `["123","456"]`, `{"<channel id>"={webhook_id="…",…}}`.
    "own_author_ids",
    "personas",
    "nonce_window_ms",
];

fn env_key(key: &str) -> Option<String> {
    // figment hands the key over as written (`NATS_URL`); it lowercases only afterwards.
    let key = key.to_ascii_lowercase();
    let key = key.as_str();
    if ENV_TOP_LEVEL.contains(&key) {
        return Some(key.to_owned());
    }
    PLATFORMS.iter().find_map(|section| {
        key.strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('_'))
            .filter(|field| PLATFORM_ENV_FIELDS.contains(field))
            .map(|field| format!("{section}.{field}"))
    })
}

impl Config {
    /// Defaults → TOML file (when given) → `THREADLINE_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(
                // figment hands the key over as written (`NATS_URL`); it lowercases only
                // after this filter, so compare lowercased or no variable ever matches.
                Env::prefixed("THREADLINE_")
                    .filter_map(|key| env_key(&key.as_str().to_ascii_lowercase()).map(Into::into)),
            )
            .extract::<Config>()
            .map_err(Box::new)
            .and_then(|mut config| {
                config.source_file = file.map(Path::to_path_buf);
                if let Some(homeserver) = config.matrix.homeserver.take() {
                    config.matrix.api_base = homeserver;
                }
                for (name, platform) in [
                    ("discord", &config.discord),
                    ("slack", &config.slack),
                    ("telegram", &config.telegram),
                ] {
                    if platform.homeserver.is_some() {
                        return Err(Box::new(figment::Error::from(format!(
                            "[{name}] has no `homeserver` (a Matrix setting); use `api_base`"
                        ))));
                    }
                }
                Ok(config)
            })
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
    pub fn claim_lease(&self) -> Duration {
        Duration::from_millis(self.claim_lease_ms)
    }
    pub fn http_timeout(&self) -> Duration {
        Duration::from_millis(self.http_timeout_ms)
    }

    /// The settings of a native platform channel (`discord`, `slack`, …).
    pub fn platform(&self, channel: &str) -> Option<&PlatformConfig> {
        match channel {
            "discord" => Some(&self.discord),
            "slack" => Some(&self.slack),
            "telegram" => Some(&self.telegram),
            "matrix" => Some(&self.matrix),
            _other => None,
        }
    }

    /// The lifecycle and identity settings of `channel`.
    pub fn policy(&self, channel: &str) -> Option<ChannelPolicy> {
        if let Some(d) = self.platform(channel) {
            return Some(ChannelPolicy {
                idle_timeout_ms: d.idle_timeout_ms,
                max_age_ms: d.max_age_ms,
                own_author_ids: d.own_author_ids.clone(),
            });
        }
        channel
            .strip_prefix("webhook:")
            .and_then(|name| self.webhooks.get(name))
            .map(|w| ChannelPolicy {
                idle_timeout_ms: w.idle_timeout_ms,
                max_age_ms: w.max_age_ms,
                own_author_ids: w.own_author_ids.clone(),
            })
    }

    /// The token of `channel` as configured now: its token file when it has one, else the
    /// value from the file or environment. `None` when the channel is not configured.
    pub fn token(&self, channel: &str) -> Option<Result<Secret, std::io::Error>> {
        let (file, value) = if let Some(platform) = self.platform(channel) {
            (platform.token_file.as_ref(), Some(platform.token.clone()))
        } else {
            let hook = channel
                .strip_prefix("webhook:")
                .and_then(|n| self.webhooks.get(n))?;
            (hook.token_file.as_ref(), hook.token.clone())
        };
        Some(match (file, value) {
            (Some(path), _) => std::fs::read_to_string(path).map(|t| Secret::new(t.trim())),
            (None, Some(value)) => Ok(value),
            (None, None) => Ok(Secret::default()),
        })
    }

    /// The NATS password: `nats_password_file` when set, else `nats_password`.
    pub fn nats_password(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret(
            "nats_password",
            &self.nats_password,
            &self.nats_password_file,
        )
    }
    /// The NATS token: `nats_token_file` when set, else `nats_token`.
    pub fn nats_token(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret("nats_token", &self.nats_token, &self.nats_token_file)
    }
    /// The NATS NKey seed: `nats_nkey_seed_file` when set, else `nats_nkey_seed`.
    pub fn nats_nkey_seed(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret(
            "nats_nkey_seed",
            &self.nats_nkey_seed,
            &self.nats_nkey_seed_file,
        )
    }
    /// The Redis password: `redis_password_file` when set, else `redis_password`.
    pub fn redis_password(&self) -> Result<Option<Secret>, SecretFileError> {
        resolve_secret(
            "redis_password",
            &self.redis_password,
            &self.redis_password_file,
        )
    }

    /// Delivery lanes per channel: `delivery_partitions`, or [`DEFAULT_DELIVERY_PARTITIONS`]
    /// when unset. A worker resolves an unset count to the deployment's recorded one before
    /// it uses it (`WorkerContext::connect_with`), as `doctor` does.
    pub fn lanes(&self) -> u32 {
        self.delivery_partitions
            .unwrap_or(DEFAULT_DELIVERY_PARTITIONS)
            .max(1)
    }

    /// The channels this deployment can deliver to: each native platform with a token, and
    /// `webhook:<name>` for every configured webhook.
    pub fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = PLATFORMS
            .iter()
            .filter(|p| self.platform(p).is_some_and(PlatformConfig::enabled))
            .map(|p| (*p).to_owned())
            .collect();
        channels.extend(self.webhooks.keys().map(|name| format!("webhook:{name}")));
        channels
    }
}

/// A secret file that cannot be read. Names the setting and the path, never the contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {setting} from {path}: {source}")]
pub struct SecretFileError {
    pub setting: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A secret given inline or as a file; the file wins, and its surrounding whitespace (the
/// trailing newline of `echo secret > file`) is not part of the secret. Empty means unset.
fn resolve_secret(
    setting: &'static str,
    value: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, SecretFileError> {
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim()))
            .map_err(|source| SecretFileError {
                setting,
                path: path.clone(),
                source,
            })?,
        None => value.clone().unwrap_or_default(),
    };
    Ok(Some(secret).filter(|s| !s.is_empty()))
}

/// A URL without its user info (`scheme://<redacted>@host`), for messages, logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>@{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        (Some(_), Some(_)) | (Some(_), None) | (None, Some(_)) | (None, None) => url.to_owned(),
    }
}

/// [`redact_url`] for each URL of a comma-separated list (cluster seeds).
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_fields_and_foreign_ones_are_ignored() {
        assert_eq!(env_key("nats_url").as_deref(), Some("nats_url"));
        assert_eq!(
            env_key("discord_api_base").as_deref(),
            Some("discord.api_base")
        );
        assert_eq!(env_key("test_nats_server"), None);
        // As figment passes them: the variable's own (upper) case.
        assert_eq!(env_key("NATS_PASSWORD").as_deref(), Some("nats_password"));
        assert_eq!(
            env_key("DISCORD_TOKEN_FILE").as_deref(),
            Some("discord.token_file")
        );
        assert_eq!(env_key("discord_nope"), None);
        assert_eq!(
            env_key("DISCORD_NONCE_WINDOW_MS").as_deref(),
            Some("discord.nonce_window_ms")
        );
    }

    #[test]
    fn the_discord_nonce_window_loads_from_toml() {
        let dir = tempfile_dir("nonce-window");
        let path = dir.join("threadline.toml");
        std::fs::write(&path, "[discord]\nnonce_window_ms = 5000\n").expect("write");
        let config = Config::load(Some(&path)).expect("loads");
        assert_eq!(config.discord.nonce_window_ms, Some(5_000));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_documented_matrix_setting_loads_from_toml() {
        let dir = std::env::temp_dir().join(format!("threadline-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("threadline.toml");
        let token_file = dir.join("matrix-token");
        std::fs::write(
            &path,
            format!(
                "[matrix]\nhomeserver = \"https://hs.example\"\ntoken = \"syt_x\"\n\
                 token_file = {token_file:?}\nidle_timeout_ms = 60000\nmax_age_ms = 120000\n\
                 own_author_ids = [\"@bot:hs.example\"]\n"
            ),
        )
        .unwrap();
        let c = Config::load(Some(&path)).expect("the documented [matrix] settings load");
        assert_eq!(c.matrix.api_base, "https://hs.example");
        assert_eq!(c.matrix.homeserver, None);
        assert_eq!(c.matrix.token.expose(), "syt_x");
        assert_eq!(c.matrix.token_file.as_deref(), Some(token_file.as_path()));
        assert_eq!(
            (c.matrix.idle_timeout_ms, c.matrix.max_age_ms),
            (Some(60_000), Some(120_000))
        );
        assert_eq!(c.matrix.own_author_ids, ["@bot:hs.example"]);
        assert!(c.channels().contains(&"matrix".to_owned()));

        // `api_base` still works, and `homeserver` is no Discord setting.
        std::fs::write(&path, "[matrix]\napi_base = \"https://other.example\"\n").unwrap();
        assert_eq!(
            Config::load(Some(&path)).unwrap().matrix.api_base,
            "https://other.example"
        );
        std::fs::write(&path, "[discord]\nhomeserver = \"https://x\"\n").unwrap();
        assert!(Config::load(Some(&path)).is_err());
        assert_eq!(
            env_key("MATRIX_HOMESERVER").as_deref(),
            Some("matrix.homeserver")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let mut c = Config::default();
        c.discord.token = s;
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn debug_hides_url_credentials_and_connection_secrets() {
        let c = Config {
            nats_url: "nats://svc:n4ts-pw@127.0.0.1:4222".into(),
            redis_url: "rediss://:r3dis-pw@127.0.0.1:6380".into(),
            nats_token: Some(Secret::new("n4ts-token")),
            redis_password: Some(Secret::new("r3dis-acl")),
            ..Config::default()
        };
        let printed = format!("{c:#?}");
        for secret in ["n4ts-pw", "r3dis-pw", "n4ts-token", "r3dis-acl"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("nats://<redacted>@127.0.0.1:4222"));
    }

    #[test]
    fn secret_file_wins_over_value_and_loses_its_newline() {
        let dir = tempfile_dir("secret-file");
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let c = Config {
            nats_password: Some(Secret::new("inline")),
            nats_password_file: Some(file),
            redis_password: Some(Secret::new("inline")),
            ..Config::default()
        };
        assert_eq!(c.nats_password().unwrap().unwrap().expose(), "from-file");
        assert_eq!(c.redis_password().unwrap().unwrap().expose(), "inline");
        assert!(c.nats_token().unwrap().is_none());
        let missing = Config {
            nats_token_file: Some(dir.join("absent")),
            ..Config::default()
        };
        let error = missing.nats_token().unwrap_err().to_string();
        assert!(
            error.contains("nats_token") && error.contains("absent"),
            "{error}"
        );
    }

    #[test]
    fn numeric_secrets_from_the_environment_are_strings() {
        let secret: Secret = serde_json::from_str("123456").unwrap();
        assert_eq!(secret.expose(), "123456");
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tl-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_then_env_layering() {
        let dir = std::env::temp_dir().join(format!("tl-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "subject_prefix = \"x\"\n[webhooks.ops]\nurl = \"http://127.0.0.1:1/hook\"\nthreads = true\n",
        )
        .unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.subject_prefix, "x");
        assert!(c.webhooks["ops"].threads);
        assert!(c.channels().contains(&"webhook:ops".to_owned()));
        // Left unset, the lane count is the deployment's (resolved at start-up).
        assert_eq!(c.delivery_partitions, None);
        assert_eq!(c.lanes(), DEFAULT_DELIVERY_PARTITIONS);
    }

    #[test]
    fn a_lane_count_in_the_file_is_kept_as_set() {
        let dir = std::env::temp_dir().join(format!("tl-config-lanes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "delivery_partitions = 16\n").unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!((c.delivery_partitions, c.lanes()), (Some(16), 16));
        // `threadline config` says what an unset count means rather than `None`.
        assert!(format!("{c:?}").contains("delivery_partitions: 16,"));
        let unset = format!("{:?}", Config::default());
        assert!(
            unset.contains("delivery_partitions: unset (the deployment's recorded count; a new deployment gets 4)"),
            "{unset}"
        );
        std::fs::write(&file, "delivery_partitions = 0\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().lanes(), 1);
    }
}
