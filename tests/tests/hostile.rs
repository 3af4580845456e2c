//! A seeded storm of hostile inputs on every `tl.in.*` subject — random bytes, mutated
//! fixtures, fields of the wrong type (some of them 100 kB), ids with line breaks or of absurd
//! length, 2 MB events, controls naming no configured channel, bindings to ids no platform
//! could have — against the real `threadline run all` binary. Every input ends in an answer
//! within seconds (a rejection its publisher can match, and a dead letter where the bytes are
//! bad), nothing is retried forever, what goes into reasons, headers and logs stays bounded,
//! and the worker keeps serving valid events.
//!
//! `THREADLINE_HOSTILE_INPUTS` sets the storm's size (default sized for CI).

use async_nats::jetstream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use threadline::io::nats::StreamKind;
use threadline_schemas::{Placement, MAX_REASON_CHARS};
use threadline_tests::events::{completion, new_id};
use threadline_tests::pipeline::{Options, Pipeline};

const SEED: u64 = 0x7e57_0b5e;

/// One input of the storm and the answer it must get.
struct Input {
    seq: u64,
    /// The id its rejection must carry; `None` when any answer will do (a mutated fixture
    /// may still be a valid event, whose outcome is its own).
    answer_id: Option<String>,
    /// Bad bytes or a bad shape: must also be dead-lettered (original bytes kept).
    dead_letter: bool,
    what: String,
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../schemas/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture json")
}

fn fixture_msgpack(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../schemas/fixtures/{name}.msgpack",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).expect("fixture msgpack")
}

/// A value of a type no field of the contract has where it is put (or a huge string).
fn wrong_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..5) {
        // Negative: no count, duration or id of the contract is.
        0 => json!(-rng.random_range(1..i64::MAX)),
        1 => json!([1, "two", null]),
        2 => json!({"nested": {"deeper": true}}),
        3 => json!("x".repeat(100_000)),
        _ => json!(-0.5),
    }
}

fn odd_id(rng: &mut StdRng, unique: &str) -> String {
    match rng.random_range(0..6) {
        0 => format!("{unique}\r\nX-Injected: 1"),
        1 => format!("{unique}\n"),
        2 => format!("{unique}{}", "i".repeat(600)),
        3 => format!("{unique}{}", "j".repeat(5_000)),
        4 => String::new(),
        _ => format!("{unique}\u{0}\u{7}"),
    }
}

/// Whether `id` is echoed back in the rejection (else the `Nats-Msg-Id` answers for it).
fn echoed(id: &str) -> bool {
    !id.is_empty() && id.len() <= 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_is_answered_within_seconds_with_bounded_reasons_and_logs() {
    let total: usize = std::env::var("THREADLINE_HOSTILE_INPUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let log_dir = tempfile::tempdir().expect("log dir");
    let log_path = log_dir.path().join("threadline.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut worker = p
        .command(&["run", "all"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start threadline run all");
    let requester = Pipeline::discord_channel("100000000000000001");
    let key = p.session_in(&requester, Placement::None).await;

    let subjects = [
        (p.subjects.in_completion(), "completion.ok"),
        (p.subjects.in_spawn(), "spawn.placement_current"),
        (p.subjects.in_send(), "send.session_key"),
        (p.subjects.in_message("discord"), "message.discord_thread"),
        (p.subjects.in_control(), "control.touch"),
    ];
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut inputs = Vec::with_capacity(total);
    let publish = |subject: String, msg_id: String, bytes: Vec<u8>, json: bool| {
        let js = p.js.clone();
        async move {
            let mut message = jetstream::message::PublishMessage::build()
                .payload(bytes.into())
                .message_id(msg_id);
            if json {
                message = message.header("Content-Type", "application/json");
            }
            js.send_publish(subject, message)
                .await
                .expect("publish")
                .await
                .expect("publish ack")
                .sequence
        }
    };
    let started = Instant::now();
    for n in 0..total {
        let (subject, name) = subjects[n % subjects.len()].clone();
        let msg_id = format!("storm-{n}-{}", new_id());
        let kind = rng.random_range(0..7);
        let input = match kind {
            0 => {
                // Random bytes that do not start a map: nothing inside can be read.
                let len = rng.random_range(0..2_000);
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                bytes.insert(0, 0xc1);
                let seq = publish(subject, msg_id.clone(), bytes, rng.random_bool(0.5)).await;
                Input {
                    seq,
                    answer_id: Some(msg_id),
                    dead_letter: true,
                    what: "random bytes".into(),
                }
            }
            1 => {
                // A fixture with one field of the wrong type (sometimes 100 kB of it).
                let mut event = fixture(name);
                event["event_id"] = json!(msg_id);
                let fields: Vec<String> = event
                    .as_object()
                    .expect("map")
                    .keys()
                    .filter(|k| *k != "event_id" && *k != "v" && *k != "metadata")
                    .cloned()
                    .collect();
                let field = &fields[rng.random_range(0..fields.len())];
                let mut wrong = wrong_value(&mut rng);
                if wrong.is_string() && event[field].is_string() {
                    // A string is right where a string belongs: wrap the 100 kB in a map.
                    wrong = json!({ "huge": wrong });
                }
                event[field] = wrong;
                let bytes = if rng.random_bool(0.5) {
                    rmp_serde::to_vec_named(&event).expect("msgpack")
                } else {
                    serde_json::to_vec(&event).expect("json")
                };
                let json = bytes.first() == Some(&b'{');
                let seq = publish(subject, msg_id.clone(), bytes, json).await;
                Input {
                    seq,
                    answer_id: Some(msg_id),
                    dead_letter: true,
                    what: format!("{name}.{field} of the wrong type"),
                }
            }
            2 => {
                // A valid event whose id cannot be a header value or is absurdly long.
                let mut event = fixture(name);
                let id = odd_id(&mut rng, &msg_id);
                event["event_id"] = json!(id);
                let seq = publish(
                    subject,
                    msg_id.clone(),
                    rmp_serde::to_vec_named(&event).expect("msgpack"),
                    false,
                )
                .await;
                let answer = if echoed(&id) { id } else { msg_id };
                Input {
                    seq,
                    answer_id: Some(answer),
                    dead_letter: true,
                    what: "odd id".into(),
                }
            }
            3 if n % 25 == 3 => {
                // Over the size limit: refused unread, answered by its `Nats-Msg-Id`.
                let mut big = completion(&key, &"x".repeat(2 * 1024 * 1024));
                big.event_id = msg_id.clone();
                let seq = publish(
                    p.subjects.in_completion(),
                    msg_id.clone(),
                    rmp_serde::to_vec_named(&big).expect("msgpack"),
                    false,
                )
                .await;
                Input {
                    seq,
                    answer_id: Some(msg_id),
                    dead_letter: true,
                    what: "2 MB event".into(),
                }
            }
            4 => {
                // Valid shapes the binder must refuse: a rotation for no configured channel,
                // a binding to a string no Discord channel could have as its id.
                let (subject, event) = if rng.random_bool(0.5) {
                    let mut c = fixture("control.credentials_rotated");
                    c["channel"] = json!(format!("nope{}", rng.random::<u16>()));
                    (p.subjects.in_control(), c)
                } else {
                    let mut s = fixture("spawn.placement_current");
                    s["requester"]["conversation"] = json!({"channel": "discord",
                        "account_id": "a", "conversation_id": "general"});
                    s.as_object_mut().expect("map").remove("session_key");
                    (p.subjects.in_spawn(), s)
                };
                let mut event = event;
                event["event_id"] = json!(msg_id);
                let seq = publish(
                    subject,
                    msg_id.clone(),
                    rmp_serde::to_vec_named(&event).expect("msgpack"),
                    false,
                )
                .await;
                Input {
                    seq,
                    answer_id: Some(msg_id),
                    dead_letter: false,
                    what: "refused".into(),
                }
            }
            _ => {
                // A fixture with bytes flipped: may be anything, even still valid.
                let mut bytes = fixture_msgpack(name);
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                let seq = publish(subject, msg_id, bytes, false).await;
                Input {
                    seq,
                    answer_id: None,
                    dead_letter: false,
                    what: "mutated fixture".into(),
                }
            }
        };
        inputs.push(input);
    }
    eprintln!(
        "published {total} hostile inputs in {:?}",
        started.elapsed()
    );

    // Every input settled: no consumer of the inbound stream still holds or owes one.
    let stream =
        p.js.get_stream(StreamKind::Inbound.name(&p.subjects))
            .await
            .expect("inbound stream");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut busy = Vec::new();
        let mut names = stream.consumer_names();
        use futures::StreamExt;
        while let Some(name) = names.next().await {
            let name = name.expect("consumer name");
            let info = stream.consumer_info(&name).await.expect("consumer info");
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                busy.push((name, info.num_pending, info.num_ack_pending));
            }
        }
        if busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inputs still unsettled after 90 s (retried forever?): {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled_after = started.elapsed();
    p.settle(Duration::from_millis(500)).await;

    // Each input's answer.
    let rejected: HashMap<String, String> = p
        .rejected()
        .into_iter()
        .map(|r| (r.event_id, r.message))
        .collect();
    let dead = p.observer.raw(&format!("{}.dlq.", p.subjects.prefix()));
    let dead_seqs: HashSet<u64> = dead
        .iter()
        .filter_map(|d| d.headers.get("Threadline-Original-Sequence")?.parse().ok())
        .collect();
    let mut unanswered = Vec::new();
    for input in &inputs {
        let by_id = input
            .answer_id
            .as_ref()
            .is_none_or(|id| rejected.contains_key(id));
        let by_dead_letter = !input.dead_letter || dead_seqs.contains(&input.seq);
        if !by_id || !by_dead_letter {
            unanswered.push((input.what.as_str(), input.seq, by_id, by_dead_letter));
        }
    }
    assert!(
        unanswered.is_empty(),
        "{} of {total} inputs without their answer (what, seq, rejected, dead-lettered): {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(20)]
    );
    // Bounded: reasons, dead-letter headers.
    for (id, message) in &rejected {
        assert!(
            message.chars().count() <= MAX_REASON_CHARS + 40,
            "{id:.40}: a {}-character reason",
            message.len()
        );
    }
    for d in &dead {
        let size: usize = d.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(size < 4_096, "dead-letter headers of {size} bytes");
    }

    // Still serving.
    let good = completion(&key, "after the storm");
    p.publish(p.subjects.in_completion(), &good.event_id, &good)
        .await;
    p.wait_delivered(&good.event_id, 1).await;
    assert!(
        worker.try_wait().expect("worker status").is_none(),
        "the worker is still running"
    );
    let _ = worker.start_kill();
    let _ = worker.wait().await;

    // Bounded logs: a line or two per input, never the inputs' values.
    let log_bytes = std::fs::metadata(&log_path).expect("log").len();
    assert!(
        log_bytes < 4_096 * total as u64 + 256 * 1024,
        "{log_bytes} bytes of logs for {total} inputs"
    );
    eprintln!(
        "{total} inputs settled in {settled_after:?}; {} rejections, {} dead letters, {log_bytes} bytes of logs",
        rejected.len(),
        dead.len()
    );
}
