//! Every channel adapter (Discord, Slack, Telegram, Matrix) against its platform's loopback
//! fake, through NATS with real Redis: child threads, bound posts, 429 and 5xx handling,
//! permanent errors, lost threads, unknown outcomes settled by key or read-back (or counted,
//! on Telegram), long content split within each platform's limit, and per-conversation
//! order with three deliverer instances.

use std::time::Duration;
use threadline::app::{self, Role};
use threadline::config::UnknownOutcome;
use threadline::io::nats::StreamKind;
use threadline_schemas::{
    BindingChange, ConversationRef, DeliveryCommand, DeliveryMode, Placement, Reconciliation,
    SessionMode,
};
use threadline_tests::chaos::read_stream;
use threadline_tests::events::{completion, spawn};
use threadline_tests::fakes::Fault;
use threadline_tests::pipeline::{Options, Pipeline};
use tokio_util::sync::CancellationToken;

const PLATFORMS: [&str; 4] = ["discord", "slack", "telegram", "matrix"];

async fn session_in(p: &Pipeline, conversation: &ConversationRef, placement: Placement) -> String {
    let mut s = spawn(conversation, placement, SessionMode::Session);
    s.thread_name = Some(format!("work on {}", conversation.channel));
    p.spawn_session(&s).await.session_key
}

fn push_fault(p: &Pipeline, channel: &str, fault: Fault) {
    match channel {
        "discord" => p.discord.push_fault(fault),
        "slack" => p.slack.push_fault(fault),
        "telegram" => p.telegram.push_fault(fault),
        "matrix" => p.matrix.push_fault(fault),
        other => panic!("no fake for {other}"),
    }
}

fn requests(p: &Pipeline, channel: &str) -> usize {
    match channel {
        "discord" => p.discord.request_count(),
        "slack" => p.slack.request_count(),
        "telegram" => p.telegram.request_count(),
        "matrix" => p.matrix.request_count(),
        other => panic!("no fake for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_creates_a_child_thread_and_posts_bound_output_only_there() {
    let p = Pipeline::start().await;
    for channel in PLATFORMS {
        let parent = Pipeline::conversation(channel);
        let mut s = spawn(&parent, Placement::Child, SessionMode::Session);
        s.thread_name = Some(format!("{channel} thread"));
        let (key, thread) = p.spawn_in_thread(&s).await;
        assert_eq!(
            thread.parent_conversation_id.as_deref(),
            Some(parent.conversation_id.as_str()),
            "{channel}"
        );
        let text = format!("bound output on {channel}");
        let c = completion(&key, &text);
        let delivered = p.deliver(&c).await;
        assert_eq!(
            (delivered[0].mode, &delivered[0].destination),
            (DeliveryMode::Bound, &thread),
            "{channel}"
        );
        assert_eq!(
            p.posted(&thread),
            std::slice::from_ref(&text),
            "{channel}: the thread holds the output"
        );
        assert!(
            !p.posted(&parent).contains(&text),
            "{channel}: never in the parent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_waits_out_429s_and_retries_5xx_without_posting_twice() {
    let p = Pipeline::start().await;
    for channel in PLATFORMS {
        let conversation = Pipeline::conversation(channel);
        let key = session_in(&p, &conversation, Placement::None).await;
        push_fault(
            &p,
            channel,
            Fault::RateLimited {
                retry_after_ms: 300,
            },
        );
        push_fault(&p, channel, Fault::ServerError);
        let before = requests(&p, channel);
        let text = format!("after a 429 and a 500 on {channel}");
        let c = completion(&key, &text);
        let delivered = p.deliver(&c).await;
        assert_eq!(
            p.posted(&conversation)
                .iter()
                .filter(|t| **t == text)
                .count(),
            1,
            "{channel}"
        );
        assert!(
            requests(&p, channel) - before >= 3,
            "{channel}: 429, 500, post"
        );
        // A 500 may have been applied: how each platform settles that doubt.
        let expected = match channel {
            "discord" => Reconciliation::IdempotencyKey,
            // Matrix txn ids are per device (token): read back by the part's key.
            "slack" | "matrix" => Reconciliation::ReadBack,
            _telegram => Reconciliation::UnknownOutcome,
        };
        assert_eq!(delivered[0].reconciled, Some(expected), "{channel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_reported_with_a_clear_code_and_not_retried() {
    let p = Pipeline::start().await;
    for (channel, code) in [
        ("discord", "thread_deleted"),
        ("slack", "not_found"),
        ("telegram", "not_found"),
        // Kicked: the membership read back says `leave`.
        ("matrix", "bot_removed"),
    ] {
        let conversation = Pipeline::conversation(channel);
        let key = session_in(&p, &conversation, Placement::None).await;
        match channel {
            "discord" => p.discord.delete_channel(&conversation.conversation_id),
            "slack" => p.slack.delete_channel(&conversation.conversation_id),
            "telegram" => p
                .telegram
                .delete_chat(conversation.conversation_id.parse().expect("chat id")),
            _matrix => p.matrix.leave_room(&conversation.conversation_id),
        }
        let before = requests(&p, channel);
        let c = completion(&key, "refused");
        p.publish_completion(&c).await;
        let failed = p.wait_failed(&c.event_id).await;
        // Discord reports an unknown channel as 10003, the same code as a deleted thread.
        assert_eq!(failed.code, code, "{channel}");
        p.settle(Duration::from_millis(500)).await;
        // Matrix reads who it is and its membership after the 403, to name it.
        let calls = if channel == "matrix" { 3 } else { 1 };
        assert_eq!(
            requests(&p, channel) - before,
            calls,
            "{channel}: not retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_threads_end_their_bindings_and_the_output_falls_back_to_the_parent() {
    let p = Pipeline::start().await;
    // (channel, how the thread is lost, expected reason)
    for (channel, lose, reason) in [
        ("telegram", "delete", "thread_deleted"),
        ("telegram", "close", "thread_archived"),
        ("matrix", "delete", "thread_deleted"),
        // Discord unarchives an archived thread on a post (tests/tests/discord.rs): only a
        // moderator's lock closes it.
        ("discord", "lock", "thread_locked"),
    ] {
        let parent = Pipeline::conversation(channel);
        let mut s = spawn(&parent, Placement::Child, SessionMode::Session);
        s.thread_name = Some(format!("{channel} {lose}"));
        let (key, thread) = p.spawn_in_thread(&s).await;
        let chat = || parent.conversation_id.parse::<i64>().expect("chat id");
        let topic = || thread.conversation_id.parse::<i64>().expect("topic id");
        match (channel, lose) {
            ("telegram", "delete") => p.telegram.delete_topic(chat(), topic()),
            ("telegram", _close) => p.telegram.close_topic(chat(), topic()),
            ("matrix", _delete) => p.matrix.redact(&thread.conversation_id),
            (_discord, _lock) => p.discord.lock_thread(&thread.conversation_id),
        }
        let text = format!("{channel} output after {lose}");
        let c = completion(&key, &text);
        let delivered = p.deliver(&c).await;
        assert_eq!(
            (delivered[0].mode, delivered[0].reason.as_str()),
            (DeliveryMode::Fallback, reason),
            "{channel} {lose}"
        );
        assert_eq!(delivered[0].destination, parent);
        assert_eq!(
            p.wait_binding(&key, BindingChange::Ended).await.reason,
            reason
        );
        p.settle(Duration::from_millis(300)).await;
        // One final outcome a publisher can wait on: the fallback, never `failed` too.
        assert!(
            p.failed().iter().all(|f| f.event_id != c.event_id),
            "{channel} {lose}: {:?}",
            p.failed()
        );
        let in_parent = p.posted(&parent);
        assert_eq!(
            in_parent.iter().filter(|t| **t == text).count(),
            1,
            "{channel} {lose}: {in_parent:?}"
        );
        let farewells = in_parent
            .iter()
            .filter(|t| t.starts_with("👋") && (t.contains("archived") || t.contains("locked")))
            .count();
        assert_eq!(
            farewells,
            usize::from(matches!(reason, "thread_archived" | "thread_locked")),
            "{channel} {lose}: farewell only when archived or locked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_then_timed_out_posts_are_settled_by_key_or_read_back_and_counted_on_telegram() {
    let p = Pipeline::start_with(Options {
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
        },
        ..Options::default()
    })
    .await;
    for channel in PLATFORMS {
        let conversation = Pipeline::conversation(channel);
        let key = session_in(&p, &conversation, Placement::None).await;
        // Stored by the platform, but the answer never arrives: the outcome is unknown.
        push_fault(&p, channel, Fault::AcceptThenHang { hold_ms: 1_500 });
        let text = format!("did it land on {channel}?");
        let c = completion(&key, &text);
        let delivered = p.deliver(&c).await;
        p.settle(Duration::from_millis(300)).await;
        let copies = p
            .posted(&conversation)
            .iter()
            .filter(|t| **t == text)
            .count();
        let (expected_copies, how) = match channel {
            "discord" => (1, Reconciliation::IdempotencyKey),
            "slack" | "matrix" => (1, Reconciliation::ReadBack),
            // No key, no history for bots: re-posted (the documented default) and counted.
            _telegram => (2, Reconciliation::UnknownOutcome),
        };
        assert_eq!(copies, expected_copies, "{channel}");
        assert_eq!(delivered[0].reconciled, Some(how), "{channel}");
    }
    // Counted for operators (the recorder is per process, shared with other tests here).
    let metrics = reqwest_metrics(&p).await;
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("threadline_unknown_outcomes_total{channel=\"telegram\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(counted >= 1.0, "{metrics}");
}

async fn reqwest_metrics(p: &Pipeline) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = p.health_addr.expect("health server");
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_can_be_told_to_skip_rather_than_repost_an_unknown_outcome() {
    let p = Pipeline::start_with(Options {
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
            c.telegram.unknown_outcome = UnknownOutcome::Skip;
        },
        ..Options::default()
    })
    .await;
    let conversation = Pipeline::conversation("telegram");
    let key = session_in(&p, &conversation, Placement::None).await;
    p.telegram
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let c = completion(&key, "at most once");
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(300)).await;
    assert_eq!(p.posted(&conversation), ["at most once"]);
    assert_eq!(
        delivered[0].reconciled,
        Some(Reconciliation::UnknownOutcome)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_characters_are_split_within_each_platforms_limit() {
    let p = Pipeline::start().await;
    let content: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
    for (channel, limit) in [
        ("discord", 2_000),
        ("slack", 4_000),
        ("telegram", 4_096),
        ("matrix", 12_000),
    ] {
        let conversation = Pipeline::conversation(channel);
        let key = session_in(&p, &conversation, Placement::None).await;
        let c = completion(&key, &content);
        let delivered = p.deliver(&c).await;
        p.settle(Duration::from_millis(200)).await;
        let parts = p.posted(&conversation);
        assert!(
            parts.iter().all(|t| t.chars().count() <= limit),
            "{channel}"
        );
        // Splitting on line boundaries may need one part more than the bare minimum.
        let minimum = content.chars().count().div_ceil(limit);
        assert!(
            parts.len() >= minimum && parts.len() <= minimum + 1,
            "{channel}: {} parts",
            parts.len()
        );
        let lines: Vec<&str> = parts.iter().flat_map(|t| t.lines()).collect();
        assert_eq!(
            lines,
            content.lines().collect::<Vec<_>>(),
            "{channel}: every line once, in order"
        );
        let ids = if parts.len() > 1 { parts.len() } else { 0 };
        assert_eq!(
            delivered[0].platform_message_ids.len(),
            ids,
            "{channel}: one report with all part ids"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_one_conversation_keep_the_routers_order_with_three_deliverer_instances() {
    let p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    // Binder and router in this process; three deliverer processes per platform.
    let mut workers = Vec::new();
    for role in [Role::Binder, Role::Router] {
        let shutdown = CancellationToken::new();
        workers.push((
            shutdown.clone(),
            app::start(p.config.clone(), role, shutdown)
                .await
                .expect("worker"),
        ));
    }
    let mut deliverers = Vec::new();
    for channel in PLATFORMS {
        for _ in 0..3 {
            deliverers.push(
                p.command(&["run", "deliver", channel])
                    .spawn()
                    .expect("deliverer"),
            );
        }
    }
    for channel in PLATFORMS {
        let conversation = Pipeline::conversation(channel);
        let key = session_in(&p, &conversation, Placement::None).await;
        let mut events = Vec::new();
        for n in 0..100 {
            let c = completion(&key, &format!("#{n:03} {channel}"));
            p.publish_completion(&c).await;
            events.push(c);
        }
        for c in &events {
            assert_eq!(p.wait_delivered(&c.event_id, 1).await.len(), 1, "{channel}");
        }
        // The order the router emitted them in: the delivery lane's stream order.
        let lane = p.subjects.deliver_partition(
            channel,
            threadline::model::channels::partition(&conversation, p.config.lanes()),
        );
        let emitted: Vec<String> = read_stream(&p.js, &StreamKind::Deliver.name(&p.subjects))
            .await
            .into_iter()
            .filter(|m| m.subject == lane)
            .filter_map(|m| rmp_serde::from_slice::<DeliveryCommand>(&m.payload).ok())
            .filter_map(|d| match d.action {
                threadline_schemas::DeliveryAction::Post {
                    content,
                    destination,
                    ..
                } if destination == conversation => Some(content),
                threadline_schemas::DeliveryAction::Post { .. }
                | threadline_schemas::DeliveryAction::CreateThread { .. } => None,
            })
            .collect();
        assert_eq!(emitted.len(), 100, "{channel}");
        assert_eq!(
            p.posted(&conversation),
            emitted,
            "{channel}: posted in the order emitted"
        );
    }
    for mut child in deliverers {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    for (shutdown, running) in workers {
        shutdown.cancel();
        running.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_personas_post_via_webhook_are_read_back_when_in_doubt_and_farewells_stay_with_the_bot(
) {
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 700;
        },
    })
    .await;
    let parent = Pipeline::conversation("discord");
    let (webhook_id, webhook_token) = p.discord.add_webhook(&parent.conversation_id);
    p.config.discord.personas.insert(
        parent.conversation_id.clone(),
        threadline::config::Persona {
            webhook_id: webhook_id.clone(),
            webhook_token: threadline::config::Secret::new(webhook_token),
            username: Some("Larry".into()),
            avatar_url: None,
        },
    );
    p.start_in_process().await;

    let mut s = spawn(&parent, Placement::Child, SessionMode::Session);
    s.idle_timeout_ms = Some(3_000);
    let (key, thread) = p.spawn_in_thread(&s).await;
    let first = completion(&key, "said as Larry");
    p.publish(p.subjects.in_completion(), &first.event_id, &first)
        .await;
    p.wait_delivered(&first.event_id, 1).await;

    // Accepted, answer lost: no nonce for webhooks, so the deliverer reads the thread back.
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 1_500 });
    let second = completion(&key, "said once, despite the timeout");
    p.publish(p.subjects.in_completion(), &second.event_id, &second)
        .await;
    let delivered = p.wait_delivered(&second.event_id, 1).await;
    assert_eq!(delivered[0].reconciled, Some(Reconciliation::ReadBack));

    // The persona's own message in the thread is an echo, a person's is input.
    let echo = threadline_tests::events::message(&thread, &webhook_id, true, "said as Larry");
    p.publish(p.subjects.in_message("discord"), &echo.event_id, &echo)
        .await;
    let person = threadline_tests::events::message(&thread, "user-1", false, "thanks Larry");
    p.publish(p.subjects.in_message("discord"), &person.event_id, &person)
        .await;
    assert_eq!(p.wait_inputs(&person.event_id, 1).await.len(), 1);

    // Idle expiry: the farewell comes from the bot, not the persona.
    p.wait_binding(&key, BindingChange::Ended).await;
    p.settle(Duration::from_millis(500)).await;
    let in_thread = p.discord.messages_in(&thread.conversation_id);
    let by = |text: &str| -> Vec<String> {
        in_thread
            .iter()
            .filter(|m| m.content.starts_with(text))
            .map(|m| m.author_id.clone())
            .collect()
    };
    assert_eq!(by("said as Larry"), std::slice::from_ref(&webhook_id));
    assert_eq!(
        by("said once"),
        std::slice::from_ref(&webhook_id),
        "one copy, by the persona"
    );
    assert_eq!(
        by("👋"),
        [p.discord.bot_user_id()],
        "the farewell is the bot's"
    );
    assert!(p.inputs().iter().all(|i| i.event_id != echo.event_id));
}
