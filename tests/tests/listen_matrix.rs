//! The Matrix listener against a real Synapse (tests/src/synapse.rs): a person's message in a
//! bound thread becomes exactly one session input, in `sync` mode (in this process, and as a
//! `threadline run listen matrix` process killed with SIGKILL mid-stream) and in
//! `appservice` mode (Synapse pushing transactions per its `app_service_config_files`); a
//! redacted thread root ends the binding.
//!
//! Without Synapse installed these tests skip loudly (in CI they fail).

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use threadline::config::{Config, ListenMode, Secret};
use threadline::io::nats::StreamKind;
use threadline_schemas::{
    BindingChange, ConversationRef, InputSource, MessageReceived, SessionInput,
};
use threadline_tests::chaos::read_stream;
use threadline_tests::pipeline::{Options, Pipeline, Security, ACCOUNT};
use threadline_tests::servers::free_port;
use threadline_tests::synapse::{enc, MatrixUser, SynapseOptions, SynapseServer};

/// A homeserver with a person (admin, no message limit) and the bot, not yet in a room.
struct World {
    hs: SynapseServer,
    bot: MatrixUser,
    person: MatrixUser,
}

async fn users(hs: SynapseServer) -> World {
    let person = hs.register("person", true).await;
    hs.override_ratelimit(&person, &person, 0, 0).await;
    let bot = hs.register("threadline", false).await;
    World { hs, bot, person }
}

fn room_ref(room: &str) -> ConversationRef {
    ConversationRef {
        channel: "matrix".into(),
        account_id: ACCOUNT.into(),
        conversation_id: room.into(),
        parent_conversation_id: None,
    }
}

/// A deployment whose Matrix channel is the bot on `hs`, listening as `mode` (`listen_addr`
/// and `hs_token` for the appservice).
async fn pipeline(
    w: &World,
    mode: ListenMode,
    appservice: Option<(u16, String)>,
    in_process: bool,
) -> Pipeline {
    let (homeserver, token) = (w.hs.url(), w.bot.access_token.clone());
    let configure = move |c: &mut Config, _: &_, _: &_| {
        c.matrix.api_base = homeserver.clone();
        c.matrix.token = Secret::new(token.clone());
        c.matrix.account_id = ACCOUNT.into();
        c.matrix.listen = mode;
        // Short polls: a test's listener shuts down promptly.
        c.matrix.poll_timeout_ms = Some(2_000);
        if let Some((port, hs_token)) = &appservice {
            c.listen_addr = format!("127.0.0.1:{port}");
            c.matrix.listen_secret = Secret::new(hs_token.clone());
        }
    };
    Pipeline::start_secured(
        Options {
            in_process,
            ..Options::default()
        },
        Security {
            configure: Some(Arc::new(configure)),
            ..Security::default()
        },
    )
    .await
}

/// What the listeners stored in the inbound stream.
async fn heard(p: &Pipeline) -> Vec<MessageReceived> {
    read_stream(&p.js, &StreamKind::Inbound.name(&p.subjects))
        .await
        .into_iter()
        .filter(|o| {
            o.subject
                .starts_with(&format!("{}.in.message.", p.subjects.prefix()))
        })
        .filter_map(|o| rmp_serde::from_slice(&o.payload).ok())
        .collect()
}

/// Until the listener hears the room: a sync listener starts from "now", so a message
/// written before its first sync is (rightly) never heard. Writes probes until one is.
async fn wait_listening(p: &Pipeline, w: &World, room: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let probe =
            w.hs.send(
                &w.person,
                room,
                json!({"msgtype": "m.text", "body": "probe"}),
            )
            .await;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if heard(p)
                .await
                .iter()
                .any(|m| m.message_id.as_deref() == Some(probe.as_str()))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("the Matrix listener never heard the room");
}

fn in_thread(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
            "m.in_reply_to": {"event_id": root}},
    })
}

fn message_inputs(p: &Pipeline, session: &str) -> Vec<SessionInput> {
    p.inputs()
        .into_iter()
        .filter(|i| i.session_key == session && i.source == InputSource::Message)
        .collect()
}

/// Waits until the inputs of `session` name each of `ids` (or 60 s pass); → all its inputs.
async fn wait_for_ids(p: &Pipeline, session: &str, ids: &[String]) -> Vec<SessionInput> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inputs = message_inputs(p, session);
        let all = ids.iter().all(|id| {
            inputs
                .iter()
                .any(|i| i.message_id.as_deref() == Some(id.as_str()))
        });
        if all || Instant::now() >= deadline {
            return inputs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_each_once(inputs: &[SessionInput], ids: &[String]) {
    for id in ids {
        let n = inputs
            .iter()
            .filter(|i| i.message_id.as_deref() == Some(id.as_str()))
            .count();
        assert_eq!(n, 1, "message {id}: {n} inputs");
    }
    assert_eq!(inputs.len(), ids.len(), "no input but these messages' own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_a_persons_thread_reply_is_one_input_with_its_author_and_event_id() {
    let Some(hs) = SynapseServer::start().await else {
        return;
    };
    let w = users(hs).await;
    let room = w.hs.room(&w.person, &[&w.bot]).await;
    let p = pipeline(&w, ListenMode::Sync, None, true).await;
    wait_listening(&p, &w, &room).await;
    let (session, thread) = p.session_in_thread(&room_ref(&room)).await;
    assert_eq!(
        thread.parent_conversation_id.as_deref(),
        Some(room.as_str())
    );

    let id =
        w.hs.send(
            &w.person,
            &room,
            in_thread(&thread.conversation_id, "also check the totals"),
        )
        .await;
    wait_for_ids(&p, &session, std::slice::from_ref(&id)).await;
    p.settle(Duration::from_secs(1)).await;
    let inputs = message_inputs(&p, &session);
    assert_each_once(&inputs, std::slice::from_ref(&id));
    let input = &inputs[0];
    assert_eq!(input.text, "also check the totals");
    assert!(input.origin.same_place(&thread), "{:?}", input.origin);
    let author = input.author.as_ref().expect("author");
    assert_eq!(author.id, w.person.user_id);
    assert!(!author.is_bot);
    // Synapse's default display name is the localpart.
    assert_eq!(author.name.as_deref(), Some("person"));
    // The thread fallback is not a reply.
    assert_eq!(input.reply_to, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_listener_killed_mid_stream_and_restarted_hears_every_message_once() {
    let Some(hs) = SynapseServer::start().await else {
        return;
    };
    let w = users(hs).await;
    let room = w.hs.room(&w.person, &[&w.bot]).await;
    // The configuration file says `listen = "sync"` for the listener processes; the
    // workers in this process run without a listener.
    let mut p = pipeline(&w, ListenMode::Sync, None, false).await;
    p.config.matrix.listen = ListenMode::Off;
    p.start_in_process().await;
    let spawn_listener = |p: &Pipeline| {
        p.command(&["run", "listen", "matrix"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start threadline run listen matrix")
    };
    let mut listener = spawn_listener(&p);
    wait_listening(&p, &w, &room).await;
    let (session, thread) = p.session_in_thread(&room_ref(&room)).await;

    let mut ids = Vec::new();
    for n in 0..24 {
        if n == 8 {
            // SIGKILL, by PID: no shutdown, no last cursor save.
            listener.start_kill().expect("kill the listener");
            listener.wait().await.expect("reap the listener");
        }
        if n == 16 {
            listener = spawn_listener(&p);
        }
        let body = format!("message {n}");
        ids.push(
            w.hs.send(&w.person, &room, in_thread(&thread.conversation_id, &body))
                .await,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_ids(&p, &session, &ids).await;
    p.settle(Duration::from_secs(2)).await;
    assert_each_once(&message_inputs(&p, &session), &ids);
    listener.start_kill().ok();
    listener.wait().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appservice_a_pushed_message_is_one_input_a_replayed_transaction_adds_none_and_a_wrong_token_is_refused(
) {
    let port = free_port();
    let hs_token = format!("hs-{}", uuid::Uuid::new_v4());
    let registration = json!({
        "id": "threadline",
        "url": format!("http://127.0.0.1:{port}"),
        "as_token": format!("as-{}", uuid::Uuid::new_v4()),
        "hs_token": hs_token,
        "sender_localpart": "threadline-as",
        // The bot's rooms are the appservice's: Synapse pushes every event of a room one of
        // the namespace's users is in. Not exclusive, so the bot registers as a plain user.
        "namespaces": {
            "users": [{"exclusive": false, "regex": "@threadline:threadline\\.test"}],
            "aliases": [], "rooms": [],
        },
        "rate_limited": false,
    });
    let Some(hs) =
        SynapseServer::start_with_app_service(SynapseOptions::default(), &registration.to_string())
            .await
    else {
        return;
    };
    let w = users(hs).await;
    // The listener first, then the room: Synapse backs off from an appservice it could not reach.
    let p = pipeline(
        &w,
        ListenMode::Appservice,
        Some((port, hs_token.clone())),
        true,
    )
    .await;
    assert_eq!(p.listen_addr.map(|a| a.port()), Some(port));
    let room = w.hs.room(&w.person, &[&w.bot]).await;
    let (session, thread) = p.session_in_thread(&room_ref(&room)).await;

    let id =
        w.hs.send(
            &w.person,
            &room,
            in_thread(&thread.conversation_id, "pushed to us"),
        )
        .await;
    let inputs = wait_for_ids(&p, &session, std::slice::from_ref(&id)).await;
    assert_each_once(&inputs, std::slice::from_ref(&id));
    assert_eq!(
        inputs[0].author.as_ref().map(|a| a.id.as_str()),
        Some(w.person.user_id.as_str())
    );
    assert!(inputs[0].origin.same_place(&thread));

    // The homeserver sends the same transaction again (our answer was lost).
    let path = format!("rooms/{}/event/{}", enc(&room), enc(&id));
    let (status, event) =
        w.hs.call(&w.person, reqwest::Method::GET, &path, None)
            .await;
    assert_eq!(status, 200, "{event}");
    let txn = json!({"events": [event]});
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for url in [
        format!("{base}/_matrix/app/v1/transactions/replayed-1"),
        format!("{base}/_matrix/app/v1/transactions/replayed-1"),
        format!("{base}/transactions/replayed-1"),
    ] {
        let answer = http
            .put(&url)
            .bearer_auth(&hs_token)
            .json(&txn)
            .send()
            .await
            .expect("PUT");
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.json::<Value>().await.expect("json"), json!({}));
    }
    // The legacy query parameter is the homeserver's token too.
    let answer = http
        .put(format!(
            "{base}/_matrix/app/v1/transactions/replayed-2?access_token={hs_token}"
        ))
        .json(&txn)
        .send()
        .await
        .expect("PUT");
    assert_eq!(answer.status().as_u16(), 200);

    // Not the homeserver: refused, nothing taken.
    let forged = json!({"events": [{
        "type": "m.room.message", "room_id": room, "event_id": "$forged", "sender": w.person.user_id,
        "content": {"msgtype": "m.text", "body": "forged",
            "m.relates_to": {"rel_type": "m.thread", "event_id": thread.conversation_id}},
    }]});
    let url = format!("{base}/_matrix/app/v1/transactions/forged-1");
    let wrong = http
        .put(&url)
        .bearer_auth("not-the-token")
        .json(&forged)
        .send()
        .await
        .expect("PUT");
    assert_eq!(wrong.status().as_u16(), 403);
    assert_eq!(
        wrong.json::<Value>().await.expect("json")["errcode"],
        "M_FORBIDDEN"
    );
    let missing = http.put(&url).json(&forged).send().await.expect("PUT");
    assert_eq!(missing.status().as_u16(), 401);
    assert_eq!(
        missing.json::<Value>().await.expect("json")["errcode"],
        "M_UNAUTHORIZED"
    );
    let ping = http
        .post(format!("{base}/_matrix/app/v1/ping"))
        .bearer_auth(&hs_token)
        .json(&json!({"transaction_id": "ping-1"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(ping.status().as_u16(), 200);

    p.settle(Duration::from_secs(1)).await;
    assert_each_once(&message_inputs(&p, &session), std::slice::from_ref(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_a_redacted_thread_root_ends_the_binding() {
    let Some(hs) = SynapseServer::start().await else {
        return;
    };
    let w = users(hs).await;
    let room = w.hs.room(&w.person, &[&w.bot]).await;
    let p = pipeline(&w, ListenMode::Sync, None, true).await;
    wait_listening(&p, &w, &room).await;
    let (session, thread) = p.session_in_thread(&room_ref(&room)).await;
    w.hs.redact(&w.person, &room, &thread.conversation_id).await;
    let ended = p.wait_binding(&session, BindingChange::Ended).await;
    assert!(ended.binding.conversation.same_place(&thread));
    assert_eq!(ended.reason, "thread_root_deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_the_bot_joins_a_room_it_is_invited_to_and_hears_it() {
    let Some(hs) = SynapseServer::start().await else {
        return;
    };
    let w = users(hs).await;
    let p = pipeline(&w, ListenMode::Sync, None, true).await;
    // Invited only: nobody joins for the bot.
    let (status, created) =
        w.hs.call(
            &w.person,
            reqwest::Method::POST,
            "createRoom",
            Some(json!({"preset": "private_chat", "invite": [w.bot.user_id]})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    wait_listening(&p, &w, &room).await;
    let path = format!("rooms/{}/joined_members", enc(&room));
    let (status, members) =
        w.hs.call(&w.person, reqwest::Method::GET, &path, None)
            .await;
    assert_eq!(status, 200, "{members}");
    assert!(members["joined"].get(&w.bot.user_id).is_some(), "{members}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_more_messages_than_one_batch_holds_while_the_listener_is_down_are_all_heard_once() {
    let Some(hs) = SynapseServer::start().await else {
        return;
    };
    let w = users(hs).await;
    let room = w.hs.room(&w.person, &[&w.bot]).await;
    let mut p = pipeline(&w, ListenMode::Sync, None, false).await;
    p.config.matrix.listen = ListenMode::Off;
    p.start_in_process().await;
    let spawn_listener = |p: &Pipeline| {
        p.command(&["run", "listen", "matrix"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start threadline run listen matrix")
    };
    let mut listener = spawn_listener(&p);
    wait_listening(&p, &w, &room).await;
    let (session, thread) = p.session_in_thread(&room_ref(&room)).await;
    listener.start_kill().expect("kill the listener");
    listener.wait().await.expect("reap the listener");

    // More than a sync batch's timeline limit (100): the next sync comes back `limited`,
    // and the rest is read back through /messages.
    let mut ids = Vec::new();
    for n in 0..130 {
        let body = format!("while down {n}");
        ids.push(
            w.hs.send(&w.person, &room, in_thread(&thread.conversation_id, &body))
                .await,
        );
    }
    let mut listener = spawn_listener(&p);
    wait_for_ids(&p, &session, &ids).await;
    p.settle(Duration::from_secs(2)).await;
    assert_each_once(&message_inputs(&p, &session), &ids);
    listener.start_kill().ok();
    listener.wait().await.ok();
}
