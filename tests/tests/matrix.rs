//! The Matrix adapter against a real homeserver: Synapse (tests/src/synapse.rs), one per
//! test (it starts in a couple of seconds), through NATS with real Redis. What each test
//! asserts is read back from Synapse as a Matrix client sees it: the room's timeline, the
//! `m.thread` relations, the person's notifications.
//!
//! Without Synapse installed these tests skip loudly (in CI they fail); `infra/test.sh`
//! installs it. The last test runs the same adapter cases against the Matrix fake and
//! against Synapse and requires the same outcomes, so the fake's answers (used for fault
//! injection in tests/tests/adapters.rs) are the real server's.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use threadline::config::{Config, Secret};
use threadline::deliver::adapter::{Adapter, PlatformError, PostRequest, Receipt, ThreadRequest};
use threadline::deliver::credentials::Credentials;
use threadline::deliver::matrix::{Matrix, KEY_FIELD};
use threadline::io::nats::StreamKind;
use threadline_schemas::{
    BindingChange, ConversationRef, DeliveryAction, DeliveryCommand, DeliveryMode, Placement,
    PostDelivered, PostFailed, Reconciliation, SessionMode,
};
use threadline_tests::chaos::read_stream;
use threadline_tests::events::{completion, message, spawn};
use threadline_tests::fakes::matrix::FakeMatrix;
use threadline_tests::pipeline::{Options, Pipeline, Security, ACCOUNT};
use threadline_tests::synapse::{HoldingProxy, MatrixUser, SynapseOptions, SynapseServer};

/// A homeserver with a bot (the account Threadline posts as) and a person (a server
/// admin, without a message limit) who made a room and invited the bot into it.
struct World {
    hs: SynapseServer,
    bot: MatrixUser,
    person: MatrixUser,
    room: String,
}

async fn world_with(options: SynapseOptions) -> Option<World> {
    let hs = SynapseServer::start_with(options).await?;
    eprintln!("Synapse ready after {:?}", hs.startup);
    let person = hs.register("person", true).await;
    hs.override_ratelimit(&person, &person, 0, 0).await;
    let bot = hs.register("threadline", false).await;
    let room = hs.room(&person, &[&bot]).await;
    Some(World {
        hs,
        bot,
        person,
        room,
    })
}

async fn world() -> Option<World> {
    world_with(SynapseOptions::default()).await
}

fn room_ref(room: &str) -> ConversationRef {
    ConversationRef {
        channel: "matrix".into(),
        account_id: ACCOUNT.into(),
        conversation_id: room.into(),
        parent_conversation_id: None,
    }
}

/// A deployment whose Matrix channel talks to `homeserver` with `token` (the bot's).
async fn pipeline(
    homeserver: &str,
    token: &str,
    options: Options,
    token_file: Option<std::path::PathBuf>,
) -> Pipeline {
    let (homeserver, token) = (homeserver.to_owned(), token.to_owned());
    let configure = move |c: &mut Config, _: &_, _: &_| {
        c.matrix.api_base = homeserver.clone();
        c.matrix.token = Secret::new(token.clone());
        c.matrix.token_file = token_file.clone();
    };
    Pipeline::start_secured(
        options,
        Security {
            configure: Some(Arc::new(configure)),
            ..Security::default()
        },
    )
    .await
}

async fn session(
    p: &Pipeline,
    requester: &ConversationRef,
    placement: Placement,
) -> (String, Option<ConversationRef>) {
    let mut s = spawn(requester, placement, SessionMode::Session);
    s.thread_name = Some("work".into());
    if placement == Placement::Child {
        let (key, thread) = p.spawn_in_thread(&s).await;
        return (key, Some(thread));
    }
    (p.spawn_session(&s).await.session_key, None)
}

/// Waits until `check` holds for what Synapse shows, or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_child_thread_holds_bound_output_as_an_m_thread_reply_with_no_mentions() {
    let Some(w) = world().await else { return };
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let thread = thread.expect("thread");
    assert_eq!(
        thread.parent_conversation_id.as_deref(),
        Some(w.room.as_str())
    );
    let root = thread.conversation_id.clone();

    let c = completion(&key, "bound output @room");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (delivered[0].mode, &delivered[0].destination),
        (DeliveryMode::Bound, &thread)
    );

    // The root is a top-level notice of the room, by the bot.
    let top = w.hs.messages_in(&w.person, &w.room, None).await;
    let roots: Vec<&Value> = top
        .iter()
        .filter(|e| e["event_id"] == root.as_str())
        .collect();
    assert_eq!(roots.len(), 1, "{top:?}");
    assert_eq!(roots[0]["sender"], w.bot.user_id.as_str());
    assert_eq!(roots[0]["content"]["msgtype"], "m.notice");
    assert_eq!(roots[0]["content"]["m.mentions"], json!({}));
    assert!(top
        .iter()
        .all(|e| e["content"]["body"] != "bound output @room"));

    // The output is in the thread only, as Synapse filed it.
    let in_thread = w.hs.messages_in(&w.person, &w.room, Some(&root)).await;
    assert_eq!(in_thread.len(), 1, "{in_thread:?}");
    let event = &in_thread[0];
    assert_eq!(event["event_id"], delivered[0].platform_message_id.as_str());
    assert_eq!(event["content"]["body"], "bound output @room");
    let rel = &event["content"]["m.relates_to"];
    assert_eq!(
        (rel["rel_type"].as_str(), rel["event_id"].as_str()),
        (Some("m.thread"), Some(root.as_str()))
    );
    assert_eq!(rel["is_falling_back"], true);
    assert_eq!(rel["m.in_reply_to"]["event_id"], root.as_str());
    assert_eq!(event["content"]["m.mentions"], json!({}));
    // Synapse's own thread aggregation on the root counts it.
    let path = format!(
        "rooms/{}/event/{}",
        threadline_tests::synapse::enc(&w.room),
        threadline_tests::synapse::enc(&root)
    );
    let (_, root_event) =
        w.hs.call(&w.person, reqwest::Method::GET, &path, None)
            .await;
    assert_eq!(
        root_event["unsigned"]["m.relations"]["m.thread"]["count"], 1,
        "{root_event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_the_same_completion_three_times_is_one_event() {
    let Some(w) = world().await else { return };
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let root = thread.expect("thread").conversation_id;
    let c = completion(&key, "only once");
    for copy in 0..3 {
        // Distinct message ids: the broker's duplicate window does not hide the copies.
        p.publish(
            p.subjects.in_completion(),
            &format!("{}-{copy}", c.event_id),
            &c,
        )
        .await;
    }
    p.wait_delivered(&c.event_id, 1).await;
    p.settle(Duration::from_secs(1)).await;
    assert_eq!(
        w.hs.bodies_in(&w.person, &w.room, Some(&root)).await,
        ["only once"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_a_deliverer_killed_mid_post_and_restarted_leaves_one_event() {
    let Some(w) = world().await else { return };
    let proxy = HoldingProxy::start(&w.hs.url()).await;
    let mut p = pipeline(
        &proxy.url(),
        &w.bot.access_token,
        Options {
            in_process: false,
            tune: |c| {
                c.http_timeout_ms = 20_000;
                c.claim_lease_ms = 1_000;
                c.ack_wait_ms = 2_000;
            },
        },
        None,
    )
    .await;
    let mut binder = p.command(&["run", "binder"]).spawn().expect("binder");
    let mut router = p.command(&["run", "router"]).spawn().expect("router");
    let mut deliverer = p
        .command(&["run", "deliver", "matrix"])
        .spawn()
        .expect("deliverer");
    let (key, _) = session(&p, &room_ref(&w.room), Placement::None).await;

    // Synapse stores the post; its answer never reaches the deliverer, which is killed
    // mid-call, after its claim and before it recorded anything.
    proxy.hold_next_send();
    let c = completion(&key, "posted exactly once");
    p.publish_completion(&c).await;
    let stored = eventually(Duration::from_secs(20), || async {
        w.hs.bodies_in(&w.person, &w.room, None)
            .await
            .contains(&"posted exactly once".to_owned())
    })
    .await;
    assert!(stored && proxy.held() == 1, "Synapse stored the held post");
    deliverer.start_kill().expect("kill -9 the deliverer");
    deliverer.wait().await.expect("reap");
    assert!(p.delivered().is_empty());

    let mut restarted = p
        .command(&["run", "deliver", "matrix"])
        .spawn()
        .expect("restart");
    let delivered = p.wait_delivered(&c.event_id, 1).await;
    p.settle(Duration::from_secs(1)).await;
    let events: Vec<Value> =
        w.hs.messages_in(&w.person, &w.room, None)
            .await
            .into_iter()
            .filter(|e| e["content"]["body"] == "posted exactly once")
            .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        delivered[0].platform_message_id,
        events[0]["event_id"].as_str().unwrap_or_default()
    );
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));
    for child in [&mut binder, &mut router, &mut restarted] {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    p.stop_in_process().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_an_uncertain_post_then_a_token_from_a_fresh_login_and_a_server_restart_is_one_event(
) {
    let Some(mut w) = world().await else { return };
    let proxy = HoldingProxy::start(&w.hs.url()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("matrix-token");
    std::fs::write(&token_file, &w.bot.access_token).expect("token file");
    let p = pipeline(
        &proxy.url(),
        "",
        Options {
            tune: |c| {
                c.http_timeout_ms = 4_000;
                c.claim_lease_ms = 5_000;
                c.credentials_reload_ms = 200;
            },
            ..Options::default()
        },
        Some(token_file.clone()),
    )
    .await;
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let root = thread.expect("thread").conversation_id;

    proxy.hold_next_send();
    let c = completion(&key, "one event whatever the device");
    p.publish_completion(&c).await;
    let text = "one event whatever the device".to_owned();
    let stored = eventually(Duration::from_secs(10), || async {
        w.hs.bodies_in(&w.person, &w.room, Some(&root))
            .await
            .contains(&text)
    })
    .await;
    assert!(stored, "Synapse stored the post whose answer is held");

    // While the deliverer waits for the answer: the token rotates to a fresh login's (a new
    // device, for which the first send's txn id means nothing), and Synapse crash-restarts.
    let fresh = w.hs.login(&w.bot).await;
    assert_ne!(fresh.device_id, w.bot.device_id);
    std::fs::write(&token_file, &fresh.access_token).expect("rotate the token");
    w.hs.restart().await;

    let delivered = p.wait_delivered(&c.event_id, 1).await;
    p.settle(Duration::from_secs(1)).await;
    let copies = w.hs.bodies_in(&w.person, &w.room, Some(&root)).await;
    assert_eq!(copies, std::slice::from_ref(&text), "one event");
    // Settled by reading back the part's key, with the new device's token.
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));
    assert_eq!(proxy.tokens_seen().last(), Some(&fresh.access_token));
    proxy.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_long_content_is_split_into_ordered_thread_replies() {
    let Some(w) = world().await else { return };
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let root = thread.expect("thread").conversation_id;
    let content: String = (0..3000).map(|i| format!("line {i:04}\n")).collect();
    let c = completion(&key, &content);
    let delivered = p.deliver(&c).await;
    let parts = w.hs.bodies_in(&w.person, &w.room, Some(&root)).await;
    assert_eq!(
        parts.len(),
        content.chars().count().div_ceil(12_000),
        "{} parts",
        parts.len()
    );
    assert!(parts.iter().all(|t| t.chars().count() <= 12_000));
    let lines: Vec<&str> = parts.iter().flat_map(|t| t.lines()).collect();
    assert_eq!(
        lines,
        content.lines().collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert_eq!(delivered[0].platform_message_ids.len(), parts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_a_redacted_root_ends_the_binding_and_the_output_falls_back_once() {
    let Some(w) = world().await else { return };
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let root = thread.expect("thread").conversation_id;
    let before = completion(&key, "before the redaction");
    p.publish(p.subjects.in_completion(), &before.event_id, &before)
        .await;
    p.wait_delivered(&before.event_id, 1).await;

    w.hs.redact(&w.person, &w.room, &root).await;
    let c = completion(&key, "after the redaction");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (
            delivered[0].mode,
            delivered[0].reason.as_str(),
            &delivered[0].destination
        ),
        (DeliveryMode::Fallback, "thread_deleted", &room_ref(&w.room))
    );
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_deleted"
    );
    p.settle(Duration::from_millis(500)).await;
    // Once, in the room; nothing more under the redacted root (Synapse would have taken it).
    let top = w.hs.bodies_in(&w.person, &w.room, None).await;
    assert_eq!(
        top.iter().filter(|t| *t == "after the redaction").count(),
        1,
        "{top:?}"
    );
    assert_eq!(
        w.hs.bodies_in(&w.person, &w.room, Some(&root)).await,
        ["before the redaction"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_a_kicked_bot_ends_its_binding_instead_of_failing_every_completion() {
    let Some(w) = world().await else { return };
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let root = thread.expect("thread").conversation_id;
    w.hs.kick(&w.person, &w.room, &w.bot).await;

    let c = completion(&key, "after the kick");
    p.publish_completion(&c).await;
    let ended = p.wait_binding(&key, BindingChange::Ended).await;
    assert_eq!(ended.reason, "bot_removed");
    // The fallback is the same room, where the bot cannot post either: reported failed,
    // with the reason, once the fallback was tried.
    let failed: PostFailed = p
        .observer
        .wait_for(
            &p.subjects.out_failed(),
            Duration::from_secs(15),
            |f: &PostFailed| {
                f.event_id == c.event_id
                    && f.destination
                        .as_ref()
                        .is_some_and(|d| d.parent_conversation_id.is_none())
            },
        )
        .await
        .expect("the fallback's outcome");
    assert_eq!(failed.code, "bot_removed");

    // The next completion goes straight to the requester's room: one answer, at once.
    let next = completion(&key, "later");
    let started = Instant::now();
    p.publish(p.subjects.in_completion(), &next.event_id, &next)
        .await;
    let failed = p.wait_failed(&next.event_id).await;
    assert_eq!(failed.code, "bot_removed");
    assert!(started.elapsed() < Duration::from_secs(10));
    p.settle(Duration::from_millis(300)).await;
    assert!(p
        .delivered()
        .iter()
        .all(|d| d.event_id != c.event_id && d.event_id != next.event_id));
    assert!(w
        .hs
        .bodies_in(&w.person, &w.room, Some(&root))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_a_child_requested_from_inside_a_thread_is_a_new_thread_in_the_same_room() {
    let Some(w) = world().await else { return };
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    // The person's own thread, where an agent is already at work.
    let their_root =
        w.hs.send(
            &w.person,
            &w.room,
            json!({"msgtype": "m.text", "body": "let's plan"}),
        )
        .await;
    let requester = ConversationRef {
        parent_conversation_id: Some(w.room.clone()),
        ..room_ref(&their_root)
    };
    let (key, thread) = session(&p, &requester, Placement::Child).await;
    let thread = thread.expect("thread");
    // Matrix threads do not nest: the child is rooted at a new top-level event of the room.
    assert_eq!(
        thread.parent_conversation_id.as_deref(),
        Some(w.room.as_str())
    );
    assert_ne!(thread.conversation_id, their_root);
    let top = w.hs.messages_in(&w.person, &w.room, None).await;
    assert!(
        top.iter()
            .any(|e| e["event_id"] == thread.conversation_id.as_str()),
        "{top:?}"
    );
    assert!(w
        .hs
        .bodies_in(&w.person, &w.room, Some(&their_root))
        .await
        .is_empty());

    let c = completion(&key, "in the child");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    assert_eq!(
        w.hs.bodies_in(&w.person, &w.room, Some(&thread.conversation_id))
            .await,
        ["in the child"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_the_bots_own_post_coming_back_inbound_is_no_input() {
    let Some(w) = world().await else { return };
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let thread = thread.expect("thread");
    let c = completion(&key, "hello from the agent");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    // A truthful gateway: Matrix has no bot flag, so the bot's own event says is_bot false.
    let echo = message(&thread, &w.bot.user_id, false, "hello from the agent");
    p.publish(p.subjects.in_message("matrix"), &echo.event_id, &echo)
        .await;
    let person = message(&thread, &w.person.user_id, false, "thanks!");
    p.publish(p.subjects.in_message("matrix"), &person.event_id, &person)
        .await;
    assert_eq!(p.wait_inputs(&person.event_id, 1).await.len(), 1);
    p.settle(Duration::from_millis(500)).await;
    assert!(
        p.inputs().iter().all(|i| i.event_id != echo.event_id),
        "the echo became input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_agent_text_with_at_room_notifies_nobody() {
    let Some(w) = world().await else { return };
    // With power to notify the room, so that only `m.mentions` stands between @room and a ping.
    w.hs.set_power_level(&w.person, &w.room, &w.bot, 50).await;
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, _) = session(&p, &room_ref(&w.room), Placement::None).await;
    let c = completion(&key, "@room the build is red");
    p.publish_completion(&c).await;
    let ours = p.wait_delivered(&c.event_id, 1).await[0]
        .platform_message_id
        .clone();
    // The control: the same text sent without `m.mentions` highlights for the person.
    let control =
        w.hs.send(
            &w.bot,
            &w.room,
            json!({"msgtype": "m.text", "body": "@room the build is red"}),
        )
        .await;
    let highlighted = eventually(Duration::from_secs(10), || async {
        w.hs.notifications(&w.person, true)
            .await
            .iter()
            .any(|n| n["event"]["event_id"] == control.as_str())
    })
    .await;
    assert!(highlighted, "the control @room highlights");
    let pings: Vec<Value> =
        w.hs.notifications(&w.person, true)
            .await
            .into_iter()
            .filter(|n| n["event"]["event_id"] == ours.as_str())
            .collect();
    assert!(pings.is_empty(), "Threadline's @room pinged: {pings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_markdown_arrives_formatted_and_only_the_allowed_user_is_mentioned() {
    let Some(w) = world().await else { return };
    let other = w.hs.register("other", false).await;
    let room = w.hs.room(&w.person, &[&w.bot, &other]).await;
    let p = pipeline(&w.hs.url(), &w.bot.access_token, Options::default(), None).await;
    let (key, _) = session(&p, &room_ref(&room), Placement::None).await;
    let mut c = completion(
        &key,
        &format!(
            "**Heads up** <@{}> and <@{}>: the `build` is red",
            w.person.user_id, other.user_id
        ),
    );
    c.mentions = vec![w.person.user_id.clone()];
    p.publish_completion(&c).await;
    let ours = p.wait_delivered(&c.event_id, 1).await[0]
        .platform_message_id
        .clone();
    let stored = w.hs.timeline(&w.person, &room).await;
    let event = stored
        .iter()
        .find(|e| e["event_id"] == ours.as_str())
        .expect("the post is in the room");
    let content = &event["content"];
    assert_eq!(content["format"], "org.matrix.custom.html");
    let html = content["formatted_body"].as_str().unwrap_or_default();
    assert!(html.contains("<strong>Heads up</strong>"), "{html}");
    assert!(html.contains("<code>build</code>"), "{html}");
    assert_eq!(
        content["m.mentions"],
        json!({"user_ids": [w.person.user_id.clone()]})
    );
    let highlighted = |user: MatrixUser| {
        let hs = &w.hs;
        let ours = ours.clone();
        async move {
            hs.notifications(&user, true)
                .await
                .iter()
                .any(|n| n["event"]["event_id"] == ours.as_str())
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || highlighted(w.person.clone())).await,
        "the allowed user is mentioned"
    );
    assert!(
        !highlighted(other.clone()).await,
        "a user the event did not allow was mentioned"
    );
}

/// Synapse's per-user limit small enough that bursts meet it within seconds.
const TIGHT: SynapseOptions = SynapseOptions {
    messages_per_second: 4.0,
    message_burst: 4,
};

fn no_losses(p: &Pipeline) {
    assert!(p.failed().is_empty(), "failed: {:?}", p.failed());
    let dead = p.observer.raw(&format!("{}.dlq.", p.subjects.prefix()));
    assert!(dead.is_empty(), "dead-lettered: {}", dead.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_rate_limited_bursts_into_one_thread_and_into_25_threads_all_arrive_once_in_order()
{
    let Some(w) = world_with(TIGHT).await else {
        return;
    };
    let p = pipeline(
        &w.hs.url(),
        &w.bot.access_token,
        Options {
            tune: |c| {
                // Few attempts: a 429 that spent one would soon dead-letter.
                c.max_attempts = 3;
            },
            ..Options::default()
        },
        None,
    )
    .await;
    // One thread, twelve completions at once.
    let (key, thread) = session(&p, &room_ref(&w.room), Placement::Child).await;
    let root = thread.expect("thread").conversation_id;
    let burst: Vec<_> = (0..12)
        .map(|i| completion(&key, &format!("burst {i:02}")))
        .collect();
    for c in &burst {
        p.publish(p.subjects.in_completion(), &c.event_id, c).await;
    }
    for c in &burst {
        p.wait_delivered(&c.event_id, 1).await;
    }
    // In the order the router emitted them (the delivery lane's order; completions
    // published back to back may be routed in either order).
    let thread_ref = ConversationRef {
        parent_conversation_id: Some(w.room.clone()),
        ..room_ref(&root)
    };
    let lane = p.subjects.deliver_partition(
        "matrix",
        threadline::model::channels::partition(&thread_ref, p.config.lanes()),
    );
    let emitted: Vec<String> = read_stream(&p.js, &StreamKind::Deliver.name(&p.subjects))
        .await
        .into_iter()
        .filter(|m| m.subject == lane)
        .filter_map(|m| rmp_serde::from_slice::<DeliveryCommand>(&m.payload).ok())
        .filter_map(|d| match d.action {
            DeliveryAction::Post {
                content,
                destination,
                ..
            } if destination == thread_ref => Some(content),
            DeliveryAction::Post { .. } | DeliveryAction::CreateThread { .. } => None,
        })
        .collect();
    assert_eq!(emitted.len(), 12);
    assert_eq!(
        w.hs.bodies_in(&w.person, &w.room, Some(&root)).await,
        emitted
    );

    // 25 sessions in 25 threads, each finishing at once.
    let mut spawns = Vec::new();
    for i in 0..25 {
        let mut s = spawn(&room_ref(&w.room), Placement::Child, SessionMode::Session);
        s.thread_name = Some(format!("thread {i}"));
        p.publish_spawn(&s).await;
        spawns.push(s);
    }
    let mut threads = Vec::new();
    for s in &spawns {
        let key = p.wait_spawned(&s.event_id).await.session_key;
        let bound = p.wait_binding(&key, BindingChange::Bound).await;
        threads.push((key, bound.binding.conversation));
    }
    let done: Vec<_> = threads
        .iter()
        .enumerate()
        .map(|(i, (key, _))| completion(key, &format!("done {i:02}")))
        .collect();
    for c in &done {
        p.publish(p.subjects.in_completion(), &c.event_id, c).await;
    }
    for c in &done {
        let delivered: Vec<PostDelivered> = p.wait_delivered(&c.event_id, 1).await;
        assert_eq!(delivered.len(), 1, "{}", c.content);
    }
    p.settle(Duration::from_millis(500)).await;
    for (i, (_, thread)) in threads.iter().enumerate() {
        assert_eq!(
            w.hs.bodies_in(&w.person, &w.room, Some(&thread.conversation_id))
                .await,
            [format!("done {i:02}")]
        );
    }
    no_losses(&p);
    // Synapse did refuse sends on the way (or the test proved nothing).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = p.health_addr.expect("health server");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("threadline_platform_429_total{channel=\"matrix\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "no 429 met: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_matrix_homeserver_variable_loads() {
    let out = std::process::Command::new(threadline_tests::pipeline::threadline_bin())
        .arg("config")
        .env("THREADLINE_MATRIX_HOMESERVER", "https://matrix.example.org")
        .env("THREADLINE_MATRIX_TOKEN", "syt_documented")
        .env("THREADLINE_MATRIX_IDLE_TIMEOUT_MS", "60000")
        .env("THREADLINE_MATRIX_OWN_AUTHOR_IDS", "[\"@bot:example.org\"]")
        .output()
        .expect("run threadline config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let matrix = &stdout[stdout
        .find("matrix: PlatformConfig")
        .expect("matrix section")..];
    assert!(
        matrix.contains("api_base: \"https://matrix.example.org\""),
        "{matrix}"
    );
    assert!(matrix.contains("60000"), "{matrix}");
    assert!(matrix.contains("@bot:example.org"), "{matrix}");
}

// ---- the fake against the real server ----------------------------------------------------

/// One adapter case's outcome, as a deliverer sees it.
fn outcome(result: &Result<Receipt, PlatformError>) -> String {
    match result {
        Ok(_) => "posted".into(),
        Err(PlatformError::Permanent { code, .. }) => code.to_string(),
        Err(PlatformError::RateLimited { .. }) => "rate_limited".into(),
        Err(PlatformError::Transient { .. }) => "transient".into(),
        Err(PlatformError::PostedInParent { code, .. }) => format!("posted_in_parent:{code}"),
    }
}

fn adapter(homeserver: &str, token: &str) -> Matrix {
    let mut config = Config::default();
    config.matrix.token = Secret::new(token);
    let credentials = Credentials::load("matrix", Arc::new(config)).expect("credentials");
    Matrix::new(homeserver, credentials, Duration::from_secs(5))
}

fn post<'a>(conversation: &'a ConversationRef, text: &'a str, key: &'a str) -> PostRequest<'a> {
    PostRequest {
        conversation,
        text,
        html: None,
        format: Default::default(),
        mentions: &[],
        reply_to: None,
        persona: None,
        idempotency_key: key,
        event_id: key,
        delivery_id: key,
        part: 0,
        parts: 1,
        session_key: None,
        bot_only: false,
    }
}

/// How a homeserver under test is changed between cases.
trait Homeserver {
    async fn redact(&self, room: &str, event_id: &str);
    async fn kick(&self, room: &str);
    async fn events_with_key(&self, room: &str, key: &str) -> usize;
}

struct Real<'a>(&'a World);
struct Fake<'a>(&'a FakeMatrix);

impl Homeserver for Real<'_> {
    async fn redact(&self, room: &str, event_id: &str) {
        self.0.hs.redact(&self.0.person, room, event_id).await;
    }
    async fn kick(&self, room: &str) {
        self.0.hs.kick(&self.0.person, room, &self.0.bot).await;
    }
    async fn events_with_key(&self, room: &str, key: &str) -> usize {
        self.0
            .hs
            .timeline(&self.0.person, room)
            .await
            .iter()
            .filter(|e| e["content"][KEY_FIELD] == key)
            .count()
    }
}

impl Homeserver for Fake<'_> {
    async fn redact(&self, _room: &str, event_id: &str) {
        self.0.redact(event_id);
    }
    async fn kick(&self, room: &str) {
        self.0.leave_room(room);
    }
    async fn events_with_key(&self, room: &str, key: &str) -> usize {
        self.0
            .events()
            .iter()
            .filter(|e| e.room_id == room && e.content[KEY_FIELD] == key)
            .count()
    }
}

/// The cases: a room post, the same key again, a thread (created, posted into), an
/// unknown root, a redacted root, a kick. Returns each case's outcome.
async fn cases(
    m: &Matrix,
    hs: &impl Homeserver,
    room: &str,
    kick_room: &str,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let top = room_ref(room);
    let first = m.post(post(&top, "hello", "k-hello")).await;
    let again = m.post(post(&top, "hello", "k-hello")).await;
    let same = matches!((&first, &again), (Ok(a), Ok(b)) if a.message_id == b.message_id);
    seen.push(("post".into(), outcome(&first)));
    seen.push((
        "same key again".into(),
        format!(
            "{} same_event={same} stored={}",
            outcome(&again),
            hs.events_with_key(room, "k-hello").await
        ),
    ));
    let thread = m
        .create_thread(ThreadRequest {
            parent: &top,
            name: "t",
            idempotency_key: "k-root",
            session_key: "s",
        })
        .await
        .expect("thread");
    let request = ThreadRequest {
        parent: &top,
        name: "t",
        idempotency_key: "k-root",
        session_key: "s",
    };
    let found = m
        .find_thread(request, 0)
        .await
        .map(|t| t == Some(thread.clone()));
    seen.push(("thread read back".into(), format!("{found:?}")));
    seen.push((
        "thread post".into(),
        outcome(&m.post(post(&thread, "in", "k-in")).await),
    ));
    let unknown = ConversationRef {
        conversation_id: "$unknownrootunknownrootunknownrootunknownroot".into(),
        ..thread.clone()
    };
    seen.push((
        "unknown root".into(),
        outcome(&m.post(post(&unknown, "x", "k-unknown")).await),
    ));
    hs.redact(room, &thread.conversation_id).await;
    seen.push((
        "redacted root".into(),
        outcome(&m.post(post(&thread, "x", "k-redacted")).await),
    ));
    // Read back by key: found for a posted part, not for one never sent.
    let found = m
        .find_posted(post(&top, "hello", "k-hello"), 0)
        .await
        .map(|r| r.is_some());
    let missing = m
        .find_posted(post(&top, "never", "k-never"), 0)
        .await
        .map(|r| r.is_some());
    seen.push(("read back".into(), format!("{found:?} {missing:?}")));
    hs.kick(kick_room).await;
    seen.push((
        "kicked".into(),
        outcome(&m.post(post(&room_ref(kick_room), "x", "k-kicked")).await),
    ));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matrix_fake_answers_the_adapters_cases_as_synapse_does() {
    let Some(w) = world().await else { return };
    let kick_room = w.hs.room(&w.person, &[&w.bot]).await;
    let real = cases(
        &adapter(&w.hs.url(), &w.bot.access_token),
        &Real(&w),
        &w.room,
        &kick_room,
    )
    .await;

    let fake = FakeMatrix::start().await;
    let faked = cases(
        &adapter(&fake.base_url(), "syt_test_token"),
        &Fake(&fake),
        "!diff:fake",
        "!kick:fake",
    )
    .await;
    fake.assert_no_spec_violations();
    assert_eq!(faked, real);
    // And what the outcomes are.
    let named: Vec<&str> = real.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(
        named,
        [
            "posted",
            "posted same_event=true stored=1",
            "Ok(true)",
            "posted",
            "thread_deleted",
            "thread_deleted",
            "Ok(true) Ok(false)",
            "bot_removed",
        ]
    );

    // The message limit: a burst beyond it is refused with M_LIMIT_EXCEEDED and a
    // retry_after_ms on both; the adapter waits that out and every post arrives.
    let limited = w.hs.register("limited", false).await;
    w.hs.override_ratelimit(&w.person, &limited, 1, 3).await;
    let limited_room = w.hs.room(&w.person, &[&limited]).await;
    // Synapse counts the join against the same limit: let it drain first.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    fake.set_message_limit(1.0, 3);
    let http = reqwest::Client::new();
    for (base, token, room) in [
        (
            w.hs.url(),
            limited.access_token.clone(),
            limited_room.clone(),
        ),
        (
            fake.base_url(),
            "syt_test_token".to_owned(),
            "!limit:fake".to_owned(),
        ),
    ] {
        let mut answers = Vec::new();
        for i in 0..4 {
            let url = format!(
                "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/raw-{i}",
                threadline_tests::synapse::enc(&room)
            );
            let response = http
                .put(url)
                .bearer_auth(&token)
                .json(&json!({"msgtype": "m.text", "body": "x", "m.mentions": {}}))
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            answers.push((
                status,
                body["errcode"].as_str().map(str::to_owned),
                body["retry_after_ms"].is_u64(),
            ));
        }
        assert_eq!(
            answers,
            [
                (200, None, false),
                (200, None, false),
                (200, None, false),
                (429, Some("M_LIMIT_EXCEEDED".to_owned()), true),
            ],
            "{base}"
        );
        let m = adapter(&base, &token);
        let conversation = room_ref(&room);
        let mut outcomes = Vec::new();
        for i in 0..3 {
            let key = format!("k-limit-{i}");
            outcomes.push(outcome(&m.post(post(&conversation, "x", &key)).await));
        }
        assert_eq!(
            outcomes,
            ["posted", "posted", "posted"],
            "{base}: waited out, not lost"
        );
    }
    fake.assert_no_spec_violations();
}
