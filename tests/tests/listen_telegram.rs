//! The Telegram listener against the fake Bot API (getUpdates long polling, webhook pushes,
//! both checked against the vendored Bot API description), through real NATS and Redis to
//! the router: a person's message in a bound forum topic becomes exactly one session input;
//! a poll listener `kill -9`ed while people write, then restarted, loses and repeats
//! nothing; two poll listeners take turns instead of fighting over `getUpdates`; webhook
//! pushes need the secret, and a repeated push is one input; a closed topic ends the
//! binding.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use threadline::config::{Config, ListenMode, Secret};
use threadline_schemas::{BindingChange, ConversationRef, MessageReceived, SessionInput};
use threadline_tests::fakes::telegram::{TelegramUser, SECRET_HEADER};
use threadline_tests::pipeline::{Options, Pipeline, ACCOUNT};

const SECRET: &str = "tl-webhook_secret-1";

/// The deployment's bot account stamped on what the listener hears, so it meets the
/// bindings the harness makes; short long polls and leases, so a test's handover is quick.
fn listening(c: &mut Config) {
    c.telegram.account_id = ACCOUNT.into();
    c.telegram.poll_timeout_ms = Some(1_000);
    c.listen_lease_ms = 1_500;
}

fn poll_in_process(c: &mut Config) {
    listening(c);
    c.telegram.listen = ListenMode::Poll;
}

fn ada() -> TelegramUser {
    TelegramUser {
        id: 4_242,
        is_bot: false,
        first_name: "Ada".into(),
        last_name: Some("Lovelace".into()),
        username: Some("ada".into()),
    }
}

fn ids(topic: &ConversationRef) -> (i64, i64) {
    let chat = topic
        .parent_conversation_id
        .as_deref()
        .expect("a topic has its chat")
        .parse()
        .expect("numeric chat");
    (chat, topic.conversation_id.parse().expect("numeric topic"))
}

/// Every `tl.in.message.telegram` the listener published, read back from the stream.
async fn heard(p: &Pipeline) -> Vec<MessageReceived> {
    let subject = p.subjects.in_message("telegram");
    let mut stream =
        p.js.get_stream(format!("{}_IN", p.subjects.prefix().to_uppercase()))
            .await
            .expect("inbound stream");
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut found = Vec::new();
    for seq in 1..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        if m.subject.as_str() == subject {
            found.push(rmp_serde::from_slice(&m.payload).expect("MessageReceived"));
        }
    }
    found
}

/// The inputs of `session_key` that came from people, by text.
fn inputs_by_text(p: &Pipeline, session_key: &str) -> BTreeMap<String, Vec<SessionInput>> {
    let mut by = BTreeMap::<String, Vec<SessionInput>>::new();
    for i in p
        .inputs()
        .into_iter()
        .filter(|i| i.session_key == session_key)
    {
        by.entry(i.text.clone()).or_default().push(i);
    }
    by
}

/// Waits until every text in `texts` reached the session at least once (30 s at most).
async fn wait_all(p: &Pipeline, session_key: &str, texts: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let by = inputs_by_text(p, session_key);
        if texts.iter().all(|t| by.contains_key(t)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each text reached the session exactly once.
fn assert_each_once(p: &Pipeline, session_key: &str, texts: &[String]) {
    let by = inputs_by_text(p, session_key);
    for t in texts {
        let n = by.get(t).map_or(0, Vec::len);
        assert_eq!(n, 1, "{t:?} reached the session {n} times");
    }
}

fn kill_9(child: &tokio::process::Child) {
    let pid = child.id().expect("the listener runs");
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid}");
}

fn listen_process(p: &Pipeline) -> tokio::process::Child {
    p.command(&["run", "listen", "telegram"])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start `threadline run listen telegram`")
}

/// Waits until the fake saw `n` more getUpdates calls than `before`.
async fn polled(p: &Pipeline, before: usize, n: usize) {
    let count = || {
        p.telegram
            .update_calls()
            .iter()
            .filter(|(m, _)| m == "getUpdates")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() < before + n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(count() >= before + n, "nobody polls getUpdates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_writing_in_a_bound_topic_is_one_input_with_author_and_message_id() {
    let p = Pipeline::start_with(Options {
        in_process: true,
        tune: poll_in_process,
    })
    .await;
    let (key, topic) = p
        .session_in_thread(&Pipeline::conversation("telegram"))
        .await;
    let (chat, thread) = ids(&topic);
    let first = p
        .telegram
        .person_writes(chat, Some(thread), &ada(), "first");
    let answer = p
        .telegram
        .person_replies(chat, Some(thread), &ada(), first, "and a reply");
    let texts = ["first".to_owned(), "and a reply".to_owned()];
    wait_all(&p, &key, &texts).await;
    p.settle(Duration::from_millis(500)).await;
    assert_each_once(&p, &key, &texts);
    let input = &inputs_by_text(&p, &key)["first"][0];
    assert_eq!(input.origin, topic, "the input comes from the topic");

    let heard = heard(&p).await;
    assert_eq!(heard.len(), 2, "{heard:#?}");
    let m = &heard[0];
    assert_eq!(m.conversation, topic);
    assert_eq!(m.message_id.as_deref(), Some(first.to_string().as_str()));
    assert_eq!(m.author.id, "4242");
    assert!(!m.author.is_bot);
    assert_eq!(m.author.name.as_deref(), Some("Ada Lovelace"));
    // Every topic message answers the topic's root: that is no reply.
    assert_eq!(m.reply_to, None);
    assert_eq!(
        heard[1].message_id.as_deref(),
        Some(answer.to_string().as_str())
    );
    assert_eq!(
        heard[1].reply_to.as_deref(),
        Some(first.to_string().as_str())
    );

    // What the listener asked for, as the Bot API describes it (the fake's drop checks).
    let calls = p.telegram.update_calls();
    assert_eq!(
        calls[0].0, "deleteWebhook",
        "a left-over webhook is taken down first"
    );
    assert_ne!(calls[0].1["drop_pending_updates"], true);
    let poll = calls
        .iter()
        .find(|(m, _)| m == "getUpdates")
        .expect("polled");
    assert_eq!(
        poll.1["allowed_updates"],
        serde_json::json!(["message", "channel_post"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_listener_killed_while_people_write_loses_and_repeats_nothing() {
    let mut p = Pipeline::start_with(Options {
        in_process: true,
        tune: listening,
    })
    .await;
    let (key, topic) = p
        .session_in_thread(&Pipeline::conversation("telegram"))
        .await;
    let (chat, thread) = ids(&topic);
    // The routing workers stay in this process; the listener is its own process.
    p.config.telegram.listen = ListenMode::Poll;
    p.rewrite_config_file();
    let first = listen_process(&p);
    polled(&p, 0, 1).await;

    let mut texts = Vec::new();
    for n in 0..6 {
        let t = format!("before the kill {n}");
        p.telegram.person_writes(chat, Some(thread), &ada(), &t);
        texts.push(t);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    kill_9(&first);
    // People keep writing while nobody listens.
    for n in 0..6 {
        let t = format!("while down {n}");
        p.telegram.person_writes(chat, Some(thread), &ada(), &t);
        texts.push(t);
    }
    let calls = p.telegram.update_calls().len();
    let _second = listen_process(&p);
    polled(&p, calls, 1).await;
    for n in 0..6 {
        let t = format!("after the restart {n}");
        p.telegram.person_writes(chat, Some(thread), &ada(), &t);
        texts.push(t);
    }
    wait_all(&p, &key, &texts).await;
    p.settle(Duration::from_secs(1)).await;
    assert_each_once(&p, &key, &texts);
    // Each was published once as well: the offset was kept, nothing re-read was new.
    let heard = heard(&p).await;
    assert_eq!(heard.len(), texts.len(), "{heard:#?}");
    assert_eq!(p.telegram.pending_updates(), 0, "every update confirmed");
    p.stop_in_process().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_poll_listeners_one_polls_and_the_other_takes_over_when_it_is_killed() {
    let mut p = Pipeline::start_with(Options {
        in_process: true,
        tune: listening,
    })
    .await;
    let (key, topic) = p
        .session_in_thread(&Pipeline::conversation("telegram"))
        .await;
    let (chat, thread) = ids(&topic);
    p.config.telegram.listen = ListenMode::Poll;
    p.rewrite_config_file();
    let a = listen_process(&p);
    polled(&p, 0, 1).await;
    let b = listen_process(&p);

    let mut texts = Vec::new();
    for n in 0..8 {
        let t = format!("both up {n}");
        p.telegram.person_writes(chat, Some(thread), &ada(), &t);
        texts.push(t);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_all(&p, &key, &texts).await;
    // Two unfenced pollers with one-second long polls would end each other's calls over and
    // over (409); the lease leaves at most a handover's overlap.
    let conflicts = p.telegram.get_updates_conflicts();
    assert!(
        conflicts <= 1,
        "{conflicts} getUpdates ended by a concurrent one"
    );

    // Kill each in turn (one of them is the poller), with a fresh one in between.
    kill_9(&a);
    for n in 0..4 {
        let t = format!("a killed {n}");
        p.telegram.person_writes(chat, Some(thread), &ada(), &t);
        texts.push(t);
    }
    wait_all(&p, &key, &texts).await;
    let _c = listen_process(&p);
    kill_9(&b);
    for n in 0..4 {
        let t = format!("b killed {n}");
        p.telegram.person_writes(chat, Some(thread), &ada(), &t);
        texts.push(t);
    }
    wait_all(&p, &key, &texts).await;
    p.settle(Duration::from_secs(1)).await;
    assert_each_once(&p, &key, &texts);
    p.stop_in_process().await;
}

/// A deployment whose in-process workers listen by webhook on a known loopback port.
async fn webhook_pipeline() -> (Pipeline, String) {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: listening,
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/telegram/webhook");
    p.config.listen_addr = format!("127.0.0.1:{port}");
    p.config.telegram.listen = ListenMode::Webhook;
    p.config.telegram.public_url = Some(url.clone());
    p.config.telegram.listen_secret = Secret::new(SECRET);
    p.start_in_process().await;
    assert_eq!(p.telegram.webhook_url().as_deref(), Some(url.as_str()));
    (p, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_pushes_need_the_secret_and_a_repeated_push_is_one_input() {
    let (p, url) = webhook_pipeline().await;
    let set = p
        .telegram
        .update_calls()
        .into_iter()
        .find(|(m, _)| m == "setWebhook")
        .expect("setWebhook called");
    assert_eq!(set.1["secret_token"], SECRET);
    assert_eq!(
        set.1["allowed_updates"],
        serde_json::json!(["message", "channel_post"])
    );
    let (key, topic) = p
        .session_in_thread(&Pipeline::conversation("telegram"))
        .await;
    let (chat, thread) = ids(&topic);

    let id = p
        .telegram
        .person_writes(chat, Some(thread), &ada(), "pushed");
    let texts = ["pushed".to_owned()];
    wait_all(&p, &key, &texts).await;
    let update_id = *p.telegram.update_ids().last().expect("an update");
    // Telegram repeats a push whose answer it missed: the same update, one input.
    assert_eq!(p.telegram.push_again(update_id).await, Some(200));
    p.settle(Duration::from_millis(500)).await;
    assert_each_once(&p, &key, &texts);
    let heard = heard(&p).await;
    assert_eq!(heard.len(), 1);
    assert_eq!(
        heard[0].message_id.as_deref(),
        Some(id.to_string().as_str())
    );

    // A forged push: the right shape, a wrong or missing secret.
    let forged = serde_json::json!({ "update_id": 1, "message": {
        "message_id": 999, "message_thread_id": thread, "is_topic_message": true,
        "from": { "id": 666, "is_bot": false, "first_name": "Mallory" },
        "chat": { "id": chat, "type": "supergroup", "is_forum": true },
        "date": 1_700_000_000, "text": "forged" } });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    for secret in [
        Some("wrong"),
        Some(""),
        None,
        Some(&SECRET[..SECRET.len() - 1]),
    ] {
        let mut request = client.post(&url).json(&forged);
        if let Some(s) = secret {
            request = request.header(SECRET_HEADER, s);
        }
        let status = request.send().await.expect("post").status().as_u16();
        assert_eq!(status, 401, "secret {secret:?}");
    }
    p.settle(Duration::from_millis(500)).await;
    assert!(!inputs_by_text(&p, &key).contains_key("forged"));
    assert_eq!(heard_len(&p).await, 1, "nothing forged was published");
}

async fn heard_len(p: &Pipeline) -> usize {
    heard(p).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_topic_ends_its_binding() {
    let (p, _url) = webhook_pipeline().await;
    let (key, topic) = p
        .session_in_thread(&Pipeline::conversation("telegram"))
        .await;
    let (chat, thread) = ids(&topic);
    p.telegram.person_closes_topic(chat, thread, &ada());
    let ended = p.wait_binding(&key, BindingChange::Ended).await;
    assert_eq!(ended.binding.conversation, topic);
}
