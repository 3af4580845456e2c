//! The Telegram adapter against a fake that answers as the Bot API does, through NATS with
//! real Redis: agent text notifies nobody, Telegram's error answers (403 kicked, 400
//! migrated, 400 rights, 401, 429 with `retry_after`) map to a wait or a clear code, and a
//! child spawned from inside a forum topic is a new topic in the topic's chat. Every call is
//! checked against the vendored Bot API description (the fake's drop fails the test on a
//! violation).

use serde_json::json;
use std::time::Duration;
use threadline_schemas::{BindingChange, ConversationRef, DeliveryMode, Placement, SessionMode};
use threadline_tests::events::{completion, spawn};
use threadline_tests::fakes::Fault;
use threadline_tests::pipeline::Pipeline;

fn chat_id(c: &ConversationRef) -> i64 {
    c.conversation_id.parse().expect("numeric chat id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_agent_text_mentions_nobody_and_reads_the_same() {
    let p = Pipeline::start().await;
    let chat = Pipeline::conversation("telegram");
    let key = p.session_in(&chat, Placement::None).await;
    let c = completion(&key, "@alice please ask @bob_2; mail ops@example.com");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    let stored = p.telegram.messages_in(chat_id(&chat), None);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].mentions(),
        Vec::<String>::new(),
        "nobody is notified"
    );
    assert_eq!(
        stored[0].text.replace('\u{2060}', ""),
        "@alice please ask @bob_2; mail ops@example.com",
        "only invisible word joiners were added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_error_answers_wait_or_fail_with_a_clear_code_and_are_not_retried() {
    let p = Pipeline::start().await;
    let chat = Pipeline::conversation("telegram");
    let key = p.session_in(&chat, Placement::None).await;

    // 429 with parameters.retry_after: a wait, then the post, once.
    p.telegram.push_fault(Fault::RateLimited {
        retry_after_ms: 1_000,
    });
    let c = completion(&key, "after retry_after");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered[0].reconciled, None, "a 429 posted nothing");
    assert_eq!(p.posted(&chat), ["after retry_after"]);

    for (status, description, parameters, code) in [
        (
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(json!({ "migrate_to_chat_id": -1_009_876_543_210_i64 })),
            "chat_migrated",
        ),
        (
            400,
            "Bad Request: not enough rights to send text messages to the chat",
            None,
            "forbidden",
        ),
        (
            403,
            "Forbidden: bot is not a member of the supergroup chat",
            None,
            "bot_removed",
        ),
        (400, "Bad Request: chat not found", None, "not_found"),
        // A revoked token (the token file unchanged, so nothing to re-read).
        (401, "Unauthorized", None, "unauthorized"),
    ] {
        p.telegram
            .push_error(status, description, parameters.clone());
        let before = p.telegram.request_count();
        let c = completion(&key, description);
        p.publish_completion(&c).await;
        let failed = p.wait_failed(&c.event_id).await;
        assert_eq!(failed.code, code, "{description}");
        if parameters.is_some() {
            assert!(
                failed.message.contains("-1009876543210"),
                "{}",
                failed.message
            );
        }
        p.settle(Duration::from_millis(300)).await;
        assert_eq!(
            p.telegram.request_count() - before,
            1,
            "{description}: not retried"
        );
    }

    // Kicked from the group: every later post is refused 403, named bot_removed.
    p.telegram.kick_bot(chat_id(&chat));
    let c = completion(&key, "after the kick");
    p.publish_completion(&c).await;
    assert_eq!(p.wait_failed(&c.event_id).await.code, "bot_removed");
    assert_eq!(p.posted(&chat), ["after retry_after"]);
}

/// A bot kicked from a forum chat ends its topic bindings at the first refused post, instead
/// of failing every completion until the idle timeout; the completion is reported failed once
/// (its fallback into the same chat is refused too), and a later one fails at once as
/// unbound, without a request to the thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_telegram_bot_ends_its_topic_binding_instead_of_failing_every_post() {
    let p = Pipeline::start().await;
    let chat = Pipeline::conversation("telegram");
    let mut s = spawn(&chat, Placement::Child, SessionMode::Session);
    s.thread_name = Some("kicked".into());
    let (key, _topic) = p.spawn_in_thread(&s).await;
    p.telegram.kick_bot(chat_id(&chat));
    let c = completion(&key, "after the kick");
    p.publish_completion(&c).await;
    assert_eq!(
        p.wait_binding(&key, BindingChange::Ended).await.reason,
        "bot_removed"
    );
    let failed = p.wait_failed(&c.event_id).await;
    assert_eq!(failed.code, "bot_removed");
    assert_eq!(
        failed.destination,
        Some(chat.clone()),
        "the fallback's outcome"
    );
    p.settle(Duration::from_millis(300)).await;
    assert_eq!(
        p.failed()
            .iter()
            .filter(|f| f.event_id == c.event_id)
            .count(),
        1,
        "one final outcome"
    );
    assert!(p.delivered().iter().all(|d| d.event_id != c.event_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_child_spawned_from_inside_a_topic_is_a_new_topic_in_the_topics_chat() {
    let p = Pipeline::start().await;
    let chat = Pipeline::conversation("telegram");
    // The requester works in a forum topic of the chat.
    let mut first = spawn(&chat, Placement::Child, SessionMode::Session);
    first.thread_name = Some("requester topic".into());
    let (_, requester_topic) = p.spawn_in_thread(&first).await;

    let mut s = spawn(&requester_topic, Placement::Child, SessionMode::Session);
    s.thread_name = Some("child of a topic".into());
    let (key, child) = p.spawn_in_thread(&s).await;
    assert_eq!(
        child.parent_conversation_id.as_deref(),
        Some(chat.conversation_id.as_str()),
        "topics hold no topics: the child is a topic of the chat"
    );
    let topics: Vec<(i64, String)> = p
        .telegram
        .topics()
        .into_iter()
        .map(|t| (t.chat_id, t.name))
        .collect();
    assert_eq!(
        topics,
        [
            (chat_id(&chat), "requester topic".to_owned()),
            (chat_id(&chat), "child of a topic".to_owned())
        ]
    );

    let c = completion(&key, "from the child topic");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (delivered[0].mode, &delivered[0].destination),
        (DeliveryMode::Bound, &child)
    );
    assert_eq!(p.posted(&child), ["from the child topic"]);
    assert!(p.posted(&requester_topic).is_empty());
}

async fn topic_session(p: &Pipeline, fail_closed: bool) -> (String, ConversationRef) {
    let chat = Pipeline::conversation("telegram");
    let mut s = spawn(&chat, Placement::Child, SessionMode::Session);
    s.fail_closed = fail_closed;
    p.spawn_in_thread(&s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_post_the_api_put_in_the_main_chat_is_a_fallback_there_never_bound() {
    let p = Pipeline::start().await;
    let chat = Pipeline::conversation("telegram");
    let (key, topic) = topic_session(&p, false).await;
    p.telegram.unthread_deleted_topics(true);
    p.telegram.delete_topic(chat_id(&chat), chat_id(&topic));
    let c = completion(&key, "where the API put it");
    let delivered = p.deliver(&c).await;
    assert_eq!(
        (
            delivered[0].mode,
            delivered[0].reason.as_str(),
            &delivered[0].destination
        ),
        (DeliveryMode::Fallback, "thread_deleted", &chat)
    );
    assert_eq!(
        p.wait_binding(&key, threadline_schemas::BindingChange::Ended)
            .await
            .reason,
        "thread_deleted"
    );
    p.settle(Duration::from_millis(300)).await;
    assert_eq!(p.posted(&chat), ["where the API put it"]);
    assert!(p.failed().iter().all(|f| f.event_id != c.event_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_telegram_session_deletes_a_post_the_api_put_in_the_main_chat() {
    let p = Pipeline::start().await;
    let chat = Pipeline::conversation("telegram");
    let (key, topic) = topic_session(&p, true).await;
    p.telegram.unthread_deleted_topics(true);
    p.telegram.delete_topic(chat_id(&chat), chat_id(&topic));
    let c = completion(&key, "not outside the topic");
    p.publish_completion(&c).await;
    let failed = p.wait_failed(&c.event_id).await;
    assert_eq!(failed.code, "thread_deleted");
    p.settle(Duration::from_millis(300)).await;
    assert!(p.posted(&chat).is_empty(), "{:?}", p.posted(&chat));
    assert!(p.delivered().iter().all(|d| d.event_id != c.event_id));
}
