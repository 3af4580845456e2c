//! Loopback fake of a Matrix homeserver's client-server API (v3): bearer auth,
//! `whoami`, event send with transaction-id idempotency, `m.thread` replies,
//! room history via `/messages`, single events, the bot's membership, and the
//! spec's `errcode` error shapes — answering as Synapse does where the spec
//! leaves it open (cited per case; `tests/tests/matrix.rs` runs the same cases
//! against a real Synapse and checks both give the same outcomes).
//!
//! Every send is validated against the vendored spec
//! (`tests/specs/matrix-client-server-room_send.yaml`: path parameters, body;
//! the threading and mentions modules for `m.relates_to` and `m.mentions`). A
//! request the spec does not allow is answered as a homeserver would (400) and
//! recorded; dropping a fake that recorded one panics, so the test that sent
//! it fails (tests of the fake itself take them with `take_spec_violations`).
//!
//! Every syntactically valid room id (`!local:server`) is implicitly a room the
//! bot has joined, so tests need no set-up; `leave_room` (a kick) and `redact`
//! produce what a deliverer must recognise.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        ConnectInfo, Path, Query, State,
    },
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

use super::{
    auth_token, faulted, handle_methods, lock, reply, reply_either, retry_after_header_secs, serve,
    unix_ms, wait_for_len, Common, ConnCtl, Platform, Reply, Server, Tokens,
};

/// The one user every accepted token authenticates as.
const USER_ID: &str = "@threadline:fake";
const DEVICE_ID: &str = "TLDEVICE";
const DEFAULT_TOKEN: &str = "syt_test_token";
/// The spec's limit is on the whole event (65536 bytes); checking the content
/// alone is close enough and keeps the rule easy to hit from a test.
const MAX_CONTENT_BYTES: usize = 65_536;
/// The spec's default page size for `/messages`.
const DEFAULT_MESSAGES_LIMIT: usize = 10;
/// Servers cap `limit`; a client asking for more just gets fewer.
const MAX_MESSAGES_LIMIT: usize = 1000;
const THREAD_REL_TYPE: &str = "m.thread";
/// Room-version-4+ event ids are `$` plus 43 URL-safe base64 characters.
const EVENT_ID_CHARS: usize = 43;
const EVENT_ID_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// An event as the fake stored it.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixEvent {
    /// The room it was sent to.
    pub room_id: String,
    /// The `$…` id the fake assigned.
    pub event_id: String,
    /// The client's transaction id from the `PUT …/send/{type}/{txnId}` path.
    pub txn_id: String,
    /// The event type, e.g. `m.room.message`.
    pub event_type: String,
    /// The content exactly as sent, even after `redact` (tests inspect what
    /// was delivered; only `/messages` shows the redacted form).
    pub content: Value,
    /// The root event id when the content carries an `m.thread` relation.
    pub thread_root: Option<String>,
}

/// Handle to a running fake homeserver; dropping it shuts the server down.
pub struct FakeMatrix {
    server: Server,
    shared: Shared,
}

type Shared = super::Shared<MatrixState>;

impl FakeMatrix {
    /// Starts the fake on a free loopback port. Accepted token: `syt_test_token`.
    pub async fn start() -> FakeMatrix {
        let routes = Router::new()
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .route(
                "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}",
                put(send_event),
            )
            .route(
                "/_matrix/client/v3/rooms/{room_id}/messages",
                get(room_messages),
            )
            .route(
                "/_matrix/client/v3/rooms/{room_id}/event/{event_id}",
                get(room_event),
            )
            .route(
                "/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{user_id}",
                get(room_member),
            )
            .fallback(unrecognized_route)
            .method_not_allowed_fallback(method_not_allowed);
        let (server, shared) = serve(MatrixState::new(), routes).await;
        FakeMatrix { server, shared }
    }

    /// `http://127.0.0.1:PORT`, the homeserver URL (clients append `/_matrix/...`).
    pub fn base_url(&self) -> String {
        self.server.url("")
    }

    /// All stored events, in creation order.
    pub fn events(&self) -> Vec<MatrixEvent> {
        let st = lock(&self.shared);
        st.events.iter().map(|e| e.event.clone()).collect()
    }

    /// Stored events of one room, in creation order: those in the thread of
    /// `thread_root`, or with `None` those outside any thread.
    pub fn events_in(&self, room_id: &str, thread_root: Option<&str>) -> Vec<MatrixEvent> {
        let st = lock(&self.shared);
        st.events
            .iter()
            .filter(|e| e.event.room_id == room_id && e.event.thread_root.as_deref() == thread_root)
            .map(|e| e.event.clone())
            .collect()
    }

    /// How many sends were answered from the transaction cache (a retried
    /// txn id) instead of creating an event.
    pub fn txn_repeats(&self) -> usize {
        lock(&self.shared).txn_repeats
    }

    /// Kicks the bot from a room: sends there answer 403 M_FORBIDDEN, its
    /// membership reads `leave`; what it saw before stays readable (Synapse).
    pub fn leave_room(&self, room_id: &str) {
        lock(&self.shared).left.insert(room_id.to_owned());
    }

    /// Redacts an event: it is read back with empty content and
    /// `unsigned.redacted_because`; thread replies under it are still accepted,
    /// as Synapse accepts them (the spec only requires refusing roots that
    /// themselves have a relation: threading module, "Server behaviour").
    pub fn redact(&self, event_id: &str) {
        lock(&self.shared).redacted.insert(event_id.to_owned());
    }

    /// A per-user message limit like Synapse's `rc_message` (all rooms together):
    /// `burst` sends at once, then `per_second`; beyond it 429 M_LIMIT_EXCEEDED
    /// with `retry_after_ms` (matrix-errors-rate_limited.yaml).
    pub fn set_message_limit(&self, per_second: f64, burst: u32) {
        lock(&self.shared).limit = Some(Bucket {
            per_second,
            burst: f64::from(burst),
            level: 0.0,
            at: std::time::Instant::now(),
        });
    }

    /// Requests the vendored spec does not allow, as recorded so far; taking
    /// them clears the record (dropping the fake with any left panics).
    pub fn take_spec_violations(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.shared).violations)
    }

    /// Panics with every recorded spec violation.
    pub fn assert_no_spec_violations(&self) {
        let violations = self.take_spec_violations();
        assert!(
            violations.is_empty(),
            "requests to the Matrix fake broke the spec:\n{}",
            violations.join("\n")
        );
    }

    /// The user id every accepted token authenticates as.
    pub fn user_id(&self) -> String {
        USER_ID.to_owned()
    }

    /// Waits until at least `n` events are stored or `timeout` passes, and
    /// returns whatever is stored then (the caller asserts on the count).
    pub async fn wait_for_events(&self, n: usize, timeout: Duration) -> Vec<MatrixEvent> {
        wait_for_len(n, timeout, || self.events()).await
    }
}

handle_methods!(FakeMatrix, faults: "event send", tokens);

impl Drop for FakeMatrix {
    /// A spec violation nobody took fails the test that caused it (unless it is
    /// failing already: a panic while panicking would abort the report).
    fn drop(&mut self) {
        let violations = self.take_spec_violations();
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "requests to the Matrix fake broke the spec:\n{}",
                violations.join("\n")
            );
        }
    }
}

/// Synapse's `Ratelimiter`: a leaky bucket per user, draining at `per_second`.
struct Bucket {
    per_second: f64,
    burst: f64,
    level: f64,
    at: std::time::Instant,
}

impl Bucket {
    /// Takes one action, or says how long until one is allowed.
    fn take(&mut self) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let drained = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.level = (self.level - drained).max(0.0);
        self.at = now;
        if self.level + 1.0 > self.burst {
            let wait = (self.level + 1.0 - self.burst) / self.per_second;
            return Err((wait * 1000.0).ceil() as u64);
        }
        self.level += 1.0;
        Ok(())
    }
}

/// The send endpoint of the vendored spec: validators for its path parameters
/// and its request body, read from the OpenAPI file itself.
struct SendSpec {
    params: Vec<(String, jsonschema::Validator)>,
    body: jsonschema::Validator,
}

const SEND_PATH: &str = "/rooms/{roomId}/send/{eventType}/{txnId}";

fn send_spec() -> &'static SendSpec {
    static SPEC: OnceLock<SendSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/specs/matrix-client-server-room_send.yaml"
        );
        let text = std::fs::read_to_string(path).expect("vendored Matrix spec");
        let doc: Value = serde_norway::from_str(&text).expect("room_send.yaml is YAML");
        let put = &doc["paths"][SEND_PATH]["put"];
        let compile = |schema: &Value| {
            jsonschema::options()
                .build(schema)
                .unwrap_or_else(|e| panic!("room_send.yaml schema: {e}"))
        };
        let params = put["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "path" && p["required"] == true)
            .map(|p| {
                let name = p["name"].as_str().expect("name").to_owned();
                (name, compile(&p["schema"]))
            })
            .collect();
        assert_eq!(
            put["requestBody"]["required"], true,
            "room_send.yaml: body required"
        );
        let body = compile(&put["requestBody"]["content"]["application/json"]["schema"]);
        SendSpec { params, body }
    })
}

/// What the spec says about a send: the path parameters and body of
/// room_send.yaml; for `m.room.message`, a string `msgtype` and `body` (the
/// m.room.message event, client-server API); `m.relates_to` of a thread as the
/// threading module defines it; `m.mentions` as the mentions module defines it.
fn send_violations(room_id: &str, event_type: &str, txn_id: &str, content: &Value) -> Vec<String> {
    let spec = send_spec();
    let mut found = Vec::new();
    for (name, validator) in &spec.params {
        let value = match name.as_str() {
            "roomId" => room_id,
            "eventType" => event_type,
            "txnId" => txn_id,
            other => {
                found.push(format!(
                    "room_send.yaml names a path parameter the fake does not know: {other}"
                ));
                continue;
            }
        };
        if value.is_empty() {
            found.push(format!("path parameter {name} is required"));
        }
        for error in validator.iter_errors(&json!(value)) {
            found.push(format!("path parameter {name}={value:?}: {error}"));
        }
    }
    for error in spec.body.iter_errors(content) {
        found.push(format!("request body: {error}"));
    }
    if event_type == "m.room.message" {
        for field in ["msgtype", "body"] {
            if !content.get(field).is_some_and(Value::is_string) {
                found.push(format!("m.room.message content needs a string '{field}'"));
            }
        }
    }
    let rel = &content["m.relates_to"];
    if !rel.is_null() && !rel.is_object() {
        found.push("'m.relates_to' must be an object".into());
    }
    if rel["rel_type"] == THREAD_REL_TYPE {
        if !rel["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('$'))
        {
            found.push(format!(
                "m.thread relation needs the root's event_id: {rel}"
            ));
        }
        if !rel["is_falling_back"].is_null() && !rel["is_falling_back"].is_boolean() {
            found.push("'is_falling_back' must be a boolean".into());
        }
        let reply = &rel["m.in_reply_to"];
        if !reply.is_null() && !reply["event_id"].is_string() {
            found.push("'m.in_reply_to' needs an event_id".into());
        }
    }
    let mentions = &content["m.mentions"];
    if !mentions.is_null() {
        let users_ok = mentions["user_ids"].is_null()
            || mentions["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().all(Value::is_string));
        if !mentions.is_object()
            || !users_ok
            || !(mentions["room"].is_null() || mentions["room"].is_boolean())
        {
            found.push(format!("'m.mentions' is not a mentions object: {mentions}"));
        }
    }
    found
}

struct StoredEvent {
    event: MatrixEvent,
    /// The sending token: `unsigned.transaction_id` is only shown to it, as a
    /// real server shows it only to the sending device.
    token: String,
    origin_server_ts: u64,
}

/// The spec scopes a transaction id to the device (here: the access token)
/// *and* the endpoint, so the room and event type are part of the key — the
/// same txn id in another room is a new event on a real server, too.
#[derive(Hash, PartialEq, Eq)]
struct TxnKey {
    token: String,
    room_id: String,
    event_type: String,
    txn_id: String,
}

struct MatrixState {
    common: Common,
    tokens: Tokens,
    txn_repeats: usize,
    events: Vec<StoredEvent>,
    /// Event id → index in `events`; thread roots are looked up by id.
    event_index: HashMap<String, usize>,
    /// Successful sends only: a failed send may be retried with its txn id.
    txns: HashMap<TxnKey, String>,
    left: HashSet<String>,
    redacted: HashSet<String>,
    last_ts: u64,
    limit: Option<Bucket>,
    /// Requests the vendored spec does not allow.
    violations: Vec<String>,
}

/// Which way `/messages` pages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Backward,
    Forward,
}

impl MatrixState {
    fn new() -> MatrixState {
        MatrixState {
            common: Common::default(),
            tokens: Tokens::new(DEFAULT_TOKEN),
            txn_repeats: 0,
            events: Vec::new(),
            event_index: HashMap::new(),
            txns: HashMap::new(),
            left: HashSet::new(),
            redacted: HashSet::new(),
            last_ts: 0,
            limit: None,
            violations: Vec::new(),
        }
    }

    /// Random, opaque ids like a real server's: clients must not order or
    /// parse them, and a fake with counters would let them get away with it.
    fn new_event_id(&self) -> String {
        use rand::Rng;
        let mut rng = rand::rng();
        loop {
            let id: String = std::iter::once('$')
                .chain((0..EVENT_ID_CHARS).map(|_| {
                    let i = rng.random_range(0..EVENT_ID_ALPHABET.len());
                    char::from(EVENT_ID_ALPHABET[i])
                }))
                .collect();
            if !self.event_index.contains_key(&id) {
                return id;
            }
        }
    }

    /// Wall-clock milliseconds, never going backwards between events.
    fn next_ts(&mut self) -> u64 {
        self.last_ts = unix_ms(SystemTime::now()).max(self.last_ts);
        self.last_ts
    }

    fn event(&self, event_id: &str) -> Option<&StoredEvent> {
        self.event_index
            .get(event_id)
            .and_then(|&i| self.events.get(i))
    }

    fn check_joined(&self, room_id: &str) -> Result<(), Reply> {
        check_room_id(room_id)?;
        if self.left.contains(room_id) {
            return Err(matrix_error(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                &format!("User {USER_ID} not in room {room_id}"),
            ));
        }
        Ok(())
    }

    fn send_event(
        &mut self,
        token: &str,
        room_id: &str,
        event_type: &str,
        txn_id: &str,
        body: &[u8],
    ) -> Result<Reply, Reply> {
        let key = TxnKey {
            token: token.to_owned(),
            room_id: room_id.to_owned(),
            event_type: event_type.to_owned(),
            txn_id: txn_id.to_owned(),
        };
        // A real server answers a repeated txn from its cache before looking
        // at anything else, even if the room was left since.
        if let Some(event_id) = self.txns.get(&key) {
            let body = json!({ "event_id": event_id });
            self.txn_repeats += 1;
            return Ok((StatusCode::OK, body));
        }
        let parsed = parse_content(body);
        let violations = match &parsed {
            Ok(content) => {
                send_violations(room_id, event_type, txn_id, &Value::Object(content.clone()))
            }
            Err(_) => vec!["request body is not a JSON object".to_owned()],
        };
        if let Some(first) = violations.first() {
            let answer = matrix_error(StatusCode::BAD_REQUEST, "M_BAD_JSON", first);
            self.violations.extend(
                violations
                    .iter()
                    .map(|v| format!("PUT /rooms/{room_id}/send/{event_type}/{txn_id}: {v}")),
            );
            check_room_id(room_id)?;
            return Err(parsed.err().unwrap_or(answer));
        }
        self.check_joined(room_id)?;
        if body.len() > MAX_CONTENT_BYTES {
            return Err(matrix_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                "event too large",
            ));
        }
        let content = parsed?;
        let thread_root = self.thread_root(room_id, &content)?;
        if let Some(limit) = &mut self.limit {
            if let Err(retry_after_ms) = limit.take() {
                return Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({
                        "errcode": "M_LIMIT_EXCEEDED",
                        "error": "Too Many Requests",
                        "retry_after_ms": retry_after_ms,
                    }),
                ));
            }
        }

        let event_id = self.new_event_id();
        let origin_server_ts = self.next_ts();
        let stored = StoredEvent {
            event: MatrixEvent {
                room_id: room_id.to_owned(),
                event_id: event_id.clone(),
                txn_id: txn_id.to_owned(),
                event_type: event_type.to_owned(),
                content: Value::Object(content),
                thread_root,
            },
            token: token.to_owned(),
            origin_server_ts,
        };
        self.event_index.insert(event_id.clone(), self.events.len());
        self.events.push(stored);
        self.txns.insert(key, event_id.clone());
        Ok((StatusCode::OK, json!({ "event_id": event_id })))
    }

    /// The thread root named by an `m.thread` relation, which must be an event
    /// of this room. Synapse refuses an unknown one with 400 M_UNKNOWN "Can't
    /// send relation to unknown event" and accepts a redacted one.
    fn thread_root(
        &self,
        room_id: &str,
        content: &Map<String, Value>,
    ) -> Result<Option<String>, Reply> {
        let rel = match content.get("m.relates_to") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(rel)) => rel,
            Some(_) => {
                return Err(matrix_error(
                    StatusCode::BAD_REQUEST,
                    "M_BAD_JSON",
                    "'m.relates_to' must be an object",
                ))
            }
        };
        // Replies, edits and reactions are stored as plain events.
        if rel.get("rel_type").and_then(Value::as_str) != Some(THREAD_REL_TYPE) {
            return Ok(None);
        }
        let Some(root) = rel.get("event_id").and_then(Value::as_str) else {
            return Err(matrix_error(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                "'m.relates_to.event_id' must be a string",
            ));
        };
        if self.event(root).is_none_or(|e| e.event.room_id != room_id) {
            return Err(unknown_relation_target());
        }
        Ok(Some(root.to_owned()))
    }

    /// `/messages` with stream tokens `t<N>` = "after the first N events of
    /// the server". Like Synapse, `end` is left out only when the page is empty.
    fn messages(
        &self,
        token: &str,
        room_id: &str,
        query: &HashMap<String, String>,
    ) -> Result<Reply, Reply> {
        // A kicked bot still reads what it saw (Synapse), so only the id is checked.
        check_room_id(room_id)?;
        let dir = match query.get("dir").map(String::as_str) {
            Some("b") => Dir::Backward,
            Some("f") => Dir::Forward,
            Some(other) => {
                return Err(invalid_param(&format!(
                    "Query parameter 'dir' must be 'b' or 'f', not '{other}'"
                )))
            }
            // Required since spec v1.3; a lenient default would hide the bug.
            None => {
                return Err(matrix_error(
                    StatusCode::BAD_REQUEST,
                    "M_MISSING_PARAM",
                    "Missing string query parameter 'dir'",
                ))
            }
        };
        let limit = match query.get("limit") {
            None => DEFAULT_MESSAGES_LIMIT,
            Some(raw) => raw
                .parse::<usize>()
                .map_err(|_| {
                    invalid_param(&format!(
                        "Query parameter 'limit' is not an integer: '{raw}'"
                    ))
                })?
                .min(MAX_MESSAGES_LIMIT),
        };
        let total = self.events.len();
        let from = match query.get("from") {
            Some(raw) => parse_stream_token(raw)?.min(total),
            None if dir == Dir::Backward => total,
            None => 0,
        };
        let to = query
            .get("to")
            .map(|raw| parse_stream_token(raw))
            .transpose()?;

        // Positions are 1-based: event i of `events` sits at stream position i + 1.
        let in_room = |(_, e): &(usize, &StoredEvent)| e.event.room_id == room_id;
        let page: Vec<(usize, &StoredEvent)> = match dir {
            Dir::Backward => self
                .events
                .iter()
                .enumerate()
                .take(from)
                .skip(to.unwrap_or(0))
                .filter(in_room)
                .rev()
                .take(limit)
                .collect(),
            Dir::Forward => self
                .events
                .iter()
                .enumerate()
                .take(to.unwrap_or(total))
                .skip(from)
                .filter(in_room)
                .take(limit)
                .collect(),
        };
        let mut body = json!({
            "chunk": page.iter().map(|(_, e)| self.event_json(e, token)).collect::<Vec<_>>(),
            "start": format!("t{from}"),
        });
        let end = match dir {
            // Before the oldest event returned, so the next page continues there.
            Dir::Backward => page.last().map(|(i, _)| *i),
            // After the newest event returned.
            Dir::Forward => page.last().map(|(i, _)| i + 1),
        };
        if let (Some(end), Some(obj)) = (end, body.as_object_mut()) {
            obj.insert("end".into(), Value::String(format!("t{end}")));
        }
        Ok((StatusCode::OK, body))
    }

    fn event_json(&self, e: &StoredEvent, token: &str) -> Value {
        let now = unix_ms(SystemTime::now());
        let mut unsigned = Map::new();
        unsigned.insert("age".into(), json!(now.saturating_sub(e.origin_server_ts)));
        // Shown only to the sender, which lets a client that lost a send's
        // answer find its own event in the history.
        if e.token == token {
            unsigned.insert("transaction_id".into(), json!(e.event.txn_id));
        }
        let content = if self.redacted.contains(&e.event.event_id) {
            unsigned.insert(
                "redacted_because".into(),
                json!({
                    "type": "m.room.redaction",
                    "sender": USER_ID,
                    "redacts": e.event.event_id,
                    "content": {},
                }),
            );
            json!({})
        } else {
            e.event.content.clone()
        };
        json!({
            "event_id": e.event.event_id,
            "type": e.event.event_type,
            "sender": USER_ID,
            "origin_server_ts": e.origin_server_ts,
            "content": content,
            "room_id": e.event.room_id,
            "unsigned": unsigned,
        })
    }
}

/// Checks `Authorization: Bearer <token>` against the accepted set and records
/// the token, so token-rotation tests can see which one each request used.
/// Returns the token: transaction ids are scoped to it.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Reply> {
    match auth_token(headers, "Bearer ") {
        Some(t) if lock(shared).tokens.check(t) => Ok(t.to_owned()),
        Some(_) => Err(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown access token",
        )),
        None => Err(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )),
    }
}

async fn whoami(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    reply((
        StatusCode::OK,
        json!({ "user_id": USER_ID, "device_id": DEVICE_ID }),
    ))
}

/// `Path` percent-decodes each segment, so `%21abc%3Afake` arrives as `!abc:fake`.
async fn send_event(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match authorize(&shared, &headers) {
        Ok(t) => t,
        Err(r) => return reply(r),
    };
    let Ok(Path((room_id, event_type, txn_id))) = path else {
        return unrecognized().await;
    };
    faulted(&shared, &conn, |st| {
        reply_either(st.send_event(&token, &room_id, &event_type, &txn_id, &body))
    })
    .await
}

async fn room_messages(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let token = match authorize(&shared, &headers) {
        Ok(t) => t,
        Err(r) => return reply(r),
    };
    let Ok(Path(room_id)) = path else {
        return unrecognized().await;
    };
    let Ok(Query(query)) = query else {
        return reply(invalid_param("Malformed query string"));
    };
    let mut st = lock(&shared);
    let outcome = st.messages(&token, &room_id, &query);
    // A parameter the spec requires or does not allow is the client's bug: recorded.
    if let Err((StatusCode::BAD_REQUEST, body)) = &outcome {
        st.violations
            .push(format!("GET /rooms/{room_id}/messages: {}", body["error"]));
    }
    reply_either(outcome)
}

/// `GET /rooms/{roomId}/event/{eventId}`: the event as `/messages` shows it,
/// or 404 M_NOT_FOUND "Event not found." (Synapse's words).
async fn room_event(
    State(shared): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let token = match authorize(&shared, &headers) {
        Ok(t) => t,
        Err(r) => return reply(r),
    };
    let Ok(Path((room_id, event_id))) = path else {
        return unrecognized().await;
    };
    let st = lock(&shared);
    if let Err(r) = check_room_id(&room_id) {
        return reply(r);
    }
    match st.event(&event_id).filter(|e| e.event.room_id == room_id) {
        Some(e) => reply((StatusCode::OK, st.event_json(e, &token))),
        None => reply(matrix_error(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            "Event not found.",
        )),
    }
}

/// `GET /rooms/{roomId}/state/m.room.member/{userId}`: the bot's membership,
/// `join` or (after `leave_room`) `leave`, as Synapse shows it to a kicked user.
async fn room_member(
    State(shared): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let Ok(Path((room_id, user_id))) = path else {
        return unrecognized().await;
    };
    if let Err(r) = check_room_id(&room_id) {
        return reply(r);
    }
    if user_id != USER_ID {
        return reply(matrix_error(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            "Event not found.",
        ));
    }
    let membership = if lock(&shared).left.contains(&room_id) {
        "leave"
    } else {
        "join"
    };
    reply((StatusCode::OK, json!({ "membership": membership })))
}

fn unknown_relation_target() -> Reply {
    matrix_error(
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
        "Can't send relation to unknown event",
    )
}

/// A route the fake does not serve: the adapter called something outside the
/// API it is tested against — recorded, so the test sees it.
async fn unrecognized_route(
    State(shared): State<Shared>,
    request: axum::extract::Request,
) -> Response {
    lock(&shared).violations.push(format!(
        "{} {}: a route the Matrix fake does not serve",
        request.method(),
        request.uri().path()
    ));
    unrecognized().await
}

async fn unrecognized() -> Response {
    reply(matrix_error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "Unrecognized request",
    ))
}

async fn method_not_allowed() -> Response {
    reply(matrix_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
        "Unrecognized request",
    ))
}

impl Platform for MatrixState {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    /// The spec's 429: `retry_after_ms` in the body, plus the whole-second
    /// `Retry-After` header that newer servers send as well.
    fn rate_limited(retry_after_ms: u64) -> Response {
        let body = json!({
            "errcode": "M_LIMIT_EXCEEDED",
            "error": "Too Many Requests",
            "retry_after_ms": retry_after_ms,
        });
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after_header_secs(retry_after_ms).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }

    fn server_error() -> Response {
        reply(matrix_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        ))
    }
}

fn matrix_error(status: StatusCode, errcode: &str, error: &str) -> Reply {
    (status, json!({ "errcode": errcode, "error": error }))
}

fn invalid_param(error: &str) -> Reply {
    matrix_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", error)
}

/// `!localpart:server`. A client that forgets to decode, or double-encodes,
/// the id (`%21abc%3Afake` arriving literally) fails here, as on a real server.
fn check_room_id(room_id: &str) -> Result<(), Reply> {
    let valid = room_id
        .strip_prefix('!')
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(local, server)| !local.is_empty() && !server.is_empty());
    if valid {
        Ok(())
    } else {
        Err(invalid_param(&format!(
            "'{room_id}' is not a valid room ID"
        )))
    }
}

fn parse_content(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(matrix_error(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "Content must be a JSON object.",
        )),
        Err(_) => Err(matrix_error(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "Content not JSON.",
        )),
    }
}

fn parse_stream_token(raw: &str) -> Result<usize, Reply> {
    raw.strip_prefix('t')
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| invalid_param(&format!("Unknown pagination token '{raw}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "syt_test_token";
    const ROOM: &str = "!abc:fake";

    use crate::fakes::{server_errors_only, test_client as client, Fault, FaultCounts};

    /// Percent-encodes a room id the way a careful client does.
    fn enc(room_id: &str) -> String {
        room_id
            .replace('%', "%25")
            .replace('!', "%21")
            .replace(':', "%3A")
    }

    fn send_url(fake: &FakeMatrix, room: &str, txn: &str) -> String {
        format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            fake.base_url(),
            enc(room)
        )
    }

    fn text(body: &str) -> Value {
        json!({ "msgtype": "m.text", "body": body })
    }

    fn thread_reply(body: &str, root: &str) -> Value {
        json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": { "rel_type": "m.thread", "event_id": root },
        })
    }

    async fn send_as(
        c: &reqwest::Client,
        fake: &FakeMatrix,
        token: &str,
        room: &str,
        txn: &str,
        content: Value,
    ) -> (u16, Value) {
        let resp = c
            .put(send_url(fake, room, txn))
            .bearer_auth(token)
            .json(&content)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    async fn send(
        c: &reqwest::Client,
        fake: &FakeMatrix,
        room: &str,
        txn: &str,
        content: Value,
    ) -> (u16, Value) {
        send_as(c, fake, TOKEN, room, txn, content).await
    }

    async fn event_id_of(c: &reqwest::Client, fake: &FakeMatrix, room: &str, txn: &str) -> String {
        let (s, b) = send(c, fake, room, txn, text(txn)).await;
        assert_eq!(s, 200, "{b}");
        b["event_id"].as_str().expect("event_id").to_owned()
    }

    async fn messages(
        c: &reqwest::Client,
        fake: &FakeMatrix,
        room: &str,
        query: &str,
    ) -> (u16, Value) {
        let resp = c
            .get(format!(
                "{}/_matrix/client/v3/rooms/{}/messages?{query}",
                fake.base_url(),
                enc(room)
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    #[tokio::test]
    async fn whoami_reports_the_bot() {
        let fake = FakeMatrix::start().await;
        let body: Value = client()
            .get(format!(
                "{}/_matrix/client/v3/account/whoami",
                fake.base_url()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(
            body,
            json!({ "user_id": "@threadline:fake", "device_id": "TLDEVICE" })
        );
        assert_eq!(fake.user_id(), "@threadline:fake");
        assert_eq!(fake.tokens_seen(), vec![TOKEN.to_owned()]);
    }

    #[tokio::test]
    async fn send_into_room() {
        let fake = FakeMatrix::start().await;
        let c = client();
        let (s, b) = send(&c, &fake, ROOM, "txn-1", text("hello")).await;
        assert_eq!(s, 200);
        let event_id = b["event_id"].as_str().expect("event_id");
        assert!(
            event_id.starts_with('$') && event_id.len() == 44,
            "{event_id}"
        );
        assert_eq!(
            fake.events(),
            vec![MatrixEvent {
                room_id: ROOM.to_owned(),
                event_id: event_id.to_owned(),
                txn_id: "txn-1".to_owned(),
                event_type: "m.room.message".to_owned(),
                content: text("hello"),
                thread_root: None,
            }]
        );
        assert_eq!(fake.events_in(ROOM, None).len(), 1);
        assert!(fake.events_in("!other:fake", None).is_empty());

        // An id that was not decoded (or was double-encoded) is no room id.
        let (s, b) = send(&c, &fake, "%21abc%3Afake", "txn-2", text("x")).await;
        assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
        assert_eq!(fake.events().len(), 1);
        let violations = fake.take_spec_violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("roomId"), "{violations:?}");
    }

    #[tokio::test]
    async fn sends_are_checked_against_the_vendored_spec() {
        let fake = FakeMatrix::start().await;
        let c = client();
        // What the adapter sends is within the spec.
        let root = event_id_of(&c, &fake, ROOM, "root").await;
        let ok = json!({
            "msgtype": "m.text", "body": "x", "m.mentions": {},
            "m.relates_to": {"rel_type": "m.thread", "event_id": root,
                "is_falling_back": true, "m.in_reply_to": {"event_id": root}},
        });
        let (s, _) = send(&c, &fake, ROOM, "ok", ok).await;
        assert_eq!(s, 200);
        fake.assert_no_spec_violations();
        // Each of these is not.
        for (txn, content) in [
            (
                "v1",
                json!({"msgtype": "m.text", "body": "x", "m.relates_to": {"rel_type": "m.thread"}}),
            ),
            (
                "v2",
                json!({"msgtype": "m.text", "body": "x", "m.mentions": {"room": "yes"}}),
            ),
            (
                "v3",
                json!({"msgtype": "m.text", "body": "x", "m.mentions": []}),
            ),
            ("v4", json!(["not", "an", "object"])),
        ] {
            let (s, b) = send(&c, &fake, ROOM, txn, content).await;
            assert_eq!(s, 400, "{txn}: {b}");
            let violations = fake.take_spec_violations();
            assert_eq!(violations.len(), 1, "{txn}: {violations:?}");
        }
        assert_eq!(fake.events().len(), 2);
    }

    #[tokio::test]
    async fn message_content_validation() {
        let fake = FakeMatrix::start().await;
        let c = client();
        let (s, b) = send(&c, &fake, ROOM, "t1", json!({ "body": "no type" })).await;
        assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
        let (s, b) = send(&c, &fake, ROOM, "t2", json!({ "msgtype": "m.text" })).await;
        assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
        let resp = c
            .put(send_url(&fake, ROOM, "t3"))
            .bearer_auth(TOKEN)
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 400);
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b["errcode"], "M_NOT_JSON");
        assert!(fake.events().is_empty());
        assert_eq!(fake.take_spec_violations().len(), 3);

        // A failed send is not cached: the same txn id may be retried fixed.
        let (s, _) = send(&c, &fake, ROOM, "t1", text("fixed")).await;
        assert_eq!(s, 200);
        assert_eq!(fake.txn_repeats(), 0);
    }

    #[tokio::test]
    async fn txn_id_is_idempotent_per_token() {
        let fake = FakeMatrix::start().await;
        let c = client();
        let (_, first) = send(&c, &fake, ROOM, "evt-1", text("once")).await;
        let (s, second) = send(&c, &fake, ROOM, "evt-1", text("once")).await;
        assert_eq!(s, 200);
        assert_eq!(first["event_id"], second["event_id"]);
        assert_eq!(fake.events().len(), 1);
        assert_eq!(fake.txn_repeats(), 1);
        assert_eq!(fake.request_count(), 2);

        // Another token is another device: the same txn id is a new event.
        fake.set_tokens(&[TOKEN, "syt_other"]);
        let (s, third) = send_as(&c, &fake, "syt_other", ROOM, "evt-1", text("once")).await;
        assert_eq!(s, 200);
        assert_ne!(third["event_id"], first["event_id"]);
        assert_eq!(fake.events().len(), 2);

        // The txn id is scoped to the endpoint too, so another room is new as well.
        let (_, fourth) = send(&c, &fake, "!other:fake", "evt-1", text("once")).await;
        assert_ne!(fourth["event_id"], first["event_id"]);
        assert_eq!(fake.events().len(), 3);
        assert_eq!(fake.txn_repeats(), 1);
    }

    #[tokio::test]
    async fn thread_reply_is_filed_under_its_root() {
        let fake = FakeMatrix::start().await;
        let c = client();
        let root = event_id_of(&c, &fake, ROOM, "root").await;
        let (s, b) = send(&c, &fake, ROOM, "r1", thread_reply("in thread", &root)).await;
        assert_eq!(s, 200, "{b}");
        let in_thread = fake.events_in(ROOM, Some(&root));
        assert_eq!(in_thread.len(), 1);
        assert_eq!(in_thread[0].event_id, b["event_id"].as_str().expect("id"));
        assert_eq!(in_thread[0].thread_root.as_deref(), Some(root.as_str()));
        let top_level = fake.events_in(ROOM, None);
        assert_eq!(top_level.len(), 1);
        assert_eq!(top_level[0].event_id, root);

        // A plain reply (no m.thread) is not in any thread.
        let reply_content = json!({
            "msgtype": "m.text",
            "body": "reply",
            "m.relates_to": { "m.in_reply_to": { "event_id": root } },
        });
        let (s, _) = send(&c, &fake, ROOM, "r2", reply_content).await;
        assert_eq!(s, 200);
        assert_eq!(fake.events_in(ROOM, None).len(), 2);
    }

    #[tokio::test]
    async fn thread_root_must_exist_in_room_and_may_be_redacted() {
        let fake = FakeMatrix::start().await;
        let c = client();
        let unknown =
            json!({ "errcode": "M_UNKNOWN", "error": "Can't send relation to unknown event" });
        let (s, b) = send(&c, &fake, ROOM, "r1", thread_reply("x", "$nope")).await;
        assert_eq!((s, &b), (400, &unknown));

        let elsewhere = event_id_of(&c, &fake, "!other:fake", "root-other").await;
        let (s, b) = send(&c, &fake, ROOM, "r2", thread_reply("x", &elsewhere)).await;
        assert_eq!((s, &b), (400, &unknown));

        let root = event_id_of(&c, &fake, ROOM, "root").await;
        let (s, _) = send(&c, &fake, ROOM, "r3", thread_reply("x", &root)).await;
        assert_eq!(s, 200);
        // Synapse files replies under a redacted root all the same.
        fake.redact(&root);
        let (s, _) = send(&c, &fake, ROOM, "r4", thread_reply("x", &root)).await;
        assert_eq!(s, 200);
        assert_eq!(fake.events_in(ROOM, Some(&root)).len(), 2);
        // The root read back says it was redacted.
        let resp = c
            .get(format!(
                "{}/_matrix/client/v3/rooms/{}/event/{}",
                fake.base_url(),
                enc(ROOM),
                root.replace('$', "%24")
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        let event: Value = resp.json().await.expect("json");
        assert!(event["unsigned"]["redacted_because"].is_object(), "{event}");
        assert_eq!(event["content"], json!({}));
    }

    #[tokio::test]
    async fn left_room_is_forbidden() {
        let fake = FakeMatrix::start().await;
        let c = client();
        fake.leave_room("!x:fake");
        let (s, b) = send(&c, &fake, "!x:fake", "t1", text("hi")).await;
        assert_eq!(s, 403);
        assert_eq!(
            b,
            json!({ "errcode": "M_FORBIDDEN", "error": "User @threadline:fake not in room !x:fake" })
        );
        // What it saw before stays readable, and its membership says why.
        let (s, _) = messages(&c, &fake, "!x:fake", "dir=b").await;
        assert_eq!(s, 200);
        let member: Value = c
            .get(format!(
                "{}/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                fake.base_url(),
                enc("!x:fake"),
                "@threadline:fake".replace('@', "%40").replace(':', "%3A")
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(member, json!({ "membership": "leave" }));
        // Other rooms are unaffected.
        let (s, _) = send(&c, &fake, ROOM, "t1", text("hi")).await;
        assert_eq!(s, 200);
        assert_eq!(fake.events().len(), 1);
    }

    #[tokio::test]
    async fn oversized_content_is_rejected() {
        let fake = FakeMatrix::start().await;
        let c = client();
        let (s, b) = send(&c, &fake, ROOM, "big", text(&"x".repeat(70_000))).await;
        assert_eq!(s, 413);
        assert_eq!(
            b,
            json!({ "errcode": "M_TOO_LARGE", "error": "event too large" })
        );
        // Just under the limit goes through.
        let (s, _) = send(&c, &fake, ROOM, "fits", text(&"x".repeat(60_000))).await;
        assert_eq!(s, 200);
        assert_eq!(fake.events().len(), 1);
    }

    #[tokio::test]
    async fn rate_limit_and_server_error_faults() {
        let fake = FakeMatrix::start().await;
        let c = client();
        fake.push_fault(Fault::RateLimited {
            retry_after_ms: 1_500,
        });
        let resp = c
            .put(send_url(&fake, ROOM, "t1"))
            .bearer_auth(TOKEN)
            .json(&text("hi"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 429);
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(retry_after.as_deref(), Some("2"));
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body,
            json!({ "errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 1500 })
        );

        fake.push_fault(Fault::ServerError);
        let (s, b) = send(&c, &fake, ROOM, "t1", text("hi")).await;
        assert_eq!(s, 500);
        assert_eq!(
            b,
            json!({ "errcode": "M_UNKNOWN", "error": "Internal server error" })
        );
        assert!(fake.events().is_empty());

        // Reads are never faulted: the queued fault waits for the next send.
        fake.push_fault(Fault::ServerError);
        let (s, _) = messages(&c, &fake, ROOM, "dir=b").await;
        assert_eq!(s, 200);
        let (s, _) = send(&c, &fake, ROOM, "t1", text("hi")).await;
        assert_eq!(s, 500);

        // The queue is drained: the retry goes through and was never cached.
        let (s, _) = send(&c, &fake, ROOM, "t1", text("hi")).await;
        assert_eq!(s, 200);
        assert_eq!(fake.txn_repeats(), 0);
        assert_eq!(
            fake.fault_counts(),
            FaultCounts {
                server_error: 2,
                rate_limited: 1,
                slow: 0,
                accept_then_hang: 0,
            }
        );
        assert_eq!(fake.request_count(), 5);
    }

    #[tokio::test]
    async fn fault_mix_applies_when_queue_is_empty() {
        let fake = FakeMatrix::start().await;
        let c = client();
        fake.set_fault_mix(Some(server_errors_only()));
        let (s, _) = send(&c, &fake, ROOM, "t1", text("hi")).await;
        assert_eq!(s, 500);
        fake.set_fault_mix(None);
        let (s, _) = send(&c, &fake, ROOM, "t1", text("hi")).await;
        assert_eq!(s, 200);
        assert_eq!(fake.fault_counts().server_error, 1);
    }

    #[tokio::test]
    async fn slow_fault_delays_then_succeeds() {
        let fake = FakeMatrix::start().await;
        let c = client();
        fake.push_fault(Fault::Slow { delay_ms: 150 });
        let started = std::time::Instant::now();
        let (s, _) = send(&c, &fake, ROOM, "t1", text("late")).await;
        assert_eq!(s, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(fake.events().len(), 1);
    }

    #[tokio::test]
    async fn auth_errors_and_token_rotation() {
        let fake = FakeMatrix::start().await;
        let c = client();
        let (s, b) = send_as(&c, &fake, "wrong", ROOM, "t1", text("hi")).await;
        assert_eq!(s, 401);
        assert_eq!(
            b,
            json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token" })
        );
        let resp = c
            .put(send_url(&fake, ROOM, "t1"))
            .json(&text("hi"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 401);
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b["errcode"], "M_MISSING_TOKEN");
        assert!(fake.events().is_empty());

        fake.set_tokens(&["old", "new"]);
        for token in ["old", "new"] {
            let (s, _) = send_as(&c, &fake, token, ROOM, "t1", text("hi")).await;
            assert_eq!(s, 200);
        }
        let (s, _) = send_as(&c, &fake, TOKEN, ROOM, "t2", text("hi")).await;
        assert_eq!(s, 401);
        assert_eq!(fake.tokens_seen(), vec!["old".to_owned(), "new".to_owned()]);
        assert_eq!(fake.events().len(), 2);
        assert_eq!(fake.request_count(), 5);
    }

    #[tokio::test]
    async fn accept_then_hang_stores_and_resend_finds_it() {
        let fake = FakeMatrix::start().await;
        let c = client();
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 2_000 });
        let err = c
            .put(send_url(&fake, ROOM, "evt-9"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_millis(300))
            .json(&text("maybe"))
            .send()
            .await
            .expect_err("the fake must not answer");
        assert!(err.is_timeout(), "{err:?}");
        let stored = fake.events();
        assert_eq!(stored.len(), 1);

        // The client's retry with the same txn id gets the stored event back.
        let (s, b) = send(&c, &fake, ROOM, "evt-9", text("maybe")).await;
        assert_eq!(s, 200);
        assert_eq!(b["event_id"], stored[0].event_id);
        assert_eq!(fake.events().len(), 1);
        assert_eq!(fake.txn_repeats(), 1);

        // After the hold, the connection is dropped without any response.
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 50 });
        let err = c
            .put(send_url(&fake, ROOM, "evt-10"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(5))
            .json(&text("second"))
            .send()
            .await
            .expect_err("the fake must drop the connection");
        assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
        let got = fake.wait_for_events(2, Duration::from_millis(100)).await;
        assert_eq!(got.len(), 2);
        assert_eq!(fake.fault_counts().accept_then_hang, 2);
    }

    #[tokio::test]
    async fn messages_newest_first_with_pagination() {
        let fake = FakeMatrix::start().await;
        let c = client();
        for i in 0..3 {
            event_id_of(&c, &fake, ROOM, &format!("m{i}")).await;
        }
        // Another room's event sits in the middle of the server's stream.
        event_id_of(&c, &fake, "!other:fake", "elsewhere").await;
        let (s, page) = messages(&c, &fake, ROOM, "dir=b&limit=2").await;
        assert_eq!(s, 200);
        let bodies = |page: &Value| -> Vec<String> {
            page["chunk"]
                .as_array()
                .expect("chunk")
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(bodies(&page), vec!["m2", "m1"]);
        assert_eq!(page["start"], "t4");
        let first = &page["chunk"][0];
        assert_eq!(first["type"], "m.room.message");
        assert_eq!(first["sender"], "@threadline:fake");
        assert_eq!(first["room_id"], ROOM);
        assert!(first["origin_server_ts"].is_u64());
        assert_eq!(first["unsigned"]["transaction_id"], "m2");
        assert_eq!(first["event_id"], fake.events()[2].event_id);

        // Continuing from `end` yields the rest; an empty page has no `end`.
        let end = page["end"].as_str().expect("end").to_owned();
        let (_, rest) = messages(&c, &fake, ROOM, &format!("dir=b&limit=2&from={end}")).await;
        assert_eq!(bodies(&rest), vec!["m0"]);
        assert_eq!(rest["end"], "t0");
        let (_, empty) = messages(&c, &fake, ROOM, "dir=b&from=t0").await;
        assert_eq!(empty["chunk"], json!([]));
        assert!(empty.get("end").is_none(), "{empty}");

        // Forward pages oldest first.
        let (_, fwd) = messages(&c, &fake, ROOM, "dir=f&limit=10").await;
        assert_eq!(bodies(&fwd), vec!["m0", "m1", "m2"]);

        // Redacted events keep their place but lose their content.
        fake.redact(&fake.events()[1].event_id);
        let (_, after) = messages(&c, &fake, ROOM, "dir=b").await;
        assert_eq!(bodies(&after), vec!["m2", "m0"]);
        assert_eq!(after["chunk"][1]["content"], json!({}));
        assert!(after["chunk"][1]["unsigned"]["redacted_because"].is_object());

        // `dir` is required by the spec.
        let (s, b) = messages(&c, &fake, ROOM, "limit=2").await;
        assert_eq!((s, b["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));
        assert_eq!(fake.take_spec_violations().len(), 1);
    }

    #[tokio::test]
    async fn transaction_id_only_shown_to_sender() {
        let fake = FakeMatrix::start().await;
        let c = client();
        fake.set_tokens(&[TOKEN, "syt_other"]);
        send_as(&c, &fake, "syt_other", ROOM, "theirs", text("x")).await;
        let (_, page) = messages(&c, &fake, ROOM, "dir=b").await;
        assert!(page["chunk"][0]["unsigned"].get("transaction_id").is_none());
    }

    #[tokio::test]
    async fn unknown_route_is_unrecognized() {
        let fake = FakeMatrix::start().await;
        let resp = client()
            .get(format!("{}/_matrix/client/v3/sync", fake.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 404);
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b["errcode"], "M_UNRECOGNIZED");
        assert_eq!(fake.request_count(), 1);
        assert_eq!(fake.take_spec_violations().len(), 1);
    }

    #[tokio::test]
    async fn drop_shuts_server_down() {
        let fake = FakeMatrix::start().await;
        let url = format!("{}/_matrix/client/v3/account/whoami", fake.base_url());
        drop(fake);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let res = client()
            .get(&url)
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(res.is_err(), "{res:?}");
    }
}
