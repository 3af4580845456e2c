//! The contract holds at run time: the topology nats-server 2.9 accepted is the one
//! Threadline asked for, every event Threadline published in a full run validates against
//! the published JSON Schemas, and the health and metrics endpoints answer.

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use threadline::app::{self, Role};
use threadline::config::DEFAULT_DELIVERY_PARTITIONS;
use threadline::io::nats::{ensure_streams, expected_consumers, StreamKind};
use threadline::runtime::WorkerContext;
use threadline_schemas::SendTarget;
use threadline_schemas::{BindingChange, BindingChanged, Placement, SessionMode, Subjects};
use threadline_tests::contract::Schemas;
use threadline_tests::events::{completion, message, send, spawn, unbind_session};
use threadline_tests::pipeline::{get_health, readyz_until, Pipeline};
use threadline_tests::servers::NatsServer;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_accepted_by_the_real_server_exactly_as_configured() {
    let p = Pipeline::start().await;
    for kind in StreamKind::ALL {
        let mut stream =
            p.js.get_stream(kind.name(&p.subjects))
                .await
                .expect("stream exists");
        let info = stream.info().await.expect("stream info");
        let wanted = kind.config(&p.subjects, &p.config);
        assert_eq!(info.config.subjects, wanted.subjects, "{}", wanted.name);
        assert_eq!(info.config.max_age, wanted.max_age);
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
        assert_eq!(
            info.config.storage,
            async_nats::jetstream::stream::StorageType::File
        );
    }
    let inbound =
        p.js.get_stream(StreamKind::Inbound.name(&p.subjects))
            .await
            .expect("IN");
    let expected = [
        ("binder-spawn", p.subjects.in_spawn()),
        ("binder-control", p.subjects.in_control()),
        ("router-completion", p.subjects.in_completion()),
    ];
    for (durable, filter) in expected {
        let mut consumer: PullConsumer = inbound
            .get_consumer(durable)
            .await
            .expect("consumer exists");
        let config = consumer.info().await.expect("consumer info").config.clone();
        assert_eq!(config.filter_subject, filter, "{durable}");
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(
            config.max_deliver, -1,
            "the run loop, not the server, gives up"
        );
        assert_eq!(config.ack_wait, Duration::from_millis(p.config.ack_wait_ms));
    }
    // 2.9 ignores `filter_subjects` (plural) silently; prove our single filter filters.
    let s = spawn(
        &Pipeline::discord_channel("100000000000000001"),
        Placement::None,
        SessionMode::Run,
    );
    p.spawn_session(&s).await;
    let mut router: PullConsumer = inbound
        .get_consumer("router-completion")
        .await
        .expect("router");
    let info = router.info().await.expect("info");
    assert_eq!(
        info.num_pending + info.num_ack_pending as u64,
        0,
        "the router never sees spawns"
    );
    assert_eq!(info.delivered.stream_sequence, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_reuses_the_topology_and_a_conflicting_one_is_refused_with_a_reason() {
    let p = Pipeline::start().await;
    // Another instance of every worker: same durable consumers, no error.
    let shutdown = CancellationToken::new();
    let second = app::start(p.config.clone(), Role::All, shutdown.clone())
        .await
        .expect("second instance");
    shutdown.cancel();
    second.wait().await;

    // A foreign stream already owning our name with other subjects is refused, not reused.
    let foreign = Subjects::new("other");
    let mut config = p.config.clone();
    config.subject_prefix = "other".into();
    p.js.create_stream(async_nats::jetstream::stream::Config {
        name: StreamKind::Inbound.name(&foreign),
        subjects: vec!["something.else.>".into()],
        ..Default::default()
    })
    .await
    .expect("create foreign stream");
    let error = ensure_streams(&p.js, &foreign, &config)
        .await
        .expect_err("conflict detected");
    let text = error.to_string();
    assert!(
        text.contains("OTHER_IN") && text.contains("THREADLINE_SUBJECT_PREFIX"),
        "{text}"
    );
}

/// Processes of one deployment that disagree on `delivery_partitions` map conversations to
/// lanes differently: the router would publish posts to lanes no deliverer pulls, or one
/// conversation's posts to two lanes, out of order. The first worker to start records the
/// count; a worker configured otherwise refuses to start and says which count to use, the
/// record stays, and `doctor` reports the disagreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_lane_count_is_refused_and_told_the_deployments() {
    let p = Pipeline::start().await;
    let lanes = p.config.lanes();
    let mut other = p.config.clone();
    other.delivery_partitions = Some(lanes * 2);
    for role in [Role::Router, Role::Binder, Role::Deliver("discord".into())] {
        let Err(error) = app::start(other.clone(), role.clone(), CancellationToken::new()).await
        else {
            panic!(
                "{role:?} started with {} lanes on a deployment of {lanes}",
                lanes * 2
            );
        };
        let text = error.to_string();
        assert!(
            text.contains(&format!("delivery_partitions is {} here", lanes * 2))
                && text.contains(&format!("set up with {lanes}"))
                && text.contains(&format!("set delivery_partitions = {lanes}")),
            "{role:?}: {text}"
        );
    }

    // The deployment's own count still starts: the refused starts recorded nothing.
    let shutdown = CancellationToken::new();
    let again = app::start(p.config.clone(), Role::Router, shutdown.clone())
        .await
        .expect("the recorded lane count starts");
    shutdown.cancel();
    again.wait().await;

    let report = threadline::cli::doctor::check(&other).await;
    assert!(!report.ok, "doctor passes a lane count the workers refuse");
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.what.contains(&format!(
                "delivery_partitions is {} in this configuration",
                lanes * 2
            )) && problem
                .fix
                .contains(&format!("set delivery_partitions = {lanes}"))),
        "{:#?}",
        report.problems
    );
    no_lane_count_problem(&threadline::cli::doctor::check(&p.config).await);

    // And the deployment still routes and posts.
    let s = spawn(
        &Pipeline::discord_channel("100000000000000002"),
        Placement::None,
        SessionMode::Run,
    );
    let spawned = p.spawn_session(&s).await;
    let c = completion(&spawned.session_key, "after the refused starts");
    p.publish_completion(&c).await;
    let posts = p
        .discord
        .wait_for_messages(1, Duration::from_secs(20))
        .await;
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0].channel_id, "100000000000000002");
    assert_eq!(posts[0].content, "after the refused starts");
}

fn no_lane_count_problem(report: &threadline::cli::doctor::Report) {
    assert!(
        !report
            .problems
            .iter()
            .any(|problem| problem.what.contains("delivery_partitions")),
        "{:#?}",
        report.problems
    );
}

/// A worker that leaves `delivery_partitions` unset takes the deployment's recorded count,
/// so a deployment set up with another default keeps its lanes across an upgrade; the first
/// worker of a new deployment records the default. `doctor` resolves it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_lane_count_takes_the_deployments() {
    let p = Pipeline::start().await;
    let conversation = Pipeline::discord_channel("100000000000000003");
    // The lane count a worker of `prefix` resolves, and where it sends `conversation`'s posts.
    let connect = |prefix: &str, lanes: Option<u32>| {
        let mut config = p.config.clone();
        config.subject_prefix = prefix.into();
        config.delivery_partitions = lanes;
        let conversation = conversation.clone();
        async move {
            let ctx = WorkerContext::connect(Arc::new(config), CancellationToken::new())
                .await
                .expect("connects");
            (ctx.config.lanes(), ctx.deliver_subject(&conversation))
        }
    };
    let expected_subject = |prefix: &str, lanes: u32| {
        Subjects::new(prefix).deliver_partition(
            &conversation.channel,
            threadline::model::channels::partition(&conversation, lanes),
        )
    };
    // Set up with 16 lanes (an older default), then started with the count unset.
    assert_eq!(connect("older", Some(16)).await.0, 16);
    assert_eq!(
        connect("older", None).await,
        (16, expected_subject("older", 16))
    );
    let mut unset = p.config.clone();
    unset.subject_prefix = "older".into();
    unset.delivery_partitions = None;
    let report = threadline::cli::doctor::check(&unset).await;
    no_lane_count_problem(&report);
    assert!(
        !report.lanes.is_empty() && report.lanes.iter().all(|lanes| lanes.lanes == 16),
        "{:#?}",
        report.lanes
    );

    // A new deployment started without a count records the default, which then holds.
    assert_eq!(
        connect("newer", None).await,
        (
            DEFAULT_DELIVERY_PARTITIONS,
            expected_subject("newer", DEFAULT_DELIVERY_PARTITIONS)
        )
    );
    let Err(error) = WorkerContext::connect(
        Arc::new(threadline::config::Config {
            subject_prefix: "newer".into(),
            delivery_partitions: Some(DEFAULT_DELIVERY_PARTITIONS + 1),
            ..p.config.clone()
        }),
        CancellationToken::new(),
    )
    .await
    else {
        panic!("a count other than the recorded default started");
    };
    assert!(
        error
            .to_string()
            .contains(&format!("set up with {DEFAULT_DELIVERY_PARTITIONS}")),
        "{error}"
    );
}

/// Fresh deployments whose workers all start at once (`run all` starts each worker on its
/// own thread; a scaled deployment starts its replicas together): every start-up must get
/// the topology, whichever of them creates a stream or consumer first. nats-server 2.9
/// answers a create that races another with "subjects overlap with an existing stream".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_starting_together_on_a_fresh_server_all_get_the_topology() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut config = threadline::config::Config::default();
    config.discord.token = threadline::config::Secret::new("token");
    config.delivery_partitions = Some(4);
    // Bounded: 100 fresh prefixes take ~3 s. Before the fix, 40 of them showed the race in
    // three runs of five.
    for round in 0..100 {
        let prefix = format!("race{round}");
        let subjects = Subjects::new(prefix.clone());
        config.subject_prefix = prefix;
        let together = Arc::new(tokio::sync::Barrier::new(6));
        let starts = (0..6).map(|_| {
            let (url, subjects, config) = (nats.url(), subjects.clone(), config.clone());
            let together = together.clone();
            tokio::spawn(async move {
                // A connection each, as each worker has: nats-server serves one
                // connection's API requests one at a time, different connections' at once.
                let client = async_nats::connect(url).await.expect("connect");
                let js = async_nats::jetstream::new(client);
                together.wait().await;
                ensure_streams(&js, &subjects, &config).await?;
                for spec in expected_consumers(&subjects, &config) {
                    spec.ensure(&js, &subjects, &config).await?;
                }
                Ok::<_, threadline::io::nats::TopologyError>(())
            })
        });
        for start in futures::future::join_all(starts).await {
            if let Err(error) = start.expect("start-up task") {
                panic!("round {round}: a start-up failed: {error}");
            }
        }
        let names: Vec<String> = StreamKind::ALL.iter().map(|k| k.name(&subjects)).collect();
        for name in &names {
            let mut stream = js.get_stream(name).await.expect("stream exists");
            let info = stream.info().await.expect("info");
            assert_eq!(
                info.state.consumer_count,
                expected_consumers(&subjects, &config)
                    .iter()
                    .filter(|c| c.stream.name(&subjects) == *name)
                    .count(),
                "{name}: every consumer once"
            );
        }
    }
}

/// `tl.out.<name>` → schema name.
fn schema_of(subjects: &Subjects, subject: &str) -> Option<&'static str> {
    [
        (subjects.out_spawned(), "spawned"),
        (subjects.out_rejected(), "rejected"),
        (subjects.out_delivered(), "delivered"),
        (subjects.out_failed(), "failed"),
        (subjects.out_binding(), "binding"),
        (subjects.out_unbound(), "unbound"),
        (subjects.out_sent(), "sent"),
    ]
    .into_iter()
    .find(|(s, _)| s == subject)
    .map(|(_, name)| name)
    .or_else(|| {
        subject
            .starts_with(&format!("{}.agent.", subjects.prefix()))
            .then_some("session_input")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_threadline_publishes_validates_against_the_published_schemas() {
    let p = Pipeline::start().await;
    let parent = Pipeline::discord_channel("100000000000000001");
    // spawned + binding(bound) + delivered
    let s = spawn(&parent, Placement::Child, SessionMode::Session);
    let spawned = p.spawn_session(&s).await;
    p.observer
        .wait_for(
            &p.subjects.out_binding(),
            Duration::from_secs(15),
            |b: &BindingChanged| b.change == BindingChange::Bound,
        )
        .await
        .expect("bound");
    let c = completion(&spawned.session_key, "done");
    p.publish_completion(&c).await;
    p.wait_delivered(&c.event_id, 1).await;
    // binding(ended) + failed
    let u = unbind_session(&spawned.session_key, "operator");
    p.publish(p.subjects.in_control(), &u.event_id, &u).await;
    let lost = completion("agent:larry:subagent:unknown", "nowhere");
    p.publish(p.subjects.in_completion(), &lost.event_id, &lost)
        .await;
    // session input (message), unbound, sent
    let bound_room = Pipeline::webhook_conversation("threads", "room-c");
    let r = spawn(&bound_room, Placement::Current, SessionMode::Session);
    let room_session = p.spawn_session(&r).await.session_key;
    let m = message(&bound_room, "user-1", false, "hi");
    p.publish(p.subjects.in_message("webhook:threads"), &m.event_id, &m)
        .await;
    p.wait_inputs(&m.event_id, 1).await;
    let lonely = message(
        &Pipeline::webhook_conversation("threads", "room-x"),
        "user-2",
        false,
        "hello?",
    );
    p.publish(
        p.subjects.in_message("webhook:threads"),
        &lonely.event_id,
        &lonely,
    )
    .await;
    let to_room = send(
        SendTarget::SessionKey {
            session_key: room_session,
        },
        "from a sibling",
    );
    p.publish(p.subjects.in_send(), &to_room.event_id, &to_room)
        .await;
    p.wait_inputs(&to_room.event_id, 1).await;
    // rejected
    let bad = serde_json::json!({"v": 1, "event_id": "bad-1", "status": "ok"});
    p.publish_bytes(
        p.subjects.in_completion(),
        None,
        bad.to_string().into_bytes(),
        true,
    )
    .await;
    p.wait_rejected("bad-1").await;
    p.settle(Duration::from_millis(500)).await;

    let schemas = Schemas::load();
    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    for observed in p.observer.raw(&format!("{}.", p.subjects.prefix())) {
        let Some(name) = schema_of(&p.subjects, &observed.subject) else {
            continue;
        };
        let value: Value = rmp_serde::from_slice(&observed.payload).expect("msgpack map");
        let errors = schemas.errors(name, &value);
        assert!(
            errors.is_empty(),
            "{} does not match {name}.schema.json: {errors:?}\n{value:#}",
            observed.subject
        );
        *checked.entry(name).or_default() += 1;
    }
    for name in [
        "spawned",
        "binding",
        "delivered",
        "failed",
        "rejected",
        "unbound",
        "sent",
        "session_input",
    ] {
        assert!(
            checked.get(name).copied().unwrap_or(0) >= 1,
            "no {name} event was checked: {checked:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served() {
    let mut p = Pipeline::start_with(threadline_tests::pipeline::Options {
        tune: |c| c.pending_poll_ms = 200,
        ..Default::default()
    })
    .await;
    let addr = p.health_addr.expect("health server");
    let s = spawn(
        &Pipeline::discord_channel("100000000000000001"),
        Placement::None,
        SessionMode::Run,
    );
    p.spawn_session(&s).await;
    let get = |path: &'static str| get_health(addr, path);
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    // Readiness is checked live: a lost Redis makes the worker unready (alive all along),
    // and it is ready again once Redis is back.
    p.redis.kill().await;
    let (status, body) = get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: Redis does not answer\n")
    );
    assert_eq!(get("/healthz").await.0, 200);
    p.redis.start_again().await;
    assert_eq!(
        readyz_until(addr, 200).await.0,
        200,
        "ready again after Redis came back"
    );
    // A consumer deleted under the running workers: their pulls would fail quietly, so
    // `/readyz` names it (a restart recreates it).
    p.js.get_stream(StreamKind::Inbound.name(&p.subjects))
        .await
        .expect("stream")
        .delete_consumer("binder-control")
        .await
        .expect("delete the consumer");
    let answer = readyz_until(addr, 503).await;
    assert_eq!(
        (answer.0, answer.1.as_str()),
        (
            503,
            "not ready: consumer binder-control deleted; restart to recreate\n"
        )
    );
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("threadline_events_total{stage=\"binder\",outcome=\"ack\"}"),
        "{metrics}"
    );
    p.stop_in_process().await;
    // Draining or stopped: no longer ready (the listener may already be gone).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let after = reqwest::get(format!("http://{addr}/readyz")).await;
    assert!(after.map(|r| r.status().as_u16() != 200).unwrap_or(true));
}
