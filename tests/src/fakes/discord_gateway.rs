//! A fake Discord Gateway: a loopback websocket server (JSON encoding, no compression) that
//! speaks the protocol of discord/discord-api-docs@c98d64bc `developers/events/gateway.mdx`
//! (Connecting, Sending Heartbeats, Identifying, Resuming, Sharding),
//! `developers/events/gateway-events.mdx` (Hello, Ready, Resumed, Reconnect, Invalid Session,
//! Message Create) and `developers/topics/opcodes-and-status-codes.mdx` (opcodes and close
//! codes; vendored at /work/shared/specs/discord-opcodes-and-status-codes.mdx).
//!
//! Sessions outlive connections, as Discord's do: every dispatch of a shard is appended to
//! every live session of that shard with the session's next sequence number, and a RESUME
//! with a sequence replays what came after it, then RESUMED.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_tungstenite::tungstenite::{
    handshake::server::{Request, Response},
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

use super::lock;

/// The token IDENTIFY and RESUME must carry (the same as the HTTP fake's).
pub const TOKEN: &str = "test-token";
/// The bot user the READY names.
pub const BOT_USER_ID: &str = "100000000000000001";
/// gateway.mdx, List of Intents: MESSAGE_CONTENT, a privileged intent.
const MESSAGE_CONTENT: u64 = 1 << 15;

/// What a connection is told to do by the test.
enum Order {
    Send(String),
    Close(u16),
    Drop,
}

struct Conn {
    orders: mpsc::UnboundedSender<Order>,
    session: Option<String>,
    acks: bool,
}

struct SessionLog {
    shard: u32,
    seq: u64,
    valid: bool,
    /// (sequence, payload) of every dispatch sent or owed to it.
    log: Vec<(u64, String)>,
    conn: Option<u64>,
}

struct State {
    addr: SocketAddr,
    shards: u32,
    heartbeat_ms: u64,
    content_intent: bool,
    conns: HashMap<u64, Conn>,
    sessions: HashMap<String, SessionLog>,
    /// Channel id → guild id; channels not listed are in [`FakeGateway::GUILD`].
    guild_of: HashMap<String, String>,
    /// Thread id → parent channel id, sent in GUILD_CREATE.
    threads: HashMap<String, String>,
    next_id: u64,
    next_conn: u64,
    identifies: usize,
    resumes: usize,
    /// (op, shard) of IDENTIFY/RESUME, in order.
    log: Vec<String>,
    closes: Vec<u16>,
}

/// Handle to a running fake Gateway; dropping it stops accepting connections.
pub struct FakeGateway {
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The message shape `person_writes` sends as a MESSAGE_CREATE author.
#[derive(Clone, Debug)]
pub struct Person {
    /// User id.
    pub id: String,
    /// Username.
    pub username: String,
    /// Display name.
    pub global_name: Option<String>,
    /// Whether the user is a bot.
    pub bot: bool,
}

impl Person {
    /// A person (not a bot) with this id and username, whose display name is `Username`.
    pub fn new(id: &str, username: &str) -> Person {
        Person {
            id: id.into(),
            username: username.into(),
            global_name: Some(format!("{username} (display)")),
            bot: false,
        }
    }
}

impl FakeGateway {
    /// The guild of every channel not placed in another; on shard 0 of any count.
    pub const GUILD: &'static str = "8388608";

    /// Starts a Gateway of `shards` shards on a free loopback port; HELLO says `heartbeat_ms`.
    pub async fn start(shards: u32, heartbeat_ms: u64) -> FakeGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            addr,
            shards,
            heartbeat_ms,
            content_intent: true,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            guild_of: HashMap::new(),
            threads: HashMap::new(),
            next_id: 1_000_000_000_000_000,
            next_conn: 0,
            identifies: 0,
            resumes: 0,
            log: Vec::new(),
            closes: Vec::new(),
        }));
        let st = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(Arc::clone(&st), tcp));
            }
        });
        FakeGateway { state, accept }
    }

    /// `ws://127.0.0.1:PORT`, the Gateway URL (for `GET /gateway/bot` or `gateway_url`).
    pub fn url(&self) -> String {
        format!("ws://{}", lock(&self.state).addr)
    }

    /// The shard count.
    pub fn shards(&self) -> u32 {
        lock(&self.state).shards
    }

    /// Whether the app was granted the privileged MESSAGE_CONTENT intent (default yes).
    pub fn set_message_content_intent(&self, granted: bool) {
        lock(&self.state).content_intent = granted;
    }

    /// Places `channel_id` in `guild_id` (the shard is `(guild_id >> 22) % shards`).
    pub fn place(&self, channel_id: &str, guild_id: &str) {
        lock(&self.state)
            .guild_of
            .insert(channel_id.into(), guild_id.into());
    }

    /// Makes `thread_id` a thread of `parent_id`, announced in the next GUILD_CREATE.
    pub fn add_thread(&self, thread_id: &str, parent_id: &str) {
        lock(&self.state)
            .threads
            .insert(thread_id.into(), parent_id.into());
    }

    /// A person writes `content` in `channel_id`: a MESSAGE_CREATE on its shard; returns the
    /// new message's id.
    pub fn person_writes(&self, channel_id: &str, author: &Person, content: &str) -> String {
        let mut st = lock(&self.state);
        st.next_id += 1;
        let id = st.next_id.to_string();
        let guild = st.guild(channel_id);
        // gateway-events.mdx, Message Create; message.mdx: without MESSAGE_CONTENT the text
        // is empty (the fake's messages mention nobody and are not DMs).
        let granted = st.content_intent;
        let d = json!({
            "id": id, "channel_id": channel_id, "guild_id": guild, "type": 0,
            "content": if granted { content } else { "" },
            "author": {"id": author.id, "username": author.username, "discriminator": "0",
                       "global_name": author.global_name, "avatar": null, "bot": author.bot},
            "timestamp": "2026-12-07T20:00:00.000000+00:00", "edited_timestamp": null,
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": false, "flags": 0,
        });
        st.dispatch_in_guild(&guild, "MESSAGE_CREATE", d);
        id
    }

    /// Sends dispatch `t` with data `d` on the shard of `channel_id`'s guild.
    pub fn dispatch(&self, channel_id: &str, t: &str, d: Value) {
        let mut st = lock(&self.state);
        let guild = st.guild(channel_id);
        st.dispatch_in_guild(&guild, t, d);
    }

    /// Drops every connection without a close frame (sessions stay resumable).
    pub fn drop_connections(&self) {
        for c in lock(&self.state).conns.values() {
            let _ = c.orders.send(Order::Drop);
        }
    }

    /// Sends op 7 RECONNECT on every connection.
    pub fn reconnect(&self) {
        for c in lock(&self.state).conns.values() {
            let _ = c
                .orders
                .send(Order::Send(json!({"op": 7, "d": null}).to_string()));
        }
    }

    /// Invalidates every session and sends op 9 INVALID_SESSION `d: false` on every connection.
    pub fn invalidate(&self) {
        let mut st = lock(&self.state);
        for s in st.sessions.values_mut() {
            s.valid = false;
        }
        for c in st.conns.values() {
            let _ = c
                .orders
                .send(Order::Send(json!({"op": 9, "d": false}).to_string()));
        }
    }

    /// The current connections stop answering heartbeats (a zombied connection); new ones
    /// answer again.
    pub fn stop_acks(&self) {
        for c in lock(&self.state).conns.values_mut() {
            c.acks = false;
        }
    }

    /// Closes every connection with `code` (4000 unknown error, 4004 authentication failed …).
    pub fn close_all(&self, code: u16) {
        for c in lock(&self.state).conns.values() {
            let _ = c.orders.send(Order::Close(code));
        }
    }

    /// How many IDENTIFYs were accepted.
    pub fn identifies(&self) -> usize {
        lock(&self.state).identifies
    }

    /// How many RESUMEs were accepted.
    pub fn resumes(&self) -> usize {
        lock(&self.state).resumes
    }

    /// The accepted IDENTIFY and RESUME, in order: `identify:<shard>` / `resume:<shard>`.
    pub fn sessions(&self) -> Vec<String> {
        lock(&self.state).log.clone()
    }

    /// Close codes the fake sent.
    pub fn closes(&self) -> Vec<u16> {
        lock(&self.state).closes.clone()
    }

    /// How many connections are open with a live session.
    pub fn live(&self) -> usize {
        lock(&self.state)
            .conns
            .values()
            .filter(|c| c.session.is_some())
            .count()
    }
}

impl State {
    fn guild(&self, channel: &str) -> String {
        let parent = self
            .threads
            .get(channel)
            .map(String::as_str)
            .unwrap_or(channel);
        self.guild_of
            .get(channel)
            .or_else(|| self.guild_of.get(parent))
            .cloned()
            .unwrap_or_else(|| FakeGateway::GUILD.into())
    }

    /// gateway.mdx, Sharding Formula: `shard_id = (guild_id >> 22) % num_shards`.
    fn shard_of(&self, guild: &str) -> u32 {
        let id: u64 = guild.parse().unwrap_or(0);
        ((id >> 22) % u64::from(self.shards)) as u32
    }

    fn dispatch_in_guild(&mut self, guild: &str, t: &str, d: Value) {
        let shard = self.shard_of(guild);
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.valid && s.shard == shard)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.push(&id, t, &d, true);
        }
    }

    /// Gives `session` its next sequence for dispatch `t`, sends it where it is connected, and
    /// (when `keep`) keeps it for a RESUME.
    fn push(&mut self, session: &str, t: &str, d: &Value, keep: bool) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.seq += 1;
        let text = json!({"op": 0, "s": s.seq, "t": t, "d": d}).to_string();
        if keep {
            s.log.push((s.seq, text.clone()));
        }
        if let Some(conn) = s.conn.and_then(|c| self.conns.get(&c)) {
            let _ = conn.orders.send(Order::Send(text));
        }
    }

    fn guild_create(&self, shard: u32) -> Vec<Value> {
        let mut guilds: Vec<String> = self.guild_of.values().cloned().collect();
        guilds.push(FakeGateway::GUILD.into());
        guilds.sort();
        guilds.dedup();
        guilds
            .into_iter()
            .filter(|g| self.shard_of(g) == shard)
            .map(|g| {
                let threads: Vec<Value> = self
                    .threads
                    .iter()
                    .filter(|(_, p)| self.guild(p) == g)
                    .map(|(id, p)| json!({"id": id, "type": 11, "parent_id": p, "guild_id": g,
                        "thread_metadata": {"archived": false, "locked": false, "auto_archive_duration": 1440,
                                            "archive_timestamp": "2026-12-07T20:00:00+00:00"}}))
                    .collect();
                json!({"id": g, "name": "fake guild", "unavailable": false, "channels": [], "threads": threads})
            })
            .collect()
    }
}

/// One websocket connection: HELLO, then IDENTIFY or RESUME, heartbeats, and the orders.
#[allow(clippy::result_large_err)] // tungstenite's callback signature, not ours
async fn serve(state: Arc<Mutex<State>>, tcp: tokio::net::TcpStream) {
    let mut query = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or_default().to_owned();
        Ok(resp)
    })
    .await;
    let Ok(mut ws) = ws else { return };
    // gateway.mdx, Connecting: `v=10&encoding=json`; this fake sends no compression.
    let bad_query = !query.split('&').any(|kv| kv == "v=10")
        || !query.split('&').any(|kv| kv == "encoding=json")
        || query.contains("compress=");
    let (tx, mut orders) = mpsc::unbounded_channel();
    let (id, heartbeat_ms) = {
        let mut st = lock(&state);
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(
            id,
            Conn {
                orders: tx.clone(),
                session: None,
                acks: true,
            },
        );
        (id, st.heartbeat_ms)
    };
    if bad_query {
        let _ = tx.send(Order::Close(4000));
    }
    let hello = json!({"op": 10, "d": {"heartbeat_interval": heartbeat_ms}}).to_string();
    if ws.send(Message::Text(hello.into())).await.is_err() {
        lock(&state).conns.remove(&id);
        return;
    }
    // gateway.mdx, Sending Heartbeats: a connection that does not heartbeat in time is closed.
    let deadline = Duration::from_millis(heartbeat_ms * 3);
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                Some(Order::Send(text)) => {
                    if ws.send(Message::Text(text.into())).await.is_err() { break; }
                }
                Some(Order::Close(code)) => {
                    lock(&state).closes.push(code);
                    let _ = ws.send(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "".into() }))).await;
                    let _ = ws.close(None).await;
                    break;
                }
                Some(Order::Drop) | None => break,
            },
            msg = tokio::time::timeout(deadline, ws.next()) => {
                let text = match msg {
                    Err(_) => { let _ = tx.send(Order::Close(4009)); continue; }
                    Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
                    Ok(Some(Ok(_))) => continue,
                };
                let Ok(payload) = serde_json::from_str::<Value>(&text) else {
                    let _ = tx.send(Order::Close(4002));
                    continue;
                };
                handle(&state, id, &tx, &payload);
            }
        }
    }
    let mut st = lock(&state);
    if let Some(conn) = st.conns.remove(&id) {
        if let Some(s) = conn.session.and_then(|s| st.sessions.get_mut(&s)) {
            if s.conn == Some(id) {
                s.conn = None;
            }
        }
    }
}

fn token_ok(t: Option<&str>) -> bool {
    // twilight (and other libraries) send the token with the `Bot ` prefix the HTTP API
    // uses; Discord accepts both forms.
    t.map(|t| t.strip_prefix("Bot ").unwrap_or(t)) == Some(TOKEN)
}

fn handle(state: &Arc<Mutex<State>>, id: u64, tx: &mpsc::UnboundedSender<Order>, p: &Value) {
    let mut st = lock(state);
    let op = p["op"].as_u64();
    let session = st.conns.get(&id).and_then(|c| c.session.clone());
    match op {
        // Heartbeat → Heartbeat ACK (unless this connection is zombied).
        Some(1) => {
            if st.conns.get(&id).is_some_and(|c| c.acks) {
                let _ = tx.send(Order::Send(json!({"op": 11}).to_string()));
            }
        }
        Some(2) => {
            if session.is_some() {
                let _ = tx.send(Order::Close(4005));
                return;
            }
            let d = &p["d"];
            if !token_ok(d["token"].as_str()) {
                let _ = tx.send(Order::Close(4004));
                return;
            }
            let Some(intents) = d["intents"].as_u64() else {
                let _ = tx.send(Order::Close(4013));
                return;
            };
            if intents & MESSAGE_CONTENT != 0 && !st.content_intent {
                let _ = tx.send(Order::Close(4014));
                return;
            }
            let shard = d["shard"]
                .as_array()
                .map(|a| (a[0].as_u64(), a[1].as_u64()));
            let shard = match shard {
                Some((Some(n), Some(total))) if total == u64::from(st.shards) && n < total => {
                    n as u32
                }
                Some(_) => {
                    let _ = tx.send(Order::Close(4010));
                    return;
                }
                None if st.shards > 1 => {
                    let _ = tx.send(Order::Close(4011));
                    return;
                }
                None => 0,
            };
            st.identifies += 1;
            st.log.push(format!("identify:{shard}"));
            let session_id = format!(
                "session-{}-{}",
                st.identifies,
                uuid::Uuid::new_v4().simple()
            );
            st.sessions.insert(
                session_id.clone(),
                SessionLog {
                    shard,
                    seq: 0,
                    valid: true,
                    log: Vec::new(),
                    conn: Some(id),
                },
            );
            if let Some(c) = st.conns.get_mut(&id) {
                c.session = Some(session_id.clone());
            }
            let ready = json!({
                "v": 10, "user": {"id": BOT_USER_ID, "username": "threadline", "discriminator": "0",
                                   "global_name": null, "avatar": null, "bot": true},
                "guilds": [], "session_id": session_id,
                "resume_gateway_url": format!("ws://{}", st.addr),
                "shard": [shard, st.shards], "application": {"id": BOT_USER_ID, "flags": 0},
            });
            st.push(&session_id, "READY", &ready, false);
            for g in st.guild_create(shard) {
                st.push(&session_id, "GUILD_CREATE", &g, true);
            }
        }
        Some(6) => {
            let d = &p["d"];
            if !token_ok(d["token"].as_str()) {
                let _ = tx.send(Order::Close(4004));
                return;
            }
            let sid = d["session_id"].as_str().unwrap_or_default().to_owned();
            let seq = d["seq"].as_u64().unwrap_or(0);
            let valid = st
                .sessions
                .get(&sid)
                .is_some_and(|s| s.valid && seq <= s.seq);
            if !valid {
                // gateway-events.mdx, Invalid Session: `d: false` — identify anew.
                let _ = tx.send(Order::Send(json!({"op": 9, "d": false}).to_string()));
                return;
            }
            // A session resumed elsewhere leaves its old connection (gateway.mdx, Resuming).
            let old = st
                .sessions
                .get(&sid)
                .and_then(|s| s.conn)
                .filter(|c| *c != id);
            if let Some(old) = old.and_then(|c| st.conns.get(&c)) {
                let _ = old.orders.send(Order::Close(4009));
            }
            st.resumes += 1;
            let shard = st.sessions[&sid].shard;
            st.log.push(format!("resume:{shard}"));
            if let Some(c) = st.conns.get_mut(&id) {
                c.session = Some(sid.clone());
            }
            let missed: Vec<String> = {
                let s = st.sessions.get_mut(&sid).expect("checked");
                s.conn = Some(id);
                s.log
                    .iter()
                    .filter(|(n, _)| *n > seq)
                    .map(|(_, t)| t.clone())
                    .collect()
            };
            for text in missed {
                let _ = tx.send(Order::Send(text));
            }
            st.push(&sid, "RESUMED", &Value::Null, false);
        }
        // Presence and voice updates, request guild members: accepted, unanswered here.
        Some(3 | 4 | 8 | 31) => {}
        _ => {
            let _ = tx.send(Order::Close(4001));
        }
    }
    // gateway.mdx, Identifying: anything but a heartbeat before IDENTIFY closes with 4003.
    if session.is_none() && !matches!(op, Some(1 | 2 | 6)) {
        let _ = tx.send(Order::Close(4003));
    }
}
