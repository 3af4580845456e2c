//! Faults at the edges: bad input is dead-lettered and reported while the worker keeps
//! going; platform errors are retried, waited out or given up exactly as classified; a
//! deliverer killed mid-post does not post twice; long content is split once.

use std::time::Duration;
use threadline_schemas::{DeliveryMode, Placement, Reconciliation, SessionMode};
use threadline_tests::events::{completion, new_id, spawn};
use threadline_tests::fakes::Fault;
use threadline_tests::pipeline::{Options, Pipeline};

const PARENT: &str = "100000000000000001";

/// A completion for a session spawned without placement in `PARENT`.
async fn requester_session(p: &Pipeline) -> String {
    p.session_in(&Pipeline::discord_channel(PARENT), Placement::None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_and_rejected_and_the_next_event_still_flows() {
    let p = Pipeline::start().await;
    let session_key = requester_session(&p).await;
    let subject = p.subjects.in_completion();

    // 1. Undecodable bytes: no event id inside, so it is answered by its `Nats-Msg-Id`.
    let garbage = b"\xc1\xc1 definitely not msgpack".to_vec();
    let garbage_id = new_id();
    p.publish_bytes(subject.clone(), Some(&garbage_id), garbage.clone(), false)
        .await;
    // 2. A missing required field (`content`).
    let missing = serde_json::json!({"v": 1, "event_id": "missing-field", "session_key": session_key, "status": "ok"});
    p.publish_bytes(
        subject.clone(),
        Some(&new_id()),
        missing.to_string().into_bytes(),
        true,
    )
    .await;
    // 3. An unknown schema version.
    let v2 = serde_json::json!({"v": 2, "event_id": "from-the-future", "session_key": session_key, "status": "ok", "content": "x"});
    p.publish_bytes(
        subject.clone(),
        Some(&new_id()),
        rmp_serde::to_vec_named(&v2).expect("encode"),
        false,
    )
    .await;
    // 4. A 2 MB payload.
    let mut huge = completion(&session_key, &"x".repeat(2 * 1024 * 1024));
    huge.event_id = "too-big".into();
    let huge_bytes = rmp_serde::to_vec_named(&huge).expect("encode");
    p.publish_bytes(subject.clone(), Some("too-big"), huge_bytes.clone(), false)
        .await;
    // 5. A valid event behind them.
    let good = completion(&session_key, "still flowing");
    p.publish(subject.clone(), &good.event_id, &good).await;

    let delivered = p.wait_delivered(&good.event_id, 1).await;
    assert_eq!(delivered.len(), 1, "the worker kept running");
    for (event_id, code) in [
        ("missing-field", "invalid_event"),
        ("from-the-future", "unsupported_version"),
        // Read from `Nats-Msg-Id`, not the payload: an oversize event costs nothing to read.
        ("too-big", "payload_too_large"),
        (garbage_id.as_str(), "malformed"),
    ] {
        let rejected = p.wait_rejected(event_id).await;
        assert_eq!(rejected.code, code, "{event_id}");
        assert_eq!(rejected.stage, "router");
    }
    p.settle(Duration::from_millis(500)).await;

    let dead = p
        .observer
        .raw(&p.subjects.dlq(&threadline_schemas::Stage::Router));
    assert_eq!(
        dead.len(),
        4,
        "every bad input is dead-lettered once: {:?}",
        dead.iter().map(|d| &d.headers).collect::<Vec<_>>()
    );
    // The router handles events concurrently: dead letters arrive in any order.
    let by_code = |code: &str| {
        let found: Vec<_> = dead
            .iter()
            .filter(|d| d.headers["Threadline-Error-Code"] == code)
            .collect();
        assert_eq!(found.len(), 1, "one dead letter with code {code}");
        found[0]
    };
    let malformed = by_code("malformed");
    assert_eq!(
        malformed.payload.as_ref(),
        garbage.as_slice(),
        "original bytes kept"
    );
    assert_eq!(malformed.headers["Threadline-Original-Subject"], subject);
    assert_eq!(
        by_code("payload_too_large").payload.len(),
        huge_bytes.len(),
        "original bytes kept, even 2 MB"
    );
    let invalid = by_code("invalid_event");
    assert_eq!(
        invalid.headers.get("Content-Type").map(String::as_str),
        Some("application/json")
    );
    assert!(
        invalid.headers["Threadline-Error"].contains("content"),
        "the reason names the field"
    );
    by_code("unsupported_version");
    // One answer each.
    assert_eq!(
        p.rejected()
            .iter()
            .filter(|r| r.event_id == "too-big" || r.event_id == garbage_id)
            .count(),
        2
    );
    assert_eq!(
        p.discord.messages_in(PARENT).len(),
        1,
        "only the valid event was posted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_events_are_accepted_with_the_content_type_header() {
    let p = Pipeline::start().await;
    let session_key = requester_session(&p).await;
    let c = completion(&session_key, "sent as JSON");
    p.publish_bytes(
        p.subjects.in_completion(),
        Some(&c.event_id),
        serde_json::to_vec(&c).expect("json"),
        true,
    )
    .await;
    assert_eq!(p.wait_delivered(&c.event_id, 1).await.len(), 1);
    assert_eq!(p.discord.messages_in(PARENT)[0].content, "sent as JSON");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_and_server_errors_retried_without_duplicates() {
    let p = Pipeline::start().await;
    let session_key = requester_session(&p).await;
    p.discord.push_fault(Fault::RateLimited {
        retry_after_ms: 300,
    });
    p.discord.push_fault(Fault::ServerError);
    p.discord.push_fault(Fault::ServerError);
    let c = completion(&session_key, "eventually");
    let delivered = p.deliver(&c).await;
    assert_eq!(delivered.len(), 1);
    p.settle(Duration::from_millis(500)).await;
    assert_eq!(p.discord.messages_in(PARENT).len(), 1);
    assert_eq!(p.discord.request_count(), 4, "429, 500, 500, then the post");
    // A 500 may have been applied, so the final attempt is reported as reconciled by key.
    assert_eq!(
        delivered[0].reconciled,
        Some(Reconciliation::IdempotencyKey)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_platform_errors_are_not_retried_and_are_reported() {
    let p = Pipeline::start().await;
    let requester = Pipeline::webhook_conversation("plain", "chat-5");
    let session_key = p.session_in(&requester, Placement::None).await;
    // The receiver wants a token this deployment does not have: 401, and re-reading the
    // credentials does not change them, so it is permanent.
    p.webhook.require_token(Some("a-token-we-do-not-have"));
    let before = p.webhook.request_count();
    let c = completion(&session_key, "refused");
    p.publish_completion(&c).await;
    let failed = p.wait_failed(&c.event_id).await;
    assert_eq!(failed.code, "unauthorized");
    assert_eq!(failed.destination.as_ref(), Some(&requester));
    assert_eq!(failed.attempts, 1);
    p.settle(Duration::from_millis(800)).await;
    assert_eq!(
        p.webhook.request_count() - before,
        1,
        "a 401 is not retried"
    );
    assert!(p.delivered().iter().all(|d| d.event_id != c.event_id));
    assert!(p.webhook.deliveries().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_exhaustion_reports_failed_and_dead_letters() {
    let p = Pipeline::start_with(Options {
        tune: |c| c.max_attempts = 3,
        ..Options::default()
    })
    .await;
    let session_key = requester_session(&p).await;
    for _ in 0..3 {
        p.discord.push_fault(Fault::ServerError);
    }
    let c = completion(&session_key, "never makes it");
    p.publish_completion(&c).await;
    let failed = p.wait_failed(&c.event_id).await;
    assert_eq!(failed.code, "platform_unavailable");
    assert_eq!(failed.attempts, 3);
    p.settle(Duration::from_millis(800)).await;
    let dead = p.observer.raw(
        &p.subjects
            .dlq(&threadline_schemas::Stage::Deliver("discord".into())),
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["Threadline-Attempts"], "3");
    assert!(p.discord.messages_in(PARENT).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_characters_are_split_within_discord_limits_and_reported_once() {
    let p = Pipeline::start().await;
    let session_key = requester_session(&p).await;
    let content: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
    assert_eq!(content.chars().count(), 10_000);
    let c = completion(&session_key, &content);
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(500)).await;
    let posts = p.discord.messages_in(PARENT);
    assert!(posts.len() >= 5, "{} parts", posts.len());
    assert!(posts.iter().all(|m| m.content.chars().count() <= 2000));
    let rejoined: Vec<String> = posts
        .iter()
        .flat_map(|m| m.content.lines().map(str::to_owned))
        .collect();
    let expected: Vec<String> = content.lines().map(str::to_owned).collect();
    assert_eq!(rejoined, expected, "every line once, in order");
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].platform_message_ids,
        posts.iter().map(|m| m.id.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliverer_killed_after_claiming_a_post_posts_it_once_after_restart() {
    // Binder and router in this process; the Discord deliverer as a real OS process.
    let mut p = Pipeline::start_with(Options {
        in_process: false,
        tune: |c| {
            c.http_timeout_ms = 20_000;
            c.claim_lease_ms = 1_000;
            c.ack_wait_ms = 2_000;
        },
    })
    .await;
    let mut binder_router = p.command(&["run", "binder"]).spawn().expect("start binder");
    let mut router = p.command(&["run", "router"]).spawn().expect("start router");
    let mut deliverer = p
        .command(&["run", "deliver", "discord"])
        .spawn()
        .expect("start deliverer");

    let session_key = requester_session(&p).await;

    // The platform stores the post but never answers: the deliverer is mid-call, after its
    // claim and before its ack, when it is killed.
    p.discord
        .push_fault(Fault::AcceptThenHang { hold_ms: 10_000 });
    let c = completion(&session_key, "posted exactly once");
    p.publish_completion(&c).await;
    let accepted = p
        .discord
        .wait_for_messages(1, Duration::from_secs(15))
        .await;
    assert_eq!(accepted.len(), 1, "the platform accepted the post");
    deliverer.start_kill().expect("kill -9 the deliverer");
    deliverer.wait().await.expect("reap");
    assert!(
        p.delivered().is_empty(),
        "the killed deliverer never reported"
    );

    let mut restarted = p
        .command(&["run", "deliver", "discord"])
        .spawn()
        .expect("restart deliverer");
    let delivered = p.wait_delivered(&c.event_id, 1).await;
    p.settle(Duration::from_secs(1)).await;
    let posts = p.discord.messages_in(PARENT);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].platform_message_id, posts[0].id);
    assert_eq!(delivered[0].mode, DeliveryMode::Requester);
    assert_eq!(
        delivered[0].reconciled,
        Some(Reconciliation::IdempotencyKey)
    );

    for child in [&mut binder_router, &mut router, &mut restarted] {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    p.stop_in_process().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_drain_and_exit_cleanly_on_sigterm() {
    let p = Pipeline::start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    let mut all = p.command(&["run", "all"]).spawn().expect("start run all");
    let s = spawn(
        &Pipeline::discord_channel(PARENT),
        Placement::None,
        SessionMode::Session,
    );
    p.spawn_session(&s).await;
    let pid = all.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), all.wait())
        .await
        .expect("exits within the drain deadline")
        .expect("reap");
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_post_with_unknown_outcome_is_resent_with_its_idempotency_key_once() {
    let p = Pipeline::start_with(Options {
        tune: |c| {
            c.http_timeout_ms = 500;
            c.claim_lease_ms = 1_000;
        },
        ..Options::default()
    })
    .await;
    let requester = Pipeline::webhook_conversation("plain", "chat-9");
    let session_key = p.session_in(&requester, Placement::None).await;
    // Stored by the receiver, but the answer never comes back within the timeout.
    p.webhook
        .push_fault(Fault::AcceptThenHang { hold_ms: 2_000 });
    let c = completion(&session_key, "did it land?");
    let delivered = p.deliver(&c).await;
    p.settle(Duration::from_millis(800)).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].reconciled,
        Some(Reconciliation::IdempotencyKey)
    );
    let hooks = p.webhook.deliveries();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(
        p.webhook.duplicate_keys_seen(),
        1,
        "the re-send carried the same key"
    );
    assert_eq!(hooks[0].body["text"], "did it land?");
}

/// A receiver that redirects (an endpoint that moved, HTTP redirected to HTTPS) is a
/// misconfigured URL: the post fails at once on `tl.out.failed`, named as such. Following
/// the redirect would re-send the POST as a GET without its body, and a 2xx to that would
/// report a post nobody received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_receiver_fails_the_post_visibly_instead_of_following_it() {
    let p = Pipeline::start().await;
    let requester = Pipeline::webhook_conversation("plain", "chat-moved");
    let session_key = p.session_in(&requester, Placement::None).await;
    let before = p.webhook.request_count();
    p.webhook.push_fault(Fault::Redirect {
        status: 302,
        location: p.webhook.url("plain"),
    });
    let c = completion(&session_key, "where did it go?");
    p.publish_completion(&c).await;
    let failed = p.wait_failed(&c.event_id).await;
    assert_eq!(failed.code, "redirected", "{failed:?}");
    assert!(
        failed.message.contains("302") && failed.message.contains(&p.webhook.base_url()),
        "{failed:?}"
    );
    assert_eq!(failed.destination.as_ref(), Some(&requester));
    p.settle(Duration::from_millis(300)).await;
    // One request: the redirect was not followed (a followed 302 is a second request).
    assert_eq!(p.webhook.request_count() - before, 1);
    assert!(p.webhook.deliveries().is_empty());
    assert!(p.delivered().is_empty());
}

/// A handler that is told to wait `waits` times (a pending binding, another instance's
/// claim), then fails with an error that may pass, every time.
struct WaitsThenFails {
    waits: u32,
    deliveries: std::sync::atomic::AtomicU32,
    gave_up_after: std::sync::Mutex<Option<u32>>,
}

impl threadline::runtime::runloop::Handler for WaitsThenFails {
    type Event = threadline_schemas::CompletionReported;

    fn stage(&self) -> threadline_schemas::Stage {
        threadline_schemas::Stage::Router
    }

    async fn handle(
        &self,
        _event: &Self::Event,
        _attempt: threadline::runtime::runloop::Attempt,
    ) -> Result<(), threadline::error::WorkError> {
        let n = self
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        Err(if n <= self.waits {
            threadline::error::WorkError::NotYet {
                reason: "the binding is pending".into(),
                after: Duration::from_millis(20),
            }
        } else {
            threadline::error::WorkError::Transient("platform answered 503".into())
        })
    }

    async fn give_up(
        &self,
        _event: &Self::Event,
        _error: &threadline::error::WorkError,
        attempt: threadline::runtime::runloop::Attempt,
    ) -> Result<(), threadline::error::WorkError> {
        *self.gave_up_after.lock().expect("lock") = Some(attempt.number);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_does_not_spend_the_retry_budget() {
    let p = Pipeline::start_with(Options {
        tune: |c| {
            c.max_attempts = 3;
            c.retry_base_ms = 20;
            c.retry_max_ms = 50;
        },
        ..Options::default()
    })
    .await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ctx = threadline::runtime::WorkerContext::connect(
        std::sync::Arc::new(p.config.clone()),
        shutdown.clone(),
    )
    .await
    .expect("ctx");
    // Its own subject in the input stream, so no real worker sees these events.
    let subject = format!("{}.budget", p.subjects.in_all().trim_end_matches(".>"));
    let consumer = threadline::io::nats::ensure_consumer(
        &threadline::io::nats::jetstream(&ctx.nats),
        &p.subjects,
        threadline::io::nats::StreamKind::Inbound,
        "budget-test",
        subject.clone(),
        8,
        &p.config,
    )
    .await
    .expect("consumer");
    let handler = std::sync::Arc::new(WaitsThenFails {
        waits: 4,
        deliveries: Default::default(),
        gave_up_after: Default::default(),
    });
    let worker = tokio::spawn(threadline::runtime::runloop::run(
        handler.clone(),
        consumer,
        ctx,
        1,
    ));
    let c = completion("agent:larry:subagent:budget", "waits, then fails");
    p.publish(subject, &c.event_id, &c).await;

    let mut gave_up = None;
    for _ in 0..100 {
        gave_up = *handler.gave_up_after.lock().expect("lock");
        if gave_up.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 4 waits, then the whole budget of 3 failures: 7 deliveries, given up after 3.
    assert_eq!(gave_up, Some(3), "given up after the budget's failures");
    assert_eq!(
        handler.deliveries.load(std::sync::atomic::Ordering::SeqCst),
        7
    );
    p.settle(Duration::from_millis(500)).await;
    let dead = p
        .observer
        .raw(&p.subjects.dlq(&threadline_schemas::Stage::Router));
    let ours: Vec<_> = dead
        .iter()
        .filter(|d| d.headers.contains_key("Threadline-Attempts"))
        .collect();
    assert_eq!(ours.len(), 1, "one dead letter");
    assert_eq!(ours[0].headers["Threadline-Attempts"], "3");
    shutdown.cancel();
    let _ = worker.await;
}
