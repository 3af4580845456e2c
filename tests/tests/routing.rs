//! The core pipeline end to end, through NATS subjects only: spawns bind (or do not), and
//! completions reach exactly their destination — the bound thread, or explicitly and
//! observably the requester's conversation — once, whatever is redelivered.

use async_nats::jetstream::consumer::PullConsumer;
use std::time::{Duration, Instant};
use threadline::io::nats::StreamKind;
use threadline::model::session::SessionStatus;
use threadline_schemas::{DeliveryMode, DeliveryPolicy, Placement, SessionMode};
use threadline_tests::events::{completion, new_id, spawn};
use threadline_tests::pipeline::{Options, Pipeline};

const PARENT: &str = "100000000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_for_bound_session_goes_to_thread_only() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel(PARENT);
    let s = spawn(&parent, Placement::Child, SessionMode::Session);
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    assert_eq!(thread.parent_conversation_id.as_deref(), Some(PARENT));
    let threads = p.discord.threads();
    assert_eq!(threads.len(), 1, "exactly one thread created: {threads:?}");
    assert_eq!(threads[0].id, thread.conversation_id);
    assert_eq!(threads[0].name, "budget planning");

    let c = completion(&session_key, "The budget is balanced.");
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(500)).await;

    let in_thread = p.discord.messages_in(&thread.conversation_id);
    assert_eq!(
        in_thread
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["The budget is balanced."]
    );
    let in_parent = p.discord.messages_in(PARENT);
    assert_eq!(
        in_parent.len(),
        1,
        "only the thread's starter message in the parent: {in_parent:?}"
    );
    assert!(in_parent[0].content.starts_with("🧵"));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].mode, DeliveryMode::Bound);
    assert_eq!(
        delivered[0].destination.conversation_id,
        thread.conversation_id
    );
    assert_eq!(delivered[0].platform_message_id, in_thread[0].id);
    assert_eq!(p.delivered().len(), 1, "nothing else was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bound_sessions_in_one_requester_channel_never_post_to_the_parent() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel(PARENT);
    let a = spawn(&parent, Placement::Child, SessionMode::Session);
    let mut b = spawn(&parent, Placement::Child, SessionMode::Session);
    b.thread_name = Some("second".into());
    let ((key_a, thread_a), (key_b, thread_b)) =
        tokio::join!(p.spawn_in_thread(&a), p.spawn_in_thread(&b));
    assert_ne!(thread_a.conversation_id, thread_b.conversation_id);

    let ca = completion(&key_a, "answer from A");
    let cb = completion(&key_b, "answer from B");
    tokio::join!(
        p.publish(p.subjects.in_completion(), &ca.event_id, &ca),
        p.publish(p.subjects.in_completion(), &cb.event_id, &cb),
    );
    p.wait_delivered(&ca.event_id, 1).await;
    p.wait_delivered(&cb.event_id, 1).await;
    p.settle(Duration::from_millis(500)).await;

    let contents = |id: &str| -> Vec<String> {
        p.discord
            .messages_in(id)
            .into_iter()
            .map(|m| m.content)
            .collect()
    };
    assert_eq!(contents(&thread_a.conversation_id), ["answer from A"]);
    assert_eq!(contents(&thread_b.conversation_id), ["answer from B"]);
    let parent_posts = contents(PARENT);
    assert_eq!(
        parent_posts.len(),
        2,
        "two starter messages only: {parent_posts:?}"
    );
    assert!(parent_posts.iter().all(|c| c.starts_with("🧵")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_without_placement_on_a_channel_without_threads_posts_to_the_requester() {
    let p = Pipeline::start().await;
    let requester = Pipeline::webhook_conversation("plain", "chat-42");
    let s = spawn(&requester, Placement::None, SessionMode::Session);
    let spawned = p.spawn_session(&s).await;
    assert_eq!(spawned.mode, SessionMode::Session);
    assert_eq!(spawned.binding, None);

    let c = completion(&spawned.session_key, "hello from a persistent session");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].mode, DeliveryMode::Requester);
    assert_eq!(delivered[0].reason, "no_placement");

    let hooks = p
        .webhook
        .wait_for_deliveries(1, Duration::from_secs(5))
        .await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].name, "plain");
    assert_eq!(hooks[0].body["text"], "hello from a persistent session");
    assert_eq!(hooks[0].body["conversation"]["conversation_id"], "chat-42");
    assert!(
        hooks[0].idempotency_key.is_some(),
        "webhook posts carry an Idempotency-Key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_placement_on_a_channel_without_threads_is_rejected_as_unsupported() {
    let p = Pipeline::start().await;
    let requester = Pipeline::webhook_conversation("plain", "chat-1");
    let s = spawn(&requester, Placement::Child, SessionMode::Session);
    p.publish_spawn(&s).await;
    let rejected = p.wait_rejected(&s.event_id).await;
    assert_eq!(rejected.code, "capability_unsupported");
    assert_eq!(rejected.stage, "binder");
    p.settle(Duration::from_millis(300)).await;
    assert!(
        p.spawned().is_empty(),
        "never silently downgraded to another placement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_placement_binds_the_requester_conversation_itself() {
    let p = Pipeline::start().await;
    let requester = Pipeline::webhook_conversation("plain", "chat-7");
    let s = spawn(&requester, Placement::Current, SessionMode::Session);
    let spawned = p.spawn_session(&s).await;
    let binding = spawned.binding.expect("a binding");
    assert_eq!(binding.conversation, requester);

    let c = completion(&spawned.session_key, "bound here");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered[0].mode, DeliveryMode::Bound);
    assert_eq!(delivered[0].destination, requester);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_with_a_requester_falls_back_explicitly() {
    let p = Pipeline::start().await;
    let mut c = completion("agent:larry:subagent:never-spawned", "orphan result");
    c.requester = Some(Pipeline::discord_channel(PARENT));
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].mode, DeliveryMode::Fallback);
    assert_eq!(delivered[0].reason, "unknown_session");
    let posts = p.discord.messages_in(PARENT);
    assert_eq!(
        posts.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["orphan result"]
    );

    // Without a requester there is nowhere to go: reported, not dropped.
    let lost = completion("agent:larry:subagent:also-unknown", "nowhere");
    p.publish(p.subjects.in_completion(), &lost.event_id, &lost)
        .await;
    let failed = p.wait_failed(&lost.event_id).await;
    assert_eq!(failed.code, "no_destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_session_without_usable_binding_reports_failed_and_posts_nothing() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel(PARENT);
    let mut s = spawn(&parent, Placement::Child, SessionMode::Session);
    s.fail_closed = true;
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    p.unbind(&session_key).await;

    let c = completion(&session_key, "must not leak to the parent");
    p.publish_completion(&c).await;
    let failed = p.wait_failed(&c.event_id).await;
    assert_eq!(failed.code, "no_bound_destination");
    p.settle(Duration::from_millis(500)).await;
    assert!(p
        .discord
        .messages()
        .iter()
        .all(|m| m.content != "must not leak to the parent"));
    assert!(p.discord.messages_in(&thread.conversation_id).is_empty());
    assert!(p.delivered().iter().all(|d| d.event_id != c.event_id));

    // The same situation without fail_closed falls back, with the reason.
    let mut open = spawn(&parent, Placement::Child, SessionMode::Session);
    open.thread_name = Some("open".into());
    let (open_key, _) = p.spawn_in_thread(&open).await;
    p.unbind(&open_key).await;
    let c2 = completion(&open_key, "fallback content");
    p.publish(p.subjects.in_completion(), &c2.event_id, &c2)
        .await;
    let delivered = p.wait_delivered(&c2.event_id, 1).await;
    assert_eq!(delivered[0].mode, DeliveryMode::Fallback);
    assert_eq!(delivered[0].reason, "binding_ended");
    assert_eq!(delivered[0].destination.conversation_id, PARENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_completion_published_three_times_is_posted_once() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel(PARENT);
    let s = spawn(&parent, Placement::Child, SessionMode::Session);
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    let c = completion(&session_key, "exactly once");
    // Different Nats-Msg-Ids, so JetStream's own dedup cannot hide a bug.
    for _ in 0..3 {
        p.publish(p.subjects.in_completion(), &new_id(), &c).await;
    }
    p.wait_delivered(&c.event_id, 1).await;
    p.settle(Duration::from_secs(1)).await;
    let posts = p.discord.messages_in(&thread.conversation_id);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].content, "exactly once");
    let reports: Vec<_> = p
        .delivered()
        .into_iter()
        .filter(|d| d.event_id == c.event_id)
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "one tl.out.delivered per (event, destination)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_redelivered_after_its_session_is_gone_follows_the_stored_decision() {
    // A grace far past the test: a router that only waited for the session to appear
    // would hold the retry unacknowledged, where one that reads the stored decision
    // settles it at once.
    let p = Pipeline::start_with(Options {
        tune: |c| c.unknown_session_grace_ms = 600_000,
        ..Options::default()
    })
    .await;
    let parent = Pipeline::discord_channel(PARENT);
    let s = spawn(&parent, Placement::Child, SessionMode::Session);
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    let c = completion(&session_key, "decided while the session existed");
    p.publish(p.subjects.in_completion(), &new_id(), &c).await;
    p.wait_delivered(&c.event_id, 1).await;

    // The session expires (its record leaves its bucket); then the publisher retries.
    let store = p.store().await;
    let mut conn = redis::Client::open(p.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let removed: i64 = redis::cmd("HDEL")
        .arg(store.keys().session(&session_key))
        .arg(&session_key)
        .query_async(&mut conn)
        .await
        .expect("HDEL");
    assert_eq!(removed, 1, "the session record was there to remove");
    p.publish(p.subjects.in_completion(), &new_id(), &c).await;
    // Decided afresh, an unknown session falls back to the requester's conversation (after
    // the grace): the stored decision must win instead, so nothing reaches the parent.
    p.settle(Duration::from_secs(2)).await;
    let posts = p.discord.messages_in(&thread.conversation_id);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let in_parent = p.discord.messages_in(PARENT);
    assert!(
        in_parent.iter().all(|m| m.content.starts_with("🧵")),
        "only the thread's starter message in the parent: {in_parent:?}"
    );
    assert!(p.failed().iter().all(|f| f.event_id != c.event_id));
    let reports = p.delivered();
    let reports: Vec<_> = reports
        .iter()
        .filter(|d| d.event_id == c.event_id)
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let mut router: PullConsumer =
        p.js.get_stream(StreamKind::Inbound.name(&p.subjects))
            .await
            .expect("inbound stream")
            .get_consumer("router-completion")
            .await
            .expect("router consumer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = router.info().await.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retry was never settled: {} pending, {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_ended_between_two_deliveries_of_a_completion_keeps_one_destination() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel(PARENT);
    let s = spawn(&parent, Placement::Child, SessionMode::Session);
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    let c = completion(&session_key, "decided once");
    p.publish(p.subjects.in_completion(), &new_id(), &c).await;
    p.wait_delivered(&c.event_id, 1).await;

    p.unbind(&session_key).await;
    // The publisher retries the same logical event after the binding is gone.
    p.publish(p.subjects.in_completion(), &new_id(), &c).await;
    p.settle(Duration::from_secs(1)).await;

    let everywhere: Vec<_> = p
        .discord
        .messages()
        .into_iter()
        .filter(|m| m.content == "decided once")
        .collect();
    assert_eq!(everywhere.len(), 1, "{everywhere:?}");
    assert_eq!(everywhere[0].channel_id, thread.conversation_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_and_requester_policy_posts_to_both_and_says_why() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel(PARENT);
    let mut s = spawn(&parent, Placement::Child, SessionMode::Session);
    s.delivery = DeliveryPolicy::BoundAndRequester;
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    let c = completion(&session_key, "both places");
    p.publish_completion(&c).await;
    let delivered = p.wait_delivered(&c.event_id, 2).await;
    let mut got: Vec<(String, String)> = delivered
        .iter()
        .map(|d| {
            (
                d.destination.conversation_id.clone(),
                format!("{:?}", d.mode),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (PARENT.to_owned(), "Requester".to_owned()),
        (thread.conversation_id.clone(), "Bound".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(p.discord.messages_in(&thread.conversation_id).len(), 1);
    assert_eq!(
        p.discord
            .messages_in(PARENT)
            .iter()
            .filter(|m| m.content == "both places")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_sessions_resume_only_when_asked_and_labels_are_unique_per_requester() {
    let p = Pipeline::start().await;
    let requester = Pipeline::webhook_conversation("threads", "room-1");
    let mut first = spawn(&requester, Placement::Current, SessionMode::Session);
    first.session_key = Some("agent:larry:thread:budget-planning".into());
    first.label = Some("budget".into());
    p.publish(p.subjects.in_spawn(), &first.event_id, &first)
        .await;
    let created = p.wait_spawned(&first.event_id).await;
    assert_eq!(created.session_key, "agent:larry:thread:budget-planning");
    assert!(!created.resumed);
    let binding = created.binding.expect("bound to the current conversation");

    let mut again = first.clone();
    again.event_id = new_id();
    again.label = None;
    p.publish(p.subjects.in_spawn(), &again.event_id, &again)
        .await;
    assert_eq!(
        p.wait_rejected(&again.event_id).await.code,
        "session_exists"
    );

    let mut resume = again.clone();
    resume.event_id = new_id();
    resume.resume_if_exists = true;
    p.publish(p.subjects.in_spawn(), &resume.event_id, &resume)
        .await;
    let resumed = p.wait_spawned(&resume.event_id).await;
    assert!(resumed.resumed);
    assert_eq!(
        resumed.binding.map(|b| b.binding_id),
        Some(binding.binding_id),
        "existing binding kept, none added"
    );

    let mut clash = spawn(&requester, Placement::None, SessionMode::Session);
    clash.requester.session_key = first.requester.session_key.clone();
    clash.label = Some("budget".into());
    p.publish(p.subjects.in_spawn(), &clash.event_id, &clash)
        .await;
    assert_eq!(p.wait_rejected(&clash.event_id).await.code, "label_taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_session_completes_expires_and_frees_its_label() {
    let p = Pipeline::start_with(Options {
        tune: |c| c.ended_ttl_ms = 1_000,
        ..Options::default()
    })
    .await;
    let requester = Pipeline::discord_channel(PARENT);
    let mut first = spawn(&requester, Placement::None, SessionMode::Run);
    first.label = Some("one-shot".into());
    p.publish(p.subjects.in_spawn(), &first.event_id, &first)
        .await;
    let session_key = p.wait_spawned(&first.event_id).await.session_key;
    let c = completion(&session_key, "ran once");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    p.settle(Duration::from_millis(300)).await;

    let store = p.store().await;
    let state = store
        .load_session(&session_key)
        .await
        .expect("read session")
        .expect("still readable right after completing");
    assert_eq!(state.session.status, SessionStatus::Completed);
    // `ended_ttl_ms` later the sweeper deletes it (the layout has no per-session key TTL).
    let deadline = Instant::now() + Duration::from_secs(20);
    while store
        .load_session(&session_key)
        .await
        .expect("read session")
        .is_some()
    {
        assert!(Instant::now() < deadline, "a completed session expires");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut second = spawn(&requester, Placement::None, SessionMode::Run);
    second.requester.session_key = first.requester.session_key.clone();
    second.label = Some("one-shot".into());
    p.publish(p.subjects.in_spawn(), &second.event_id, &second)
        .await;
    let reused = p.wait_spawned(&second.event_id).await;
    assert_ne!(reused.session_key, session_key);
    assert_eq!(reused.label.as_deref(), Some("one-shot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_that_overtakes_its_spawn_is_routed_as_the_spawn_says() {
    // Found while building the chaos runner: with the binder slower than the router (a
    // killed binder instance, a backlog), a completion published right after its spawn
    // reached the router first and was decided — for good — as `unknown_session`.
    let p = Pipeline::start_with(Options {
        tune: |c| c.unknown_session_grace_ms = 10_000,
        ..Options::default()
    })
    .await;
    let requester = Pipeline::webhook_conversation("plain", "chat-3");
    let s = spawn(&requester, Placement::Current, SessionMode::Session);
    let session_key = threadline::ids::session_key(&s.agent_id, &s.event_id);
    let mut c = completion(&session_key, "after all");
    c.requester = Some(requester.clone());
    p.publish_completion(&c).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    p.publish_spawn(&s).await;
    let delivered = p.wait_delivered(&c.event_id, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].mode, DeliveryMode::Bound, "{delivered:?}");
    assert_eq!(delivered[0].destination, requester);
}
