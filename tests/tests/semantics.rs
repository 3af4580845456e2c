//! Session semantics of docs/design.md §3 end to end: inbound messages, send and fan-out, the
//! binding lifecycle (idle, max age, archived and deleted threads, farewells), operator
//! control including credential rotation, pending bindings, named sessions across a full
//! restart, nested sessions, and ambiguity — observed on `tl.out.*`, `tl.agent.*` and the
//! platform fakes.

use std::time::Duration;
use threadline::app::{self, Role};
use threadline_schemas::{
    BindingChange, BindingChanged, BindingRecord, BindingStatus, ControlOp, ConversationRef,
    DeliveryMode, InputSource, MessageUnbound, Placement, Requester, SendCompleted, SendOutcome,
    SendTarget, SessionMode,
};
use threadline_tests::events::{completion, control, message, new_id, send, spawn};
use threadline_tests::fakes::Fault;
use threadline_tests::pipeline::{Options, Pipeline};
use tokio_util::sync::CancellationToken;

const PARENT: &str = "100000000000000001";

fn room(id: &str) -> ConversationRef {
    Pipeline::webhook_conversation("threads", id)
}

/// Spawns with `placement` in `conversation` and returns (session key, binding if any).
async fn spawned(
    p: &Pipeline,
    conversation: &ConversationRef,
    placement: Placement,
) -> (String, Option<BindingRecord>) {
    let s = spawn(conversation, placement, SessionMode::Session);
    let spawned = p.spawn_session(&s).await;
    (spawned.session_key, spawned.binding)
}

async fn binding_last_activity(p: &Pipeline, session_key: &str, binding_id: &str) -> u64 {
    p.store()
        .await
        .load_session(session_key)
        .await
        .expect("redis")
        .expect("session")
        .bindings
        .into_iter()
        .find(|b| b.binding_id == binding_id)
        .expect("binding")
        .last_activity_at
}

async fn wait_sent(p: &Pipeline, event_id: &str) -> SendCompleted {
    p.observer
        .wait_for(
            &p.subjects.out_sent(),
            Duration::from_secs(15),
            |s: &SendCompleted| s.event_id == event_id,
        )
        .await
        .unwrap_or_else(|| panic!("no tl.out.sent for {event_id}"))
}

// ---- 1. inbound -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_a_bound_conversation_is_input_for_every_session_there_and_touches_them() {
    let p = Pipeline::start().await;
    let here = room("room-1");
    let (a, binding_a) = spawned(&p, &here, Placement::Current).await;
    let (b, _) = spawned(&p, &here, Placement::Current).await;
    let binding_a = binding_a.expect("bound");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let m = message(&here, "user-7", false, "how is it going?");
    p.publish(p.subjects.in_message("webhook:threads"), &m.event_id, &m)
        .await;
    let inputs = p.wait_inputs(&m.event_id, 2).await;
    let mut targets: Vec<&str> = inputs.iter().map(|i| i.session_key.as_str()).collect();
    targets.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(targets, expected, "one input per bound session");
    assert!(inputs.iter().all(|i| i.text == "how is it going?"
        && i.origin == here
        && i.source == InputSource::Message));
    assert!(
        binding_last_activity(&p, &a, &binding_a.binding_id).await > binding_a.last_activity_at,
        "the binding was touched"
    );

    // Redelivered: no second input.
    p.publish(p.subjects.in_message("webhook:threads"), &new_id(), &m)
        .await;
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(
        p.inputs()
            .iter()
            .filter(|i| i.event_id == m.event_id)
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_an_unbound_conversation_goes_back_to_the_gateway_with_its_content() {
    let p = Pipeline::start().await;
    let m = message(&room("room-nobody"), "user-1", false, "anyone?");
    p.publish(p.subjects.in_message("webhook:threads"), &m.event_id, &m)
        .await;
    let unbound = p
        .observer
        .wait_for(
            &p.subjects.out_unbound(),
            Duration::from_secs(10),
            |u: &MessageUnbound| u.event_id == m.event_id,
        )
        .await
        .expect("tl.out.unbound");
    assert_eq!(unbound.text.as_deref(), Some("anyone?"));
    assert_eq!(unbound.author.map(|a| a.id), Some("user-1".into()));
    assert!(p.inputs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threadlines_own_messages_and_farewells_are_never_input() {
    let p = Pipeline::start_with(Options {
        tune: |c| {
            if let Some(hook) = c.webhooks.get_mut("threads") {
                hook.own_author_ids = vec!["persona-webhook-1".into()];
            }
        },
        ..Options::default()
    })
    .await;
    // Discord: the bot's id is learned from the platform's answer to our first post.
    let (session_key, thread) = p
        .session_in_thread(&Pipeline::discord_channel(PARENT))
        .await;
    let c = completion(&session_key, "hello from the agent");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    let echo = message(
        &thread,
        &p.discord.bot_user_id(),
        true,
        "hello from the agent",
    );
    p.publish(p.subjects.in_message("discord"), &echo.event_id, &echo)
        .await;
    // Webhook channel: a configured persona identity.
    let here = room("room-2");
    spawned(&p, &here, Placement::Current).await;
    let persona = message(
        &here,
        "persona-webhook-1",
        true,
        "👋 This session has ended",
    );
    p.publish(
        p.subjects.in_message("webhook:threads"),
        &persona.event_id,
        &persona,
    )
    .await;
    // A person right after both: their message flows, proving the echoes were processed.
    let person = message(&thread, "user-1", false, "thanks!");
    p.publish(p.subjects.in_message("discord"), &person.event_id, &person)
        .await;
    assert_eq!(p.wait_inputs(&person.event_id, 1).await.len(), 1);
    p.settle(Duration::from_millis(500)).await;
    for dropped in [&echo.event_id, &persona.event_id] {
        assert!(
            p.inputs().iter().all(|i| &i.event_id != dropped),
            "echo became input"
        );
        let unbound: Vec<MessageUnbound> = p.observer.events(&p.subjects.out_unbound());
        assert!(
            unbound.iter().all(|u| &u.event_id != dropped),
            "echo reported unbound"
        );
    }
}

// ---- 2. send ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_targets_by_key_label_and_conversation_and_reports_each_once() {
    let p = Pipeline::start().await;
    let here = room("room-3");
    let mut labelled = spawn(&here, Placement::Current, SessionMode::Session);
    labelled.label = Some("alpha".into());
    p.publish(p.subjects.in_spawn(), &labelled.event_id, &labelled)
        .await;
    let a = p.wait_spawned(&labelled.event_id).await.session_key;
    let (b, _) = spawned(&p, &here, Placement::Current).await;
    let mut run = spawn(&here, Placement::None, SessionMode::Run);
    run.thread_name = None;
    let finished = p.spawn_session(&run).await.session_key;
    let done = completion(&finished, "done");
    p.publish(p.subjects.in_completion(), &done.event_id, &done)
        .await;
    p.wait_delivered(&done.event_id, 1).await;

    let by_key = send(
        SendTarget::SessionKey {
            session_key: a.clone(),
        },
        "by key",
    );
    let by_label = send(
        SendTarget::Label {
            label: "alpha".into(),
            requester_session_key: labelled.requester.session_key.clone(),
        },
        "by label",
    );
    let fan_out = send(
        SendTarget::Conversation {
            conversation: here.clone(),
        },
        "to the room",
    );
    let missing = send(
        SendTarget::SessionKey {
            session_key: "agent:larry:subagent:nope".into(),
        },
        "x",
    );
    let ended = send(
        SendTarget::SessionKey {
            session_key: finished.clone(),
        },
        "too late",
    );
    for s in [&by_key, &by_label, &fan_out, &missing, &ended] {
        p.publish(p.subjects.in_send(), &s.event_id, s).await;
    }
    let outcome = |r: &SendCompleted| -> Vec<(Option<String>, SendOutcome)> {
        let mut v: Vec<_> = r
            .results
            .iter()
            .map(|x| (x.session_key.clone(), x.outcome))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    assert_eq!(
        outcome(&wait_sent(&p, &by_key.event_id).await),
        [(Some(a.clone()), SendOutcome::Delivered)]
    );
    assert_eq!(
        outcome(&wait_sent(&p, &by_label.event_id).await),
        [(Some(a.clone()), SendOutcome::Delivered)]
    );
    let mut both = vec![
        (Some(a.clone()), SendOutcome::Delivered),
        (Some(b.clone()), SendOutcome::Delivered),
    ];
    both.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(outcome(&wait_sent(&p, &fan_out.event_id).await), both);
    assert_eq!(
        outcome(&wait_sent(&p, &missing.event_id).await),
        [(None, SendOutcome::NotFound)]
    );
    assert_eq!(
        outcome(&wait_sent(&p, &ended.event_id).await),
        [(Some(finished.clone()), SendOutcome::Ended)]
    );

    let fan_inputs = p.wait_inputs(&fan_out.event_id, 2).await;
    assert!(fan_inputs
        .iter()
        .all(|i| i.source == InputSource::Send && i.text == "to the room" && i.origin == here));
    assert_eq!(
        fan_inputs[0].from_session_key.as_deref(),
        Some("agent:larry:main")
    );
    // Redelivered (new Nats-Msg-Id): reported again, never delivered twice.
    p.publish(p.subjects.in_send(), &new_id(), &fan_out).await;
    p.settle(Duration::from_millis(700)).await;
    assert_eq!(
        p.inputs()
            .iter()
            .filter(|i| i.event_id == fan_out.event_id)
            .count(),
        2
    );
    assert!(p
        .inputs()
        .iter()
        .all(|i| i.event_id != ended.event_id && i.event_id != missing.event_id));
}

// ---- 3. lifecycle -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_binding_ends_with_exactly_one_farewell_while_three_sweepers_run() {
    let p = Pipeline::start().await;
    // Two more binder instances: three sweepers share the work list.
    let mut extra = Vec::new();
    for _ in 0..2 {
        let shutdown = CancellationToken::new();
        let running = app::start(p.config.clone(), Role::Binder, shutdown.clone())
            .await
            .expect("binder");
        extra.push((shutdown, running));
    }
    let mut s = spawn(
        &Pipeline::discord_channel(PARENT),
        Placement::Child,
        SessionMode::Session,
    );
    s.idle_timeout_ms = Some(1_000);
    let (session_key, thread) = p.spawn_in_thread(&s).await;
    let ended = p.wait_binding(&session_key, BindingChange::Ended).await;
    assert_eq!(ended.reason, "idle_timeout");
    p.settle(Duration::from_millis(800)).await;
    let farewells: Vec<_> = p.discord.messages_in(&thread.conversation_id);
    assert_eq!(farewells.len(), 1, "{farewells:?}");
    assert!(
        farewells[0].content.contains("idle"),
        "{}",
        farewells[0].content
    );
    let changes: Vec<BindingChanged> = p.observer.events(&p.subjects.out_binding());
    let ended_events = changes
        .iter()
        .filter(|c| c.binding.target_session_key == session_key && c.change == BindingChange::Ended)
        .count();
    assert_eq!(ended_events, 1);
    // A message in the thread after the end is no longer input.
    let late = message(&thread, "user-1", false, "hello?");
    p.publish(p.subjects.in_message("discord"), &late.event_id, &late)
        .await;
    p.observer
        .wait_for(
            &p.subjects.out_unbound(),
            Duration::from_secs(10),
            |u: &MessageUnbound| u.event_id == late.event_id,
        )
        .await
        .expect("unbound after the end");
    for (shutdown, running) in extra {
        shutdown.cancel();
        running.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sends_refresh_activity_and_keep_a_busy_binding_alive() {
    let p = Pipeline::start().await;
    let here = room("room-4");
    let mut s = spawn(&here, Placement::Current, SessionMode::Session);
    s.idle_timeout_ms = Some(3_000);
    let spawned = p.spawn_session(&s).await;
    let binding = spawned.binding.expect("bound");
    let mut last = binding.last_activity_at;
    // A post every second, for longer than the idle timeout; each leaves 2 s of margin.
    for n in 0..4 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let c = completion(&spawned.session_key, &format!("update {n}"));
        p.publish_completion(&c).await;
        p.wait_delivered(&c.event_id, 1).await;
        let now = binding_last_activity(&p, &spawned.session_key, &binding.binding_id).await;
        assert!(now > last, "post {n} refreshed last_activity_at");
        last = now;
    }
    // 4 s after binding, longer than the idle timeout: still bound thanks to the posts.
    let changes: Vec<BindingChanged> = p.observer.events(&p.subjects.out_binding());
    assert!(changes.iter().all(|c| c.change != BindingChange::Ended));
    let ended = p
        .wait_binding(&spawned.session_key, BindingChange::Ended)
        .await;
    assert_eq!(ended.reason, "idle_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_ends_even_a_busy_binding() {
    let p = Pipeline::start().await;
    let mut s = spawn(&room("room-5"), Placement::Current, SessionMode::Session);
    s.max_age_ms = Some(1_200);
    let key = p.spawn_session(&s).await.session_key;
    for _ in 0..3 {
        let m = message(&room("room-5"), "user-1", false, "still here");
        p.publish(p.subjects.in_message("webhook:threads"), &m.event_id, &m)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "max_age"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_thread_ends_its_binding_with_a_farewell_and_the_completion_falls_back() {
    let p = Pipeline::start().await;
    let (key, thread) = p
        .session_in_thread(&Pipeline::discord_channel(PARENT))
        .await;
    // Discord: an archived thread is unarchived by the next post; a moderator's lock is
    // what closes it (threads.mdx, "Active & Archived Threads").
    p.discord.lock_thread(&thread.conversation_id);
    let c = completion(&key, "result for a locked thread");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered[0].mode, DeliveryMode::Fallback);
    assert_eq!(delivered[0].reason, "thread_locked");
    assert_eq!(delivered[0].destination.conversation_id, PARENT);
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_locked"
    );
    p.settle(Duration::from_millis(500)).await;
    // One final outcome: the fallback's delivery, no `failed` beside it.
    assert!(
        p.failed().iter().all(|f| f.event_id != c.event_id),
        "{:?}",
        p.failed()
    );
    let parent: Vec<String> = p
        .discord
        .messages_in(PARENT)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(
        parent.iter().filter(|t| t.starts_with("👋")).count(),
        1,
        "one farewell: {parent:?}"
    );
    assert_eq!(
        parent
            .iter()
            .filter(|t| *t == "result for a locked thread")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_thread_ends_its_binding_without_farewell_and_fail_closed_posts_nothing() {
    let p = Pipeline::start().await;
    let (key, thread) = p
        .session_in_thread(&Pipeline::discord_channel(PARENT))
        .await;
    p.discord.delete_channel(&thread.conversation_id);
    let c = completion(&key, "result for a deleted thread");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (delivered[0].mode, delivered[0].reason.as_str()),
        (DeliveryMode::Fallback, "thread_deleted")
    );
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_deleted"
    );

    let mut closed = spawn(
        &Pipeline::discord_channel(PARENT),
        Placement::Child,
        SessionMode::Session,
    );
    closed.fail_closed = true;
    closed.thread_name = Some("closed".into());
    let (closed_key, closed_thread) = p.spawn_in_thread(&closed).await;
    p.discord.delete_channel(&closed_thread.conversation_id);
    let c2 = completion(&closed_key, "must stay unposted");
    p.publish(p.subjects.in_completion(), &c2.event_id, &c2)
        .await;
    assert_eq!(p.wait_failed(&c2.event_id).await.code, "thread_deleted");
    p.settle(Duration::from_millis(600)).await;
    let parent: Vec<String> = p
        .discord
        .messages_in(PARENT)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert!(
        parent.iter().all(|t| !t.starts_with("👋")),
        "no farewell for a deleted thread: {parent:?}"
    );
    assert!(parent.iter().all(|t| t != "must stay unposted"));
    assert!(p.delivered().iter().all(|d| d.event_id != c2.event_id));
}

// ---- 4. control -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_by_binding_id_records_the_reason_and_touch_refreshes_activity() {
    let p = Pipeline::start().await;
    let (key, binding) = spawned(&p, &room("room-6"), Placement::Current).await;
    let binding = binding.expect("bound");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut touch = control(ControlOp::Touch);
    touch.session_key = Some(key.clone());
    p.publish(p.subjects.in_control(), &touch.event_id, &touch)
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while binding_last_activity(&p, &key, &binding.binding_id).await == binding.last_activity_at {
        assert!(std::time::Instant::now() < deadline, "touch never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut unbind = control(ControlOp::Unbind);
    unbind.binding_id = Some(binding.binding_id.clone());
    unbind.reason = Some("moved to another team".into());
    p.publish(p.subjects.in_control(), &unbind.event_id, &unbind)
        .await;
    let ended = p.wait_binding(&key, BindingChange::Ended).await;
    assert_eq!(ended.reason, "moved to another team");
    assert_eq!(ended.binding.status, BindingStatus::Ended);
    let mut unknown = control(ControlOp::Unbind);
    unknown.binding_id = Some("b-does-not-exist".into());
    p.publish(p.subjects.in_control(), &unknown.event_id, &unknown)
        .await;
    assert_eq!(p.wait_rejected(&unknown.event_id).await.code, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotation_uses_the_latest_token_after_reuse_in_every_deliverer_instance() {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let token_file = p.config_file.with_file_name("discord-token");
    std::fs::write(&token_file, "old-token\n").expect("token file");
    p.config.discord.token_file = Some(token_file.clone());
    p.rewrite_config_file();
    p.discord.set_tokens(&["old-token"]);
    p.start_in_process().await;
    // A second deliverer instance, a separate process with its own long-lived client.
    let mut second = p
        .command(&["run", "deliver", "discord"])
        .spawn()
        .expect("second deliverer");
    let (key, _) = spawned(&p, &Pipeline::discord_channel(PARENT), Placement::None).await;
    for n in 0..4 {
        let c = completion(&key, &format!("before {n}"));
        p.publish_completion(&c).await;
        p.wait_delivered(&c.event_id, 1).await;
    }

    std::fs::write(&token_file, "new-token\n").expect("rotate");
    p.discord.set_tokens(&["new-token"]);
    let mut rotated = control(ControlOp::CredentialsRotated);
    rotated.channel = Some("discord".into());
    p.publish(p.subjects.in_control(), &rotated.event_id, &rotated)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests_before = p.discord.request_count();
    let mut after = Vec::new();
    for n in 0..8 {
        let c = completion(&key, &format!("after {n}"));
        p.publish_completion(&c).await;
        after.push(c.event_id);
    }
    for id in &after {
        assert_eq!(p.wait_delivered(id, 1).await.len(), 1);
    }
    assert_eq!(
        p.discord.request_count() - requests_before,
        8,
        "no request was refused: both instances had the new token"
    );
    let seen = p.discord.tokens_seen();
    assert!(
        seen[seen.len() - 8..].iter().all(|t| t == "new-token"),
        "{seen:?}"
    );
    assert!(p.failed().is_empty());
    let _ = second.start_kill();
    let _ = second.wait().await;
}

// ---- 5. pending bindings --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_waits_for_a_pending_thread_and_falls_back_when_it_takes_too_long() {
    let p = Pipeline::start_with(Options {
        tune: |c| c.pending_timeout_ms = 3_000,
        ..Options::default()
    })
    .await;
    // Thread creation held back 600 ms: the completion waits, then goes to the thread.
    p.discord.push_fault(Fault::RateLimited {
        retry_after_ms: 600,
    });
    let s = spawn(
        &Pipeline::discord_channel(PARENT),
        Placement::Child,
        SessionMode::Session,
    );
    let key = p.spawn_session(&s).await.session_key;
    let c = completion(&key, "worth the wait");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered[0].mode, DeliveryMode::Bound);

    // Held back 6 s, beyond the 3 s pending timeout: explicit fallback.
    p.discord.push_fault(Fault::RateLimited {
        retry_after_ms: 6_000,
    });
    let mut slow = spawn(
        &Pipeline::discord_channel(PARENT),
        Placement::Child,
        SessionMode::Session,
    );
    slow.thread_name = Some("slow".into());
    p.publish(p.subjects.in_spawn(), &slow.event_id, &slow)
        .await;
    let slow_key = p.wait_spawned(&slow.event_id).await.session_key;
    let c2 = completion(&slow_key, "could not wait");
    p.publish(p.subjects.in_completion(), &c2.event_id, &c2)
        .await;
    let delivered = p.wait_delivered(&c2.event_id, 1).await;
    assert_eq!(
        (delivered[0].mode, delivered[0].reason.as_str()),
        (DeliveryMode::Fallback, "binding_pending_timeout")
    );
    assert_eq!(delivered[0].destination.conversation_id, PARENT);
    // The thread still comes, and the binding still turns active.
    p.wait_binding(&slow_key, BindingChange::Bound).await;
}

/// A rate limit is a wait, not a failure: more 429s in a row than the retry budget allows
/// still end in one post, with nothing failed or dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_rate_limiting_beyond_the_retry_budget_still_delivers_once() {
    let p = Pipeline::start_with(Options {
        tune: |c| c.max_attempts = 3,
        ..Options::default()
    })
    .await;
    let here = Pipeline::discord_channel(PARENT);
    let key = p.session_in(&here, Placement::None).await;
    for _ in 0..6 {
        p.discord
            .push_fault(Fault::RateLimited { retry_after_ms: 20 });
    }
    let c = completion(&key, "patience");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered[0].destination.conversation_id, PARENT);
    assert_eq!(p.discord.fault_counts().rate_limited, 6);
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(p.posted(&here), vec!["patience".to_owned()]);
    assert!(p.failed().is_empty(), "{:?}", p.failed());
    let dead = p.observer.raw(&format!("{}.dlq.", p.subjects.prefix()));
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}

// ---- 6. named sessions across a full restart ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_session_resumes_after_every_process_and_redis_restarted() {
    let mut p = Pipeline::start().await;
    let here = room("room-7");
    let mut first = spawn(&here, Placement::Current, SessionMode::Session);
    first.session_key = Some("agent:larry:thread:budget-planning".into());
    p.publish(p.subjects.in_spawn(), &first.event_id, &first)
        .await;
    let binding = p
        .wait_spawned(&first.event_id)
        .await
        .binding
        .expect("bound");

    p.stop_in_process().await;
    p.redis.restart().await; // SIGKILL: only the append-only file keeps the state
    p.start_in_process().await;

    let mut again = first.clone();
    again.event_id = new_id();
    again.resume_if_exists = true;
    p.publish(p.subjects.in_spawn(), &again.event_id, &again)
        .await;
    let resumed = p.wait_spawned(&again.event_id).await;
    assert!(resumed.resumed);
    assert_eq!(
        resumed.binding.map(|b| b.binding_id),
        Some(binding.binding_id.clone())
    );
    let state = p
        .store()
        .await
        .load_session("agent:larry:thread:budget-planning")
        .await
        .expect("redis")
        .expect("session");
    assert_eq!(state.bindings.len(), 1, "no duplicate binding");
    let c = completion(
        "agent:larry:thread:budget-planning",
        "still here after the restart",
    );
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (delivered[0].mode, &delivered[0].destination),
        (DeliveryMode::Bound, &here)
    );
}

// ---- 7. nested sessions -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_completions_go_to_the_parent_as_input_and_keep_the_thread_as_origin() {
    let p = Pipeline::start().await;
    let (parent_key, thread) = p
        .session_in_thread(&Pipeline::discord_channel(PARENT))
        .await;
    // The parent, working in its thread, spawns a child; the child spawns a grandchild.
    let mut child = spawn(&thread, Placement::None, SessionMode::Run);
    child.requester = Requester {
        session_key: parent_key.clone(),
        conversation: thread.clone(),
    };
    p.publish(p.subjects.in_spawn(), &child.event_id, &child)
        .await;
    let child_key = p.wait_spawned(&child.event_id).await.session_key;
    let mut grandchild = spawn(&thread, Placement::None, SessionMode::Run);
    grandchild.requester = Requester {
        session_key: child_key.clone(),
        conversation: thread.clone(),
    };
    p.publish(p.subjects.in_spawn(), &grandchild.event_id, &grandchild)
        .await;
    let grandchild_key = p.wait_spawned(&grandchild.event_id).await.session_key;

    let deep = completion(&grandchild_key, "grandchild result");
    p.publish(p.subjects.in_completion(), &deep.event_id, &deep)
        .await;
    let to_child = p.wait_inputs(&deep.event_id, 1).await;
    assert_eq!(to_child.len(), 1);
    assert_eq!(to_child[0].session_key, child_key);
    assert_eq!(to_child[0].origin, thread, "depth 2 keeps the thread");
    assert_eq!(to_child[0].source, InputSource::Completion);

    let mid = completion(&child_key, "child result");
    p.publish(p.subjects.in_completion(), &mid.event_id, &mid)
        .await;
    let to_parent = p.wait_inputs(&mid.event_id, 1).await;
    assert_eq!(
        (to_parent[0].session_key.as_str(), &to_parent[0].origin),
        (parent_key.as_str(), &thread)
    );
    assert_eq!(
        to_parent[0].from_session_key.as_deref(),
        Some(child_key.as_str())
    );

    let top = completion(&parent_key, "parent's answer");
    p.publish(p.subjects.in_completion(), &top.event_id, &top)
        .await;
    p.wait_delivered(&top.event_id, 1).await;
    p.settle(Duration::from_millis(500)).await;
    let in_thread: Vec<String> = p
        .discord
        .messages_in(&thread.conversation_id)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(
        in_thread,
        ["parent's answer"],
        "nested results are input, not chat posts"
    );
    assert!(p
        .discord
        .messages_in(PARENT)
        .iter()
        .all(|m| m.content.starts_with("🧵")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_sessions_lost_thread_sends_its_completion_to_the_parent_as_the_router_would() {
    let p = Pipeline::start().await;
    let channel = Pipeline::discord_channel(PARENT);
    let (parent_key, parent_thread) = p
        .spawn_in_thread(&spawn(&channel, Placement::Child, SessionMode::Session))
        .await;
    // The parent spawns a child with a thread of its own, then that thread is deleted: only
    // the deliverer, posting the child's completion there, finds out.
    let mut child = spawn(&channel, Placement::Child, SessionMode::Session);
    child.requester = Requester {
        session_key: parent_key.clone(),
        conversation: channel.clone(),
    };
    child.thread_name = Some("child".into());
    let (child_key, child_thread) = p.spawn_in_thread(&child).await;
    p.discord.delete_channel(&child_thread.conversation_id);

    let noticed = completion(&child_key, "found by the deliverer");
    p.publish(p.subjects.in_completion(), &noticed.event_id, &noticed)
        .await;
    p.wait_inputs(&noticed.event_id, 1).await;
    assert_eq!(
        p.wait_binding(&child_key, BindingChange::Ended)
            .await
            .reason,
        "thread_deleted"
    );
    // With the binding ended, the router decides the next completion itself.
    let decided = completion(&child_key, "decided by the router");
    p.publish(p.subjects.in_completion(), &decided.event_id, &decided)
        .await;
    let by_router = p.wait_inputs(&decided.event_id, 1).await;
    p.settle(Duration::from_millis(600)).await;

    let by_deliverer: Vec<_> = p
        .inputs()
        .into_iter()
        .filter(|i| i.event_id == noticed.event_id)
        .collect();
    assert_eq!(by_deliverer.len(), 1, "one input: {by_deliverer:?}");
    assert_eq!(by_router.len(), 1, "one input: {by_router:?}");
    for (input, text) in [
        (&by_deliverer[0], "found by the deliverer"),
        (&by_router[0], "decided by the router"),
    ] {
        assert_eq!(input.session_key, parent_key);
        assert_eq!(input.origin, channel);
        assert_eq!(input.source, InputSource::Completion);
        assert_eq!(input.from_session_key.as_deref(), Some(child_key.as_str()));
        assert_eq!(input.text, text);
    }
    // Input, not chat posts, and no other outcome beside it.
    for event_id in [&noticed.event_id, &decided.event_id] {
        assert!(p.delivered().iter().all(|d| &d.event_id != event_id));
        assert!(p.failed().iter().all(|f| &f.event_id != event_id));
    }
    for conversation in [PARENT, &parent_thread.conversation_id] {
        assert!(
            p.discord
                .messages_in(conversation)
                .iter()
                .all(|m| m.content.starts_with("🧵")),
            "{:?}",
            p.discord.messages_in(conversation)
        );
    }
}

// ---- 8. ambiguity ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_bindings_without_an_exact_match_fall_back_as_ambiguous_never_guess() {
    let p = Pipeline::start().await;
    let (key, thread) = p
        .session_in_thread(&Pipeline::discord_channel(PARENT))
        .await;
    // A second active binding of the same session in another thread of the same channel.
    let store = p.store().await;
    let existing = store
        .load_session(&key)
        .await
        .expect("redis")
        .expect("session")
        .bindings
        .remove(0);
    let other = BindingRecord {
        binding_id: "b-second".into(),
        conversation: ConversationRef {
            conversation_id: "100000000000000777".into(),
            ..thread.clone()
        },
        ..existing
    };
    store.add_binding(&other).await.expect("second binding");
    let c = completion(&key, "which thread?");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (delivered[0].mode, delivered[0].reason.as_str()),
        (DeliveryMode::Fallback, "ambiguous_binding")
    );
    assert_eq!(delivered[0].destination.conversation_id, PARENT);
    p.settle(Duration::from_millis(400)).await;
    assert!(p.discord.messages_in(&thread.conversation_id).is_empty());
    assert!(p.discord.messages_in("100000000000000777").is_empty());
}

/// Fields of a session's bucket that belong to binding `binding_id`.
async fn binding_fields(p: &Pipeline, session_key: &str, binding_id: &str) -> Vec<String> {
    let store = p.store().await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(store.keys().session(session_key))
        .query_async(&mut store.connection())
        .await
        .expect("HKEYS");
    fields
        .into_iter()
        .filter(|f| f.contains(binding_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_session_sheds_bindings_that_ended_long_ago() {
    let p = Pipeline::start_with(Options {
        tune: |c| c.ended_ttl_ms = 3_000,
        ..Options::default()
    })
    .await;
    let mut s = spawn(&room("room-shed"), Placement::Current, SessionMode::Session);
    s.session_key = Some("agent:larry:named:shed".into());
    s.resume_if_exists = true;
    let key = s.session_key.clone().expect("named");
    // Bound, unbound by the operator, resumed by name (a new binding), three times over.
    let mut ids = Vec::new();
    for round in 0..3 {
        if round == 2 {
            // The first binding ended more than `ended_ttl_ms` ago by now (at least 3.2 s:
            // waiting longer only helps), the second 1.2 s ago plus processing.
            tokio::time::sleep(Duration::from_millis(1_200)).await;
        }
        let mut again = s.clone();
        again.event_id = new_id();
        p.publish(p.subjects.in_spawn(), &again.event_id, &again)
            .await;
        let binding = p
            .wait_spawned(&again.event_id)
            .await
            .binding
            .expect("bound");
        if round < 2 {
            let unbind = threadline_tests::events::unbind_session(&key, "operator");
            p.publish(p.subjects.in_control(), &unbind.event_id, &unbind)
                .await;
            let id = binding.binding_id.clone();
            p.observer
                .wait_for(
                    &p.subjects.out_binding(),
                    Duration::from_secs(15),
                    |b: &BindingChanged| {
                        b.binding.binding_id == id && b.change == BindingChange::Ended
                    },
                )
                .await
                .expect("ended");
            if round == 0 {
                tokio::time::sleep(Duration::from_millis(2_000)).await;
            }
        }
        ids.push(binding.binding_id);
    }
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3
    );
    // Adding the third binding dropped the first (ended > 3 s before), kept the second.
    assert!(binding_fields(&p, &key, &ids[0]).await.is_empty());
    assert_eq!(
        binding_fields(&p, &key, &ids[1]).await.len(),
        4,
        "the binding, :why, :by, :end"
    );
    assert_eq!(
        binding_fields(&p, &key, &ids[2]).await.len(),
        1,
        "the binding (status and last activity live in its value)"
    );
    let state = p
        .store()
        .await
        .load_session(&key)
        .await
        .expect("load")
        .expect("session");
    let live: Vec<_> = state
        .bindings
        .iter()
        .filter(|b| b.status == threadline_schemas::BindingStatus::Active)
        .map(|b| b.binding_id.clone())
        .collect();
    assert_eq!(live, vec![ids[2].clone()]);
    assert_eq!(
        state.bindings.len(),
        2,
        "the live one and the recently ended one"
    );
}
