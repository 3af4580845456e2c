//! The Python publisher (`tests/python/`, nats-py + msgpack) against a running pipeline:
//! it spawns a child session bound to a new Discord thread, reports a completion, and reads
//! the `tl.out.*` outcomes back; the fake platform shows the completion once, in the thread.
//!
//! The interpreter comes from `THREADLINE_PYTHON` (infra/test.sh prepares `target/py-venv`
//! and sets it). In CI (`CI=true`) a missing interpreter or package fails the test;
//! elsewhere the test is skipped with a loud message.

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use threadline_tests::pipeline::{Pipeline, ACCOUNT};

const PARENT: &str = "100000000000000001";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The interpreter with the publisher's requirements, or `None` (skip) outside CI.
fn python() -> Option<PathBuf> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let candidate = std::env::var_os("THREADLINE_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = repo_root().join("target/py-venv/bin/python");
            venv.is_file().then_some(venv)
        });
    let problem = match &candidate {
        None => "THREADLINE_PYTHON is not set and target/py-venv does not exist".to_owned(),
        Some(python) => match std::process::Command::new(python)
            .args(["-c", "import nats, msgpack, jsonschema"])
            .output()
        {
            Ok(out) if out.status.success() => return candidate,
            Ok(out) => format!(
                "{} cannot import the publisher's requirements: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(error) => format!("cannot run {}: {error}", python.display()),
        },
    };
    if in_ci {
        panic!("{problem}; infra/test.sh prepares it (ensure_python_env)");
    }
    eprintln!(
        "\n\n*** SKIPPED: the Python publisher test: {problem}.\n\
         *** Run ./infra/test.sh, or: python3 -m venv target/py-venv && \
         target/py-venv/bin/pip install -r tests/python/requirements.txt\n\n"
    );
    None
}

#[test]
fn python_publisher_builds_events_that_match_the_published_schemas() {
    let Some(python) = python() else { return };
    let out = std::process::Command::new(python)
        .args(["-m", "unittest", "discover", "-s", "tests/python", "-v"])
        .current_dir(repo_root())
        .output()
        .expect("run the Python unit check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // unittest reports on stderr: every check ran, none skipped.
    assert!(stderr.contains("Ran 4 tests"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_publisher_spawns_a_thread_session_and_its_completion_is_posted_there_once() {
    let Some(python) = python() else { return };
    let p = Pipeline::start().await;
    let content = format!("hello from python {}", uuid::Uuid::new_v4());
    let run = tokio::process::Command::new(python)
        .arg(repo_root().join("tests/python/threadline_publisher.py"))
        .args(["--nats", &p.nats.url(), "--prefix", p.subjects.prefix()])
        .args(["--timeout", "30", "scenario"])
        .args([
            "--agent",
            "larry",
            "--requester-session",
            "agent:larry:main",
        ])
        .args(["--channel", "discord", "--account", ACCOUNT])
        .args(["--conversation", PARENT, "--thread-name", "from python"])
        .args(["--content", &content])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the Python scenario finishes")
        .expect("run the Python publisher");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("the script prints JSON");

    // What the script read back from tl.out.*.
    let session_key = seen["session_key"].as_str().expect("session key");
    assert_eq!(seen["spawned"]["event_id"], seen["spawn_event_id"]);
    assert_eq!(seen["spawned"]["session_key"], session_key);
    assert_eq!(seen["spawned"]["mode"], "session");
    assert_eq!(seen["binding"]["change"], "bound");
    let binding = &seen["binding"]["binding"];
    assert_eq!(binding["target_session_key"], session_key);
    assert_eq!(binding["status"], "active");
    assert_eq!(binding["conversation"]["parent_conversation_id"], PARENT);
    let thread = binding["conversation"]["conversation_id"]
        .as_str()
        .expect("thread id")
        .to_owned();
    let delivered = &seen["delivered"];
    assert_eq!(delivered["event_id"], seen["completion_event_id"]);
    assert_eq!(delivered["mode"], "bound");
    assert_eq!(delivered["destination"]["conversation_id"], thread.as_str());
    // The second publish of the same event id was dropped by the stream's duplicate window.
    assert_eq!(seen["completion_duplicate_dropped"], true);
    // The completion's trace continued to tl.out.delivered.
    let trace_id = |tp: &Value| {
        tp.as_str()
            .and_then(|t| t.split('-').nth(1))
            .map(str::to_owned)
    };
    assert!(trace_id(&seen["sent_traceparent"]).is_some());
    assert_eq!(
        trace_id(&seen["delivered_traceparent"]),
        trace_id(&seen["sent_traceparent"])
    );

    // What the platform stored: the content once, in the thread, nothing in the parent.
    let completion_id = seen["completion_event_id"].as_str().expect("completion id");
    p.wait_delivered(completion_id, 1).await;
    p.settle(Duration::from_millis(500)).await;
    let in_thread: Vec<_> = p
        .discord
        .messages_in(&thread)
        .into_iter()
        .filter(|m| m.content == content)
        .collect();
    assert_eq!(in_thread.len(), 1, "{in_thread:?}");
    assert_eq!(delivered["platform_message_id"], in_thread[0].id.as_str());
    assert!(p
        .discord
        .messages_in(PARENT)
        .iter()
        .all(|m| m.content != content));
    let reports = p
        .delivered()
        .into_iter()
        .filter(|d| d.event_id == completion_id)
        .count();
    assert_eq!(reports, 1);
}
