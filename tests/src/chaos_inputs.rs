//! The input half of the chaos run: people writing in bound conversations while the
//! listeners that hear them are `kill -9`ed and NATS and Redis restart. Four listeners, two
//! replicas each:
//! - a bridge's inbound webhook (`run listen webhook:plain`): each message is pushed, the way
//!   a platform pushes, to one replica and pushed again — to the other — until one answers
//!   200; some are pushed again after that, as a platform re-sends an answer it did not see;
//! - Telegram (`run listen telegram`, polling): people write in forum topics of the fake; one
//!   replica at a time polls, and a killed poller's lease and offset move to the other;
//! - Discord (`run listen discord`, the Gateway): people write in threads of two guilds on
//!   the two shards of the fake Gateway; the replicas split the shards by lease, and a killed
//!   replica's shard is resumed by the other from the session and sequence kept in Redis;
//! - Slack (`run listen slack`, Socket Mode, two connections per replica): people write in
//!   threads; an envelope a killed replica never acknowledged is sent again on a connection
//!   opened after it.
//!
//! Afterwards each message must be exactly one `tl.agent.*` input of its session: none lost,
//! none twice.

use crate::chaos::{ChaosConfig, WorkerProcess};
use crate::fakes::discord_gateway::{FakeGateway, Person};
use crate::fakes::slack::SlackPeople;
use crate::fakes::telegram::{TelegramPeople, TelegramUser};
use crate::pipeline::{Observed, Pipeline};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use threadline::listen::webhook::sign;
use threadline_schemas::{ConversationRef, InputSource, Placement, SessionInput, SessionMode};

/// The secret the chaos bridge signs with (`[webhooks.plain] inbound_secret`).
pub(crate) const BRIDGE_SECRET: &str = "chaos-bridge-secret";
/// The webhook channel the bridge pushes into.
const CHANNEL: &str = "plain";
/// The Discord channels people's threads are in: one on each shard of the fake Gateway
/// (`(guild_id >> 22) % 2`; `FakeGateway::GUILD` is on shard 0).
const DISCORD_CHANNELS: [(&str, &str); 2] = [
    ("300000000000000001", FakeGateway::GUILD),
    ("300000000000000002", "4194304"),
];
/// The Slack user people write as.
const SLACK_PERSON: &str = "U0GRACE001";

/// One message a person writes.
#[derive(Debug, Clone)]
struct Said {
    at: Duration,
    session_key: String,
    conversation: ConversationRef,
    message_id: String,
    /// Webhook only: pushed again after the first 200, as a platform that lost the answer
    /// would.
    resend: bool,
}

impl Said {
    /// What the person writes: unique, so its input is found by its text.
    fn text(&self) -> String {
        format!("a person says {}", self.message_id)
    }
}

/// The listener replicas, the sessions people write to, and what was said.
pub(crate) struct Inputs {
    /// `run listen webhook:plain` processes, each on its own port, and `run listen
    /// telegram|discord|slack` processes.
    pub(crate) listeners: Vec<WorkerProcess>,
    ports: Vec<u16>,
    said: Vec<Said>,
    /// Where people write on Telegram.
    telegram: TelegramPeople,
    /// Where people write on Discord (the Gateway the listeners connect to).
    gateway: Arc<FakeGateway>,
    /// Where people write on Slack.
    slack: SlackPeople,
    /// Messages no replica took within the bridge's patience.
    given_up: Arc<Mutex<Vec<String>>>,
}

/// What the input half found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InputCounts {
    /// Messages people wrote.
    pub sent: usize,
    /// Of those, pushed more than once after a listener took them.
    pub resent: usize,
    /// Distinct messages that became input.
    pub received: usize,
    /// Messages that never became input (or that no listener ever took).
    pub lost: usize,
    /// Inputs beyond the first for one message and session.
    pub duplicates: usize,
    /// Listener processes `kill -9`ed.
    pub listener_kills: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Inputs {
    /// Starts the run's listener processes and binds its input sessions, each to its own
    /// conversation; plans its people's messages over the publishing window.
    pub(crate) async fn prepare(
        p: &Pipeline,
        rng: &mut StdRng,
        config: &ChaosConfig,
        logs: &Path,
    ) -> Inputs {
        let (replicas, sessions, messages) = (
            config.listener_replicas,
            config.input_sessions,
            config.input_messages,
        );
        let resend_share = config.duplicate_share;
        let window = Duration::from_secs(config.publish_seconds);
        // reqwest's `rustls-no-provider` needs one even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let gateway = Arc::new(FakeGateway::start(2, 2_000).await);
        p.discord.set_gateway(&gateway.url(), 2);
        for (channel, guild) in DISCORD_CHANNELS {
            gateway.place(channel, guild);
        }
        let mut bound = Vec::new();
        for n in 0..sessions {
            match n % 4 {
                0 => {
                    let conversation =
                        Pipeline::webhook_conversation(CHANNEL, &format!("people-{n}"));
                    let spawn = crate::events::spawn(
                        &conversation,
                        Placement::Current,
                        SessionMode::Session,
                    );
                    let spawned = p.spawn_session(&spawn).await;
                    bound.push((spawned.session_key, conversation));
                }
                // A forum topic, a Discord thread or a Slack thread Threadline creates for
                // the session, each named apart: the delivery half counts two roots of one
                // name as a thread created twice.
                kind => {
                    let parent = match kind {
                        1 => Pipeline::conversation("telegram"),
                        2 => Pipeline::discord_channel(DISCORD_CHANNELS[(n / 4) % 2].0),
                        _ => Pipeline::conversation("slack"),
                    };
                    let mut spawn =
                        crate::events::spawn(&parent, Placement::Child, SessionMode::Session);
                    spawn.thread_name = Some(format!("people-{n}"));
                    let (key, thread) = p.spawn_in_thread(&spawn).await;
                    if kind == 2 {
                        gateway.add_thread(&thread.conversation_id, &parent.conversation_id);
                    }
                    bound.push((key, thread));
                }
            }
        }
        let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let mut listeners: Vec<WorkerProcess> = ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                WorkerProcess::start_with_env(
                    p,
                    &["run", "listen", "webhook:plain"],
                    logs.join(format!("listen-webhook-{n}.log")),
                    &[("THREADLINE_LISTEN_ADDR", format!("127.0.0.1:{port}"))],
                )
            })
            .collect();
        // Their settings are in the run's configuration (`chaos::run`); the Discord listeners
        // learn the fake Gateway's URL and shard count from `GET /gateway/bot`.
        for n in 0..replicas {
            for channel in ["telegram", "discord", "slack"] {
                listeners.push(WorkerProcess::start(
                    p,
                    &["run", "listen", channel],
                    logs.join(format!("listen-{channel}-{n}.log")),
                ));
            }
        }
        let window_ms = window.as_millis() as u64;
        let mut said: Vec<Said> = (0..messages)
            .map(|n| {
                let (session_key, conversation) = bound[rng.random_range(0..bound.len())].clone();
                Said {
                    at: Duration::from_millis(rng.random_range(0..window_ms.max(1))),
                    session_key,
                    conversation,
                    message_id: format!("wamid.chaos-{n}-{}", rng.random::<u32>()),
                    resend: rng.random_bool(resend_share),
                }
            })
            .collect();
        said.sort_by_key(|s| s.at);
        let inputs = Inputs {
            listeners,
            ports,
            said,
            telegram: p.telegram.people(),
            gateway,
            slack: p.slack.people(),
            given_up: Arc::default(),
        };
        inputs.wait_listening(p).await;
        inputs
    }

    /// Until every webhook replica answers (its HTTP server is up), both Gateway shards have a
    /// session (a message on a shard nobody ever identified on would reach no one, as on
    /// Discord), and the Slack replicas hold their sockets.
    async fn wait_listening(&self, p: &Pipeline) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.gateway.live() < 2 || p.slack.socket_connections() < 4 {
            assert!(
                Instant::now() < deadline,
                "the Discord and Slack listeners never connected: {} Gateway sessions, {} Slack sockets",
                self.gateway.live(),
                p.slack.socket_connections()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = reqwest::Client::new();
        for port in &self.ports {
            let deadline = Instant::now() + Duration::from_secs(60);
            while client
                .post(format!("http://127.0.0.1:{port}/webhooks/{CHANNEL}"))
                .send()
                .await
                .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "listener on {port} never answered"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// How many messages will be said.
    pub(crate) fn planned(&self) -> usize {
        self.said.len()
    }

    /// Says every message at its moment from `started`, each on a task of its own.
    pub(crate) fn spawn_people(&self, started: Instant) -> tokio::task::JoinHandle<()> {
        let said = self.said.clone();
        let ports = self.ports.clone();
        let telegram = self.telegram.clone();
        let gateway = self.gateway.clone();
        let slack = self.slack.clone();
        let given_up = self.given_up.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("http client");
            let mut tasks = tokio::task::JoinSet::new();
            for (n, message) in said.into_iter().enumerate() {
                tokio::time::sleep_until((started + message.at).into()).await;
                let thread = &message.conversation.conversation_id;
                if message.conversation.channel == "discord" {
                    let grace = Person::new("200000000000000042", "grace");
                    gateway.person_writes(thread, &grace, &message.text());
                    continue;
                }
                if message.conversation.channel == "slack" {
                    let channel = message.conversation.parent_conversation_id.as_deref();
                    let channel = channel.expect("a Slack thread has its channel");
                    slack.person_writes(channel, Some(thread), SLACK_PERSON, &message.text());
                    continue;
                }
                if message.conversation.channel == "telegram" {
                    let number = |id: Option<&String>| -> i64 {
                        id.and_then(|id| id.parse().ok())
                            .expect("numeric telegram id")
                    };
                    telegram.person_writes(
                        number(message.conversation.parent_conversation_id.as_ref()),
                        Some(number(Some(&message.conversation.conversation_id))),
                        &TelegramUser::person(4_243, "Grace"),
                        &message.text(),
                    );
                    continue;
                }
                let (client, ports, given_up) = (client.clone(), ports.clone(), given_up.clone());
                tasks.spawn(async move {
                    let pushes = if message.resend { 2 } else { 1 };
                    for push in 0..pushes {
                        match push_until_taken(&client, &ports, n + push, &message).await {
                            Some(_) => {}
                            None => {
                                given_up
                                    .lock()
                                    .expect("given up")
                                    .push(message.message_id.clone());
                                return;
                            }
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    }

    /// Whether every message became input (read from `out`, the outbound stream).
    pub(crate) fn settled(&self, p: &Pipeline, out: &[Observed]) -> bool {
        let counts = self.count(p, out);
        counts.lost == 0
    }

    /// Counts inputs per message in `out`.
    pub(crate) fn count(&self, p: &Pipeline, out: &[Observed]) -> InputCounts {
        let said: Vec<(String, String)> = self
            .said
            .iter()
            .map(|s| (s.session_key.clone(), s.text()))
            .collect();
        let given_up = self.given_up.lock().expect("given up").len();
        InputCounts {
            resent: self
                .said
                .iter()
                .filter(|s| s.resend && s.conversation.channel.starts_with("webhook:"))
                .count(),
            ..count_inputs(p, out, &said, given_up)
        }
    }
}

/// How the `(session, text)` messages people said became `tl.agent.*` inputs in `out` (each
/// said text is unique): sent, received, lost (at least the `given_up` no listener took),
/// duplicates.
pub(crate) fn count_inputs(
    p: &Pipeline,
    out: &[Observed],
    said: &[(String, String)],
    given_up: usize,
) -> InputCounts {
    let prefix = format!("{}.agent.", p.subjects.prefix());
    let mut per_message: HashMap<(String, String), usize> = HashMap::new();
    for message in out.iter().filter(|m| m.subject.starts_with(&prefix)) {
        if let Ok(input) = rmp_serde::from_slice::<SessionInput>(&message.payload) {
            if input.source == InputSource::Message {
                *per_message
                    .entry((input.session_key, input.text))
                    .or_default() += 1;
            }
        }
    }
    let copies: Vec<usize> = said
        .iter()
        .map(|key| per_message.get(key).copied().unwrap_or(0))
        .collect();
    InputCounts {
        sent: said.len(),
        received: copies.iter().filter(|c| **c > 0).count(),
        lost: copies.iter().filter(|c| **c == 0).count().max(given_up),
        duplicates: copies.iter().map(|c| c.saturating_sub(1)).sum(),
        ..InputCounts::default()
    }
}

/// Pushes `message` to the replicas in turn (starting at `first`) until one answers 200;
/// → the event id it answered with, `None` after the bridge's patience ran out.
async fn push_until_taken(
    client: &reqwest::Client,
    ports: &[u16],
    first: usize,
    message: &Said,
) -> Option<String> {
    let body = serde_json::to_vec(&json!({
        "kind": "message",
        "account_id": message.conversation.account_id,
        "conversation_id": message.conversation.conversation_id,
        "message_id": message.message_id,
        "text": message.text(),
        "author": {"id": "person-1", "is_bot": false},
    }))
    .expect("json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = first;
    while Instant::now() < deadline {
        let port = ports[attempt % ports.len()];
        attempt += 1;
        let (timestamp, signature) = sign(
            BRIDGE_SECRET.as_bytes(),
            threadline_schemas::now_ms() / 1000,
            &body,
        );
        let answer = client
            .post(format!("http://127.0.0.1:{port}/webhooks/{CHANNEL}"))
            .header("content-type", "application/json")
            .header("x-threadline-timestamp", timestamp)
            .header("x-threadline-signature", signature)
            .body(body.clone())
            .send()
            .await;
        if let Ok(response) = answer {
            if response.status().is_success() {
                if let Ok(value) = response.json::<serde_json::Value>().await {
                    if let Some(id) = value["event_id"].as_str() {
                        return Some(id.to_owned());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    None
}
