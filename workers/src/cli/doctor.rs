//! `threadline doctor`: connects to NATS and Redis and checks what Threadline relies on —
//! server versions, JetStream, every stream and durable consumer against the configuration
//! the workers create (`io::nats`, the one definition), backlogs and redeliveries,
//! and Redis persistence (AOF with `appendfsync always`, which the README requires). Each
//! problem is one line with a fix; the exit code is non-zero when there is an error.

use super::{connect_nats, connect_redis, print_json, Output};
use crate::config::redact_url;
use crate::config::Config;
use crate::io::nats::{expected_consumers, jetstream, ConsumerSpec, StreamKind};
use async_nats::jetstream::consumer;
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use threadline_schemas::Subjects;

/// `<field> is <found>, expected <wanted>` for each named field whose `Debug` differs.
macro_rules! differences {
    ($got:expr, $wanted:expr; $($field:ident),+ $(,)?) => {{
        let mut found = Vec::<String>::new();
        $(
            let (is, expected) = (format!("{:?}", $got.$field), format!("{:?}", $wanted.$field));
            if is != expected {
                found.push(format!("{} is {is}, expected {expected}", stringify!($field)));
            }
        )+
        found
    }};
}

/// Oldest server versions Threadline is tested with (docs/design.md §4).
const MIN_NATS: (u32, u32, u32) = (2, 9, 0);
const MIN_REDIS: (u32, u32, u32) = (7, 0, 0);

/// `threadline doctor`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How to print the report.
    #[command(flatten)]
    pub output: Output,
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Threadline cannot work correctly, or can lose data: exit code 1.
    Error,
    /// Worth a look (a backlog, redeliveries); does not fail the check.
    Warning,
}

/// One thing wrong, and how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

/// What NATS answered.
#[derive(Debug, Default, Serialize)]
pub struct NatsReport {
    /// The configured URL, user info redacted.
    pub url: String,
    /// A connection was made.
    pub connected: bool,
    /// The server's version, from its INFO.
    pub server_version: Option<String>,
    /// The server's name, from its INFO.
    pub server_name: Option<String>,
    /// JetStream answered on this account.
    pub jetstream: bool,
}

/// What Redis answered.
#[derive(Debug, Default, Serialize)]
pub struct RedisReport {
    /// The configured URL, user info redacted.
    pub url: String,
    /// A connection was made.
    pub connected: bool,
    /// The server's version (`INFO server`).
    pub version: Option<String>,
    /// Whether the append-only file is on (`aof_enabled`).
    pub aof_enabled: Option<bool>,
    /// The AOF fsync policy (`appendfsync`).
    pub appendfsync: Option<String>,
    /// The listpack limits the compact layout relies on (`store::layout::REDIS_SETTINGS`).
    pub listpack: std::collections::BTreeMap<String, Option<u64>>,
    /// Keys of the layout before buckets found on this server (counted up to 100).
    pub old_layout_keys: Option<u64>,
}

/// One stream Threadline needs.
#[derive(Debug, Serialize)]
pub struct StreamReport {
    /// The stream's name.
    pub name: String,
    /// It exists on the server.
    pub present: bool,
    /// Messages stored in it now.
    pub messages: Option<u64>,
    /// Differences from the expected configuration (empty when it matches).
    pub mismatches: Vec<String>,
}

/// One durable consumer.
#[derive(Debug, Serialize)]
pub struct ConsumerReport {
    /// The stream it reads.
    pub stream: String,
    /// Its durable name.
    pub durable: String,
    /// Part of the topology this configuration expects (else found on the server only).
    pub expected: bool,
    /// It exists on the server.
    pub present: bool,
    /// Differences from the expected configuration (empty when it matches).
    pub mismatches: Vec<String>,
    /// Messages not yet delivered to any worker.
    pub num_pending: Option<u64>,
    /// Delivered, not yet acknowledged.
    pub num_ack_pending: Option<usize>,
    /// Delivered more than once and not yet acknowledged.
    pub num_redelivered: Option<usize>,
    /// Pull requests waiting: workers listening right now.
    pub num_waiting: Option<usize>,
}

/// Who owns a channel's delivery lanes (`runtime::lanes`).
#[derive(Debug, Serialize)]
pub struct LanesReport {
    /// The channel (`discord`, `webhook:<name>`).
    pub channel: String,
    /// How many lanes the deployment has.
    pub lanes: u32,
    /// Lane → the deliverer instance (`<pid>-<id>`) holding a live lease on it.
    pub owners: std::collections::BTreeMap<u32, String>,
}

/// Everything `threadline doctor` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// No problem of severity error.
    pub ok: bool,
    /// NATS and JetStream.
    pub nats: NatsReport,
    /// Redis.
    pub redis: RedisReport,
    /// The streams Threadline needs.
    pub streams: Vec<StreamReport>,
    /// The durable consumers, expected and found.
    pub consumers: Vec<ConsumerReport>,
    /// Who owns each channel's delivery lanes.
    pub lanes: Vec<LanesReport>,
    /// Everything wrong, errors first.
    pub problems: Vec<Problem>,
}

impl Report {
    fn error(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Error,
            what: what.into(),
            fix: fix.into(),
        });
    }
    fn warning(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            what: what.into(),
            fix: fix.into(),
        });
    }
}

/// Runs `threadline doctor`; returns the process exit code (1 on an error).
pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let report = check(config).await;
    if args.output.json {
        print_json(&report)?;
    } else {
        print_text(&report);
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// Runs every check; never fails, every failure is a problem in the report.
pub async fn check(config: &Config) -> Report {
    // Checked against the lanes the workers use: an unset count is the deployment's.
    let resolved;
    let config = match config.delivery_partitions {
        Some(_) => config,
        None => {
            resolved = Config {
                delivery_partitions: recorded_lanes(config).await,
                ..config.clone()
            };
            &resolved
        }
    };
    let mut report = Report::default();
    check_nats(config, &mut report).await;
    if config.redis_cluster {
        // Persistence is per node: check each seed as a server of its own, naming it.
        for seed in config
            .redis_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let mut node = config.clone();
            node.redis_url = seed.to_owned();
            node.redis_cluster = false;
            let before = report.problems.len();
            check_redis(&node, &mut report).await;
            for problem in &mut report.problems[before..] {
                problem.what = format!("{} [node {}]", problem.what, redact_url(seed));
            }
        }
    } else {
        check_redis(config, &mut report).await;
    }
    if report.redis.connected {
        check_lanes(config, &mut report).await;
    }
    report.ok = !report
        .problems
        .iter()
        .any(|p| p.severity == Severity::Error);
    report
}

fn version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

async fn check_nats(config: &Config, report: &mut Report) {
    report.nats.url = redact_url(&config.nats_url);
    let client = match tokio::time::timeout(Duration::from_secs(10), connect_nats(config)).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            report.error(
                format!("NATS: {error:#}"),
                "start nats-server with JetStream, or set THREADLINE_NATS_URL / nats_url",
            );
            return;
        }
        Err(_) => {
            report.error(
                format!("NATS: no answer from {} within 10 s", report.nats.url),
                "check the address and that nats-server is running",
            );
            return;
        }
    };
    report.nats.connected = true;
    let info = client.server_info();
    report.nats.server_version = Some(info.version.clone());
    report.nats.server_name = Some(info.server_name.clone());
    report.nats.jetstream = info.jetstream;
    match version(&info.version) {
        Some(v) if v >= MIN_NATS => {}
        Some(_) | None => report.error(
            format!("NATS: nats-server {} is older than 2.9", info.version),
            "upgrade nats-server to 2.9 or later",
        ),
    }
    if !info.jetstream {
        report.error(
            "NATS: JetStream is not enabled on this server",
            "start nats-server with -js (or a `jetstream {}` block in its configuration)",
        );
        return;
    }
    let subjects = Subjects::new(config.subject_prefix.clone());
    let js = jetstream(&client);
    let mut found: BTreeMap<String, BTreeMap<String, consumer::Info>> = BTreeMap::new();
    for kind in StreamKind::ALL {
        let wanted = kind.config(&subjects, config);
        let mut stream = match js.get_stream(&wanted.name).await {
            Ok(stream) => stream,
            Err(error) => {
                report.streams.push(StreamReport {
                    name: wanted.name.clone(),
                    present: false,
                    messages: None,
                    mismatches: Vec::new(),
                });
                report.error(
                    format!("stream {} is missing ({error})", wanted.name),
                    "start any Threadline worker once: each creates the streams at start-up",
                );
                continue;
            }
        };
        let info = match stream.info().await {
            Ok(info) => info.clone(),
            Err(error) => {
                report.error(
                    format!("stream {}: cannot read its info ({error})", wanted.name),
                    "check the NATS server's JetStream health (nats server report jetstream)",
                );
                continue;
            }
        };
        let got = &info.config;
        let mismatches = differences!(got, wanted; subjects, retention, storage, max_age,
            duplicate_window, discard, num_replicas);
        for m in &mismatches {
            let fix = if m.starts_with("subjects") {
                "another deployment may use this subject prefix: choose another THREADLINE_SUBJECT_PREFIX, or delete the stream"
            } else if m.starts_with("max_age") || m.starts_with("duplicate_window") {
                "restart a worker: it updates retention to the configured values (or align stream_max_age_ms across processes)"
            } else {
                "this cannot be changed in place: drain the stream, delete it (nats stream rm), and restart a worker to recreate it"
            };
            report.error(format!("stream {}: {m}", wanted.name), fix);
        }
        report.streams.push(StreamReport {
            name: wanted.name.clone(),
            present: true,
            messages: Some(info.state.messages),
            mismatches,
        });
        if matches!(kind, StreamKind::Inbound | StreamKind::Deliver) {
            let mut consumers = BTreeMap::new();
            let mut list = stream.consumers();
            while let Some(next) = list.next().await {
                match next {
                    Ok(info) => {
                        consumers.insert(info.name.clone(), info);
                    }
                    Err(error) => {
                        report.error(
                            format!(
                                "stream {}: cannot list its consumers ({error})",
                                wanted.name
                            ),
                            "check the NATS server's JetStream health",
                        );
                        break;
                    }
                }
            }
            found.insert(wanted.name.clone(), consumers);
        }
    }
    let expected = expected_consumers(&subjects, config);
    if config.channels().is_empty() {
        report.warning(
            "no channel is configured here, so delivery lanes are checked only as found",
            "run doctor with the deployment's configuration file (tokens are not needed: set the channel sections, or webhooks)",
        );
    }
    for spec in &expected {
        let stream = spec.stream.name(&subjects);
        let Some(consumers) = found.get_mut(&stream) else {
            continue; // the stream itself is missing: reported above
        };
        let info = consumers.remove(&spec.durable);
        check_consumer(config, spec, &stream, info, report);
    }
    // Durables on the server that this configuration does not run: a channel configured
    // elsewhere, or lanes beyond `delivery_partitions`. Only a backlog there is a problem.
    for (stream, consumers) in found {
        for (name, info) in consumers {
            if info.config.durable_name.is_none() {
                continue;
            }
            let pending = info.num_pending + info.num_ack_pending as u64;
            if pending > 0 {
                report.warning(
                    format!(
                        "consumer {name} on {stream} is not part of this configuration and holds {pending} undelivered message(s)"
                    ),
                    "run the worker that owns it (a channel configured elsewhere?), or check delivery_partitions is the same in every process",
                );
            }
            report.consumers.push(ConsumerReport {
                stream: stream.clone(),
                durable: name,
                expected: false,
                present: true,
                mismatches: Vec::new(),
                num_pending: Some(info.num_pending),
                num_ack_pending: Some(info.num_ack_pending),
                num_redelivered: Some(info.num_redelivered),
                num_waiting: Some(info.num_waiting),
            });
        }
    }
}

fn check_consumer(
    config: &Config,
    spec: &ConsumerSpec,
    stream: &str,
    info: Option<consumer::Info>,
    report: &mut Report,
) {
    let durable = &spec.durable;
    let worker = worker_of(durable);
    let Some(info) = info else {
        report.error(
            format!("consumer {durable} on {stream} is missing: no {worker} has started, or it was deleted"),
            format!("start (or restart) `threadline run {worker}`: workers create their consumers at start-up"),
        );
        report.consumers.push(ConsumerReport {
            stream: stream.to_owned(),
            durable: durable.clone(),
            expected: true,
            present: false,
            mismatches: Vec::new(),
            num_pending: None,
            num_ack_pending: None,
            num_redelivered: None,
            num_waiting: None,
        });
        return;
    };
    let wanted = spec.config(config);
    let got = &info.config;
    let mut mismatches = differences!(got, wanted; filter_subject, ack_policy, ack_wait,
        max_deliver, max_ack_pending, deliver_policy);
    if got.deliver_subject.is_some() {
        mismatches.push("it is a push consumer, expected a pull consumer".into());
    }
    for m in &mismatches {
        let fix = if m.starts_with("ack_wait") || m.starts_with("max_ack_pending") {
            format!("restart `threadline run {worker}` (it updates these), or make ack_wait_ms / concurrency / lane_batch the same in every process")
        } else {
            format!("delete it (nats consumer rm {stream} {durable}) and restart `threadline run {worker}`")
        };
        report.error(format!("consumer {durable} on {stream}: {m}"), fix);
    }
    if info.num_pending > 0 && info.num_waiting == 0 && info.num_ack_pending == 0 {
        report.warning(
            format!(
                "consumer {durable} on {stream} has {} message(s) waiting and no worker pulling",
                info.num_pending
            ),
            format!("start `threadline run {worker}`"),
        );
    }
    if info.num_redelivered > 0 {
        report.warning(
            format!(
                "consumer {durable} on {stream}: {} message(s) are being redelivered",
                info.num_redelivered
            ),
            "handlers are retrying (platform or Redis errors) or workers crashed mid-message: see the worker logs",
        );
    }
    report.consumers.push(ConsumerReport {
        stream: stream.to_owned(),
        durable: durable.clone(),
        expected: true,
        present: true,
        mismatches,
        num_pending: Some(info.num_pending),
        num_ack_pending: Some(info.num_ack_pending),
        num_redelivered: Some(info.num_redelivered),
        num_waiting: Some(info.num_waiting),
    });
}

/// The `threadline run …` worker that owns a durable, for fix hints.
fn worker_of(durable: &str) -> String {
    if durable.starts_with("binder") {
        "binder".into()
    } else if durable.starts_with("router") {
        "router".into()
    } else {
        let channel = durable
            .strip_prefix("deliver-")
            .and_then(|rest| rest.rsplit_once("-p").map(|(c, _)| c))
            .unwrap_or(durable);
        // `webhook:<name>` had its `:` replaced by `_` in the durable name.
        let channel = match channel.strip_prefix("webhook_") {
            Some(name) => format!("webhook:{name}"),
            None => channel.to_owned(),
        };
        format!("deliver {channel}")
    }
}

/// `field:value` lines of an `INFO` section.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

async fn check_redis(config: &Config, report: &mut Report) {
    report.redis.url = redact_url(&config.redis_url);
    let mut conn = match tokio::time::timeout(Duration::from_secs(10), connect_redis(config)).await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            report.error(
                format!("Redis: {error:#}"),
                "start redis-server, or set THREADLINE_REDIS_URL / redis_url",
            );
            return;
        }
        Err(_) => {
            report.error(
                format!("Redis: no answer from {} within 10 s", report.redis.url),
                "check the address and that redis-server is running",
            );
            return;
        }
    };
    report.redis.connected = true;
    let server: Result<String, _> = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await;
    match server {
        Ok(server) => {
            let v = info_field(&server, "redis_version");
            match v.as_deref().and_then(version) {
                Some(parsed) if parsed >= MIN_REDIS => {}
                Some(_) | None => report.error(
                    format!(
                        "Redis: version {} is older than 7",
                        v.as_deref().unwrap_or("unknown")
                    ),
                    "upgrade Redis to 7 or later",
                ),
            }
            report.redis.version = v;
        }
        Err(error) => {
            report.error(
                format!("Redis: INFO server failed ({error})"),
                "check the Redis user may run INFO",
            );
            return;
        }
    }
    let persistence: Result<String, _> = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut conn)
        .await;
    match persistence {
        Ok(p) => {
            let enabled = info_field(&p, "aof_enabled").map(|v| v == "1");
            report.redis.aof_enabled = enabled;
            if enabled != Some(true) {
                report.error(
                    "Redis: AOF persistence is off (appendonly no): sessions, bindings and dedup records are lost when Redis restarts",
                    "set `appendonly yes` in redis.conf (at once: redis-cli CONFIG SET appendonly yes)",
                );
            }
            if info_field(&p, "aof_last_write_status").is_some_and(|s| s != "ok") {
                report.error(
                    "Redis: the last AOF write failed",
                    "check the disk holding Redis' appendonly directory (space, permissions)",
                );
            }
        }
        Err(error) => report.error(
            format!("Redis: INFO persistence failed ({error})"),
            "check the Redis user may run INFO",
        ),
    }
    let fsync: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(&mut conn)
        .await;
    match fsync {
        Ok(pair) => {
            let value = pair.get(1).cloned();
            if value.as_deref() != Some("always") && report.redis.aof_enabled == Some(true) {
                report.error(
                    format!(
                        "Redis: appendfsync is {}, so acknowledged writes can be lost when Redis is killed",
                        value.as_deref().unwrap_or("unknown")
                    ),
                    "set `appendfsync always` in redis.conf (at once: redis-cli CONFIG SET appendfsync always)",
                );
            }
            report.redis.appendfsync = value;
        }
        Err(error) => report.warning(
            format!("Redis: cannot read appendfsync ({error}); CONFIG may be disabled here"),
            "check by hand that redis.conf has `appendfsync always`",
        ),
    }
    check_listpack(&mut conn, report).await;
    check_old_layout(config, &mut conn, report).await;
}

/// The deployment's recorded lane count; `None` when no worker has started, or Redis cannot
/// be read (the Redis checks report why).
async fn recorded_lanes(config: &Config) -> Option<u32> {
    let store = tokio::time::timeout(Duration::from_secs(10), super::connect_store(config))
        .await
        .ok()?
        .ok()?;
    store.recorded_lane_count().await.ok().flatten()
}

/// Lane ownership per configured channel: a lane without a live owner is pulled by nobody.
async fn check_lanes(config: &Config, report: &mut Report) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        crate::io::redis::connect_store(config, &shutdown),
    )
    .await;
    let Ok(Ok(conn)) = connected else {
        return; // reported by the Redis checks
    };
    let store = crate::store::Store::new(conn, config);
    let lanes = config.lanes();
    match store.recorded_lane_count().await {
        Ok(Some(recorded)) if recorded != lanes => report.error(
            format!(
                "delivery_partitions is {lanes} in this configuration, but the deployment's delivery lanes were set up with {recorded}: workers started with it refuse to start"
            ),
            format!(
                "set delivery_partitions = {recorded}; to change the lane count, stop every router, wait until no lane has a backlog, delete the Redis key {} and restart every worker with the new value",
                store.keys().lane_count()
            ),
        ),
        // Recorded and agreeing, or no worker has started yet.
        Ok(_) => {}
        Err(error) => report.warning(
            format!("Redis: cannot read the deployment's lane count ({error})"),
            "check the Redis user may run GET",
        ),
    }
    for channel in config.channels() {
        let owners = match store.lane_owners(&channel).await {
            Ok(owners) => owners,
            Err(error) => {
                report.warning(
                    format!("Redis: cannot read who owns the {channel} lanes ({error})"),
                    "check the Redis user may run HGETALL",
                );
                continue;
            }
        };
        let unowned: Vec<String> = (0..lanes)
            .filter(|lane| !owners.contains_key(lane))
            .map(|lane| lane.to_string())
            .collect();
        if !unowned.is_empty() {
            report.warning(
                format!(
                    "{channel}: delivery lane(s) {} have no live owner, so nobody posts from them",
                    unowned.join(", ")
                ),
                format!("start `threadline run deliver {channel}` (a stopped or killed owner's lanes move to another instance within lane_lease_ms)"),
            );
        }
        report.lanes.push(LanesReport {
            channel,
            lanes,
            owners,
        });
    }
}

/// The listpack limits: lower ones keep every structure correct but far bigger (each
/// session bucket leaves the compact encoding).
async fn check_listpack(conn: &mut redis::aio::ConnectionManager, report: &mut Report) {
    for (name, wanted) in crate::store::layout::REDIS_SETTINGS {
        let pair: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(*name)
            .query_async(conn)
            .await;
        let value = match pair {
            Ok(pair) => pair.get(1).and_then(|v| v.parse::<u64>().ok()),
            Err(error) => {
                report.warning(
                    format!("Redis: cannot read {name} ({error}); CONFIG may be disabled here"),
                    format!("check by hand that redis.conf has `{name} {wanted}` or more"),
                );
                continue;
            }
        };
        if value.is_some_and(|v| v < *wanted) || value.is_none() {
            report.warning(
                format!(
                    "Redis: {name} is {}, below {wanted}: sessions and bindings are stored correctly but take about 3x the memory",
                    value.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
                ),
                format!("set `{name} {wanted}` in redis.conf (at once: redis-cli CONFIG SET {name} {wanted}); existing buckets shrink as they are rewritten"),
            );
        }
        report.redis.listpack.insert((*name).to_owned(), value);
    }
}

/// What a key of the layout before buckets looks like (`<ns>:{b:…}`, `<ns>:{c:…}`,
/// `<ns>:{sweep}`, `<ns>:{s:<key>}` without the `:labels` suffix that labels still use).
fn is_old_layout_key(ns: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(ns).and_then(|r| r.strip_prefix(":{")) else {
        return false;
    };
    rest.starts_with("b:")
        || rest.starts_with("c:")
        || rest == "sweep}"
        || (rest.starts_with("s:") && rest.ends_with('}'))
}

/// Keys of the old layout: no release wrote them, but bindings there are invisible to this
/// version, so an operator must not be left guessing. One SCAN of this server, in steps.
async fn check_old_layout(
    config: &Config,
    conn: &mut redis::aio::ConnectionManager,
    report: &mut Report,
) {
    let ns = &config.subject_prefix;
    let pattern = format!("{}:{{[bcs]*", crate::store::query::glob_escape(ns));
    let (mut cursor, mut found, mut example) = (0u64, 0u64, None);
    loop {
        let step: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await;
        let (next, keys) = match step {
            Ok(step) => step,
            Err(error) => {
                report.warning(
                    format!("Redis: cannot SCAN for keys of the old layout ({error})"),
                    "check the Redis user may run SCAN",
                );
                return;
            }
        };
        for key in keys.into_iter().filter(|k| is_old_layout_key(ns, k)) {
            found += 1;
            example.get_or_insert(key);
        }
        if next == 0 || found >= 100 {
            break;
        }
        cursor = next;
    }
    report.redis.old_layout_keys = Some(found);
    if let Some(example) = example {
        report.error(
            format!(
                "Redis: {found}{} key(s) of the layout before buckets (e.g. {example:?}): sessions and bindings stored there are invisible to this version",
                if found >= 100 { "+" } else { "" }
            ),
            format!(
                "no release wrote that layout: end those sessions with the version that made them, or delete the keys (redis-cli --scan --pattern '{ns}:{{b:*' and '{ns}:{{c:*', '{ns}:{{s:*}}' except ':labels', '{ns}:{{sweep}}'), then restart the workers"
            ),
        );
    }
}

fn print_text(report: &Report) {
    let n = &report.nats;
    if n.connected {
        println!(
            "NATS     {}  nats-server {} ({}), JetStream {}",
            n.url,
            n.server_version.as_deref().unwrap_or("?"),
            n.server_name.as_deref().unwrap_or("?"),
            if n.jetstream { "enabled" } else { "DISABLED" }
        );
    } else {
        println!("NATS     {}  not reachable", n.url);
    }
    let r = &report.redis;
    if r.connected {
        println!(
            "Redis    {}  redis {}, appendonly {}, appendfsync {}",
            r.url,
            r.version.as_deref().unwrap_or("?"),
            match r.aof_enabled {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            },
            r.appendfsync.as_deref().unwrap_or("?")
        );
        let limits: Vec<String> = r
            .listpack
            .iter()
            .map(|(k, v)| format!("{k} {}", v.map(|v| v.to_string()).unwrap_or("?".into())))
            .collect();
        println!("         {}", limits.join(", "));
    } else {
        println!("Redis    {}  not reachable", r.url);
    }
    for s in &report.streams {
        let state = match (s.present, s.mismatches.is_empty()) {
            (false, _) => "MISSING".to_owned(),
            (true, true) => "ok".to_owned(),
            (true, false) => "DIFFERS".to_owned(),
        };
        println!(
            "stream   {:<40} {:<8} {} message(s)",
            s.name,
            state,
            s.messages.unwrap_or(0)
        );
    }
    for c in &report.consumers {
        let state = match (c.present, c.mismatches.is_empty(), c.expected) {
            (false, _, _) => "MISSING",
            (true, false, _) => "DIFFERS",
            (true, true, true) => "ok",
            (true, true, false) => "extra",
        };
        println!(
            "consumer {:<40} {:<8} pending {}, ack pending {}, redelivered {}, waiting pulls {}",
            format!("{}/{}", c.stream, c.durable),
            state,
            c.num_pending.unwrap_or(0),
            c.num_ack_pending.unwrap_or(0),
            c.num_redelivered.unwrap_or(0),
            c.num_waiting.unwrap_or(0)
        );
    }
    for l in &report.lanes {
        let mut by_owner: std::collections::BTreeMap<&str, usize> = Default::default();
        for owner in l.owners.values() {
            *by_owner.entry(owner.as_str()).or_default() += 1;
        }
        let shares: Vec<String> = by_owner
            .iter()
            .map(|(owner, n)| format!("{n} by {owner}"))
            .collect();
        println!(
            "lanes    {:<40} {} lane(s): {}",
            l.channel,
            l.lanes,
            if shares.is_empty() {
                "no live owner".to_owned()
            } else {
                shares.join(", ")
            }
        );
    }
    if report.problems.is_empty() {
        println!("OK: no problems found");
        return;
    }
    for p in &report.problems {
        let tag = match p.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
        };
        println!("{tag}: {} — fix: {}", p.what, p.fix);
    }
    let errors = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    println!(
        "{errors} error(s), {} warning(s)",
        report.problems.len() - errors
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_layout_keys_are_told_from_the_buckets_and_labels() {
        for old in [
            "tl:{b:b-1}",
            "tl:{c:discord\u{1f}a\u{1f}c}",
            "tl:{sweep}",
            "tl:{s:agent:a:x}",
        ] {
            assert!(is_old_layout_key("tl", old), "{old}");
        }
        for new in [
            "tl:{ss:12}",
            "tl:{cc:3}",
            "tl:{dir}:4",
            "tl:{s:agent:a:x}:labels",
            "tl:{lanes:discord}",
            "tl:{lanes:webhook:ops}:live",
            "other:{b:x}",
        ] {
            assert!(!is_old_layout_key("tl", new), "{new}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version("2.9.10"), Some((2, 9, 10)));
        assert!(version("2.10.1").unwrap() >= MIN_NATS);
        assert!(version("2.8.4").unwrap() < MIN_NATS);
        assert_eq!(version("7.0.15"), Some((7, 0, 15)));
        assert_eq!(version("garbage"), None);
    }

    #[test]
    fn durables_name_their_worker() {
        assert_eq!(worker_of("binder-control"), "binder");
        assert_eq!(worker_of("deliver-discord-p3"), "deliver discord");
        assert_eq!(worker_of("deliver-webhook_ops-p0"), "deliver webhook:ops");
    }
}
