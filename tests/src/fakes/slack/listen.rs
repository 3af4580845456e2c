//! What Slack sends an app: people's messages and channel events, as Socket Mode envelopes
//! over a websocket the app opened, or as signed Events API requests to its Request URL.
//!
//! Socket Mode (api.slack.com/apis/socket-mode): `apps.connections.open` (vendored:
//! `tests/specs/slack-apps.connections.open.json`) hands out a single-use `wss://` URL; on
//! connecting, Slack sends `hello`, then each event as an envelope `{"envelope_id",
//! "type":"events_api","payload",…}` that the app must acknowledge with `{"envelope_id"}`;
//! an envelope not acknowledged is sent again (with `retry_attempt` + 1) — here on the next
//! connection to open, once the one it went out on is gone. `disconnect` (reasons `warning`,
//! `refresh_requested`, `link_disabled`) asks the app to reconnect; Slack closes the old
//! socket shortly after. An app may hold several connections ("up to 10"); each event goes to
//! one of them, or, with [`FakeSlack::socket_send_to_all`], to every one (the duplicate
//! deliveries an app must collapse).
//!
//! Events API (api.slack.com/apis/events-api): a POST of the same payload to the Request URL,
//! signed with the signing secret (api.slack.com/authentication/verifying-requests-from-slack:
//! `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{timestamp}:{body}">`,
//! `X-Slack-Request-Timestamp`); a retry carries `X-Slack-Retry-Num` and
//! `X-Slack-Retry-Reason` ("Retries": `http_timeout`, `http_error`, …).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use super::{lock, FakeSlack, SlackMessage, StoredMessage, APP_ID, BOT_USER_ID, TEAM_ID};

/// The app-level token (`xapp-…`) the fake accepts for `apps.connections.open`.
pub const APP_TOKEN: &str = "xapp-1-A0THREADLN-test";
/// The signing secret the fake signs Events API requests with.
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// How long the fake keeps a socket open after sending `disconnect` when the app does not
/// close it first (Slack: "about 10 seconds" for `warning`; shorter here, tests wait on it).
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// How a pushed Events API request is signed.
#[derive(Debug, Clone, Default)]
pub enum Signing {
    /// As Slack signs: the fake's signing secret, the current time.
    #[default]
    Valid,
    /// No signature headers at all.
    Unsigned,
    /// A signature made with another secret.
    WrongSecret,
    /// Correctly signed, but at this Unix time (a replay from then).
    At(u64),
}

/// One Events API push: how it is signed, and whether it is one of Slack's retries.
#[derive(Debug, Clone, Default)]
pub struct Push {
    /// The signature it carries.
    pub signing: Signing,
    /// `X-Slack-Retry-Num` and `X-Slack-Retry-Reason`, for a retry.
    pub retry: Option<(u32, String)>,
}

/// The app's answer to a push.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Its HTTP status (0 when no answer came).
    pub status: u16,
    /// Its body.
    pub body: String,
}

/// One envelope as the fake sent it.
#[derive(Debug, Clone)]
struct Envelope {
    id: String,
    payload: Value,
    retry_attempt: u32,
}

impl Envelope {
    fn frame(&self) -> String {
        json!({
            "envelope_id": self.id,
            "payload": self.payload,
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": self.retry_attempt,
            "retry_reason": if self.retry_attempt == 0 { "" } else { "timeout" },
        })
        .to_string()
    }
}

enum Outgoing {
    Text(String),
    Disconnect(String),
    Drop,
}

struct Connection {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Told to disconnect: gets no new envelopes.
    retiring: bool,
}

#[derive(Default)]
struct HubState {
    tickets: std::collections::HashSet<String>,
    connections: BTreeMap<u64, Connection>,
    next_connection: u64,
    opened: u64,
    queue: VecDeque<Envelope>,
    /// envelope id → (envelope, the connection it went out on).
    unacked: BTreeMap<String, (Envelope, u64)>,
    acked: Vec<String>,
    /// Every envelope sent, redeliveries included: (envelope id, event_id).
    sent: Vec<(String, String)>,
    send_to_all: bool,
    round_robin: usize,
    next_envelope: u64,
    violations: Vec<String>,
}

impl HubState {
    fn envelope(&mut self, payload: Value) -> Envelope {
        self.next_envelope += 1;
        Envelope {
            id: format!("env-{:08}", self.next_envelope),
            payload,
            retry_attempt: 0,
        }
    }

    /// Sends what is queued to the open (not retiring) connections.
    fn dispatch(&mut self) {
        let open: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| !c.retiring)
            .map(|(id, _)| *id)
            .collect();
        if open.is_empty() {
            return;
        }
        while let Some(envelope) = self.queue.pop_front() {
            let targets = if self.send_to_all && envelope.retry_attempt == 0 {
                open.clone()
            } else {
                self.round_robin = self.round_robin.wrapping_add(1);
                vec![open[self.round_robin % open.len()]]
            };
            for (i, conn) in targets.into_iter().enumerate() {
                let copy = if i == 0 {
                    envelope.clone()
                } else {
                    // A copy on another connection is an envelope of its own.
                    let mut copy = self.envelope(envelope.payload.clone());
                    copy.retry_attempt = envelope.retry_attempt;
                    copy
                };
                let event_id = copy.payload["event_id"].as_str().unwrap_or("").to_owned();
                self.sent.push((copy.id.clone(), event_id));
                if let Some(c) = self.connections.get(&conn) {
                    let _ = c.tx.send(Outgoing::Text(copy.frame()));
                }
                self.unacked.insert(copy.id.clone(), (copy, conn));
            }
        }
    }

    /// A connection is gone: what it did not acknowledge goes out again.
    fn closed(&mut self, conn: u64) {
        self.connections.remove(&conn);
        let lost: Vec<String> = self
            .unacked
            .iter()
            .filter(|(_, (_, c))| *c == conn)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some((mut envelope, _)) = self.unacked.remove(&id) {
                envelope.retry_attempt += 1;
                self.queue.push_back(envelope);
            }
        }
        self.dispatch();
    }
}

/// The Socket Mode side of the fake: tickets, connections, envelopes.
pub(super) struct Hub {
    state: Mutex<HubState>,
    ws_addr: std::net::SocketAddr,
}

impl Hub {
    /// Binds the websocket listener and serves it on a task (for as long as the hub lives).
    pub(super) async fn start() -> Arc<Hub> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake slack: bind the socket mode port");
        let ws_addr = listener.local_addr().expect("bound address");
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState::default()),
            ws_addr,
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Some(hub) = weak.upgrade() else { break };
                tokio::spawn(serve_socket(hub, stream));
            }
        });
        hub
    }

    /// A new single-use Socket Mode URL.
    pub(super) fn open_url(&self) -> String {
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        lock(&self.state).tickets.insert(ticket.clone());
        format!(
            "ws://{}/link/?ticket={ticket}&app_id={APP_ID}",
            self.ws_addr
        )
    }

    fn enqueue(&self, payload: Value) {
        let mut st = lock(&self.state);
        let envelope = st.envelope(payload);
        st.queue.push_back(envelope);
        st.dispatch();
    }
}

/// One Socket Mode connection: checks its ticket, says `hello`, sends envelopes, takes acks.
// The handshake callback's error type is tungstenite's (an HTTP response), not ours.
#[allow(clippy::result_large_err)]
async fn serve_socket(hub: Arc<Hub>, stream: tokio::net::TcpStream) {
    let check = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let ticket = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("ticket="))
            .unwrap_or_default()
            .to_owned();
        // Single use: a URL from `apps.connections.open` is good for one connection.
        if request.uri().path() == "/link/" && lock(&hub.state).tickets.remove(&ticket) {
            Ok(response)
        } else {
            let mut refused = ErrorResponse::new(Some("invalid ticket".into()));
            *refused.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refused)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (conn, hello) = {
        let mut st = lock(&hub.state);
        st.next_connection += 1;
        st.opened += 1;
        let conn = st.next_connection;
        st.connections.insert(
            conn,
            Connection {
                tx,
                retiring: false,
            },
        );
        let hello = json!({
            "type": "hello",
            "num_connections": st.connections.len(),
            "debug_info": {"host": "applink-fake", "build_number": 1,
                "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        });
        (conn, hello)
    };
    if ws.send(Message::text(hello.to_string())).await.is_ok() {
        lock(&hub.state).dispatch();
        let mut close_at: Option<tokio::time::Instant> = None;
        loop {
            let deadline = async {
                match close_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outgoing::Text(text)) => {
                        if ws.send(Message::text(text)).await.is_err() { break; }
                    }
                    Some(Outgoing::Disconnect(reason)) => {
                        let frame = json!({"type": "disconnect", "reason": reason,
                            "debug_info": {"host": "applink-fake"}});
                        if ws.send(Message::text(frame.to_string())).await.is_err() { break; }
                        close_at = Some(tokio::time::Instant::now() + DISCONNECT_GRACE);
                    }
                    Some(Outgoing::Drop) | None => break,
                },
                () = deadline => {
                    let _ = ws.close(None).await;
                    break;
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => ack(&hub, conn, text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    lock(&hub.state).closed(conn);
}

fn ack(hub: &Hub, conn: u64, text: &str) {
    let mut st = lock(&hub.state);
    let id = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["envelope_id"].as_str().map(str::to_owned));
    match id {
        Some(id) => match st.unacked.remove(&id) {
            Some((_, sent_on)) if sent_on == conn => st.acked.push(id),
            Some((envelope, sent_on)) => {
                // Acknowledged on another connection than it came on: Slack would not
                // take it; it stays due.
                st.violations
                    .push(format!("envelope {id} acknowledged on another socket"));
                st.unacked.insert(id, (envelope, sent_on));
            }
            None => st
                .violations
                .push(format!("acknowledgement of an unknown envelope {id}")),
        },
        None => st
            .violations
            .push(format!("a frame that is no acknowledgement: {text}")),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex_encode(&mac.finalize().into_bytes()))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// People writing to the fake from a task of their own (the chaos run's people).
#[derive(Clone)]
pub struct SlackPeople {
    shared: super::Shared,
    hub: Arc<Hub>,
}

impl SlackPeople {
    /// A person (`user`) writes `text` in `channel`, in the thread of `thread_ts` when given:
    /// stored like any message, and sent as a `message` event (Socket Mode: queued for the
    /// app's connections). → the new message's `ts`.
    pub fn person_writes(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        user: &str,
        text: &str,
    ) -> String {
        let ts = {
            let mut st = lock(&self.shared);
            let ts_us = st.next_ts_us();
            let index = st.messages.len();
            let ts = super::format_ts(ts_us);
            let root = thread_ts
                .and_then(super::parse_ts)
                .and_then(|us| st.get(us).map(|(i, _)| i));
            if let Some(root) = root.and_then(|r| st.messages.get_mut(r)) {
                root.replies.push(index);
            }
            st.by_ts.insert(ts_us, index);
            st.messages.push(StoredMessage {
                msg: SlackMessage {
                    channel: channel.to_owned(),
                    ts: ts.clone(),
                    thread_ts: thread_ts.map(str::to_owned),
                    text: text.to_owned(),
                    metadata: None,
                    user: user.to_owned(),
                    username: None,
                    icon_url: None,
                },
                ts_us,
                replies: Vec::new(),
            });
            ts
        };
        let mut event = json!({
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "event_ts": ts, "channel_type": "channel", "team": TEAM_ID,
        });
        if let Some(root) = thread_ts {
            event["thread_ts"] = json!(root);
            event["parent_user_id"] = json!(BOT_USER_ID);
        }
        self.emit(event);
        ts
    }

    /// Wraps `event` in an `event_callback` as Slack does, records it, and queues it for
    /// Socket Mode. → the outer payload (what an Events API push sends).
    pub fn emit(&self, event: Value) -> Value {
        let n = {
            let mut st = lock(&self.shared);
            st.events_made += 1;
            st.events_made
        };
        let outer = json!({
            "token": "fake-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": format!("Ev{n:08}"),
            "event_time": now_secs(),
            "authorizations": [{"enterprise_id": null, "team_id": TEAM_ID,
                "user_id": BOT_USER_ID, "is_bot": true, "is_enterprise_install": false}],
            "is_ext_shared_channel": false,
        });
        lock(&self.shared).events.push(outer.clone());
        self.hub.enqueue(outer.clone());
        outer
    }
}

impl FakeSlack {
    /// The app-level token `apps.connections.open` accepts.
    pub fn app_token(&self) -> String {
        APP_TOKEN.to_owned()
    }

    /// The signing secret Events API pushes are signed with.
    pub fn signing_secret(&self) -> String {
        SIGNING_SECRET.to_owned()
    }

    /// A person (`user`) writes `text` in `channel`, in the thread of `thread_ts` when given:
    /// stored like any message, and sent as a `message` event (Socket Mode: queued for the
    /// app's connections). → the new message's `ts`.
    pub fn person_writes(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        user: &str,
        text: &str,
    ) -> String {
        self.people().person_writes(channel, thread_ts, user, text)
    }

    /// A handle for writing as people from another task.
    pub fn people(&self) -> SlackPeople {
        SlackPeople {
            shared: self.shared.clone(),
            hub: self.hub.clone(),
        }
    }

    /// A person deletes the message `ts` of `channel` (a thread root takes its thread with
    /// it), and Slack sends `message_deleted` with what the message was.
    pub fn person_deletes(&self, channel: &str, ts: &str) {
        let previous = self
            .messages()
            .into_iter()
            .find(|m| m.channel == channel && m.ts == ts);
        self.delete_message(ts);
        let mut event = json!({
            "type": "message", "subtype": "message_deleted", "hidden": true,
            "channel": channel, "ts": ts, "deleted_ts": ts, "event_ts": ts,
            "channel_type": "channel",
        });
        if let Some(m) = previous {
            event["previous_message"] = json!({
                "type": "message", "user": m.user, "text": m.text, "ts": m.ts,
                "thread_ts": m.thread_ts.unwrap_or_else(|| m.ts.clone()),
            });
        }
        self.emit(event);
    }

    /// A person archives `channel`: posting answers `is_archived`, and Slack sends
    /// `channel_archive` (api.slack.com/events/channel_archive).
    pub fn person_archives(&self, channel: &str, user: &str) {
        self.archive_channel(channel);
        self.emit(json!({"type": "channel_archive", "channel": channel, "user": user}));
    }

    /// Wraps `event` in an `event_callback` as Slack does, records it, and queues it for
    /// Socket Mode. → the outer payload (what an Events API push sends).
    pub fn emit(&self, event: Value) -> Value {
        self.people().emit(event)
    }

    /// Every `event_callback` payload made so far, oldest first.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared).events.clone()
    }

    /// The newest `event_callback` payload.
    pub fn last_event(&self) -> Value {
        self.events().pop().expect("no event was made")
    }

    /// POSTs `payload` to the app's Request URL, signed as Slack signs.
    pub async fn push_event(&self, url: &str, payload: &Value) -> Pushed {
        self.push_event_with(url, payload, Push::default()).await
    }

    /// POSTs `payload` to `url` signed as `push` says, with its retry headers.
    pub async fn push_event_with(&self, url: &str, payload: &Value, push: Push) -> Pushed {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let body = payload.to_string();
        let mut request = reqwest::Client::new()
            .post(url)
            .timeout(Duration::from_secs(10))
            .header("Content-Type", "application/json")
            .header("User-Agent", "Slackbot 1.0 (+https://api.slack.com/robots)");
        let signed = |secret: &str, at: u64| (at.to_string(), sign(secret, at, body.as_bytes()));
        let headers = match push.signing {
            Signing::Valid => Some(signed(SIGNING_SECRET, now_secs())),
            Signing::Unsigned => None,
            Signing::WrongSecret => Some(signed("not-the-signing-secret", now_secs())),
            Signing::At(at) => Some(signed(SIGNING_SECRET, at)),
        };
        if let Some((timestamp, signature)) = headers {
            request = request
                .header("X-Slack-Request-Timestamp", timestamp)
                .header("X-Slack-Signature", signature);
        }
        if let Some((num, reason)) = push.retry {
            request = request
                .header("X-Slack-Retry-Num", num.to_string())
                .header("X-Slack-Retry-Reason", reason);
        }
        match request.body(body).send().await {
            Ok(response) => Pushed {
                status: response.status().as_u16(),
                body: response.text().await.unwrap_or_default(),
            },
            Err(_) => Pushed {
                status: 0,
                body: String::new(),
            },
        }
    }

    /// Sends every new event to each open connection instead of one of them.
    pub fn socket_send_to_all(&self, all: bool) {
        lock(&self.hub.state).send_to_all = all;
    }

    /// Sends `disconnect` with `reason` on every open socket (which Slack then closes).
    pub fn socket_disconnect(&self, reason: &str) {
        let mut st = lock(&self.hub.state);
        for connection in st.connections.values_mut() {
            connection.retiring = true;
            let _ = connection.tx.send(Outgoing::Disconnect(reason.to_owned()));
        }
    }

    /// Drops every open socket without a word (a network failure).
    pub fn socket_drop_all(&self) {
        for connection in lock(&self.hub.state).connections.values() {
            let _ = connection.tx.send(Outgoing::Drop);
        }
    }

    /// How many sockets are open now.
    pub fn socket_connections(&self) -> usize {
        lock(&self.hub.state).connections.len()
    }

    /// How many sockets were opened so far.
    pub fn sockets_opened(&self) -> u64 {
        lock(&self.hub.state).opened
    }

    /// Envelope ids acknowledged, in order.
    pub fn acked(&self) -> Vec<String> {
        lock(&self.hub.state).acked.clone()
    }

    /// How many envelopes were sent and are not acknowledged (or not sent yet).
    pub fn unacked(&self) -> usize {
        let st = lock(&self.hub.state);
        st.unacked.len() + st.queue.len()
    }

    /// The `event_id` of every envelope sent so far, redeliveries and copies included.
    pub fn envelopes_sent(&self) -> Vec<String> {
        lock(&self.hub.state)
            .sent
            .iter()
            .map(|(_, event_id)| event_id.clone())
            .collect()
    }

    /// Waits until every envelope made so far was acknowledged, or `timeout` passed; → the
    /// number still due.
    pub async fn wait_all_acked(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let due = self.unacked();
            if due == 0 || tokio::time::Instant::now() >= deadline {
                return due;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` sockets are open, or `timeout` passed; → how many are.
    pub async fn wait_sockets(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open = self.socket_connections();
            if open >= n || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Socket Mode protocol breaks (stray acknowledgements), taken.
    pub(super) fn take_socket_violations(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.hub.state).violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::test_client;

    async fn open(fake: &FakeSlack, token: &str) -> Value {
        test_client()
            .post(format!("{}/apps.connections.open", fake.base_url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn next_json(ws: &mut Socket) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("frame");
            if let Message::Text(text) = frame {
                return serde_json::from_str(text.as_str()).expect("json frame");
            }
        }
    }

    async fn connect(fake: &FakeSlack) -> Socket {
        let answer = open(fake, APP_TOKEN).await;
        assert_eq!(answer["ok"], true, "{answer}");
        let url = answer["url"].as_str().expect("url");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        assert_eq!(next_json(&mut ws).await["type"], "hello");
        ws
    }

    #[tokio::test]
    async fn connections_open_wants_the_app_token_and_its_url_is_single_use() {
        let fake = FakeSlack::start().await;
        assert_eq!(open(&fake, "xapp-wrong").await["error"], "invalid_auth");
        assert_eq!(
            open(&fake, "xoxb-test").await["error"],
            "not_allowed_token_type"
        );
        let url = open(&fake, APP_TOKEN).await["url"]
            .as_str()
            .expect("url")
            .to_owned();
        assert!(url.starts_with("ws://127.0.0.1:") && url.contains("/link/?ticket="));
        let first = tokio_tungstenite::connect_async(url.as_str()).await;
        assert!(first.is_ok());
        let again = tokio_tungstenite::connect_async(url.as_str()).await;
        assert!(again.is_err(), "a ticket is good for one connection");
    }

    #[tokio::test]
    async fn an_unacknowledged_envelope_comes_again_on_the_next_socket() {
        let fake = FakeSlack::start().await;
        let mut ws = connect(&fake).await;
        let ts = fake.person_writes("C1", None, "U1", "hello");
        let envelope = next_json(&mut ws).await;
        assert_eq!(envelope["type"], "events_api");
        assert_eq!(envelope["payload"]["event"]["ts"], ts.as_str());
        assert_eq!(envelope["retry_attempt"], 0);
        drop(ws);

        let mut ws = connect(&fake).await;
        let again = next_json(&mut ws).await;
        assert_eq!(
            again["payload"]["event_id"],
            envelope["payload"]["event_id"]
        );
        assert_eq!(again["retry_attempt"], 1);
        let ack = json!({"envelope_id": again["envelope_id"]}).to_string();
        ws.send(Message::text(ack)).await.expect("ack");
        assert_eq!(fake.wait_all_acked(Duration::from_secs(5)).await, 0);
        assert_eq!(fake.acked().len(), 1);

        fake.socket_disconnect("refresh_requested");
        let disconnect = next_json(&mut ws).await;
        assert_eq!(
            (&disconnect["type"], &disconnect["reason"]),
            (&json!("disconnect"), &json!("refresh_requested"))
        );
    }

    #[test]
    fn signatures_are_slacks() {
        // The worked example of api.slack.com/authentication/verifying-requests-from-slack.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign(SIGNING_SECRET, 1_531_420_618, body.as_bytes()),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
