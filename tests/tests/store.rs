//! The store against a real redis-server: reads of a session this process has read before
//! go through its known binding ids (one `HMGET`), and must still see every change.

use threadline::config::Config;
use threadline::model::session::{SessionRecord, SessionState, SessionStatus};
use threadline::store::{Claim, PartOutcome, Store};
use threadline_schemas::{
    now_ms, BindingRecord, BindingStatus, ConversationRef, DeliveryPolicy, Placement, Requester,
    SessionMode,
};
use threadline_tests::servers::RedisServer;

fn conversation(id: &str) -> ConversationRef {
    ConversationRef {
        channel: "discord".into(),
        account_id: "acct".into(),
        conversation_id: id.into(),
        parent_conversation_id: None,
    }
}

fn binding(session_key: &str, id: &str, status: BindingStatus) -> BindingRecord {
    let now = now_ms();
    BindingRecord {
        binding_id: id.into(),
        target_session_key: session_key.into(),
        conversation: conversation(&format!("thread-{id}")),
        status,
        bound_at: now,
        last_activity_at: now,
        idle_timeout_ms: 3_600_000,
        max_age_ms: None,
        delivery: DeliveryPolicy::BoundOnly,
        end_reason: None,
        metadata: Default::default(),
    }
}

/// A store of its own (as another process would have).
async fn open_store(redis: &RedisServer, config: &Config) -> Store {
    Store::new(
        redis::Client::open(redis.url())
            .expect("redis url")
            .get_connection_manager()
            .await
            .expect("redis"),
        config,
    )
}

/// `HMGET` calls Redis has served so far.
async fn hmgets(redis: &RedisServer) -> u64 {
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_known_session_is_read_in_one_command_and_every_change_is_seen() {
    let redis = RedisServer::start().await;
    let config = Config {
        redis_url: redis.url(),
        ..Config::default()
    };
    let store = open_store(&redis, &config).await;
    let key = "agent:larry:thread:known".to_owned();
    let session = SessionRecord {
        session_key: key.clone(),
        agent_id: "larry".into(),
        mode: SessionMode::Session,
        placement: Placement::Child,
        label: None,
        requester: Requester {
            session_key: "agent:larry:main".into(),
            conversation: conversation("parent"),
        },
        delivery: DeliveryPolicy::BoundOnly,
        fail_closed: false,
        created_at: now_ms(),
        spawn_event_id: "spawn-known".into(),
        persona: None,
        status: SessionStatus::Active,
    };
    store.create_session(&session).await.expect("create");
    assert!(store
        .add_binding(&binding(&key, "b-1", BindingStatus::Pending))
        .await
        .expect("bind"));
    let statuses = |s: &SessionState| -> Vec<(String, BindingStatus)> {
        s.bindings
            .iter()
            .map(|b| (b.binding_id.clone(), b.status))
            .collect()
    };

    // First read: the script, which teaches this store the session's binding ids.
    let first = store
        .load_session(&key)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(statuses(&first), [("b-1".into(), BindingStatus::Pending)]);
    let before = hmgets(&redis).await;

    // Same binding ids, a changed binding: the one-command read sees it.
    let thread = conversation("thread-b-1");
    store
        .activate_binding(&key, "b-1", &thread)
        .await
        .expect("activate");
    let active = store
        .load_session(&key)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(statuses(&active), [("b-1".into(), BindingStatus::Active)]);
    assert_eq!(active.bindings[0].conversation, thread);
    assert!(
        hmgets(&redis).await > before,
        "a known session is read with HMGET, not the script"
    );

    // A binding added elsewhere changes the ids: the read notices and reads it whole.
    assert!(store
        .add_binding(&binding(&key, "b-2", BindingStatus::Active))
        .await
        .expect("bind another"));
    let two = store
        .load_session(&key)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(
        statuses(&two),
        [
            ("b-1".into(), BindingStatus::Active),
            ("b-2".into(), BindingStatus::Active)
        ]
    );

    // An ended binding reads with its reason.
    store
        .end_binding(&key, "b-1", "idle_timeout")
        .await
        .expect("end")
        .expect("this call ended it");
    let ended = store
        .load_session(&key)
        .await
        .expect("load")
        .expect("exists");
    let b1 = ended
        .bindings
        .iter()
        .find(|b| b.binding_id == "b-1")
        .expect("b-1");
    assert_eq!(b1.status, BindingStatus::Ended);
    assert_eq!(b1.end_reason.as_deref(), Some("idle_timeout"));

    // Another store (another process) that never read it sees the same.
    let other = open_store(&redis, &config).await;
    let fresh = other
        .load_session(&key)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(statuses(&fresh), statuses(&ended));
    assert_eq!(fresh.session, ended.session);

    // Gone is gone, through the known ids too.
    let mut conn = store.connection();
    let _: () = redis::cmd("HDEL")
        .arg(store.keys().session(&key))
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("delete the session field");
    assert!(store.load_session(&key).await.expect("load").is_none());
}

#[tokio::test]
async fn a_claim_in_doubt_keeps_when_the_doubt_began_until_the_part_is_settled() {
    let redis = RedisServer::start().await;
    let config = Config {
        redis_url: redis.url(),
        ..Config::default()
    };
    let store = open_store(&redis, &config).await;
    let lease = 200;
    let before = now_ms();
    assert_eq!(
        store.claim_part("d-1", 0, lease).await.expect("claim"),
        Claim::Fresh(1)
    );
    // The first attempt timed out after the request left: in doubt since it was claimed.
    store
        .settle_part(
            "d-1",
            0,
            &PartOutcome::Unknown {
                attempt: 1,
                since_ms: before,
            },
        )
        .await
        .expect("settle");
    let Claim::InDoubt {
        attempt: 2,
        since_ms,
    } = store.claim_part("d-1", 0, lease).await.expect("claim")
    else {
        panic!("not in doubt");
    };
    assert_eq!(since_ms, before);
    // The re-send was refused (a 429): the deliverer keeps the doubt and its start.
    store
        .settle_part(
            "d-1",
            0,
            &PartOutcome::Unknown {
                attempt: 2,
                since_ms,
            },
        )
        .await
        .expect("settle");
    // Its re-send crashes: the lapsed claim is in doubt, still since the first attempt.
    assert!(matches!(
        store.claim_part("d-1", 0, lease).await.expect("claim"),
        Claim::InDoubt { attempt: 3, since_ms } if since_ms == before
    ));
    tokio::time::sleep(std::time::Duration::from_millis(lease + 50)).await;
    assert!(matches!(
        store.claim_part("d-1", 0, lease).await.expect("claim"),
        Claim::InDoubt { attempt: 4, since_ms } if since_ms == before
    ));
    // A fresh claim that lapses (a crash mid-call) is in doubt since it was taken.
    let taken = now_ms();
    assert_eq!(
        store.claim_part("d-2", 0, lease).await.expect("claim"),
        Claim::Fresh(1)
    );
    tokio::time::sleep(std::time::Duration::from_millis(lease + 50)).await;
    let Claim::InDoubt {
        attempt: 2,
        since_ms,
    } = store.claim_part("d-2", 0, lease).await.expect("claim")
    else {
        panic!("not in doubt");
    };
    assert!(
        since_ms >= taken.saturating_sub(5) && since_ms <= taken + 50,
        "{since_ms} vs {taken}"
    );
    // Certainly not posted: fresh again, the doubt gone.
    store
        .settle_part("d-2", 0, &PartOutcome::NotPosted(2))
        .await
        .expect("settle");
    assert_eq!(
        store.claim_part("d-2", 0, lease).await.expect("claim"),
        Claim::Fresh(3)
    );
}

/// Only what this version writes is read: a claim record without the time its doubt began
/// (a format no release wrote) is refused as unreadable state (the event gives up), never
/// answered as a fresh claim that would post the part again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_claim_record_no_version_writes_is_refused_as_corrupt() {
    let redis = RedisServer::start().await;
    let config = Config {
        redis_url: redis.url(),
        ..Config::default()
    };
    let store = open_store(&redis, &config).await;
    let key = store.keys().post_part("d-old", 0);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("d|2")
        .query_async(&mut store.connection())
        .await
        .expect("SET");
    let error = store
        .claim_part("d-old", 0, 200)
        .await
        .expect_err("an in-doubt answer without its start");
    assert_eq!(error.code(), "corrupt_state", "{error}");
}
