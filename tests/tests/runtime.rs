//! Running it for real: W3C trace context from the inbound event to the platform call and
//! `tl.out.*`, OTLP export, the `/metrics` families and their counts, readiness while
//! draining, and the drain deadline when a platform call hangs.

use async_nats::jetstream;
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use threadline::io::nats::StreamKind;
use threadline_schemas::Placement;
use threadline_tests::events::{completion, new_id};
use threadline_tests::fakes::Fault;
use threadline_tests::pipeline::{get_health, readyz_until, Options, Pipeline};
use threadline_tests::servers::free_port;

const PARENT: &str = "100000000000000001";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-b7ad6b7169203331-01")
}

fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

/// Publishes `event` with `Nats-Msg-Id` and, when given, a `traceparent`.
async fn publish_traced<T: serde::Serialize>(
    p: &Pipeline,
    subject: String,
    msg_id: &str,
    event: &T,
    traceparent: Option<&str>,
) {
    let mut message = jetstream::message::PublishMessage::build()
        .payload(rmp_serde::to_vec_named(event).expect("encode").into())
        .message_id(msg_id);
    if let Some(tp) = traceparent {
        message = message.header("traceparent", tp);
    }
    p.js.send_publish(subject, message)
        .await
        .expect("publish")
        .await
        .expect("publish ack");
}

/// A session without placement whose completions go to the Discord channel `PARENT`.
async fn session(p: &Pipeline) -> String {
    p.session_in(&Pipeline::discord_channel(PARENT), Placement::None)
        .await
}

/// The `traceparent` header of the `tl.out.delivered` of `event_id`.
fn delivered_traceparent(p: &Pipeline, event_id: &str) -> Option<String> {
    p.observer
        .raw(&p.subjects.out_delivered())
        .into_iter()
        .find(|o| {
            rmp_serde::from_slice::<threadline_schemas::PostDelivered>(&o.payload)
                .is_ok_and(|d| d.event_id == event_id)
        })
        .and_then(|o| o.headers.get("traceparent").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_the_platform_call_and_tl_out_delivered() {
    let p = Pipeline::start().await;
    let session_key = session(&p).await;

    // With a traceparent: the same trace all the way, through router and deliverer.
    let traced = completion(&session_key, "traced");
    publish_traced(
        &p,
        p.subjects.in_completion(),
        &traced.event_id,
        &traced,
        Some(&traceparent()),
    )
    .await;
    p.wait_delivered(&traced.event_id, 1).await;
    let out = delivered_traceparent(&p, &traced.event_id).expect("traceparent on delivered");
    assert_eq!(trace_id_of(&out), Some(TRACE_ID), "{out}");
    assert!(out.ends_with("-01"), "the sampled flag is kept: {out}");
    assert_ne!(out, traceparent(), "each hop is a span of its own");

    // Without one: the first hop starts a trace, and it too reaches the platform.
    let untraced = completion(&session_key, "untraced");
    publish_traced(
        &p,
        p.subjects.in_completion(),
        &untraced.event_id,
        &untraced,
        None,
    )
    .await;
    p.wait_delivered(&untraced.event_id, 1).await;
    let started = delivered_traceparent(&p, &untraced.event_id).expect("a new trace");
    let started_id = trace_id_of(&started).expect("trace id").to_owned();
    assert_ne!(started_id, TRACE_ID);
    assert_ne!(started_id, "0".repeat(32));

    // The fake saw both posts with those traces (and nothing else carried one).
    let seen = p.discord.traceparents_seen();
    let posts: Vec<_> = seen
        .iter()
        .filter(|(path, _)| path.ends_with(&format!("/channels/{PARENT}/messages")))
        .map(|(_, tp)| trace_id_of(tp).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(posts, vec![TRACE_ID.to_owned(), started_id], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_configured_otlp_endpoint() {
    let collected: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let store = collected.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().expect("collector lock").push(body);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let collector_addr = listener.local_addr().expect("collector address");
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let mut p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    p.config.otlp_endpoint = format!("http://{collector_addr}");
    p.start_in_process().await;
    let session_key = session(&p).await;
    let c = completion(&session_key, "exported");
    publish_traced(
        &p,
        p.subjects.in_completion(),
        &c.event_id,
        &c,
        Some(&traceparent()),
    )
    .await;
    p.wait_delivered(&c.event_id, 1).await;
    // Stopping flushes what the batch exporter still holds.
    p.stop_in_process().await;

    let bodies = collected.lock().expect("collector lock").clone();
    assert!(!bodies.is_empty(), "nothing exported");
    let mut stages = Vec::new();
    let mut client_spans = 0;
    let mut named_event = 0;
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| {
                s.trace_id
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    == TRACE_ID
            })
        {
            let attr = |key: &str| {
                span.attributes
                    .iter()
                    .find(|kv| kv.key == key)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
            };
            if let Some(stage) = attr("threadline.stage") {
                stages.push(stage);
            }
            if attr("threadline.event_id").as_deref() == Some(c.event_id.as_str()) {
                named_event += 1;
            }
            // SpanKind::Client = 3: the platform call.
            if span.kind == 3 {
                client_spans += 1;
            }
        }
    }
    assert!(stages.iter().any(|s| s == "router"), "{stages:?}");
    assert!(
        stages.iter().any(|s| s.starts_with("deliver")),
        "{stages:?}"
    );
    assert!(
        named_event >= 2,
        "router and deliverer spans name the event"
    );
    assert_eq!(client_spans, 1, "one platform call");
}

/// `/metrics` of `addr`.
async fn metrics(addr: SocketAddr) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match reqwest::get(format!("http://{addr}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Parsed samples: `(name, labels) → value`.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Some((name.to_owned(), labels, value))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Polls `/metrics` until `done` holds (or 15 s pass); returns the last text.
async fn metrics_when(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = metrics(addr).await;
        if done(&text) || Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `run all` process of its own, so its `/metrics` counts only this test's work.
async fn separate_process(
    tune: fn(&mut threadline::config::Config),
) -> (Pipeline, tokio::process::Child, SocketAddr) {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    p.config.health_addr = addr.to_string();
    tune(&mut p.config);
    p.rewrite_config_file();
    let child = p.command(&["run", "all"]).spawn().expect("start run all");
    let deadline = Instant::now() + Duration::from_secs(30);
    let _ = rustls::crypto::ring::default_provider().install_default();
    loop {
        let ready = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "run all never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (p, child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_latency_rate_limits_dead_letters_dedup_fallbacks_and_pending() {
    let (p, mut child, addr) = separate_process(|c| {
        c.pending_poll_ms = 100;
        // A slow post below stays a slow post, not a timeout.
        c.http_timeout_ms = 10_000;
        c.claim_lease_ms = 20_000;
        c.ack_wait_ms = 30_000;
    })
    .await;
    let session_key = session(&p).await;
    let channel = ("channel", "discord");

    // Three completions; the first post is rate-limited once.
    p.discord.push_fault(Fault::RateLimited {
        retry_after_ms: 200,
    });
    let mut completions = Vec::new();
    for n in 0..3 {
        let c = completion(&session_key, &format!("post {n}"));
        p.publish_completion(&c).await;
        p.wait_delivered(&c.event_id, 1).await;
        completions.push(c);
    }
    // The first again under a new Nats-Msg-Id: the router replays its stored decision.
    let again = &completions[0];
    p.publish(p.subjects.in_completion(), &new_id(), again)
        .await;
    // A completion of an unknown session: an explicit fallback to its requester.
    let mut unknown = completion("agent:larry:subagent:nobody", "who?");
    unknown.requester = Some(Pipeline::discord_channel(PARENT));
    p.publish(p.subjects.in_completion(), &unknown.event_id, &unknown)
        .await;
    p.wait_delivered(&unknown.event_id, 1).await;
    // Bytes that are no event: dead-lettered.
    p.publish_bytes(
        p.subjects.in_completion(),
        Some(&new_id()),
        b"\xc1".to_vec(),
        false,
    )
    .await;

    let text = metrics_when(addr, |t| {
        value(t, "threadline_delivery_latency_seconds_count", &[channel]) >= 4.0
            && value(t, "threadline_dead_letters_total", &[("stage", "router")]) >= 1.0
            && value(
                t,
                "threadline_dedup_hits_total",
                &[("kind", "route_replay")],
            ) >= 1.0
    })
    .await;
    assert_eq!(
        value(
            &text,
            "threadline_delivery_latency_seconds_count",
            &[channel]
        ),
        4.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "threadline_delivery_latency_seconds_bucket",
            &[channel, ("le", "+Inf")]
        ),
        4.0
    );
    assert!(value(&text, "threadline_delivery_latency_seconds_sum", &[channel]) > 0.0);
    assert_eq!(
        value(&text, "threadline_platform_429_total", &[channel]),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "threadline_platform_retries_total",
            &[channel, ("reason", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "threadline_dead_letters_total",
            &[("stage", "router"), ("code", "malformed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "threadline_dedup_hits_total",
            &[("kind", "route_replay")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "threadline_fallbacks_total",
            &[("reason", "unknown_session")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "threadline_events_total",
            &[("stage", "router"), ("outcome", "dead_letter")]
        ),
        1.0
    );
    assert!(
        value(
            &text,
            "threadline_events_total",
            &[("stage", "binder"), ("outcome", "ack")]
        ) >= 1.0
    );
    assert_eq!(
        p.discord.messages_in(PARENT).len(),
        4,
        "the replay posted nothing"
    );

    // Backlog: the next post hangs for a while, two more wait in the same lane.
    p.discord.push_fault(Fault::Slow { delay_ms: 3_000 });
    let mut waiting = Vec::new();
    for n in 0..3 {
        let c = completion(&session_key, &format!("queued {n}"));
        p.publish_completion(&c).await;
        waiting.push(c);
    }
    // The lane's owner pulls them at once and holds them behind the slow post, so they
    // are delivered but unacknowledged.
    let pending = |t: &str| {
        samples(t)
            .into_iter()
            .filter(|(n, l, _)| {
                n == "threadline_consumer_ack_pending"
                    && l.get("durable")
                        .is_some_and(|d| d.starts_with("deliver-discord-p"))
            })
            .map(|(_, _, v)| v)
            .fold(0.0, f64::max)
    };
    let text = metrics_when(addr, |t| pending(t) >= 3.0).await;
    assert!(pending(&text) >= 3.0, "{text}");
    // Every consumer of the process has its gauges.
    for durable in ["binder", "router"] {
        assert!(
            samples(&text)
                .iter()
                .any(|(n, l, _)| n == "threadline_consumer_pending"
                    && l.get("durable").is_some_and(|d| d.starts_with(durable))),
            "no pending gauge for {durable}: {text}"
        );
    }
    for c in &waiting {
        p.wait_delivered(&c.event_id, 1).await;
    }
    let text = metrics_when(addr, |t| {
        pending(t) == 0.0
            && value(t, "threadline_delivery_latency_seconds_count", &[channel]) >= 7.0
    })
    .await;
    assert_eq!(pending(&text), 0.0, "{text}");
    assert_eq!(
        value(
            &text,
            "threadline_delivery_latency_seconds_count",
            &[channel]
        ),
        7.0
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Sends SIGTERM to `child` (started by this test); → when.
fn sigterm(child: &tokio::process::Child) -> Instant {
    let pid = child.id().expect("pid");
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hanging_platform_call_exits_zero_within_the_drain_deadline() {
    let (p, mut child, addr) = separate_process(|c| {
        c.drain_timeout_ms = 3_000;
        // The call would hang far longer than the drain deadline.
        c.http_timeout_ms = 60_000;
        c.claim_lease_ms = 90_000;
        c.ack_wait_ms = 90_000;
    })
    .await;
    let session_key = session(&p).await;
    p.discord.push_fault(Fault::Slow { delay_ms: 45_000 });
    let c = completion(&session_key, "never answered in time");
    p.publish_completion(&c).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let posting = || {
        p.discord
            .traceparents_seen()
            .iter()
            .any(|(path, _)| path.ends_with(&format!("/channels/{PARENT}/messages")))
    };
    while !posting() {
        assert!(
            Instant::now() < deadline,
            "the post never reached the platform"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sent = sigterm(&child);
    // Draining: alive, not ready.
    let get = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .map(|r| r.status().as_u16())
    };
    let mut ready_status = Ok(200);
    while sent.elapsed() < Duration::from_millis(2_500) {
        ready_status = get("/readyz").await;
        if ready_status.as_ref().is_ok_and(|s| *s == 503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready_status.ok(), Some(503), "/readyz while draining");
    assert_eq!(
        get("/healthz").await.ok(),
        Some(200),
        "/healthz while draining"
    );

    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits long before the hanging call would end")
        .expect("reap");
    assert!(exit.success(), "exit status {exit:?}");
    // The deadline (3 s) held, not the 45 s call; generous margin for a loaded machine.
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        p.delivered().is_empty(),
        "nothing was reported for the unfinished post"
    );
}

/// What a `threadline run …` process reports when it is up: the fields of its
/// "threadline running" line, and the names of its threads at that moment.
async fn running_report(
    p: &Pipeline,
    args: &[&str],
    threads: Option<&str>,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    use tokio::io::AsyncBufReadExt;
    let mut command = p.command(args);
    command
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped());
    if let Some(threads) = threads {
        command.env("THREADLINE_WORKER_THREADS", threads);
    }
    let mut child = command.spawn().expect("start the worker");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains("threadline running") {
                return line;
            }
        }
        panic!("{args:?} exited before it was running");
    })
    .await
    .expect("the worker started within 30 s");
    let pid = child.id().expect("pid");
    let names = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|task| {
            let task = task.ok()?;
            std::fs::read_to_string(task.path().join("comm")).ok()
        })
        .map(|name| name.trim().to_owned())
        .collect();
    let _ = child.start_kill();
    let _ = child.wait().await;
    let fields = line
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (fields, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_runs_on_a_one_thread_runtime_and_run_all_gives_each_its_own() {
    let p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let threads = |report: &(BTreeMap<String, String>, BTreeSet<String>)| {
        report.0.get("worker_threads").cloned().unwrap_or_default()
    };
    assert_eq!(
        threads(&running_report(&p, &["run", "router"], None).await),
        "1"
    );
    assert_eq!(
        threads(&running_report(&p, &["run", "deliver", "discord"], None).await),
        "1"
    );
    // `run all`: the binder, the router and a deliverer per channel, each on a runtime of
    // its own (its threads named after the worker), each runtime one thread.
    let all = running_report(&p, &["run", "all"], None).await;
    let channels = p.config.channels();
    assert_eq!(threads(&all), "1", "{:?}", all.0);
    assert_eq!(
        all.0.get("workers"),
        Some(&(2 + channels.len()).to_string()),
        "{:?}",
        all.0
    );
    let expected: BTreeSet<String> = ["tl-binder".to_owned(), "tl-router".to_owned()]
        .into_iter()
        .chain(channels.iter().map(|c| {
            // Linux keeps 15 bytes of a thread's name.
            format!("tl-{c}").chars().take(15).collect()
        }))
        .collect();
    let workers: BTreeSet<String> = all
        .1
        .iter()
        .filter(|name| name.starts_with("tl-"))
        .cloned()
        .collect();
    assert_eq!(workers, expected, "threads: {:?}", all.1);
    // The setting overrides the default, for each worker's runtime.
    assert_eq!(
        threads(&running_report(&p, &["run", "router"], Some("3")).await),
        "3"
    );
    let all = running_report(&p, &["run", "all"], Some("2")).await;
    assert_eq!(threads(&all), "2", "{:?}", all.0);
}

/// `run all` is ready only when every worker in it is (each on a runtime of its own, with
/// its own connections): Redis lost and back, then a deliverer's lane consumer deleted
/// under it, which `/readyz` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_is_ready_only_while_every_worker_in_it_is() {
    let (mut p, mut child, addr) = separate_process(|c| c.pending_poll_ms = 100).await;
    assert_eq!(readyz_until(addr, 200).await, (200, "ready\n".to_owned()));
    p.redis.kill().await;
    assert_eq!(
        get_health(addr, "/readyz").await,
        (503, "not ready: Redis does not answer\n".to_owned())
    );
    p.redis.start_again().await;
    assert_eq!(
        readyz_until(addr, 200).await,
        (200, "ready\n".to_owned()),
        "ready again with Redis back"
    );
    // Every worker's own connections came back: work flows through all of them.
    let session_key = session(&p).await;
    let c = completion(&session_key, "through every worker");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;

    p.js.get_stream(StreamKind::Deliver.name(&p.subjects))
        .await
        .expect("stream")
        .delete_consumer("deliver-discord-p3")
        .await
        .expect("delete the consumer");
    assert_eq!(
        readyz_until(addr, 503).await,
        (
            503,
            "not ready: consumer deliver-discord-p3 deleted; restart to recreate\n".to_owned()
        )
    );
    assert_eq!(get_health(addr, "/healthz").await.0, 200);
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// A worker of `run all` that cannot start (here the Discord deliverer, its token file
/// missing) stops the whole process with the reason and the worker's name, although the
/// other workers started on their own runtimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_exits_with_the_reason_when_one_of_its_workers_cannot_start() {
    let p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let missing = tempfile::tempdir().expect("dir");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        p.command(&["run", "all"])
            .env("NO_COLOR", "1")
            .env(
                "THREADLINE_DISCORD_TOKEN_FILE",
                missing.path().join("no-such-token"),
            )
            .stderr(std::process::Stdio::piped())
            .output(),
    )
    .await
    .expect("exits instead of running without its Discord deliverer")
    .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("starting run all")
            && stderr.contains("Deliver(\"discord\")")
            && stderr.contains("cannot read the credentials of discord"),
        "{stderr}"
    );
    assert!(!stderr.contains("threadline running"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_nats_is_down_exits_within_the_drain_deadline() {
    let (mut p, mut child, _addr) = separate_process(|c| c.drain_timeout_ms = 2_000).await;
    // Work in flight when the broker goes: a session and a completion.
    let session_key = session(&p).await;
    let c = completion(&session_key, "posted before the broker went away");
    p.publish_completion(&c).await;
    p.nats.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent = sigterm(&child);
    // Acks it could not flush are redelivered later; waiting for a broker that is gone
    // must not keep an orchestrator's stop from finishing. (Before the flush was bounded it
    // never exited.) Here: the 2 s drain, lane pulls ending without a broker, a 2 s flush.
    let exit = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("exits although NATS is unreachable")
        .expect("reap");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "{:?}",
        sent.elapsed()
    );
}
