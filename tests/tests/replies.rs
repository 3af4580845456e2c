//! A completion that answers a person's message (`reply_to`, a session input's `message_id`)
//! is a reply on each platform, read back from the fakes: Discord `message_reference`, Slack
//! the message's thread (every part of a long answer), Telegram `reply_parameters`, Matrix
//! `m.in_reply_to` inside the thread. A message deleted meanwhile gets a plain post, not a
//! failure.

use threadline_schemas::Placement;
use threadline_tests::events::completion;
use threadline_tests::fakes::telegram::TelegramUser;
use threadline_tests::pipeline::Pipeline;

#[tokio::test]
async fn a_completion_answering_a_message_is_a_reply_on_each_platform() {
    let p = Pipeline::start().await;

    // Discord: a reply in the thread, and a plain post when the message is gone.
    let (key, thread) = p
        .session_in_thread(&Pipeline::conversation("discord"))
        .await;
    let asked = p.discord.person_posts(
        &thread.conversation_id,
        "200000000000000001",
        "which option?",
    );
    let mut answer = completion(&key, "option B");
    answer.reply_to = Some(asked.clone());
    p.deliver(&answer).await;
    let mut gone = completion(&key, "and this one");
    gone.reply_to = Some("1000000000000000001".into());
    p.deliver(&gone).await;
    let posts = p.discord.messages_in(&thread.conversation_id);
    let by_text = |t: &str| posts.iter().find(|m| m.content == t).cloned();
    assert_eq!(by_text("option B").and_then(|m| m.reply_to), Some(asked));
    assert_eq!(by_text("and this one").map(|m| m.reply_to), Some(None));

    // Slack, a session bound to the channel: the answer goes into the asked message's thread,
    // all of its parts.
    let channel = Pipeline::conversation("slack");
    let key = p.session_in(&channel, Placement::Current).await;
    let ts = p
        .slack
        .person_writes(&channel.conversation_id, None, "U0PERSON01", "status?");
    let long = (0..2)
        .map(|n| format!("paragraph {n} {}", "word ".repeat(700)))
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut answer = completion(&key, &long);
    answer.reply_to = Some(ts.clone());
    p.deliver(&answer).await;
    let in_thread = p.slack.messages_in(&channel.conversation_id, Some(&ts));
    assert_eq!(in_thread.len(), 2, "both parts in the thread");
    let top_level_posts = p
        .slack
        .messages_in(&channel.conversation_id, None)
        .into_iter()
        .filter(|m| m.user != "U0PERSON01")
        .count();
    assert_eq!(top_level_posts, 0, "nothing at the channel's top level");

    // Telegram: `reply_parameters` to the person's message in the topic.
    let (key, topic) = p
        .session_in_thread(&Pipeline::conversation("telegram"))
        .await;
    let chat: i64 = topic
        .parent_conversation_id
        .as_deref()
        .and_then(|c| c.parse().ok())
        .expect("chat id");
    let topic_id: i64 = topic.conversation_id.parse().expect("topic id");
    let asked = p.telegram.people().person_writes(
        chat,
        Some(topic_id),
        &TelegramUser::person(4242, "Grace"),
        "ready?",
    );
    let mut answer = completion(&key, "yes");
    answer.reply_to = Some(asked.to_string());
    p.deliver(&answer).await;
    let posts = p.telegram.messages_in(chat, Some(topic_id));
    let reply = posts.iter().find(|m| m.text == "yes").expect("posted");
    assert_eq!(reply.reply_to, Some(asked));

    // Matrix: a reply within the thread.
    let (key, thread) = p.session_in_thread(&Pipeline::conversation("matrix")).await;
    let mut answer = completion(&key, "noted");
    answer.reply_to = Some("$asked-event:fake".into());
    p.deliver(&answer).await;
    let room = thread.parent_conversation_id.as_deref().expect("room");
    let events = p.matrix.events_in(room, Some(&thread.conversation_id));
    let relation = &events
        .iter()
        .find(|e| e.content["body"] == "noted")
        .expect("posted")
        .content["m.relates_to"];
    assert_eq!(relation["rel_type"], "m.thread");
    assert_eq!(relation["event_id"], thread.conversation_id.as_str());
    assert_eq!(relation["is_falling_back"], false);
    assert_eq!(relation["m.in_reply_to"]["event_id"], "$asked-event:fake");
}
