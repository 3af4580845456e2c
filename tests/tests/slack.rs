//! The Slack adapter against a fake that answers as Slack does, through NATS with real
//! Redis: a reply to a deleted thread root (answered `ok`, posted at the channel's top
//! level) is never reported bound, is reported for what it was or taken back, and is never
//! posted twice; `ok: false` errors wait, retry or fail with a clear code; agent text cannot
//! mention anyone; a child spawned from inside a thread is rooted in the thread's channel.
//! Every request is checked against Slack's vendored method references (the fake's drop
//! fails the test on a violation).

use std::time::Duration;
use threadline_schemas::{
    BindingChange, ConversationRef, DeliveryMode, DeliveryPolicy, Placement, Reconciliation,
    SessionMode,
};
use threadline_tests::events::{completion, spawn};
use threadline_tests::fakes::Fault;
use threadline_tests::pipeline::{Options, Pipeline};

/// Lines enough for two Slack parts (its limit is 4,000 characters a part).
fn two_parts() -> String {
    (0..600).map(|i| format!("line {i:04}\n")).collect()
}

async fn thread_session(p: &Pipeline, fail_closed: bool) -> (String, ConversationRef) {
    let parent = Pipeline::conversation("slack");
    let mut s = spawn(&parent, Placement::Child, SessionMode::Session);
    s.fail_closed = fail_closed;
    p.spawn_in_thread(&s).await
}

fn lines(parts: &[String]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|t| t.lines().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_deleted_slack_root_is_a_fallback_in_the_channel_never_bound_and_whole_once() {
    let p = Pipeline::start().await;
    let parent = Pipeline::conversation("slack");
    let (key, thread) = thread_session(&p, false).await;
    p.slack.delete_message(&thread.conversation_id);

    let content = two_parts();
    let c = completion(&key, &content);
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (
            delivered[0].mode,
            delivered[0].reason.as_str(),
            &delivered[0].destination
        ),
        (DeliveryMode::Fallback, "thread_deleted", &parent),
        "reported for what it was: a post in the parent channel"
    );
    let ended = p.wait_binding(&key, BindingChange::Ended).await;
    assert_eq!(ended.reason, "thread_deleted");
    p.settle(Duration::from_millis(500)).await;

    // The whole text once, in order, in the channel; nothing in the gone thread, no farewell.
    let in_parent = p.posted(&parent);
    assert_eq!(
        lines(&in_parent),
        lines(std::slice::from_ref(&content)),
        "{in_parent:?}"
    );
    assert_eq!(in_parent.len(), 2, "both parts in the channel");
    assert_eq!(delivered[0].platform_message_ids.len(), 2);
    assert!(p
        .slack
        .messages_in(&parent.conversation_id, Some(&thread.conversation_id))
        .is_empty());
    assert!(!in_parent.iter().any(|t| t.starts_with("👋")));
    assert_eq!(
        p.delivered()
            .iter()
            .filter(|d| d.event_id == c.event_id)
            .count(),
        1
    );
    assert!(
        p.failed().iter().all(|f| f.event_id != c.event_id),
        "one outcome: delivered"
    );

    // The next completion is routed as a fallback by the router, to the channel.
    let next = completion(&key, "after the thread is gone");
    p.publish(p.subjects.in_completion(), &next.event_id, &next)
        .await;
    let routed = p.wait_delivered(&next.event_id, 1).await;
    assert_eq!(
        (routed[0].mode, routed[0].reason.as_str()),
        (DeliveryMode::Fallback, "thread_deleted")
    );
    p.settle(Duration::from_millis(300)).await;
    assert_eq!(p.copies(&parent, "after the thread is gone"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_slack_session_takes_a_misplaced_reply_back_and_reports_it_failed() {
    let p = Pipeline::start().await;
    let parent = Pipeline::conversation("slack");
    let (key, thread) = thread_session(&p, true).await;
    p.slack.delete_message(&thread.conversation_id);

    let c = completion(&key, &two_parts());
    p.publish_completion(&c).await;
    let failed = p.wait_failed(&c.event_id).await;
    assert_eq!(failed.code, "thread_deleted");
    assert_eq!(failed.destination.as_ref(), Some(&thread));
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_deleted"
    );
    p.settle(Duration::from_millis(500)).await;
    // Posted by Slack at the top level, then deleted; the second part never posted.
    assert!(p.posted(&parent).is_empty(), "{:?}", p.posted(&parent));
    assert!(p.delivered().iter().all(|d| d.event_id != c.event_id));
    assert_eq!(
        p.failed()
            .iter()
            .filter(|f| f.event_id == c.event_id)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bound_and_requester_a_reply_slack_put_in_the_requesters_channel_is_not_a_second_copy()
{
    let p = Pipeline::start().await;
    let parent = Pipeline::conversation("slack");
    let mut s = spawn(&parent, Placement::Child, SessionMode::Session);
    s.delivery = DeliveryPolicy::BoundAndRequester;
    let (key, thread) = p.spawn_in_thread(&s).await;
    p.slack.delete_message(&thread.conversation_id);

    let c = completion(&key, "for the thread and the channel");
    p.publish_completion(&c).await;
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_deleted"
    );
    let delivered = p.wait_delivered(&c.event_id, 1).await;
    assert_eq!(delivered[0].destination, parent);
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(
        p.posted(&parent),
        ["for the thread and the channel"],
        "the requester's copy, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misplaced_slack_post_interrupted_by_a_429_resumes_in_the_channel_from_its_claims() {
    let p = Pipeline::start().await;
    let parent = Pipeline::conversation("slack");
    let (key, thread) = thread_session(&p, false).await;
    p.slack.delete_message(&thread.conversation_id);
    // The first part goes through (and lands at the top level); the second is refused
    // once, so the redelivery starts again from the claims: the first part is recorded as
    // posted in the channel, and only the second is posted, there.
    p.slack.push_fault(Fault::Slow { delay_ms: 0 });
    p.slack.push_fault(Fault::RateLimited {
        retry_after_ms: 300,
    });
    let content = two_parts();
    let c = completion(&key, &content);
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (
            delivered[0].mode,
            delivered[0].reason.as_str(),
            &delivered[0].destination
        ),
        (DeliveryMode::Fallback, "thread_deleted", &parent)
    );
    p.settle(Duration::from_millis(500)).await;
    let in_parent = p.posted(&parent);
    assert_eq!(in_parent.len(), 2, "{in_parent:?}");
    assert_eq!(lines(&in_parent), lines(std::slice::from_ref(&content)));
    assert_eq!(p.slack.fault_counts().rate_limited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misplaced_slack_reply_whose_answer_was_lost_is_found_at_the_top_level_not_posted_again()
{
    let p = Pipeline::start_with(Options {
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
        },
        ..Options::default()
    })
    .await;
    let parent = Pipeline::conversation("slack");
    let (key, thread) = thread_session(&p, false).await;
    p.slack.delete_message(&thread.conversation_id);
    // Slack stores the post (at the top level) and the answer never arrives.
    p.slack.push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });

    let c = completion(&key, "did it land, and where?");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (
            delivered[0].mode,
            delivered[0].reason.as_str(),
            &delivered[0].destination
        ),
        (DeliveryMode::Fallback, "thread_deleted", &parent)
    );
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(p.posted(&parent), ["did it land, and where?"]);
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_text_is_escaped_so_agent_output_notifies_nobody() {
    let p = Pipeline::start().await;
    let conversation = Pipeline::conversation("slack");
    let key = p.session_in(&conversation, Placement::None).await;
    let text = "<!channel> <!here> <!everyone> ping <@U0BOSS> and <!subteam^S0ALL> & a > b";
    let c = completion(&key, text);
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    let stored = p.slack.messages_in(&conversation.conversation_id, None);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].text,
        "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; ping &lt;@U0BOSS&gt; and \
         &lt;!subteam^S0ALL&gt; &amp; a &gt; b"
    );
    assert_eq!(
        stored[0].mentions(),
        Vec::<String>::new(),
        "nobody is notified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_ok_false_errors_wait_retry_or_fail_with_a_clear_code() {
    let p = Pipeline::start().await;
    let conversation = Pipeline::conversation("slack");
    let key = p.session_in(&conversation, Placement::None).await;

    // Posting too fast is a wait, not a failure; a fatal_error may have posted: read back.
    for (error, reconciled) in [
        ("rate_limited", None),
        ("ratelimited", None),
        ("fatal_error", Some(Reconciliation::ReadBack)),
        ("service_unavailable", Some(Reconciliation::ReadBack)),
    ] {
        p.slack.push_post_error(error);
        let text = format!("through {error}");
        let c = completion(&key, &text);
        let delivered = p.deliver(&c).await;
        assert_eq!(delivered[0].reconciled, reconciled, "{error}");
        assert_eq!(
            p.posted(&conversation)
                .iter()
                .filter(|t| **t == text)
                .count(),
            1,
            "{error}"
        );
    }

    // Permanent: one request, a clear code, no retry.
    for (error, code) in [
        ("not_in_channel", "forbidden"),
        ("is_archived", "archived"),
        ("restricted_action_read_only_channel", "forbidden"),
        ("token_revoked", "unauthorized"),
        ("invalid_auth", "unauthorized"),
        ("account_inactive", "unauthorized"),
        ("no_text", "rejected"),
    ] {
        p.slack.push_post_error(error);
        let before = p.slack.request_count();
        let c = completion(&key, &format!("refused by {error}"));
        p.publish_completion(&c).await;
        let failed = p.wait_failed(&c.event_id).await;
        assert_eq!(failed.code, code, "{error}");
        p.settle(Duration::from_millis(300)).await;
        assert_eq!(p.slack.request_count() - before, 1, "{error}: not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_slack_thread_ends_its_binding_as_closed_and_falls_back_to_the_channel() {
    let p = Pipeline::start().await;
    let parent = Pipeline::conversation("slack");
    let (key, _thread) = thread_session(&p, false).await;
    p.slack.push_post_error("restricted_action_thread_locked");
    let c = completion(&key, "after the lock");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (
            delivered[0].mode,
            delivered[0].reason.as_str(),
            &delivered[0].destination
        ),
        (DeliveryMode::Fallback, "thread_archived", &parent)
    );
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "thread_archived"
    );
    p.settle(Duration::from_millis(300)).await;
    assert_eq!(p.copies(&parent, "after the lock"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_child_spawned_from_inside_a_thread_is_a_new_root_in_the_threads_channel() {
    let p = Pipeline::start().await;
    let channel = Pipeline::conversation("slack");
    // The requester works in a thread of the channel.
    let (_, requester_thread) = thread_session(&p, false).await;
    let mut s = spawn(&requester_thread, Placement::Child, SessionMode::Session);
    s.thread_name = Some("child of a thread".into());
    let (key, child) = p.spawn_in_thread(&s).await;
    assert_eq!(
        child.parent_conversation_id.as_deref(),
        Some(channel.conversation_id.as_str()),
        "a Slack thread cannot hold a thread: the child is rooted in the channel"
    );
    let roots: Vec<String> = p
        .slack
        .messages_in(&channel.conversation_id, None)
        .into_iter()
        .filter(|m| m.ts == child.conversation_id)
        .map(|m| m.text)
        .collect();
    assert_eq!(roots, ["🧵 child of a thread"]);
    assert!(p
        .slack
        .messages_in(
            &channel.conversation_id,
            Some(&requester_thread.conversation_id)
        )
        .is_empty());

    let c = completion(&key, "from the child");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (delivered[0].mode, &delivered[0].destination),
        (DeliveryMode::Bound, &child)
    );
    assert_eq!(p.posted(&child), ["from the child"]);
}
