//! The chaos pass against a real Matrix homeserver: Synapse ([`crate::synapse`]) is the
//! Matrix platform, with its per-user `rc_message` limit tight enough that the bot meets
//! 429s. Threadline runs as OS processes (a binder, routers, Matrix deliverers) fed a seeded
//! workload of sessions bound to Matrix threads Threadline creates (`placement: child`), to
//! rooms and to threads a person started (`placement: current`), while deliverers and routers are SIGKILLed and
//! restarted, nats-server and redis-server restart, and Synapse itself is SIGKILLed and
//! started again. What counts is what Synapse stored, read back as a room member sees it
//! (`/messages`, `m.thread` relations): every completion once, in its session's thread or
//! room, in the order the router emitted it, nothing failed or dead-lettered. Meanwhile a
//! person writes in rooms of their own bound to sessions, heard by two `run listen matrix`
//! processes that are killed too ([`crate::chaos_synapse_inputs`]): every message one input.
//!
//! The pieces shared with the fakes' chaos run (worker processes, fault schedule,
//! publisher, outcome reading, report table) come from [`crate::chaos`].

use crate::chaos::{
    destination_key, event_of, fault_schedule, marker, outcomes, read_stream, render_table,
    spawn_publisher, start_fleet, Fault, Step,
};
use crate::chaos_inputs::InputCounts;
use crate::chaos_synapse_inputs::MatrixInputs;
use crate::events::{completion, new_id, spawn};
use crate::pipeline::{Options, Pipeline, Security, ACCOUNT};
use crate::progress::Phase;
use crate::synapse::{HoldingProxy, MatrixUser, SynapseOptions, SynapseServer};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use threadline::config::{Config, ListenMode, Secret};
use threadline::io::nats::StreamKind;
use threadline_schemas::{
    encode, BindingChange, BindingChanged, ConversationRef, DeliveryAction, DeliveryCommand,
    DeliveryMode, Placement, Reconciliation, SessionMode,
};

/// The size and violence of one pass.
#[derive(Debug, Clone, Serialize)]
pub struct SynapseChaosConfig {
    /// Seeds the workload, the fault schedule and the victims: the same seed, the same pass.
    pub seed: u64,
    /// Rooms whose sessions each get a thread Threadline creates (`placement: child`).
    pub thread_rooms: usize,
    /// Rooms whose sessions are bound to the room itself (`placement: current`).
    pub current_rooms: usize,
    /// Sessions spawned with `placement: child` in the thread rooms, each getting its own thread.
    pub child_sessions: usize,
    /// Bound to a room (`placement: current` from the room).
    pub current_sessions: usize,
    /// Bound to a thread a person started in a current room (`placement: current` from it).
    pub person_thread_sessions: usize,
    /// Completions per session: `min_completions..=max_completions`.
    pub min_completions: usize,
    /// Upper bound (inclusive) of completions per session.
    pub max_completions: usize,
    /// Share of completions a retrying publisher sends twice (same event id, new msg id).
    pub duplicate_share: f64,
    /// Router processes (`threadline run router`).
    pub routers: usize,
    /// Matrix deliverer processes (`threadline run deliver matrix`).
    pub deliverers: usize,
    /// Deliverer processes SIGKILLed (and started again) during publishing.
    pub deliverer_kills: usize,
    /// Router processes SIGKILLed (and started again) during publishing.
    pub router_kills: usize,
    /// nats-server restarts during publishing.
    pub nats_restarts: usize,
    /// redis-server restarts during publishing.
    pub redis_restarts: usize,
    /// Synapse SIGKILLed and started again (same port, same database), at 60 % of the window.
    pub homeserver_restarts: usize,
    /// Synapse's `rc_message` for the bot.
    pub messages_per_second: f64,
    /// Synapse's `rc_message` burst: events the bot may send at once before the rate applies.
    pub message_burst: u32,
    /// Publishing is spread over this many seconds; faults happen during it.
    pub publish_seconds: u64,
    /// After the last publish and fault, how long (seconds) the pass waits for quiescence.
    pub drain_timeout_seconds: u64,
    /// `threadline run listen matrix` processes (one holds the bot's `/sync` lease).
    pub listeners: usize,
    /// Rooms of their own, each bound to a session, that the person writes in.
    pub input_rooms: usize,
    /// Messages the person writes during publishing.
    pub input_messages: usize,
    /// Listener processes SIGKILLed (and started again) during publishing.
    pub listener_kills: usize,
}

impl SynapseChaosConfig {
    /// Sized for CI: a few hundred completions within a few minutes on two cores.
    pub fn ci(seed: u64) -> Self {
        SynapseChaosConfig {
            seed,
            thread_rooms: 2,
            current_rooms: 2,
            child_sessions: 36,
            current_sessions: 6,
            person_thread_sessions: 4,
            min_completions: 4,
            max_completions: 9,
            duplicate_share: 0.1,
            routers: 2,
            deliverers: 2,
            deliverer_kills: 8,
            router_kills: 3,
            nats_restarts: 1,
            redis_restarts: 1,
            homeserver_restarts: 1,
            messages_per_second: 8.0,
            message_burst: 10,
            publish_seconds: 40,
            drain_timeout_seconds: 100,
            listeners: 2,
            input_rooms: 2,
            input_messages: 120,
            listener_kills: 3,
        }
    }
}

/// What a pass found, from what Synapse stored. Every count in capitals must be 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SynapseChaosReport {
    /// The seed the pass ran with (rerun with it to reproduce).
    pub seed: u64,
    /// CPU cores available to the pass.
    pub cores: usize,
    /// Messages published: spawn requests, completions and their duplicates.
    pub events_published: usize,
    /// Sessions spawned.
    pub spawns: usize,
    /// Distinct completions published (each must be found exactly once).
    pub completions: usize,
    /// Completions published a second time by the simulated retrying publisher.
    pub duplicate_publishes: usize,
    /// Sessions in a thread Threadline made / bound to a room / bound to a person's thread.
    pub sessions_by_binding: (usize, usize, usize),
    /// Completions found in Synapse where their session is bound.
    pub posts_found: usize,
    /// Events of the bot in Synapse carrying a completion's marker (copies included).
    pub bot_events: usize,
    /// Completions Synapse does not hold where their session is bound.
    pub lost: usize,
    /// Completions stored more than once.
    pub duplicated: usize,
    /// Completions stored (also) somewhere their session is not bound.
    pub misrouted: usize,
    /// Of those: in a thread's room, outside the thread the session is bound to.
    pub in_main_room_though_bound: usize,
    /// Conversations whose completions Synapse holds in another order than the router's.
    pub out_of_order: usize,
    /// Per conversation out of order: Synapse's order and the router's, as event ids.
    pub out_of_order_detail: Vec<String>,
    /// Threads Threadline should have created (one per child session).
    pub threads_expected: usize,
    /// Thread roots the bot created in Synapse.
    pub threads_created: usize,
    /// Thread names with more than one root event.
    pub thread_duplicates: usize,
    /// Child sessions that never got a thread binding.
    pub threads_missing: usize,
    /// Bot messages carrying no completion marker and no thread name (a farewell, a stray).
    pub stray_bot_events: usize,
    /// `tl.out.failed` events seen.
    pub failed_reported: usize,
    /// Messages on the dead-letter stream at the end.
    pub dead_lettered: usize,
    /// `tl.out.delivered` in fallback mode, counted by reason.
    pub fallbacks: BTreeMap<String, usize>,
    /// `tl.out.delivered` naming another event than the one Synapse holds.
    pub reports_mismatched: usize,
    /// Spawn requests that never got a `tl.out.spawned`.
    pub spawns_unanswered: usize,
    /// Deliverer processes actually SIGKILLed.
    pub deliverer_kills: usize,
    /// Router processes actually SIGKILLed.
    pub router_kills: usize,
    /// nats-server restarts actually done.
    pub nats_restarts: usize,
    /// redis-server restarts actually done.
    pub redis_restarts: usize,
    /// Synapse kills and restarts actually done.
    pub homeserver_restarts: usize,
    /// From Synapse's SIGKILL until it answered again, summed over its restarts.
    pub homeserver_down_seconds: f64,
    /// Event sends that reached the homeserver through the test's proxy, retries included.
    pub sends: usize,
    /// Synapse's 429 `M_LIMIT_EXCEEDED` answers.
    pub rate_limited_seen: usize,
    /// Requests that found Synapse down (answered 502 by the proxy).
    pub homeserver_unreachable_seen: usize,
    /// Posts whose doubt (a kill or a lost answer) was settled by reading the room back.
    pub reconciled_read_back: usize,
    /// Seconds spent starting Synapse, the servers and the worker processes.
    pub setup_seconds: f64,
    /// Seconds spent publishing (the fault window).
    pub publish_seconds: f64,
    /// Seconds from the last fault and publish until quiescence (or the drain timeout).
    pub drain_seconds: f64,
    /// Seconds the whole pass took.
    pub total_seconds: f64,
    /// Whether everything went quiet within the drain timeout.
    pub settled: bool,
    /// The person's messages through the Matrix listeners: sent, received, lost, duplicated.
    pub inputs: InputCounts,
}

impl SynapseChaosReport {
    /// Whether the pass met the guarantees.
    pub fn ok(&self) -> bool {
        self.settled
            && self.lost == 0
            && self.duplicated == 0
            && self.misrouted == 0
            && self.out_of_order == 0
            && self.thread_duplicates == 0
            && self.threads_missing == 0
            && self.stray_bot_events == 0
            && self.failed_reported == 0
            && self.dead_lettered == 0
            && self.fallbacks.is_empty()
            && self.reports_mismatched == 0
            && self.spawns_unanswered == 0
            && self.posts_found == self.completions
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
            ("duplicate publishes", self.duplicate_publishes.to_string()),
            (
                "sessions: child / room / person's thread",
                format!(
                    "{} / {} / {}",
                    self.sessions_by_binding.0,
                    self.sessions_by_binding.1,
                    self.sessions_by_binding.2
                ),
            ),
            (
                "threads expected / created",
                format!("{} / {}", self.threads_expected, self.threads_created),
            ),
            ("posts found in Synapse", self.posts_found.to_string()),
            ("bot events with a marker", self.bot_events.to_string()),
            ("LOST", self.lost.to_string()),
            ("DUPLICATED", self.duplicated.to_string()),
            ("MISROUTED", self.misrouted.to_string()),
            (
                "  in the main room though bound",
                self.in_main_room_though_bound.to_string(),
            ),
            ("OUT OF ORDER conversations", self.out_of_order.to_string()),
            ("THREAD DUPLICATES", self.thread_duplicates.to_string()),
            ("THREADS MISSING", self.threads_missing.to_string()),
            ("STRAY BOT EVENTS", self.stray_bot_events.to_string()),
            ("FAILED (tl.out.failed)", self.failed_reported.to_string()),
            ("DEAD-LETTERED", self.dead_lettered.to_string()),
            ("FALLBACKS", format!("{:?}", self.fallbacks)),
            (
                "REPORTS NOT MATCHING SYNAPSE",
                self.reports_mismatched.to_string(),
            ),
            ("SPAWNS UNANSWERED", self.spawns_unanswered.to_string()),
            (
                "deliverer / router kills (-9)",
                format!("{} / {}", self.deliverer_kills, self.router_kills),
            ),
            ("nats-server restarts", self.nats_restarts.to_string()),
            ("redis-server restarts", self.redis_restarts.to_string()),
            (
                "Synapse kills + restarts (down for)",
                format!(
                    "{} ({:.1} s)",
                    self.homeserver_restarts, self.homeserver_down_seconds
                ),
            ),
            ("sends reaching Synapse", self.sends.to_string()),
            ("429s seen", self.rate_limited_seen.to_string()),
            (
                "requests meeting Synapse down",
                self.homeserver_unreachable_seen.to_string(),
            ),
            (
                "reconciled by read-back",
                self.reconciled_read_back.to_string(),
            ),
            ("set-up took", format!("{:.1} s", self.setup_seconds)),
            ("publishing took", format!("{:.1} s", self.publish_seconds)),
            (
                "drain after last fault+publish",
                format!("{:.1} s", self.drain_seconds),
            ),
            ("person's messages", self.inputs.sent.to_string()),
            ("  became input", self.inputs.received.to_string()),
            ("INPUTS LOST", self.inputs.lost.to_string()),
            ("INPUT DUPLICATES", self.inputs.duplicates.to_string()),
            (
                "listener kills (-9)",
                self.inputs.listener_kills.to_string(),
            ),
            ("whole pass", format!("{:.1} s", self.total_seconds)),
            ("settled", self.settled.to_string()),
        ];
        render_table(&rows)
    }
}

/// One spawned session of the workload.
struct Session {
    spawn_event_id: String,
    session_key: String,
    room: String,
    /// In a thread of its own (`placement: child`), else bound to `room` or `thread`.
    child: bool,
    /// The person's thread (its root) a `placement: current` session was spawned in.
    thread: Option<String>,
    thread_name: String,
}

struct Workload {
    steps: Vec<Step>,
    sessions: Vec<Session>,
    /// (completion event id, index into `sessions`).
    completions: Vec<(String, usize)>,
    duplicates: usize,
}

/// A Matrix room as a conversation of the bot account.
pub(crate) fn room_ref(room: &str) -> ConversationRef {
    ConversationRef {
        channel: "matrix".into(),
        account_id: ACCOUNT.into(),
        conversation_id: room.into(),
        parent_conversation_id: None,
    }
}

fn workload(
    p: &Pipeline,
    config: &SynapseChaosConfig,
    thread_rooms: &[String],
    current_rooms: &[String],
    person_threads: &[(String, String)],
    rng: &mut StdRng,
) -> Workload {
    let s = &p.subjects;
    let window = config.publish_seconds * 1_000;
    let mut steps = Vec::new();
    let mut sessions = Vec::new();
    let mut completions = Vec::new();
    let mut duplicates = 0;
    let kinds = std::iter::repeat_n((true, false), config.child_sessions)
        .chain(std::iter::repeat_n((false, false), config.current_sessions))
        .chain(std::iter::repeat_n(
            (false, true),
            config.person_thread_sessions,
        ));
    for (i, (child, in_thread)) in kinds.enumerate() {
        let (room, thread) = if child {
            (thread_rooms[i % thread_rooms.len()].clone(), None)
        } else if in_thread {
            let (room, root) = &person_threads[i % person_threads.len()];
            (room.clone(), Some(root.clone()))
        } else {
            (current_rooms[i % current_rooms.len()].clone(), None)
        };
        let placement = if child {
            Placement::Child
        } else {
            Placement::Current
        };
        let requester = match &thread {
            Some(root) => ConversationRef {
                parent_conversation_id: Some(room.clone()),
                ..room_ref(root)
            },
            None => room_ref(&room),
        };
        let mut request = spawn(&requester, placement, SessionMode::Session);
        let thread_name = format!("chaos-{}-{i}", config.seed);
        request.thread_name = Some(thread_name.clone());
        let session_key = threadline::ids::session_key(&request.agent_id, &request.event_id);
        // Spawns in the first quarter; their completions anywhere after, to the end.
        let spawn_at = rng.random_range(0..window / 4);
        steps.push(Step {
            at: Duration::from_millis(spawn_at),
            subject: s.in_spawn(),
            msg_id: request.event_id.clone(),
            payload: encode(&request),
        });
        let count = rng.random_range(config.min_completions..=config.max_completions);
        let mut times: Vec<u64> = (0..count)
            .map(|_| rng.random_range(spawn_at + 300..window))
            .collect();
        times.sort_unstable();
        for (j, at) in times.into_iter().enumerate() {
            let mut done = completion(&session_key, "");
            done.content = format!("{} completion {j} of session {i}", marker(&done.event_id));
            let bytes = encode(&done);
            steps.push(Step {
                at: Duration::from_millis(at),
                subject: s.in_completion(),
                msg_id: done.event_id.clone(),
                payload: bytes.clone(),
            });
            if rng.random_bool(config.duplicate_share) {
                duplicates += 1;
                steps.push(Step {
                    at: Duration::from_millis(at + rng.random_range(0..3_000)),
                    subject: s.in_completion(),
                    msg_id: new_id(),
                    payload: bytes,
                });
            }
            completions.push((done.event_id, sessions.len()));
        }
        sessions.push(Session {
            spawn_event_id: request.event_id,
            session_key,
            room,
            child,
            thread,
            thread_name,
        });
    }
    steps.sort_by_key(|step| step.at);
    Workload {
        steps,
        sessions,
        completions,
        duplicates,
    }
}

/// What the schedule does at one moment: the fakes' run's faults, plus the homeserver.
#[derive(Debug, Clone, Copy)]
enum Chaos {
    Base(Fault),
    HomeserverRestart,
}

/// Who a kill hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Router,
    Deliverer,
}

/// Runs one pass; `None` (after a loud "SKIPPED") when Synapse is not installed outside CI.
pub async fn run(config: SynapseChaosConfig) -> Option<SynapseChaosReport> {
    let began = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let phase = Phase::start("chaos-synapse", "starting Synapse and its rooms");
    let mut hs = SynapseServer::start_with(SynapseOptions {
        messages_per_second: config.messages_per_second,
        message_burst: config.message_burst,
    })
    .await?;
    let person = hs.register("person", true).await;
    hs.override_ratelimit(&person, &person, 0, 0).await;
    let bot = hs.register("threadline", false).await;
    let mut thread_rooms = Vec::new();
    for _ in 0..config.thread_rooms {
        thread_rooms.push(hs.room(&person, &[&bot]).await);
    }
    let mut current_rooms = Vec::new();
    let mut person_threads = Vec::new();
    for _ in 0..config.current_rooms {
        let room = hs.room(&person, &[&bot]).await;
        let content = json!({"msgtype": "m.text", "body": "a thread a person started"});
        let root = hs.send(&person, &room, content).await;
        person_threads.push((room.clone(), root));
        current_rooms.push(room);
    }
    let mut input_rooms = Vec::new();
    for _ in 0..config.input_rooms {
        input_rooms.push(hs.room(&person, &[&bot]).await);
    }
    phase.done();
    // Every request of the deliverers passes here: it counts the 429s, and answers 502
    // while Synapse is down, as a reverse proxy in front of a homeserver does.
    let proxy = HoldingProxy::start(&hs.url()).await;
    let (homeserver, token) = (proxy.url(), bot.access_token.clone());
    let configure = move |c: &mut Config, _: &_, _: &_| {
        c.matrix.api_base = homeserver.clone();
        c.matrix.token = Secret::new(token.clone());
        // Only the `run listen matrix` processes read these.
        c.matrix.account_id = ACCOUNT.into();
        c.matrix.listen = ListenMode::Sync;
        c.matrix.poll_timeout_ms = Some(2_000);
    };
    let phase = Phase::start(
        "chaos-synapse",
        "starting nats-server, redis-server and the worker processes",
    );
    let mut p = Pipeline::start_secured(
        Options {
            in_process: false,
            tune: |c| {
                c.ack_wait_ms = 4_000;
                c.claim_lease_ms = 3_000;
                // Synapse on a busy machine answers in seconds at times.
                c.http_timeout_ms = 5_000;
                // A thread made late (rate limits, the homeserver down) is still waited for.
                c.pending_timeout_ms = 90_000;
                c.unknown_session_grace_ms = 10_000;
                c.max_attempts = 40;
                c.retry_base_ms = 100;
                c.retry_max_ms = 2_000;
                c.concurrency = 32;
                c.drain_timeout_ms = 3_000;
            },
        },
        Security {
            configure: Some(Arc::new(configure)),
            ..Security::default()
        },
    )
    .await;
    let work = workload(
        &p,
        &config,
        &thread_rooms,
        &current_rooms,
        &person_threads,
        &mut rng,
    );

    let logs = tempfile::tempdir().expect("log dir");
    let roles: [(&[&str], usize); 3] = [
        (&["run", "binder"], 1),
        (&["run", "router"], config.routers),
        (&["run", "deliver", "matrix"], config.deliverers),
    ];
    let mut fleet = start_fleet(&p, &roles, logs.path());
    let routers: Vec<usize> = (1..1 + config.routers).collect();
    let deliverers: Vec<usize> = (1 + config.routers..fleet.len()).collect();
    phase.done();
    let phase = Phase::start(
        "chaos-synapse",
        format!(
            "binding {} rooms people write in, starting {} Matrix listener processes and waiting until they hear the rooms",
            config.input_rooms, config.listeners
        ),
    );
    let window = Duration::from_secs(config.publish_seconds);
    let mut inputs = MatrixInputs::prepare(
        &p,
        &hs.url(),
        &person,
        &input_rooms,
        (config.listeners, config.input_messages, window),
        &mut rng,
        logs.path(),
    )
    .await;
    phase.done();

    let mut schedule: Vec<(Duration, Chaos)> = fault_schedule(
        &mut rng,
        window,
        config.deliverer_kills + config.router_kills,
        config.nats_restarts,
        config.redis_restarts,
    )
    .into_iter()
    .map(|(at, fault)| (at, Chaos::Base(fault)))
    .collect();
    for n in 0..config.homeserver_restarts {
        let share = (n as f64 + 0.6) / config.homeserver_restarts as f64;
        schedule.push((window.mul_f64(share).min(window), Chaos::HomeserverRestart));
    }
    for _ in 0..config.listener_kills {
        let at = window.mul_f64(rng.random_range(0.05..1.0));
        schedule.push((at, Chaos::Base(Fault::KillListener)));
    }
    schedule.sort_by_key(|f| f.0);
    let mut victims: Vec<Victim> = std::iter::repeat_n(Victim::Router, config.router_kills)
        .chain(std::iter::repeat_n(
            Victim::Deliverer,
            config.deliverer_kills,
        ))
        .collect();
    victims.shuffle(&mut rng);

    let mut report = SynapseChaosReport {
        seed: config.seed,
        cores: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
        events_published: work.steps.len(),
        spawns: work.sessions.len(),
        completions: work.completions.len(),
        duplicate_publishes: work.duplicates,
        sessions_by_binding: (
            config.child_sessions,
            config.current_sessions,
            config.person_thread_sessions,
        ),
        threads_expected: work.sessions.iter().filter(|s| s.child).count(),
        setup_seconds: began.elapsed().as_secs_f64(),
        ..SynapseChaosReport::default()
    };
    let phase = Phase::start(
        "chaos-synapse",
        format!(
            "publishing {} events and {} of a person's messages over {} s while routers, deliverers and listeners are killed and the servers restart",
            work.steps.len(),
            inputs.planned(),
            config.publish_seconds
        ),
    );
    let started = Instant::now();
    let publisher = spawn_publisher(p.js.clone(), work.steps.clone(), started);
    let writer = inputs.spawn_person(started);
    let mut victims = victims.into_iter();
    for (at, what) in schedule {
        tokio::time::sleep_until((started + at).into()).await;
        match what {
            Chaos::Base(Fault::Kill) => {
                let victim = victims.next().unwrap_or(Victim::Deliverer);
                let pool = match victim {
                    Victim::Router => &routers,
                    Victim::Deliverer => &deliverers,
                };
                let index = pool[rng.random_range(0..pool.len())];
                let pause = Duration::from_millis(rng.random_range(200..1_000));
                fleet[index].kill_and_restart(&p, pause).await;
                match victim {
                    Victim::Router => report.router_kills += 1,
                    Victim::Deliverer => report.deliverer_kills += 1,
                }
            }
            Chaos::Base(Fault::KillListener) => {
                let victim = rng.random_range(0..inputs.listeners.len());
                let pause = Duration::from_millis(rng.random_range(200..1_000));
                inputs.listeners[victim].kill_and_restart(&p, pause).await;
                report.inputs.listener_kills += 1;
            }
            Chaos::Base(Fault::NatsRestart) => {
                p.nats.restart().await;
                report.nats_restarts += 1;
            }
            Chaos::Base(Fault::RedisRestart) => {
                p.redis.restart().await;
                report.redis_restarts += 1;
            }
            Chaos::HomeserverRestart => {
                let down = Instant::now();
                hs.restart().await;
                report.homeserver_down_seconds += down.elapsed().as_secs_f64();
                report.homeserver_restarts += 1;
            }
        }
    }
    report.publish_seconds = publisher.await.expect("publisher").as_secs_f64();
    writer.await.expect("the person's client");
    phase.done();
    let phase = Phase::start(
        "chaos-synapse",
        format!(
            "waiting for quiescence (at most {} s)",
            config.drain_timeout_seconds
        ),
    );
    let quiet_from = Instant::now();

    // Quiescence: every spawn answered, every completion delivered or reported failed.
    let deadline = quiet_from + Duration::from_secs(config.drain_timeout_seconds);
    let out_stream = StreamKind::Outbound.name(&p.subjects);
    let o = loop {
        let out = read_stream(&p.js, &out_stream).await;
        let heard = inputs.settled(&p, &out);
        let o = outcomes(&p, &out);
        let answered: HashSet<&str> = o
            .delivered
            .keys()
            .map(|(event, _)| event.as_str())
            .chain(o.failed_events.iter().map(String::as_str))
            .collect();
        let done = work
            .sessions
            .iter()
            .all(|s| o.answered_spawns.contains(&s.spawn_event_id))
            && work
                .completions
                .iter()
                .all(|(event, _)| answered.contains(event.as_str()));
        if done && heard {
            report.settled = true;
            break o;
        }
        if Instant::now() >= deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    report.drain_seconds = quiet_from.elapsed().as_secs_f64();
    phase.done_with(if report.settled { "" } else { "; not settled" });
    let phase = Phase::start(
        "chaos-synapse",
        "reading the rooms back from Synapse and checking them",
    );
    // Let stragglers (a late duplicate would show up now) arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for worker in fleet.iter_mut().chain(inputs.listeners.iter_mut()) {
        worker.stop().await;
    }

    let out = read_stream(&p.js, &out_stream).await;
    let listener_kills = report.inputs.listener_kills;
    report.inputs = inputs.count(&p, &out);
    report.inputs.listener_kills = listener_kills;
    let mut threads: HashMap<String, ConversationRef> = HashMap::new();
    for message in out.iter().filter(|m| m.subject == p.subjects.out_binding()) {
        if let Ok(b) = rmp_serde::from_slice::<BindingChanged>(&message.payload) {
            if b.change == BindingChange::Bound
                && b.binding.conversation.parent_conversation_id.is_some()
            {
                threads.insert(b.binding.target_session_key, b.binding.conversation);
            }
        }
    }
    // The router's emission order, per destination (first copy of each event).
    let mut emitted: HashMap<String, Vec<String>> = HashMap::new();
    for message in read_stream(&p.js, &StreamKind::Deliver.name(&p.subjects)).await {
        let Ok(command) = rmp_serde::from_slice::<DeliveryCommand>(&message.payload) else {
            continue;
        };
        match command.action {
            DeliveryAction::Post { destination, .. } => {
                let order = emitted.entry(destination.conversation_id).or_default();
                if !order.contains(&command.event_id) {
                    order.push(command.event_id);
                }
            }
            DeliveryAction::CreateThread { .. } => {}
        }
    }
    report.dead_lettered = read_stream(&p.js, &StreamKind::DeadLetter.name(&p.subjects))
        .await
        .len();
    report.sends = proxy.sends();
    report.rate_limited_seen = proxy.rate_limited();
    report.homeserver_unreachable_seen = proxy.unreachable();
    for d in o.delivered.values() {
        match d.reconciled {
            Some(Reconciliation::ReadBack) => report.reconciled_read_back += 1,
            // Matrix settles doubts by read-back only (a txn id is per device).
            Some(Reconciliation::IdempotencyKey | Reconciliation::UnknownOutcome) | None => {}
        }
        if d.mode == DeliveryMode::Fallback {
            *report.fallbacks.entry(d.reason.clone()).or_default() += 1;
        }
    }
    report.spawns_unanswered = work
        .sessions
        .iter()
        .filter(|s| !o.answered_spawns.contains(&s.spawn_event_id))
        .count();

    let stored = read_back(
        &hs,
        &person,
        &bot,
        thread_rooms.iter().chain(&current_rooms),
    )
    .await;
    check(&work, &threads, &emitted, &o, &stored, &mut report);
    phase.done();
    report.total_seconds = began.elapsed().as_secs_f64();
    if !report.ok() {
        let kept = logs.keep();
        eprintln!(
            "Synapse chaos pass failed; worker logs kept in {}",
            kept.display()
        );
    }
    drop(p);
    drop(hs);
    Some(report)
}

/// What the bot's events in Synapse hold, read back by a room member.
#[derive(Default)]
struct Stored {
    /// Completion event id → (place, Matrix event id) of each copy, in timeline order. A
    /// place is the thread root's event id, or the room id for the room's own timeline.
    copies: HashMap<String, Vec<(String, String)>>,
    /// Place → completion event ids, in timeline order.
    sequence: HashMap<String, Vec<String>>,
    /// Thread name → (room, root event id) of each root.
    roots: HashMap<String, Vec<(String, String)>>,
    stray: usize,
}

async fn read_back<'a>(
    hs: &SynapseServer,
    reader: &MatrixUser,
    bot: &MatrixUser,
    rooms: impl Iterator<Item = &'a String>,
) -> Stored {
    let mut stored = Stored::default();
    for room in rooms {
        for event in hs.timeline(reader, room).await {
            if event["type"] != "m.room.message" || event["sender"] != bot.user_id.as_str() {
                continue;
            }
            let body = event["content"]["body"].as_str().unwrap_or_default();
            let matrix_id = event["event_id"].as_str().unwrap_or_default().to_owned();
            let rel = &event["content"]["m.relates_to"];
            let root = (rel["rel_type"] == "m.thread")
                .then(|| rel["event_id"].as_str())
                .flatten();
            let place = root.unwrap_or(room).to_owned();
            if let (Some(name), None) = (body.strip_prefix("🧵 "), root) {
                stored
                    .roots
                    .entry(name.to_owned())
                    .or_default()
                    .push((room.clone(), matrix_id));
                continue;
            }
            let Some(completion) = event_of(body) else {
                stored.stray += 1;
                continue;
            };
            stored
                .copies
                .entry(completion.to_owned())
                .or_default()
                .push((place.clone(), matrix_id));
            let order = stored.sequence.entry(place).or_default();
            if !order.iter().any(|e| e == completion) {
                order.push(completion.to_owned());
            }
        }
    }
    stored
}

/// Compares what Synapse holds with where each session is bound and what was emitted.
fn check(
    work: &Workload,
    threads: &HashMap<String, ConversationRef>,
    emitted: &HashMap<String, Vec<String>>,
    o: &crate::chaos::Outcomes,
    stored: &Stored,
    report: &mut SynapseChaosReport,
) {
    report.stray_bot_events = stored.stray;
    report.threads_created = stored.roots.values().map(Vec::len).sum();
    report.thread_duplicates = stored.roots.values().filter(|r| r.len() > 1).count();
    // The place each session's output belongs in.
    let place_of: Vec<Option<String>> = work
        .sessions
        .iter()
        .map(|s| {
            if !s.child {
                return Some(s.thread.clone().unwrap_or_else(|| s.room.clone()));
            }
            let thread = threads.get(&s.session_key)?;
            let root = stored.roots.get(&s.thread_name)?;
            // The bound thread is the one Synapse shows under the session's name, in its room.
            root.iter()
                .any(|(room, id)| *room == s.room && *id == thread.conversation_id)
                .then(|| thread.conversation_id.clone())
        })
        .collect();
    report.threads_missing = work
        .sessions
        .iter()
        .zip(&place_of)
        .filter(|(s, place)| s.child && place.is_none())
        .count();
    for (event, session) in &work.completions {
        if o.failed_events.contains(event) {
            report.failed_reported += 1;
        }
        let copies = stored.copies.get(event).map(Vec::as_slice).unwrap_or(&[]);
        report.bot_events += copies.len();
        if copies.is_empty() {
            report.lost += 1;
            continue;
        }
        if copies.len() > 1 {
            report.duplicated += 1;
        }
        let expected = place_of[*session].as_deref();
        let s = &work.sessions[*session];
        let wrong: Vec<&(String, String)> = copies
            .iter()
            .filter(|(place, _)| Some(place.as_str()) != expected)
            .collect();
        if !wrong.is_empty() {
            report.misrouted += 1;
            let in_a_thread = s.child || s.thread.is_some();
            if in_a_thread && wrong.iter().any(|(place, _)| *place == s.room) {
                report.in_main_room_though_bound += 1;
            }
        }
        let Some(expected) = expected else { continue };
        let Some((_, matrix_id)) = copies.iter().find(|(place, _)| place == expected) else {
            continue;
        };
        report.posts_found += 1;
        let destination = ConversationRef {
            parent_conversation_id: (s.child || s.thread.is_some()).then(|| s.room.clone()),
            ..room_ref(expected)
        };
        let reported = o
            .delivered
            .get(&(event.clone(), destination_key(&destination)));
        if reported.is_none_or(|d| d.platform_message_id != *matrix_id) {
            report.reports_mismatched += 1;
        }
    }
    for (place, sequence) in &stored.sequence {
        let order: Vec<&String> = emitted
            .get(place)
            .map(|e| e.iter().filter(|id| sequence.contains(id)).collect())
            .unwrap_or_default();
        if order.len() != sequence.len() || order.iter().zip(sequence).any(|(a, b)| *a != b) {
            report.out_of_order += 1;
            report.out_of_order_detail.push(format!(
                "{place}: Synapse has {sequence:?}, the router emitted {order:?}"
            ));
        }
    }
}
