//! The Discord Gateway listener against the fake Gateway (`tests/src/fakes/discord_gateway.rs`):
//! `threadline run listen discord` processes hear people in bound threads, survive the
//! Gateway's disconnects, RECONNECT, INVALID_SESSION and a zombied connection without losing
//! or doubling a message, split shards between replicas, and end bindings on thread deletes,
//! locks and starter deletions.

use serde_json::json;
use std::time::{Duration, Instant};
use threadline_schemas::{BindingChange, ConversationRef, InputSource, SessionInput};
use threadline_tests::fakes::discord_gateway::{FakeGateway, Person};
use threadline_tests::pipeline::{Pipeline, ACCOUNT};
use tokio::process::Child;

/// On shard 1 of 2 (`(guild_id >> 22) % 2`); `FakeGateway::GUILD` is on shard 0.
const GUILD_ON_SHARD_1: &str = "4194304";

struct Setup {
    pipeline: Pipeline,
    gateway: FakeGateway,
}

async fn setup(shards: u32, heartbeat_ms: u64) -> Setup {
    let pipeline = Pipeline::start().await;
    let gateway = FakeGateway::start(shards, heartbeat_ms).await;
    pipeline.discord.set_gateway(&gateway.url(), shards);
    Setup { pipeline, gateway }
}

impl Setup {
    /// A session bound to a new thread under `channel`, the thread known to the Gateway.
    async fn thread(&self, channel: &str) -> (String, ConversationRef) {
        let (session, thread) = self
            .pipeline
            .session_in_thread(&Pipeline::discord_channel(channel))
            .await;
        let parent = thread.parent_conversation_id.clone().expect("a thread");
        self.gateway.add_thread(&thread.conversation_id, &parent);
        (session, thread)
    }

    /// A `threadline run listen discord` process (its shard count from `GET /gateway/bot`).
    fn listener(&self) -> Child {
        self.pipeline
            .command(&["run", "listen", "discord"])
            .env("THREADLINE_DISCORD_LISTEN", "gateway")
            // All digits, as Discord ids are: read as a number by the environment source.
            .env("THREADLINE_DISCORD_ACCOUNT_ID", ACCOUNT)
            .spawn()
            .expect("threadline starts")
    }

    fn messages(&self, session: &str) -> Vec<SessionInput> {
        self.pipeline
            .inputs()
            .into_iter()
            .filter(|i| i.session_key == session && i.source == InputSource::Message)
            .collect()
    }

    /// Waits (bounded) until `session` has `n` message inputs; returns them.
    async fn wait_messages(&self, session: &str, n: usize) -> Vec<SessionInput> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.messages(session);
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every id in `ids` arrived exactly once among `inputs`.
fn exactly_once(inputs: &[SessionInput], ids: &[String]) {
    for id in ids {
        let n = inputs
            .iter()
            .filter(|i| i.message_id.as_deref() == Some(id))
            .count();
        assert_eq!(n, 1, "message {id} arrived {n} times");
    }
    assert_eq!(inputs.len(), ids.len(), "no other inputs");
}

fn ada() -> Person {
    Person::new("200000000000000007", "ada")
}

#[tokio::test]
async fn a_persons_message_in_a_bound_thread_is_one_input_with_its_author_and_message_id() {
    let s = setup(1, 1_000).await;
    let (session, thread) = s.thread("410000000000000001").await;
    let _listener = s.listener();
    until("the shard's session", || s.gateway.live() == 1).await;

    let id = s
        .gateway
        .person_writes(&thread.conversation_id, &ada(), "also check the totals");
    let inputs = s.wait_messages(&session, 1).await;
    s.pipeline.settle(Duration::from_millis(500)).await;
    let inputs_after = s.messages(&session);
    assert_eq!(inputs_after.len(), 1, "exactly one input");
    let input = &inputs[0];
    assert_eq!(input.text, "also check the totals");
    assert_eq!(input.message_id.as_deref(), Some(id.as_str()));
    assert!(input.origin.same_place(&thread));
    let author = input.author.as_ref().expect("author");
    assert_eq!(author.id, "200000000000000007");
    assert!(!author.is_bot);
    assert_eq!(author.name.as_deref(), Some("ada (display)"));
    assert_eq!(s.gateway.sessions(), vec!["identify:0".to_owned()]);
}

#[tokio::test]
async fn a_disconnect_in_the_middle_of_a_burst_is_resumed_and_every_message_arrives_once() {
    let s = setup(1, 1_000).await;
    let (session, thread) = s.thread("410000000000000002").await;
    let _listener = s.listener();
    until("the shard's session", || s.gateway.live() == 1).await;

    let mut ids = Vec::new();
    for n in 0..20 {
        if n == 10 {
            s.gateway.drop_connections();
        }
        ids.push(
            s.gateway
                .person_writes(&thread.conversation_id, &ada(), &format!("part {n}")),
        );
    }
    let inputs = s.wait_messages(&session, ids.len()).await;
    s.pipeline.settle(Duration::from_millis(500)).await;
    exactly_once(&s.messages(&session), &ids);
    assert_eq!(inputs.len(), ids.len());
    assert_eq!(s.gateway.identifies(), 1, "resumed, not identified anew");
    assert!(s.gateway.resumes() >= 1, "{:?}", s.gateway.sessions());
}

#[tokio::test]
async fn reconnect_resumes_and_an_invalid_session_identifies_anew() {
    let s = setup(1, 1_000).await;
    let (session, thread) = s.thread("410000000000000003").await;
    let _listener = s.listener();
    until("the shard's session", || s.gateway.live() == 1).await;

    let mut ids = vec![s
        .gateway
        .person_writes(&thread.conversation_id, &ada(), "one")];
    s.gateway.reconnect();
    ids.push(
        s.gateway
            .person_writes(&thread.conversation_id, &ada(), "two"),
    );
    until("a RESUME after op 7", || s.gateway.resumes() == 1).await;
    s.wait_messages(&session, 2).await;

    s.gateway.invalidate();
    until("a new IDENTIFY after op 9", || s.gateway.identifies() == 2).await;
    until("the new session", || s.gateway.live() == 1).await;
    ids.push(
        s.gateway
            .person_writes(&thread.conversation_id, &ada(), "three"),
    );
    s.wait_messages(&session, 3).await;
    s.pipeline.settle(Duration::from_millis(500)).await;
    exactly_once(&s.messages(&session), &ids);
}

#[tokio::test]
async fn a_zombied_connection_is_detected_and_resumed() {
    let s = setup(1, 300).await;
    let (session, thread) = s.thread("410000000000000004").await;
    let _listener = s.listener();
    until("the shard's session", || s.gateway.live() == 1).await;

    s.gateway.stop_acks();
    until("a RESUME after the unanswered heartbeat", || {
        s.gateway.resumes() >= 1
    })
    .await;
    let id = s
        .gateway
        .person_writes(&thread.conversation_id, &ada(), "still there?");
    s.wait_messages(&session, 1).await;
    s.pipeline.settle(Duration::from_millis(300)).await;
    exactly_once(&s.messages(&session), &[id]);
    assert_eq!(s.gateway.identifies(), 1);
}

#[tokio::test]
async fn two_replicas_split_the_shards_and_a_killed_ones_shard_resumes_elsewhere_losing_nothing() {
    let s = setup(2, 500).await;
    let parent_1 = "410000000000000005";
    s.gateway.place(parent_1, GUILD_ON_SHARD_1);
    let (session_0, thread_0) = s.thread("410000000000000006").await;
    let (session_1, thread_1) = s.thread(parent_1).await;

    let mut first = s.listener();
    until("both shards", || s.gateway.live() == 2).await;
    let mut second = s.listener();
    // The second replica takes one shard over from the first: by resuming its session.
    until("a shard handed over", || s.gateway.resumes() >= 1).await;
    until("both shards live", || s.gateway.live() == 2).await;
    let resumed = s.gateway.resumes();

    // One of them dies; which one holds which shard does not matter: both shards get
    // messages while it is dead.
    first.kill().await.expect("kill by PID");
    let mut ids_0 = Vec::new();
    let mut ids_1 = Vec::new();
    for n in 0..5 {
        ids_0.push(
            s.gateway
                .person_writes(&thread_0.conversation_id, &ada(), &format!("a{n}")),
        );
        ids_1.push(
            s.gateway
                .person_writes(&thread_1.conversation_id, &ada(), &format!("b{n}")),
        );
    }
    s.wait_messages(&session_0, 5).await;
    s.wait_messages(&session_1, 5).await;
    s.pipeline.settle(Duration::from_millis(500)).await;
    exactly_once(&s.messages(&session_0), &ids_0);
    exactly_once(&s.messages(&session_1), &ids_1);
    assert!(
        s.gateway.resumes() > resumed,
        "the dead replica's shard was resumed"
    );
    assert_eq!(s.gateway.identifies(), 2, "no shard identified anew");
    let _ = second.kill().await;
}

#[tokio::test]
async fn a_deleted_thread_a_locked_thread_and_a_deleted_starter_end_their_bindings() {
    let s = setup(1, 1_000).await;
    let (deleted, t_deleted) = s.thread("410000000000000007").await;
    let (locked, t_locked) = s.thread("410000000000000007").await;
    let (rooted, t_rooted) = s.thread("410000000000000007").await;
    let _listener = s.listener();
    until("the shard's session", || s.gateway.live() == 1).await;

    let thread = |t: &ConversationRef, locked: bool| {
        json!({"id": t.conversation_id, "type": 11, "guild_id": FakeGateway::GUILD,
               "parent_id": t.parent_conversation_id,
               "thread_metadata": {"archived": locked, "locked": locked,
                                   "auto_archive_duration": 1440,
                                   "archive_timestamp": "2026-12-07T20:00:00+00:00"}})
    };
    // Archived alone (Discord's auto-archive) ends nothing.
    let mut archived = thread(&t_locked, false);
    archived["thread_metadata"]["archived"] = json!(true);
    s.gateway
        .dispatch(&t_locked.conversation_id, "THREAD_UPDATE", archived);
    s.gateway.dispatch(
        &t_deleted.conversation_id,
        "THREAD_DELETE",
        json!({"id": t_deleted.conversation_id, "guild_id": FakeGateway::GUILD,
               "parent_id": t_deleted.parent_conversation_id, "type": 11}),
    );
    s.gateway.dispatch(
        &t_locked.conversation_id,
        "THREAD_UPDATE",
        thread(&t_locked, true),
    );
    s.gateway.dispatch(
        &t_rooted.conversation_id,
        "MESSAGE_DELETE",
        json!({"id": t_rooted.conversation_id, "channel_id": t_rooted.conversation_id,
               "guild_id": FakeGateway::GUILD}),
    );
    let ended = s
        .pipeline
        .wait_binding(&deleted, BindingChange::Ended)
        .await;
    assert_eq!(ended.reason, "thread_deleted");
    let ended = s.pipeline.wait_binding(&locked, BindingChange::Ended).await;
    assert!(ended.binding.conversation.same_place(&t_locked));
    let ended = s.pipeline.wait_binding(&rooted, BindingChange::Ended).await;
    assert!(ended.binding.conversation.same_place(&t_rooted));
}

#[tokio::test]
async fn messages_that_could_not_be_taken_while_nats_was_down_are_resumed_and_arrive_once() {
    let mut s = setup(1, 1_000).await;
    let (session, thread) = s.thread("410000000000000008").await;
    let _listener = s.listener();
    until("the shard's session", || s.gateway.live() == 1).await;
    let mut ids = vec![s
        .gateway
        .person_writes(&thread.conversation_id, &ada(), "before")];
    s.wait_messages(&session, 1).await;

    s.pipeline.nats.kill().await;
    for n in 0..5 {
        ids.push(
            s.gateway
                .person_writes(&thread.conversation_id, &ada(), &format!("during {n}")),
        );
    }
    // The listener cannot take them: it drops the connection and resumes from the last
    // taken dispatch, again and again, until NATS is back.
    until("a RESUME of the untaken dispatches", || {
        s.gateway.resumes() >= 1
    })
    .await;
    s.pipeline.nats.start_again().await;
    s.wait_messages(&session, ids.len()).await;
    s.pipeline.settle(Duration::from_millis(500)).await;
    exactly_once(&s.messages(&session), &ids);
    assert_eq!(s.gateway.identifies(), 1);
}

/// The fake itself, driven by the Gateway client the listener uses: Discord's close codes
/// for a wrong token (4004) and a privileged intent the app was not granted (4014) end the
/// shard for good (opcodes-and-status-codes.mdx, Gateway Close Event Codes: not reconnectable).
#[tokio::test]
async fn the_fake_gateway_refuses_a_wrong_token_and_an_ungranted_privileged_intent() {
    use futures::StreamExt;
    use twilight_gateway::{ConfigBuilder, Intents, Shard, ShardId};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let gateway = FakeGateway::start(1, 1_000).await;
    let run = |token: &str, intents: Intents| {
        let config = ConfigBuilder::new(token.to_owned(), intents)
            .proxy_url(gateway.url())
            .build();
        let mut shard = Shard::with_config(ShardId::ONE, config);
        async move {
            let deadline = Duration::from_secs(10);
            tokio::time::timeout(deadline, async { while shard.next().await.is_some() {} })
                .await
                .expect("the shard ends");
        }
    };
    run("wrong", Intents::GUILDS).await;
    assert_eq!(gateway.closes(), vec![4004]);
    gateway.set_message_content_intent(false);
    run(
        threadline_tests::fakes::discord_gateway::TOKEN,
        Intents::GUILDS | Intents::MESSAGE_CONTENT,
    )
    .await;
    assert_eq!(gateway.closes(), vec![4004, 4014]);
    assert_eq!(gateway.identifies(), 0);
}
