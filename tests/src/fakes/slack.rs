//! Loopback fake of the Slack Web API: bot-token auth, `chat.postMessage`
//! (threads through `thread_ts`, message `metadata`), `conversations.history`
//! and `conversations.replies`, with Slack's HTTP-200 `ok:false` errors and its
//! rate-limit shape.
//!
//! Every channel id that starts with `C` is implicitly an existing public
//! channel the bot is in, so tests need no set-up; `archive_channel` and
//! `delete_channel` produce the two permanent errors a deliverer must
//! recognise (`is_archived`, `channel_not_found`).
//!
//! Slack reports almost every failure as HTTP 200 with `{"ok":false,"error"}`,
//! so a client that only looks at the status code would count them as
//! delivered; the fake answers the same way to catch exactly that bug.
//!
//! Every request is checked against Slack's published method reference,
//! vendored in `tests/specs/slack-<method>.json` (slack-ruby/slack-api-ref):
//! each argument must be one the method documents, of its documented type,
//! and the required ones present; every error the fake answers must be one the
//! method documents. A request that breaks the reference is answered with an
//! error and recorded as a spec violation, and the fake's handle panics when
//! dropped with violations nobody took (`take_spec_violations`), so the test
//! that sent it fails.
//!
//! A reply to a thread whose root was deleted is what real Slack does with it:
//! `chat.postMessage` answers `ok: true` and posts it at the channel's top level,
//! without `thread_ts` in the answer's `message` (slack-go/slack#1571: "Slack
//! does not fail the request — it silently un-threads the reply into a
//! top-level channel message"). `thread_not_found` is no `chat.postMessage`
//! error (it is `conversations.replies`'s).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{ConnectInfo, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Map, Value};

mod listen;
pub use listen::{sign, Push, Pushed, Signing, SlackPeople, APP_TOKEN, SIGNING_SECRET};

use super::{
    auth_token, faulted, handle_methods, lock, retry_after_header_secs, serve, wait_for_len,
    Common, ConnCtl, Platform, Server, Tokens,
};

/// The bot user every accepted token authenticates as (Slack ids are
/// uppercase, prefixed by kind: U user, B bot, A app, T team).
const BOT_USER_ID: &str = "U0THREADLN";
const BOT_ID: &str = "B0THREADLN";
const APP_ID: &str = "A0THREADLN";
const TEAM_ID: &str = "T0THREADLN";
const DEFAULT_TOKEN: &str = "xoxb-test";
/// Slack's documented ceiling for `text`; past it Slack truncates.
const MAX_TEXT_CHARS: usize = 40_000;
/// Slack's default and maximum `limit` for the conversations reads.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 999;
/// Cursors are opaque to clients; Slack's are base64 of the same `next_ts:` idea.
const CURSOR_PREFIX: &str = "next_ts:";

/// A message as the fake stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlackMessage {
    /// The channel id it was posted in.
    pub channel: String,
    /// The message's `ts`, its id within the channel.
    pub ts: String,
    /// The root's `ts` for a thread reply; `None` for a top-level message.
    pub thread_ts: Option<String>,
    /// The message text as sent.
    pub text: String,
    /// `{"event_type", "event_payload"}` as sent, if the post carried metadata.
    pub metadata: Option<Value>,
    /// The author's user id (the fake's bot user for posts through the API).
    pub user: String,
    /// The name the post shows instead of the bot's (`username`, with
    /// `chat:write.customize`).
    pub username: Option<String>,
    /// The picture it shows (`icon_url`).
    pub icon_url: Option<String>,
}

impl SlackMessage {
    /// Who this message would notify on Slack: the special mentions `<!here>`,
    /// `<!channel>`, `<!everyone>`, user mentions `<@U…>` and user-group
    /// mentions `<!subteam^…>` in its text (Slack's formatting reference,
    /// "Mentioning users" / "Special mentions"; `&lt;…&gt;` is plain text).
    pub fn mentions(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('>') else { break };
            let inner = after[..end].split('|').next().unwrap_or_default();
            let notifies = matches!(inner, "!here" | "!channel" | "!everyone")
                || inner.starts_with("!subteam^")
                || (inner.starts_with('@') && inner.len() > 1);
            if notifies {
                found.push(inner.to_owned());
            }
            rest = &after[end + 1..];
        }
        found
    }
}

/// Handle to a running fake Slack; dropping it shuts the server down.
pub struct FakeSlack {
    server: Server,
    shared: Shared,
    /// Socket Mode: tickets, sockets, envelopes (`slack/listen.rs`).
    hub: std::sync::Arc<listen::Hub>,
}

type Shared = super::Shared<SlackState>;
/// A success body (with `"ok": true`) or a Slack error code.
type Outcome = Result<Value, &'static str>;

impl FakeSlack {
    /// Starts the fake on a free loopback port. Accepted token: `xoxb-test`.
    pub async fn start() -> FakeSlack {
        let routes = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.delete", post(chat_delete))
            .route("/api/apps.connections.open", post(connections_open))
            // Slack SDKs commonly POST reads as forms, so both verbs work.
            .route(
                "/api/conversations.history",
                get(conversations_history).post(conversations_history),
            )
            .route(
                "/api/conversations.replies",
                get(conversations_replies).post(conversations_replies),
            )
            .fallback(unknown_method)
            .method_not_allowed_fallback(method_not_allowed);
        let hub = listen::Hub::start().await;
        let (server, shared) = serve(SlackState::new(std::sync::Arc::clone(&hub)), routes).await;
        FakeSlack {
            server,
            shared,
            hub,
        }
    }

    /// `http://127.0.0.1:PORT/api`, the value for `THREADLINE_SLACK_API_BASE`.
    pub fn base_url(&self) -> String {
        self.server.url("/api")
    }

    /// All stored messages (top-level and replies), in creation order.
    pub fn messages(&self) -> Vec<SlackMessage> {
        let st = lock(&self.shared);
        (0..st.messages.len())
            .filter(|&i| st.live(i))
            .filter_map(|i| st.messages.get(i).map(|m| m.msg.clone()))
            .collect()
    }

    /// Stored messages of one channel in creation order: top-level ones for
    /// `thread_ts: None`, otherwise the replies (not the root) of that thread.
    pub fn messages_in(&self, channel: &str, thread_ts: Option<&str>) -> Vec<SlackMessage> {
        let st = lock(&self.shared);
        st.messages
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                st.live(*i) && m.msg.channel == channel && m.msg.thread_ts.as_deref() == thread_ts
            })
            .map(|(_, m)| m.msg.clone())
            .collect()
    }

    /// Archives a channel: posting answers `is_archived`, reading still works
    /// (as in Slack, where archived history stays readable).
    pub fn archive_channel(&self, id: &str) {
        lock(&self.shared).archived.insert(id.to_owned());
    }

    /// Deletes a channel: every method answers `channel_not_found` for it.
    pub fn delete_channel(&self, id: &str) {
        lock(&self.shared).deleted.insert(id.to_owned());
    }

    /// Deletes a message as a person would (a thread's root: the thread goes with
    /// it). Later replies to it land at the channel's top level, answered `ok`
    /// without `thread_ts`; `conversations.replies` answers `thread_not_found`.
    pub fn delete_message(&self, ts: &str) {
        let mut st = lock(&self.shared);
        if let Some(us) = parse_ts(ts) {
            st.remove(us);
        }
    }

    /// Answers the next `chat.postMessage` with `ok: false` and `error` (HTTP 200, as Slack
    /// answers every documented error), storing nothing. Panics for an error
    /// `chat.postMessage` does not document: the fake answers only what Slack can.
    pub fn push_post_error(&self, error: &str) {
        assert!(
            spec::POST_MESSAGE.documents_error(error),
            "chat.postMessage does not document `{error}`"
        );
        lock(&self.shared).post_errors.push_back(error.to_owned());
    }

    /// Each request that broke the vendored method reference (`method: what`),
    /// taken, so the handle's drop does not fail the test for them.
    pub fn take_spec_violations(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.shared).violations)
    }

    /// The user id every message posted through the fake is attributed to.
    pub fn bot_user_id(&self) -> String {
        BOT_USER_ID.to_owned()
    }

    /// Waits until at least `n` messages are stored or `timeout` passes, and
    /// returns whatever is stored then (the caller asserts on the count).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SlackMessage> {
        wait_for_len(n, timeout, || self.messages()).await
    }
}

handle_methods!(FakeSlack, faults: "`chat.postMessage`", tokens);

impl Drop for FakeSlack {
    /// A request the published reference does not allow fails the test that sent it.
    fn drop(&mut self) {
        let mut violations = std::mem::take(&mut lock(&self.shared).violations);
        violations.extend(self.take_socket_violations());
        if !violations.is_empty() && !std::thread::panicking() {
            panic!("requests to the Slack fake broke Slack's method reference: {violations:#?}");
        }
    }
}

/// Slack's published method references (`tests/specs/slack-<method>.json`) and
/// the check of one request's arguments against them.
mod spec {
    use serde_json::{Map, Value};
    use std::sync::LazyLock;

    pub(super) struct Method {
        pub(super) name: &'static str,
        args: Map<String, Value>,
        errors: Map<String, Value>,
    }

    fn load(name: &'static str, text: &str) -> Method {
        let doc: Value = serde_json::from_str(text).expect("vendored Slack spec is JSON");
        let field = |key: &str| doc[key].as_object().cloned().unwrap_or_default();
        Method {
            name,
            args: field("args"),
            errors: field("errors"),
        }
    }

    pub(super) static POST_MESSAGE: LazyLock<Method> = LazyLock::new(|| {
        load(
            "chat.postMessage",
            include_str!("../../specs/slack-chat.postMessage.json"),
        )
    });
    pub(super) static CONNECTIONS_OPEN: LazyLock<Method> = LazyLock::new(|| {
        load(
            "apps.connections.open",
            include_str!("../../specs/slack-apps.connections.open.json"),
        )
    });
    pub(super) static DELETE: LazyLock<Method> = LazyLock::new(|| {
        load(
            "chat.delete",
            include_str!("../../specs/slack-chat.delete.json"),
        )
    });
    pub(super) static HISTORY: LazyLock<Method> = LazyLock::new(|| {
        load(
            "conversations.history",
            include_str!("../../specs/slack-conversations.history.json"),
        )
    });
    pub(super) static REPLIES: LazyLock<Method> = LazyLock::new(|| {
        load(
            "conversations.replies",
            include_str!("../../specs/slack-conversations.replies.json"),
        )
    });

    /// Errors every method answers though the per-method lists no longer name
    /// them: `invalid_auth` (a wrong token; listed per method until slack-api-ref
    /// 860ab16d, 2025-09-06) and `invalid_arguments` (arguments of the wrong
    /// shape, as Slack answers them, e.g. sgratzl/slack-cleaner#73).
    /// So are `invalid_json` and `json_not_object`, Slack's answers to a JSON body it
    /// cannot read (docs.slack.dev, "Web API", "JSON-encoded bodies").
    const COMMON_ERRORS: [&str; 4] = [
        "invalid_auth",
        "invalid_arguments",
        "invalid_json",
        "json_not_object",
    ];

    impl Method {
        pub(super) fn documents_error(&self, error: &str) -> bool {
            self.errors.contains_key(error) || COMMON_ERRORS.contains(&error)
        }

        /// What is wrong with `params` by the reference, and the documented
        /// error Slack would answer it with.
        pub(super) fn check(
            &self,
            params: &Map<String, Value>,
        ) -> Result<(), (String, &'static str)> {
            for (name, value) in params {
                // The token may come as a POST argument instead of the header.
                if name == "token" {
                    continue;
                }
                let Some(arg) = self.args.get(name) else {
                    return Err((format!("unknown argument `{name}`"), "invalid_arg_name"));
                };
                if value.is_array() && !takes_json(arg) {
                    return Err((format!("`{name}` is an array"), "invalid_array_arg"));
                }
                if !type_matches(arg, value) {
                    // The method's own error for a bad timestamp, where it documents one.
                    let error = match name.as_str() {
                        "oldest" if self.errors.contains_key("invalid_ts_oldest") => {
                            "invalid_ts_oldest"
                        }
                        "latest" if self.errors.contains_key("invalid_ts_latest") => {
                            "invalid_ts_latest"
                        }
                        _ => "invalid_arguments",
                    };
                    return Err((
                        format!("`{name}` = {value} is not of type {}", arg["type"]),
                        error,
                    ));
                }
            }
            for (name, arg) in &self.args {
                if arg["required"] == true && !params.contains_key(name) {
                    let error = match name.as_str() {
                        "channel" => "channel_not_found",
                        "ts" if self.name == "chat.delete" => "message_not_found",
                        "ts" => "thread_not_found",
                        _ => "invalid_arguments",
                    };
                    return Err((format!("required argument `{name}` missing"), error));
                }
            }
            Ok(())
        }
    }

    fn takes_json(arg: &Value) -> bool {
        arg["format"] == "json"
    }

    /// A value of one of the documented types. Forms and queries carry every
    /// value as a string, so a string spelling of the type counts too.
    fn type_matches(arg: &Value, value: &Value) -> bool {
        let types: Vec<&str> = match &arg["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => vec!["string"],
        };
        types.iter().any(|t| match (*t, value) {
            // JSON-formatted arguments ("presented as a URL-encoded string"): a JSON
            // body may carry them as JSON itself.
            (_, Value::Object(_) | Value::Array(_)) => takes_json(arg),
            (_, Value::String(s)) if takes_json(arg) && *t == "string" => {
                serde_json::from_str::<Value>(s).is_ok()
            }
            ("boolean", Value::Bool(_)) => true,
            ("boolean", Value::String(s)) => matches!(s.as_str(), "true" | "false" | "1" | "0"),
            ("number", Value::Number(_)) => true,
            ("number", Value::String(s)) => s.parse::<f64>().is_ok(),
            ("timestamp", Value::String(s)) => {
                s.is_empty() || super::parse_ts(s).is_some() || s == "now"
            }
            ("timestamp", Value::Number(_)) => true,
            ("string" | "channel", Value::String(_)) => true,
            _ => false,
        })
    }
}

struct StoredMessage {
    msg: SlackMessage,
    /// `ts` in microseconds: Slack timestamps compare as numbers, not strings.
    ts_us: u64,
    /// For a root: indexes (into `messages`) of its replies, oldest first.
    replies: Vec<usize>,
}

struct SlackState {
    common: Common,
    tokens: Tokens,
    messages: Vec<StoredMessage>,
    /// `ts` (µs) → index in `messages`; ts values are unique across channels.
    by_ts: HashMap<u64, usize>,
    archived: HashSet<String>,
    deleted: HashSet<String>,
    last_ts_us: u64,
    /// Requests that broke the vendored reference, and errors the fake answered that the
    /// method does not document (a fake bug): `method: what`.
    violations: Vec<String>,
    /// Scripted `ok: false` answers for the next posts (`push_post_error`).
    post_errors: std::collections::VecDeque<String>,
    /// Socket Mode's side, where `apps.connections.open` gets its URLs.
    hub: std::sync::Arc<listen::Hub>,
    /// The app-level tokens (`xapp-…`) `apps.connections.open` accepts.
    app_tokens: Tokens,
    /// Every `event_callback` payload made, oldest first, and how many.
    events: Vec<Value>,
    events_made: u64,
}

/// The `oldest`/`latest`/`inclusive` time window shared by both reads.
struct Window {
    oldest: Option<u64>,
    latest: Option<u64>,
    inclusive: bool,
}

impl Window {
    fn parse(p: &Map<String, Value>) -> Result<Window, &'static str> {
        let bound = |key: &str, err: &'static str| match str_param(p, key) {
            None => Ok(None),
            Some(raw) if raw.is_empty() => Ok(None),
            Some(raw) => parse_ts(&raw).map(Some).ok_or(err),
        };
        Ok(Window {
            oldest: bound("oldest", "invalid_ts_oldest")?,
            latest: bound("latest", "invalid_ts_latest")?,
            inclusive: flag_param(p, "inclusive"),
        })
    }

    fn contains(&self, ts_us: u64) -> bool {
        let after_oldest = self
            .oldest
            .is_none_or(|o| ts_us > o || (self.inclusive && ts_us == o));
        let before_latest = self
            .latest
            .is_none_or(|l| ts_us < l || (self.inclusive && ts_us == l));
        after_oldest && before_latest
    }
}

impl SlackState {
    fn new(hub: std::sync::Arc<listen::Hub>) -> SlackState {
        SlackState {
            hub,
            app_tokens: Tokens::new(APP_TOKEN),
            events: Vec::new(),
            events_made: 0,
            common: Common::default(),
            tokens: Tokens::new(DEFAULT_TOKEN),
            messages: Vec::new(),
            by_ts: HashMap::new(),
            archived: HashSet::new(),
            deleted: HashSet::new(),
            last_ts_us: 0,
            violations: Vec::new(),
            post_errors: std::collections::VecDeque::new(),
        }
    }

    /// Real-looking `ts` (Unix time with microseconds), forced strictly
    /// increasing so creation order and ts order always agree.
    fn next_ts_us(&mut self) -> u64 {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_ts_us = now_us.max(self.last_ts_us + 1);
        self.last_ts_us
    }

    /// A channel exists if it looks like a public-channel id and was not
    /// deleted; `for_post` also refuses archived channels.
    fn check_channel(&self, id: &str, for_post: bool) -> Result<(), &'static str> {
        let looks_like_channel =
            id.len() > 1 && id.starts_with('C') && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !looks_like_channel || self.deleted.contains(id) {
            return Err("channel_not_found");
        }
        if for_post && self.archived.contains(id) {
            return Err("is_archived");
        }
        Ok(())
    }

    fn get(&self, ts_us: u64) -> Option<(usize, &StoredMessage)> {
        let i = *self.by_ts.get(&ts_us)?;
        self.messages.get(i).map(|m| (i, m))
    }

    /// Removes a message (a root with its replies, which Slack's clients no longer
    /// show either). Indexes stay valid: removed entries are only unlinked.
    fn remove(&mut self, ts_us: u64) -> bool {
        let Some(i) = self.by_ts.remove(&ts_us) else {
            return false;
        };
        let Some(removed) = self.messages.get(i) else {
            return false;
        };
        let replies: Vec<u64> = removed
            .replies
            .iter()
            .filter_map(|&r| self.messages.get(r).map(|m| m.ts_us))
            .collect();
        for r in replies {
            self.by_ts.remove(&r);
        }
        let root = removed
            .msg
            .thread_ts
            .as_deref()
            .and_then(parse_ts)
            .and_then(|us| self.by_ts.get(&us).copied());
        if let Some(root_msg) = root.and_then(|r| self.messages.get_mut(r)) {
            root_msg.replies.retain(|&r| r != i);
        }
        true
    }

    /// Whether the message at index `i` still exists.
    fn live(&self, i: usize) -> bool {
        self.messages
            .get(i)
            .is_some_and(|m| self.by_ts.get(&m.ts_us) == Some(&i))
    }

    fn delete(&mut self, p: &Map<String, Value>) -> Outcome {
        let channel = str_param(p, "channel").ok_or("channel_not_found")?;
        self.check_channel(&channel, false)?;
        let ts = str_param(p, "ts").ok_or("message_not_found")?;
        let us = parse_ts(&ts).ok_or("message_not_found")?;
        let in_channel = self.get(us).is_some_and(|(_, m)| m.msg.channel == channel);
        if !in_channel || !self.remove(us) {
            return Err("message_not_found");
        }
        Ok(json!({ "ok": true, "channel": channel, "ts": ts }))
    }

    fn post_message(&mut self, p: &Map<String, Value>) -> Outcome {
        let channel = match p.get("channel") {
            None | Some(Value::Null) => return Err("channel_not_found"),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("invalid_arguments"),
        };
        self.check_channel(&channel, true)?;
        let text = match p.get("text") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("invalid_arguments"),
        };
        if text.is_empty() {
            return Err("no_text");
        }
        // No error for long text: "Slack will truncate messages containing more than
        // 40,000 characters" (docs.slack.dev chat.postMessage, "Truncating content").
        let text: String = text.chars().take(MAX_TEXT_CHARS).collect();
        let root = match p.get("thread_ts") {
            None | Some(Value::Null) => None,
            // Clients often send "" for "not in a thread"; Slack posts top-level.
            Some(Value::String(s)) if s.is_empty() => None,
            // A ts naming no message of this channel (a deleted root) is no error: the
            // post lands at the top level, answered `ok` (see the module comment). A
            // reply's ts threads under its root ("avoid using a reply's ts value; use its
            // parent instead" — advice, not an error).
            Some(Value::String(s)) => parse_ts(s)
                .and_then(|us| self.get(us))
                .filter(|(_, m)| m.msg.channel == channel)
                .and_then(
                    |(i, m)| match m.msg.thread_ts.as_deref().and_then(parse_ts) {
                        Some(root) => self.get(root).map(|(r, _)| r),
                        None => Some(i),
                    },
                ),
            Some(_) => return Err("invalid_arguments"),
        };
        let metadata = parse_metadata(p.get("metadata"))?;
        let string = |key: &str| p.get(key).and_then(Value::as_str).map(str::to_owned);
        let (username, icon_url) = (string("username"), string("icon_url"));
        // `unfurl_links`, `mrkdwn` and the like change rendering only: accepted, ignored.

        let ts_us = self.next_ts_us();
        let index = self.messages.len();
        let thread_ts = match root {
            Some(r) => {
                let root_msg = self.messages.get_mut(r).ok_or("fatal_error")?;
                root_msg.replies.push(index);
                Some(root_msg.msg.ts.clone())
            }
            None => None,
        };
        let stored = StoredMessage {
            msg: SlackMessage {
                channel: channel.clone(),
                ts: format_ts(ts_us),
                thread_ts,
                text,
                metadata,
                user: BOT_USER_ID.to_owned(),
                username,
                icon_url,
            },
            ts_us,
            replies: Vec::new(),
        };
        self.by_ts.insert(ts_us, index);
        self.messages.push(stored);
        let Some(stored) = self.messages.get(index) else {
            return Err("fatal_error");
        };
        Ok(json!({
            "ok": true,
            "channel": channel,
            "ts": stored.msg.ts,
            "message": self.message_json(stored, true),
        }))
    }

    fn history(&self, p: &Map<String, Value>) -> Outcome {
        let channel = str_param(p, "channel").ok_or("channel_not_found")?;
        self.check_channel(&channel, false)?;
        let window = Window::parse(p)?;
        let limit = limit_param(p)?;
        let cursor = cursor_param(p)?;
        let with_metadata = flag_param(p, "include_all_metadata");
        // Newest first, as Slack pages backwards from `latest`; the cursor
        // continues below the oldest message of the previous page.
        let mut page: Vec<&StoredMessage> = self
            .messages
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, _)| self.live(*i))
            .map(|(_, m)| m)
            .filter(|m| m.msg.channel == channel && m.msg.thread_ts.is_none())
            .filter(|m| window.contains(m.ts_us) && cursor.is_none_or(|c| m.ts_us < c))
            .take(limit + 1)
            .collect();
        let has_more = page.len() > limit;
        page.truncate(limit);
        let next = page.last().filter(|_| has_more).map(|m| m.ts_us);
        let messages: Vec<Value> = page
            .into_iter()
            .map(|m| self.message_json(m, with_metadata))
            .collect();
        Ok(page_json(messages, has_more, next))
    }

    fn replies(&self, p: &Map<String, Value>) -> Outcome {
        let channel = str_param(p, "channel").ok_or("channel_not_found")?;
        self.check_channel(&channel, false)?;
        let ts = str_param(p, "ts").ok_or("invalid_arguments")?;
        let window = Window::parse(p)?;
        let limit = limit_param(p)?;
        let cursor = cursor_param(p)?;
        let with_metadata = flag_param(p, "include_all_metadata");
        let found = parse_ts(&ts)
            .and_then(|us| self.get(us))
            .filter(|(_, m)| m.msg.channel == channel)
            .ok_or("thread_not_found")?;
        // A reply's ts names its whole thread, as in Slack.
        let root = match found.1.msg.thread_ts.as_deref() {
            None => found.1,
            Some(root_ts) => parse_ts(root_ts)
                .and_then(|us| self.get(us))
                .map(|(_, m)| m)
                .ok_or("thread_not_found")?,
        };
        // The root always leads the page; `limit` counts replies only, so a
        // cursor-following client always makes progress.
        let mut page: Vec<&StoredMessage> = root
            .replies
            .iter()
            .filter(|&&i| self.live(i))
            .filter_map(|&i| self.messages.get(i))
            .filter(|m| window.contains(m.ts_us) && cursor.is_none_or(|c| m.ts_us > c))
            .take(limit + 1)
            .collect();
        let has_more = page.len() > limit;
        page.truncate(limit);
        let next = page.last().filter(|_| has_more).map(|m| m.ts_us);
        let messages: Vec<Value> = std::iter::once(root)
            .chain(page)
            .map(|m| self.message_json(m, with_metadata))
            .collect();
        Ok(page_json(messages, has_more, next))
    }

    /// A Slack message object as a bot token's post produces it (no
    /// `subtype`: that is only for legacy `bot_message` posts).
    fn message_json(&self, m: &StoredMessage, with_metadata: bool) -> Value {
        let mut v = json!({
            "type": "message",
            "text": m.msg.text,
            "user": m.msg.user,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": m.msg.ts,
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(thread_ts) = &m.msg.thread_ts {
                obj.insert("thread_ts".into(), json!(thread_ts));
                obj.insert("parent_user_id".into(), json!(BOT_USER_ID));
            } else if let Some(&last) = m.replies.last() {
                // A root with replies carries its own ts as thread_ts, as in
                // Slack: clients must not take thread_ts alone to mean "reply".
                let latest = self
                    .messages
                    .get(last)
                    .map(|r| r.msg.ts.clone())
                    .unwrap_or_default();
                obj.insert("thread_ts".into(), json!(m.msg.ts));
                obj.insert("reply_count".into(), json!(m.replies.len()));
                obj.insert("reply_users_count".into(), json!(1));
                obj.insert("reply_users".into(), json!([BOT_USER_ID]));
                obj.insert("latest_reply".into(), json!(latest));
            }
            if with_metadata {
                if let Some(md) = &m.msg.metadata {
                    obj.insert("metadata".into(), md.clone());
                }
            }
        }
        v
    }
}

fn page_json(messages: Vec<Value>, has_more: bool, next: Option<u64>) -> Value {
    let mut v = json!({ "ok": true, "messages": messages, "has_more": has_more });
    if let (Some(obj), Some(next)) = (v.as_object_mut(), next) {
        obj.insert(
            "response_metadata".into(),
            json!({ "next_cursor": format!("{CURSOR_PREFIX}{next}") }),
        );
    }
    v
}

/// Slack message metadata: an object with a string `event_type` and an
/// object `event_payload`. Form posts send it as a JSON string, so that is
/// accepted too. Only those two fields are kept, as Slack does.
fn parse_metadata(raw: Option<&Value>) -> Result<Option<Value>, &'static str> {
    let parsed;
    let obj = match raw {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|_| "invalid_metadata_format")?;
            parsed.as_object().ok_or("invalid_metadata_format")?
        }
        Some(Value::Object(o)) => o,
        Some(_) => return Err("invalid_metadata_format"),
    };
    match (obj.get("event_type"), obj.get("event_payload")) {
        (Some(Value::String(t)), Some(payload @ Value::Object(_))) if !t.is_empty() => {
            Ok(Some(json!({ "event_type": t, "event_payload": payload })))
        }
        _ => Err("invalid_metadata_format"),
    }
}

/// Parses a Slack `ts` (`"1700000000.000100"`, or whole seconds) to µs.
fn parse_ts(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || frac.len() > 6 || !digits(frac) {
        return None;
    }
    let frac_us = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse::<u64>().ok()?
    };
    secs.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(frac_us)
}

fn format_ts(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// A parameter as a string, whether it came from a query, a form or JSON.
fn str_param(p: &Map<String, Value>, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Slack booleans arrive as `true`, `"true"` or `"1"`.
fn flag_param(p: &Map<String, Value>, key: &str) -> bool {
    str_param(p, key).is_some_and(|v| v == "true" || v == "1")
}

fn limit_param(p: &Map<String, Value>) -> Result<usize, &'static str> {
    match str_param(p, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) if raw.is_empty() => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(0) => Ok(DEFAULT_LIMIT),
            Ok(n) => Ok(n.min(MAX_LIMIT)),
            Err(_) => Err("invalid_arguments"),
        },
    }
}

fn cursor_param(p: &Map<String, Value>) -> Result<Option<u64>, &'static str> {
    match str_param(p, "cursor") {
        None => Ok(None),
        Some(raw) if raw.is_empty() => Ok(None),
        Some(raw) => raw
            .strip_prefix(CURSOR_PREFIX)
            .and_then(|n| n.parse::<u64>().ok())
            .map(Some)
            .ok_or("invalid_cursor"),
    }
}

/// Decodes `a=1&b=2` with axum's query parser (no separate form crate here).
fn parse_urlencoded(s: &str) -> Result<Vec<(String, String)>, &'static str> {
    let uri: Uri = format!("/?{s}").parse().map_err(|_| "invalid_form_data")?;
    Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| pairs)
        .map_err(|_| "invalid_form_data")
}

/// Collects a request's arguments: query parameters, then a JSON or form
/// body on top, with Slack's error codes for bodies it cannot read.
fn request_params(
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, &'static str> {
    let mut params = Map::new();
    if let Some(q) = uri.query() {
        for (k, v) in parse_urlencoded(q).map_err(|_| "invalid_arguments")? {
            params.insert(k, Value::String(v));
        }
    }
    if body.is_empty() {
        return Ok(params);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        None => Err("missing_post_type"),
        Some("application/json") => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => {
                params.extend(o);
                Ok(params)
            }
            Ok(_) => Err("json_not_object"),
            Err(_) => Err("invalid_json"),
        },
        Some("application/x-www-form-urlencoded") => {
            let text = std::str::from_utf8(body).map_err(|_| "invalid_form_data")?;
            for (k, v) in parse_urlencoded(text)? {
                params.insert(k, Value::String(v));
            }
            Ok(params)
        }
        // Multipart and the rest are not modelled; Slack's code for an
        // unusable Content-Type keeps a client bug visible.
        Some(_) => Err("invalid_post_type"),
    }
}

/// Checks `Authorization: Bearer <token>` against the accepted set and
/// records the token, so token-rotation tests can see which one each request
/// used. No token at all is `not_authed` ("No authentication token provided").
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), &'static str> {
    match auth_token(headers, "Bearer ") {
        Some(t) if lock(shared).tokens.check(t) => Ok(()),
        Some(_) => Err("invalid_auth"),
        None => Err("not_authed"),
    }
}

/// One method's request: its arguments read and checked against the method's
/// reference, then `run`. Every answer's error is checked to be one the method
/// documents.
fn run_method(
    st: &mut SlackState,
    method: &spec::Method,
    request: (&Uri, &HeaderMap, &[u8]),
    run: fn(&mut SlackState, &Map<String, Value>) -> Outcome,
) -> Response {
    let (uri, headers, body) = request;
    let outcome = request_params(uri, headers, body).and_then(|params| {
        if let Err((what, error)) = method.check(&params) {
            st.violations.push(format!("{}: {what}", method.name));
            return Err(error);
        }
        run(st, &params)
    });
    answer(st, method, outcome)
}

/// Slack answers errors with HTTP 200 and `ok:false`; one the method does not
/// document is a fake bug, recorded like a client's violation.
fn answer(st: &mut SlackState, method: &spec::Method, outcome: Outcome) -> Response {
    if let Err(error) = &outcome {
        if !method.documents_error(error) {
            st.violations.push(format!(
                "{}: the fake answered undocumented error `{error}`",
                method.name
            ));
        }
    }
    reply(outcome)
}

/// Slack's answer to a request without a valid token, if it has none.
fn unauthorized(shared: &Shared, method: &spec::Method, headers: &HeaderMap) -> Option<Response> {
    authorize(shared, headers)
        .err()
        .map(|e| answer(&mut lock(shared), method, Err(e)))
}

/// Auth, then the fault source (a real rate limiter answers before the
/// request's content is looked at), then the post itself.
async fn post_message(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = &*spec::POST_MESSAGE;
    if let Some(r) = unauthorized(&shared, method, &headers) {
        return r;
    }
    faulted(&shared, &conn, |st| match st.post_errors.pop_front() {
        Some(error) => reply(Ok(json!({ "ok": false, "error": error }))),
        None => run_method(
            st,
            method,
            (&uri, &headers, &body),
            SlackState::post_message,
        ),
    })
    .await
}

/// Deletes are never faulted (only message-creating requests are).
async fn chat_delete(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = &*spec::DELETE;
    if let Some(r) = unauthorized(&shared, method, &headers) {
        return r;
    }
    run_method(
        &mut lock(&shared),
        method,
        (&uri, &headers, &body),
        SlackState::delete,
    )
}

/// Reads are never faulted, so tests can always read state back.
async fn conversations_history(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = &*spec::HISTORY;
    if let Some(r) = unauthorized(&shared, method, &headers) {
        return r;
    }
    run_method(
        &mut lock(&shared),
        method,
        (&uri, &headers, &body),
        |st, p| st.history(p),
    )
}

async fn conversations_replies(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = &*spec::REPLIES;
    if let Some(r) = unauthorized(&shared, method, &headers) {
        return r;
    }
    run_method(
        &mut lock(&shared),
        method,
        (&uri, &headers, &body),
        |st, p| st.replies(p),
    )
}

/// `apps.connections.open`: an app-level token (a bot token is the wrong type), no
/// arguments, and a single-use websocket URL.
async fn connections_open(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = &*spec::CONNECTIONS_OPEN;
    let mut st = lock(&shared);
    let auth = match auth_token(&headers, "Bearer ") {
        Some(t) if st.app_tokens.check(t) => Ok(()),
        Some(t) if st.tokens.check(t) => Err("not_allowed_token_type"),
        Some(_) => Err("invalid_auth"),
        None => Err("not_authed"),
    };
    if let Err(error) = auth {
        return answer(&mut st, method, Err(error));
    }
    run_method(&mut st, method, (&uri, &headers, &body), |st, _| {
        Ok(json!({ "ok": true, "url": st.hub.open_url() }))
    })
}

/// Slack's answer for a method name it does not know.
async fn unknown_method(uri: Uri) -> Response {
    let method = uri.path().trim_start_matches("/api/").to_owned();
    let body = json!({ "ok": false, "error": "unknown_method", "req_method": method });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Slack itself would take `chat.postMessage` as a GET with query
/// parameters; the fake refuses, so a client putting message text into URLs
/// (and so into proxy logs) shows up in tests.
async fn method_not_allowed() -> Response {
    let body = json!({ "ok": false, "error": "method_not_allowed" });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// Slack answers errors with HTTP 200 and `ok:false`.
fn reply(outcome: Outcome) -> Response {
    let body = outcome.unwrap_or_else(|error| json!({ "ok": false, "error": error }));
    (StatusCode::OK, Json(body)).into_response()
}

impl Platform for SlackState {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    /// Slack's 429: whole-second `Retry-After` (at least 1, since Slack never
    /// sends 0) and a `ratelimited` error body.
    fn rate_limited(retry_after_ms: u64) -> Response {
        let secs = retry_after_header_secs(retry_after_ms).max(1);
        let body = json!({ "ok": false, "error": "ratelimited" });
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }

    /// A real 500 status, not Slack's usual HTTP-200 `ok:false`.
    fn server_error() -> Response {
        // `fatal_error` is documented by every method the fake serves ("it's possible
        // some aspect of the operation succeeded").
        let body = json!({ "ok": false, "error": "fatal_error" });
        (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fakes::{server_errors_only, test_client as client, Fault, FaultCounts};

    const CHANNEL: &str = "C0TEST0001";
    const TOKEN: &str = "xoxb-test";

    async fn post(c: &reqwest::Client, fake: &FakeSlack, body: Value) -> (u16, Value) {
        let resp = c
            .post(format!("{}/chat.postMessage", fake.base_url()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// A read with the query already encoded (reqwest's `query` feature is off;
    /// ts values and ids need no escaping).
    async fn read(c: &reqwest::Client, fake: &FakeSlack, method: &str, query: &str) -> Value {
        let resp = c
            .get(format!("{}/{method}?{query}", fake.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.expect("json body")
    }

    fn texts(body: &Value) -> Vec<String> {
        body["messages"]
            .as_array()
            .expect("messages array")
            .iter()
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect()
    }

    async fn post_ts(c: &reqwest::Client, fake: &FakeSlack, body: Value) -> String {
        let (status, b) = post(c, fake, body).await;
        assert_eq!((status, &b["ok"]), (200, &json!(true)), "{b}");
        b["ts"].as_str().expect("ts").to_owned()
    }

    #[tokio::test]
    async fn post_and_read_back_with_metadata() {
        let fake = FakeSlack::start().await;
        let c = client();
        let metadata =
            json!({ "event_type": "threadline_event", "event_payload": { "id": "evt-1" } });
        let (status, body) = post(
            &c,
            &fake,
            json!({ "channel": CHANNEL, "text": "root", "metadata": metadata, "unfurl_links": false, "mrkdwn": true }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["ok"], true);
        assert_eq!(body["channel"], CHANNEL);
        let root_ts = body["ts"].as_str().expect("ts").to_owned();
        assert!(parse_ts(&root_ts).is_some() && root_ts.split('.').nth(1).map(str::len) == Some(6));
        let msg = &body["message"];
        assert_eq!(msg["type"], "message");
        assert_eq!(msg["text"], "root");
        assert_eq!(msg["user"], fake.bot_user_id());
        assert_eq!(msg["bot_id"], BOT_ID);
        assert_eq!(msg["ts"], root_ts.as_str());
        assert_eq!(msg["metadata"], metadata);
        assert!(msg.get("subtype").is_none() && msg.get("thread_ts").is_none());

        let (_, reply_body) = post(
            &c,
            &fake,
            json!({
                "channel": CHANNEL,
                "text": "reply",
                "thread_ts": root_ts,
                "metadata": { "event_type": "threadline_event", "event_payload": { "id": "evt-2" } },
            }),
        )
        .await;
        assert_eq!(reply_body["message"]["thread_ts"], root_ts.as_str());
        let reply_ts = reply_body["ts"].as_str().expect("ts").to_owned();

        // History: top-level only, metadata only on request.
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}&include_all_metadata=true"),
        )
        .await;
        assert_eq!(
            (h["ok"].clone(), h["has_more"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(texts(&h), vec!["root"]);
        let root = &h["messages"][0];
        assert_eq!(root["metadata"], metadata);
        assert_eq!(root["thread_ts"], root_ts.as_str());
        assert_eq!(root["reply_count"], 1);
        assert_eq!(root["latest_reply"], reply_ts.as_str());
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}"),
        )
        .await;
        assert!(h["messages"][0].get("metadata").is_none());

        // Replies: root first, then the reply, with metadata.
        let r = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts={root_ts}&include_all_metadata=true"),
        )
        .await;
        assert_eq!(texts(&r), vec!["root", "reply"]);
        assert_eq!(r["messages"][1]["metadata"]["event_payload"]["id"], "evt-2");
        assert_eq!(r["messages"][1]["thread_ts"], root_ts.as_str());
        assert_eq!(r["has_more"], false);
        // A reply's ts names the same thread.
        let r2 = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts={reply_ts}"),
        )
        .await;
        assert_eq!(texts(&r2), vec!["root", "reply"]);

        // Inspection API.
        let top = fake.messages_in(CHANNEL, None);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].metadata.as_ref(), Some(&metadata));
        let replies = fake.messages_in(CHANNEL, Some(&root_ts));
        assert_eq!(
            replies,
            vec![SlackMessage {
                channel: CHANNEL.to_owned(),
                ts: reply_ts,
                thread_ts: Some(root_ts),
                text: "reply".to_owned(),
                metadata: Some(
                    json!({ "event_type": "threadline_event", "event_payload": { "id": "evt-2" } })
                ),
                user: BOT_USER_ID.to_owned(),
                username: None,
                icon_url: None,
            }]
        );
        assert_eq!(fake.messages().len(), 2);
        assert_eq!(fake.tokens_seen().len(), 6);
        assert_eq!(fake.request_count(), 6);
    }

    #[tokio::test]
    async fn ts_strictly_increasing() {
        let fake = FakeSlack::start().await;
        let c = client();
        for i in 0..20 {
            post_ts(
                &c,
                &fake,
                json!({ "channel": CHANNEL, "text": format!("m{i}") }),
            )
            .await;
        }
        let ts: Vec<u64> = fake
            .messages()
            .iter()
            .map(|m| parse_ts(&m.ts).expect("ts"))
            .collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    }

    #[tokio::test]
    async fn errors_are_http_200_ok_false() {
        let fake = FakeSlack::start().await;
        let c = client();
        let url = format!("{}/chat.postMessage", fake.base_url());
        let error_of = |b: &Value| b["error"].as_str().map(str::to_owned);

        // Auth: wrong token, and no token at all.
        let resp = c
            .post(&url)
            .bearer_auth("xoxb-wrong")
            .json(&json!({ "channel": CHANNEL, "text": "hi" }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b, json!({ "ok": false, "error": "invalid_auth" }));
        let resp = c
            .post(&url)
            .json(&json!({ "channel": CHANNEL, "text": "hi" }))
            .send()
            .await
            .expect("send");
        let b: Value = resp.json().await.expect("json");
        assert_eq!(error_of(&b).as_deref(), Some("not_authed"));
        assert!(fake.tokens_seen().is_empty());

        let root_ts = post_ts(&c, &fake, json!({ "channel": CHANNEL, "text": "root" })).await;
        let reply_ts = post_ts(
            &c,
            &fake,
            json!({ "channel": CHANNEL, "text": "r", "thread_ts": root_ts }),
        )
        .await;

        let cases = [
            (json!({ "channel": CHANNEL, "text": "" }), "no_text"),
            (json!({ "channel": CHANNEL }), "no_text"),
            (
                json!({ "channel": "D0NOTCHAN", "text": "x" }),
                "channel_not_found",
            ),
            (
                json!({ "channel": CHANNEL, "text": "x", "metadata": { "event_type": "e" } }),
                "invalid_metadata_format",
            ),
        ];
        for (body, want) in cases {
            let (status, b) = post(&c, &fake, body.clone()).await;
            assert_eq!(
                (status, error_of(&b).as_deref()),
                (200, Some(want)),
                "{body}"
            );
            assert_eq!(b["ok"], false);
        }
        assert!(fake.take_spec_violations().is_empty());
        // Requests the reference does not allow are refused and recorded.
        let broken = [
            (json!({ "text": "x" }), "channel_not_found"),
            (
                json!({ "channel": CHANNEL, "text": "x", "colour": "red" }),
                "invalid_arg_name",
            ),
            (
                json!({ "channel": CHANNEL, "text": "x", "unfurl_links": "maybe" }),
                "invalid_arguments",
            ),
            (
                json!({ "channel": CHANNEL, "text": ["x"] }),
                "invalid_array_arg",
            ),
        ];
        for (body, want) in broken {
            let (_, b) = post(&c, &fake, body.clone()).await;
            assert_eq!(error_of(&b).as_deref(), Some(want), "{body}");
        }
        let violations = fake.take_spec_violations();
        assert_eq!(violations.len(), 4, "{violations:?}");
        assert!(violations[1].contains("unknown argument `colour`"));
        assert_eq!(fake.messages().len(), 2);

        // Past 40,000 characters Slack truncates; it has no error for long text.
        let (_, b) = post(
            &c,
            &fake,
            json!({ "channel": CHANNEL, "text": "é".repeat(40_001) }),
        )
        .await;
        assert_eq!(b["ok"], true);
        assert_eq!(
            b["message"]["text"].as_str().map(|t| t.chars().count()),
            Some(40_000)
        );

        // A `thread_ts` naming no message of the channel is no error: the post lands
        // at the top level and the answer's message has no `thread_ts`.
        for (channel, thread_ts) in [(CHANNEL, "1.000001"), ("C0OTHER", root_ts.as_str())] {
            let (_, b) = post(
                &c,
                &fake,
                json!({ "channel": channel, "text": "orphan", "thread_ts": thread_ts }),
            )
            .await;
            assert_eq!(b["ok"], true, "{b}");
            assert!(b["message"].get("thread_ts").is_none(), "{b}");
            assert_eq!(
                fake.messages_in(channel, None)
                    .last()
                    .map(|m| m.text.as_str()),
                Some("orphan")
            );
        }
        // A reply's ts threads under its root.
        let (_, b) = post(
            &c,
            &fake,
            json!({ "channel": CHANNEL, "text": "via reply", "thread_ts": reply_ts }),
        )
        .await;
        assert_eq!(b["message"]["thread_ts"], root_ts.as_str());
        assert_eq!(fake.messages().len(), 6);

        let r = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts=1.000001"),
        )
        .await;
        assert_eq!(r, json!({ "ok": false, "error": "thread_not_found" }));

        // Archived: posting refused, reading still works.
        fake.archive_channel(CHANNEL);
        let (s, b) = post(&c, &fake, json!({ "channel": CHANNEL, "text": "late" })).await;
        assert_eq!((s, error_of(&b).as_deref()), (200, Some("is_archived")));
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}"),
        )
        .await;
        assert_eq!(h["ok"], true);

        // Deleted: everything is channel_not_found.
        fake.delete_channel(CHANNEL);
        let (s, b) = post(&c, &fake, json!({ "channel": CHANNEL, "text": "gone" })).await;
        assert_eq!(
            (s, error_of(&b).as_deref()),
            (200, Some("channel_not_found"))
        );
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}"),
        )
        .await;
        assert_eq!(error_of(&h).as_deref(), Some("channel_not_found"));
        let r = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts={root_ts}"),
        )
        .await;
        assert_eq!(error_of(&r).as_deref(), Some("channel_not_found"));
        assert_eq!(fake.messages().len(), 6);
    }

    #[tokio::test]
    async fn a_reply_to_a_deleted_root_lands_at_the_top_level_answered_ok_without_thread_ts() {
        let fake = FakeSlack::start().await;
        let c = client();
        let root = post_ts(&c, &fake, json!({ "channel": CHANNEL, "text": "root" })).await;
        let (_, b) = post(
            &c,
            &fake,
            json!({ "channel": CHANNEL, "text": "in", "thread_ts": root }),
        )
        .await;
        assert_eq!(b["message"]["thread_ts"], root.as_str());
        fake.delete_message(&root);

        let (s, b) = post(
            &c,
            &fake,
            json!({ "channel": CHANNEL, "text": "out", "thread_ts": root }),
        )
        .await;
        assert_eq!((s, &b["ok"]), (200, &json!(true)), "{b}");
        assert!(b["message"].get("thread_ts").is_none(), "{b}");
        let out_ts = b["ts"].as_str().expect("ts").to_owned();
        assert_eq!(
            fake.messages_in(CHANNEL, None)
                .iter()
                .map(|m| m.text.as_str())
                .collect::<Vec<_>>(),
            ["out"]
        );
        let r = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts={root}"),
        )
        .await;
        assert_eq!(r, json!({ "ok": false, "error": "thread_not_found" }));

        // chat.delete takes the post back; a second delete finds nothing.
        let url = format!("{}/chat.delete", fake.base_url());
        let delete = |ts: String| {
            let req = c
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({ "channel": CHANNEL, "ts": ts }));
            async move {
                req.send()
                    .await
                    .expect("send")
                    .json::<Value>()
                    .await
                    .expect("json")
            }
        };
        assert_eq!(
            delete(out_ts.clone()).await,
            json!({ "ok": true, "channel": CHANNEL, "ts": out_ts })
        );
        assert_eq!(
            delete(out_ts.clone()).await,
            json!({ "ok": false, "error": "message_not_found" })
        );
        assert!(fake.messages().is_empty());
        assert!(fake.take_spec_violations().is_empty());
    }

    #[tokio::test]
    #[should_panic(expected = "broke Slack's method reference")]
    async fn a_request_the_reference_does_not_allow_fails_the_test_when_the_fake_drops() {
        let fake = FakeSlack::start().await;
        let (_, b) = post(
            &client(),
            &fake,
            json!({ "channel": CHANNEL, "text": "x", "as_robot": true }),
        )
        .await;
        assert_eq!(b["error"], "invalid_arg_name");
        drop(fake);
    }

    #[test]
    fn mentions_are_the_control_sequences_not_their_escaped_text() {
        let m = |text: &str| SlackMessage {
            channel: CHANNEL.into(),
            ts: "1.000001".into(),
            thread_ts: None,
            text: text.into(),
            metadata: None,
            user: BOT_USER_ID.into(),
            username: None,
            icon_url: None,
        };
        assert_eq!(
            m("<!channel> hi <@U123|bob> <!subteam^S1> <#C1> <https://x|y>").mentions(),
            ["!channel", "@U123", "!subteam^S1"]
        );
        assert!(m("&lt;!channel&gt; &lt;@U123&gt; @here")
            .mentions()
            .is_empty());
    }

    #[tokio::test]
    async fn body_format_errors_and_form_posts() {
        let fake = FakeSlack::start().await;
        let c = client();
        let url = format!("{}/chat.postMessage", fake.base_url());
        let send = |body: &'static str, ctype: Option<&'static str>| {
            let mut req = c.post(&url).bearer_auth(TOKEN).body(body);
            if let Some(ct) = ctype {
                req = req.header("Content-Type", ct);
            }
            async move {
                let resp = req.send().await.expect("send");
                assert_eq!(resp.status().as_u16(), 200);
                resp.json::<Value>().await.expect("json")
            }
        };
        let b = send("{not json", Some("application/json")).await;
        assert_eq!(b["error"], "invalid_json");
        let b = send("[1]", Some("application/json; charset=utf-8")).await;
        assert_eq!(b["error"], "json_not_object");
        let b = send("channel=C1&text=x", None).await;
        assert_eq!(b["error"], "missing_post_type");
        let b = send("hello", Some("text/html")).await;
        assert_eq!(b["error"], "invalid_post_type");

        // Form posts work, with metadata as a JSON string.
        let b = send(
            "channel=C0FORM&text=hello+form&metadata=%7B%22event_type%22%3A%22e%22%2C%22event_payload%22%3A%7B%7D%7D",
            Some("application/x-www-form-urlencoded"),
        )
        .await;
        assert_eq!(b["ok"], true, "{b}");
        let stored = fake.messages_in("C0FORM", None);
        assert_eq!(stored[0].text, "hello form");
        assert_eq!(
            stored[0].metadata,
            Some(json!({ "event_type": "e", "event_payload": {} }))
        );

        // Reads also accept POSTed forms.
        let resp = c
            .post(format!("{}/conversations.history", fake.base_url()))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("channel=C0FORM")
            .send()
            .await
            .expect("send");
        let h: Value = resp.json().await.expect("json");
        assert_eq!(texts(&h), vec!["hello form"]);

        // Unknown methods and wrong verbs are not 200s.
        let resp = c
            .get(format!("{}/chat.nothing", fake.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 404);
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b["error"], "unknown_method");
        let resp = c
            .get(format!(
                "{}/chat.postMessage?channel=C1&text=x",
                fake.base_url()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 405);
        assert_eq!(fake.messages().len(), 1);
    }

    #[tokio::test]
    async fn rate_limit_and_server_error_faults() {
        let fake = FakeSlack::start().await;
        let c = client();
        let url = format!("{}/chat.postMessage", fake.base_url());
        for (ms, header) in [(250, "1"), (0, "1"), (2_500, "3")] {
            fake.push_fault(Fault::RateLimited { retry_after_ms: ms });
            let resp = c
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({ "channel": CHANNEL, "text": "hi" }))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status().as_u16(), 429);
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            assert_eq!(retry_after.as_deref(), Some(header), "{ms} ms");
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body, json!({ "ok": false, "error": "ratelimited" }));
        }
        assert!(fake.messages().is_empty());

        fake.push_fault(Fault::ServerError);
        let (s, b) = post(&c, &fake, json!({ "channel": CHANNEL, "text": "hi" })).await;
        assert_eq!(s, 500);
        assert_eq!(b, json!({ "ok": false, "error": "fatal_error" }));
        assert!(fake.messages().is_empty());

        // Reads never consume a fault.
        fake.push_fault(Fault::ServerError);
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}"),
        )
        .await;
        assert_eq!(h["ok"], true);
        let (s, _) = post(&c, &fake, json!({ "channel": CHANNEL, "text": "hi" })).await;
        assert_eq!(s, 500);

        // The queue is drained: the next post goes through.
        post_ts(&c, &fake, json!({ "channel": CHANNEL, "text": "hi" })).await;
        assert_eq!(
            fake.fault_counts(),
            FaultCounts {
                server_error: 2,
                rate_limited: 3,
                ..FaultCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn slow_fault_and_fault_mix() {
        let fake = FakeSlack::start().await;
        let c = client();
        fake.push_fault(Fault::Slow { delay_ms: 150 });
        let started = std::time::Instant::now();
        post_ts(&c, &fake, json!({ "channel": CHANNEL, "text": "late" })).await;
        assert!(started.elapsed() >= Duration::from_millis(150));

        fake.set_fault_mix(Some(server_errors_only()));
        for _ in 0..3 {
            let (s, _) = post(&c, &fake, json!({ "channel": CHANNEL, "text": "x" })).await;
            assert_eq!(s, 500);
        }
        fake.set_fault_mix(None);
        post_ts(&c, &fake, json!({ "channel": CHANNEL, "text": "ok" })).await;
        let counts = fake.fault_counts();
        assert_eq!((counts.slow, counts.server_error), (1, 3));
        assert_eq!(fake.messages().len(), 2);
    }

    #[tokio::test]
    async fn accept_then_hang_stores_but_never_answers() {
        let fake = FakeSlack::start().await;
        let c = client();
        let url = format!("{}/chat.postMessage", fake.base_url());
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 2_000 });
        let err = c
            .post(&url)
            .bearer_auth(TOKEN)
            .timeout(Duration::from_millis(300))
            .json(&json!({ "channel": CHANNEL, "text": "maybe" }))
            .send()
            .await
            .expect_err("the fake must not answer");
        assert!(err.is_timeout(), "{err:?}");
        let stored = fake.messages();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].text, "maybe");
        // The stored message is visible to the reads a deliverer would use to
        // find out whether its timed-out post landed.
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}"),
        )
        .await;
        assert_eq!(texts(&h), vec!["maybe"]);

        // After the hold, the connection is dropped without any response.
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 50 });
        let err = c
            .post(&url)
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(5))
            .json(&json!({ "channel": CHANNEL, "text": "second" }))
            .send()
            .await
            .expect_err("the fake must drop the connection");
        assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
        assert_eq!(fake.messages().len(), 2);
        assert_eq!(fake.fault_counts().accept_then_hang, 2);
    }

    #[tokio::test]
    async fn oldest_filter_limit_and_cursor() {
        let fake = FakeSlack::start().await;
        let c = client();
        let mut ts = Vec::new();
        for i in 0..5 {
            ts.push(
                post_ts(
                    &c,
                    &fake,
                    json!({ "channel": CHANNEL, "text": format!("m{i}") }),
                )
                .await,
            );
        }
        // Another channel's messages never leak in.
        post_ts(
            &c,
            &fake,
            json!({ "channel": "C0OTHER", "text": "elsewhere" }),
        )
        .await;

        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}&oldest={}", ts[1]),
        )
        .await;
        assert_eq!(texts(&h), vec!["m4", "m3", "m2"]);
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}&oldest={}&inclusive=true", ts[1]),
        )
        .await;
        assert_eq!(texts(&h), vec!["m4", "m3", "m2", "m1"]);
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}&oldest={}&latest={}", ts[0], ts[3]),
        )
        .await;
        assert_eq!(texts(&h), vec!["m2", "m1"]);
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}&oldest=nope"),
        )
        .await;
        assert_eq!(h["error"], "invalid_ts_oldest");
        assert_eq!(fake.take_spec_violations().len(), 1);

        // Paging: newest first, then onwards with the cursor.
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}&limit=3"),
        )
        .await;
        assert_eq!(texts(&h), vec!["m4", "m3", "m2"]);
        assert_eq!(h["has_more"], true);
        let cursor = h["response_metadata"]["next_cursor"]
            .as_str()
            .expect("cursor")
            .to_owned();
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}&limit=3&cursor={cursor}"),
        )
        .await;
        assert_eq!(texts(&h), vec!["m1", "m0"]);
        assert_eq!(h["has_more"], false);
        assert!(h.get("response_metadata").is_none());

        // Replies: the root always leads; oldest and the cursor filter replies.
        let root = ts[0].clone();
        let mut rts = Vec::new();
        for i in 0..4 {
            rts.push(
                post_ts(
                    &c,
                    &fake,
                    json!({ "channel": CHANNEL, "text": format!("r{i}"), "thread_ts": root }),
                )
                .await,
            );
        }
        let r = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts={root}&oldest={}", rts[1]),
        )
        .await;
        assert_eq!(texts(&r), vec!["m0", "r2", "r3"]);
        let r = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts={root}&limit=2"),
        )
        .await;
        assert_eq!(texts(&r), vec!["m0", "r0", "r1"]);
        assert_eq!(r["has_more"], true);
        let cursor = r["response_metadata"]["next_cursor"]
            .as_str()
            .expect("cursor")
            .to_owned();
        let r = read(
            &c,
            &fake,
            "conversations.replies",
            &format!("channel={CHANNEL}&ts={root}&limit=2&cursor={cursor}"),
        )
        .await;
        assert_eq!(texts(&r), vec!["m0", "r2", "r3"]);
        assert_eq!(r["has_more"], false);

        // Replies stay out of history.
        let h = read(
            &c,
            &fake,
            "conversations.history",
            &format!("channel={CHANNEL}"),
        )
        .await;
        assert_eq!(texts(&h), vec!["m4", "m3", "m2", "m1", "m0"]);
        assert_eq!(fake.messages_in(CHANNEL, Some(&root)).len(), 4);
        let got = fake.wait_for_messages(10, Duration::from_millis(100)).await;
        assert_eq!(got.len(), 10);
    }

    #[tokio::test]
    async fn token_rotation() {
        let fake = FakeSlack::start().await;
        let c = client();
        fake.set_tokens(&["xoxb-old", "xoxb-new"]);
        for token in ["xoxb-old", "xoxb-new", "xoxb-test"] {
            let resp = c
                .post(format!("{}/chat.postMessage", fake.base_url()))
                .bearer_auth(token)
                .json(&json!({ "channel": CHANNEL, "text": token }))
                .send()
                .await
                .expect("send");
            let b: Value = resp.json().await.expect("json");
            assert_eq!(b["ok"], token != "xoxb-test", "{token}: {b}");
        }
        assert_eq!(
            fake.tokens_seen(),
            vec!["xoxb-old".to_owned(), "xoxb-new".to_owned()]
        );
        assert_eq!(fake.messages().len(), 2);
        assert_eq!(fake.request_count(), 3);
    }

    #[tokio::test]
    async fn drop_shuts_server_down() {
        let fake = FakeSlack::start().await;
        let url = format!(
            "{}/conversations.history?channel={CHANNEL}",
            fake.base_url()
        );
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

    #[test]
    fn ts_parse_and_format() {
        assert_eq!(parse_ts("1700000000.000100"), Some(1_700_000_000_000_100));
        assert_eq!(parse_ts("1700000000.0001"), Some(1_700_000_000_000_100));
        assert_eq!(parse_ts("1700000000"), Some(1_700_000_000_000_000));
        for bad in ["", ".1", "1.1234567", "1.x", "-1", "1e9"] {
            assert_eq!(parse_ts(bad), None, "{bad}");
        }
        assert_eq!(format_ts(1_700_000_000_000_100), "1700000000.000100");
    }
}
