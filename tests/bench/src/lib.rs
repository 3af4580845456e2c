//! The benchmark: Threadline end to end against a bare JetStream relay measured in the same
//! run on the same servers, cost as bindings grow, Redis bytes per binding and worker RSS.
//!
//! Every figure is the median of `runs` repetitions, with min and max; warm-up is excluded.
//! Ratios, not absolute numbers, are what carry between machines (this one is shared).

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use threadline::config::{Config, WebhookConfig};
use threadline_schemas::{ConversationRef, Placement, SessionMode};
use threadline_test_servers::{NatsServer, RedisServer};
use threadline_tests::fakes::FakeWebhook;
use threadline_tests::progress::Phase;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How big a benchmark run is.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// Completions per measured run at full speed.
    pub messages: usize,
    /// How long each half-load run offers traffic, the floor's and Threadline's alike: its
    /// p99 is the latency exceeded 1% of that time, so both must be exposed to the machine's
    /// stalls (other tenants, Redis's fsyncs) for equally long. Equal message counts would
    /// give Threadline, at its lower rate, longer runs and more stalls than the floor.
    pub half_load_seconds: f64,
    /// Completions before measuring (excluded).
    pub warmup: usize,
    /// Repetitions; every figure is their median. Five by default: on this shared machine a
    /// median of three full-speed ratios still strayed across the target from one bench run
    /// to the next (commit 56b1156 has the figures).
    pub runs: usize,
    /// Sessions (each in its own conversation) the completions rotate over.
    pub sessions: usize,
    /// Binding counts preloaded for the state-scaling figure.
    pub state_sizes: Vec<usize>,
    /// Completions per state-scaling measurement, paced at `state_rate`.
    pub state_messages: usize,
    /// Rounds of the state-scaling runs (each size once per round). More than `runs`: a
    /// light-load run's p99 is one of its few slowest completions, so one run's p99 swings
    /// widely within a size, and a median of three left the ratio to chance.
    pub state_runs: usize,
    /// Completions per second in the state-scaling runs: a light load, far below what the
    /// pipeline does at full speed. Higher rates gave no steadier p99 ratio, only higher
    /// p99s (more of nats-server's garbage collections fall in each run).
    pub state_rate: f64,
    /// Also measure with one OS process per worker.
    pub processes: bool,
    /// Delivery lanes per channel (`delivery_partitions`); `None` keeps the default.
    pub partitions: Option<u32>,
}

impl BenchConfig {
    /// The full run, whose figures docs/benchmarks.md holds.
    pub fn full() -> Self {
        BenchConfig {
            messages: 5_000,
            half_load_seconds: 5.0,
            warmup: 1_000,
            runs: 5,
            sessions: 64,
            state_sizes: vec![10_000, 100_000, 1_000_000],
            state_messages: 1_000,
            state_runs: 5,
            state_rate: 200.0,
            processes: true,
            partitions: None,
        }
    }

    /// Messages for a half-load run at `rate` per second: `half_load_seconds` of traffic.
    fn half_load_messages(&self, rate: f64) -> usize {
        ((rate * self.half_load_seconds).round() as usize).max(1)
    }

    /// Small enough for the test suite: proves the benchmark runs, measures nothing.
    pub fn smoke() -> Self {
        BenchConfig {
            messages: 200,
            half_load_seconds: 0.2,
            warmup: 50,
            runs: 1,
            sessions: 8,
            state_sizes: vec![100, 1_000],
            state_messages: 50,
            state_runs: 1,
            state_rate: 200.0,
            processes: true,
            partitions: None,
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Figures {
    /// Messages per second through to the fake.
    pub throughput_per_s: f64,
    /// Median latency from publish to the fake (ms).
    pub p50_ms: f64,
    /// 99th percentile latency from publish to the fake (ms).
    pub p99_ms: f64,
    /// 99.9th percentile latency from publish to the fake (ms).
    pub p999_ms: f64,
    /// Redis AOF rewrites running at any time during the run: a rewrite (a fork writing the
    /// whole dataset to the same disk) slows every fsync of `appendfsync always`.
    pub aof_rewrites: u64,
}

/// Median, min and max of one figure over the runs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stat {
    /// The median over the runs: the figure reported.
    pub median: f64,
    /// The lowest run.
    pub min: f64,
    /// The highest run.
    pub max: f64,
}

impl Stat {
    fn of(mut values: Vec<f64>) -> Stat {
        values.sort_by(f64::total_cmp);
        Stat {
            median: values.get(values.len() / 2).copied().unwrap_or(0.0),
            min: values.first().copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

impl std::fmt::Display for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} (min {:.1}, max {:.1})",
            self.median, self.min, self.max
        )
    }
}

/// Figures over several runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// [`Figures::throughput_per_s`] over the runs.
    pub throughput_per_s: Stat,
    /// [`Figures::p50_ms`] over the runs.
    pub p50_ms: Stat,
    /// [`Figures::p99_ms`] over the runs.
    pub p99_ms: Stat,
    /// [`Figures::p999_ms`] over the runs.
    pub p999_ms: Stat,
    /// Over all runs.
    pub aof_rewrites: u64,
}

impl Summary {
    fn of(runs: &[Figures]) -> Summary {
        let pick = |f: fn(&Figures) -> f64| Stat::of(runs.iter().map(f).collect());
        Summary {
            throughput_per_s: pick(|f| f.throughput_per_s),
            p50_ms: pick(|f| f.p50_ms),
            p99_ms: pick(|f| f.p99_ms),
            p999_ms: pick(|f| f.p999_ms),
            aof_rewrites: runs.iter().map(|f| f.aof_rewrites).sum(),
        }
    }
}

/// The floor's runs interleaved with one layout's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloorAlongside {
    /// The floor's full-speed runs.
    pub full: Summary,
    /// The floor's half-load runs.
    pub half: Summary,
}

/// Everything the benchmark reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    /// CPU cores the machine offered the run.
    pub cores: usize,
    /// The run's size.
    pub config: Option<BenchConfig>,
    /// Over all the floor's runs (those alongside each layout).
    pub floor_full: Summary,
    /// Each part's floor runs at half that part's floor throughput.
    pub floor_half: Summary,
    /// By layout: the floor's runs interleaved with that layout's, which its ratios use.
    pub floor_alongside: BTreeMap<String, FloorAlongside>,
    /// `run all` at full speed.
    pub threadline_full: Summary,
    /// `run all` at half load.
    pub threadline_half: Summary,
    /// One process per worker at full speed (`None` when that layout was not run).
    pub processes_full: Option<Summary>,
    /// One process per worker at half load.
    pub processes_half: Option<Summary>,
    /// Threadline (`run all`) / floor throughput at full speed (target ≥ 0.6): the medians
    /// of its runs and of the floor's runs interleaved with them.
    pub throughput_ratio: f64,
    /// Threadline (`run all`) p99 / floor p99 at half load (target ≤ 2), the same way.
    pub p99_ratio_half_load: f64,
    /// The throughput ratio with a process per worker.
    pub processes_throughput_ratio: Option<f64>,
    /// The half-load p99 ratio with a process per worker.
    pub processes_p99_ratio_half_load: Option<f64>,
    /// Routing latency as bindings grow, and Redis bytes per binding (4 and 5); flattened,
    /// so the JSON keeps these fields at its top level.
    #[serde(flatten)]
    pub routing: RoutingReport,
    /// Peak RSS (MiB) of each worker process under load (target ≤ 64).
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// CPU time (µs, user + system, all cores) per message at full speed, by run and by
    /// process: where the work goes, floor against Threadline.
    pub cpu_us_per_message: BTreeMap<String, BTreeMap<String, f64>>,
    /// Bytes Redis appended to its AOF per message at full speed, by run: what each
    /// `appendfsync always` fsync writes (`None` when a rewrite ran meanwhile).
    pub aof_bytes_per_message: BTreeMap<String, Option<f64>>,
    /// What nats-server and Redis handled per message at full speed, by run.
    pub traffic_per_message: BTreeMap<String, Traffic>,
}

impl BenchReport {
    /// The report as the table `threadline-bench` prints.
    pub fn table(&self) -> String {
        let mut out = format!("cores: {}\n\n", self.cores);
        out += "| run | throughput /s | p50 ms | p99 ms | p99.9 ms | AOF rewrites |\n| --- | --- | --- | --- | --- | --- |\n";
        let mut row = |name: &str, m: &Summary| {
            out += &format!(
                "| {name} | {} | {} | {} | {} | {} |\n",
                m.throughput_per_s, m.p50_ms, m.p99_ms, m.p999_ms, m.aof_rewrites
            );
        };
        row("floor (bare relay), full speed, all runs", &self.floor_full);
        row("floor, half load, all runs", &self.floor_half);
        let floor = |layout: &str| self.floor_alongside.get(layout);
        if let Some(f) = floor("threadline run all") {
            row("floor alongside `run all`, full speed", &f.full);
        }
        row("threadline `run all`, full speed", &self.threadline_full);
        if let Some(f) = floor("threadline run all") {
            row("floor alongside `run all`, half load", &f.half);
        }
        row("threadline `run all`, half load", &self.threadline_half);
        if let (Some(full), Some(half)) = (&self.processes_full, &self.processes_half) {
            let alongside = floor("threadline process per worker");
            if let Some(f) = alongside {
                row("floor alongside process per worker, full speed", &f.full);
            }
            row("threadline, process per worker, full speed", full);
            if let Some(f) = alongside {
                row("floor alongside process per worker, half load", &f.half);
            }
            row("threadline, process per worker, half load", half);
        }
        if let Some(config) = &self.config {
            out += &format!(
                "\nfull speed: {} messages per run; half load: {} s of traffic per run; \
                 each layout's runs interleaved with the floor's, whose ratios use them\n",
                config.messages, config.half_load_seconds
            );
        }
        out += &format!(
            "\nthroughput ratio (threadline/floor), `run all`: {:.2}  (target ≥ 0.60)\n",
            self.throughput_ratio
        );
        out += &format!(
            "p99 ratio at half load (threadline/floor), `run all`: {:.2}  (target ≤ 2.0)\n",
            self.p99_ratio_half_load
        );
        if let (Some(throughput), Some(p99)) = (
            self.processes_throughput_ratio,
            self.processes_p99_ratio_half_load,
        ) {
            out += &format!(
                "throughput ratio, process per worker: {throughput:.2}  (target ≥ 0.60)\n"
            );
            out +=
                &format!("p99 ratio at half load, process per worker: {p99:.2}  (target ≤ 2.0)\n");
        }
        out += &self.routing.table();
        for (worker, mib) in &self.peak_rss_mib {
            out += &format!("peak RSS {worker}: {mib:.1} MiB  (target ≤ 64)\n");
        }
        for (run, by_process) in &self.cpu_us_per_message {
            let total: f64 = by_process.values().sum();
            let parts: Vec<String> = by_process
                .iter()
                .map(|(process, us)| format!("{process} {us:.0}"))
                .collect();
            out += &format!(
                "CPU µs per message, {run}: {total:.0} = {}\n",
                parts.join(" + ")
            );
        }
        for (run, bytes) in &self.aof_bytes_per_message {
            match bytes {
                Some(bytes) => out += &format!("Redis AOF bytes per message, {run}: {bytes:.0}\n"),
                None => out += &format!("Redis AOF bytes per message, {run}: (a rewrite ran)\n"),
            }
        }
        for (run, t) in &self.traffic_per_message {
            out += &format!(
                "per message, {run}: nats-server {:.1} in + {:.1} out, Redis {:.1} commands\n",
                t.nats_in, t.nats_out, t.redis_commands
            );
        }
        out
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime
    // and stime the 12th and 13th (fields 14 and 15 of proc(5)), in clock ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on (the kernel's ABI, not CONFIG_HZ).
    Some(ticks / 100.0)
}

/// CPU time of a set of named processes between two points.
struct CpuProbe {
    pids: Vec<(String, u32)>,
    start: Vec<Option<f64>>,
}

impl CpuProbe {
    fn start(pids: Vec<(String, u32)>) -> CpuProbe {
        let start = pids.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
        CpuProbe { pids, start }
    }

    /// µs of CPU per message for each process since `start`.
    fn per_message(&self, messages: usize) -> BTreeMap<String, f64> {
        self.pids
            .iter()
            .zip(&self.start)
            .filter_map(|((name, pid), start)| {
                let used = cpu_seconds(*pid)? - (*start)?;
                Some((name.clone(), used * 1e6 / messages.max(1) as f64))
            })
            .collect()
    }
}

/// The processes every run shares: the servers, and this one (the publisher, the platform
/// fake, and — for the floor — the relay itself).
fn shared_processes(nats: &NatsServer, redis: &RedisServer) -> Vec<(String, u32)> {
    let mut pids = vec![("bench process".to_owned(), std::process::id())];
    pids.extend(nats.pid().map(|pid| ("nats-server".to_owned(), pid)));
    pids.extend(redis.pid().map(|pid| ("redis-server".to_owned(), pid)));
    pids
}

/// Latency percentile (ms) of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// Figures from publish instants and (sequence, arrival) pairs.
fn figures(published: &[Instant], arrivals: &[(usize, Instant)]) -> Figures {
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(seq, at)| {
            published
                .get(*seq)
                .map(|p| at.saturating_duration_since(*p))
        })
        .collect();
    if std::env::var_os("BENCH_DUMP_SLOW").is_some() {
        if let Some(start) = published.first() {
            let slow: Vec<(usize, f64, f64)> = arrivals
                .iter()
                .filter_map(|(seq, at)| {
                    let p = published.get(*seq)?;
                    let l = at.saturating_duration_since(*p).as_secs_f64();
                    (l > 0.5).then(|| (*seq, p.duration_since(*start).as_secs_f64(), l))
                })
                .collect();
            if !slow.is_empty() {
                let firsts: Vec<_> = slow.iter().take(5).collect();
                let lasts: Vec<_> = slow.iter().rev().take(3).collect();
                eprintln!(
                    "SLOW: {} of {} > 0.5 s; first {:?}; last {:?}",
                    slow.len(),
                    arrivals.len(),
                    firsts,
                    lasts
                );
            }
        }
    }
    latencies.sort();
    let first = published.first().copied();
    let last = arrivals.iter().map(|(_, at)| *at).max();
    let elapsed = match (first, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
        (Some(_), None) | (None, Some(_)) | (None, None) => 0.0,
    };
    Figures {
        throughput_per_s: if elapsed > 0.0 {
            arrivals.len() as f64 / elapsed
        } else {
            0.0
        },
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        aof_rewrites: 0,
    }
}

/// Waits until the fake holds `from + n` deliveries; → (sequence, arrival) of those after
/// the first `from` whose text starts with `tag`.
async fn arrivals(fake: &FakeWebhook, tag: &str, from: usize, n: usize) -> Vec<(usize, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if fake.delivery_count() >= from + n || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Only this round's: copying every earlier round too was CPU charged to the measured
    // runs of a deployment (its fake lives across them; the floor's does not).
    fake.deliveries_with_times_since(from)
        .into_iter()
        .filter_map(|(d, at)| {
            let text = d.body["text"].as_str()?;
            let seq = text.strip_prefix(tag)?.trim().parse().ok()?;
            Some((seq, at))
        })
        .collect()
}

/// Publishes `payloads` in order, pipelined, optionally paced at `rate` per second; returns
/// each one's publish instant.
async fn publish_all(
    js: &jetstream::Context,
    subject: &str,
    payloads: Vec<(String, Vec<u8>)>,
    rate: Option<f64>,
) -> Vec<Instant> {
    let start = Instant::now();
    let mut published = Vec::with_capacity(payloads.len());
    let mut acks = Vec::new();
    for (i, (msg_id, payload)) in payloads.into_iter().enumerate() {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        published.push(Instant::now());
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id);
        acks.push(
            js.send_publish(subject.to_owned(), message)
                .await
                .expect("publish"),
        );
        if acks.len() >= 512 {
            for ack in acks.drain(..) {
                ack.await.expect("publish ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("publish ack");
    }
    published
}

// ---- the floor ------------------------------------------------------------------------------

/// The floor's stream: one for all its runs, as a Threadline deployment keeps its streams
/// across its runs (see [`run`]).
const FLOOR_STREAM: &str = "FLOOR";

/// One hop of the floor, shaped as a Threadline worker runs in `run all`: on an OS thread
/// of its own, with a single-threaded runtime and its own NATS, Redis and HTTP connections.
/// Says `ready` once connected; then, until `stop`: pull → one Redis call → (the last hop:
/// HTTP POST) → publish → ack.
fn relay(
    nats_url: &str,
    redis_url: &str,
    url: &str,
    hop: &str,
    last: bool,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client = async_nats::connect(nats_url).await.expect("nats");
        let js = jetstream::new(client);
        let consumer: consumer::PullConsumer = js
            .get_consumer_from_stream(hop, FLOOR_STREAM)
            .await
            .expect("floor consumer");
        let redis = redis_connection(redis_url).await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let permits = Arc::new(Semaphore::new(64));
        let _ = ready.send(());
        let expires = Duration::from_millis(500);
        while !stop.is_cancelled() {
            let Ok(mut batch) = consumer
                .batch()
                .max_messages(256)
                .expires(expires)
                .messages()
                .await
            else {
                continue;
            };
            // nats-server 2.9 sometimes never ends an expired pull request, and async-nats
            // then waits 5 s more (what `threadline::runtime::pulls` handles in the
            // workers): a relay idling between runs would stall the next one. A request
            // still open 200 ms past its expiry is given up and a new one made. (A message
            // the server still delivered to it would come back after `ack_wait`; the
            // run would show it.)
            let overdue = tokio::time::sleep(expires + Duration::from_millis(200));
            tokio::pin!(overdue);
            loop {
                let message = tokio::select! {
                    // What was delivered first: only a request with nothing left is given up.
                    biased;
                    next = batch.next() => match next {
                        Some(Ok(message)) => message,
                        Some(Err(_)) | None => break,
                    },
                    () = &mut overdue => break,
                };
                let permit = permits.clone().acquire_owned().await.expect("permit");
                let (js, mut redis, http, url) =
                    (js.clone(), redis.clone(), http.clone(), url.to_owned());
                tokio::spawn(async move {
                    // The payload is a completion's bytes; the run and the sequence ride
                    // in the id (`<hop>:<run>:<seq>`), and go on in the next hop's.
                    let id = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|id| id.as_str().to_owned())
                        .unwrap_or_default();
                    let run_and_seq = id.split_once(':').map_or("", |(_, rest)| rest);
                    let seq = run_and_seq.rsplit(':').next().unwrap_or_default();
                    let _: () = redis::cmd("SET")
                        .arg(format!("floor:{seq}:{last}"))
                        .arg(1)
                        .query_async(&mut redis)
                        .await
                        .expect("redis");
                    let next = if last {
                        FloorPost::request(&http, &url, run_and_seq, seq)
                            .send()
                            .await
                            .expect("post");
                        "floor.out"
                    } else {
                        "floor.mid"
                    };
                    let publish = jetstream::message::PublishMessage::build()
                        .payload(message.payload.clone())
                        .message_id(format!("{next}:{run_and_seq}"));
                    js.send_publish(next, publish)
                        .await
                        .expect("publish")
                        .await
                        .expect("ack");
                    message.ack().await.expect("ack");
                    drop(permit);
                });
            }
        }
        // Every message of the run arrived before `stop`; what is still running is acks.
        let _ = permits.acquire_many(64).await;
    });
}

/// The floor's platform call: the body and headers of the webhook deliverer's post (its
/// `PostBody`, an `Idempotency-Key`, a `traceparent`), so the platform fake, which shares
/// the machine, does the same work for a floor post as for a Threadline one (the same
/// JSON fields to parse, a key to remember, a trace header to note). With a smaller request
/// the fake spent measurably less per floor post than per Threadline post, which the
/// ratios then counted against Threadline.
#[derive(Serialize)]
struct FloorPost<'a> {
    action: &'static str,
    event_id: &'a str,
    delivery_id: &'a str,
    part: usize,
    parts: usize,
    conversation: &'a ConversationRef,
    text: &'a str,
    session_key: &'static str,
}

/// The conversation every floor post names: the schemas' own type, serialized as the
/// deliverer serializes it, made once rather than per post.
static FLOOR_CONVERSATION: std::sync::LazyLock<ConversationRef> =
    std::sync::LazyLock::new(|| ConversationRef {
        channel: "webhook:bench".into(),
        account_id: "bench".into(),
        conversation_id: "conversation-0".into(),
        parent_conversation_id: None,
    });

impl FloorPost<'_> {
    /// The request for post `seq` (of `run_and_seq`, unique in the floor's stream): the
    /// ids and the trace header made up from it, the text `floor <seq>`.
    fn request(
        http: &reqwest::Client,
        url: &str,
        run_and_seq: &str,
        seq: &str,
    ) -> reqwest::RequestBuilder {
        let id = format!("{run_and_seq:0>36}");
        http.post(url)
            .header("Idempotency-Key", format!("{run_and_seq:0>24}"))
            .header("traceparent", format!("00-{seq:0>32}-{seq:0>16}-01"))
            .json(&FloorPost {
                action: "post",
                event_id: &id,
                delivery_id: &id,
                part: 0,
                parts: 1,
                conversation: &FLOOR_CONVERSATION,
                text: &format!("floor {seq}"),
                session_key: "agent:bench:subagent:00000000-0000-0000-0000-000000000000",
            })
    }
}

/// A bare relay with Threadline's hops: publish (msg id) → durable pull consumer → one Redis
/// call → publish → durable pull consumer → one Redis call → HTTP POST to the platform fake
/// → publish the outcome. No business logic. Started once per part and kept across its
/// runs, as a Threadline deployment is: its relays are connected, and their HTTP
/// connections to the fake open, before a run's clock starts.
struct Floor {
    fake: FakeWebhook,
    redis_url: String,
    stop: CancellationToken,
    relays: Vec<std::thread::JoinHandle<()>>,
}

impl Floor {
    async fn start(nats: &NatsServer, redis: &RedisServer, js: &jetstream::Context) -> Floor {
        let fake = FakeWebhook::start().await;
        let stream = js
            .get_or_create_stream(stream::Config {
                name: FLOOR_STREAM.into(),
                subjects: vec!["floor.>".into()],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("floor stream");
        let hop = |name: &str, subject: &str| consumer::pull::Config {
            durable_name: Some(name.into()),
            filter_subject: subject.into(),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 1_024,
            ..Default::default()
        };
        let _: consumer::PullConsumer = stream
            .create_consumer(hop("hop1", "floor.in"))
            .await
            .expect("hop1");
        let _: consumer::PullConsumer = stream
            .create_consumer(hop("hop2", "floor.mid"))
            .await
            .expect("hop2");
        let stop = CancellationToken::new();
        let (nats_url, redis_url, url) = (nats.url(), redis.url(), fake.url("floor"));
        let mut relays = Vec::new();
        for (hop, last) in [("hop1", false), ("hop2", true)] {
            let (nats_url, redis_url, url, stop) = (
                nats_url.clone(),
                redis_url.clone(),
                url.clone(),
                stop.clone(),
            );
            let (ready, connected) = tokio::sync::oneshot::channel();
            relays.push(std::thread::spawn(move || {
                relay(&nats_url, &redis_url, &url, hop, last, stop, ready)
            }));
            connected.await.expect("a floor relay failed to start");
        }
        Floor {
            fake,
            redis_url,
            stop,
            relays,
        }
    }

    /// One run: `messages` completions' bytes, at full speed or paced at `rate`.
    async fn run(
        &self,
        js: &jetstream::Context,
        tag: &str,
        messages: usize,
        rate: Option<f64>,
    ) -> Figures {
        // The same bytes a completion carries through Threadline: the floor moves the same
        // traffic, only without the business logic.
        let payloads = (0..messages)
            .map(|i| {
                let c = threadline_tests::events::completion(
                    "agent:bench:subagent:00000000-0000-0000-0000-000000000000",
                    &format!("floor {i}"),
                );
                (
                    format!("floor-in:{tag}:{i}"),
                    threadline_schemas::encode(&c),
                )
            })
            .collect();
        // Its runs share one stream: a message id reused from an earlier run would be
        // dropped as a duplicate, and the run would count fewer posts than it sent.
        let run = format!("the floor's run {tag}");
        measure_run(
            js,
            "floor.in",
            payloads,
            rate,
            &self.fake,
            "floor",
            &self.redis_url,
            &run,
        )
        .await
    }

    async fn stop(self) {
        self.stop.cancel();
        for relay in self.relays {
            // It stops within its pull's expiry (500 ms, or 700 ms for one overdue).
            tokio::task::spawn_blocking(move || relay.join())
                .await
                .expect("join")
                .expect("a floor relay panicked");
        }
    }
}

// ---- Threadline -------------------------------------------------------------------------------

/// How the workers run: `threadline run all` (every worker in one OS process), or one
/// `threadline run …` process per worker. Both as deployed: their own processes, with their
/// own runtimes, apart from the publisher and the platform fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    AllInOne,
    PerWorker,
}

impl Layout {
    /// The layout's name in the report and in progress lines.
    fn name(self) -> &'static str {
        match self {
            Layout::AllInOne => "threadline run all",
            Layout::PerWorker => "threadline process per worker",
        }
    }

    /// (name in the report, `threadline` arguments) of each process, in start order.
    fn processes(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Layout::AllInOne => &[("run all", &["run", "all"])],
            Layout::PerWorker => &[
                ("binder", &["run", "binder"]),
                ("router", &["run", "router"]),
                (
                    "deliver webhook:bench",
                    &["run", "deliver", "webhook:bench"],
                ),
            ],
        }
    }
}

struct Deployment {
    config: Config,
    fake: FakeWebhook,
    processes: Vec<(&'static str, tokio::process::Child)>,
    dir: tempfile::TempDir,
}

async fn deploy(
    nats: &NatsServer,
    redis: &RedisServer,
    layout: Layout,
    prefix: &str,
    partitions: Option<u32>,
) -> Deployment {
    let fake = FakeWebhook::start().await;
    let mut config = Config {
        nats_url: nats.url(),
        redis_url: redis.url(),
        subject_prefix: prefix.into(),
        health_addr: String::new(),
        ..Config::default()
    };
    config.delivery_partitions = partitions;
    config
        .webhooks
        .insert("bench".into(), bench_webhook(fake.url("bench")));
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("threadline.toml");
    std::fs::write(&file, toml::to_string(&config).expect("toml")).expect("config");
    let mut processes = Vec::new();
    for (name, args) in layout.processes() {
        let child = tokio::process::Command::new(threadline_tests::pipeline::threadline_bin())
            .args(*args)
            .env("THREADLINE_CONFIG", &file)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            // Warnings and errors only: kept to explain a deployment that does not work.
            .stderr(std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("worker process");
        processes.push((*name, child));
    }
    // The workers create the streams as they start; what is published before the consumers
    // exist waits in the stream (the sessions and the warm-up come first, unmeasured).
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while js
        .get_stream(format!("{}_IN", prefix.to_uppercase()))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the workers never created their streams"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Deployment {
        config,
        fake,
        processes,
        dir,
    }
}

/// The `webhook:bench` channel the benchmark's completions are posted to, at `url`.
fn bench_webhook(url: String) -> WebhookConfig {
    WebhookConfig {
        url,
        threads: false,
        token: None,
        token_file: None,
        max_message_chars: 4_000,
        idle_timeout_ms: None,
        max_age_ms: None,
        own_author_ids: Vec::new(),
        inbound_secret: None,
        inbound_secret_file: None,
    }
}

impl Deployment {
    fn subjects(&self) -> threadline_schemas::Subjects {
        threadline_schemas::Subjects::new(self.config.subject_prefix.clone())
    }

    /// Whether each worker process still runs, and the end of its log: what a failed wait
    /// reports.
    fn diagnose(&mut self) -> String {
        let mut out = String::new();
        for (name, child) in &mut self.processes {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            out.push_str(&format!(
                "\n{name}: {:?}; its log ends:\n{}",
                child.try_wait(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }

    /// Stops the workers; answers each one's peak RSS (MiB).
    async fn stop(mut self) -> BTreeMap<String, f64> {
        let mut rss = BTreeMap::new();
        for (name, child) in &mut self.processes {
            if let Some(pid) = child.id() {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kb) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                    {
                        rss.insert((*name).to_owned(), kb / 1024.0);
                    }
                }
            }
            // SIGTERM, as an orchestrator stops it: the deliverers give their lanes back, so
            // the next deployment on the same Redis need not wait out their leases.
            // SIGKILL if it has not drained within the drain timeout.
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            let drain =
                Duration::from_millis(self.config.drain_timeout_ms) + Duration::from_secs(5);
            if tokio::time::timeout(drain, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        rss
    }
}

/// Spawns `count` sessions bound to their own conversations (`Placement::Current`: the
/// webhook has no threads), and waits until every binding is active, so the completions
/// measured take the bound path the issue names, not the unbound fallback.
async fn sessions(js: &jetstream::Context, d: &mut Deployment, count: usize) -> Vec<String> {
    let subjects = d.subjects();
    let mut keys = Vec::new();
    let mut payloads = Vec::new();
    for i in 0..count {
        let conversation = ConversationRef {
            channel: "webhook:bench".into(),
            account_id: "bench".into(),
            conversation_id: format!("conversation-{i}"),
            parent_conversation_id: None,
        };
        let s = threadline_tests::events::spawn(
            &conversation,
            Placement::Current,
            SessionMode::Session,
        );
        keys.push(threadline::ids::session_key(&s.agent_id, &s.event_id));
        payloads.push((s.event_id.clone(), threadline_schemas::encode(&s)));
    }
    publish_all(js, &subjects.in_spawn(), payloads, None).await;
    let conn = redis::Client::open(d.config.redis_url.as_str())
        .expect("redis")
        .get_connection_manager()
        .await
        .expect("redis");
    let store = threadline::store::Store::new(conn, &d.config);
    let deadline = Instant::now() + Duration::from_secs(60);
    for key in &keys {
        loop {
            let state = store.load_session(key).await.expect("load session");
            let bound = state.is_some_and(|s| {
                s.bindings
                    .iter()
                    .any(|b| b.status == threadline_schemas::BindingStatus::Active)
            });
            if bound {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "session {key} was never bound{}",
                d.diagnose()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    keys
}

/// Deletes a stopped deployment's streams.
async fn delete_streams(js: &jetstream::Context, subjects: &threadline_schemas::Subjects) {
    for kind in threadline::io::nats::StreamKind::ALL {
        let _ = js.delete_stream(kind.name(subjects)).await;
    }
}

/// Publishes `messages` completions over `keys` and measures until the fake has them all.
async fn completions(
    js: &jetstream::Context,
    d: &Deployment,
    keys: &[String],
    tag: &str,
    messages: usize,
    rate: Option<f64>,
) -> Figures {
    let payloads = (0..messages)
        .map(|i| {
            let c =
                threadline_tests::events::completion(&keys[i % keys.len()], &format!("{tag} {i}"));
            (c.event_id.clone(), threadline_schemas::encode(&c))
        })
        .collect();
    let subject = d.subjects().in_completion();
    let (prefix, run) = (format!("{tag} "), format!("Threadline's run {tag}"));
    measure_run(
        js,
        &subject,
        payloads,
        rate,
        &d.fake,
        &prefix,
        &d.config.redis_url,
        &run,
    )
    .await
}

/// Publishes `payloads` to `subject`, at full speed or paced at `rate`, and measures until
/// `fake` has a post for each (those whose text starts with `tag`), failing `run` if any
/// is missing.
#[allow(clippy::too_many_arguments)]
async fn measure_run(
    js: &jetstream::Context,
    subject: &str,
    payloads: Vec<(String, Vec<u8>)>,
    rate: Option<f64>,
    fake: &FakeWebhook,
    tag: &str,
    redis_url: &str,
    run: &str,
) -> Figures {
    let (before, messages) = (fake.delivery_count(), payloads.len());
    let rewrites = aof_rewrites(redis_url).await;
    let published = publish_all(js, subject, payloads, rate).await;
    let got = arrivals(fake, tag, before, messages).await;
    assert_eq!(got.len(), messages, "{run} lost posts");
    Figures {
        aof_rewrites: rewrites_during(rewrites, aof_rewrites(redis_url).await),
        ..figures(&published, &got)
    }
}

/// One full-speed run's cost, located by process and server.
#[derive(Debug, Clone, Default)]
struct Cost {
    /// CPU µs per message, per process.
    cpu: BTreeMap<String, f64>,
    /// AOF bytes Redis wrote per message (`None` when a rewrite ran).
    aof_bytes: Option<f64>,
    traffic: Traffic,
}

impl Cost {
    /// The mean over runs of the same number of messages; the AOF figure over the runs no
    /// rewrite overlapped.
    fn mean(costs: &[Cost]) -> Cost {
        let n = costs.len().max(1) as f64;
        let mut cpu = BTreeMap::<String, f64>::new();
        for cost in costs {
            for (process, us) in &cost.cpu {
                *cpu.entry(process.clone()).or_default() += us / n;
            }
        }
        let aof: Vec<f64> = costs.iter().filter_map(|c| c.aof_bytes).collect();
        let traffic = |f: fn(&Traffic) -> f64| costs.iter().map(|c| f(&c.traffic)).sum::<f64>() / n;
        Cost {
            cpu,
            aof_bytes: (!aof.is_empty()).then(|| aof.iter().sum::<f64>() / aof.len() as f64),
            traffic: Traffic {
                nats_in: traffic(|t| t.nats_in),
                nats_out: traffic(|t| t.nats_out),
                redis_commands: traffic(|t| t.redis_commands),
            },
        }
    }
}

/// Everything a run's cost is read from, taken before it.
struct CostProbe {
    cpu: CpuProbe,
    aof: AofProbe,
    traffic: Traffic,
}

impl CostProbe {
    async fn start(nats: &NatsServer, redis: &RedisServer, pids: Vec<(String, u32)>) -> Self {
        CostProbe {
            cpu: CpuProbe::start(pids),
            aof: AofProbe::start(&redis.url()).await,
            traffic: Traffic::now(nats, &redis.url()).await,
        }
    }

    async fn finish(self, nats: &NatsServer, redis: &RedisServer, messages: usize) -> Cost {
        Cost {
            cpu: self.cpu.per_message(messages),
            aof_bytes: self.aof.per_message(messages).await,
            traffic: self.traffic.per_message(nats, &redis.url(), messages).await,
        }
    }
}

/// One side of a part: its runs, kept run by run so parts can be summarised together.
#[derive(Default)]
struct Side {
    full: Vec<Figures>,
    half: Vec<Figures>,
    /// Per full-speed run.
    costs: Vec<Cost>,
}

/// What [`measure_part`] measured: one Threadline layout and the floor alongside it.
struct Part {
    threadline: Side,
    floor: Side,
    /// Peak RSS (MiB) per worker process.
    rss: BTreeMap<String, f64>,
}

/// Measures one Threadline layout and the floor alongside it, run by run: a floor run, a
/// Threadline run, a Threadline run, a floor run, … (the order alternates, so a drift within
/// a pair favours neither), full speed first, then half load. On this shared machine the
/// speed of everything drifts by several percent over minutes; a floor measured minutes
/// away from what it is compared with set the ratios as much as Threadline did.
///
/// The floor's half-load rate is half its full-speed median in this part, as Threadline's is
/// half its own: each at half of what it did minutes before on the same machine. (The
/// second part used to reuse the first part's floor rate; when the machine's speed changed
/// between the parts, its floor ran well below half of what it then did while Threadline
/// ran at half, and the half-load ratio missed its target for that alone: commit 519898c.)
/// Both keep their streams across their runs, and lose them and their Redis keys once
/// measured (see [`run`]).
async fn measure_part(
    nats: &NatsServer,
    redis: &RedisServer,
    js: &jetstream::Context,
    config: &BenchConfig,
    layout: Layout,
    prefix: &str,
) -> Part {
    let part = layout.name();
    let phase = Phase::start(
        "bench",
        format!("{part} and its floor: starting, spawning sessions, warm-up"),
    );
    let _ = js.delete_stream(FLOOR_STREAM).await;
    let floor = Floor::start(nats, redis, js).await;
    floor
        .run(js, &format!("{prefix}warmup"), config.warmup, None)
        .await;
    let mut d = deploy(nats, redis, layout, prefix, config.partitions).await;
    let keys = sessions(js, &mut d, config.sessions).await;
    completions(js, &d, &keys, "warmup", config.warmup, None).await;
    phase.done();
    let floor_pids = shared_processes(nats, redis);
    let mut pids = floor_pids.clone();
    for (name, child) in &d.processes {
        pids.extend(child.id().map(|pid| ((*name).to_owned(), pid)));
    }
    // Floor first in even rounds, Threadline first in odd ones.
    let turns = |run: usize| {
        if run.is_multiple_of(2) {
            [true, false]
        } else {
            [false, true]
        }
    };
    let (mut floor_side, mut threadline) = (Side::default(), Side::default());
    for run in 0..config.runs {
        let phase = Phase::start(
            "bench",
            format!(
                "{part} and its floor: full speed, run {} of {}, {} messages each",
                run + 1,
                config.runs,
                config.messages
            ),
        );
        for floor_turn in turns(run) {
            if floor_turn {
                let probe = CostProbe::start(nats, redis, floor_pids.clone()).await;
                let tag = format!("{prefix}full{run}");
                floor_side
                    .full
                    .push(floor.run(js, &tag, config.messages, None).await);
                floor_side
                    .costs
                    .push(probe.finish(nats, redis, config.messages).await);
            } else {
                let probe = CostProbe::start(nats, redis, pids.clone()).await;
                let tag = format!("full{run}");
                threadline
                    .full
                    .push(completions(js, &d, &keys, &tag, config.messages, None).await);
                threadline
                    .costs
                    .push(probe.finish(nats, redis, config.messages).await);
            }
        }
        phase.done();
    }
    let half_rate = |full: &[Figures]| (Summary::of(full).throughput_per_s.median / 2.0).max(1.0);
    let floor_rate = half_rate(&floor_side.full);
    let rate = half_rate(&threadline.full);
    for run in 0..config.runs {
        let phase = Phase::start(
            "bench",
            format!(
                "{part} and its floor: half load (Threadline at {rate:.0}/s, the floor at {floor_rate:.0}/s), run {} of {}",
                run + 1,
                config.runs
            ),
        );
        for floor_turn in turns(run) {
            if floor_turn {
                let (tag, n) = (
                    format!("{prefix}half{run}"),
                    config.half_load_messages(floor_rate),
                );
                floor_side
                    .half
                    .push(floor.run(js, &tag, n, Some(floor_rate)).await);
            } else {
                let (tag, n) = (format!("half{run}"), config.half_load_messages(rate));
                threadline
                    .half
                    .push(completions(js, &d, &keys, &tag, n, Some(rate)).await);
            }
        }
        phase.done();
    }
    let subjects = d.subjects();
    if std::env::var_os("BENCH_DUMP_SLOW").is_some() {
        eprintln!("LOGS: {}", d.diagnose());
    }
    let phase = Phase::start(
        "bench",
        format!("{part}: stopping, deleting its streams and keys"),
    );
    let rss = d.stop().await;
    floor.stop().await;
    delete_streams(js, &subjects).await;
    delete_keys(redis, &format!("{prefix}:*")).await;
    let _ = js.delete_stream(FLOOR_STREAM).await;
    delete_keys(redis, "floor:*").await;
    phase.done();
    Part {
        threadline,
        floor: floor_side,
        rss,
    }
}

/// Preloads bindings (with their sessions) straight into the store, `concurrency` at a time.
async fn preload(store: &threadline::store::Store, from: usize, to: usize) {
    let permits = Arc::new(Semaphore::new(128));
    let mut tasks = tokio::task::JoinSet::new();
    for i in from..to {
        let permit = permits.clone().acquire_owned().await.expect("permit");
        let store = store.clone();
        tasks.spawn(async move {
            let conversation = ConversationRef {
                channel: "webhook:bench".into(),
                account_id: "bench".into(),
                conversation_id: format!("pre-{i}"),
                parent_conversation_id: None,
            };
            let mut s = threadline_tests::events::spawn(
                &conversation,
                Placement::Current,
                SessionMode::Session,
            );
            s.event_id = format!("preload-{i}");
            let defaults = threadline::binder::plan::Defaults {
                idle_timeout_ms: 24 * 3_600_000,
                max_age_ms: None,
            };
            let caps = threadline::model::channels::webhook(&bench_webhook(String::new()));
            let plan = threadline::binder::plan::plan_spawn(
                &s,
                Some(caps),
                threadline_schemas::now_ms(),
                defaults,
            )
            .expect("plan");
            store.create_session(&plan.session).await.expect("session");
            if let Some(binding) = &plan.binding {
                store.add_binding(binding).await.expect("binding");
            }
            drop(permit);
        });
        while tasks.len() > 1_024 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Deletes every key matching `pattern` (a part's namespace) and rewrites the AOF: the next
/// part finds Redis as the previous one did.
async fn delete_keys(redis: &RedisServer, pattern: &str) {
    let mut conn = redis_connection(&redis.url()).await;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("unlink");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // The deletions grow the AOF too, bringing Redis's next automatic rewrite (a fork that
    // slows every fsync while it runs) into the next part's runs. Rewrite it now, so every
    // part starts on a compact AOF, with its whole growth allowance ahead of it.
    aof_settled(redis).await;
    let _: Result<(), _> = redis::cmd("BGREWRITEAOF").query_async(&mut conn).await;
    aof_settled(redis).await;
}

/// One `INFO` section of the benchmark's Redis.
async fn redis_info(redis: &RedisServer, section: &str) -> String {
    redis_info_at(&redis.url(), section).await
}

/// A connection for the bench's own calls to a Redis server.
async fn redis_connection(redis_url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url)
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

async fn redis_info_at(redis_url: &str, section: &str) -> String {
    let mut conn = redis_connection(redis_url).await;
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .expect("info")
}

/// A numeric field of `INFO persistence` (0 when absent).
async fn persistence(redis_url: &str, names: &[&str]) -> Vec<u64> {
    info_fields(redis_url, "persistence", names).await
}

/// Numeric fields of one `INFO` section (0 when absent).
async fn info_fields(redis_url: &str, section: &str, names: &[&str]) -> Vec<u64> {
    let info = redis_info_at(redis_url, section).await;
    names
        .iter()
        .map(|name| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Redis's AOF rewrites: (finished so far, running now).
async fn aof_rewrites(redis_url: &str) -> (u64, u64) {
    match persistence(redis_url, &["aof_rewrites", "aof_rewrite_in_progress"])
        .await
        .as_slice()
    {
        [done, running] => (*done, *running),
        _ => (0, 0),
    }
}

/// What the servers handled, counted: messages into and out of nats-server (`/varz`: every
/// publish, pull request, ack and delivery is one) and Redis commands. Per message, they
/// show where the servers' CPU goes without a profiler.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Traffic {
    /// Messages nats-server took in (`/varz` `in_msgs`).
    pub nats_in: f64,
    /// Messages nats-server sent out (`/varz` `out_msgs`).
    pub nats_out: f64,
    /// Commands Redis ran (`total_commands_processed`).
    pub redis_commands: f64,
}

impl Traffic {
    async fn now(nats: &NatsServer, redis_url: &str) -> Traffic {
        let varz: serde_json::Value = reqwest::get(format!("{}/varz", nats.monitor_url()))
            .await
            .expect("nats /varz")
            .json()
            .await
            .expect("nats /varz JSON");
        let count = |name: &str| varz[name].as_u64().unwrap_or(0) as f64;
        let commands = info_fields(redis_url, "stats", &["total_commands_processed"]).await;
        Traffic {
            nats_in: count("in_msgs"),
            nats_out: count("out_msgs"),
            redis_commands: commands.first().copied().unwrap_or(0) as f64,
        }
    }

    /// Per message since `self` (the bench's own few `INFO` calls are lost in thousands).
    async fn per_message(&self, nats: &NatsServer, redis_url: &str, messages: usize) -> Traffic {
        let end = Traffic::now(nats, redis_url).await;
        let n = messages.max(1) as f64;
        Traffic {
            nats_in: (end.nats_in - self.nats_in) / n,
            nats_out: (end.nats_out - self.nats_out) / n,
            redis_commands: (end.redis_commands - self.redis_commands) / n,
        }
    }
}

/// Redis's AOF size at the start of a measurement.
struct AofProbe {
    url: String,
    size: u64,
    rewrites: (u64, u64),
}

impl AofProbe {
    async fn start(url: &str) -> AofProbe {
        AofProbe {
            url: url.to_owned(),
            size: aof_size(url).await,
            rewrites: aof_rewrites(url).await,
        }
    }

    /// AOF bytes per message since the start; `None` when a rewrite (which shrinks the file)
    /// overlapped.
    async fn per_message(&self, messages: usize) -> Option<f64> {
        let size = aof_size(&self.url).await;
        if rewrites_during(self.rewrites, aof_rewrites(&self.url).await) > 0 {
            return None;
        }
        Some(size.saturating_sub(self.size) as f64 / messages.max(1) as f64)
    }
}

async fn aof_size(redis_url: &str) -> u64 {
    persistence(redis_url, &["aof_current_size"])
        .await
        .first()
        .copied()
        .unwrap_or(0)
}

/// How many rewrites overlapped a run, from [`aof_rewrites`] at its start and its end: those
/// finished or running at the end, less those finished before it began.
fn rewrites_during(start: (u64, u64), end: (u64, u64)) -> u64 {
    (end.0 + end.1).saturating_sub(start.0)
}

/// Waits (up to 5 minutes) until Redis has no AOF rewrite running or scheduled.
async fn aof_settled(redis: &RedisServer) {
    for _ in 0..3_000 {
        let info = redis_info(redis, "persistence").await;
        let busy = info.lines().any(|l| {
            l == "aof_rewrite_in_progress:1"
                || l == "aof_rewrite_scheduled:1"
                || l == "rdb_bgsave_in_progress:1"
        });
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn used_memory(redis: &RedisServer) -> f64 {
    redis_info(redis, "memory")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs the whole benchmark.
pub async fn run(config: BenchConfig) -> BenchReport {
    let phase = Phase::start("bench", "starting nats-server and redis-server");
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    phase.done();
    let mut report = BenchReport {
        cores: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
        config: Some(config.clone()),
        ..BenchReport::default()
    };

    // Each part keeps its streams across its runs and drops them after: the floor's and
    // Threadline's later runs both carry their earlier runs' messages and message ids (what
    // nats-server's heap, and so its garbage collections, grow with). Its Redis keys go too:
    // Redis's key table grows with them, and the process-per-worker layout, measured after
    // `run all`, found all of `run all`'s records there. See docs/benchmarks.md.
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));

    // 1 and 2. Each Threadline layout with the floor alongside it, run by run.
    let mut parts = vec![(
        Layout::AllInOne.name(),
        measure_part(&nats, &redis, &js, &config, Layout::AllInOne, "bench").await,
    )];
    if config.processes {
        parts.push((
            Layout::PerWorker.name(),
            measure_part(&nats, &redis, &js, &config, Layout::PerWorker, "benchp").await,
        ));
    }

    // 3. Ratios, each layout against the floor measured alongside it (half load compared
    // at each one's own half load).
    let mut floor = Side::default();
    for (name, part) in parts {
        let threadline = (
            Summary::of(&part.threadline.full),
            Summary::of(&part.threadline.half),
        );
        let alongside = (Summary::of(&part.floor.full), Summary::of(&part.floor.half));
        let throughput =
            threadline.0.throughput_per_s.median / alongside.0.throughput_per_s.median.max(1e-9);
        let p99 = threadline.1.p99_ms.median / alongside.1.p99_ms.median.max(1e-9);
        if name == Layout::AllInOne.name() {
            report.threadline_full = threadline.0;
            report.threadline_half = threadline.1;
            report.throughput_ratio = throughput;
            report.p99_ratio_half_load = p99;
        } else {
            report.processes_full = Some(threadline.0);
            report.processes_half = Some(threadline.1);
            report.processes_throughput_ratio = Some(throughput);
            report.processes_p99_ratio_half_load = Some(p99);
        }
        report.floor_alongside.insert(
            name.into(),
            FloorAlongside {
                full: alongside.0,
                half: alongside.1,
            },
        );
        report.peak_rss_mib.extend(part.rss);
        let cost = Cost::mean(&part.threadline.costs);
        report.cpu_us_per_message.insert(name.into(), cost.cpu);
        report
            .aof_bytes_per_message
            .insert(name.into(), cost.aof_bytes);
        report.traffic_per_message.insert(name.into(), cost.traffic);
        floor.full.extend(part.floor.full);
        floor.half.extend(part.floor.half);
        floor.costs.extend(part.floor.costs);
    }
    report.floor_full = Summary::of(&floor.full);
    report.floor_half = Summary::of(&floor.half);
    let cost = Cost::mean(&floor.costs);
    report.cpu_us_per_message.insert("floor".into(), cost.cpu);
    report
        .aof_bytes_per_message
        .insert("floor".into(), cost.aof_bytes);
    report
        .traffic_per_message
        .insert("floor".into(), cost.traffic);

    // 4 and 5. Routing latency as bindings grow; Redis bytes per binding.
    let phase = Phase::start(
        "bench",
        format!("routing with {:?} bindings", config.state_sizes),
    );
    let state = measure_state(&nats, &js, &config).await;
    phase.done();
    report.routing = RoutingReport::of(state, &config);
    report
}

/// Routing latency as bindings grow, and Redis bytes per binding: the whole report of
/// `--only routing`, and part of the full one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoutingReport {
    /// bindings → routing p50/p99 (ms) at light load: the medians of `state_summaries`.
    pub state_latency: BTreeMap<usize, (f64, f64)>,
    /// bindings → routing figures at light load, median, min and max over the rounds.
    pub state_summaries: BTreeMap<usize, Summary>,
    /// bindings → each round's figures, in the order run: how far one round's p99 strays
    /// from the next, which the median of the rounds is there to absorb.
    pub state_rounds: BTreeMap<usize, Vec<Figures>>,
    /// p99 at the largest state size / p99 at the smallest (target ≤ 1.2).
    pub state_p99_ratio: f64,
    /// The same for the p50: what state costs a typical completion. The p99 of a light-load
    /// run is set by the few stalls that happen to fall in it, whatever the state.
    pub state_p50_ratio: f64,
    /// Redis `used_memory` delta per active binding (with its session; target ≤ 512).
    pub redis_bytes_per_binding: f64,
    /// bindings → Redis's own time over the rounds, per command and in event-loop stalls:
    /// whether a bigger state costs Redis time, apart from what the disk and the machine do
    /// to the end-to-end tail.
    pub redis_time: BTreeMap<usize, RedisTime>,
}

impl RoutingReport {
    fn of(state: StateParts, config: &BenchConfig) -> Self {
        let mut report = RoutingReport {
            redis_bytes_per_binding: state.bytes_per_binding,
            redis_time: state.redis_time,
            ..RoutingReport::default()
        };
        for (size, runs) in state.runs {
            let f = Summary::of(&runs);
            report
                .state_latency
                .insert(size, (f.p50_ms.median, f.p99_ms.median));
            report.state_summaries.insert(size, f);
            report.state_rounds.insert(size, runs);
        }
        let ratio = |pick: fn(&(f64, f64)) -> f64| {
            let at = |n: Option<&usize>| {
                n.and_then(|n| report.state_latency.get(n))
                    .map(pick)
                    .unwrap_or(0.0)
            };
            at(config.state_sizes.last()) / at(config.state_sizes.first()).max(1e-9)
        };
        report.state_p99_ratio = ratio(|v| v.1);
        report.state_p50_ratio = ratio(|v| v.0);
        report
    }

    /// The routing figures as lines of the printed table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (n, f) in &self.state_summaries {
            out += &format!(
                "routing with {n} bindings: p50 {} ms, p99 {} ms\n",
                f.p50_ms, f.p99_ms
            );
        }
        out += &format!(
            "p99 largest/smallest state: {:.2}  (target ≤ 1.2); p50: {:.2}\n",
            self.state_p99_ratio, self.state_p50_ratio
        );
        for (n, time) in &self.redis_time {
            let each: Vec<String> = time
                .commands
                .iter()
                .map(|(c, l)| format!("{c} {:.0}/{:.0}/{:.0}", l.p50_us, l.p99_us, l.p999_us))
                .collect();
            out += &format!(
                "Redis's own time per command with {n} bindings, µs p50/p99/p99.9: {}\n",
                each.join(", ")
            );
            let stalls: Vec<String> = time
                .stalls
                .iter()
                .map(|(event, s)| format!("{event} in {} s, longest {} ms", s.seconds, s.max_ms))
                .collect();
            out += &format!(
                "Redis event-loop stalls of ≥ 1 ms with {n} bindings: {}\n",
                if stalls.is_empty() {
                    "none".to_owned()
                } else {
                    stalls.join(", ")
                }
            );
        }
        out += &format!(
            "Redis bytes per active binding: {:.0}  (target ≤ 512)\n",
            self.redis_bytes_per_binding
        );
        out
    }
}

/// Routing latency and Redis bytes per binding alone (`--only routing`): the state part of
/// [`run`], on servers of its own.
pub async fn routing(config: BenchConfig) -> RoutingReport {
    let phase = Phase::start("bench", "starting nats-server");
    let nats = NatsServer::start().await;
    phase.done();
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let state = measure_state(&nats, &js, &config).await;
    RoutingReport::of(state, &config)
}

/// The state-scaling part's runs and the Redis memory figure.
struct StateParts {
    /// Bindings → that size's light-load runs.
    runs: BTreeMap<usize, Vec<Figures>>,
    /// `used_memory` delta per binding over the largest size's last preload step (fixed
    /// overheads amortised).
    bytes_per_binding: f64,
    /// Bindings → where Redis's own time went over that size's rounds.
    redis_time: BTreeMap<usize, RedisTime>,
}

/// Where one Redis server's own time went over the routing rounds: per command, and its
/// event loop's stalls. Tells a cost of the state's size (a slower command, an expire cycle)
/// from the disk's and the machine's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisTime {
    /// Command → its latency percentiles.
    pub commands: BTreeMap<String, CommandLatency>,
    /// Event (`aof-fsync-always`, `command`, `expire-cycle`, …) → the stalls of 1 ms or
    /// more Redis's latency monitor saw in it.
    pub stalls: BTreeMap<String, Stalls>,
}

/// One kind of event-loop stall, as Redis's latency monitor keeps it: the longest per
/// second.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stalls {
    /// Seconds with a stall of 1 ms or more.
    pub seconds: usize,
    /// The longest (ms).
    pub max_ms: u64,
}

impl RedisTime {
    /// Starts counting afresh: command statistics reset, and the latency monitor on at 1 ms
    /// (it is off by default).
    async fn reset(url: &str) {
        let mut conn = redis_connection(url).await;
        redis::pipe()
            .cmd("CONFIG")
            .arg("RESETSTAT")
            .cmd("CONFIG")
            .arg("SET")
            .arg("latency-monitor-threshold")
            .arg(1)
            .cmd("LATENCY")
            .arg("RESET")
            .query_async::<()>(&mut conn)
            .await
            .expect("reset Redis's statistics");
    }

    async fn read(url: &str) -> RedisTime {
        let commands = command_latencies(&redis_info_at(url, "latencystats").await);
        let mut conn = redis_connection(url).await;
        // [event, when, latest ms, longest ms] per event; then each event's history, one
        // [when, ms] per second with a stall (at most 160).
        let latest: Vec<(String, u64, u64, u64)> = redis::cmd("LATENCY")
            .arg("LATEST")
            .query_async(&mut conn)
            .await
            .expect("LATENCY LATEST");
        let mut stalls = BTreeMap::new();
        for (event, _, _, max_ms) in latest {
            let history: Vec<(u64, u64)> = redis::cmd("LATENCY")
                .arg("HISTORY")
                .arg(&event)
                .query_async(&mut conn)
                .await
                .expect("LATENCY HISTORY");
            let seconds = history.len();
            stalls.insert(event, Stalls { seconds, max_ms });
        }
        RedisTime { commands, stalls }
    }
}

/// Redis's own time for one command (µs, from `INFO latencystats`): from reading the
/// command to its reply being queued, so without the network, the fsync wait and the
/// queueing in front of it. What the state's size can cost Redis per call.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CommandLatency {
    /// Median (µs).
    pub p50_us: f64,
    /// 99th percentile (µs).
    pub p99_us: f64,
    /// 99.9th percentile (µs).
    pub p999_us: f64,
}

/// Command → its latency percentiles, from `INFO latencystats` (Redis 7's default
/// `latency-tracking`), leaving out the bench's own `INFO`, `CONFIG`, `SCRIPT` and
/// `LATENCY` calls.
fn command_latencies(info: &str) -> BTreeMap<String, CommandLatency> {
    info.lines()
        .filter_map(|line| {
            let (command, values) = line
                .strip_prefix("latency_percentiles_usec_")?
                .split_once(':')?;
            if ["info", "config", "script", "latency"]
                .iter()
                .any(|own| command.split('|').next() == Some(own))
            {
                return None;
            }
            let value = |name: &str| {
                values
                    .split(',')
                    .find_map(|v| v.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            };
            Some((
                command.to_owned(),
                CommandLatency {
                    p50_us: value("p50")?,
                    p99_us: value("p99")?,
                    p999_us: value("p99.9")?,
                },
            ))
        })
        .collect()
}

/// Routing latency with each state size preloaded, each size on a Redis server of its own
/// and a `run all` deployment of its own, measured in interleaved rounds (10k, 100k, 1M,
/// then 1M, 100k, 10k, …) as the floor is interleaved with the layouts: measured one after
/// the other, the sizes met the machine's drift over a minute as a difference between
/// them. (State only grows, so one Redis cannot go back to a smaller size between rounds.)
async fn measure_state(
    nats: &NatsServer,
    js: &jetstream::Context,
    config: &BenchConfig,
) -> StateParts {
    let mut parts = Vec::new();
    let mut bytes_per_binding = 0.0;
    for (i, &size) in config.state_sizes.iter().enumerate() {
        let phase = Phase::start(
            "bench",
            format!("routing: preloading {size} bindings into a Redis of their own"),
        );
        let redis = RedisServer::start().await;
        let prefix = format!("state{i}");
        let store_config = Config {
            redis_url: redis.url(),
            subject_prefix: prefix.clone(),
            ..Config::default()
        };
        let conn = redis::Client::open(redis.url())
            .expect("redis")
            .get_connection_manager()
            .await
            .expect("redis");
        let store = threadline::store::Store::new(conn, &store_config);
        // In two steps through the next smaller size, so the figure is the last step's,
        // as when one Redis grew through every size.
        let step = if i > 0 { config.state_sizes[i - 1] } else { 0 };
        preload(&store, 0, step).await;
        let before = used_memory(&redis).await;
        preload(&store, step, size).await;
        let after = used_memory(&redis).await;
        if size > step {
            bytes_per_binding = (after - before) / (size - step) as f64;
        }
        // A bulk load grows the AOF enough to trigger a background rewrite (a fork of the
        // whole dataset): that is the load's cost, not routing's, so measure after it.
        phase.done();
        let phase = Phase::start(
            "bench",
            format!("routing: {size} bindings: AOF rewrite, `run all`, sessions, warm-up"),
        );
        aof_settled(&redis).await;
        let mut d = deploy(nats, &redis, Layout::AllInOne, &prefix, config.partitions).await;
        let keys = sessions(js, &mut d, config.sessions).await;
        completions(
            js,
            &d,
            &keys,
            &format!("{prefix}warm"),
            config.warmup.min(500),
            None,
        )
        .await;
        phase.done();
        parts.push((size, redis, d, keys));
    }
    // Redis's own figures from here on cover the rounds only, not the preload.
    for (_, redis, _, _) in &parts {
        RedisTime::reset(&redis.url()).await;
    }
    let mut runs: BTreeMap<usize, Vec<Figures>> = BTreeMap::new();
    for round in 0..config.state_runs {
        let phase = Phase::start(
            "bench",
            format!(
                "routing: round {} of {}, {} completions per size at {}/s",
                round + 1,
                config.state_runs,
                config.state_messages,
                config.state_rate
            ),
        );
        let mut order: Vec<usize> = (0..parts.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (size, _, d, keys) = &parts[i];
            let f = completions(
                js,
                d,
                keys,
                &format!("state{i}r{round}"),
                config.state_messages,
                Some(config.state_rate),
            )
            .await;
            runs.entry(*size).or_default().push(f);
        }
        phase.done();
    }
    let mut redis_time = BTreeMap::new();
    for (size, redis, ..) in &parts {
        redis_time.insert(*size, RedisTime::read(&redis.url()).await);
    }
    for (_, redis, d, _) in parts {
        let subjects = d.subjects();
        d.stop().await;
        delete_streams(js, &subjects).await;
        drop(redis);
    }
    StateParts {
        runs,
        bytes_per_binding,
        redis_time,
    }
}

/// Redis memory of the layout, without the rest of the benchmark (`--only memory`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryReport {
    /// Bindings (each with its session) preloaded through the benchmark's `preload` path.
    pub bindings: usize,
    /// `used_memory` delta per binding over the whole preload.
    pub bytes_per_binding: f64,
    /// Delta per binding over the second half only (fixed overheads amortised), as the
    /// full benchmark measures its last increment.
    pub bytes_per_binding_last_half: f64,
    /// Key pattern → (encoding of a sample key, `MEMORY USAGE` summed over the keys that
    /// pattern matches / bindings).
    pub structures: BTreeMap<String, (String, f64)>,
}

impl MemoryReport {
    /// The memory figures and a Markdown table per key pattern.
    pub fn table(&self) -> String {
        let mut out = format!(
            "Redis bytes per active binding ({} bindings): {:.0} overall, {:.0} over the last half  (target ≤ 512)\n\n| keys | encoding | MEMORY USAGE per binding |\n| --- | --- | --- |\n",
            self.bindings, self.bytes_per_binding, self.bytes_per_binding_last_half
        );
        for (pattern, (encoding, bytes)) in &self.structures {
            out += &format!("| `{pattern}` | {encoding} | {bytes:.0} |\n");
        }
        out
    }
}

/// Preloads `bindings` bindings into a fresh Redis (the harness's settings) and reports
/// what they cost. Light on CPU: no NATS, no workers.
pub async fn memory(bindings: usize) -> MemoryReport {
    let redis = RedisServer::start().await;
    let config = Config {
        redis_url: redis.url(),
        subject_prefix: "state".into(),
        ..Config::default()
    };
    let conn = redis::Client::open(redis.url())
        .expect("redis")
        .get_connection_manager()
        .await
        .expect("redis");
    let store = threadline::store::Store::new(conn.clone(), &config);
    let half = bindings / 2;
    let phase = Phase::start("bench", format!("memory: preloading {bindings} bindings"));
    let start = used_memory(&redis).await;
    preload(&store, 0, half).await;
    let middle = used_memory(&redis).await;
    preload(&store, half, bindings).await;
    let end = used_memory(&redis).await;
    phase.done();
    let mut report = MemoryReport {
        bindings,
        bytes_per_binding: (end - start) / bindings.max(1) as f64,
        bytes_per_binding_last_half: (end - middle) / (bindings - half).max(1) as f64,
        structures: BTreeMap::new(),
    };
    let mut conn = conn;
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for key in keys {
        // `state:{ss:17}` → `state:{ss:*}`; `state:{dir}:5` → `state:{dir}:*`.
        let body = key.strip_suffix('}').unwrap_or(&key);
        let digits = body.len() - body.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let pattern = if digits > 0 {
            format!("{}*{}", &body[..body.len() - digits], &key[body.len()..])
        } else {
            key.clone()
        };
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("memory usage");
        let entry = report.structures.entry(pattern).or_default();
        if entry.0.is_empty() {
            entry.0 = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("object encoding");
        }
        entry.1 += usage.unwrap_or(0) as f64 / bindings.max(1) as f64;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use threadline::deliver::adapter::{Adapter, PostRequest};
    use threadline::deliver::credentials::Credentials;
    use threadline::deliver::webhook::Webhook;

    /// `value` with every leaf replaced by its JSON type: what a receiver parses, not the
    /// values.
    fn shape(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, field)| (name.clone(), shape(field)))
                    .collect(),
            ),
            Value::Null => "null".into(),
            Value::Bool(_) => "bool".into(),
            Value::Number(_) => "number".into(),
            Value::String(_) => "string".into(),
            Value::Array(items) => items.iter().map(shape).collect(),
        }
    }

    /// The floor's platform call stands for Threadline's: the fake must receive the same
    /// body fields, nested alike, and an idempotency key of the same length, or the floor's
    /// posts cost the shared machine less than Threadline's do (docs/benchmarks.md).
    #[tokio::test]
    async fn the_floor_posts_the_request_the_webhook_deliverer_makes() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = FakeWebhook::start().await;
        let hook = bench_webhook(fake.url("bench"));
        let mut config = Config::default();
        config.webhooks.insert("bench".into(), hook.clone());
        let credentials = Credentials::load("webhook:bench", Arc::new(config)).expect("token");
        let webhook = Webhook::new("bench", hook, credentials, Duration::from_secs(10));
        let conversation = ConversationRef {
            channel: "webhook:bench".into(),
            account_id: "bench".into(),
            conversation_id: "conversation-7".into(),
            parent_conversation_id: None,
        };
        let (event_id, delivery_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let key = threadline::ids::part_key(&delivery_id.to_string(), 0);
        webhook
            .post(PostRequest {
                conversation: &conversation,
                text: "full0 7",
                html: None,
                format: Default::default(),
                mentions: &[],
                reply_to: None,
                persona: None,
                idempotency_key: &key,
                event_id: &event_id.to_string(),
                delivery_id: &delivery_id.to_string(),
                part: 0,
                parts: 1,
                session_key: Some("agent:bench:subagent:3f0c2a4e-0000-4000-8000-000000000007"),
                bot_only: false,
            })
            .await
            .expect("the deliverer's post");
        let floor = FloorPost::request(&reqwest::Client::new(), &fake.url("floor"), "full0:7", "7")
            .send()
            .await
            .expect("the floor's post");
        assert!(floor.status().is_success(), "{}", floor.status());

        let posts = fake.deliveries();
        assert_eq!(posts.len(), 2, "{posts:?}");
        let (threadline, floor) = (&posts[0], &posts[1]);
        assert_eq!(shape(&floor.body), shape(&threadline.body));
        assert_eq!(
            floor.body["text"], "floor 7",
            "the bench finds floor posts by text"
        );
        let key_len = |post: &threadline_tests::fakes::webhook::WebhookDelivery| {
            post.idempotency_key.as_deref().map(str::len)
        };
        assert_eq!(key_len(floor), key_len(threadline));
        assert!(key_len(floor).is_some());
        // The deliverer's trace header is written per call in the pipeline (the runtime
        // tests check it reaches the platform); the floor's must be one the fake accepts.
        assert!(fake
            .traceparents_seen()
            .iter()
            .any(|(path, value)| path == "/hook/floor" && value.len() == 55));
    }

    /// Against a real Redis: a script that keeps Redis busy for 5 ms shows up as a stall of
    /// its event loop and in its command latencies, and what the reset itself ran does not.
    #[tokio::test]
    async fn redis_time_sees_a_busy_script_as_a_stall_and_in_its_latencies() {
        let redis = RedisServer::start().await;
        RedisTime::reset(&redis.url()).await;
        let mut conn = redis_connection(&redis.url()).await;
        let busy = "local t = redis.call('TIME') \
            local start = t[1] * 1000000 + t[2] \
            repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= 5000 \
            return 1";
        let _: i64 = redis::cmd("EVAL")
            .arg(busy)
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("busy script");
        let time = RedisTime::read(&redis.url()).await;
        let stall = time.stalls.get("command").copied().unwrap_or_default();
        assert!(stall.seconds == 1 && stall.max_ms >= 5, "{:?}", time.stalls);
        let eval = time.commands.get("eval").copied().unwrap_or_default();
        assert!(eval.p50_us >= 5_000.0, "{:?}", time.commands);
        assert!(
            !time
                .commands
                .keys()
                .any(|c| c.starts_with("config") || c.starts_with("latency")),
            "{:?}",
            time.commands
        );
    }

    /// Redis 7.0.15's `INFO latencystats` lines, as the routing part reads them.
    #[test]
    fn command_latencies_are_read_from_latencystats_without_the_bench_s_own_calls() {
        let info = "# Latencystats\r\n\
            latency_percentiles_usec_hmget:p50=14.015,p99=48.127,p99.9=76.287\r\n\
            latency_percentiles_usec_info:p50=23.039,p99=27.007,p99.9=27.007\r\n\
            latency_percentiles_usec_config|resetstat:p50=71.167,p99=71.167,p99.9=71.167\r\n\
            latency_percentiles_usec_script|load:p50=111.103,p99=111.103,p99.9=111.103\r\n\
            latency_percentiles_usec_latency|reset:p50=1.003,p99=1.003,p99.9=1.003\r\n\
            latency_percentiles_usec_set:p50=7.007,p99=41.215,p99.9=78.335\r\n";
        let read = command_latencies(info);
        assert_eq!(read.keys().collect::<Vec<_>>(), ["hmget", "set"]);
        let hmget = read["hmget"];
        assert_eq!(
            (hmget.p50_us, hmget.p99_us, hmget.p999_us),
            (14.015, 48.127, 76.287)
        );
        assert_eq!(read["set"].p999_us, 78.335);
    }
}
