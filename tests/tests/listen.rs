//! The listener core, through the real pipeline: inbound webhooks (a bridge's signed
//! messages and conversation changes), the one-event-per-platform-message guarantee, the
//! conversation lookup, and the leases that let one replica at a time poll.

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use threadline::config::{Config, Secret};
use threadline::io::nats::StreamKind;
use threadline::listen::webhook::sign;
use threadline::runtime::leases::{self, Held};
use threadline::runtime::WorkerContext;
use threadline_schemas::{BindingChange, ConversationRef, InputSource, SessionInput};
use threadline_tests::pipeline::{Options, Pipeline};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bridge-secret";

fn with_inbound_webhook(config: &mut Config) {
    for hook in config.webhooks.values_mut() {
        hook.inbound_secret = Some(Secret::new(SECRET));
    }
}

async fn pipeline() -> Pipeline {
    Pipeline::start_with(Options {
        tune: with_inbound_webhook,
        ..Options::default()
    })
    .await
}

fn now_s() -> u64 {
    threadline_schemas::now_ms() / 1000
}

/// POSTs `body` to `/webhooks/<name>`, signed at `at` with `secret` (unsigned when `None`).
async fn push(
    pipeline: &Pipeline,
    name: &str,
    body: &Value,
    signed: Option<(&str, u64)>,
) -> (u16, Value) {
    let addr = pipeline
        .listen_addr
        .expect("the listeners' HTTP server runs");
    let bytes = serde_json::to_vec(body).expect("json");
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/{name}"))
        .header("content-type", "application/json");
    if let Some((secret, at)) = signed {
        let (timestamp, signature) = sign(secret.as_bytes(), at, &bytes);
        request = request
            .header("x-threadline-timestamp", timestamp)
            .header("x-threadline-signature", signature);
    }
    let response = request.body(bytes).send().await.expect("listener answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn message(conversation: &ConversationRef, message_id: &str, text: &str) -> Value {
    json!({
        "kind": "message",
        "account_id": conversation.account_id,
        "conversation_id": conversation.conversation_id,
        "parent_conversation_id": conversation.parent_conversation_id,
        "message_id": message_id,
        "text": text,
        "author": {"id": "wa:+15550001", "is_bot": false, "name": "Ada"},
        "reply_to": "wa-msg-0",
        "attachments": [{"name": "plan.pdf", "content_type": "application/pdf", "size": 1234, "url": "https://bridge.example/f/1"}],
    })
}

fn inputs_for(pipeline: &Pipeline, session_key: &str) -> Vec<SessionInput> {
    pipeline
        .inputs()
        .into_iter()
        .filter(|i| i.session_key == session_key && i.source == InputSource::Message)
        .collect()
}

#[tokio::test]
async fn a_signed_bridge_message_in_a_bound_thread_is_one_input_with_its_author_and_ids() {
    let pipeline = pipeline().await;
    let parent = Pipeline::webhook_conversation("threads", "chat-1");
    let (session, thread) = pipeline.session_in_thread(&parent).await;

    let body = message(&thread, "wa-msg-1", "also check the totals");
    let (status, answer) = push(&pipeline, "threads", &body, Some((SECRET, now_s()))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false);
    let event_id = answer["event_id"].as_str().expect("event id").to_owned();
    let inputs = pipeline.wait_inputs(&event_id, 1).await;
    assert_eq!(inputs.len(), 1);
    let input = &inputs[0];
    assert_eq!(input.session_key, session);
    assert_eq!(input.text, "also check the totals");
    assert!(input.origin.same_place(&thread));
    let author = input.author.as_ref().expect("author on the input");
    assert_eq!((author.id.as_str(), author.is_bot), ("wa:+15550001", false));
    assert_eq!(author.name.as_deref(), Some("Ada"));
    assert_eq!(input.message_id.as_deref(), Some("wa-msg-1"));
    assert_eq!(input.reply_to.as_deref(), Some("wa-msg-0"));
    assert_eq!(input.attachments.len(), 1);
    assert_eq!(input.attachments[0].url, "https://bridge.example/f/1");

    // The bridge retries (a lost answer): the same platform message is the same event.
    let (status, again) = push(&pipeline, "threads", &body, Some((SECRET, now_s()))).await;
    assert_eq!(status, 200);
    assert_eq!(again["event_id"], event_id.as_str());
    assert_eq!(again["duplicate"], true);
    pipeline.settle(Duration::from_millis(500)).await;
    assert_eq!(
        inputs_for(&pipeline, &session).len(),
        1,
        "one input per platform message"
    );
}

#[tokio::test]
async fn unsigned_wrongly_signed_stale_and_malformed_requests_are_refused_and_publish_nothing() {
    let pipeline = pipeline().await;
    let parent = Pipeline::webhook_conversation("threads", "chat-2");
    let (session, thread) = pipeline.session_in_thread(&parent).await;
    let body = message(&thread, "wa-msg-9", "let me in");

    let (unsigned, _) = push(&pipeline, "threads", &body, None).await;
    let (wrong, _) = push(&pipeline, "threads", &body, Some(("guess", now_s()))).await;
    let (stale, why) = push(&pipeline, "threads", &body, Some((SECRET, now_s() - 600))).await;
    assert_eq!((unsigned, wrong, stale), (401, 401, 401));
    assert!(
        why["error"]
            .as_str()
            .unwrap_or_default()
            .contains("five minutes"),
        "{why}"
    );

    let bad = json!({"kind": "message", "conversation_id": thread.conversation_id});
    let (malformed, why) = push(&pipeline, "threads", &bad, Some((SECRET, now_s()))).await;
    assert_eq!(malformed, 400);
    assert!(
        why["error"]
            .as_str()
            .unwrap_or_default()
            .contains("missing field"),
        "{why}"
    );

    // A webhook channel without an inbound secret has no route at all.
    let (unrouted, _) = push(&pipeline, "nowhere", &body, Some((SECRET, now_s()))).await;
    assert_eq!(unrouted, 404);

    pipeline.settle(Duration::from_millis(500)).await;
    assert!(inputs_for(&pipeline, &session).is_empty());
    let stream = pipeline
        .js
        .get_stream(StreamKind::Inbound.name(&pipeline.subjects))
        .await
        .expect("the inbound stream");
    let heard = stream
        .get_last_raw_message_by_subject(&pipeline.subjects.in_message("webhook:threads"))
        .await;
    assert!(heard.is_err(), "nothing reached the inbound stream");
}

#[tokio::test]
async fn a_deleted_thread_heard_from_the_bridge_ends_its_binding_at_once() {
    let pipeline = pipeline().await;
    let parent = Pipeline::webhook_conversation("threads", "chat-3");
    let (session, thread) = pipeline.session_in_thread(&parent).await;

    let change = json!({
        "kind": "change",
        "account_id": thread.account_id,
        "conversation_id": thread.conversation_id,
        "parent_conversation_id": thread.parent_conversation_id,
        "change": "deleted",
        "key": "wa-evt-77",
    });
    let (status, answer) = push(&pipeline, "threads", &change, Some((SECRET, now_s()))).await;
    assert_eq!(status, 200, "{answer}");
    let ended = pipeline.wait_binding(&session, BindingChange::Ended).await;
    assert_eq!(ended.reason, "thread_deleted");
    assert!(ended.binding.conversation.same_place(&thread));

    // A person writing there afterwards reaches nobody: the conversation is unbound.
    let body = message(&thread, "wa-msg-late", "anyone?");
    let (status, _) = push(&pipeline, "threads", &body, Some((SECRET, now_s()))).await;
    assert_eq!(status, 200);
    pipeline.settle(Duration::from_millis(500)).await;
    assert!(inputs_for(&pipeline, &session).is_empty());
}

#[tokio::test]
async fn a_gateway_asks_who_is_bound_to_a_conversation_and_hears_the_bound_session() {
    let pipeline = pipeline().await;
    let parent = Pipeline::webhook_conversation("threads", "chat-4");
    let (session, thread) = pipeline.session_in_thread(&parent).await;
    let ask = |conversation: &ConversationRef| {
        let body = serde_json::to_vec(conversation).expect("json");
        let client = pipeline.client.clone();
        let subject = pipeline.subjects.lookup_conversation();
        async move {
            let reply = client
                .request(subject, body.into())
                .await
                .expect("a router answers");
            serde_json::from_slice::<Value>(&reply.payload).expect("json reply")
        }
    };
    let bound = ask(&thread).await;
    let sessions = bound["bound"].as_array().expect("bound list");
    assert_eq!(sessions.len(), 1, "{bound}");
    assert_eq!(sessions[0]["session_key"], session.as_str());
    assert_eq!(sessions[0]["agent_id"], "larry");

    let elsewhere = ask(&Pipeline::webhook_conversation("threads", "chat-unbound")).await;
    assert_eq!(elsewhere["bound"], json!([]));

    let mut invalid = thread.clone();
    invalid.conversation_id = String::new();
    let refused = ask(&invalid).await;
    assert!(refused["error"].is_string(), "{refused}");
}

/// What the units of one lease holder did, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(u32, &'static str)>>>);

impl Log {
    fn held_now(&self) -> Vec<u32> {
        let mut units = std::collections::BTreeMap::new();
        for (unit, what) in self.0.lock().expect("log").iter() {
            units.insert(*unit, *what == "start");
        }
        units
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(u, _)| u)
            .collect()
    }
}

async fn holder(
    pipeline: &Pipeline,
    group: &str,
    units: u32,
) -> (Log, CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let ctx = WorkerContext::connect(Arc::new(pipeline.config.clone()), shutdown.clone())
        .await
        .expect("connect");
    let log = Log::default();
    let record = log.clone();
    let task = tokio::spawn(leases::hold(
        ctx,
        group.to_owned(),
        units,
        move |held: Held| {
            let record = record.clone();
            async move {
                record.0.lock().expect("log").push((held.unit(), "start"));
                held.lost().cancelled().await;
                record.0.lock().expect("log").push((held.unit(), "stop"));
            }
        },
    ));
    (log, shutdown, task)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_replicas_split_the_units_and_a_stopped_one_hands_its_unit_over() {
    let pipeline = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let (a, stop_a, task_a) = holder(&pipeline, "listen:test:split", 2).await;
    until("the first replica holds both units", || {
        a.held_now() == vec![0, 1]
    })
    .await;
    let (b, _stop_b, _task_b) = holder(&pipeline, "listen:test:split", 2).await;
    until("the units are split one each", || {
        a.held_now().len() == 1 && b.held_now().len() == 1
    })
    .await;
    assert_ne!(a.held_now(), b.held_now(), "never the same unit twice");

    stop_a.cancel();
    task_a.await.expect("the holder drains");
    assert!(a.held_now().is_empty());
    until("the second replica took over", || {
        b.held_now() == vec![0, 1]
    })
    .await;
}

#[tokio::test]
async fn only_the_current_holder_moves_a_units_cursor() {
    let pipeline = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let shutdown = CancellationToken::new();
    let ctx = WorkerContext::connect(Arc::new(pipeline.config.clone()), shutdown.clone())
        .await
        .expect("connect");
    let seen: Arc<Mutex<Vec<Held>>> = Arc::default();
    let keep = seen.clone();
    let task = tokio::spawn(leases::hold(
        ctx,
        "listen:test:cursor".into(),
        1,
        move |held: Held| {
            let keep = keep.clone();
            async move {
                keep.lock().expect("held").push(held.clone());
                held.lost().cancelled().await;
            }
        },
    ));
    until("the unit is held", || {
        !seen.lock().expect("held").is_empty()
    })
    .await;
    let held = seen.lock().expect("held")[0].clone();
    assert_eq!(held.cursor().await.expect("read"), None);
    held.save_cursor("offset-42")
        .await
        .expect("the holder saves");
    assert_eq!(
        held.cursor().await.expect("read").as_deref(),
        Some("offset-42")
    );

    shutdown.cancel();
    task.await.expect("drains");
    // Given back: the old holder's write is refused, and what it saved stays.
    assert!(held.save_cursor("offset-1").await.is_err());
    assert_eq!(
        held.cursor().await.expect("read").as_deref(),
        Some("offset-42")
    );
    assert!(held.lost().is_cancelled());
}
