//! Loopback fake of Discord's HTTP API v10: bot auth, message create with
//! `nonce`/`enforce_nonce` idempotency, threads started from messages, channel
//! and message reads, and Discord's real error codes and rate-limit shape.
//!
//! Every channel id that is a snowflake is implicitly an existing text channel,
//! so tests need no set-up; `delete_channel` and `archive_thread` produce the
//! two permanent errors a deliverer must recognise (10003 and 50083).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        ConnectInfo, Path, Query, State,
    },
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::openapi::{self, OpenApi};
use super::{
    auth_token, faulted, handle_methods, lock, reply, reply_either, retry_after_header_secs, serve,
    unix_ms, wait_for_len, Common, ConnCtl, Platform, Reply, Server, Tokens,
};

/// Discord snowflakes count milliseconds from 2015-01-01T00:00:00Z.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
const MAX_CONTENT_CHARS: usize = 2000;
/// Discord rejects longer nonces: a deliverer that uses a full UUID as nonce
/// would get 400s from the real API, so the fake rejects them too.
const MAX_NONCE_CHARS: usize = 25;
/// "The past few minutes" of Discord's docs for `enforce_nonce`.
const DEFAULT_NONCE_WINDOW: Duration = Duration::from_secs(5 * 60);
const DEFAULT_AUTO_ARCHIVE_MINUTES: u64 = 1440;
const AUTO_ARCHIVE_CHOICES: [u64; 4] = [60, 1440, 4320, 10080];
const BOT_USERNAME: &str = "threadline";
const CHANNEL_TYPE_GUILD_TEXT: u8 = 0;
const CHANNEL_TYPE_PUBLIC_THREAD: u8 = 11;
const CHANNEL_TYPE_GUILD_FORUM: u8 = 15;
const MESSAGE_TYPE_DEFAULT: u8 = 0;
const MESSAGE_TYPE_REPLY: u8 = 19;

/// A message as the fake stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscordMessage {
    /// The snowflake id the fake assigned.
    pub id: String,
    /// The channel or thread it was posted in.
    pub channel_id: String,
    /// The message text as sent.
    pub content: String,
    /// The nonce as sent, stringified if it was an integer.
    pub nonce: Option<String>,
    /// The author: the bot user, or the webhook id for a webhook execute.
    pub author_id: String,
    /// Who Discord notified ([`notified`]): `@everyone`, `user:<id>`, `role:<id>`.
    pub notified: Vec<String>,
    /// The message it replies to (`message_reference` resolved), if any.
    pub reply_to: Option<String>,
    /// A webhook execute's `username` and `avatar_url` overrides, as sent.
    pub shown_as: Option<(Option<String>, Option<String>)>,
}

/// A thread created through the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscordThread {
    /// The thread's channel id.
    pub id: String,
    /// The text channel it was created in.
    pub parent_id: String,
    /// The thread name as sent.
    pub name: String,
    /// Whether the thread is archived.
    pub archived: bool,
    /// Whether a moderator locked it: the bot can no longer post in it.
    pub locked: bool,
}

/// Handle to a running fake Discord; dropping it shuts the server down — and fails the
/// test when any request broke the published contract (see [`FakeDiscord::spec_violations`]).
pub struct FakeDiscord {
    server: Server,
    shared: Shared,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        let violations = std::mem::take(&mut lock(&self.shared).violations);
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "fake Discord received {} request(s) the Discord API does not allow:\n{}",
                violations.len(),
                violations.join("\n")
            );
        }
    }
}

/// Discord's OpenAPI document, vendored at `tests/specs/discord-openapi.json` (see
/// `tests/specs/SOURCES.md`), read once per test process.
static SPEC: LazyLock<OpenApi> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/discord-openapi.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let document: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    OpenApi::new(&document)
});

/// What the gate in front of every route needs: the fake's state, once it exists.
#[derive(Default)]
struct Gate {
    shared: Option<Shared>,
}

/// In front of every route, before auth: records the request, answers a global rate
/// limit while one is in force, and checks the request against Discord's OpenAPI
/// document and the rule that no agent text may notify anyone. A request that breaks
/// either is recorded (the handle's drop fails the test) and answered as Discord
/// answers an invalid body: 400, 50035.
async fn gate(
    State(gate): State<Arc<Mutex<Gate>>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let Some(shared) = lock(&gate).shared.clone() else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 8 << 20).await else {
        return reply(discord_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            40005,
            "Request entity too large",
        ));
    };
    let method = parts.method.as_str().to_owned();
    let full_path = parts.uri.path().to_owned();
    let path = full_path
        .strip_prefix("/api/v10")
        .unwrap_or(&full_path)
        .to_owned();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let has_body = matches!(method.as_str(), "POST" | "PUT" | "PATCH");
    let mut violations = SPEC.violations(&openapi::Request {
        method: &method,
        path: &path,
        query: &query,
        json_body: has_body.then_some(&bytes[..]),
    });
    if method == "POST" {
        violations.extend(mention_risk(&path, &bytes));
    }
    {
        let mut st = lock(&shared);
        st.log.push((method.clone(), path.clone(), Instant::now()));
        // rate-limits.mdx, "Global Rate Limit": every route of the bot answers 429 while
        // the global limit holds, with `X-RateLimit-Global` and scope `global`.
        if let Some(ms) = st.global_next.take() {
            st.global_until = Some(Instant::now() + Duration::from_millis(ms));
        }
        if let Some(until) = st.global_until.filter(|u| *u > Instant::now()) {
            return global_rate_limited(until - Instant::now());
        }
        if violations.is_empty() {
            if let Some(limited) = st.bucket.take(&method, &path) {
                return limited;
            }
        } else {
            let summary = violations.join("; ");
            st.violations.extend(violations);
            return reply((
                StatusCode::BAD_REQUEST,
                json!({"message": "Invalid Form Body", "code": 50035, "errors": {"_errors": [{"code": "SPEC", "message": summary}]}}),
            ));
        }
    }
    let mut response = next
        .run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await;
    // A 429 (a fault's, or the global limit's) carries its own rate-limit headers.
    let limited = response.status() == StatusCode::TOO_MANY_REQUESTS;
    if let Some(headers) = (!limited)
        .then(|| lock(&shared).bucket.headers(&method, &path))
        .flatten()
    {
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), v);
            }
        }
    }
    response
}

/// Discord's per-route limits as the headers describe them (rate-limits.mdx, "Header
/// Format"): each route and top-level resource (channel, guild, webhook) has a bucket of
/// `limit` requests per `window`; every answer says what is left (`X-RateLimit-Limit`,
/// `-Remaining`, `-Reset`, `-Reset-After`, `-Bucket`); a request past the limit answers 429
/// with scope `user`. Generous by default, so only tests that tighten it meet it.
struct Buckets {
    limit: u32,
    window: Duration,
    /// `shape:major` → (requests in the window, when the window began).
    used: HashMap<String, (u32, Instant)>,
    /// Requests refused because their bucket was empty (a client that read the headers
    /// never meets one).
    refused: u64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            limit: 1_000,
            window: Duration::from_secs(1),
            used: HashMap::new(),
            refused: 0,
        }
    }
}

impl Buckets {
    /// The route's shape (ids replaced) and its top-level resource.
    fn key(method: &str, path: &str) -> (String, String) {
        let mut major = String::new();
        let mut shape = String::from(method);
        let segments: Vec<&str> = path.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            shape.push('/');
            let top = i == 2 && matches!(segments[1], "channels" | "guilds" | "webhooks");
            if top {
                major = (*segment).to_owned();
            }
            if i >= 2
                && !segment.is_empty()
                && (segment.bytes().all(|b| b.is_ascii_digit()) || segments[1] == "webhooks")
            {
                shape.push_str("{}");
            } else {
                shape.push_str(segment);
            }
        }
        (shape, major)
    }

    fn entry(&mut self, method: &str, path: &str) -> (&mut (u32, Instant), String) {
        let (shape, major) = Self::key(method, path);
        let window = self.window;
        let entry = self
            .used
            .entry(format!("{shape}:{major}"))
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (0, Instant::now());
        }
        (entry, shape)
    }

    /// Counts a request against its bucket, or answers the 429 of an empty one.
    fn take(&mut self, method: &str, path: &str) -> Option<Response> {
        let (limit, window) = (self.limit, self.window);
        let (entry, _) = self.entry(method, path);
        if entry.0 >= limit {
            let left = window.saturating_sub(entry.1.elapsed());
            self.refused += 1;
            return Some(rate_limited(
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
            ));
        }
        entry.0 += 1;
        None
    }

    fn headers(&mut self, method: &str, path: &str) -> Option<Vec<(&'static str, String)>> {
        let (limit, window) = (self.limit, self.window);
        let (entry, shape) = self.entry(method, path);
        let left = window.saturating_sub(entry.1.elapsed()).as_secs_f64();
        let reset = unix_ms(SystemTime::now()) as f64 / 1000.0 + left;
        let bucket: String = shape
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            .to_string();
        Some(vec![
            ("x-ratelimit-limit", limit.to_string()),
            (
                "x-ratelimit-remaining",
                limit.saturating_sub(entry.0).to_string(),
            ),
            ("x-ratelimit-reset", format!("{reset:.3}")),
            ("x-ratelimit-reset-after", format!("{left:.3}")),
            ("x-ratelimit-bucket", bucket),
        ])
    }
}

/// Who a message with `content` and `allowed_mentions` notifies, as message.mdx ("Allowed
/// Mentions Object") describes it: without the object, everything the content mentions;
/// with it, the types in `parse` wholesale plus the `users` and `roles` listed, each only
/// where the content mentions it (`<@id>`, `<@!id>`, `<@&id>`, `@everyone`, `@here`).
pub fn notified(content: &str, allowed_mentions: Option<&Value>) -> Vec<String> {
    let mut users = Vec::new();
    let mut roles = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("<@") {
        let after = &rest[start + 2..];
        let (role, after) = match after.strip_prefix('&') {
            Some(a) => (true, a),
            None => (false, after.strip_prefix('!').unwrap_or(after)),
        };
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && after[digits.len()..].starts_with('>') {
            if role {
                roles.push(digits);
            } else {
                users.push(digits);
            }
        }
        rest = after;
    }
    // A backslash before the `@` makes it text (Discord's Markdown escape).
    let everyone = ["@everyone", "@here"].iter().any(|word| {
        content
            .match_indices(word)
            .any(|(i, _)| !content[..i].ends_with('\\'))
    });
    let parse: Vec<&str> = match allowed_mentions {
        None => vec!["everyone", "roles", "users"],
        Some(a) => a["parse"]
            .as_array()
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
    };
    let listed = |key: &str, id: &str| {
        allowed_mentions
            .and_then(|a| a[key].as_array())
            .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(id)))
    };
    let mut out = Vec::new();
    if everyone && parse.contains(&"everyone") {
        out.push("@everyone".to_owned());
    }
    for id in users {
        if parse.contains(&"users") || listed("users", &id) {
            out.push(format!("user:{id}"));
        }
    }
    for id in roles {
        if parse.contains(&"roles") || listed("roles", &id) {
            out.push(format!("role:{id}"));
        }
    }
    out.dedup();
    out
}

/// A message-creating request whose text could notify someone it did not name: every bot
/// message, webhook execute and forum post must carry `allowed_mentions` with an empty
/// `parse` and no `roles` (message.mdx, "Allowed Mentions Object": without it, `@everyone`,
/// roles and users in the content are notified as the content says); `users` may list the
/// users the event allows.
fn mention_risk(path: &str, body: &[u8]) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let creates = matches!(
        segments.as_slice(),
        ["", "channels", _, "messages" | "threads"] | ["", "webhooks", _, _]
    );

    if !creates {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = if segments.get(3) == Some(&"threads") {
        value.get("message")?
    } else {
        &value
    };
    let mentions = &message["allowed_mentions"];
    let silent = mentions["parse"].as_array().is_some_and(Vec::is_empty)
        && mentions["roles"].as_array().is_none_or(Vec::is_empty);
    (!silent)
        .then(|| format!("POST {path}: allowed_mentions {mentions} lets the text notify people"))
}

/// The 429 of Discord's global limit.
fn global_rate_limited(left: Duration) -> Response {
    let secs = left.as_secs_f64();
    let body =
        json!({"message": "You are being rate limited.", "retry_after": secs, "global": true});
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = [
        ("retry-after", format!("{}", secs.ceil() as u64)),
        ("x-ratelimit-global", "true".to_owned()),
        ("x-ratelimit-scope", "global".to_owned()),
    ];
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
    resp
}

type Shared = super::Shared<DiscordState>;

impl FakeDiscord {
    /// Starts the fake on a free loopback port. Accepted token: `test-token`.
    pub async fn start() -> FakeDiscord {
        let routes = Router::new()
            .route("/api/v10/channels/{channel_id}", get(get_channel))
            .route(
                "/api/v10/channels/{channel_id}/messages",
                post(create_message).get(list_messages),
            )
            .route(
                "/api/v10/channels/{channel_id}/messages/{message_id}/threads",
                post(create_thread),
            )
            .route(
                "/api/v10/channels/{channel_id}/threads",
                post(create_forum_thread),
            )
            .route("/api/v10/users/@me", get(get_me))
            .route("/api/v10/gateway/bot", get(get_gateway_bot))
            .route(
                "/api/v10/guilds/{guild_id}/threads/active",
                get(active_threads),
            )
            .route(
                "/api/v10/webhooks/{webhook_id}/{token}",
                post(execute_webhook),
            )
            .fallback(route_not_found)
            .method_not_allowed_fallback(method_not_allowed);
        let state = Arc::new(Mutex::new(Gate::default()));
        let routes = routes.layer(middleware::from_fn_with_state(Arc::clone(&state), gate));
        let (server, shared) = serve(DiscordState::new(), routes).await;
        lock(&state).shared = Some(Arc::clone(&shared));
        FakeDiscord { server, shared }
    }

    /// Creates a webhook (a persona) in `channel_id`; returns its (id, token).
    pub fn add_webhook(&self, channel_id: &str) -> (String, String) {
        let mut st = lock(&self.shared);
        let id = st.next_snowflake();
        let token = format!("webhook-token-{id}");
        st.webhooks
            .insert(id.clone(), (token.clone(), channel_id.to_owned()));
        (id, token)
    }

    /// What `GET /gateway/bot` answers from now on: `url` (a fake Gateway's) and `shards`.
    pub fn set_gateway(&self, url: &str, shards: u32) {
        lock(&self.shared).gateway = (url.to_owned(), shards);
    }

    /// `http://127.0.0.1:PORT/api/v10`, the value for `THREADLINE_DISCORD_API_BASE`.
    pub fn base_url(&self) -> String {
        self.server.url("/api/v10")
    }

    /// A person (`author_id`) writes `content` in `channel_id`, as the Gateway would tell
    /// the listener; stored like any message, so a post can reply to it. → its id.
    pub fn person_posts(&self, channel_id: &str, author_id: &str, content: &str) -> String {
        let mut st = lock(&self.shared);
        let id = st.next_snowflake();
        let stored = StoredMessage {
            msg: DiscordMessage {
                id: id.clone(),
                channel_id: channel_id.to_owned(),
                content: content.to_owned(),
                nonce: None,
                author_id: author_id.to_owned(),
                notified: Vec::new(),
                reply_to: None,
                shown_as: None,
            },
            nonce_raw: None,
            timestamp: rfc3339(SystemTime::now()),
            reference: None,
            webhook_id: None,
            username: "person".to_owned(),
        };
        let index = st.messages.len();
        st.message_index.insert(id.clone(), index);
        st.messages.push(stored);
        id
    }

    /// All stored messages, in creation order.
    pub fn messages(&self) -> Vec<DiscordMessage> {
        let st = lock(&self.shared);
        st.messages.iter().map(|m| m.msg.clone()).collect()
    }

    /// Stored messages of one channel (or thread), in creation order.
    pub fn messages_in(&self, channel_id: &str) -> Vec<DiscordMessage> {
        let st = lock(&self.shared);
        st.messages
            .iter()
            .filter(|m| m.msg.channel_id == channel_id)
            .map(|m| m.msg.clone())
            .collect()
    }

    /// All threads created through the fake, in creation order.
    pub fn threads(&self) -> Vec<DiscordThread> {
        let st = lock(&self.shared);
        st.threads
            .iter()
            .map(|t| DiscordThread {
                id: t.id.clone(),
                parent_id: t.parent_id.clone(),
                name: t.name.clone(),
                archived: st.archived.contains(&t.id),
                locked: st.locked.contains(&t.id),
            })
            .collect()
    }

    /// Marks a channel (or thread) deleted: every route for it, and for
    /// threads under it, answers 404 Unknown Channel (10003).
    pub fn delete_channel(&self, id: &str) {
        lock(&self.shared).deleted.insert(id.to_owned());
    }

    /// Archives a thread, as auto-archive or a member would. A post into it (bot message
    /// or webhook execute) unarchives it and goes through, unless it is also locked
    /// (discord-api-docs developers/topics/threads.mdx, "Active & Archived Threads":
    /// "Sending a message will automatically unarchive the thread, unless the thread has
    /// been locked by a moderator").
    pub fn archive_thread(&self, id: &str) {
        lock(&self.shared).archived.insert(id.to_owned());
    }

    /// Locks a thread, as a moderator would: the bot (without MANAGE_THREADS) can no longer
    /// post in it (threads.mdx, "Locked Threads"). A post answers 160005 "Thread is
    /// locked" while the thread is active, and 50083 (an operation on an archived thread)
    /// once it is archived too (opcodes-and-status-codes.mdx, "JSON Error Codes").
    pub fn lock_thread(&self, id: &str) {
        lock(&self.shared).locked.insert(id.to_owned());
    }

    /// Models an app without the privileged MESSAGE_CONTENT intent (`false`) or with it
    /// (`true`, the default): without it, listed messages not sent by the bot user itself
    /// come with empty `content`, `embeds`, `attachments` and `components`
    /// (message.mdx, "Message Object", the note on those fields; the bot's own messages
    /// are exempt, gateway.mdx, "Message Content Intent"). Webhook messages are not the
    /// bot's: a persona's posts read back blank.
    pub fn set_message_content_intent(&self, granted: bool) {
        lock(&self.shared).content_intent = granted;
    }

    /// Makes a channel a forum (type 15): messages cannot be posted into it directly
    /// (40058), a thread is created with its first message through
    /// `POST /channels/{id}/threads` (threads.mdx, "Forums").
    pub fn add_forum_channel(&self, id: &str) {
        lock(&self.shared).forums.insert(id.to_owned());
    }

    /// Shortens or lengthens how long `enforce_nonce` remembers a nonce
    /// (default five minutes), for tests of retries after the window.
    pub fn set_nonce_window(&self, window: Duration) {
        lock(&self.shared).nonce_window = window;
    }

    /// Every request the Discord API would not allow, so far (they were answered 400
    /// 50035). Taking them clears them: a test that sends a bad request on purpose takes
    /// them, or the handle's drop fails the test.
    pub fn take_spec_violations(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.shared).violations)
    }

    /// Panics if any request broke the published contract so far.
    pub fn assert_no_spec_violations(&self) {
        let violations = self.take_spec_violations();
        assert!(
            violations.is_empty(),
            "requests Discord does not allow: {violations:#?}"
        );
    }

    /// Makes the next request answer Discord's global 429, and every request for `ms`
    /// after it, whatever its route.
    pub fn global_rate_limit(&self, ms: u64) {
        lock(&self.shared).global_next = Some(ms);
    }

    /// Limits every route and top-level resource to `limit` requests per `window`.
    pub fn set_route_limit(&self, limit: u32, window: Duration) {
        let mut st = lock(&self.shared);
        st.bucket.limit = limit;
        st.bucket.window = window;
    }

    /// Requests refused with a 429 because their route's bucket was empty.
    pub fn bucket_refusals(&self) -> u64 {
        lock(&self.shared).bucket.refused
    }

    /// `(method, path below /api/v10, when)` of every request, in arrival order.
    pub fn request_log(&self) -> Vec<(String, String, Instant)> {
        lock(&self.shared).log.clone()
    }

    /// The snowflake of the bot user every accepted token authenticates as.
    pub fn bot_user_id(&self) -> String {
        lock(&self.shared).bot_user_id.clone()
    }

    /// Waits until at least `n` messages are stored or `timeout` passes, and
    /// returns whatever is stored then (the caller asserts on the count).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<DiscordMessage> {
        wait_for_len(n, timeout, || self.messages()).await
    }
}

handle_methods!(FakeDiscord, faults: "message post or thread create", tokens);

struct StoredMessage {
    msg: DiscordMessage,
    /// Echoed verbatim: Discord returns the nonce in the type it was sent.
    nonce_raw: Option<Value>,
    timestamp: String,
    reference: Option<Value>,
    /// Set for messages posted through a webhook (a persona).
    webhook_id: Option<String>,
    /// The author's name as listed: a webhook execute's `username` overrides the webhook's.
    username: String,
}

struct ThreadRecord {
    id: String,
    parent_id: String,
    name: String,
    auto_archive_duration: u64,
    created: String,
}

#[derive(Hash, PartialEq, Eq)]
struct NonceKey {
    channel_id: String,
    author_id: String,
    nonce: String,
}

struct DiscordState {
    common: Common,
    tokens: Tokens,
    messages: Vec<StoredMessage>,
    /// Message id → index in `messages`; thread creation and replies look messages up by id.
    message_index: HashMap<String, usize>,
    threads: Vec<ThreadRecord>,
    thread_index: HashMap<String, usize>,
    deleted: HashSet<String>,
    archived: HashSet<String>,
    locked: HashSet<String>,
    forums: HashSet<String>,
    content_intent: bool,
    violations: Vec<String>,
    log: Vec<(String, String, Instant)>,
    global_next: Option<u64>,
    global_until: Option<Instant>,
    bucket: Buckets,
    /// First message created with a nonce, per (channel, author, nonce).
    nonces: HashMap<NonceKey, (String, Instant)>,
    nonce_window: Duration,
    last_snowflake: u64,
    bot_user_id: String,
    guild_id: String,
    /// Webhook id → (token, channel id): the personas `add_webhook` created.
    webhooks: HashMap<String, (String, String)>,
    /// What `GET /gateway/bot` answers: the Gateway URL and the recommended shard count.
    gateway: (String, u32),
}

impl DiscordState {
    fn new() -> DiscordState {
        let mut st = DiscordState {
            common: Common::default(),
            tokens: Tokens::new("test-token"),
            messages: Vec::new(),
            message_index: HashMap::new(),
            threads: Vec::new(),
            thread_index: HashMap::new(),
            deleted: HashSet::new(),
            archived: HashSet::new(),
            locked: HashSet::new(),
            forums: HashSet::new(),
            content_intent: true,
            violations: Vec::new(),
            log: Vec::new(),
            global_next: None,
            global_until: None,
            bucket: Buckets::default(),
            nonces: HashMap::new(),
            nonce_window: DEFAULT_NONCE_WINDOW,
            last_snowflake: 0,
            bot_user_id: String::new(),
            guild_id: String::new(),
            webhooks: HashMap::new(),
            gateway: ("wss://gateway.discord.gg".into(), 1),
        };
        st.bot_user_id = st.next_snowflake();
        st.guild_id = st.next_snowflake();
        st
    }

    /// Real-looking snowflakes (timestamp in the high bits), forced strictly
    /// increasing so creation order and id order always agree.
    fn next_snowflake(&mut self) -> String {
        let now_ms = unix_ms(SystemTime::now());
        let from_clock = now_ms.saturating_sub(DISCORD_EPOCH_MS) << 22;
        self.last_snowflake = from_clock.max(self.last_snowflake + 1);
        self.last_snowflake.to_string()
    }

    fn thread(&self, id: &str) -> Option<&ThreadRecord> {
        self.thread_index.get(id).and_then(|&i| self.threads.get(i))
    }

    fn is_deleted(&self, id: &str) -> bool {
        self.deleted.contains(id)
            || self
                .thread(id)
                .is_some_and(|t| self.deleted.contains(&t.parent_id))
    }

    /// Shared path checks: a snowflake id that was not deleted.
    fn check_channel(&self, channel_id: &str) -> Result<(), Reply> {
        check_snowflake("channel_id", channel_id)?;
        if self.is_deleted(channel_id) {
            return Err(discord_error(
                StatusCode::NOT_FOUND,
                10003,
                "Unknown Channel",
            ));
        }
        Ok(())
    }

    fn create_message(&mut self, channel_id: &str, body: &[u8]) -> Result<Reply, Reply> {
        let bot = self.bot_user_id.clone();
        self.create_message_as(channel_id, body, &bot, None)
    }

    /// `POST /webhooks/{id}/{token}?wait=true[&thread_id=…]`: a message by the webhook's
    /// identity (a persona), in its channel or in a thread of that channel. No nonce exists
    /// for webhook executes, which is why clients must read back to settle an unknown outcome.
    fn execute_webhook(
        &mut self,
        webhook_id: &str,
        token: &str,
        thread_id: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, Reply> {
        let Some((expected, channel)) = self.webhooks.get(webhook_id).cloned() else {
            return Err(discord_error(
                StatusCode::NOT_FOUND,
                10015,
                "Unknown Webhook",
            ));
        };
        if expected != token {
            return Err(discord_error(
                StatusCode::UNAUTHORIZED,
                50027,
                "Invalid Webhook Token",
            ));
        }
        let target = match thread_id {
            Some(thread) => {
                let parent = self
                    .thread_index
                    .get(thread)
                    .and_then(|&i| self.threads.get(i))
                    .map(|t| t.parent_id.clone());
                if self.deleted.contains(thread) || parent.as_deref() != Some(channel.as_str()) {
                    return Err(discord_error(
                        StatusCode::BAD_REQUEST,
                        10003,
                        "Unknown Channel",
                    ));
                }
                thread.to_owned()
            }
            None => channel,
        };
        self.create_message_as(&target, body, webhook_id, Some(webhook_id))
    }

    fn create_message_as(
        &mut self,
        channel_id: &str,
        body: &[u8],
        author_id: &str,
        webhook_id: Option<&str>,
    ) -> Result<Reply, Reply> {
        self.check_channel(channel_id)?;
        match (
            self.locked.contains(channel_id),
            self.archived.contains(channel_id),
        ) {
            // A locked thread answers the bot 403 50083 "Thread is archived" (public
            // reports: discord/discord-api-docs#6884, #7707).
            (true, true) => {
                return Err(discord_error(
                    StatusCode::FORBIDDEN,
                    50083,
                    "Thread is archived",
                ))
            }
            // 160005 "Thread is locked" (opcodes-and-status-codes.mdx, "JSON Error Codes");
            // its HTTP status is not documented: Threadline names it by the code.
            (true, false) => {
                return Err(discord_error(
                    StatusCode::BAD_REQUEST,
                    160005,
                    "Thread is locked",
                ))
            }
            (false, _) => {}
        }
        if self.forums.contains(channel_id) {
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                40058,
                "Cannot send a message in a forum channel",
            ));
        }
        let obj = parse_object(body)?;

        let content = match obj.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(form_error(
                    "content",
                    "BASE_TYPE_STRING",
                    "Must be a string.",
                ))
            }
        };
        if content.chars().count() > MAX_CONTENT_CHARS {
            return Err(form_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 2000 or fewer in length.",
            ));
        }

        let nonce: Option<(Value, String)> = match obj.get("nonce") {
            None | Some(Value::Null) => None,
            Some(v @ Value::String(s)) if s.chars().count() <= MAX_NONCE_CHARS => {
                Some((v.clone(), s.clone()))
            }
            Some(Value::String(_)) => {
                return Err(form_error(
                    "nonce",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 25 or fewer in length.",
                ))
            }
            Some(v @ Value::Number(n)) if n.is_u64() || n.is_i64() => {
                Some((v.clone(), n.to_string()))
            }
            Some(_) => {
                return Err(form_error(
                    "nonce",
                    "BASE_TYPE_STRING",
                    "Must be a string or an integer.",
                ))
            }
        };
        let enforce_nonce = match obj.get("enforce_nonce") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(form_error(
                    "enforce_nonce",
                    "BASE_TYPE_BOOLEAN",
                    "Must be either true or false.",
                ))
            }
        };
        let reference = self.resolve_reference(channel_id, obj.get("message_reference"))?;

        // Real Discord's message for a post with no content (we model no embeds/files).
        if content.trim().is_empty() {
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                50006,
                "Cannot send an empty message",
            ));
        }

        let author_id = author_id.to_owned();
        let nonce_key = nonce.as_ref().map(|(_, s)| NonceKey {
            channel_id: channel_id.to_owned(),
            author_id: author_id.clone(),
            nonce: s.clone(),
        });
        if let (true, Some(key)) = (enforce_nonce, nonce_key.as_ref()) {
            if let Some((existing_id, at)) = self.nonces.get(key) {
                if at.elapsed() <= self.nonce_window {
                    if let Some(&i) = self.message_index.get(existing_id) {
                        if let Some(m) = self.messages.get(i) {
                            return Ok((StatusCode::OK, self.message_json(m)));
                        }
                    }
                }
            }
        }

        let id = self.next_snowflake();
        let notified = notified(&content, obj.get("allowed_mentions"));
        let reply_to = reference
            .as_ref()
            .and_then(|r| r["message_id"].as_str())
            .map(str::to_owned);
        let stored = StoredMessage {
            msg: DiscordMessage {
                id: id.clone(),
                channel_id: channel_id.to_owned(),
                content,
                nonce: nonce.as_ref().map(|(_, s)| s.clone()),
                author_id,
                notified,
                reply_to,
                shown_as: webhook_id.map(|_| {
                    let string =
                        |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
                    (string("username"), string("avatar_url"))
                }),
            },
            nonce_raw: nonce.map(|(raw, _)| raw),
            timestamp: rfc3339(SystemTime::now()),
            reference,
            webhook_id: webhook_id.map(str::to_owned),
            username: match webhook_id {
                Some(_) => obj
                    .get("username")
                    .and_then(Value::as_str)
                    .unwrap_or("persona")
                    .to_owned(),
                None => BOT_USERNAME.to_owned(),
            },
        };
        if let Some(key) = nonce_key {
            // Every message with a nonce is remembered, enforced or not: Discord
            // checks a later enforce_nonce post against any earlier message.
            // The first one in the window wins, as "that message" in the docs.
            let window = self.nonce_window;
            let fresh = self
                .nonces
                .get(&key)
                .is_none_or(|(_, at)| at.elapsed() > window);
            if fresh {
                self.nonces.insert(key, (id.clone(), Instant::now()));
            }
        }
        // The post unarchives its thread (it is not locked: checked above).
        self.archived.remove(channel_id);
        let body = self.message_json(&stored);
        self.message_index.insert(id, self.messages.len());
        self.messages.push(stored);
        Ok((StatusCode::OK, body))
    }

    /// Validates a reply reference the way Discord does: an unknown target is a
    /// form error unless `fail_if_not_exists` is false, then the post is no reply.
    fn resolve_reference(
        &self,
        channel_id: &str,
        raw: Option<&Value>,
    ) -> Result<Option<Value>, Reply> {
        let obj = match raw {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(o)) => o,
            Some(_) => {
                return Err(form_error(
                    "message_reference",
                    "MODEL_TYPE_CONVERT",
                    "Only dictionaries may be used in a ModelType",
                ))
            }
        };
        let message_id = match obj.get("message_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(form_error(
                    "message_reference",
                    "REPLIES_UNKNOWN_MESSAGE",
                    "Unknown message",
                ))
            }
        };
        let exists = self
            .message_index
            .get(&message_id)
            .and_then(|&i| self.messages.get(i))
            .is_some_and(|m| m.msg.channel_id == channel_id);
        if exists {
            return Ok(Some(json!({
                "type": 0,
                "message_id": message_id,
                "channel_id": channel_id,
                "guild_id": self.guild_id,
            })));
        }
        if obj.get("fail_if_not_exists") == Some(&Value::Bool(false)) {
            return Ok(None);
        }
        Err(form_error(
            "message_reference",
            "REPLIES_UNKNOWN_MESSAGE",
            "Unknown message",
        ))
    }

    fn create_thread(
        &mut self,
        channel_id: &str,
        message_id: &str,
        body: &[u8],
    ) -> Result<Reply, Reply> {
        self.check_channel(channel_id)?;
        check_snowflake("message_id", message_id)?;
        if self.thread(channel_id).is_some() {
            // Threads cannot have threads.
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                50024,
                "Cannot execute action on this channel type",
            ));
        }
        let obj = parse_object(body)?;
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => {
                return Err(form_error(
                    "name",
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                ))
            }
            Some(_) => return Err(form_error("name", "BASE_TYPE_STRING", "Must be a string.")),
        };
        let name_len = name.chars().count();
        if name_len == 0 || name_len > 100 {
            return Err(form_error(
                "name",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            ));
        }
        let auto_archive_duration = match obj.get("auto_archive_duration") {
            None | Some(Value::Null) => DEFAULT_AUTO_ARCHIVE_MINUTES,
            Some(v) => match v.as_u64() {
                Some(d) if AUTO_ARCHIVE_CHOICES.contains(&d) => d,
                _ => {
                    return Err(form_error(
                        "auto_archive_duration",
                        "BASE_TYPE_CHOICES",
                        "Value must be one of {60, 1440, 4320, 10080}.",
                    ))
                }
            },
        };

        let in_channel = self
            .message_index
            .get(message_id)
            .and_then(|&i| self.messages.get(i))
            .is_some_and(|m| m.msg.channel_id == channel_id);
        if !in_channel {
            return Err(discord_error(
                StatusCode::NOT_FOUND,
                10008,
                "Unknown Message",
            ));
        }
        if self.thread_index.contains_key(message_id) {
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                160004,
                "A thread has already been created for this message",
            ));
        }

        // A thread started from a message shares that message's id.
        let record = ThreadRecord {
            id: message_id.to_owned(),
            parent_id: channel_id.to_owned(),
            name,
            auto_archive_duration,
            created: rfc3339(SystemTime::now()),
        };
        let body = self.thread_json(&record);
        self.thread_index
            .insert(record.id.clone(), self.threads.len());
        self.threads.push(record);
        Ok((StatusCode::CREATED, body))
    }

    /// `POST /channels/{id}/threads` under a forum: the thread and its first message in one
    /// request; the thread has the message's id (threads.mdx, "Forums"). No nonce exists
    /// on this route. Under a text channel the fake models no thread without a message.
    fn create_forum_thread(&mut self, channel_id: &str, body: &[u8]) -> Result<Reply, Reply> {
        self.check_channel(channel_id)?;
        if !self.forums.contains(channel_id) {
            return Err(discord_error(
                StatusCode::BAD_REQUEST,
                50024,
                "Cannot execute action on this channel type",
            ));
        }
        let obj = parse_object(body)?;
        let name = match obj.get("name") {
            Some(Value::String(s)) if (1..=100).contains(&s.chars().count()) => s.clone(),
            Some(_) | None => {
                return Err(form_error(
                    "name",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                ))
            }
        };
        let message = obj.get("message").cloned().unwrap_or(Value::Null);
        let content = message["content"].as_str().unwrap_or_default().to_owned();
        if content.trim().is_empty() || content.chars().count() > MAX_CONTENT_CHARS {
            return Err(form_error(
                "message.content",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 2000 in length.",
            ));
        }
        let id = self.next_snowflake();
        let record = ThreadRecord {
            id: id.clone(),
            parent_id: channel_id.to_owned(),
            name,
            auto_archive_duration: obj
                .get("auto_archive_duration")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_AUTO_ARCHIVE_MINUTES),
            created: rfc3339(SystemTime::now()),
        };
        self.thread_index.insert(id.clone(), self.threads.len());
        self.threads.push(record);
        let stored = StoredMessage {
            msg: DiscordMessage {
                id: id.clone(),
                channel_id: id.clone(),
                notified: notified(&content, message.get("allowed_mentions")),
                content,
                nonce: None,
                author_id: self.bot_user_id.clone(),
                reply_to: None,
                shown_as: None,
            },
            nonce_raw: None,
            timestamp: rfc3339(SystemTime::now()),
            reference: None,
            webhook_id: None,
            username: BOT_USERNAME.to_owned(),
        };
        self.message_index.insert(id.clone(), self.messages.len());
        self.messages.push(stored);
        let thread = self.thread(&id).map(|t| self.thread_json(t));
        Ok((StatusCode::CREATED, thread.unwrap_or(Value::Null)))
    }

    /// `GET /guilds/{id}/threads/active`: every active (unarchived) thread of the guild.
    fn active_threads(&self, guild_id: &str) -> Result<Reply, Reply> {
        check_snowflake("guild_id", guild_id)?;
        if guild_id != self.guild_id {
            return Err(discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild"));
        }
        let threads: Vec<Value> = self
            .threads
            .iter()
            .filter(|t| !self.archived.contains(&t.id) && !self.is_deleted(&t.id))
            .map(|t| self.thread_json(t))
            .collect();
        Ok((StatusCode::OK, json!({"threads": threads, "members": []})))
    }

    fn get_channel(&self, channel_id: &str) -> Result<Reply, Reply> {
        self.check_channel(channel_id)?;
        let body = match self.thread(channel_id) {
            Some(t) => self.thread_json(t),
            None => json!({
                "id": channel_id,
                "type": if self.forums.contains(channel_id) { CHANNEL_TYPE_GUILD_FORUM } else { CHANNEL_TYPE_GUILD_TEXT },
                "guild_id": self.guild_id,
                "name": format!("channel-{channel_id}"),
                "position": 0,
                "permission_overwrites": [],
                "nsfw": false,
                "parent_id": null,
                "topic": null,
                "rate_limit_per_user": 0,
                "last_message_id": self.last_message_id(channel_id),
            }),
        };
        Ok((StatusCode::OK, body))
    }

    fn list_messages(
        &self,
        channel_id: &str,
        query: &HashMap<String, String>,
    ) -> Result<Reply, Reply> {
        self.check_channel(channel_id)?;
        let limit = match query.get("limit") {
            None => 50,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n < 1 => {
                    return Err(form_error(
                        "limit",
                        "NUMBER_TYPE_MIN",
                        "int value should be greater than or equal to 1.",
                    ))
                }
                Ok(n) if n > 100 => {
                    return Err(form_error(
                        "limit",
                        "NUMBER_TYPE_MAX",
                        "int value should be less than or equal to 100.",
                    ))
                }
                Ok(n) => usize::try_from(n).unwrap_or(50),
                Err(_) => {
                    return Err(form_error(
                        "limit",
                        "NUMBER_TYPE_COERCE",
                        &format!("Value \"{raw}\" is not int."),
                    ))
                }
            },
        };
        let bound = |field: &str| -> Result<Option<u64>, Reply> {
            match query.get(field) {
                None => Ok(None),
                Some(raw) => raw.parse::<u64>().map(Some).map_err(|_| {
                    form_error(
                        field,
                        "NUMBER_TYPE_COERCE",
                        &format!("Value \"{raw}\" is not snowflake."),
                    )
                }),
            }
        };
        let before = bound("before")?;
        let after = bound("after")?;

        let in_channel: Vec<&StoredMessage> = self
            .messages
            .iter()
            .filter(|m| m.msg.channel_id == channel_id)
            .collect();
        let id_of = |m: &StoredMessage| m.msg.id.parse::<u64>().unwrap_or(0);
        // Discord pages from the cursor: `after` gives the oldest messages past
        // it, otherwise the newest before `before`; either way newest first.
        let mut page: Vec<&StoredMessage> = if let Some(after) = after {
            in_channel
                .into_iter()
                .filter(|m| id_of(m) > after)
                .take(limit)
                .collect()
        } else {
            let older: Vec<&StoredMessage> = in_channel
                .into_iter()
                .filter(|m| before.is_none_or(|b| id_of(m) < b))
                .collect();
            let skip = older.len().saturating_sub(limit);
            older.into_iter().skip(skip).collect()
        };
        page.reverse();
        let list: Vec<Value> = page
            .into_iter()
            .map(|m| {
                let mut v = self.message_json(m);
                if !self.content_intent && m.msg.author_id != self.bot_user_id {
                    // message.mdx, "Message Object": empty values without the intent.
                    v["content"] = json!("");
                    v["embeds"] = json!([]);
                    v["attachments"] = json!([]);
                    v["components"] = json!([]);
                }
                v
            })
            .collect();
        Ok((StatusCode::OK, Value::Array(list)))
    }

    fn last_message_id(&self, channel_id: &str) -> Option<String> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.msg.channel_id == channel_id)
            .map(|m| m.msg.id.clone())
    }

    fn message_json(&self, m: &StoredMessage) -> Value {
        let mut v = json!({
            "id": m.msg.id,
            "type": if m.reference.is_some() { MESSAGE_TYPE_REPLY } else { MESSAGE_TYPE_DEFAULT },
            "channel_id": m.msg.channel_id,
            "content": m.msg.content,
            "author": {
                "id": m.msg.author_id,
                "username": m.username,
                "discriminator": "0000",
                "global_name": null,
                "avatar": null,
                "bot": true,
            },
            "timestamp": m.timestamp,
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": false,
            "flags": 0,
        });
        if let Some(webhook_id) = &m.webhook_id {
            v["webhook_id"] = json!(webhook_id);
        }
        if let Some(obj) = v.as_object_mut() {
            // Discord leaves `nonce` out entirely when none was sent.
            if let Some(n) = &m.nonce_raw {
                obj.insert("nonce".into(), n.clone());
            }
            if let Some(r) = &m.reference {
                obj.insert("message_reference".into(), r.clone());
            }
        }
        v
    }

    fn thread_json(&self, t: &ThreadRecord) -> Value {
        json!({
            "id": t.id,
            "type": CHANNEL_TYPE_PUBLIC_THREAD,
            "guild_id": self.guild_id,
            "parent_id": t.parent_id,
            "owner_id": self.bot_user_id,
            "name": t.name,
            "last_message_id": self.last_message_id(&t.id),
            "message_count": self.messages.iter().filter(|m| m.msg.channel_id == t.id).count(),
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": self.archived.contains(&t.id),
                "auto_archive_duration": t.auto_archive_duration,
                "archive_timestamp": t.created,
                "locked": self.locked.contains(&t.id),
                "create_timestamp": t.created,
            },
        })
    }
}

/// Checks `Authorization: Bot <token>` against the accepted set and records
/// the token, so token-rotation tests can see which one each request used.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Reply> {
    match auth_token(headers, "Bot ") {
        Some(t) if lock(shared).tokens.check(t) => Ok(()),
        _ => Err(discord_error(
            StatusCode::UNAUTHORIZED,
            0,
            "401: Unauthorized",
        )),
    }
}

async fn create_message(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let Ok(Path(channel_id)) = path else {
        return route_not_found().await;
    };
    faulted(&shared, &conn, |st| {
        reply_either(st.create_message(&channel_id, &body))
    })
    .await
}

async fn create_thread(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let Ok(Path((channel_id, message_id))) = path else {
        return route_not_found().await;
    };
    faulted(&shared, &conn, |st| {
        reply_either(st.create_thread(&channel_id, &message_id, &body))
    })
    .await
}

async fn execute_webhook(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Bytes,
) -> Response {
    // A webhook's token is in its URL: no Authorization header is involved.
    let (Ok(Path((webhook_id, token))), Ok(Query(query))) = (path, query) else {
        return route_not_found().await;
    };
    let thread_id = query.get("thread_id").cloned();
    faulted(&shared, &conn, |st| {
        reply_either(st.execute_webhook(&webhook_id, &token, thread_id.as_deref(), &body))
    })
    .await
}

async fn create_forum_thread(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let Ok(Path(channel_id)) = path else {
        return route_not_found().await;
    };
    faulted(&shared, &conn, |st| {
        reply_either(st.create_forum_thread(&channel_id, &body))
    })
    .await
}

/// gateway.mdx, Get Gateway Bot: the URL, the recommended shards and the identify limits.
async fn get_gateway_bot(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let (url, shards) = lock(&shared).gateway.clone();
    reply((
        StatusCode::OK,
        json!({"url": url, "shards": shards, "session_start_limit":
            {"total": 1000, "remaining": 1000, "reset_after": 86_400_000, "max_concurrency": 1}}),
    ))
}

async fn get_me(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let id = lock(&shared).bot_user_id.clone();
    reply((
        StatusCode::OK,
        json!({"id": id, "username": BOT_USERNAME, "discriminator": "0000", "global_name": null, "avatar": null, "bot": true}),
    ))
}

async fn active_threads(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let Ok(Path(guild_id)) = path else {
        return route_not_found().await;
    };
    let outcome = lock(&shared).active_threads(&guild_id);
    reply_either(outcome)
}

async fn get_channel(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let Ok(Path(channel_id)) = path else {
        return route_not_found().await;
    };
    let outcome = lock(&shared).get_channel(&channel_id);
    reply_either(outcome)
}

async fn list_messages(
    State(shared): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&shared, &headers) {
        return reply(r);
    }
    let Ok(Path(channel_id)) = path else {
        return route_not_found().await;
    };
    let Ok(Query(query)) = query else {
        return reply(discord_error(
            StatusCode::BAD_REQUEST,
            0,
            "400: Bad Request",
        ));
    };
    let outcome = lock(&shared).list_messages(&channel_id, &query);
    reply_either(outcome)
}

async fn route_not_found() -> Response {
    reply(discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found"))
}

async fn method_not_allowed() -> Response {
    reply(discord_error(
        StatusCode::METHOD_NOT_ALLOWED,
        0,
        "405: Method Not Allowed",
    ))
}

impl Platform for DiscordState {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn rate_limited(retry_after_ms: u64) -> Response {
        rate_limited(retry_after_ms)
    }

    fn server_error() -> Response {
        reply(discord_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "500: Internal Server Error",
        ))
    }
}

/// Discord's 429: integer `Retry-After` (as the real API sends it), with the
/// precise value in `X-RateLimit-Reset-After` and the body's `retry_after`.
fn rate_limited(retry_after_ms: u64) -> Response {
    let secs = retry_after_ms as f64 / 1000.0;
    let reset_at = unix_ms(SystemTime::now()) as f64 / 1000.0 + secs;
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": secs,
        "global": false,
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = [
        (
            "retry-after",
            retry_after_header_secs(retry_after_ms).to_string(),
        ),
        ("x-ratelimit-limit", "5".to_owned()),
        ("x-ratelimit-remaining", "0".to_owned()),
        ("x-ratelimit-reset", format!("{reset_at:.3}")),
        ("x-ratelimit-reset-after", format!("{secs:.3}")),
        ("x-ratelimit-bucket", "fake-post-message".to_owned()),
        ("x-ratelimit-scope", "user".to_owned()),
    ];
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
    resp
}

fn discord_error(status: StatusCode, code: u64, message: &str) -> Reply {
    (status, json!({ "message": message, "code": code }))
}

/// Discord's 50035 "Invalid Form Body" with one field error.
fn form_error(field: &str, code: &str, message: &str) -> Reply {
    (
        StatusCode::BAD_REQUEST,
        json!({
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": { field: { "_errors": [{ "code": code, "message": message }] } },
        }),
    )
}

fn check_snowflake(field: &str, id: &str) -> Result<(), Reply> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u64>().is_ok() {
        Ok(())
    } else {
        Err(form_error(
            field,
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{id}\" is not snowflake."),
        ))
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err((
            StatusCode::BAD_REQUEST,
            json!({
                "message": "Invalid Form Body",
                "code": 50035,
                "errors": { "_errors": [{ "code": "DICT_TYPE_CONVERT", "message": "Only dictionaries may be used in a DictType" }] },
            }),
        )),
        Err(_) => Err(discord_error(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        )),
    }
}

/// Formats a time the way Discord does: `2024-05-01T12:34:56.789000+00:00`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil: no date crate needed for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fakes::{test_client as client, Fault};

    const CHANNEL: &str = "100000000000000001";

    async fn post_message(
        c: &reqwest::Client,
        fake: &FakeDiscord,
        channel: &str,
        mut body: Value,
    ) -> (u16, Value) {
        if let Some(obj) = body.as_object_mut() {
            obj.entry("allowed_mentions")
                .or_insert_with(|| json!({ "parse": [] }));
        }
        let resp = c
            .post(format!("{}/channels/{channel}/messages", fake.base_url()))
            .header("Authorization", "Bot test-token")
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    async fn create_thread_req(
        c: &reqwest::Client,
        fake: &FakeDiscord,
        channel: &str,
        message_id: &str,
    ) -> (u16, Value) {
        let resp = c
            .post(format!(
                "{}/channels/{channel}/messages/{message_id}/threads",
                fake.base_url()
            ))
            .header("Authorization", "Bot test-token")
            .json(&json!({ "name": "child session", "auto_archive_duration": 60 }))
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    #[tokio::test]
    async fn message_object_shape() {
        let fake = FakeDiscord::start().await;
        let c = client();
        let (status, body) = post_message(
            &c,
            &fake,
            CHANNEL,
            json!({ "content": "hello", "nonce": "n-1" }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["type"], 0);
        assert_eq!(body["channel_id"], CHANNEL);
        assert_eq!(body["content"], "hello");
        assert_eq!(body["nonce"], "n-1");
        assert_eq!(body["author"]["id"], fake.bot_user_id());
        assert_eq!(body["author"]["bot"], true);
        assert!(body["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with("+00:00")));
        let stored = fake.messages();
        assert_eq!(stored.len(), 1);
        assert_eq!(body["id"], stored[0].id);
        assert_eq!(stored[0].nonce.as_deref(), Some("n-1"));
        assert_eq!(fake.tokens_seen(), vec!["test-token".to_owned()]);
    }

    #[tokio::test]
    async fn enforce_nonce_returns_existing_message() {
        let fake = FakeDiscord::start().await;
        let c = client();
        let body = json!({ "content": "once", "nonce": "evt-1", "enforce_nonce": true });
        let (s1, first) = post_message(&c, &fake, CHANNEL, body.clone()).await;
        let (s2, second) = post_message(&c, &fake, CHANNEL, body).await;
        assert_eq!((s1, s2), (200, 200));
        assert_eq!(first["id"], second["id"]);
        assert_eq!(fake.messages().len(), 1);
        assert_eq!(fake.request_count(), 2);

        // Same nonce in another channel is a different message.
        let other = "100000000000000002";
        let body = json!({ "content": "once", "nonce": "evt-1", "enforce_nonce": true });
        let (_, third) = post_message(&c, &fake, other, body).await;
        assert_ne!(third["id"], first["id"]);
        assert_eq!(fake.messages_in(other).len(), 1);
    }

    #[tokio::test]
    async fn nonce_without_enforce_stores_duplicates() {
        let fake = FakeDiscord::start().await;
        let c = client();
        let body = json!({ "content": "twice", "nonce": "evt-2" });
        let (_, first) = post_message(&c, &fake, CHANNEL, body.clone()).await;
        let (_, second) = post_message(&c, &fake, CHANNEL, body).await;
        assert_ne!(first["id"], second["id"]);
        assert_eq!(fake.messages_in(CHANNEL).len(), 2);
        // Snowflakes grow with creation order.
        let ids: Vec<u64> = fake
            .messages()
            .iter()
            .map(|m| m.id.parse().expect("snowflake"))
            .collect();
        assert!(ids[0] < ids[1]);
    }

    #[tokio::test]
    async fn validation_errors() {
        let fake = FakeDiscord::start().await;
        let c = client();
        let (s, b) = post_message(&c, &fake, CHANNEL, json!({ "content": "x".repeat(2001) })).await;
        assert_eq!((s, b["code"].as_u64()), (400, Some(50035)));
        assert!(b["errors"]["content"]["_errors"].is_array());
        let (s, b) = post_message(&c, &fake, CHANNEL, json!({ "content": "" })).await;
        assert_eq!((s, b["code"].as_u64()), (400, Some(50006)));
        let uuid_nonce = "0b5a4f0e-8f7c-4a57-9d0a-6f7d2b1c9e11";
        let (s, b) = post_message(
            &c,
            &fake,
            CHANNEL,
            json!({ "content": "x", "nonce": uuid_nonce }),
        )
        .await;
        assert_eq!((s, b["code"].as_u64()), (400, Some(50035)));
        let (s, b) = post_message(&c, &fake, "not-a-snowflake", json!({ "content": "x" })).await;
        assert_eq!((s, b["code"].as_u64()), (400, Some(50035)));
        assert!(fake.messages().is_empty());
        // The nonce and the path broke the OpenAPI document; the rest only Discord's rules.
        let violations = fake.take_spec_violations();
        assert_eq!(violations.len(), 2, "{violations:#?}");
        assert!(
            violations[0].contains("nonce") || violations[0].contains("body"),
            "{violations:#?}"
        );
        assert!(violations[1].contains("channel_id"), "{violations:#?}");
    }

    #[tokio::test]
    async fn thread_from_message() {
        let fake = FakeDiscord::start().await;
        let c = client();
        let (_, msg) = post_message(&c, &fake, CHANNEL, json!({ "content": "starter" })).await;
        let msg_id = msg["id"].as_str().expect("id").to_owned();

        let (status, thread) = create_thread_req(&c, &fake, CHANNEL, &msg_id).await;
        assert_eq!(status, 201);
        assert_eq!(thread["id"], msg_id);
        assert_eq!(thread["type"], 11);
        assert_eq!(thread["parent_id"], CHANNEL);
        assert_eq!(thread["thread_metadata"]["archived"], false);
        assert_eq!(thread["thread_metadata"]["auto_archive_duration"], 60);

        let (status, again) = create_thread_req(&c, &fake, CHANNEL, &msg_id).await;
        assert_eq!((status, again["code"].as_u64()), (400, Some(160004)));

        let (status, unknown) = create_thread_req(&c, &fake, CHANNEL, "123456789").await;
        assert_eq!((status, unknown["code"].as_u64()), (404, Some(10008)));

        assert_eq!(
            fake.threads(),
            vec![DiscordThread {
                id: msg_id.clone(),
                parent_id: CHANNEL.to_owned(),
                name: "child session".to_owned(),
                archived: false,
                locked: false,
            }]
        );

        // The thread is a channel: readable, postable, then archived.
        let got: Value = c
            .get(format!("{}/channels/{msg_id}", fake.base_url()))
            .header("Authorization", "Bot test-token")
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(got["type"], 11);
        let (s, _) = post_message(&c, &fake, &msg_id, json!({ "content": "in thread" })).await;
        assert_eq!(s, 200);
        assert_eq!(fake.messages_in(&msg_id).len(), 1);
        // Archived: a post unarchives it (threads.mdx, "Active & Archived Threads").
        fake.archive_thread(&msg_id);
        assert!(fake.threads()[0].archived);
        let (s, _) = post_message(&c, &fake, &msg_id, json!({ "content": "late" })).await;
        assert_eq!(s, 200);
        assert!(!fake.threads()[0].archived, "the post unarchived it");
        // Locked: 160005 while active, 50083 once archived as well.
        fake.lock_thread(&msg_id);
        let (s, b) = post_message(&c, &fake, &msg_id, json!({ "content": "locked" })).await;
        assert_eq!((s, b["code"].as_u64()), (400, Some(160005)));
        fake.archive_thread(&msg_id);
        let (s, b) = post_message(&c, &fake, &msg_id, json!({ "content": "closed" })).await;
        assert_eq!((s, b["code"].as_u64()), (403, Some(50083)));
        assert!(fake.threads()[0].archived && fake.threads()[0].locked);
        assert_eq!(fake.messages_in(&msg_id).len(), 2);
    }

    #[tokio::test]
    async fn deleted_channel_is_unknown() {
        let fake = FakeDiscord::start().await;
        let c = client();
        let (_, msg) = post_message(&c, &fake, CHANNEL, json!({ "content": "starter" })).await;
        let msg_id = msg["id"].as_str().expect("id").to_owned();
        let (s, _) = create_thread_req(&c, &fake, CHANNEL, &msg_id).await;
        assert_eq!(s, 201);

        fake.delete_channel(&msg_id);
        let (s, b) = post_message(&c, &fake, &msg_id, json!({ "content": "gone" })).await;
        assert_eq!(s, 404);
        assert_eq!(b, json!({ "message": "Unknown Channel", "code": 10003 }));
        let resp = c
            .get(format!("{}/channels/{msg_id}", fake.base_url()))
            .header("Authorization", "Bot test-token")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 404);

        // Deleting a parent takes its threads with it.
        fake.delete_channel(CHANNEL);
        let (s, _) = post_message(&c, &fake, CHANNEL, json!({ "content": "gone" })).await;
        assert_eq!(s, 404);
        assert_eq!(fake.messages().len(), 1);
    }

    #[tokio::test]
    async fn rate_limit_fault_shape() {
        let fake = FakeDiscord::start().await;
        let c = client();
        fake.push_fault(Fault::RateLimited {
            retry_after_ms: 250,
        });
        let resp = c
            .post(format!("{}/channels/{CHANNEL}/messages", fake.base_url()))
            .header("Authorization", "Bot test-token")
            .json(&json!({ "content": "hi", "allowed_mentions": { "parse": [] } }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 429);
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(h("retry-after").as_deref(), Some("1"));
        assert_eq!(h("x-ratelimit-reset-after").as_deref(), Some("0.250"));
        assert_eq!(h("x-ratelimit-scope").as_deref(), Some("user"));
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body,
            json!({ "message": "You are being rate limited.", "retry_after": 0.25, "global": false })
        );
        assert!(fake.messages().is_empty());

        fake.push_fault(Fault::ServerError);
        let (s, b) = post_message(&c, &fake, CHANNEL, json!({ "content": "hi" })).await;
        assert_eq!((s, b["code"].as_u64()), (500, Some(0)));
        assert!(fake.messages().is_empty());

        // The queue is drained: the next post goes through.
        let (s, _) = post_message(&c, &fake, CHANNEL, json!({ "content": "hi" })).await;
        assert_eq!(s, 200);
        assert_eq!(fake.request_count(), 3);
    }

    #[tokio::test]
    async fn slow_fault_delays_then_succeeds() {
        let fake = FakeDiscord::start().await;
        let c = client();
        fake.push_fault(Fault::Slow { delay_ms: 150 });
        let started = std::time::Instant::now();
        let (s, _) = post_message(&c, &fake, CHANNEL, json!({ "content": "late" })).await;
        assert_eq!(s, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(fake.messages().len(), 1);
    }

    #[tokio::test]
    async fn accept_then_hang_stores_but_never_answers() {
        let fake = FakeDiscord::start().await;
        let c = client();
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 2_000 });
        let err = c
            .post(format!("{}/channels/{CHANNEL}/messages", fake.base_url()))
            .header("Authorization", "Bot test-token")
            .timeout(Duration::from_millis(300))
            .json(&json!({ "content": "maybe", "nonce": "evt-9", "enforce_nonce": true, "allowed_mentions": { "parse": [] } }))
            .send()
            .await
            .expect_err("the fake must not answer");
        assert!(err.is_timeout(), "{err:?}");
        let stored = fake.messages();
        assert_eq!(stored.len(), 1);

        // The client's retry with the same nonce finds the stored message.
        let (s, b) = post_message(
            &c,
            &fake,
            CHANNEL,
            json!({ "content": "maybe", "nonce": "evt-9", "enforce_nonce": true }),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(b["id"], stored[0].id);
        assert_eq!(fake.messages().len(), 1);

        // After the hold, the connection is dropped without any response.
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 50 });
        let err = c
            .post(format!("{}/channels/{CHANNEL}/messages", fake.base_url()))
            .header("Authorization", "Bot test-token")
            .timeout(Duration::from_secs(5))
            .json(&json!({ "content": "second", "allowed_mentions": { "parse": [] } }))
            .send()
            .await
            .expect_err("the fake must drop the connection");
        assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
        assert_eq!(fake.messages().len(), 2);
    }

    #[tokio::test]
    async fn auth_and_token_rotation() {
        let fake = FakeDiscord::start().await;
        let c = client();
        let url = format!("{}/channels/{CHANNEL}/messages", fake.base_url());
        let resp = c
            .post(&url)
            .header("Authorization", "Bot wrong")
            .json(&json!({ "content": "hi", "allowed_mentions": { "parse": [] } }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body, json!({ "message": "401: Unauthorized", "code": 0 }));
        let resp = c
            .post(&url)
            .json(&json!({ "content": "hi", "allowed_mentions": { "parse": [] } }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 401);

        fake.set_tokens(&["old", "new"]);
        for token in ["old", "new"] {
            let resp = c
                .post(&url)
                .header("Authorization", format!("Bot {token}"))
                .json(&json!({ "content": "hi", "allowed_mentions": { "parse": [] } }))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status().as_u16(), 200);
        }
        assert_eq!(fake.tokens_seen(), vec!["old".to_owned(), "new".to_owned()]);
        assert_eq!(fake.messages().len(), 2);
        assert_eq!(fake.request_count(), 4);
    }

    #[tokio::test]
    async fn list_messages_newest_first() {
        let fake = FakeDiscord::start().await;
        let c = client();
        for i in 0..3 {
            post_message(&c, &fake, CHANNEL, json!({ "content": format!("m{i}") })).await;
        }
        let list: Value = c
            .get(format!(
                "{}/channels/{CHANNEL}/messages?limit=2",
                fake.base_url()
            ))
            .header("Authorization", "Bot test-token")
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        let contents: Vec<&str> = list
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        assert_eq!(contents, vec!["m2", "m1"]);
        let got = fake.wait_for_messages(3, Duration::from_millis(100)).await;
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn drop_shuts_server_down() {
        let fake = FakeDiscord::start().await;
        let url = format!("{}/channels/{CHANNEL}", fake.base_url());
        drop(fake);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let res = client()
            .get(&url)
            .header("Authorization", "Bot test-token")
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(res.is_err(), "{res:?}");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_micros(1_709_210_096_123_456);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.123456+00:00");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000+00:00");
    }
}
