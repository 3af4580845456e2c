//! A whole Threadline deployment for one test: real nats-server and redis-server on free
//! ports, the Discord and webhook fakes, Threadline's workers (in this process, or as
//! `threadline` OS processes that can be killed), a publisher, and an observer that records
//! everything Threadline reports on `tl.out.*`, `tl.agent.*` and `tl.dlq.*`.

use crate::fakes::matrix::FakeMatrix;
use crate::fakes::telegram::FakeTelegram;
use crate::fakes::{FakeDiscord, FakeSlack, FakeWebhook};
use crate::servers::{NatsOptions, NatsServer, RedisOptions, RedisServer};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use threadline::app::{self, Role};
use threadline::config::{Config, Secret, WebhookConfig};
use threadline::io::nats::{ensure_streams, StreamKind};
use threadline_schemas::{
    BindingChange, BindingChanged, CompletionReported, ConversationRef, EventRejected, Placement,
    PostDelivered, PostFailed, SessionInput, SessionMode, SessionSpawned, SpawnRequested, Subjects,
};
use tokio_util::sync::CancellationToken;

/// The Discord bot token the fake accepts.
pub const DISCORD_TOKEN: &str = "test-token";
/// The account id used in conversations.
pub const ACCOUNT: &str = "100000000000000099";

/// One message Threadline published where the observer listens.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The subject it was published on.
    pub subject: String,
    /// Its NATS headers (first value of each).
    pub headers: BTreeMap<String, String>,
    /// The undecoded payload (MessagePack for events).
    pub payload: bytes::Bytes,
}

/// Everything seen on Threadline's output subjects, in arrival order.
#[derive(Clone, Default)]
pub struct Observer {
    seen: Arc<Mutex<Vec<Observed>>>,
}

impl Observer {
    /// Every message seen so far, in arrival order.
    pub fn all(&self) -> Vec<Observed> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Decoded events on exactly `subject`.
    pub fn events<T: DeserializeOwned>(&self, subject: &str) -> Vec<T> {
        self.all()
            .into_iter()
            .filter(|o| o.subject == subject)
            .map(|o| {
                rmp_serde::from_slice(&o.payload)
                    .unwrap_or_else(|e| panic!("undecodable event on {subject}: {e}"))
            })
            .collect()
    }

    /// Raw messages whose subject starts with `prefix`.
    pub fn raw(&self, prefix: &str) -> Vec<Observed> {
        self.all()
            .into_iter()
            .filter(|o| o.subject.starts_with(prefix))
            .collect()
    }

    /// Waits until `check` finds something among the events on `subject`.
    pub async fn wait_for<T: DeserializeOwned>(
        &self,
        subject: &str,
        timeout: Duration,
        check: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.events::<T>(subject).into_iter().find(|e| check(e)) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How to run the deployment.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run `threadline run all` inside the test process.
    pub in_process: bool,
    /// Applied to the generated configuration before start.
    pub tune: fn(&mut Config),
}

/// How the servers are secured and how Threadline reaches them ([`Pipeline::start_secured`]).
#[derive(Clone, Default)]
pub struct Security {
    /// How nats-server is started (authentication, accounts, TLS).
    pub nats: NatsOptions,
    /// How redis-server is started (ACL users, TLS).
    pub redis: RedisOptions,
    /// Applied after `tune`, knowing the servers: credentials, CA files, a `rediss://` URL.
    /// The harness's own NATS and Redis clients use the resulting configuration too.
    pub configure: Option<Arc<ConfigureFn>>,
}

/// A configuration step that may capture test state (secret file paths, certificates).
pub type ConfigureFn = dyn Fn(&mut Config, &NatsServer, &RedisServer) + Send + Sync;

impl Default for Options {
    fn default() -> Self {
        Options {
            in_process: true,
            tune: |_| {},
        }
    }
}

/// A running deployment.
pub struct Pipeline {
    /// The deployment's nats-server (stop/restart it for fault tests).
    pub nats: NatsServer,
    /// The deployment's redis-server.
    pub redis: RedisServer,
    /// The fake Discord API the workers post to.
    pub discord: FakeDiscord,
    /// The fake Slack Web API.
    pub slack: FakeSlack,
    /// The fake Telegram Bot API.
    pub telegram: FakeTelegram,
    /// The fake Matrix client-server API.
    pub matrix: FakeMatrix,
    /// The receiver of the configured webhook channels.
    pub webhook: FakeWebhook,
    /// The configuration the workers run with (change it, then `rewrite_config_file`).
    pub config: Config,
    /// Subject names under the configured prefix.
    pub subjects: Subjects,
    /// The harness's own NATS connection.
    pub client: async_nats::Client,
    /// JetStream on [`client`](Self::client), for publishing and inspecting streams.
    pub js: jetstream::Context,
    /// Records everything Threadline publishes on its output subjects.
    pub observer: Observer,
    in_process: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// Where the in-process workers serve `/healthz`, `/readyz` and `/metrics`.
    pub health_addr: Option<std::net::SocketAddr>,
    /// Where the in-process listeners' HTTP server listens, when one runs.
    pub listen_addr: Option<std::net::SocketAddr>,
    _config_dir: tempfile::TempDir,
    /// The TOML file worker processes read (`THREADLINE_CONFIG`).
    pub config_file: PathBuf,
}

impl Pipeline {
    /// Starts a deployment with the default [`Options`] (workers in this process).
    pub async fn start() -> Pipeline {
        Pipeline::start_with(Options::default()).await
    }

    /// Starts servers, fakes and observer, then the workers as `options` says.
    pub async fn start_with(options: Options) -> Pipeline {
        Pipeline::start_secured(options, Security::default()).await
    }

    /// [`start_with`](Self::start_with) against servers that require credentials or TLS.
    pub async fn start_secured(options: Options, security: Security) -> Pipeline {
        init_tracing();
        let nats = NatsServer::start_with(security.nats.clone()).await;
        let redis = RedisServer::start_with(security.redis.clone()).await;
        let discord = FakeDiscord::start().await;
        let slack = FakeSlack::start().await;
        let telegram = FakeTelegram::start().await;
        let matrix = FakeMatrix::start().await;
        let webhook = FakeWebhook::start().await;
        let mut config = Config {
            nats_url: nats.url(),
            redis_url: redis.url(),
            health_addr: "127.0.0.1:0".into(),
            ack_wait_ms: 3_000,
            retry_base_ms: 100,
            retry_max_ms: 1_000,
            max_attempts: 6,
            claim_lease_ms: 2_000,
            pending_timeout_ms: 5_000,
            unknown_session_grace_ms: 500,
            sweep_interval_ms: 200,
            http_timeout_ms: 1_500,
            drain_timeout_ms: 5_000,
            // A killed deliverer's lanes move to another instance within seconds.
            lane_lease_ms: 2_000,
            listen_lease_ms: 2_000,
            listen_addr: "127.0.0.1:0".into(),
            ..Config::default()
        };
        config.discord.api_base = discord.base_url();
        config.discord.token = Secret::new(DISCORD_TOKEN);
        config.slack.api_base = slack.base_url();
        config.slack.token = Secret::new("xoxb-test");
        config.telegram.api_base = telegram.base_url();
        config.telegram.token = Secret::new("123456:test-token");
        config.matrix.api_base = matrix.base_url();
        config.matrix.token = Secret::new("syt_test_token");
        // Fewer lanes than production: every lane is a consumer and a pull loop per test.
        config.delivery_partitions = Some(4);
        config.webhooks.insert(
            "plain".into(),
            WebhookConfig {
                url: webhook.url("plain"),
                threads: false,
                token: None,
                token_file: None,
                max_message_chars: 4000,
                idle_timeout_ms: None,
                max_age_ms: None,
                own_author_ids: Vec::new(),
                inbound_secret: None,
                inbound_secret_file: None,
            },
        );
        config.webhooks.insert(
            "threads".into(),
            WebhookConfig {
                url: webhook.url("threads"),
                threads: true,
                token: None,
                token_file: None,
                max_message_chars: 4000,
                idle_timeout_ms: None,
                max_age_ms: None,
                own_author_ids: Vec::new(),
                inbound_secret: None,
                inbound_secret_file: None,
            },
        );
        (options.tune)(&mut config);
        if let Some(configure) = &security.configure {
            configure(&mut config, &nats, &redis);
        }

        let config_dir = tempfile::tempdir().expect("temp dir for config");
        let config_file = config_dir.path().join("threadline.toml");
        // Secrets serialise transparently: a config file is where they belong.
        let toml = toml::to_string(&config).expect("config as TOML");
        std::fs::write(&config_file, toml).expect("write config file");

        let subjects = Subjects::new(config.subject_prefix.clone());
        // Threadline's own connect: the configured credentials and TLS apply to the harness.
        let client = threadline::io::nats::connect(&config)
            .await
            .expect("connect to NATS");
        let js = jetstream::new(client.clone());
        ensure_streams(&js, &subjects, &config)
            .await
            .expect("create streams");
        let observer = Observer::default();
        for kind in [StreamKind::Outbound, StreamKind::DeadLetter] {
            observe(&js, &client, kind.name(&subjects), observer.clone()).await;
        }
        let mut pipeline = Pipeline {
            nats,
            redis,
            discord,
            slack,
            telegram,
            matrix,
            webhook,
            config,
            subjects,
            client,
            js,
            observer,
            in_process: None,
            health_addr: None,
            listen_addr: None,
            _config_dir: config_dir,
            config_file,
        };
        if options.in_process {
            pipeline.start_in_process().await;
        }
        pipeline
    }

    /// Writes `self.config` to the file worker processes read (after a test changed it).
    pub fn rewrite_config_file(&self) {
        let toml = toml::to_string(&self.config).expect("config as TOML");
        std::fs::write(&self.config_file, toml).expect("write config file");
    }

    /// Starts `run all` in this process.
    pub async fn start_in_process(&mut self) {
        let shutdown = CancellationToken::new();
        let running = app::start(self.config.clone(), Role::All, shutdown.clone())
            .await
            .expect("start threadline in-process");
        self.health_addr = running.health_addr;
        self.listen_addr = running.listen_addr;
        let handle = tokio::spawn(running.wait());
        self.in_process = Some((shutdown, handle));
    }

    /// Stops the in-process workers, draining in-flight work.
    pub async fn stop_in_process(&mut self) {
        if let Some((shutdown, handle)) = self.in_process.take() {
            shutdown.cancel();
            let _ = handle.await;
        }
    }

    /// A Discord text channel of the test's bot account.
    pub fn discord_channel(id: &str) -> ConversationRef {
        ConversationRef {
            channel: "discord".into(),
            account_id: ACCOUNT.into(),
            conversation_id: id.into(),
            parent_conversation_id: None,
        }
    }

    /// What the platform stored in `conversation`, as text, in order (any channel).
    pub fn posted(&self, conversation: &ConversationRef) -> Vec<String> {
        let c = conversation;
        let parent = c.parent_conversation_id.as_deref();
        match c.channel.as_str() {
            "discord" => self
                .discord
                .messages_in(&c.conversation_id)
                .into_iter()
                .map(|m| m.content)
                .collect(),
            "slack" => match parent {
                Some(channel) => self.slack.messages_in(channel, Some(&c.conversation_id)),
                None => self.slack.messages_in(&c.conversation_id, None),
            }
            .into_iter()
            .map(|m| m.text)
            .collect(),
            "telegram" => {
                let num = |s: &str| s.parse::<i64>().expect("numeric telegram id");
                match parent {
                    Some(chat) => self
                        .telegram
                        .messages_in(num(chat), Some(num(&c.conversation_id))),
                    None => self.telegram.messages_in(num(&c.conversation_id), None),
                }
                .into_iter()
                .map(|m| m.text)
                .collect()
            }
            "matrix" => match parent {
                Some(room) => self.matrix.events_in(room, Some(&c.conversation_id)),
                None => self.matrix.events_in(&c.conversation_id, None),
            }
            .into_iter()
            .map(|e| e.content["body"].as_str().unwrap_or_default().to_owned())
            .collect(),
            webhook => self
                .webhook
                .deliveries()
                .into_iter()
                .filter(|d| format!("webhook:{}", d.name) == webhook)
                .filter(|d| d.body["conversation"]["conversation_id"] == c.conversation_id.as_str())
                .map(|d| d.body["text"].as_str().unwrap_or_default().to_owned())
                .collect(),
        }
    }

    /// A top-level conversation on a native platform, with an id its fake accepts.
    pub fn conversation(channel: &str) -> ConversationRef {
        let id = match channel {
            "discord" => "100000000000000001",
            "slack" => "C0THREADLINE",
            "telegram" => "-1001234567890",
            "matrix" => "!room:fake",
            _other => "conversation-1",
        };
        ConversationRef {
            channel: channel.into(),
            account_id: ACCOUNT.into(),
            conversation_id: id.into(),
            parent_conversation_id: None,
        }
    }

    /// A conversation on a configured webhook channel (`plain` or `threads`).
    pub fn webhook_conversation(name: &str, id: &str) -> ConversationRef {
        ConversationRef {
            channel: format!("webhook:{name}"),
            account_id: ACCOUNT.into(),
            conversation_id: id.into(),
            parent_conversation_id: None,
        }
    }

    /// Publishes an event as MessagePack with `Nats-Msg-Id` = `msg_id`; waits for the stream.
    pub async fn publish<T: Serialize>(&self, subject: String, msg_id: &str, event: &T) {
        self.publish_bytes(
            subject,
            Some(msg_id),
            rmp_serde::to_vec_named(event).expect("encode"),
            false,
        )
        .await;
    }

    /// Publishes raw bytes (JSON when `json`), optionally with a message id.
    pub async fn publish_bytes(
        &self,
        subject: String,
        msg_id: Option<&str>,
        payload: Vec<u8>,
        json: bool,
    ) {
        let mut message = jetstream::message::PublishMessage::build().payload(payload.into());
        if let Some(id) = msg_id {
            message = message.message_id(id);
        }
        if json {
            message = message.header("Content-Type", "application/json");
        }
        self.js
            .send_publish(subject, message)
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    /// Every `tl.out.delivered` seen so far.
    pub fn delivered(&self) -> Vec<PostDelivered> {
        self.observer.events(&self.subjects.out_delivered())
    }
    /// Every `tl.out.failed` seen so far.
    pub fn failed(&self) -> Vec<PostFailed> {
        self.observer.events(&self.subjects.out_failed())
    }
    /// Every `tl.out.rejected` seen so far.
    pub fn rejected(&self) -> Vec<EventRejected> {
        self.observer.events(&self.subjects.out_rejected())
    }
    /// Every `tl.out.spawned` seen so far.
    pub fn spawned(&self) -> Vec<SessionSpawned> {
        self.observer.events(&self.subjects.out_spawned())
    }

    /// Every session input Threadline published (`tl.agent.*`).
    pub fn inputs(&self) -> Vec<SessionInput> {
        self.observer
            .raw(&format!("{}.agent.", self.subjects.prefix()))
            .into_iter()
            .map(|o| rmp_serde::from_slice(&o.payload).expect("session input"))
            .collect()
    }

    /// Waits until `n` session inputs of `event_id` were published.
    pub async fn wait_inputs(&self, event_id: &str, n: usize) -> Vec<SessionInput> {
        at_least(n, Duration::from_secs(15), || {
            self.inputs()
                .into_iter()
                .filter(|i| i.event_id == event_id)
                .collect()
        })
        .await
    }

    /// Direct access to Threadline's Redis state, for checks events cannot show.
    pub async fn store(&self) -> threadline::store::Store {
        let conn = threadline::io::redis::redis_client(&self.config)
            .expect("redis url")
            .get_connection_manager()
            .await
            .expect("redis connection");
        threadline::store::Store::new(conn, &self.config)
    }

    /// Spawns a session (`mode: session`) from `conversation` with `placement`; → its key
    /// once `tl.out.spawned` says so.
    pub async fn session_in(&self, conversation: &ConversationRef, placement: Placement) -> String {
        let s = crate::events::spawn(conversation, placement, SessionMode::Session);
        self.spawn_session(&s).await.session_key
    }

    /// Publishes a spawn request on `tl.in.spawn` (its event id as `Nats-Msg-Id`).
    pub async fn publish_spawn(&self, spawn: &SpawnRequested) {
        self.publish(self.subjects.in_spawn(), &spawn.event_id, spawn)
            .await;
    }

    /// Publishes a spawn request and waits for its `tl.out.spawned`.
    pub async fn spawn_session(&self, spawn: &SpawnRequested) -> SessionSpawned {
        self.publish_spawn(spawn).await;
        self.wait_spawned(&spawn.event_id).await
    }

    /// Waits for the `tl.out.spawned` of `event_id`.
    pub async fn wait_spawned(&self, event_id: &str) -> SessionSpawned {
        self.observer
            .wait_for(
                &self.subjects.out_spawned(),
                Duration::from_secs(15),
                |s: &SessionSpawned| s.event_id == event_id,
            )
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no tl.out.spawned for {event_id}; rejected: {:?}",
                    self.rejected()
                )
            })
    }

    /// Waits for the `tl.out.rejected` of `event_id`.
    pub async fn wait_rejected(&self, event_id: &str) -> EventRejected {
        self.observer
            .wait_for(
                &self.subjects.out_rejected(),
                Duration::from_secs(15),
                |r: &EventRejected| r.event_id == event_id,
            )
            .await
            .unwrap_or_else(|| panic!("no tl.out.rejected for {event_id}"))
    }

    /// Publishes a `placement:"child"` spawn and waits until its thread is bound; returns
    /// the session key and the thread.
    pub async fn spawn_in_thread(&self, spawn: &SpawnRequested) -> (String, ConversationRef) {
        let spawned = self.spawn_session(spawn).await;
        let bound = self
            .wait_binding(&spawned.session_key, BindingChange::Bound)
            .await;
        (spawned.session_key, bound.binding.conversation)
    }

    /// Spawns a `mode: session`, `placement: child` session under `parent` and waits until
    /// its new thread is bound; → the session key and the thread.
    pub async fn session_in_thread(&self, parent: &ConversationRef) -> (String, ConversationRef) {
        let spawn = crate::events::spawn(parent, Placement::Child, SessionMode::Session);
        self.spawn_in_thread(&spawn).await
    }

    /// Publishes an operator `unbind` of every binding of `session_key` and waits until
    /// the binding ended.
    pub async fn unbind(&self, session_key: &str) {
        let unbind = crate::events::unbind_session(session_key, "operator");
        self.publish(self.subjects.in_control(), &unbind.event_id, &unbind)
            .await;
        self.wait_binding(session_key, BindingChange::Ended).await;
    }

    /// Waits for a `tl.out.binding` of `change` for a binding of `session_key`.
    pub async fn wait_binding(&self, session_key: &str, change: BindingChange) -> BindingChanged {
        self.observer
            .wait_for(
                &self.subjects.out_binding(),
                Duration::from_secs(15),
                |b: &BindingChanged| {
                    b.binding.target_session_key == session_key && b.change == change
                },
            )
            .await
            .unwrap_or_else(|| panic!("no tl.out.binding {change:?} for {session_key}"))
    }

    /// Waits for the `tl.out.failed` of `event_id`.
    pub async fn wait_failed(&self, event_id: &str) -> PostFailed {
        self.observer
            .wait_for(
                &self.subjects.out_failed(),
                Duration::from_secs(20),
                |f: &PostFailed| f.event_id == event_id,
            )
            .await
            .unwrap_or_else(|| panic!("no tl.out.failed for {event_id}"))
    }

    /// Publishes a completion on `tl.in.completion` (its event id as `Nats-Msg-Id`).
    pub async fn publish_completion(&self, completion: &CompletionReported) {
        self.publish(
            self.subjects.in_completion(),
            &completion.event_id,
            completion,
        )
        .await;
    }

    /// Publishes a completion and waits until at least one `tl.out.delivered` names it.
    pub async fn deliver(&self, completion: &CompletionReported) -> Vec<PostDelivered> {
        self.publish_completion(completion).await;
        self.wait_delivered(&completion.event_id, 1).await
    }

    /// How many posts in `conversation` (its thread or channel, as [`Pipeline::posted`]
    /// reads it) are exactly `text`.
    pub fn copies(&self, conversation: &ConversationRef, text: &str) -> usize {
        self.posted(conversation)
            .iter()
            .filter(|t| *t == text)
            .count()
    }

    /// Waits for `n` `tl.out.delivered` of `event_id`.
    pub async fn wait_delivered(&self, event_id: &str, n: usize) -> Vec<PostDelivered> {
        at_least(n, Duration::from_secs(20), || {
            self.delivered()
                .into_iter()
                .filter(|d| d.event_id == event_id)
                .collect()
        })
        .await
    }

    /// Lets in-flight work settle: used before asserting that something did *not* happen.
    pub async fn settle(&self, quiet: Duration) {
        let mut last = self.observer.all().len();
        let mut quiet_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.observer.all().len();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= quiet {
                return;
            }
        }
    }

    /// Runs an operator command (`threadline <args>`) with this deployment's configuration
    /// — its addresses and credentials — to the end; returns its exit code and stdout.
    pub async fn operator(&self, args: &[&str]) -> (i32, String) {
        let output = self
            .command(args)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run threadline");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            eprintln!("threadline {args:?} stderr:\n{stderr}");
        }
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code().unwrap_or(-1), stdout)
    }

    /// [`operator`](Self::operator) with `--json`, and what it printed, parsed.
    pub async fn operator_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, stdout) = self.operator(&all).await;
        let json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("threadline {args:?} printed no JSON ({e}): {stdout}"));
        (code, json)
    }

    /// A `threadline` command configured for this deployment (for worker processes).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(threadline_bin());
        command
            .args(args)
            .env("THREADLINE_CONFIG", &self.config_file)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        command
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some((shutdown, handle)) = self.in_process.take() {
            shutdown.cancel();
            handle.abort();
        }
    }
}

/// Polls `read` until it returns at least `n` items or `timeout` passes; returns what it
/// read last (callers assert on the count, so a timeout shows what did arrive).
async fn at_least<T>(n: usize, timeout: Duration, read: impl Fn() -> Vec<T>) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = read();
        if found.len() >= n || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records every message of `stream` in `observer`, from the start, through an ordered
/// push consumer (recreated by the client if it falls behind or the server restarts).
async fn observe(
    js: &jetstream::Context,
    client: &async_nats::Client,
    stream: String,
    observer: Observer,
) {
    let stream = js
        .get_stream(&stream)
        .await
        .expect("observed stream exists");
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("ordered messages");
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let Ok(message) = message else { continue };
            let headers = message
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v.first().map(|v| v.as_str().to_owned()).unwrap_or_default(),
                    )
                })
                .collect();
            if let Ok(mut seen) = observer.seen.lock() {
                seen.push(Observed {
                    subject: message.subject.to_string(),
                    headers,
                    payload: message.payload.clone(),
                });
            }
        }
    });
}

/// The `threadline` binary: `THREADLINE_BIN`, else built once with cargo.
pub fn threadline_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("THREADLINE_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        // Cargo sets these for the test process; build scripts (ring's) track some of them,
        // so inheriting them would make the nested build rebuild half the tree every time.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build
            // The same invocation as infra/test.sh: the same feature resolution, so it is a
            // no-op when the suite was started there (`-p threadline` alone would rebuild).
            .args(["build", "--quiet", "--workspace", "--bins"])
            .status()
            .expect("run cargo build for the threadline binary");
        assert!(status.success(), "building the threadline binary failed");
        let exe = std::env::current_exe().expect("test executable path");
        // Tests live in target/<profile>/deps/, binaries (the demo) in target/<profile>/.
        let bin = exe
            .ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join("threadline"))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| panic!("threadline binary not found near {}", exe.display()));
        bin
    })
    .clone()
}

/// Logs at `TEST_LOG` (default `warn`) through the test writer, once per process.
pub fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// `GET http://{addr}{path}` → (status, body).
pub async fn get_health(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// Polls `/readyz` on `addr` until it answers `status` (10 s at most); → the last answer.
pub async fn readyz_until(addr: std::net::SocketAddr, status: u16) -> (u16, String) {
    let mut answer = (0, String::new());
    for _ in 0..100 {
        answer = get_health(addr, "/readyz").await;
        if answer.0 == status {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answer
}
