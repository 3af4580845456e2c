//! The operator CLI, run as the real `threadline` binary against a running deployment:
//! what it lists is what the pipeline stored, its unbind goes through the binder, what it
//! publishes is routed and posted once, dead letters are replayed once and recorded, and
//! `doctor` names what is broken.

use serde_json::Value;
use std::time::Duration;
use threadline_schemas::{BindingChange, BindingStatus, Placement, SessionMode, Stage};
use threadline_tests::events::{new_id, spawn};
use threadline_tests::pipeline::Pipeline;

fn by_key<'a>(list: &'a Value, field: &str, value: &str) -> Vec<&'a Value> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .filter(|v| v[field] == value)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_bindings_are_listed_as_stored_and_unbind_goes_through_the_binder() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel("100000000000000001");
    let (threaded, thread) = p
        .spawn_in_thread(&spawn(&parent, Placement::Child, SessionMode::Session))
        .await;
    let plain = spawn(&parent, Placement::None, SessionMode::Session);
    p.publish(p.subjects.in_spawn(), &plain.event_id, &plain)
        .await;
    let plain_key = p.wait_spawned(&plain.event_id).await.session_key;

    // sessions list: both, with their bindings; filters narrow it.
    let (code, sessions) = p.operator_json(&["sessions", "list"]).await;
    assert_eq!(code, 0);
    assert_eq!(sessions.as_array().map(Vec::len), Some(2), "{sessions:#}");
    let listed = by_key(&sessions, "session_key", &threaded);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["placement"], "child");
    let bindings = listed[0]["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["status"], "active");
    assert_eq!(
        bindings[0]["conversation"]["conversation_id"],
        thread.conversation_id.as_str()
    );
    let binding_id = bindings[0]["binding_id"].as_str().expect("id").to_owned();
    assert_eq!(
        by_key(&sessions, "session_key", &plain_key)[0]["bindings"],
        Value::Array(vec![])
    );
    let (_, none) = p
        .operator_json(&["sessions", "list", "--agent", "nobody"])
        .await;
    assert_eq!(none, Value::Array(vec![]));
    let (_, ended) = p
        .operator_json(&["sessions", "list", "--status", "ended"])
        .await;
    assert_eq!(ended, Value::Array(vec![]));
    let (_, one) = p.operator_json(&["sessions", "list", "--limit", "1"]).await;
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    let (code, shown) = p.operator_json(&["sessions", "show", &threaded]).await;
    assert_eq!(code, 0);
    assert_eq!(shown["session_key"], threaded.as_str());
    assert_eq!(shown["agent_id"], "larry");
    let (code, _) = p.operator(&["sessions", "show", "agent:larry:nope"]).await;
    assert_eq!(code, 1, "an unknown session is an error");

    // bindings list/show with filters.
    let conversation = format!("discord:{}", thread.conversation_id);
    let (_, in_thread) = p
        .operator_json(&["bindings", "list", "--conversation", &conversation])
        .await;
    assert_eq!(by_key(&in_thread, "binding_id", &binding_id).len(), 1);
    assert_eq!(in_thread.as_array().map(Vec::len), Some(1));
    let (_, of_plain) = p
        .operator_json(&["bindings", "list", "--session", &plain_key])
        .await;
    assert_eq!(of_plain, Value::Array(vec![]));
    let (_, slack) = p
        .operator_json(&["bindings", "list", "--channel", "slack"])
        .await;
    assert_eq!(slack, Value::Array(vec![]));
    let (code, binding) = p.operator_json(&["bindings", "show", &binding_id]).await;
    assert_eq!(code, 0);
    assert_eq!(binding["target_session_key"], threaded.as_str());

    // unbind by binding id: published on tl.in.control, ended by the binder, reported.
    let (code, report) = p
        .operator_json(&[
            "bindings",
            "unbind",
            "--binding",
            &binding_id,
            "--reason",
            "cli-test",
        ])
        .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["published"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        report["published"][0]["subject"],
        p.subjects.in_control().as_str()
    );
    assert_eq!(
        report["ended"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    assert_eq!(
        report["ended"][0]["binding"]["binding_id"],
        binding_id.as_str()
    );
    assert_eq!(report["ended"][0]["change"], "ended");
    assert_eq!(report["ended"][0]["reason"], "cli-test");
    let observed = p.wait_binding(&threaded, BindingChange::Ended).await;
    assert_eq!(observed.reason, "cli-test");
    let stored = p
        .store()
        .await
        .load_session(&threaded)
        .await
        .expect("redis")
        .expect("session");
    assert_eq!(stored.bindings[0].status, BindingStatus::Ended);
    assert_eq!(stored.bindings[0].end_reason.as_deref(), Some("cli-test"));
    let (_, listed_ended) = p
        .operator_json(&["bindings", "list", "--status", "ended"])
        .await;
    assert_eq!(by_key(&listed_ended, "binding_id", &binding_id).len(), 1);

    // A second unbind publishes nothing: the binding is over.
    let (code, again) = p
        .operator_json(&["bindings", "unbind", "--binding", &binding_id])
        .await;
    assert_eq!(code, 0);
    assert_eq!(again["published"], Value::Array(vec![]));
    assert_eq!(again["already_ended"][0], binding_id.as_str());

    // A session without bindings: nothing to publish.
    let (code, nothing) = p
        .operator_json(&["bindings", "unbind", "--session", &plain_key])
        .await;
    assert_eq!(code, 0);
    assert_eq!(nothing["published"], Value::Array(vec![]));
    assert_eq!(nothing["ended"], Value::Array(vec![]));

    // Two sessions bound to one room: unbind the first by session (one event for the
    // session), then the rest of the room by conversation.
    let room = Pipeline::discord_channel("100000000000000077");
    let mut keys = Vec::new();
    for _ in 0..2 {
        let s = spawn(&room, Placement::Current, SessionMode::Session);
        keys.push(p.spawn_session(&s).await.session_key);
    }
    let (code, by_session) = p
        .operator_json(&["bindings", "unbind", "--session", &keys[0]])
        .await;
    assert_eq!(code, 0, "{by_session:#}");
    assert_eq!(by_session["published"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_session["ended"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        by_session["ended"][0]["binding"]["target_session_key"],
        keys[0].as_str()
    );
    let (code, report) = p
        .operator_json(&[
            "bindings",
            "unbind",
            "--conversation",
            "discord:100000000000000077",
        ])
        .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["published"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["already_ended"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["ended"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        report["ended"][0]["binding"]["target_session_key"],
        keys[1].as_str()
    );
    assert_eq!(
        p.store()
            .await
            .bindings_for_conversation(&room)
            .await
            .expect("redis"),
        vec![],
        "no live binding is left in the conversation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_routed_and_posted_once() {
    let p = Pipeline::start().await;
    // A spawn from a JSON file in the fixtures' shape (no event id: one is made up).
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("spawn.json");
    let parent = Pipeline::discord_channel("100000000000000001");
    std::fs::write(
        &file,
        serde_json::json!({
            "v": 1,
            "agent_id": "larry",
            "requester": {"session_key": "agent:larry:main", "conversation": parent},
            "mode": "session",
            "placement": "child",
            "thread_name": "from a file",
        })
        .to_string(),
    )
    .expect("write spawn file");
    let (code, spawned) = p
        .operator_json(&["publish", "spawn", "--file", file.to_str().expect("path")])
        .await;
    assert_eq!(code, 0, "{spawned:#}");
    assert_eq!(spawned["stream"], "TL_IN");
    assert_eq!(spawned["duplicate"], false);
    let event_id = spawned["event_id"].as_str().expect("event id").to_owned();
    let session_key = p.wait_spawned(&event_id).await.session_key;
    let thread = p
        .wait_binding(&session_key, BindingChange::Bound)
        .await
        .binding
        .conversation;

    // A completion from flags goes to the thread, once.
    let completion_id = new_id();
    let args = [
        "publish",
        "completion",
        "--session",
        &session_key,
        "--content",
        "posted by the cli",
        "--event-id",
        &completion_id,
    ];
    let (code, first) = p.operator_json(&args).await;
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(first["event_id"], completion_id.as_str());
    assert_eq!(first["subject"], p.subjects.in_completion().as_str());
    assert_eq!(first["duplicate"], false);
    let delivered = p.wait_delivered(&completion_id, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].destination.conversation_id,
        thread.conversation_id
    );
    // The same event id again: JetStream's duplicate window drops it.
    let (_, second) = p.operator_json(&args).await;
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["seq"], first["seq"]);
    p.settle(Duration::from_millis(500)).await;
    let posted = p.posted(&thread);
    assert_eq!(
        posted
            .iter()
            .filter(|t| t.as_str() == "posted by the cli")
            .count(),
        1,
        "{posted:?}"
    );
    assert!(p.posted(&parent).iter().all(|t| t != "posted by the cli"));

    // From flags without an event id: one is made up, and the session gets the input.
    let (code, sent) = p
        .operator_json(&[
            "publish",
            "send",
            "--session",
            &session_key,
            "--message",
            "hello from the cli",
        ])
        .await;
    assert_eq!(code, 0, "{sent:#}");
    let sent_id = sent["event_id"].as_str().expect("event id");
    assert!(uuid::Uuid::parse_str(sent_id).is_ok(), "{sent_id}");
    let inputs = p.wait_inputs(sent_id, 1).await;
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].session_key, session_key);
    assert_eq!(inputs[0].text, "hello from the cli");

    // An event the workers would reject is refused before it is published.
    let (code, _) = p
        .operator(&[
            "publish",
            "spawn",
            "--agent",
            "larry",
            "--requester-session",
            "s",
            "--conversation",
            "discord:1",
            "--account",
            "a",
            "--session-key",
            "agent:other:x",
        ])
        .await;
    assert_ne!(code, 0, "an invalid spawn is not published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_shown_and_replayed_once_with_a_record() {
    let p = Pipeline::start().await;
    // A completion without `content`: the router dead-letters it.
    let bad = serde_json::json!({"v": 1, "event_id": "cli-missing-content", "session_key": "agent:larry:x", "status": "ok"});
    p.publish_bytes(
        p.subjects.in_completion(),
        Some(&new_id()),
        bad.to_string().into_bytes(),
        true,
    )
    .await;
    assert_eq!(
        p.wait_rejected("cli-missing-content").await.code,
        "invalid_event"
    );
    let dlq_subject = p.subjects.dlq(&Stage::Router);
    let wait_dead = |n: usize| {
        let p = &p;
        let dlq_subject = dlq_subject.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while p.observer.raw(&dlq_subject).len() < n && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            p.observer.raw(&dlq_subject)
        }
    };
    assert_eq!(wait_dead(1).await.len(), 1);

    let (code, list) = p.operator_json(&["dlq", "list"]).await;
    assert_eq!(code, 0);
    let entries = list.as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{list:#}");
    let entry = &entries[0];
    assert_eq!(entry["stage"], "router");
    assert_eq!(entry["code"], "invalid_event");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("content"),
        "{entry:#}"
    );
    assert_eq!(
        entry["original_subject"],
        p.subjects.in_completion().as_str()
    );
    assert_eq!(entry["replayed"], Value::Null);
    let seq = entry["seq"].as_u64().expect("seq");
    let seq_text = seq.to_string();

    let (code, shown) = p.operator_json(&["dlq", "show", &seq_text]).await;
    assert_eq!(code, 0);
    assert_eq!(shown["encoding"], "json");
    assert_eq!(shown["payload"]["event_id"], "cli-missing-content");
    assert_eq!(
        shown["headers"]["Threadline-Error-Code"][0],
        "invalid_event"
    );

    // Replay: the original bytes go back to the original subject, marked, under a new id.
    let (code, replayed) = p.operator_json(&["dlq", "replay", &seq_text]).await;
    assert_eq!(code, 0, "{replayed:#}");
    assert_eq!(replayed[0]["outcome"], "replayed");
    let record = &replayed[0]["replay"];
    assert_eq!(record["subject"], p.subjects.in_completion().as_str());
    assert_eq!(record["count"], 1);
    let msg_id = record["msg_id"].as_str().expect("msg id").to_owned();
    let in_seq = record["seq"].as_u64().expect("stream seq");
    let republished =
        p.js.get_stream("TL_IN")
            .await
            .expect("TL_IN")
            .get_raw_message(in_seq)
            .await
            .expect("the replayed message is in TL_IN");
    assert_eq!(
        republished
            .headers
            .get("Threadline-Replay-Of")
            .map(|v| v.as_str().to_owned()),
        Some(seq_text.clone())
    );
    assert_eq!(
        republished
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned()),
        Some(msg_id)
    );
    assert_eq!(republished.payload.as_ref(), bad.to_string().as_bytes());
    // It went through the router again, which dead-lettered it again (as it must).
    let dead = wait_dead(2).await;
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[1].headers.get("Threadline-Original-Sequence"),
        Some(&in_seq.to_string())
    );

    // The replay is on record; a second one is refused; --force replays anyway.
    let (_, list) = p
        .operator_json(&["dlq", "list", "--code", "invalid_event"])
        .await;
    let first = by_key_u64(&list, seq);
    assert_eq!(first["replayed"]["count"], 1);
    let (code, refused) = p.operator_json(&["dlq", "replay", &seq_text]).await;
    assert_eq!(code, 1);
    assert_eq!(refused[0]["outcome"], "refused");
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(
        p.observer.raw(&dlq_subject).len(),
        2,
        "nothing was republished"
    );
    let (code, forced) = p
        .operator_json(&["dlq", "replay", &seq_text, "--force"])
        .await;
    assert_eq!(code, 0);
    assert_eq!(forced[0]["replay"]["count"], 2);
    assert_eq!(wait_dead(3).await.len(), 3);
}

fn by_key_u64(list: &Value, seq: u64) -> &Value {
    list.as_array()
        .expect("entries")
        .iter()
        .find(|e| e["seq"] == seq)
        .unwrap_or_else(|| panic!("no entry {seq} in {list:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_deployment_and_names_a_deleted_consumer_and_aof_off() {
    let p = Pipeline::start().await;
    let (code, healthy) = p.operator_json(&["doctor"]).await;
    let errors = |report: &Value| -> Vec<String> {
        report["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .filter(|p| p["severity"] == "error")
            .map(|p| p["what"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(errors(&healthy), Vec::<String>::new(), "{healthy:#}");
    assert_eq!(code, 0);
    assert_eq!(healthy["ok"], true);
    assert_eq!(healthy["nats"]["jetstream"], true);
    assert!(healthy["nats"]["server_version"]
        .as_str()
        .unwrap_or_default()
        .starts_with("2."));
    assert!(healthy["redis"]["version"]
        .as_str()
        .unwrap_or_default()
        .starts_with('7'));
    assert_eq!(healthy["redis"]["aof_enabled"], true);
    assert_eq!(healthy["redis"]["appendfsync"], "always");
    assert_eq!(healthy["streams"].as_array().map(Vec::len), Some(4));
    // 6 binder/router consumers + 4 lanes for each of 6 channels, all present.
    let consumers = healthy["consumers"].as_array().expect("consumers");
    let expected: Vec<_> = consumers.iter().filter(|c| c["expected"] == true).collect();
    assert_eq!(expected.len(), 6 + 4 * 6, "{consumers:#?}");
    assert!(expected
        .iter()
        .all(|c| c["present"] == true && c["mismatches"] == Value::Array(vec![])));
    // Every lane of every channel is owned by the one deliverer instance per channel.
    let lanes = healthy["lanes"].as_array().expect("lanes");
    assert_eq!(lanes.len(), 6, "{lanes:#?}");
    for channel in lanes {
        let owners = channel["owners"].as_object().expect("owners");
        assert_eq!(owners.len(), 4, "{channel:#}");
        let distinct: std::collections::BTreeSet<_> =
            owners.values().filter_map(Value::as_str).collect();
        assert_eq!(distinct.len(), 1, "{channel:#}");
    }

    // The environment overrides the file (docs/design.md §4): a Redis nobody listens on.
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let output = p
        .command(&["doctor", "--json"])
        .env("THREADLINE_REDIS_URL", &dead_redis)
        .output()
        .await
        .expect("run doctor");
    assert_eq!(output.status.code(), Some(1));
    let unreachable: Value = serde_json::from_slice(&output.stdout).expect("doctor JSON");
    assert_eq!(unreachable["redis"]["connected"], false);
    assert_eq!(unreachable["redis"]["url"], dead_redis.as_str());
    assert_eq!(unreachable["nats"]["connected"], true);

    // A consumer deleted under the running workers: named, with a fix, exit code 1.
    p.js.get_stream("TL_IN")
        .await
        .expect("TL_IN")
        .delete_consumer("binder-control")
        .await
        .expect("delete consumer");
    let (code, broken) = p.operator_json(&["doctor"]).await;
    assert_eq!(code, 1);
    assert_eq!(broken["ok"], false);
    assert_eq!(
        errors(&broken),
        vec![
            "consumer binder-control on TL_IN is missing: no binder has started, or it was deleted"
        ]
    );
    let (code, text) = p.operator(&["doctor"]).await;
    assert_eq!(code, 1);
    assert!(
        text.contains("ERROR: consumer binder-control on TL_IN is missing"),
        "{text}"
    );
    assert!(text.contains("threadline run binder"), "{text}");

    // Redis without its AOF.
    let mut redis = p.store().await.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query_async(&mut redis)
        .await
        .expect("CONFIG SET");
    let (code, no_aof) = p.operator_json(&["doctor"]).await;
    assert_eq!(code, 1);
    let errors = errors(&no_aof);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[1].contains("AOF persistence is off"), "{errors:?}");
    assert_eq!(no_aof["redis"]["aof_enabled"], false);
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The compact layout needs Redis's listpack limits raised; without them it stays correct
/// (bigger), and `doctor` says which limit to raise. Keys of the layout before buckets are
/// an error: bindings there would be invisible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_low_listpack_limits_and_keys_of_the_old_layout() {
    let p = Pipeline::start().await;
    let (_, healthy) = p.operator_json(&["doctor"]).await;
    assert_eq!(healthy["redis"]["listpack"]["hash-max-listpack-value"], 512);
    assert_eq!(healthy["redis"]["old_layout_keys"], 0);

    // Redis's defaults: routing still works, the buckets are just not listpacks.
    let mut redis = p.store().await.connection();
    for (name, value) in [
        ("hash-max-listpack-value", "64"),
        ("zset-max-listpack-value", "64"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut redis)
            .await
            .expect("CONFIG SET");
    }
    let conversation = Pipeline::discord_channel("100000000000000555");
    let s = spawn(&conversation, Placement::Current, SessionMode::Session);
    let session_key = p.spawn_session(&s).await.session_key;
    let c = threadline_tests::events::completion(&session_key, "still routed");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        delivered[0].destination.conversation_id,
        "100000000000000555"
    );
    let store = p.store().await;
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(store.keys().session(&session_key))
        .query_async(&mut redis)
        .await
        .expect("OBJECT ENCODING");
    assert_eq!(
        encoding, "hashtable",
        "a session value is larger than 64 bytes"
    );

    let _: () = redis::cmd("SET")
        .arg("tl:{b:b-from-before}")
        .arg("agent:larry:subagent:x")
        .query_async(&mut redis)
        .await
        .expect("SET");
    let (code, report) = p.operator_json(&["doctor"]).await;
    assert_eq!(code, 1);
    let problems = |severity: &str| -> Vec<String> {
        report["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .filter(|p| p["severity"] == severity)
            .map(|p| format!("{} / {}", p["what"], p["fix"]))
            .collect()
    };
    let warnings = problems("warning");
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains("hash-max-listpack-value is 64, below 512"),
        "{warnings:#?}"
    );
    assert!(
        warnings[0].contains("CONFIG SET hash-max-listpack-value 512"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].contains("zset-max-listpack-value is 64"),
        "{warnings:#?}"
    );
    let errors = problems("error");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("layout before buckets"), "{errors:#?}");
    assert!(errors[0].contains("tl:{b:b-from-before}"), "{errors:#?}");
    assert_eq!(report["redis"]["old_layout_keys"], 1);
}

/// Every `THREADLINE_*` variable the README, docs/, the compose files, the Dockerfile and the
/// binary's own messages name is one of the variables Threadline derives from its settings
/// (`config::env_vars`), and every derived variable is read: set to a value, it either
/// changes the configuration `threadline config` prints or is refused with a reason — never
/// silently ignored (the README once documented `THREADLINE_MATRIX_HOMESERVER` while the
/// service refused to start with it).
#[test]
fn every_documented_environment_setting_is_read_not_ignored() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut files: Vec<std::path::PathBuf> = [
        "README.md",
        "Dockerfile",
        "infra/compose.yaml",
        "infra/cluster/compose.yaml",
    ]
    .iter()
    .map(|file| format!("{root}/{file}").into())
    .collect();
    let mut dirs = vec![
        std::path::PathBuf::from(format!("{root}/docs")),
        format!("{root}/workers/src").into(),
    ];
    // Where the names are derived, and its tests name foreign ones on purpose.
    let derivation = std::path::PathBuf::from(format!("{root}/workers/src/config"));
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() && path != derivation {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md" || e == "rs") {
                files.push(path);
            }
        }
    }
    let mut named = std::collections::BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable file");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("THREADLINE_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            named
                .entry(tail[..end].trim_end_matches('_').to_owned())
                .or_insert_with(|| file.display().to_string());
            rest = &tail[end..];
        }
    }
    // Not settings: `THREADLINE_*` itself, the config file's path, and the harness's own
    // (the Python for the publisher test, the `threadline` binary tests and the benchmark run).
    for not_a_setting in [
        "THREADLINE",
        threadline::config::CONFIG_FILE_ENV,
        "THREADLINE_PYTHON",
        "THREADLINE_BIN",
    ] {
        named.remove(not_a_setting);
    }
    let derived = threadline::config::env_vars();
    assert!(
        named.len() > 20,
        "found the documented variables: {named:?}"
    );
    let unknown: Vec<_> = named
        .iter()
        .filter(|(name, _)| !derived.contains_key(*name))
        .collect();
    assert!(unknown.is_empty(), "named but not settings: {unknown:?}");

    let config = |var: Option<&str>| {
        let mut command = std::process::Command::new(threadline_tests::pipeline::threadline_bin());
        command
            .arg("config")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        if let Some(var) = var {
            command.env(var, "not-a-value-42");
        }
        let output = command.output().expect("run threadline config");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, baseline) = config(None);
    assert!(ok, "threadline config runs: {baseline}");
    let ignored: Vec<&String> = derived
        .keys()
        .filter(|name| config(Some(name)) == (true, baseline.clone()))
        .collect();
    assert!(
        ignored.is_empty(),
        "settings whose variable is ignored: {ignored:?}"
    );
}
