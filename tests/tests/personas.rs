//! A session's own name and picture (`persona` on its spawn), read back from the fakes: on
//! Discord its posts go through the channel's configured webhook under that name and avatar,
//! on Slack they carry `username` and `icon_url`, and its farewell stays the bot's. Where the
//! platform cannot (Telegram, Matrix) or Discord has no webhook in the channel, the spawn is
//! refused with `capability_unsupported`, never silently posted as the bot.

use std::time::Duration;
use threadline::config::{Persona, Secret};
use threadline_schemas::{Placement, SessionMode, SessionPersona};
use threadline_tests::events::{completion, spawn};
use threadline_tests::pipeline::{Options, Pipeline};

fn budget_bot() -> SessionPersona {
    SessionPersona {
        name: "Budget Bot".into(),
        avatar_url: Some("https://example.com/budget.png".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_persona_names_its_posts_where_the_platform_can_and_is_refused_where_not() {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: |_| {},
    })
    .await;
    let discord = Pipeline::conversation("discord");
    let (webhook_id, webhook_token) = p.discord.add_webhook(&discord.conversation_id);
    p.config.discord.personas.insert(
        discord.conversation_id.clone(),
        Persona {
            webhook_id: webhook_id.clone(),
            webhook_token: Secret::new(webhook_token),
            username: Some("Larry".into()),
            avatar_url: None,
        },
    );
    p.start_in_process().await;

    // Discord: through the channel's webhook, under the session's name, not the channel's.
    let mut s = spawn(&discord, Placement::Child, SessionMode::Session);
    s.persona = Some(budget_bot());
    s.idle_timeout_ms = Some(2_000);
    let (key, thread) = p.spawn_in_thread(&s).await;
    p.deliver(&completion(&key, "rent is 40%")).await;
    let posts = p.discord.messages_in(&thread.conversation_id);
    let post = posts
        .iter()
        .find(|m| m.content == "rent is 40%")
        .expect("posted");
    assert_eq!(post.author_id, webhook_id);
    assert_eq!(
        post.shown_as,
        Some((
            Some("Budget Bot".to_owned()),
            Some("https://example.com/budget.png".to_owned())
        ))
    );
    // The farewell is the bot's own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let farewell = loop {
        let bot_posts: Vec<_> = p
            .discord
            .messages_in(&thread.conversation_id)
            .into_iter()
            .filter(|m| m.author_id == p.discord.bot_user_id())
            .collect();
        if let Some(m) = bot_posts.into_iter().next() {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "no farewell");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(farewell.content.contains("ended"), "{}", farewell.content);
    let under_persona = p
        .discord
        .messages_in(&thread.conversation_id)
        .into_iter()
        .filter(|m| m.author_id == webhook_id)
        .count();
    assert_eq!(
        under_persona, 1,
        "only the completion went out under the persona"
    );

    // Slack: `username` and `icon_url` on every post.
    let mut s = spawn(
        &Pipeline::conversation("slack"),
        Placement::Child,
        SessionMode::Session,
    );
    s.persona = Some(budget_bot());
    let (key, thread) = p.spawn_in_thread(&s).await;
    p.deliver(&completion(&key, "savings 20%")).await;
    let channel = thread.parent_conversation_id.as_deref().expect("a thread");
    let posts = p.slack.messages_in(channel, Some(&thread.conversation_id));
    let post = posts
        .iter()
        .find(|m| m.text == "savings 20%")
        .expect("posted");
    assert_eq!(post.username.as_deref(), Some("Budget Bot"));
    assert_eq!(
        post.icon_url.as_deref(),
        Some("https://example.com/budget.png")
    );

    // Refused where the name cannot be shown.
    let refused = |channel: &str| {
        let mut s = spawn(
            &Pipeline::conversation(channel),
            Placement::Child,
            SessionMode::Session,
        );
        s.persona = Some(budget_bot());
        s
    };
    for channel in ["telegram", "matrix"] {
        let s = refused(channel);
        p.publish_spawn(&s).await;
        let rejected = p.wait_rejected(&s.event_id).await;
        assert_eq!(rejected.code, "capability_unsupported", "{channel}");
    }
    // A Discord channel without a webhook, and a name Discord forbids.
    let mut s = spawn(
        &Pipeline::discord_channel("100000000000000777"),
        Placement::Child,
        SessionMode::Session,
    );
    s.persona = Some(budget_bot());
    p.publish_spawn(&s).await;
    let rejected = p.wait_rejected(&s.event_id).await;
    assert_eq!(rejected.code, "capability_unsupported");
    assert!(
        rejected.message.contains("discord.personas"),
        "{}",
        rejected.message
    );
    let mut s = spawn(&discord, Placement::Child, SessionMode::Session);
    s.persona = Some(SessionPersona {
        name: "Discord Helper".into(),
        avatar_url: None,
    });
    p.publish_spawn(&s).await;
    assert_eq!(p.wait_rejected(&s.event_id).await.code, "invalid_event");
}
