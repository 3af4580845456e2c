//! The Slack listener against the Slack fake, through the real pipeline (NATS, Redis, binder,
//! router): a person's message in a bound thread — pushed as a signed Events API request, or
//! sent as a Socket Mode envelope — is exactly one `tl.agent.<agent_id>` input with its author
//! and message id. Unsigned, wrongly signed and stale requests are refused and publish
//! nothing; Slack's retry of an event is one input; `url_verification` is answered. In Socket
//! Mode an envelope is acknowledged only once its input is stored, a `disconnect` or a dropped
//! socket loses nothing, and an event sent on two connections is one input. A deleted thread
//! root and an archived channel end their bindings.

use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use threadline::config::{Config, ListenMode, Secret};
use threadline_schemas::{BindingChange, ConversationRef, Placement, SessionInput};
use threadline_tests::fakes::slack::{Push, Signing, APP_TOKEN, SIGNING_SECRET};
use threadline_tests::pipeline::{Options, Pipeline, ACCOUNT};

/// A person of the workspace (Slack user ids start with `U`).
const PERSON: &str = "U0PERSON01";

fn events_mode(c: &mut Config) {
    c.listen_addr = "127.0.0.1:0".into();
    c.slack.account_id = ACCOUNT.into();
    c.slack.listen = ListenMode::Events;
    c.slack.listen_secret = Secret::new(SIGNING_SECRET);
}

fn socket_mode(c: &mut Config) {
    c.listen_addr = "127.0.0.1:0".into();
    c.slack.account_id = ACCOUNT.into();
    c.slack.listen = ListenMode::Socket;
    c.slack.app_token = Secret::new(APP_TOKEN);
    c.slack.connections = Some(2);
}

async fn start(tune: fn(&mut Config)) -> Pipeline {
    Pipeline::start_with(Options {
        tune,
        ..Options::default()
    })
    .await
}

fn events_url(p: &Pipeline) -> String {
    format!("http://{}/slack/events", p.listen_addr.expect("listening"))
}

/// A session bound to a new thread under the test channel: → its key and the thread.
async fn thread_session(p: &Pipeline) -> (String, ConversationRef) {
    p.session_in_thread(&Pipeline::conversation("slack")).await
}

fn channel_of(thread: &ConversationRef) -> String {
    thread
        .parent_conversation_id
        .clone()
        .expect("a thread has its channel")
}

/// The inputs of `session_key` whose text is `text`.
fn inputs_of(p: &Pipeline, session_key: &str, text: &str) -> Vec<SessionInput> {
    p.inputs()
        .into_iter()
        .filter(|i| i.session_key == session_key && i.text == text)
        .collect()
}

/// Waits (bounded) until `session_key` has an input of `text`; → all such inputs then.
async fn wait_input(p: &Pipeline, session_key: &str, text: &str) -> Vec<SessionInput> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = inputs_of(p, session_key, text);
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the fake has seen `n` sockets opened in all.
async fn wait_opened(p: &Pipeline, n: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while p.slack.sockets_opened() < n {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_in_a_bound_thread_is_one_input_with_its_author_and_message_id() {
    let p = start(events_mode).await;
    let (key, thread) = thread_session(&p).await;
    let ts = p.slack.person_writes(
        &channel_of(&thread),
        Some(&thread.conversation_id),
        PERSON,
        "what about the budget?",
    );
    let pushed = p
        .slack
        .push_event(&events_url(&p), &p.slack.last_event())
        .await;
    assert_eq!(pushed.status, 200, "{}", pushed.body);

    let inputs = wait_input(&p, &key, "what about the budget?").await;
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    let input = &inputs[0];
    assert_eq!(
        input.origin, thread,
        "the input comes from the bound thread"
    );
    let author = input.author.as_ref().expect("the input names its author");
    assert_eq!((author.id.as_str(), author.is_bot), (PERSON, false));
    assert_eq!(input.message_id.as_deref(), Some(ts.as_str()));
    p.settle(Duration::from_millis(300)).await;
    assert_eq!(inputs_of(&p, &key, "what about the budget?").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_wrongly_signed_and_stale_requests_are_refused_and_publish_nothing() {
    let p = start(events_mode).await;
    let (key, thread) = thread_session(&p).await;
    p.slack.person_writes(
        &channel_of(&thread),
        Some(&thread.conversation_id),
        PERSON,
        "forged",
    );
    let event = p.slack.last_event();
    let url = events_url(&p);
    for signing in [
        Signing::Unsigned,
        Signing::WrongSecret,
        // Slack's replay window is five minutes either side.
        Signing::At(now_secs() - 301),
        Signing::At(now_secs() + 301),
    ] {
        let push = Push {
            signing: signing.clone(),
            retry: None,
        };
        let pushed = p.slack.push_event_with(&url, &event, push).await;
        assert_eq!(pushed.status, 401, "{signing:?}");
    }
    // A body changed after signing is refused too: the signature covers the raw bytes.
    let client = reqwest::Client::new();
    let body = event.to_string();
    let at = now_secs();
    let signature = threadline_tests::fakes::slack::sign(SIGNING_SECRET, at, body.as_bytes());
    let tampered = body.replace("forged", "forgeD");
    let status = client
        .post(&url)
        .header("X-Slack-Request-Timestamp", at.to_string())
        .header("X-Slack-Signature", signature)
        .header("Content-Type", "application/json")
        .body(tampered)
        .send()
        .await
        .expect("answered")
        .status();
    assert_eq!(status.as_u16(), 401);

    p.settle(Duration::from_millis(500)).await;
    assert!(
        inputs_of(&p, &key, "forged").is_empty() && inputs_of(&p, &key, "forgeD").is_empty(),
        "nothing refused reached the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slacks_retry_of_an_event_is_one_input() {
    let p = start(events_mode).await;
    let (key, thread) = thread_session(&p).await;
    p.slack.person_writes(
        &channel_of(&thread),
        Some(&thread.conversation_id),
        PERSON,
        "said once",
    );
    let event = p.slack.last_event();
    let url = events_url(&p);
    assert_eq!(p.slack.push_event(&url, &event).await.status, 200);
    for (num, reason) in [(1, "http_timeout"), (2, "http_error")] {
        let push = Push {
            signing: Signing::Valid,
            retry: Some((num, reason.into())),
        };
        assert_eq!(
            p.slack.push_event_with(&url, &event, push).await.status,
            200
        );
    }
    assert_eq!(wait_input(&p, &key, "said once").await.len(), 1);
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(inputs_of(&p, &key, "said once").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_is_answered_with_its_challenge_only_when_signed() {
    let p = start(events_mode).await;
    let challenge = json!({
        "token": "fake-verification-token",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    });
    let url = events_url(&p);
    let pushed = p.slack.push_event(&url, &challenge).await;
    assert_eq!(pushed.status, 200);
    let body: serde_json::Value = serde_json::from_str(&pushed.body).expect("json answer");
    assert_eq!(body["challenge"], challenge["challenge"]);
    let unsigned = Push {
        signing: Signing::Unsigned,
        retry: None,
    };
    assert_eq!(
        p.slack
            .push_event_with(&url, &challenge, unsigned)
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_envelope_is_acknowledged_only_once_its_input_is_stored() {
    let mut p = start(socket_mode).await;
    assert_eq!(p.slack.wait_sockets(2, Duration::from_secs(10)).await, 2);
    let (key, thread) = thread_session(&p).await;
    let acked_before = p.slack.acked().len();

    // With Redis gone nothing can be stored: the envelope stays unacknowledged.
    p.redis.kill().await;
    p.slack.person_writes(
        &channel_of(&thread),
        Some(&thread.conversation_id),
        PERSON,
        "kept until stored",
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        p.slack.acked().len(),
        acked_before,
        "nothing acknowledged unstored"
    );
    assert_eq!(p.slack.unacked(), 1);

    p.redis.start_again().await;
    assert_eq!(p.slack.wait_all_acked(Duration::from_secs(20)).await, 0);
    assert_eq!(wait_input(&p, &key, "kept until stored").await.len(), 1);
    p.settle(Duration::from_millis(300)).await;
    assert_eq!(inputs_of(&p, &key, "kept until stored").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_or_a_dropped_socket_reconnects_and_loses_nothing() {
    let p = start(socket_mode).await;
    assert_eq!(p.slack.wait_sockets(2, Duration::from_secs(10)).await, 2);
    let (key, thread) = thread_session(&p).await;
    let channel = channel_of(&thread);
    let root = Some(thread.conversation_id.as_str());
    let opened = p.slack.sockets_opened();

    p.slack.person_writes(&channel, root, PERSON, "before");
    p.slack.socket_disconnect("refresh_requested");
    // Written while the sockets are being replaced.
    for text in ["during 1", "during 2", "during 3"] {
        p.slack.person_writes(&channel, root, PERSON, text);
    }
    assert!(
        wait_opened(&p, opened + 2).await,
        "both sockets replaced after the disconnect"
    );
    p.slack.socket_drop_all();
    p.slack
        .person_writes(&channel, root, PERSON, "after a drop");
    assert!(
        wait_opened(&p, opened + 4).await,
        "both sockets reopened after the drop"
    );

    for text in ["before", "during 1", "during 2", "during 3", "after a drop"] {
        assert_eq!(wait_input(&p, &key, text).await.len(), 1, "{text}");
    }
    assert_eq!(p.slack.wait_all_acked(Duration::from_secs(20)).await, 0);
    p.settle(Duration::from_millis(300)).await;
    for text in ["before", "during 1", "during 2", "during 3", "after a drop"] {
        assert_eq!(inputs_of(&p, &key, text).len(), 1, "{text} once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_on_two_connections_is_one_input() {
    let p = start(socket_mode).await;
    assert_eq!(p.slack.wait_sockets(2, Duration::from_secs(10)).await, 2);
    let (key, thread) = thread_session(&p).await;
    p.slack.socket_send_to_all(true);
    p.slack.person_writes(
        &channel_of(&thread),
        Some(&thread.conversation_id),
        PERSON,
        "twice on the wire",
    );
    let event_id = p.slack.last_event()["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    assert_eq!(p.slack.wait_all_acked(Duration::from_secs(10)).await, 0);
    let copies = p
        .slack
        .envelopes_sent()
        .iter()
        .filter(|id| **id == event_id)
        .count();
    assert_eq!(copies, 2, "the fake sent it on both sockets");
    assert_eq!(wait_input(&p, &key, "twice on the wire").await.len(), 1);
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(inputs_of(&p, &key, "twice on the wire").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_thread_root_ends_the_threads_binding() {
    let p = start(events_mode).await;
    let (key, thread) = thread_session(&p).await;
    p.slack
        .person_deletes(&channel_of(&thread), &thread.conversation_id);
    let pushed = p
        .slack
        .push_event(&events_url(&p), &p.slack.last_event())
        .await;
    assert_eq!(pushed.status, 200);
    let ended = p.wait_binding(&key, BindingChange::Ended).await;
    assert_eq!(ended.binding.conversation, thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_channel_ends_the_bindings_in_it() {
    let p = start(socket_mode).await;
    let channel = Pipeline::conversation("slack");
    let key = p.session_in(&channel, Placement::Current).await;
    p.wait_binding(&key, BindingChange::Bound).await;
    p.slack.person_archives(&channel.conversation_id, PERSON);
    let ended = p.wait_binding(&key, BindingChange::Ended).await;
    assert_eq!(ended.binding.conversation, channel);
    assert_eq!(p.slack.wait_all_acked(Duration::from_secs(10)).await, 0);
}
