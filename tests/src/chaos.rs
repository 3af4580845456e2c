//! The chaos runner: Threadline as its users deploy it — several OS processes per worker
//! sharing durable consumers — fed a seeded, mixed workload while worker processes are
//! `kill -9`ed and restarted, nats-server and redis-server restart, and the platform fakes
//! answer with 500s, 429s, slow responses and accepted-then-timeout. Afterwards every
//! completion's stored routing decision is checked against what the fakes actually stored
//! and what `tl.out.*` said: nothing lost, nothing posted twice, never thread + parent.

use crate::chaos_inputs::{InputCounts, Inputs, BRIDGE_SECRET};
use crate::events::{completion, new_id, spawn, unbind_session};
use crate::fakes::{FaultCounts, FaultMix};
use crate::pipeline::{Observed, Options, Pipeline};
use crate::progress::Phase;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use threadline::io::nats::StreamKind;
use threadline::router::decide::RouteDecision;
use threadline::store::keys::Keys;
use threadline_schemas::encode;
use threadline_schemas::{
    BindingChange, BindingChanged, ConversationRef, DeliveryPolicy, EventRejected, Placement,
    PostDelivered, PostFailed, SessionMode, SessionSpawned,
};

/// The size and violence of one run.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosConfig {
    /// Seeds the workload, the fault schedule and the fakes' faults: the same seed, the same run.
    pub seed: u64,
    /// Spawned sessions.
    pub sessions: usize,
    /// Completions per session: 1..=this (1 for `run` sessions).
    pub max_completions_per_session: usize,
    /// Completions of sessions Threadline never saw (fallback to their requester).
    pub unknown_session_completions: usize,
    /// Share of events re-published by a retrying publisher (same event id, new msg id).
    pub duplicate_share: f64,
    /// Share of bound sessions unbound by an operator right around a completion.
    pub unbind_race_share: f64,
    /// OS processes per worker.
    pub instances: usize,
    /// Worker processes SIGKILLed (and started again) during publishing.
    pub kills: usize,
    /// nats-server restarts during publishing.
    pub nats_restarts: usize,
    /// redis-server restarts during publishing.
    pub redis_restarts: usize,
    /// Whether the platform fakes answer with a random mix of 500s, 429s, slow and hung responses.
    pub platform_faults: bool,
    /// Publishing is spread over this many seconds; faults happen during it.
    pub publish_seconds: u64,
    /// How long to wait for quiescence after the last fault.
    pub drain_timeout_seconds: u64,
    /// Listener processes per listened channel (`run listen webhook:plain`, `telegram`,
    /// `discord`, `slack`) that hear people's messages.
    pub listener_replicas: usize,
    /// Sessions bound to a conversation of their own that people write to.
    pub input_sessions: usize,
    /// Messages people write during publishing.
    pub input_messages: usize,
    /// Listener processes SIGKILLed (and started again) during publishing, besides `kills`.
    pub listener_kills: usize,
}

impl ChaosConfig {
    /// Sized for CI: ≥ 2,000 events, ≥ 10 kills, one broker and one store restart.
    pub fn ci(seed: u64) -> Self {
        ChaosConfig {
            seed,
            sessions: 580,
            max_completions_per_session: 4,
            unknown_session_completions: 80,
            duplicate_share: 0.12,
            unbind_race_share: 0.15,
            instances: 2,
            kills: 12,
            nats_restarts: 1,
            redis_restarts: 1,
            platform_faults: true,
            publish_seconds: 45,
            drain_timeout_seconds: 150,
            listener_replicas: 2,
            input_sessions: 12,
            input_messages: 400,
            listener_kills: 8,
        }
    }

    /// The long run of docs/testing.md: ≥ 20,000 events, ≥ 50 kills.
    pub fn long(seed: u64) -> Self {
        ChaosConfig {
            sessions: 5_600,
            unknown_session_completions: 800,
            kills: 60,
            nats_restarts: 3,
            redis_restarts: 3,
            publish_seconds: 420,
            drain_timeout_seconds: 300,
            input_messages: 4_000,
            listener_kills: 30,
            ..ChaosConfig::ci(seed)
        }
    }
}

/// What a run found. `lost`, `duplicates_keyed` and `main_thread_duplicates` must be 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    /// The seed the run used (rerun with it to reproduce).
    pub seed: u64,
    /// CPU cores available to the run.
    pub cores: usize,
    /// Messages published: spawns, completions, unbinds and their duplicates.
    pub events_published: usize,
    /// Spawn requests published.
    pub spawns: usize,
    /// Distinct completions published.
    pub completions: usize,
    /// Posts the stored routing decisions call for.
    pub posts_expected: usize,
    /// Of those, posts the fakes actually stored.
    pub posts_received: usize,
    /// Posts received, by channel.
    pub received_by_channel: BTreeMap<String, usize>,
    /// Expected posts never made and never reported on `tl.out.failed`.
    pub lost: usize,
    /// Posts reported failed on `tl.out.failed` (accounted, not lost).
    pub failed_reported: usize,
    /// The same (event, destination) stored more than once on a path with an idempotency
    /// key or read-back (Discord nonce, webhook Idempotency-Key).
    pub duplicates_keyed: usize,
    /// The same on a path without either: counted, kept as low as the design allows.
    pub duplicates_unkeyed: usize,
    /// One completion posted both in a thread and in its parent without `bound_and_requester`.
    pub main_thread_duplicates: usize,
    /// Posts at a destination the stored decision did not name.
    pub misrouted: usize,
    /// Completions without a stored decision and without `tl.out.failed`.
    pub undecided: usize,
    /// Completions of spawned sessions decided as if the session were unknown (the
    /// completion overtook its spawn): posted to the wrong place or not at all.
    pub decided_unknown: usize,
    /// Threads created more than once for one binding.
    pub thread_duplicates: usize,
    /// Spawns with neither `tl.out.spawned` nor `tl.out.rejected`.
    pub spawns_unanswered: usize,
    /// `tl.out.delivered` in fallback mode, counted by reason.
    pub fallbacks: BTreeMap<String, usize>,
    /// Re-sends the platforms absorbed by idempotency key (evidence the fault paths ran).
    pub resends_absorbed: usize,
    /// Worker processes actually SIGKILLed.
    pub kills: usize,
    /// nats-server restarts actually done.
    pub nats_restarts: usize,
    /// redis-server restarts actually done.
    pub redis_restarts: usize,
    /// Faults the Discord fake injected.
    pub discord_faults: FaultCounts,
    /// Faults the webhook fake injected.
    pub webhook_faults: FaultCounts,
    /// Faults the Slack fake injected.
    pub slack_faults: FaultCounts,
    /// Faults the Telegram fake injected.
    pub telegram_faults: FaultCounts,
    /// Faults the Matrix fake injected.
    pub matrix_faults: FaultCounts,
    /// Seconds spent publishing (the fault window).
    pub publish_seconds: f64,
    /// From the last fault (or the last publish, if later) to quiescence.
    pub drain_seconds: f64,
    /// Whether everything went quiet within the drain timeout.
    pub settled: bool,
    /// People's messages through the listeners: sent, received, lost, duplicated.
    pub inputs: InputCounts,
}

impl ChaosReport {
    /// Whether the run met the guarantees.
    pub fn ok(&self) -> bool {
        self.settled
            && self.lost == 0
            && self.duplicates_keyed == 0
            && self.main_thread_duplicates == 0
            && self.misrouted == 0
            && self.undecided == 0
            && self.decided_unknown == 0
            && self.thread_duplicates == 0
            && self.spawns_unanswered == 0
            && self.inputs.lost == 0
            && self.inputs.duplicates == 0
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let rows: Vec<(&str, String)> = vec![
            ("seed", self.seed.to_string()),
            ("cores", self.cores.to_string()),
            ("events published", self.events_published.to_string()),
            (
                "spawns / completions",
                format!("{} / {}", self.spawns, self.completions),
            ),
            ("posts expected", self.posts_expected.to_string()),
            ("posts received", self.posts_received.to_string()),
            ("  by channel", format!("{:?}", self.received_by_channel)),
            ("LOST", self.lost.to_string()),
            ("failed, reported", self.failed_reported.to_string()),
            (
                "DUPLICATES (keyed paths)",
                self.duplicates_keyed.to_string(),
            ),
            (
                "duplicates (unkeyed paths)",
                self.duplicates_unkeyed.to_string(),
            ),
            (
                "MAIN+THREAD DUPLICATES",
                self.main_thread_duplicates.to_string(),
            ),
            ("misrouted", self.misrouted.to_string()),
            ("undecided", self.undecided.to_string()),
            (
                "spawned but decided unknown",
                self.decided_unknown.to_string(),
            ),
            ("thread duplicates", self.thread_duplicates.to_string()),
            ("spawns unanswered", self.spawns_unanswered.to_string()),
            ("fallbacks", format!("{:?}", self.fallbacks)),
            (
                "re-sends absorbed by key",
                self.resends_absorbed.to_string(),
            ),
            ("worker kills (-9)", self.kills.to_string()),
            ("nats-server restarts", self.nats_restarts.to_string()),
            ("redis-server restarts", self.redis_restarts.to_string()),
            ("discord faults", format!("{:?}", self.discord_faults)),
            ("webhook faults", format!("{:?}", self.webhook_faults)),
            ("slack faults", format!("{:?}", self.slack_faults)),
            ("telegram faults", format!("{:?}", self.telegram_faults)),
            ("matrix faults", format!("{:?}", self.matrix_faults)),
            ("publishing took", format!("{:.1} s", self.publish_seconds)),
            (
                "drain after last fault+publish",
                format!("{:.1} s", self.drain_seconds),
            ),
            (
                "people's messages sent / re-sent",
                format!("{} / {}", self.inputs.sent, self.inputs.resent),
            ),
            ("  became input", self.inputs.received.to_string()),
            ("INPUTS LOST", self.inputs.lost.to_string()),
            ("INPUT DUPLICATES", self.inputs.duplicates.to_string()),
            (
                "listener kills (-9)",
                self.inputs.listener_kills.to_string(),
            ),
            ("settled", self.settled.to_string()),
        ];
        render_table(&rows)
    }
}

/// Rows of a report as a two-column Markdown-style table.
pub(crate) fn render_table(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("| {k:<width$} | {v} |\n"))
        .collect()
}

/// One event to publish at a moment of the run.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) at: Duration,
    pub(crate) subject: String,
    pub(crate) msg_id: String,
    pub(crate) payload: Vec<u8>,
}

/// What the workload expects, per completion.
struct Expectation {
    event_id: String,
    policy: DeliveryPolicy,
    /// False for completions of sessions that were never spawned.
    spawned: bool,
}

/// The seeded workload.
struct Workload {
    steps: Vec<Step>,
    completions: Vec<Expectation>,
    spawns: Vec<String>,
}

const DISCORD_CHANNELS: [&str; 4] = [
    "100000000000000011",
    "100000000000000012",
    "100000000000000013",
    "100000000000000014",
];

/// The marker that lets the checker find an event's posts on the platform.
pub(crate) fn marker(event_id: &str) -> String {
    format!("⟦{event_id}⟧")
}

/// The event id in a post's [`marker`].
pub(crate) fn event_of(text: &str) -> Option<&str> {
    let start = text.find('⟦')? + '⟦'.len_utf8();
    let end = start + text[start..].find('⟧')?;
    Some(&text[start..end])
}

fn workload(p: &Pipeline, config: &ChaosConfig, rng: &mut StdRng) -> Workload {
    let s = &p.subjects;
    let window = Duration::from_secs(config.publish_seconds).as_millis() as u64;
    let mut steps = Vec::new();
    let mut completions = Vec::new();
    let mut spawns = Vec::new();
    let push =
        |steps: &mut Vec<Step>, at: u64, subject: String, msg_id: String, payload: Vec<u8>| {
            steps.push(Step {
                at: Duration::from_millis(at),
                subject,
                msg_id,
                payload,
            });
        };
    for i in 0..config.sessions {
        let (requester, placement) = match rng.random_range(0..13) {
            // Slack, Telegram and Matrix: a thread under their one conversation, or none.
            10..=12 => {
                let channel = ["slack", "telegram", "matrix"][rng.random_range(0..3)];
                let placement = if rng.random_bool(0.6) {
                    Placement::Child
                } else {
                    Placement::None
                };
                (Pipeline::conversation(channel), placement)
            }
            0..=5 => {
                let channel = Pipeline::discord_channel(DISCORD_CHANNELS[rng.random_range(0..4)]);
                let placement = match rng.random_range(0..20) {
                    0..=10 => Placement::Child,
                    11..=13 => Placement::Current,
                    _ => Placement::None,
                };
                (channel, placement)
            }
            6..=7 => (
                Pipeline::webhook_conversation(
                    "plain",
                    &format!("chat-{}", rng.random_range(0..6)),
                ),
                if rng.random_bool(0.5) {
                    Placement::None
                } else {
                    Placement::Current
                },
            ),
            _ => (
                Pipeline::webhook_conversation(
                    "threads",
                    &format!("room-{}", rng.random_range(0..4)),
                ),
                if rng.random_bool(0.6) {
                    Placement::Child
                } else {
                    Placement::None
                },
            ),
        };
        let mode = if rng.random_bool(0.3) {
            SessionMode::Run
        } else {
            SessionMode::Session
        };
        let mut request = spawn(&requester, placement, mode);
        request.thread_name = Some(format!("chaos-{}-{i}", config.seed));
        request.delivery = match rng.random_range(0..20) {
            0..=1 => DeliveryPolicy::BoundAndRequester,
            2 => DeliveryPolicy::RequesterOnly,
            _ => DeliveryPolicy::BoundOnly,
        };
        let spawn_at = rng.random_range(0..window * 6 / 10);
        let session_key = threadline::ids::session_key(&request.agent_id, &request.event_id);
        spawns.push(request.event_id.clone());
        let bytes = encode(&request);
        push(
            &mut steps,
            spawn_at,
            s.in_spawn(),
            request.event_id.clone(),
            bytes.clone(),
        );
        if rng.random_bool(config.duplicate_share) {
            push(
                &mut steps,
                spawn_at + rng.random_range(0..3_000),
                s.in_spawn(),
                new_id(),
                bytes,
            );
        }
        let count = match mode {
            SessionMode::Run => 1,
            SessionMode::Session => rng.random_range(1..=config.max_completions_per_session),
        };
        let racing = placement != Placement::None
            && request.delivery == DeliveryPolicy::BoundOnly
            && rng.random_bool(config.unbind_race_share);
        let mut at = spawn_at;
        for j in 0..count {
            at += rng.random_range(100..4_000);
            let mut done = completion(&session_key, "");
            let tag = marker(&done.event_id);
            done.content = if rng.random_bool(0.08) {
                // Long: split into parts on Discord; every part carries the marker.
                (0..40)
                    .map(|line| format!("{tag} line {line:02} {}\n", "x".repeat(60)))
                    .collect()
            } else {
                format!("{tag} completion {j} of session {i}")
            };
            let bytes = encode(&done);
            push(
                &mut steps,
                at,
                s.in_completion(),
                done.event_id.clone(),
                bytes.clone(),
            );
            if rng.random_bool(config.duplicate_share) {
                push(
                    &mut steps,
                    at + rng.random_range(0..5_000),
                    s.in_completion(),
                    new_id(),
                    bytes,
                );
            }
            if racing && j == 0 {
                let unbind = unbind_session(&session_key, "operator");
                let when = (at + rng.random_range(0..600)).saturating_sub(300);
                push(
                    &mut steps,
                    when,
                    s.in_control(),
                    unbind.event_id.clone(),
                    encode(&unbind),
                );
            }
            completions.push(Expectation {
                event_id: done.event_id.clone(),
                policy: request.delivery,
                spawned: true,
            });
        }
    }
    for k in 0..config.unknown_session_completions {
        let requester = if rng.random_bool(0.6) {
            Pipeline::discord_channel(DISCORD_CHANNELS[rng.random_range(0..4)])
        } else {
            Pipeline::webhook_conversation("plain", &format!("chat-{}", rng.random_range(0..6)))
        };
        let mut done = completion(
            &format!("agent:larry:subagent:ghost-{}-{k}", config.seed),
            "",
        );
        done.content = format!("{} unknown session {k}", marker(&done.event_id));
        done.requester = Some(requester);
        let at = rng.random_range(0..window);
        push(
            &mut steps,
            at,
            s.in_completion(),
            done.event_id.clone(),
            encode(&done),
        );
        completions.push(Expectation {
            event_id: done.event_id,
            policy: DeliveryPolicy::BoundOnly,
            spawned: false,
        });
    }
    steps.sort_by_key(|step| step.at);
    Workload {
        steps,
        completions,
        spawns,
    }
}

/// A worker OS process that can be killed and started again.
pub(crate) struct WorkerProcess {
    pub(crate) args: Vec<String>,
    env: Vec<(&'static str, String)>,
    child: tokio::process::Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts `threadline <args>` for `p`, its stderr appended to `log`.
    pub(crate) fn start(p: &Pipeline, args: &[&str], log: PathBuf) -> WorkerProcess {
        WorkerProcess::start_with_env(p, args, log, &[])
    }

    /// [`start`](Self::start) with settings of its own (`THREADLINE_*` variables).
    pub(crate) fn start_with_env(
        p: &Pipeline,
        args: &[&str],
        log: PathBuf,
        env: &[(&'static str, String)],
    ) -> WorkerProcess {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = env.to_vec();
        let child = start_worker(p, &args, &env, &log);
        WorkerProcess {
            args,
            env,
            child,
            log,
        }
    }

    /// SIGKILL (this PID only), reap, wait `pause`, start it again.
    pub(crate) async fn kill_and_restart(&mut self, p: &Pipeline, pause: Duration) {
        self.stop().await;
        tokio::time::sleep(pause).await;
        self.child = start_worker(p, &self.args, &self.env, &self.log);
    }

    /// SIGKILL (this PID only) and reap.
    pub(crate) async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The worker processes of a run: `instances` OS processes per role, each logging to its
/// own file in `logs`.
pub(crate) fn start_fleet(
    p: &Pipeline,
    roles: &[(&[&str], usize)],
    logs: &Path,
) -> Vec<WorkerProcess> {
    let mut fleet = Vec::new();
    for (role, instances) in roles {
        for instance in 0..*instances {
            let log = logs.join(format!(
                "{}-{instance}.log",
                role[1..].join("-").replace(':', "_")
            ));
            fleet.push(WorkerProcess::start(p, role, log));
        }
    }
    fleet
}

fn start_worker(
    p: &Pipeline,
    args: &[String],
    env: &[(&'static str, String)],
    log: &PathBuf,
) -> tokio::process::Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("worker log");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    p.command(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start worker process")
}

/// What the fault schedule does at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// SIGKILL one worker process and start it again.
    Kill,
    /// SIGKILL one listener process and start it again.
    KillListener,
    NatsRestart,
    RedisRestart,
}

/// The seeded fault schedule over `window`: `kills` spread at random, the restarts at
/// fixed points (broker at 45 %, store at 75 % of each share), in time order.
pub(crate) fn fault_schedule(
    rng: &mut StdRng,
    window: Duration,
    kills: usize,
    nats_restarts: usize,
    redis_restarts: usize,
) -> Vec<(Duration, Fault)> {
    let mut faults: Vec<(Duration, Fault)> = (0..kills)
        .map(|_| (window.mul_f64(rng.random_range(0.05..1.0)), Fault::Kill))
        .collect();
    for n in 0..nats_restarts {
        faults.push((
            window
                .mul_f64((n as f64 + 0.45) / nats_restarts as f64)
                .min(window),
            Fault::NatsRestart,
        ));
    }
    for n in 0..redis_restarts {
        faults.push((
            window
                .mul_f64((n as f64 + 0.75) / redis_restarts as f64)
                .min(window),
            Fault::RedisRestart,
        ));
    }
    faults.sort_by_key(|f| f.0);
    faults
}

/// Publishes `steps` at their moments from `started` (each until stored); → how long it took.
pub(crate) fn spawn_publisher(
    js: jetstream::Context,
    steps: Vec<Step>,
    started: Instant,
) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        for step in &steps {
            tokio::time::sleep_until((started + step.at).into()).await;
            publish_until_stored(&js, step).await;
        }
        started.elapsed()
    })
}

/// Publishes until the stream acknowledges, riding out a broker restart, as a publisher
/// that retries with the same `Nats-Msg-Id` would.
pub(crate) async fn publish_until_stored(js: &jetstream::Context, step: &Step) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let message = jetstream::message::PublishMessage::build()
            .payload(step.payload.clone().into())
            .message_id(&step.msg_id);
        let attempt = async {
            let ack = js.send_publish(step.subject.clone(), message).await?;
            ack.await.map_err(async_nats::Error::from)?;
            Ok::<(), async_nats::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => return,
            Ok(Err(_)) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(error)) => panic!("publishing {} failed for 90 s: {error}", step.subject),
            Err(_) => panic!("publishing {} timed out for 90 s", step.subject),
        }
    }
}

/// Everything in a stream, read with a fresh consumer (survives any restart before it).
pub async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<Observed> {
    let Ok(stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let Ok(consumer) = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    loop {
        let Ok(mut batch) = consumer
            .fetch()
            .max_messages(1_000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
        else {
            break;
        };
        let mut got = 0;
        while let Some(Ok(message)) = batch.next().await {
            got += 1;
            out.push(Observed {
                subject: message.subject.to_string(),
                headers: BTreeMap::new(),
                payload: message.payload.clone(),
            });
        }
        if got == 0 {
            break;
        }
    }
    out
}

/// Outcomes read back from `tl.out.*`.
#[derive(Default)]
pub(crate) struct Outcomes {
    /// (event, [`destination_key`]) → its delivery report.
    pub(crate) delivered: HashMap<(String, String), PostDelivered>,
    pub(crate) failed_events: BTreeSet<String>,
    pub(crate) failed_posts: BTreeSet<(String, String)>,
    pub(crate) answered_spawns: BTreeSet<String>,
    pub(crate) fallbacks: BTreeMap<String, usize>,
    pub(crate) bindings_settled: usize,
}

/// `channel|conversation_id`: how the checkers name a destination.
pub(crate) fn destination_key(c: &ConversationRef) -> String {
    format!("{}|{}", c.channel, c.conversation_id)
}

/// What `tl.out.*` (read with [`read_stream`]) said.
pub(crate) fn outcomes(p: &Pipeline, out: &[Observed]) -> Outcomes {
    let s = &p.subjects;
    let mut o = Outcomes::default();
    for message in out {
        let subject = message.subject.as_str();
        if subject == s.out_delivered() {
            if let Ok(d) = rmp_serde::from_slice::<PostDelivered>(&message.payload) {
                if d.mode == threadline_schemas::DeliveryMode::Fallback {
                    *o.fallbacks.entry(d.reason.clone()).or_default() += 1;
                }
                o.delivered
                    .insert((d.event_id.clone(), destination_key(&d.destination)), d);
            }
        } else if subject == s.out_failed() {
            if let Ok(f) = rmp_serde::from_slice::<PostFailed>(&message.payload) {
                if let Some(d) = &f.destination {
                    o.failed_posts
                        .insert((f.event_id.clone(), destination_key(d)));
                }
                o.failed_events.insert(f.event_id);
            }
        } else if subject == s.out_spawned() {
            if let Ok(e) = rmp_serde::from_slice::<SessionSpawned>(&message.payload) {
                o.answered_spawns.insert(e.event_id);
            }
        } else if subject == s.out_rejected() {
            if let Ok(e) = rmp_serde::from_slice::<EventRejected>(&message.payload) {
                o.answered_spawns.insert(e.event_id);
            }
        } else if subject == s.out_binding() {
            if let Ok(b) = rmp_serde::from_slice::<BindingChanged>(&message.payload) {
                if b.change == BindingChange::Bound {
                    o.bindings_settled += 1;
                }
            }
        }
    }
    o
}

/// Stored routing decisions of `event_ids`, pipelined.
pub(crate) async fn decisions(
    p: &Pipeline,
    event_ids: &[String],
) -> HashMap<String, RouteDecision> {
    let Ok(client) = redis::Client::open(p.redis.url()) else {
        return HashMap::new();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return HashMap::new();
    };
    let keys = Keys::new(p.config.subject_prefix.clone());
    let mut found = HashMap::new();
    for chunk in event_ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.get(keys.route(id));
        }
        let Ok(blobs) = pipe.query_async::<Vec<Option<Vec<u8>>>>(&mut conn).await else {
            return HashMap::new();
        };
        for (id, blob) in chunk.iter().zip(blobs) {
            if let Some(decision) = blob.and_then(|b| rmp_serde::from_slice(&b).ok()) {
                found.insert(id.clone(), decision);
            }
        }
    }
    found
}

/// Whether every completion and spawn has its terminal outcome.
fn settled(work: &Workload, decided: &HashMap<String, RouteDecision>, o: &Outcomes) -> bool {
    let spawns = work.spawns.iter().all(|id| o.answered_spawns.contains(id));
    let completions = work
        .completions
        .iter()
        .all(|c| match decided.get(&c.event_id) {
            None => o.failed_events.contains(&c.event_id),
            Some(RouteDecision::Fail { .. }) => o.failed_events.contains(&c.event_id),
            // Nested sessions report to their parent; the chaos workload spawns none.
            Some(RouteDecision::Input { .. }) => true,
            Some(RouteDecision::Post { posts }) => posts.iter().all(|post| {
                let key = (c.event_id.clone(), destination_key(&post.destination));
                o.delivered.contains_key(&key) || o.failed_posts.contains(&key)
            }),
        });
    spawns && completions
}

/// Runs one chaos experiment and reports.
pub async fn run(config: ChaosConfig) -> ChaosReport {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let phase = Phase::start(
        "chaos",
        "starting nats-server, redis-server and the platform fakes",
    );
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: |c| {
            c.ack_wait_ms = 4_000;
            c.claim_lease_ms = 3_000;
            c.http_timeout_ms = 1_500;
            c.pending_timeout_ms = 30_000;
            c.unknown_session_grace_ms = 10_000;
            c.max_attempts = 40;
            c.retry_base_ms = 100;
            c.retry_max_ms = 2_000;
            c.concurrency = 32;
            c.drain_timeout_ms = 3_000;
            if let Some(hook) = c.webhooks.get_mut("plain") {
                hook.inbound_secret = Some(threadline::config::Secret::new(BRIDGE_SECRET));
            }
            // Only the `run listen` processes of `chaos_inputs` read these.
            use threadline::config::{ListenMode, Secret};
            let account = crate::pipeline::ACCOUNT;
            c.telegram.listen = ListenMode::Poll;
            c.telegram.account_id = account.into();
            c.telegram.poll_timeout_ms = Some(1_000);
            c.discord.listen = ListenMode::Gateway;
            c.discord.account_id = account.into();
            c.slack.listen = ListenMode::Socket;
            c.slack.account_id = account.into();
            c.slack.app_token = Secret::new(crate::fakes::slack::APP_TOKEN);
            c.slack.connections = Some(2);
        },
    })
    .await;
    if config.platform_faults {
        let mix = |seed| FaultMix {
            seed,
            server_error: 0.03,
            rate_limited: 0.03,
            retry_after_ms: 200,
            slow: 0.05,
            slow_ms: 300,
            accept_then_hang: 0.02,
            // Longer than the client's timeout: the outcome is unknown to the deliverer.
            hang_ms: 2_500,
        };
        p.discord.set_fault_mix(Some(mix(config.seed)));
        p.webhook.set_fault_mix(Some(mix(config.seed ^ 0x5eed)));
        p.slack.set_fault_mix(Some(mix(config.seed ^ 0x51ac)));
        p.telegram.set_fault_mix(Some(mix(config.seed ^ 0x7e1e)));
        p.matrix.set_fault_mix(Some(mix(config.seed ^ 0x3a7)));
    }
    let work = workload(&p, &config, &mut rng);
    phase.done();

    let logs = tempfile::tempdir().expect("log dir");
    let roles: Vec<(&[&str], usize)> = [
        &["run", "binder"][..],
        &["run", "router"],
        &["run", "deliver", "discord"],
        &["run", "deliver", "webhook:plain"],
        &["run", "deliver", "webhook:threads"],
        &["run", "deliver", "slack"],
        &["run", "deliver", "telegram"],
        &["run", "deliver", "matrix"],
    ]
    .into_iter()
    .map(|role| (role, config.instances))
    .collect();
    let phase = Phase::start(
        "chaos",
        format!(
            "starting {} worker processes",
            roles.len() * config.instances
        ),
    );
    let mut fleet = start_fleet(&p, &roles, logs.path());
    phase.done();

    let window = Duration::from_secs(config.publish_seconds);
    let phase = Phase::start(
        "chaos",
        format!(
            "starting {} listener processes (webhook, Telegram, Discord, Slack) and binding {} sessions people will write to",
            4 * config.listener_replicas, config.input_sessions
        ),
    );
    let mut inputs = Inputs::prepare(&p, &mut rng, &config, logs.path()).await;
    phase.done();

    // The fault schedule, seeded: kills spread over the window, restarts at fixed points.
    let mut faults = fault_schedule(
        &mut rng,
        window,
        config.kills,
        config.nats_restarts,
        config.redis_restarts,
    );
    faults.extend((0..config.listener_kills).map(|_| {
        (
            window.mul_f64(rng.random_range(0.05..1.0)),
            Fault::KillListener,
        )
    }));
    faults.sort_by_key(|f| f.0);

    let phase = Phase::start(
        "chaos",
        format!(
            "publishing {} events and {} people's messages over {} s while {} worker kills, {} listener kills, {} nats-server and {} redis-server restarts happen",
            work.steps.len(),
            inputs.planned(),
            config.publish_seconds,
            config.kills,
            config.listener_kills,
            config.nats_restarts,
            config.redis_restarts
        ),
    );
    let started = Instant::now();
    let publisher = spawn_publisher(p.js.clone(), work.steps.clone(), started);
    let people = inputs.spawn_people(started);

    let mut report = ChaosReport {
        seed: config.seed,
        cores: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
        events_published: work.steps.len(),
        spawns: work.spawns.len(),
        completions: work.completions.len(),
        ..ChaosReport::default()
    };
    for (at, kind) in faults {
        tokio::time::sleep_until((started + at).into()).await;
        match kind {
            Fault::Kill => {
                let victim = rng.random_range(0..fleet.len());
                let pause = Duration::from_millis(rng.random_range(200..1_000));
                fleet[victim].kill_and_restart(&p, pause).await;
                report.kills += 1;
            }
            Fault::KillListener => {
                let victim = rng.random_range(0..inputs.listeners.len());
                let pause = Duration::from_millis(rng.random_range(200..1_000));
                inputs.listeners[victim].kill_and_restart(&p, pause).await;
                report.inputs.listener_kills += 1;
            }
            Fault::NatsRestart => {
                p.nats.restart().await;
                report.nats_restarts += 1;
            }
            Fault::RedisRestart => {
                p.redis.restart().await;
                report.redis_restarts += 1;
            }
        }
    }
    let publish_took = publisher.await.expect("publisher");
    people.await.expect("people");
    report.publish_seconds = publish_took.as_secs_f64();
    phase.done();
    let phase = Phase::start(
        "chaos",
        format!(
            "waiting for quiescence (at most {} s): every spawn answered, every completion decided and delivered or failed",
            config.drain_timeout_seconds
        ),
    );
    let quiet_from = Instant::now();

    // Quiescence: every spawn answered, every completion decided and each decided post
    // delivered or reported failed.
    let event_ids: Vec<String> = work
        .completions
        .iter()
        .map(|c| c.event_id.clone())
        .collect();
    let deadline = quiet_from + Duration::from_secs(config.drain_timeout_seconds);
    let out_stream = StreamKind::Outbound.name(&p.subjects);
    let (decided, o) = loop {
        let out = read_stream(&p.js, &out_stream).await;
        let o = outcomes(&p, &out);
        let decided = decisions(&p, &event_ids).await;
        if settled(&work, &decided, &o) && inputs.settled(&p, &out) {
            report.settled = true;
            break (decided, o);
        }
        if Instant::now() >= deadline {
            break (decided, o);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    report.drain_seconds = quiet_from.elapsed().as_secs_f64();
    phase.done_with(if report.settled { "" } else { "; not settled" });
    let phase = Phase::start(
        "chaos",
        "checking what the platforms stored against the decisions",
    );
    // Let stragglers (a late duplicate would show up now) arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    check(&p, &work, &decided, &o, &mut report);
    let listener_kills = report.inputs.listener_kills;
    report.inputs = inputs.count(&p, &read_stream(&p.js, &out_stream).await);
    report.inputs.listener_kills = listener_kills;
    report.discord_faults = p.discord.fault_counts();
    report.webhook_faults = p.webhook.fault_counts();
    report.slack_faults = p.slack.fault_counts();
    report.telegram_faults = p.telegram.fault_counts();
    report.matrix_faults = p.matrix.fault_counts();

    for worker in fleet.iter_mut().chain(inputs.listeners.iter_mut()) {
        worker.stop().await;
    }
    phase.done();
    if !report.ok() {
        // Keep the worker logs of a failed run for whoever investigates.
        let kept = logs.keep();
        eprintln!("chaos run failed; worker logs kept in {}", kept.display());
    }
    report
}

/// Compares decisions and outcomes with what the platforms stored.
fn check(
    p: &Pipeline,
    work: &Workload,
    decided: &HashMap<String, RouteDecision>,
    o: &Outcomes,
    report: &mut ChaosReport,
) {
    // (event, destination) → parts stored, and thread parents, from both fakes.
    let mut stored: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut parent_of: HashMap<String, String> = HashMap::new();
    let mut thread_names: HashMap<(&str, String), usize> = HashMap::new();
    for thread in p.discord.threads() {
        parent_of.insert(
            format!("discord|{}", thread.id),
            format!("discord|{}", thread.parent_id),
        );
        *thread_names.entry(("discord", thread.name)).or_default() += 1;
    }
    for m in p.discord.messages() {
        if let Some(event) = event_of(&m.content) {
            stored
                .entry((event.to_owned(), format!("discord|{}", m.channel_id)))
                .or_default()
                .push(m.content.clone());
        }
    }
    // Slack: a thread is its root's ts; roots are the "🧵 <name>" messages.
    for m in p.slack.messages() {
        let place = match &m.thread_ts {
            Some(ts) => {
                parent_of.insert(format!("slack|{ts}"), format!("slack|{}", m.channel));
                format!("slack|{ts}")
            }
            None => format!("slack|{}", m.channel),
        };
        if let Some(name) = m.text.strip_prefix("🧵 ") {
            *thread_names.entry(("slack", name.to_owned())).or_default() += 1;
        }
        if let Some(event) = event_of(&m.text) {
            stored
                .entry((event.to_owned(), place))
                .or_default()
                .push(m.text.clone());
        }
    }
    for topic in p.telegram.topics() {
        parent_of.insert(
            format!("telegram|{}", topic.message_thread_id),
            format!("telegram|{}", topic.chat_id),
        );
        *thread_names.entry(("telegram", topic.name)).or_default() += 1;
    }
    for m in p.telegram.messages() {
        let place = match m.message_thread_id {
            Some(thread) => format!("telegram|{thread}"),
            None => format!("telegram|{}", m.chat_id),
        };
        if let Some(event) = event_of(&m.text) {
            stored
                .entry((event.to_owned(), place))
                .or_default()
                .push(m.text.clone());
        }
    }
    for e in p.matrix.events() {
        let body = e.content["body"].as_str().unwrap_or_default().to_owned();
        let place = match &e.thread_root {
            Some(root) => {
                parent_of.insert(format!("matrix|{root}"), format!("matrix|{}", e.room_id));
                format!("matrix|{root}")
            }
            None => format!("matrix|{}", e.room_id),
        };
        if let Some(name) = body.strip_prefix("🧵 ") {
            *thread_names.entry(("matrix", name.to_owned())).or_default() += 1;
        }
        if let Some(event) = event_of(&body) {
            stored
                .entry((event.to_owned(), place))
                .or_default()
                .push(body);
        }
    }
    for d in p.webhook.deliveries() {
        let channel = format!("webhook:{}", d.name);
        if d.body["action"] == "create_thread" {
            let name = d.body["name"].as_str().unwrap_or_default().to_owned();
            *thread_names.entry(("webhook", name)).or_default() += 1;
            continue;
        }
        let text = d.body["text"].as_str().unwrap_or_default();
        let conversation = d.body["conversation"]["conversation_id"]
            .as_str()
            .unwrap_or_default();
        if let Some(parent) = d.body["conversation"]["parent_conversation_id"].as_str() {
            parent_of.insert(
                format!("{channel}|{conversation}"),
                format!("{channel}|{parent}"),
            );
        }
        if let Some(event) = event_of(text) {
            stored
                .entry((event.to_owned(), format!("{channel}|{conversation}")))
                .or_default()
                .push(text.to_owned());
        }
    }
    report.resends_absorbed = p.webhook.duplicate_keys_seen();
    for ((channel, _), count) in &thread_names {
        if *count > 1 {
            // Telegram's createForumTopic has neither key nor read-back: an unknown
            // outcome there can only be counted.
            if *channel == "telegram" {
                report.duplicates_unkeyed += 1;
            } else {
                report.thread_duplicates += 1;
            }
        }
    }
    report.spawns_unanswered = work
        .spawns
        .iter()
        .filter(|id| !o.answered_spawns.contains(*id))
        .count();
    report.fallbacks = o.fallbacks.clone();

    for c in &work.completions {
        let unknown = match decided.get(&c.event_id) {
            Some(RouteDecision::Fail { code, .. }) => code == "no_destination",
            Some(RouteDecision::Post { posts }) => {
                posts.iter().any(|p| p.reason == "unknown_session")
            }
            Some(RouteDecision::Input { .. }) | None => false,
        };
        if c.spawned && unknown {
            report.decided_unknown += 1;
        }
        let mine: BTreeMap<&String, &Vec<String>> = stored
            .iter()
            .filter(|((event, _), _)| event == &c.event_id)
            .map(|((_, destination), parts)| (destination, parts))
            .collect();
        for (destination, parts) in &mine {
            let distinct: BTreeSet<&String> = parts.iter().collect();
            if distinct.len() < parts.len() {
                let channel = destination.split('|').next().unwrap_or_default();
                let keyed = threadline::model::channels::capabilities(channel, &p.config)
                    .is_some_and(|caps| caps.idempotency_key || caps.read_back);
                if keyed {
                    report.duplicates_keyed += 1;
                } else {
                    report.duplicates_unkeyed += 1;
                }
            }
        }
        let planned: BTreeSet<String> = match decided.get(&c.event_id) {
            None => {
                if !o.failed_events.contains(&c.event_id) {
                    report.undecided += 1;
                }
                report.misrouted += mine.len();
                continue;
            }
            Some(RouteDecision::Input { .. }) => {
                report.misrouted += mine.len();
                continue;
            }
            Some(RouteDecision::Fail { .. }) => {
                report.failed_reported += 1;
                if !o.failed_events.contains(&c.event_id) {
                    report.lost += 1;
                }
                report.misrouted += mine.len();
                continue;
            }
            Some(RouteDecision::Post { posts }) => posts
                .iter()
                .map(|post| destination_key(&post.destination))
                .collect(),
        };
        report.posts_expected += planned.len();
        for destination in &planned {
            let key = (c.event_id.clone(), destination.clone());
            if mine.contains_key(destination) {
                report.posts_received += 1;
                let channel = destination.split('|').next().unwrap_or_default().to_owned();
                *report.received_by_channel.entry(channel).or_default() += 1;
            } else if o.failed_posts.contains(&key) {
                report.failed_reported += 1;
            } else {
                report.lost += 1;
            }
        }
        let unplanned: Vec<&&String> = mine.keys().filter(|d| !planned.contains(**d)).collect();
        report.misrouted += unplanned.len();
        if c.policy != DeliveryPolicy::BoundAndRequester {
            let in_thread_and_parent = mine.keys().any(|d| {
                parent_of
                    .get(*d)
                    .is_some_and(|parent| mine.contains_key(parent))
            });
            if in_thread_and_parent {
                report.main_thread_duplicates += 1;
            }
        }
    }
}
