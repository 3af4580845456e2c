//! The Discord adapter against a fake that answers as Discord does (see
//! `tests/src/fakes/discord.rs`; every request it receives is checked against the vendored
//! OpenAPI document, and a violation fails the test that sent it): archived vs locked
//! threads, persona read-back for an app without the MESSAGE_CONTENT intent, re-sends after
//! `enforce_nonce` forgot the nonce, global 429s, forum channels, and children of threads.

use std::time::Duration;
use threadline::config::{Persona, Secret};
use threadline_schemas::{
    BindingChange, ConversationRef, DeliveryMode, Placement, Reconciliation, SessionMode,
};
use threadline_tests::events::{completion, spawn};
use threadline_tests::fakes::Fault;
use threadline_tests::pipeline::{Options, Pipeline};

fn channel(id: &str) -> ConversationRef {
    Pipeline::discord_channel(id)
}

async fn child_of(p: &Pipeline, parent: &ConversationRef, name: &str) -> (String, ConversationRef) {
    let mut s = spawn(parent, Placement::Child, SessionMode::Session);
    s.thread_name = Some(name.into());
    p.spawn_in_thread(&s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_into_an_archived_thread_unarchives_it_and_the_binding_stays() {
    let p = Pipeline::start().await;
    let parent = channel("100000000000000101");
    let (key, thread) = child_of(&p, &parent, "archived, not locked").await;
    p.discord.archive_thread(&thread.conversation_id);

    let c = completion(&key, "still reaches the thread");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered[0].mode, DeliveryMode::Bound);
    assert_eq!(delivered[0].destination, thread);
    assert_eq!(p.copies(&thread, "still reaches the thread"), 1);
    let t = &p.discord.threads()[0];
    assert!(!t.archived, "Discord unarchives a thread on a post: {t:?}");

    // The binding is still there: the next completion goes to the thread too.
    let again = completion(&key, "and again");
    p.publish(p.subjects.in_completion(), &again.event_id, &again)
        .await;
    let delivered = p.wait_delivered(&again.event_id, 1).await;
    assert_eq!(delivered[0].mode, DeliveryMode::Bound);
    p.settle(Duration::from_millis(300)).await;
    let ended = p
        .observer
        .events::<threadline_schemas::BindingChanged>(&p.subjects.out_binding())
        .into_iter()
        .filter(|b| b.binding.target_session_key == key && b.change == BindingChange::Ended)
        .count();
    assert_eq!(ended, 0, "the binding stays");
    assert!(
        p.posted(&parent).iter().all(|t| !t.starts_with("👋")),
        "no farewell"
    );
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_thread_ends_its_binding_with_a_farewell_in_the_parent_and_falls_back() {
    let p = Pipeline::start().await;
    // Locked while active (160005), and locked and archived (50083): both are closed.
    for (n, archived_too) in [(0, false), (1, true)] {
        let parent = channel(&format!("10000000000000020{n}"));
        let (key, thread) = child_of(&p, &parent, "locked by a moderator").await;
        p.discord.lock_thread(&thread.conversation_id);
        if archived_too {
            p.discord.archive_thread(&thread.conversation_id);
        }
        let text = format!("result for a locked thread {n}");
        let c = completion(&key, &text);
        let delivered = p.deliver(&c).await;
        assert_eq!(
            (delivered[0].mode, delivered[0].reason.as_str()),
            (DeliveryMode::Fallback, "thread_locked"),
            "archived too: {archived_too}"
        );
        assert_eq!(delivered[0].destination, parent);
        assert_eq!(
            p.wait_binding(&key, BindingChange::Ended).await.reason,
            "thread_locked"
        );
        p.settle(Duration::from_millis(300)).await;
        assert_eq!(p.copies(&parent, &text), 1);
        assert_eq!(p.copies(&thread, &text), 0, "a locked thread takes no post");
        let farewells: Vec<String> = p
            .posted(&parent)
            .into_iter()
            .filter(|t| t.starts_with("👋"))
            .collect();
        assert_eq!(farewells.len(), 1, "{farewells:?}");
        assert!(farewells[0].contains("locked"), "{farewells:?}");
    }
    p.discord.assert_no_spec_violations();
}

fn persona_for(p: &mut Pipeline, parent: &ConversationRef) -> String {
    let (webhook_id, webhook_token) = p.discord.add_webhook(&parent.conversation_id);
    p.config.discord.personas.insert(
        parent.conversation_id.clone(),
        Persona {
            webhook_id: webhook_id.clone(),
            webhook_token: Secret::new(webhook_token),
            username: Some("Larry".into()),
            avatar_url: None,
        },
    );
    webhook_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncertain_persona_post_is_posted_once_by_an_app_without_message_content() {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
        },
    })
    .await;
    let parent = channel("100000000000000301");
    let webhook_id = persona_for(&mut p, &parent);
    p.start_in_process().await;
    // Listed webhook messages come back with empty content, as Discord sends them to an
    // app without the privileged intent.
    p.discord.set_message_content_intent(false);
    let (key, thread) = child_of(&p, &parent, "persona without the intent").await;
    let first = completion(&key, "an earlier post by Larry");
    p.publish(p.subjects.in_completion(), &first.event_id, &first)
        .await;
    p.wait_delivered(&first.event_id, 1).await;

    // Accepted, answer lost: webhook executes take no nonce; the thread is read back.
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let text = "posted once though the answer was lost";
    let c = completion(&key, text);
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));
    let in_thread = p.discord.messages_in(&thread.conversation_id);
    let ours: Vec<_> = in_thread.iter().filter(|m| m.content == text).collect();
    assert_eq!(ours.len(), 1, "{in_thread:#?}");
    assert_eq!(ours[0].author_id, webhook_id);
    assert_eq!(
        delivered[0].platform_message_id, ours[0].id,
        "the read-back found it"
    );
    // The earlier post (listed blank as well) was not taken for this one.
    assert_eq!(
        in_thread.len(),
        2,
        "the earlier post and this one: {in_thread:#?}"
    );
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_send_after_discord_forgot_the_nonce_is_settled_by_read_back_not_posted_twice() {
    let p = Pipeline::start_with(Options {
        in_process: true,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
            // Trusted for less than any retry can take here: every doubt is read back.
            c.discord.nonce_window_ms = Some(100);
        },
    })
    .await;
    // Discord remembers a nonce only "in the past few minutes": here, 300 ms.
    p.discord.set_nonce_window(Duration::from_millis(300));
    let conversation = channel("100000000000000401");
    let key = p.session_in(&conversation, Placement::None).await;
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let text = "one copy after the nonce expired";
    let c = completion(&key, text);
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(p.copies(&conversation, text), 1);
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_a_re_send_keeps_the_first_attempt_in_doubt() {
    let p = Pipeline::start_with(Options {
        in_process: true,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
            c.discord.nonce_window_ms = Some(1_500);
        },
    })
    .await;
    p.discord.set_nonce_window(Duration::from_millis(2_000));
    let conversation = channel("100000000000000501");
    let key = p.session_in(&conversation, Placement::None).await;
    // The first attempt lands but its answer is lost; the re-send (inside the nonce window)
    // meets a 429 long enough that the next try is past both windows. Had the 429 released
    // the part, that try would be a fresh post with a forgotten nonce: a second copy.
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    p.discord.push_fault(Fault::RateLimited {
        retry_after_ms: 2_500,
    });
    let text = "one copy despite the 429 on the re-send";
    let c = completion(&key, text);
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(p.copies(&conversation, text), 1);
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));
    assert_eq!(p.discord.fault_counts().rate_limited, 1);
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_creation_in_doubt_past_the_nonce_window_makes_one_starter_and_one_thread() {
    let p = Pipeline::start_with(Options {
        in_process: true,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
            c.discord.nonce_window_ms = Some(100);
        },
    })
    .await;
    p.discord.set_nonce_window(Duration::from_millis(300));
    let parent = channel("100000000000000601");
    // The starter message lands, its answer is lost; by the retry Discord forgot its nonce.
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let (_, thread) = child_of(&p, &parent, "created once").await;
    p.settle(Duration::from_millis(500)).await;
    let threads = p.discord.threads();
    assert_eq!(threads.len(), 1, "{threads:#?}");
    assert_eq!(threads[0].id, thread.conversation_id);
    let starters = p
        .posted(&parent)
        .into_iter()
        .filter(|t| t.starts_with("🧵"))
        .count();
    assert_eq!(starters, 1);
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_429_pauses_every_route_of_the_bot() {
    let p = Pipeline::start().await;
    let a = channel("100000000000000701");
    let b = channel("100000000000000702");
    let key_a = p.session_in(&a, Placement::None).await;
    let key_b = p.session_in(&b, Placement::None).await;
    p.discord.global_rate_limit(1_500);
    let ca = completion(&key_a, "to a, after the global limit");
    p.publish(p.subjects.in_completion(), &ca.event_id, &ca)
        .await;
    // Wait until the first post met the global 429, then post elsewhere.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let limited_at = loop {
        let log = p.discord.request_log();
        if let Some((_, _, at)) = log
            .iter()
            .find(|(m, path, _)| m == "POST" && path.ends_with("/messages"))
        {
            break *at;
        }
        assert!(tokio::time::Instant::now() < deadline, "no post arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cb = completion(&key_b, "to b, another route");
    p.publish(p.subjects.in_completion(), &cb.event_id, &cb)
        .await;
    p.wait_delivered(&ca.event_id, 1).await;
    p.wait_delivered(&cb.event_id, 1).await;
    let to_b: Vec<_> = p
        .discord
        .request_log()
        .into_iter()
        .filter(|(m, path, _)| {
            m == "POST" && path == &format!("/channels/{}/messages", b.conversation_id)
        })
        .collect();
    assert_eq!(to_b.len(), 1, "b was not tried during the pause: {to_b:?}");
    assert!(
        to_b[0].2.duration_since(limited_at) >= Duration::from_millis(1_400),
        "b waited out the global limit"
    );
    assert_eq!(p.copies(&a, "to a, after the global limit"), 1);
    assert_eq!(p.copies(&b, "to b, another route"), 1);
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_under_a_forum_channel_is_a_forum_post_with_its_first_message() {
    let p = Pipeline::start().await;
    let forum = channel("100000000000000801");
    p.discord.add_forum_channel(&forum.conversation_id);
    let (key, thread) = child_of(&p, &forum, "forum work").await;
    assert_eq!(
        thread.parent_conversation_id.as_deref(),
        Some(forum.conversation_id.as_str())
    );
    let c = completion(&key, "in the forum post");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered[0].destination, thread);
    let posted = p.posted(&thread);
    assert_eq!(
        posted,
        vec!["🧵 forum work".to_owned(), "in the forum post".to_owned()]
    );
    assert!(
        p.posted(&forum).is_empty(),
        "nothing is posted into a forum itself"
    );
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_requested_from_inside_a_thread_goes_under_the_threads_parent_channel() {
    let p = Pipeline::start().await;
    let parent = channel("100000000000000901");
    let (_, requester_thread) = child_of(&p, &parent, "where the agent works").await;
    let (_, child) = child_of(&p, &requester_thread, "a child of that work").await;
    assert_eq!(
        child.parent_conversation_id.as_deref(),
        Some(parent.conversation_id.as_str()),
        "a Discord thread cannot hold threads: the child is under the channel"
    );
    let threads = p.discord.threads();
    assert_eq!(threads.len(), 2, "{threads:#?}");
    assert!(threads
        .iter()
        .all(|t| t.parent_id == parent.conversation_id));
    // Both starters are in the channel; none was left in the requester's thread.
    let in_thread = p.posted(&requester_thread);
    assert!(
        in_thread.iter().all(|t| !t.starts_with("🧵")),
        "{in_thread:?}"
    );
    assert_eq!(
        p.posted(&parent)
            .iter()
            .filter(|t| t.starts_with("🧵"))
            .count(),
        2
    );
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_bucket_is_waited_out_before_its_next_request_and_meets_no_429() {
    let p = Pipeline::start().await;
    // Two requests per channel per 800 ms: the headers say when the third may go.
    p.discord.set_route_limit(2, Duration::from_millis(800));
    let conversation = channel("100000000000001001");
    let key = p.session_in(&conversation, Placement::None).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let c = completion(&key, &format!("paced post {n}"));
        p.publish_completion(&c).await;
        ids.push(c.event_id);
    }
    for id in &ids {
        p.wait_delivered(id, 1).await;
    }
    let mut posted = p.posted(&conversation);
    posted.sort();
    assert_eq!(
        posted,
        (0..5)
            .map(|n| format!("paced post {n}"))
            .collect::<Vec<_>>(),
        "each once"
    );
    assert_eq!(
        p.discord.bucket_refusals(),
        0,
        "the adapter read Remaining: 0 and waited"
    );
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forum_post_in_doubt_is_found_not_created_twice() {
    let p = Pipeline::start_with(Options {
        in_process: true,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
        },
    })
    .await;
    let forum = channel("100000000000001101");
    p.discord.add_forum_channel(&forum.conversation_id);
    // The forum post (thread + first message, no nonce) lands; its answer is lost.
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let (_, thread) = child_of(&p, &forum, "forum once").await;
    p.settle(Duration::from_millis(500)).await;
    let threads = p.discord.threads();
    assert_eq!(threads.len(), 1, "{threads:#?}");
    assert_eq!(threads[0].id, thread.conversation_id);
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_part_in_doubt_is_not_mistaken_for_the_part_before_it_without_message_content() {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
        },
    })
    .await;
    let parent = channel("100000000000001201");
    let webhook_id = persona_for(&mut p, &parent);
    p.start_in_process().await;
    p.discord.set_message_content_intent(false);
    let (key, thread) = child_of(&p, &parent, "two parts").await;
    // Two parts: the first goes through (a no-op fault keeps the queue's place), the
    // second lands but its answer is lost. Both read back blank.
    p.discord.push_fault(Fault::Slow { delay_ms: 0 });
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let content = format!("{}\n\n{}", "a".repeat(1_500), "b".repeat(1_500));
    let c = completion(&key, &content);
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(500)).await;
    let in_thread = p.discord.messages_in(&thread.conversation_id);
    assert_eq!(in_thread.len(), 2, "each part once: {in_thread:#?}");
    assert!(in_thread.iter().all(|m| m.author_id == webhook_id));
    assert!(in_thread[0].content.starts_with('a') && in_thread[1].content.starts_with('b'));
    let ids: Vec<&str> = in_thread.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        delivered[0].platform_message_ids, ids,
        "both parts, in order, found"
    );
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_post_into_a_locked_thread_ends_the_binding_and_the_farewell_is_the_bots() {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: |_| {},
    })
    .await;
    let parent = channel("100000000000001301");
    persona_for(&mut p, &parent);
    p.start_in_process().await;
    let (key, thread) = child_of(&p, &parent, "persona, locked").await;
    p.discord.lock_thread(&thread.conversation_id);
    let c = completion(&key, "said as Larry, but locked");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (delivered[0].mode, delivered[0].reason.as_str()),
        (DeliveryMode::Fallback, "thread_locked")
    );
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_locked"
    );
    p.settle(Duration::from_millis(300)).await;
    let in_parent = p.discord.messages_in(&parent.conversation_id);
    let farewell: Vec<_> = in_parent
        .iter()
        .filter(|m| m.content.starts_with("👋"))
        .collect();
    assert_eq!(farewell.len(), 1, "{in_parent:#?}");
    assert_eq!(
        farewell[0].author_id,
        p.discord.bot_user_id(),
        "the farewell is the bot's"
    );
    assert_eq!(
        in_parent
            .iter()
            .filter(|m| m.content == "said as Larry, but locked")
            .count(),
        1
    );
    assert!(p.discord.messages_in(&thread.conversation_id).is_empty());
    p.discord.assert_no_spec_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_whose_creation_answer_was_lost_is_found_through_160004() {
    let p = Pipeline::start_with(Options {
        in_process: true,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
        },
    })
    .await;
    let parent = channel("100000000000001401");
    // The starter goes through; the thread is created but its answer is lost. Starting a
    // thread on the same message again answers 160004: the thread has the message's id.
    p.discord.push_fault(Fault::Slow { delay_ms: 0 });
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let (_, thread) = child_of(&p, &parent, "answer lost").await;
    p.settle(Duration::from_millis(500)).await;
    let threads = p.discord.threads();
    assert_eq!(threads.len(), 1, "{threads:#?}");
    assert_eq!(threads[0].id, thread.conversation_id);
    let starters: Vec<_> = p
        .discord
        .messages_in(&parent.conversation_id)
        .into_iter()
        .filter(|m| m.content.starts_with("🧵"))
        .collect();
    assert_eq!(starters.len(), 1);
    assert_eq!(starters[0].id, thread.conversation_id);
    p.discord.assert_no_spec_violations();
}
