//! Threadline past one machine: a three-node NATS cluster with R3 streams that loses a node
//! mid-run, and a three-master Redis Cluster holding the state — both real servers on
//! loopback ports, checked on what the platform fake stored.

use async_nats::jetstream::{self, message::PublishMessage};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use threadline::app::{self, Role};
use threadline::config::{Config, Secret};
use threadline::io::nats::{ensure_streams, StreamKind};
use threadline::io::redis::connect_store;
use threadline::store::Store;
use threadline_schemas::{
    BindingStatus, ConversationRef, MessageUnbound, Placement, SessionMode, Subjects,
};
use threadline_tests::events::{completion, message, new_id, spawn};
use threadline_tests::fakes::FakeDiscord;
use threadline_tests::pipeline::{Options, Pipeline, ACCOUNT, DISCORD_TOKEN};
use threadline_tests::servers::{NatsCluster, RedisCluster, RedisServer, CLUSTER_NODES};
use tokio_util::sync::CancellationToken;

const PARENT: &str = "100000000000000001";

fn parent_channel() -> ConversationRef {
    ConversationRef {
        channel: "discord".into(),
        account_id: ACCOUNT.into(),
        conversation_id: PARENT.into(),
        parent_conversation_id: None,
    }
}

/// Publishes until the stream acknowledges, retrying with the same `Nats-Msg-Id` (the
/// stream's duplicate window keeps a retry of a stored message from being stored twice):
/// while a stream elects a new leader, publishes fail or go unanswered.
async fn publish_retrying(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Vec<u8>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = PublishMessage::build()
            .payload(payload.clone().into())
            .message_id(msg_id);
        let outcome = match js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => return,
            Err(error) if Instant::now() < deadline => {
                tracing::info!(%error, msg_id, "publish failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!("publish of {msg_id} kept failing for 30 s: {error}"),
        }
    }
}

/// Waits until `session_key` has an active binding; returns its conversation (the thread).
async fn bound_thread(store: &Store, session_key: &str) -> ConversationRef {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = store.load_session(session_key).await.ok().flatten();
        let active = state.and_then(|s| {
            s.bindings
                .into_iter()
                .find(|b| b.status == BindingStatus::Active)
        });
        if let Some(binding) = active {
            return binding.conversation;
        }
        assert!(
            Instant::now() < deadline,
            "{session_key} was never bound to a thread"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many keys the Redis server (one node) at `url` holds (`DBSIZE`).
async fn keys_at(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_mid_run_loses_no_completion_and_posts_none_twice() {
    threadline_tests::pipeline::init_tracing();
    let mut nats = NatsCluster::start().await;
    let redis = RedisServer::start().await;
    let discord = FakeDiscord::start().await;
    let mut config = Config {
        nats_url: nats.urls(),
        redis_url: redis.url(),
        stream_replicas: 3,
        health_addr: String::new(),
        ack_wait_ms: 3_000,
        retry_base_ms: 100,
        retry_max_ms: 1_000,
        // A leader election costs attempts (publishes fail, acks are lost); give room.
        max_attempts: 30,
        claim_lease_ms: 2_000,
        http_timeout_ms: 1_500,
        pending_timeout_ms: 10_000,
        unknown_session_grace_ms: 2_000,
        drain_timeout_ms: 3_000,
        // Every lane is an R3 consumer: a RAFT group each on a two-core machine.
        delivery_partitions: Some(2),
        lane_lease_ms: 2_000,
        ..Config::default()
    };
    config.discord.api_base = discord.base_url();
    config.discord.token = Secret::new(DISCORD_TOKEN);
    let subjects = Subjects::new(config.subject_prefix.clone());
    let client = async_nats::connect(threadline::io::nats::server_list(&nats.urls()))
        .await
        .expect("connect to the cluster");
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client.clone());
    // A deployment that began with single-replica streams: start-up scales them to R3.
    let single = Config {
        stream_replicas: 1,
        ..config.clone()
    };
    ensure_streams(&js, &subjects, &single)
        .await
        .expect("R1 streams on the cluster");

    let shutdown = CancellationToken::new();
    let running = app::start(config.clone(), Role::All, shutdown.clone())
        .await
        .expect("threadline starts against the cluster");
    let workers = tokio::spawn(running.wait());
    let mut inbound = js
        .get_stream(StreamKind::Inbound.name(&subjects))
        .await
        .expect("inbound stream");
    let info = inbound.info().await.expect("stream info").clone();
    assert_eq!(info.config.num_replicas, 3, "streams are scaled to R3");
    let cluster = info
        .cluster
        .expect("a clustered stream reports its cluster");
    assert_eq!(cluster.replicas.len(), CLUSTER_NODES - 1, "two followers");
    let leader = cluster.leader.expect("the stream has a leader");

    let store = Store::new(
        redis::Client::open(redis.url())
            .expect("redis url")
            .get_connection_manager()
            .await
            .expect("redis"),
        &config,
    );
    let mut threads = Vec::new();
    for n in 0..4 {
        let mut s = spawn(&parent_channel(), Placement::Child, SessionMode::Session);
        let key = format!("agent:larry:thread:cluster-{n}");
        s.session_key = Some(key.clone());
        publish_retrying(
            &js,
            subjects.in_spawn(),
            &s.event_id,
            rmp_serde::to_vec_named(&s).expect("encode"),
        )
        .await;
        threads.push((key.clone(), bound_thread(&store, &key).await));
    }

    // A steady stream of completions; the leader of the inbound stream dies a third of the
    // way through, and publishing goes on through the election.
    const COMPLETIONS: usize = 60;
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let victim = nats.index_of(&leader).expect("the leader is one of ours");
    let victim_pid = nats.pid(victim).expect("leader is running");
    for n in 0..COMPLETIONS {
        if n == COMPLETIONS / 3 {
            nats.kill(victim).await;
            tracing::info!(leader, victim_pid, "killed the inbound stream's leader");
        }
        let (key, thread) = &threads[n % threads.len()];
        let content = format!("completion {n} of {key}");
        let c = completion(key, &content);
        publish_retrying(
            &js,
            subjects.in_completion(),
            &c.event_id,
            rmp_serde::to_vec_named(&c).expect("encode"),
        )
        .await;
        expected
            .entry(thread.conversation_id.clone())
            .or_default()
            .push(content);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(nats.pid(victim).is_none(), "the node stayed dead");
    assert!(
        !std::path::Path::new(&format!("/proc/{victim_pid}")).exists(),
        "the killed node's process is gone"
    );

    // Every completion arrives; then nothing more may arrive (no late duplicates).
    let in_threads = || {
        let mut posted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in discord.messages() {
            if expected.contains_key(&m.channel_id) {
                posted.entry(m.channel_id).or_default().push(m.content);
            }
        }
        posted
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while in_threads().values().map(Vec::len).sum::<usize>() < COMPLETIONS
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut posted = in_threads();
    for contents in posted.values_mut().chain(expected.values_mut()) {
        contents.sort();
    }
    assert_eq!(
        posted, expected,
        "each completion posted exactly once, in its own thread"
    );
    assert!(
        discord
            .messages_in(PARENT)
            .iter()
            .all(|m| !m.content.starts_with("completion ")),
        "no completion fell back to the parent channel"
    );

    let now = inbound
        .info()
        .await
        .expect("stream info after the kill")
        .clone();
    let new_leader = now.cluster.and_then(|c| c.leader);
    assert!(
        new_leader.is_some() && new_leader.as_deref() != Some(leader.as_str()),
        "a surviving node leads the stream now (was {leader}, is {new_leader:?})"
    );

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), workers).await;
}

/// The seed nodes of the Redis Cluster of the test below, for its `tune` function.
static REDIS_CLUSTER_URLS: OnceLock<String> = OnceLock::new();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_keeps_its_state_in_a_redis_cluster_across_several_masters() {
    let cluster = RedisCluster::start().await;
    REDIS_CLUSTER_URLS
        .set(cluster.urls())
        .expect("one Redis Cluster test in this binary");
    let p = Pipeline::start_with(Options {
        in_process: true,
        tune: |config| {
            config.redis_url = REDIS_CLUSTER_URLS.get().cloned().unwrap_or_default();
            config.redis_cluster = true;
        },
    })
    .await;

    // Spawns and bindings: each session's state in its own slot.
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let s = spawn(&parent_channel(), Placement::Child, SessionMode::Session);
        sessions.push(p.spawn_in_thread(&s).await);
    }

    // Completions: routed once, posted once, in the thread only — also when redelivered.
    for (key, thread) in &sessions {
        let content = format!("done: {key}");
        let c = completion(key, &content);
        let delivered = p.deliver(&c).await;
        assert_eq!(delivered.len(), 1, "{key}: delivered once");
        assert_eq!(&delivered[0].destination, thread);
        // The same event again under a new Nats-Msg-Id: the stored decision and post
        // claim (in the cluster) stop a second post.
        p.publish(p.subjects.in_completion(), &new_id(), &c).await;
    }
    p.settle(Duration::from_millis(800)).await;
    for (key, thread) in &sessions {
        assert_eq!(
            p.posted(thread),
            vec![format!("done: {key}")],
            "{key}: one post in its thread"
        );
    }
    assert!(p
        .posted(&parent_channel())
        .iter()
        .all(|text| !text.starts_with("done: ")));

    // Inbound: a person in a bound thread reaches that session.
    let (key, thread) = &sessions[0];
    let m = message(thread, "user-7", false, "how is it going?");
    p.publish(p.subjects.in_message("discord"), &m.event_id, &m)
        .await;
    let inputs = p.wait_inputs(&m.event_id, 1).await;
    assert_eq!(inputs.len(), 1);
    assert_eq!(&inputs[0].session_key, key);
    assert_eq!(inputs[0].text, "how is it going?");

    // Unbind: the thread is no longer bound, so the next message goes back to the gateway.
    p.unbind(key).await;
    let after = message(thread, "user-7", false, "still there?");
    p.publish(p.subjects.in_message("discord"), &after.event_id, &after)
        .await;
    let unbound = p
        .observer
        .wait_for(
            &p.subjects.out_unbound(),
            Duration::from_secs(15),
            |u: &MessageUnbound| u.event_id == after.event_id,
        )
        .await;
    assert!(unbound.is_some(), "a message after unbind is unbound");
    assert!(p.inputs().iter().all(|i| i.event_id != after.event_id));

    // The operator CLI lists every session, whichever primary holds it.
    let (code, listed) = p.operator_json(&["sessions", "list"]).await;
    assert_eq!(code, 0, "{listed}");
    let mut listed_keys: Vec<&str> = listed
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|s| s["session_key"].as_str())
        .collect();
    listed_keys.sort();
    let mut spawned_keys: Vec<&str> = sessions.iter().map(|(key, _)| key.as_str()).collect();
    spawned_keys.sort();
    assert_eq!(
        listed_keys, spawned_keys,
        "every session, from every master"
    );

    // `doctor` checks the persistence of every seed node of the cluster, and finds it right.
    let (_, report) = p.operator_json(&["doctor"]).await;
    let redis_problems: Vec<&serde_json::Value> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|problem| {
            problem["what"]
                .as_str()
                .is_some_and(|w| w.starts_with("Redis"))
        })
        .collect();
    assert!(redis_problems.is_empty(), "{redis_problems:?}");
    assert_eq!(report["redis"]["connected"], true, "{report}");
    assert_eq!(report["redis"]["appendfsync"], "always", "{report}");

    // The state really is spread: keys on more than one master, none on the lone Redis
    // the harness also started.
    let mut nodes_with_keys = 0;
    for url in cluster.node_urls() {
        if keys_at(&url).await > 0 {
            nodes_with_keys += 1;
        }
    }
    assert!(
        nodes_with_keys >= 2,
        "keys landed on {nodes_with_keys} of {CLUSTER_NODES} masters"
    );
    assert_eq!(
        keys_at(&p.redis.url()).await,
        0,
        "nothing went to the single server"
    );

    // The connection the store uses: a plain pipeline over several slots runs, in order;
    // a MULTI over several slots is refused rather than split.
    let mut conn = connect_store(&p.config, &CancellationToken::new())
        .await
        .expect("cluster connection");
    let (a, b): (String, Option<String>) = redis::pipe()
        .set("test:{a}:x", "1")
        .ignore()
        .set("test:{b}:y", "2")
        .ignore()
        .get("test:{a}:x")
        .get("test:{c}:missing")
        .query_async(&mut conn)
        .await
        .expect("a plain pipeline across slots");
    assert_eq!((a.as_str(), b), ("1", None));
    let atomic: redis::RedisResult<()> = redis::pipe()
        .atomic()
        .set("test:{a}:x", "3")
        .set("test:{b}:y", "4")
        .query_async(&mut conn)
        .await;
    assert!(atomic.is_err(), "MULTI across slots must fail");
    let x: String = redis::cmd("GET")
        .arg("test:{a}:x")
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(x, "1", "the refused MULTI wrote nothing");
}

/// A cluster client re-sends a command after an I/O error, so the end-of-binding script
/// can run twice for one call: the repeat must answer `ended` again (so the caller still
/// reports the end), while a different caller finds it already ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_end_of_binding_answers_like_the_first_run() {
    let redis = RedisServer::start().await;
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = threadline::store::keys::Keys::new("tl").session("agent:a:re-sent");
    let key = key.as_str();
    // An active binding as the layout stores it (status letter, last activity, record).
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg(threadline::store::layout::binding_field("b-1"))
        .arg("a1|record")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let end = |token: &str| {
        let mut conn = conn.clone();
        let token = token.to_owned();
        async move {
            threadline::store::scripts::END_BINDING
                .key(key)
                .arg("b-1")
                .arg("idle_timeout")
                .arg(token)
                .arg(threadline_schemas::now_ms())
                .invoke_async::<String>(&mut conn)
                .await
                .expect("END_BINDING")
        }
    };
    assert_eq!(end("call-1").await, "ended");
    assert_eq!(end("call-1").await, "ended", "the same call, re-sent");
    assert_eq!(end("call-2").await, "noop", "another caller");
}

/// The link scripts a cluster client may re-send: a repeat changes nothing and answers
/// harmlessly (added once, removed once; the directory index follows its bucket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_sent_link_scripts_leave_one_link() {
    use threadline::store::scripts::{
        CONVERSATION_LINK, CONVERSATION_UNLINK, DIRECTORY_DEL, DIRECTORY_SET,
    };
    let redis = RedisServer::start().await;
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let bucket = "tl:{cc:1}";
    for _ in 0..2 {
        for id in ["b-1", "b-2"] {
            let _: i64 = CONVERSATION_LINK
                .key(bucket)
                .arg("discord\u{1f}a\u{1f}c")
                .arg(id)
                .invoke_async(&mut conn)
                .await
                .expect("link");
        }
    }
    let v: String = redis::cmd("HGET")
        .arg(bucket)
        .arg("discord\u{1f}a\u{1f}c")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(v, "b-1,b-2");
    let unlink = |id: &'static str| {
        let mut conn = conn.clone();
        async move {
            CONVERSATION_UNLINK
                .key(bucket)
                .arg("discord\u{1f}a\u{1f}c")
                .arg(id)
                .invoke_async::<i64>(&mut conn)
                .await
                .expect("unlink")
        }
    };
    assert_eq!(unlink("b-1").await, 1);
    assert_eq!(unlink("b-1").await, 0, "re-sent: already gone");
    assert_eq!(unlink("b-2").await, 1);
    let exists: bool = redis::cmd("EXISTS")
        .arg(bucket)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(!exists, "an empty entry is removed");

    let (b, index) = ("tl:{dir}:7", "tl:{dir}");
    for (member, score) in [
        ("b-1\u{1f}s", "50"),
        ("b-2\u{1f}s", "20"),
        ("b-2\u{1f}s", "20"),
    ] {
        let _: i64 = DIRECTORY_SET
            .key(b)
            .key(index)
            .arg(member)
            .arg(score)
            .invoke_async(&mut conn)
            .await
            .expect("set");
    }
    // The index's score for this bucket: its earliest entry.
    let reader = conn.clone();
    let earliest = || {
        let mut conn = reader.clone();
        async move {
            redis::cmd("ZSCORE")
                .arg(index)
                .arg(b)
                .query_async::<f64>(&mut conn)
                .await
                .expect("ZSCORE")
        }
    };
    assert_eq!(earliest().await, 20.0);
    for _ in 0..2 {
        let _: i64 = DIRECTORY_DEL
            .key(b)
            .key(index)
            .arg("b-2\u{1f}s")
            .invoke_async(&mut conn)
            .await
            .expect("del");
    }
    assert_eq!(
        earliest().await,
        50.0,
        "the index follows the bucket's earliest entry"
    );
}

/// Sessions sharing a bucket (and bindings sharing a directory bucket) stay apart: each is
/// read, listed, found by its binding id and conversation, swept and ended on its own — on
/// a Redis Cluster, where the buckets of one deployment spread over several masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_one_bucket_are_read_swept_and_ended_apart_on_a_cluster() {
    use threadline::model::session::{SessionRecord, SessionStatus};
    use threadline::store::keys::{bucket_of, SESSION_BUCKETS};
    use threadline::store::DueEntry;
    use threadline_schemas::{now_ms, BindingRecord, DeliveryPolicy, Requester};

    let cluster = RedisCluster::start().await;
    let config = Config {
        redis_url: cluster.urls(),
        redis_cluster: true,
        ..Config::default()
    };
    let conn = connect_store(&config, &CancellationToken::new())
        .await
        .expect("cluster connection");
    let store = Store::new(conn, &config);
    // Two session keys in one session bucket.
    let first = "agent:larry:bucket:0".to_owned();
    let second = (1..)
        .map(|i| format!("agent:larry:bucket:{i}"))
        .find(|k| bucket_of(k, SESSION_BUCKETS) == bucket_of(&first, SESSION_BUCKETS))
        .expect("a key in the same bucket");
    let now = now_ms();
    let mut conversations = Vec::new();
    for (i, key) in [&first, &second].into_iter().enumerate() {
        let conversation = ConversationRef {
            channel: "discord".into(),
            account_id: ACCOUNT.into(),
            conversation_id: format!("20000000000000000{i}"),
            parent_conversation_id: None,
        };
        let session = SessionRecord {
            session_key: key.clone(),
            agent_id: "larry".into(),
            mode: SessionMode::Session,
            placement: Placement::Current,
            label: None,
            requester: Requester {
                session_key: "agent:larry:main".into(),
                conversation: conversation.clone(),
            },
            delivery: DeliveryPolicy::BoundOnly,
            fail_closed: false,
            created_at: now,
            spawn_event_id: format!("spawn-{i}"),
            persona: None,
            status: SessionStatus::Active,
        };
        store.create_session(&session).await.expect("create");
        let binding = BindingRecord {
            binding_id: format!("b-bucket-{i}"),
            target_session_key: key.clone(),
            conversation: conversation.clone(),
            status: BindingStatus::Active,
            bound_at: now - 10_000,
            // Idle for 10 s with a 1 s timeout: due for the sweeper at once.
            last_activity_at: now - 10_000,
            idle_timeout_ms: 1_000,
            max_age_ms: None,
            delivery: DeliveryPolicy::BoundOnly,
            end_reason: None,
            metadata: Default::default(),
        };
        assert!(store.add_binding(&binding).await.expect("bind"));
        assert!(
            !store.add_binding(&binding).await.expect("bind again"),
            "idempotent"
        );
        conversations.push(conversation);
    }

    let mut due = store
        .claim_due_sweeps(now_ms(), 60_000, 10)
        .await
        .expect("claim");
    due.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(
        due,
        vec![
            DueEntry::Binding {
                binding_id: "b-bucket-0".into(),
                session_key: first.clone()
            },
            DueEntry::Binding {
                binding_id: "b-bucket-1".into(),
                session_key: second.clone()
            },
        ]
    );
    assert!(
        store
            .claim_due_sweeps(now_ms(), 60_000, 10)
            .await
            .expect("claim again")
            .is_empty(),
        "leased to the first sweeper"
    );

    let ended = store
        .end_binding(&first, "b-bucket-0", "idle_timeout")
        .await
        .expect("end")
        .expect("this call ended it");
    assert_eq!(ended.status, BindingStatus::Ended);
    assert_eq!(ended.end_reason.as_deref(), Some("idle_timeout"));

    let a = store
        .load_session(&first)
        .await
        .expect("load")
        .expect("first");
    let b = store
        .load_session(&second)
        .await
        .expect("load")
        .expect("second");
    assert_eq!(a.bindings[0].status, BindingStatus::Ended);
    assert_eq!(b.bindings[0].status, BindingStatus::Active);
    assert_eq!(b.bindings[0].conversation, conversations[1]);
    assert_eq!(
        store.binding_owner("b-bucket-0").await.expect("owner"),
        Some(first.clone()),
        "an ended binding keeps its owner link for ended_ttl_ms"
    );
    assert_eq!(
        store.binding_owner("b-bucket-1").await.expect("owner"),
        Some(second.clone())
    );
    assert!(store
        .sessions_bound_to(&conversations[0])
        .await
        .expect("bound")
        .is_empty());
    let bound = store
        .sessions_bound_to(&conversations[1])
        .await
        .expect("bound");
    assert_eq!(bound.len(), 1);
    assert_eq!(bound[0].0.session_key, second);
    let listed = store
        .list_sessions(|_| true, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.session.session_key)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(listed, [first, second].into_iter().collect());
}
