//! Loopback fake of the Telegram Bot API: `getMe`, `sendMessage` (plain chats
//! and forum topics) and `createForumTopic` at `/bot<TOKEN>/<method>`, with
//! Telegram's `{"ok":false,"error_code","description"}` errors and its
//! rate-limit shape (`parameters.retry_after`).
//!
//! Every negative chat id is implicitly an existing forum supergroup, so tests
//! need no set-up; `delete_chat`, `block_chat`, `set_forum`, `close_topic` and
//! `delete_topic` produce the permanent errors a deliverer must recognise.
//! Bots cannot read chat history on Telegram, so the fake has no read route:
//! tests inspect what was stored through the handle instead.
//!
//! Only what Threadline's adapter sends is modelled: POST with a JSON body
//! (an empty body counts as no parameters, as for a bare `getMe`).
//!
//! Every call is checked against the Bot API's machine-readable description,
//! vendored in `tests/specs/telegram-api.json` (PaulSonOfLars/telegram-bot-api-spec):
//! the method must exist, every parameter be one it documents and of a documented
//! type (objects field by field, recursively), and the required ones present. A
//! call that breaks it is recorded as a spec violation — answered as Telegram
//! answers it (which ignores unknown parameters, and names a missing one in a
//! 400) — and the fake's handle panics when dropped with violations nobody took
//! (`take_spec_violations`), so the test that sent it fails.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{rejection::PathRejection, ConnectInfo, Path, State},
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Map, Value};

pub mod html;
mod listen;
pub use listen::{TelegramPeople, TelegramUser, WebhookPush, SECRET_HEADER};

use super::{
    faulted, handle_methods, lock, reply, reply_either, retry_after_header_secs, serve,
    wait_for_len, Common, ConnCtl, Platform, Reply, Server, Tokens,
};

/// Accepted at start. Real tokens are `<bot id>:<secret>`, hence `BOT_ID`.
const DEFAULT_TOKEN: &str = "123456:test-token";
const BOT_ID: i64 = 123_456;
const BOT_FIRST_NAME: &str = "Threadline";
const BOT_USERNAME: &str = "threadline_bot";
/// Counted in Unicode scalars (`char`s), as measured against the live API:
/// 4096 emoji (8192 UTF-16 units) are accepted, 4097 are not. Only entity
/// offsets are UTF-16; the length limit is not.
const MAX_TEXT_CHARS: usize = 4096;
const MAX_TOPIC_NAME_CHARS: usize = 128;
/// The first of Telegram's six topic icon colours, used when none is asked for.
const DEFAULT_ICON_COLOR: i64 = 7_322_096;

/// A message sent through the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelegramMessage {
    /// The chat it was sent to.
    pub chat_id: i64,
    /// The id the fake assigned, unique within the chat.
    pub message_id: i64,
    /// The forum topic it was posted into; `None` for the chat itself.
    pub message_thread_id: Option<i64>,
    /// The message text as people see it: as sent, or with `parse_mode: "HTML"` the text
    /// after entity parsing (tags gone, entities decoded).
    pub text: String,
    /// What `parse_mode: "HTML"` made of the tags, over `text`.
    pub entities: Vec<html::Entity>,
    /// `reply_parameters.message_id`, when it names a message of the chat.
    pub reply_to: Option<i64>,
}

impl TelegramMessage {
    /// The `@username` mentions Telegram would find in this text and notify
    /// (MessageEntity type "mention", detected in any text, with or without
    /// `parse_mode`): `@` not after a username character, then 1–32 of
    /// `[A-Za-z0-9_]`.
    /// Not inside code, links or text mentions: Telegram leaves `code` and `pre` text alone,
    /// and drops a detected entity that overlaps one the sender gave (tdlib's
    /// `fix_formatted_text` merges the found entities into the given ones without overlap).
    pub fn mentions(&self) -> Vec<String> {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let chars: Vec<char> = self.text.chars().collect();
        let mut at_utf16 = Vec::with_capacity(chars.len());
        let mut offset = 0;
        for c in &chars {
            at_utf16.push(offset);
            offset += c.len_utf16();
        }
        let in_code = |i: usize| {
            self.entities.iter().any(|e| {
                matches!(e.kind, "code" | "pre" | "text_link" | "text_mention")
                    && (e.offset..e.offset + e.length).contains(&at_utf16[i])
            })
        };
        let mut found = Vec::new();
        for (i, &c) in chars.iter().enumerate() {
            let starts = c == '@' && (i == 0 || !is_name(chars[i - 1])) && !in_code(i);
            if !starts {
                continue;
            }
            let name: String = chars[i + 1..].iter().take_while(|c| is_name(**c)).collect();
            if (1..=32).contains(&name.len()) {
                found.push(format!("@{name}"));
            }
        }
        found
    }

    /// The users notified by id (`text_mention` entities: `<a href="tg://user?id=…">`).
    pub fn text_mentions(&self) -> Vec<i64> {
        self.entities.iter().filter_map(|e| e.user_id).collect()
    }
}

/// A forum topic created through the fake (deleted ones are not listed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelegramTopic {
    /// The forum chat the topic belongs to.
    pub chat_id: i64,
    /// The topic's id, used as `message_thread_id` when posting into it.
    pub message_thread_id: i64,
    /// The topic name as sent.
    pub name: String,
    /// Whether the topic is closed (posting into it fails).
    pub closed: bool,
}

/// Handle to a running fake Telegram Bot API; dropping it shuts the server down.
pub struct FakeTelegram {
    server: Server,
    shared: Shared,
}

type Shared = super::Shared<TelegramState>;

impl FakeTelegram {
    /// Starts the fake on a free loopback port. Accepted token: `123456:test-token`.
    pub async fn start() -> FakeTelegram {
        let routes = Router::new()
            // `/bot<TOKEN>` is one path segment; the `bot` prefix is checked
            // in the handler so a malformed one gets Telegram's 404, not axum's.
            .route("/{bot_token}/{method}", post(call))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed);
        let (server, shared) = serve(TelegramState::new(), routes).await;
        listen::spawn_pusher(std::sync::Arc::downgrade(&shared));
        FakeTelegram { server, shared }
    }

    /// `http://127.0.0.1:PORT`, standing in for `https://api.telegram.org`.
    pub fn base_url(&self) -> String {
        self.server.url("")
    }

    /// All sent messages, in creation order.
    pub fn messages(&self) -> Vec<TelegramMessage> {
        lock(&self.shared).messages.clone()
    }

    /// Messages of one chat, in creation order: those in topic `thread`, or
    /// with `None` those posted to the chat outside any topic.
    pub fn messages_in(&self, chat_id: i64, thread: Option<i64>) -> Vec<TelegramMessage> {
        lock(&self.shared)
            .messages
            .iter()
            .filter(|m| m.chat_id == chat_id && m.message_thread_id == thread)
            .cloned()
            .collect()
    }

    /// Topics created through the fake and not deleted, in creation order.
    pub fn topics(&self) -> Vec<TelegramTopic> {
        lock(&self.shared).topics.clone()
    }

    /// Closes a topic: posting into it answers 400 `TOPIC_CLOSED`.
    /// A topic the fake never created is left alone (it does not exist anyway).
    pub fn close_topic(&self, chat_id: i64, thread: i64) {
        let mut st = lock(&self.shared);
        if let Some(t) = st.topic_mut(chat_id, thread) {
            t.closed = true;
        }
    }

    /// Deletes a topic: posting into it answers 400 `message thread not found`.
    pub fn delete_topic(&self, chat_id: i64, thread: i64) {
        let mut st = lock(&self.shared);
        st.topics
            .retain(|t| !(t.chat_id == chat_id && t.message_thread_id == thread));
        st.deleted_topics.insert((chat_id, thread));
    }

    /// Posts for a deleted topic go to the chat itself, answered `ok` without
    /// `message_thread_id`, as the Bot API did for private-chat topics
    /// (tdlib/telegram-bot-api#854); off, the fake answers 400 "message thread not
    /// found" as it does in groups.
    pub fn unthread_deleted_topics(&self, on: bool) {
        lock(&self.shared).unthread_deleted = on;
    }

    /// Deletes a chat (or removes the bot from it): every method for it
    /// answers 400 `chat not found`.
    pub fn delete_chat(&self, chat_id: i64) {
        lock(&self.shared).deleted_chats.insert(chat_id);
    }

    /// Removes the bot from a group: every method for it answers 403
    /// `Forbidden: bot was kicked from the supergroup chat`.
    pub fn kick_bot(&self, chat_id: i64) {
        lock(&self.shared).kicked_chats.insert(chat_id);
    }

    /// Makes every method for the chat answer 403 `bot was blocked by the user`.
    pub fn block_chat(&self, chat_id: i64) {
        lock(&self.shared).blocked_chats.insert(chat_id);
    }

    /// Turns a chat's forum mode off or back on (chats start as forums).
    /// Existing topics stay, as on Telegram, where they reappear when re-enabled.
    pub fn set_forum(&self, chat_id: i64, forum: bool) {
        let mut st = lock(&self.shared);
        if forum {
            st.not_forums.remove(&chat_id);
        } else {
            st.not_forums.insert(chat_id);
        }
    }

    /// The user id of the bot every accepted token authenticates as.
    pub fn bot_id(&self) -> i64 {
        lock(&self.shared).bot_id
    }

    /// Waits until at least `n` messages are stored or `timeout` passes, and
    /// returns whatever is stored then (the caller asserts on the count).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<TelegramMessage> {
        wait_for_len(n, timeout, || self.messages()).await
    }
}

handle_methods!(FakeTelegram, faults: "`sendMessage` or `createForumTopic`", tokens);

impl FakeTelegram {
    /// Answers the next `sendMessage` or `createForumTopic` with Telegram's error
    /// envelope: `status`, `description` and, when given, `parameters` (as a group
    /// upgraded to a supergroup answers with `migrate_to_chat_id`). Stores nothing.
    pub fn push_error(&self, status: u16, description: &str, parameters: Option<Value>) {
        let mut body = json!({ "ok": false, "error_code": status, "description": description });
        if let (Some(obj), Some(p)) = (body.as_object_mut(), parameters) {
            obj.insert("parameters".into(), p);
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        lock(&self.shared).errors.push_back((status, body));
    }

    /// Each call that broke the vendored Bot API description (`method: what`),
    /// taken, so the handle's drop does not fail the test for them.
    pub fn take_spec_violations(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.shared).violations)
    }
}

impl Drop for FakeTelegram {
    /// A call the published API does not allow fails the test that made it.
    fn drop(&mut self) {
        let violations = std::mem::take(&mut lock(&self.shared).violations);
        if !violations.is_empty() && !std::thread::panicking() {
            panic!("calls to the Telegram fake broke the Bot API description: {violations:#?}");
        }
    }
}

/// The Bot API description (`tests/specs/telegram-api.json`) and the check of
/// one call's parameters against it.
mod spec {
    use serde_json::{Map, Value};
    use std::sync::LazyLock;

    static API: LazyLock<Value> = LazyLock::new(|| {
        serde_json::from_str(include_str!("../../specs/telegram-api.json"))
            .expect("vendored Bot API description is JSON")
    });

    /// The method's description; names are case-insensitive in the Bot API.
    pub(super) fn method(name: &str) -> Option<&'static Value> {
        API["methods"]
            .as_object()?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, m)| m)
    }

    /// What is wrong with `fields` for an object of type `ty` (`Update`, …).
    pub(super) fn check_type(ty: &str, fields: &Map<String, Value>) -> Vec<String> {
        fit(ty, &Value::Object(fields.clone()), "")
    }

    /// What is wrong with `params` for `method`, each as a sentence.
    pub(super) fn check(method: &Value, params: &Map<String, Value>) -> Vec<String> {
        check_fields(
            method["fields"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            params,
            "",
        )
    }

    fn check_fields(fields: &[Value], params: &Map<String, Value>, at: &str) -> Vec<String> {
        let mut wrong = Vec::new();
        for (name, value) in params {
            match fields.iter().find(|f| f["name"] == name.as_str()) {
                None => wrong.push(format!("unknown parameter `{at}{name}`")),
                Some(field) => {
                    let types: Vec<&str> = field["types"]
                        .as_array()
                        .map(|ts| ts.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let path = format!("{at}{name}.");
                    let fits: Vec<Vec<String>> =
                        types.iter().map(|t| fit(t, value, &path)).collect();
                    if !fits.iter().any(Vec::is_empty) {
                        wrong.push(format!(
                            "`{at}{name}` = {value} is not {}: {:?}",
                            types.join(" or "),
                            fits.concat()
                        ));
                    }
                }
            }
        }
        for field in fields {
            let name = field["name"].as_str().unwrap_or_default();
            if field["required"] == true && !params.contains_key(name) {
                wrong.push(format!("required parameter `{at}{name}` missing"));
            }
        }
        wrong
    }

    /// What keeps `value` from being of type `ty` (empty: it is). Parameters may
    /// come form-encoded, so numbers and booleans spelled as strings are accepted,
    /// as the Bot API accepts them.
    fn fit(ty: &str, value: &Value, at: &str) -> Vec<String> {
        let ok = |b: bool| {
            if b {
                Vec::new()
            } else {
                vec![format!("{value} is no {ty}")]
            }
        };
        if let Some(item) = ty.strip_prefix("Array of ") {
            return match value {
                Value::Array(items) => items.iter().flat_map(|v| fit(item, v, at)).collect(),
                Value::Null
                | Value::Bool(_)
                | Value::Number(_)
                | Value::String(_)
                | Value::Object(_) => ok(false),
            };
        }
        match (ty, value) {
            ("Integer", Value::Number(n)) => ok(n.is_i64()),
            ("Integer", Value::String(s)) => ok(s.trim().parse::<i64>().is_ok()),
            ("Float", Value::Number(_)) => ok(true),
            ("Float", Value::String(s)) => ok(s.trim().parse::<f64>().is_ok()),
            ("String" | "InputFile", Value::String(_)) => ok(true),
            ("Boolean", Value::Bool(_)) => ok(true),
            ("Boolean", Value::String(s)) => ok(matches!(s.as_str(), "true" | "false")),
            ("True", v) => ok(*v == Value::Bool(true) || *v == "true"),
            (object, Value::Object(fields)) => match API["types"].get(object) {
                Some(t) => match t["subtypes"].as_array() {
                    Some(subtypes) => ok(subtypes
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|s| fit(s, value, at).is_empty())),
                    None => check_fields(
                        t["fields"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default(),
                        fields,
                        at,
                    ),
                },
                None => ok(false),
            },
            _ => ok(false),
        }
    }
}

struct TelegramState {
    common: Common,
    tokens: Tokens,
    messages: Vec<TelegramMessage>,
    topics: Vec<TelegramTopic>,
    /// Last message id used per chat. Topic creation takes one too, because a
    /// topic's id is the id of its (unstored) "topic created" service message.
    last_message_id: HashMap<i64, i64>,
    deleted_chats: HashSet<i64>,
    blocked_chats: HashSet<i64>,
    kicked_chats: HashSet<i64>,
    not_forums: HashSet<i64>,
    /// Topic ids deleted through `delete_topic`, per chat.
    deleted_topics: HashSet<(i64, i64)>,
    unthread_deleted: bool,
    bot_id: i64,
    /// Calls that broke the vendored Bot API description: `method: what`.
    violations: Vec<String>,
    /// Scripted error answers for the next message-creating calls (`push_error`).
    errors: std::collections::VecDeque<Reply>,
    /// What people wrote, waiting for the bot (`getUpdates` or the webhook).
    updates: listen::Updates,
}

impl TelegramState {
    fn new() -> TelegramState {
        TelegramState {
            common: Common::default(),
            tokens: Tokens::new(DEFAULT_TOKEN),
            messages: Vec::new(),
            topics: Vec::new(),
            last_message_id: HashMap::new(),
            deleted_chats: HashSet::new(),
            blocked_chats: HashSet::new(),
            kicked_chats: HashSet::new(),
            deleted_topics: HashSet::new(),
            unthread_deleted: false,
            not_forums: HashSet::new(),
            bot_id: BOT_ID,
            violations: Vec::new(),
            errors: std::collections::VecDeque::new(),
            updates: listen::Updates::new(),
        }
    }

    fn topic_mut(&mut self, chat_id: i64, thread: i64) -> Option<&mut TelegramTopic> {
        self.topics
            .iter_mut()
            .find(|t| t.chat_id == chat_id && t.message_thread_id == thread)
    }

    /// Message ids count up per chat, as they do in Telegram supergroups.
    fn next_message_id(&mut self, chat_id: i64) -> i64 {
        let last = self.last_message_id.entry(chat_id).or_insert(0);
        *last += 1;
        *last
    }

    fn is_forum(&self, chat_id: i64) -> bool {
        !self.not_forums.contains(&chat_id)
    }

    /// Resolves `chat_id` to a chat the bot can write to.
    fn check_chat(&self, params: &Map<String, Value>) -> Result<i64, Reply> {
        let chat_id = match params.get("chat_id") {
            None | Some(Value::Null) => return Err(bad_request("chat_id is empty")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(bad_request("chat_id is empty"))
            }
            // Numeric strings are how ids beyond 2^53 survive JSON clients;
            // `@username` strings are not modelled, so they are unknown chats.
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| bad_request("chat not found"))?,
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad_request("chat not found"))?,
            Some(Value::Bool(_) | Value::Array(_) | Value::Object(_)) => {
                return Err(bad_request("chat not found"))
            }
        };
        if self.deleted_chats.contains(&chat_id) {
            return Err(bad_request("chat not found"));
        }
        if self.kicked_chats.contains(&chat_id) {
            return Err(telegram_error(
                StatusCode::FORBIDDEN,
                "Forbidden: bot was kicked from the supergroup chat",
            ));
        }
        if self.blocked_chats.contains(&chat_id) {
            return Err(telegram_error(
                StatusCode::FORBIDDEN,
                "Forbidden: bot was blocked by the user",
            ));
        }
        // Groups and channels have negative ids; a positive one is a private
        // chat, which the fake has no users for.
        if chat_id >= 0 {
            return Err(bad_request("chat not found"));
        }
        Ok(chat_id)
    }

    fn get_me(&self) -> Reply {
        ok(json!({
            "id": self.bot_id,
            "is_bot": true,
            "first_name": BOT_FIRST_NAME,
            "username": BOT_USERNAME,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
        }))
    }

    fn send_message(&mut self, body: &[u8]) -> Result<Reply, Reply> {
        let params = parse_params(body)?;
        let chat_id = self.check_chat(&params)?;

        let thread = match params.get("message_thread_id") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64()),
            // Telegram accepts numbers sent as strings for integer fields.
            Some(Value::String(s)) => Some(s.trim().parse::<i64>().ok()),
            Some(Value::Bool(_) | Value::Array(_) | Value::Object(_)) => Some(None),
        };
        if let Some(thread) = thread {
            let topic = thread.and_then(|id| {
                self.topics
                    .iter()
                    .find(|t| t.chat_id == chat_id && t.message_thread_id == id)
            });
            let unthreaded = self.unthread_deleted
                && thread.is_some_and(|id| self.deleted_topics.contains(&(chat_id, id)));
            match topic {
                None if unthreaded => {}
                None => return Err(bad_request("message thread not found")),
                Some(t) if t.closed => return Err(bad_request("TOPIC_CLOSED")),
                Some(_) => {}
            }
        }
        let thread = thread.flatten().filter(|id| {
            self.topics
                .iter()
                .any(|t| t.chat_id == chat_id && t.message_thread_id == *id)
        });

        // Telegram strips surrounding whitespace, so blank text is empty text.
        let sent = match params.get("text") {
            Some(Value::String(s)) => s.clone(),
            Some(n @ Value::Number(_)) => n.to_string(),
            None | Some(Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_)) => {
                String::new()
            }
        };
        // The limit and the emptiness check apply "after entities parsing".
        let (text, entities) = match params.get("parse_mode").and_then(Value::as_str) {
            Some(mode) if mode.eq_ignore_ascii_case("html") => html::parse(&sent)
                .map_err(|e| bad_request(&format!("can't parse entities: {e}")))?,
            // Other modes (`MarkdownV2`) are not modelled: Threadline sends HTML or nothing.
            _ => (sent, Vec::new()),
        };
        if text.trim().is_empty() {
            return Err(bad_request("message text is empty"));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(bad_request("message is too long"));
        }
        // `link_preview_options` and other options are accepted and ignored: they change
        // how a message looks, not what is stored.

        // ReplyParameters: a message of this chat, else refused unless
        // `allow_sending_without_reply` (whose description in tests/specs/telegram-api.json
        // says the message "should be sent even if the specified message to be replied to is
        // not found"). The wording is the live API's, as reported in Leask/halbot#20
        // (`400 Bad Request: replied message not found`).
        let reply_to = match params.get("reply_parameters") {
            Some(Value::Object(reply)) => {
                let id = reply.get("message_id").and_then(Value::as_i64);
                // Any id the chat has handed out, the bot's messages and people's alike.
                let last = self.last_message_id.get(&chat_id).copied().unwrap_or(0);
                let exists = id.is_some_and(|id| (1..=last).contains(&id));
                let without = reply.get("allow_sending_without_reply") == Some(&Value::Bool(true));
                match (exists, without) {
                    (true, _) => id,
                    (false, true) => None,
                    (false, false) => return Err(bad_request("replied message not found")),
                }
            }
            _ => None,
        };
        let message_id = self.next_message_id(chat_id);
        let stored = TelegramMessage {
            chat_id,
            message_id,
            message_thread_id: thread,
            text,
            entities,
            reply_to,
        };
        let body = self.message_json(&stored);
        self.messages.push(stored);
        Ok(ok(body))
    }

    fn create_forum_topic(&mut self, body: &[u8]) -> Result<Reply, Reply> {
        let params = parse_params(body)?;
        let chat_id = self.check_chat(&params)?;
        if !self.is_forum(chat_id) {
            return Err(bad_request("the chat is not a forum"));
        }
        let name = match params.get("name") {
            Some(Value::String(s)) => s.clone(),
            None
            | Some(
                Value::Null
                | Value::Bool(_)
                | Value::Number(_)
                | Value::Array(_)
                | Value::Object(_),
            ) => String::new(),
        };
        let name_len = name.chars().count();
        if name_len == 0 || name_len > MAX_TOPIC_NAME_CHARS {
            return Err(bad_request("TOPIC_NAME_INVALID"));
        }
        let message_thread_id = self.next_message_id(chat_id);
        self.topics.push(TelegramTopic {
            chat_id,
            message_thread_id,
            name: name.clone(),
            closed: false,
        });
        Ok(ok(json!({
            "message_thread_id": message_thread_id,
            "name": name,
            "icon_color": DEFAULT_ICON_COLOR,
        })))
    }

    fn delete_message(&mut self, body: &[u8]) -> Result<Reply, Reply> {
        let params = parse_params(body)?;
        let chat_id = self.check_chat(&params)?;
        let id = match params.get("message_id") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            None | Some(Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_)) => None,
        };
        let Some(id) = id else {
            return Err(bad_request("message identifier is not specified"));
        };
        let before = self.messages.len();
        self.messages
            .retain(|m| !(m.chat_id == chat_id && m.message_id == id));
        if self.messages.len() == before {
            return Err(bad_request("message to delete not found"));
        }
        Ok(ok(Value::Bool(true)))
    }

    fn message_json(&self, m: &TelegramMessage) -> Value {
        let mut v = json!({
            "message_id": m.message_id,
            "from": {
                "id": self.bot_id,
                "is_bot": true,
                "first_name": BOT_FIRST_NAME,
                "username": BOT_USERNAME,
            },
            "chat": {
                "id": m.chat_id,
                "title": format!("Chat {}", m.chat_id),
                "type": "supergroup",
                "is_forum": self.is_forum(m.chat_id),
            },
            "date": unix_secs(SystemTime::now()),
            "text": m.text,
        });
        if !m.entities.is_empty() {
            v["entities"] = m
                .entities
                .iter()
                .map(|e| {
                    let mut entity =
                        json!({"type": e.kind, "offset": e.offset, "length": e.length});
                    if let Some(url) = &e.url {
                        entity["url"] = json!(url);
                    }
                    if let Some(id) = e.user_id {
                        entity["user"] = json!({"id": id, "is_bot": false, "first_name": "User"});
                    }
                    if let Some(language) = &e.language {
                        entity["language"] = json!(language);
                    }
                    entity
                })
                .collect();
        }
        if let (Some(obj), Some(thread)) = (v.as_object_mut(), m.message_thread_id) {
            // Telegram leaves both fields out for messages outside a topic.
            obj.insert("message_thread_id".into(), json!(thread));
            obj.insert("is_topic_message".into(), Value::Bool(true));
        }
        v
    }
}

/// Checks the token from the path against the accepted set and records it,
/// so token-rotation tests can see which one each request used.
fn authorize(shared: &Shared, token: &str) -> Result<(), Reply> {
    if lock(shared).tokens.check(token) {
        Ok(())
    } else {
        Err(telegram_error(StatusCode::UNAUTHORIZED, "Unauthorized"))
    }
}

/// Auth, then the fault source (a real rate limiter answers before the
/// request's content is looked at), then the method itself.
async fn call(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Response {
    let Ok(Path((segment, method))) = path else {
        return not_found().await;
    };
    let Some(token) = segment.strip_prefix("bot") else {
        return not_found().await;
    };
    if let Err(r) = authorize(&shared, token) {
        return reply(r);
    }
    let Some(described) = spec::method(&method) else {
        lock(&shared)
            .violations
            .push(format!("{method}: no such Bot API method"));
        return not_found().await;
    };
    if let Ok(params) = parse_params(&body) {
        let wrong = spec::check(described, &params);
        lock(&shared)
            .violations
            .extend(wrong.into_iter().map(|w| format!("{method}: {w}")));
    }
    // Bot API method names are case-insensitive.
    match method.to_ascii_lowercase().as_str() {
        "getme" => reply(lock(&shared).get_me()),
        "sendmessage" => {
            faulted(&shared, &conn, |st| match st.errors.pop_front() {
                Some(scripted) => reply(scripted),
                None => reply_either(st.send_message(&body)),
            })
            .await
        }
        // The update side is never faulted: a fault queued for a post stays for the post.
        "getupdates" => listen::get_updates(&shared, &body).await,
        "setwebhook" => reply_either(lock(&shared).set_webhook(&body)),
        "deletewebhook" => reply_either(lock(&shared).delete_webhook(&body)),
        "getwebhookinfo" => reply(lock(&shared).webhook_info()),
        // Deletes are never faulted (only message-creating calls are).
        "deletemessage" => reply_either(lock(&shared).delete_message(&body)),
        "createforumtopic" => {
            faulted(&shared, &conn, |st| match st.errors.pop_front() {
                Some(scripted) => reply(scripted),
                None => reply_either(st.create_forum_topic(&body)),
            })
            .await
        }
        _other => {
            lock(&shared)
                .violations
                .push(format!("{method}: not modelled by the fake"));
            not_found().await
        }
    }
}

async fn not_found() -> Response {
    reply(telegram_error(StatusCode::NOT_FOUND, "Not Found"))
}

async fn method_not_allowed() -> Response {
    reply(telegram_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
    ))
}

fn ok(result: Value) -> Reply {
    (StatusCode::OK, json!({ "ok": true, "result": result }))
}

/// Telegram's error envelope: the HTTP status is repeated as `error_code`.
fn telegram_error(status: StatusCode, description: &str) -> Reply {
    (
        status,
        json!({
            "ok": false,
            "error_code": status.as_u16(),
            "description": description,
        }),
    )
}

fn bad_request(what: &str) -> Reply {
    telegram_error(StatusCode::BAD_REQUEST, &format!("Bad Request: {what}"))
}

impl Platform for TelegramState {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    /// Telegram's 429: whole seconds in `parameters.retry_after` (its documented
    /// signal, never below 1 so a client cannot spin), mirrored in `Retry-After`
    /// for clients that only honour HTTP semantics.
    fn rate_limited(retry_after_ms: u64) -> Response {
        let secs = retry_after_header_secs(retry_after_ms).max(1);
        let body = json!({
            "ok": false,
            "error_code": 429,
            "description": format!("Too Many Requests: retry after {secs}"),
            "parameters": { "retry_after": secs },
        });
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut()
                .insert(HeaderName::from_static("retry-after"), v);
        }
        resp
    }

    fn server_error() -> Response {
        reply(telegram_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ))
    }
}

/// The request's parameters. An empty body is no parameters, so a bare
/// `POST getMe` works; the exact wording of Telegram's parse errors is not modelled.
fn parse_params(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) | Err(_) => Err(bad_request("can't parse JSON request body")),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fakes::{server_errors_only, test_client as client, Fault, FaultCounts};

    const TOKEN: &str = "123456:test-token";
    const CHAT: i64 = -1_001_234_567_890;

    async fn call_as(
        c: &reqwest::Client,
        fake: &FakeTelegram,
        token: &str,
        method: &str,
        body: Value,
    ) -> (u16, Value) {
        let resp = c
            .post(format!("{}/bot{token}/{method}", fake.base_url()))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    async fn call(
        c: &reqwest::Client,
        fake: &FakeTelegram,
        method: &str,
        body: Value,
    ) -> (u16, Value) {
        call_as(c, fake, TOKEN, method, body).await
    }

    async fn send(c: &reqwest::Client, fake: &FakeTelegram, body: Value) -> (u16, Value) {
        call(c, fake, "sendMessage", body).await
    }

    async fn create_topic(c: &reqwest::Client, fake: &FakeTelegram, name: &str) -> i64 {
        let (s, b) = call(
            c,
            fake,
            "createForumTopic",
            json!({ "chat_id": CHAT, "name": name }),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        b["result"]["message_thread_id"]
            .as_i64()
            .expect("message_thread_id")
    }

    fn err(code: u16, description: &str) -> (u16, Value) {
        (
            code,
            json!({ "ok": false, "error_code": code, "description": description }),
        )
    }

    #[tokio::test]
    async fn get_me_shape() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let (s, b) = call(&c, &fake, "getMe", json!({})).await;
        assert_eq!(s, 200);
        assert_eq!(b["ok"], true);
        assert_eq!(b["result"]["id"], fake.bot_id());
        assert_eq!(b["result"]["is_bot"], true);
        assert_eq!(b["result"]["first_name"], "Threadline");
        assert_eq!(b["result"]["username"], "threadline_bot");
        assert_eq!(fake.bot_id(), 123_456);

        // A bare POST without a body works too, and method names ignore case.
        let resp = c
            .post(format!("{}/bot{TOKEN}/getme", fake.base_url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(fake.tokens_seen(), vec![TOKEN.to_owned(); 2]);
    }

    #[tokio::test]
    async fn send_message_to_chat() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let (s, b) = send(
            &c,
            &fake,
            json!({ "chat_id": CHAT, "text": "hello", "link_preview_options": { "is_disabled": true } }),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["ok"], true);
        let m = &b["result"];
        assert_eq!(m["message_id"], 1);
        assert_eq!(m["from"]["id"], fake.bot_id());
        assert_eq!(m["from"]["is_bot"], true);
        assert_eq!(m["from"]["first_name"], "Threadline");
        assert_eq!(m["chat"]["id"], CHAT);
        assert_eq!(m["chat"]["type"], "supergroup");
        assert_eq!(m["chat"]["is_forum"], true);
        assert_eq!(m["text"], "hello");
        let date = m["date"].as_u64().expect("date");
        assert!(date.abs_diff(unix_secs(SystemTime::now())) <= 5);
        assert!(m.get("message_thread_id").is_none());
        assert!(m.get("is_topic_message").is_none());

        // chat_id as a string names the same chat; ids keep counting per chat.
        let (s, b) = send(
            &c,
            &fake,
            json!({ "chat_id": CHAT.to_string(), "text": "again" }),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["result"]["chat"]["id"], CHAT);
        assert_eq!(b["result"]["message_id"], 2);
        let (_, b) = send(&c, &fake, json!({ "chat_id": "-100123", "text": "other" })).await;
        assert_eq!(b["result"]["chat"]["id"], -100_123);
        assert_eq!(b["result"]["message_id"], 1);

        assert_eq!(
            fake.messages_in(CHAT, None),
            vec![
                TelegramMessage {
                    chat_id: CHAT,
                    message_id: 1,
                    message_thread_id: None,
                    text: "hello".to_owned(),
                    entities: Vec::new(),
                    reply_to: None,
                },
                TelegramMessage {
                    chat_id: CHAT,
                    message_id: 2,
                    message_thread_id: None,
                    text: "again".to_owned(),
                    entities: Vec::new(),
                    reply_to: None,
                },
            ]
        );
        assert_eq!(fake.messages().len(), 3);
        assert_eq!(fake.messages_in(-100_123, None).len(), 1);
        let got = fake.wait_for_messages(3, Duration::from_millis(100)).await;
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn create_topic_then_post_into_it() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let (s, b) = call(
            &c,
            &fake,
            "createForumTopic",
            json!({ "chat_id": CHAT, "name": "session 1" }),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let thread = b["result"]["message_thread_id"].as_i64().expect("id");
        assert_eq!(
            b,
            json!({ "ok": true, "result": {
                "message_thread_id": thread, "name": "session 1", "icon_color": 7_322_096,
            } })
        );

        let (s, b) = send(
            &c,
            &fake,
            json!({ "chat_id": CHAT, "message_thread_id": thread, "text": "in topic" }),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["result"]["message_thread_id"], thread);
        assert_eq!(b["result"]["is_topic_message"], true);
        // The topic's id is its creation message's id, so the chat's counter moved on.
        assert!(b["result"]["message_id"].as_i64().expect("id") > thread);

        // message_thread_id as a string is accepted too.
        let (s, _) = send(
            &c,
            &fake,
            json!({ "chat_id": CHAT, "message_thread_id": thread.to_string(), "text": "two" }),
        )
        .await;
        assert_eq!(s, 200);
        let (s, _) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "outside" })).await;
        assert_eq!(s, 200);

        let texts = |thread| -> Vec<String> {
            fake.messages_in(CHAT, thread)
                .into_iter()
                .map(|m| m.text)
                .collect()
        };
        assert_eq!(texts(Some(thread)), vec!["in topic", "two"]);
        assert_eq!(texts(None), vec!["outside"]);
        assert_eq!(
            fake.topics(),
            vec![TelegramTopic {
                chat_id: CHAT,
                message_thread_id: thread,
                name: "session 1".to_owned(),
                closed: false,
            }]
        );
    }

    #[tokio::test]
    async fn a_reply_names_a_message_of_the_chat_or_is_sent_without_one_when_allowed() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let (_, first) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "q" })).await;
        let id = first["result"]["message_id"].clone();
        let (status, _) = send(
            &c,
            &fake,
            json!({ "chat_id": CHAT, "text": "a", "reply_parameters": { "message_id": id } }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            send(
                &c,
                &fake,
                json!({ "chat_id": CHAT, "text": "b", "reply_parameters": { "message_id": 999 } })
            )
            .await,
            err(400, "Bad Request: replied message not found")
        );
        let without = json!({ "message_id": 999, "allow_sending_without_reply": true });
        let (status, _) = send(
            &c,
            &fake,
            json!({ "chat_id": CHAT, "text": "c", "reply_parameters": without }),
        )
        .await;
        assert_eq!(status, 200);
        let replies: Vec<(String, Option<i64>)> = fake
            .messages_in(CHAT, None)
            .into_iter()
            .map(|m| (m.text, m.reply_to))
            .collect();
        assert_eq!(
            replies,
            vec![
                ("q".to_owned(), None),
                ("a".to_owned(), id.as_i64()),
                ("c".to_owned(), None),
            ]
        );
    }

    #[tokio::test]
    async fn send_message_errors() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let not_found = err(400, "Bad Request: chat not found");
        assert_eq!(
            send(&c, &fake, json!({ "chat_id": 42, "text": "x" })).await,
            not_found
        );
        assert_eq!(
            send(&c, &fake, json!({ "chat_id": "@nobody", "text": "x" })).await,
            not_found
        );
        assert_eq!(
            send(&c, &fake, json!({ "text": "x" })).await,
            err(400, "Bad Request: chat_id is empty")
        );
        fake.delete_chat(-1);
        assert_eq!(
            send(&c, &fake, json!({ "chat_id": -1, "text": "x" })).await,
            not_found
        );
        fake.block_chat(-2);
        assert_eq!(
            send(&c, &fake, json!({ "chat_id": "-2", "text": "x" })).await,
            err(403, "Forbidden: bot was blocked by the user")
        );

        let thread_not_found = err(400, "Bad Request: message thread not found");
        assert_eq!(
            send(
                &c,
                &fake,
                json!({ "chat_id": CHAT, "message_thread_id": 999, "text": "x" })
            )
            .await,
            thread_not_found
        );
        let thread = create_topic(&c, &fake, "t").await;
        // A topic belongs to its chat only.
        assert_eq!(
            send(
                &c,
                &fake,
                json!({ "chat_id": -5, "message_thread_id": thread, "text": "x" })
            )
            .await,
            thread_not_found
        );
        fake.close_topic(CHAT, thread);
        assert!(fake.topics()[0].closed);
        assert_eq!(
            send(
                &c,
                &fake,
                json!({ "chat_id": CHAT, "message_thread_id": thread, "text": "x" })
            )
            .await,
            err(400, "Bad Request: TOPIC_CLOSED")
        );
        fake.delete_topic(CHAT, thread);
        assert!(fake.topics().is_empty());
        assert_eq!(
            send(
                &c,
                &fake,
                json!({ "chat_id": CHAT, "message_thread_id": thread, "text": "x" })
            )
            .await,
            thread_not_found
        );

        let empty = err(400, "Bad Request: message text is empty");
        assert_eq!(
            send(&c, &fake, json!({ "chat_id": CHAT, "text": "" })).await,
            empty
        );
        assert_eq!(
            send(&c, &fake, json!({ "chat_id": CHAT, "text": " \n " })).await,
            empty
        );
        assert_eq!(send(&c, &fake, json!({ "chat_id": CHAT })).await, empty);

        let too_long = err(400, "Bad Request: message is too long");
        assert_eq!(
            send(
                &c,
                &fake,
                json!({ "chat_id": CHAT, "text": "x".repeat(4097) })
            )
            .await,
            too_long
        );
        assert_eq!(
            send(
                &c,
                &fake,
                json!({ "chat_id": CHAT, "text": "😀".repeat(4097) })
            )
            .await,
            too_long
        );
        // The limit is in chars: 4096 emoji (8192 UTF-16 units) still fit.
        for text in ["x".repeat(4096), "😀".repeat(4096)] {
            let (s, _) = send(&c, &fake, json!({ "chat_id": CHAT, "text": text })).await;
            assert_eq!(s, 200);
        }

        let resp = c
            .post(format!("{}/bot{TOKEN}/sendMessage", fake.base_url()))
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 400);
        assert_eq!(fake.messages().len(), 2);
        // Telegram answers a missing parameter with its own 400s; they are still calls
        // the description does not allow.
        assert_eq!(
            fake.take_spec_violations(),
            [
                "sendMessage: required parameter `chat_id` missing",
                "sendMessage: required parameter `text` missing",
            ]
        );
    }

    #[tokio::test]
    async fn calls_are_checked_against_the_bot_api_description() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let (s, _) = send(
            &c,
            &fake,
            json!({
                "chat_id": CHAT,
                "text": "x",
                "disable_web_page_preview": true,
                "message_thread_id": "not a number",
                "link_preview_options": { "is_disabled": "yes", "colour": 1 },
                "reply_parameters": { "message_id": 1 },
            }),
        )
        .await;
        // Telegram itself answers this one (the thread id is no topic); the call is recorded.
        assert_eq!(s, 400);
        let wrong = fake.take_spec_violations();
        assert_eq!(wrong.len(), 3, "{wrong:#?}");
        assert!(wrong[0].contains("unknown parameter `disable_web_page_preview`"));
        assert!(wrong
            .iter()
            .any(|w| w.contains("`link_preview_options`")
                && w.contains("link_preview_options.colour")));
        assert!(wrong.iter().any(|w| w.contains("`message_thread_id`")));
        // A well-formed call leaves nothing behind.
        let (s, _) = send(
            &c,
            &fake,
            json!({ "chat_id": CHAT, "text": "fine",
            "link_preview_options": { "is_disabled": true } }),
        )
        .await;
        assert_eq!(s, 200);
        assert!(fake.take_spec_violations().is_empty());
    }

    #[tokio::test]
    #[should_panic(expected = "broke the Bot API description")]
    async fn a_call_the_description_does_not_allow_fails_the_test_when_the_fake_drops() {
        let fake = FakeTelegram::start().await;
        send(
            &client(),
            &fake,
            json!({ "chat_id": CHAT, "text": "x", "parse_mood": "HTML" }),
        )
        .await;
        drop(fake);
    }

    #[tokio::test]
    async fn delete_message_and_posts_for_a_deleted_topic() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let thread = create_topic(&c, &fake, "t").await;
        fake.delete_topic(CHAT, thread);
        let body = json!({ "chat_id": CHAT, "message_thread_id": thread, "text": "x" });
        assert_eq!(
            send(&c, &fake, body.clone()).await,
            err(400, "Bad Request: message thread not found")
        );
        // As the Bot API did for private-chat topics: into the chat, without an error.
        fake.unthread_deleted_topics(true);
        let (s, b) = send(&c, &fake, body).await;
        assert_eq!(s, 200, "{b}");
        assert!(b["result"].get("message_thread_id").is_none(), "{b}");
        let id = b["result"]["message_id"].as_i64().expect("id");
        assert_eq!(fake.messages_in(CHAT, None).len(), 1);

        let delete = json!({ "chat_id": CHAT, "message_id": id });
        assert_eq!(
            call(&c, &fake, "deleteMessage", delete.clone()).await,
            (200, json!({ "ok": true, "result": true }))
        );
        assert_eq!(
            call(&c, &fake, "deleteMessage", delete).await,
            err(400, "Bad Request: message to delete not found")
        );
        assert!(fake.messages().is_empty());
        assert!(fake.take_spec_violations().is_empty());
    }

    #[test]
    fn mentions_are_at_usernames_not_mail_addresses_or_joined_ats() {
        let m = |text: &str| TelegramMessage {
            chat_id: CHAT,
            message_id: 1,
            message_thread_id: None,
            text: text.into(),
            entities: Vec::new(),
            reply_to: None,
        };
        assert_eq!(
            m("hi @alice and @bob_2, mail x@y.z").mentions(),
            ["@alice", "@bob_2"]
        );
        assert!(m("hi @\u{2060}alice").mentions().is_empty());
    }

    #[tokio::test]
    async fn create_topic_errors() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let create = |body: Value| call(&c, &fake, "createForumTopic", body);
        let invalid = err(400, "Bad Request: TOPIC_NAME_INVALID");
        assert_eq!(
            create(json!({ "chat_id": CHAT, "name": "" })).await,
            invalid
        );
        assert_eq!(create(json!({ "chat_id": CHAT })).await, invalid);
        assert_eq!(
            create(json!({ "chat_id": CHAT, "name": "n".repeat(129) })).await,
            invalid
        );
        let (s, _) = create(json!({ "chat_id": CHAT, "name": "n".repeat(128) })).await;
        assert_eq!(s, 200);

        fake.set_forum(CHAT, false);
        assert_eq!(
            create(json!({ "chat_id": CHAT, "name": "x" })).await,
            err(400, "Bad Request: the chat is not a forum")
        );
        let (_, b) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "plain" })).await;
        assert_eq!(b["result"]["chat"]["is_forum"], false);
        fake.set_forum(CHAT, true);
        let (s, _) = create(json!({ "chat_id": CHAT, "name": "x" })).await;
        assert_eq!(s, 200);

        assert_eq!(
            create(json!({ "chat_id": 7, "name": "x" })).await,
            err(400, "Bad Request: chat not found")
        );
        assert_eq!(fake.topics().len(), 2);
        assert_eq!(
            fake.take_spec_violations(),
            ["createForumTopic: required parameter `name` missing"]
        );
    }

    #[tokio::test]
    async fn rate_limit_and_server_error_faults() {
        let fake = FakeTelegram::start().await;
        let c = client();
        fake.push_fault(Fault::RateLimited {
            retry_after_ms: 1_500,
        });
        // Reads are never faulted: getMe leaves the queued fault in place.
        let (s, _) = call(&c, &fake, "getMe", json!({})).await;
        assert_eq!(s, 200);

        let resp = c
            .post(format!("{}/bot{TOKEN}/sendMessage", fake.base_url()))
            .json(&json!({ "chat_id": CHAT, "text": "hi" }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 429);
        let header = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(header.as_deref(), Some("2"));
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body,
            json!({
                "ok": false,
                "error_code": 429,
                "description": "Too Many Requests: retry after 2",
                "parameters": { "retry_after": 2 },
            })
        );

        // Sub-second and zero waits still tell the client to wait a second.
        for retry_after_ms in [250, 0] {
            fake.push_fault(Fault::RateLimited { retry_after_ms });
            let (s, b) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "hi" })).await;
            assert_eq!(s, 429);
            assert_eq!(b["parameters"]["retry_after"], 1);
        }

        // Topic creation is faulted as well.
        fake.push_fault(Fault::ServerError);
        assert_eq!(
            call(
                &c,
                &fake,
                "createForumTopic",
                json!({ "chat_id": CHAT, "name": "t" })
            )
            .await,
            err(500, "Internal Server Error")
        );
        assert!(fake.messages().is_empty() && fake.topics().is_empty());
        assert_eq!(
            fake.fault_counts(),
            FaultCounts {
                server_error: 1,
                rate_limited: 3,
                ..FaultCounts::default()
            }
        );

        // The queue is drained: the next post goes through.
        let (s, _) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "hi" })).await;
        assert_eq!(s, 200);
        assert_eq!(fake.request_count(), 6);
    }

    #[tokio::test]
    async fn fault_mix_draws_after_queue() {
        let fake = FakeTelegram::start().await;
        let c = client();
        fake.set_fault_mix(Some(server_errors_only()));
        fake.push_fault(Fault::Slow { delay_ms: 1 });
        let (s, _) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "queued" })).await;
        assert_eq!(s, 200);
        let (s, _) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "mixed" })).await;
        assert_eq!(s, 500);
        fake.set_fault_mix(None);
        let (s, _) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "clean" })).await;
        assert_eq!(s, 200);
        assert_eq!(
            fake.fault_counts(),
            FaultCounts {
                server_error: 1,
                slow: 1,
                ..FaultCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn slow_fault_delays_then_succeeds() {
        let fake = FakeTelegram::start().await;
        let c = client();
        fake.push_fault(Fault::Slow { delay_ms: 150 });
        let started = std::time::Instant::now();
        let (s, _) = send(&c, &fake, json!({ "chat_id": CHAT, "text": "late" })).await;
        assert_eq!(s, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(fake.messages().len(), 1);
    }

    #[tokio::test]
    async fn accept_then_hang_stores_but_never_answers() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let url = format!("{}/bot{TOKEN}/sendMessage", fake.base_url());
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 2_000 });
        let err = c
            .post(&url)
            .timeout(Duration::from_millis(300))
            .json(&json!({ "chat_id": CHAT, "text": "maybe" }))
            .send()
            .await
            .expect_err("the fake must not answer");
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(fake.messages_in(CHAT, None).len(), 1);

        // After the hold, the connection is dropped without any response.
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 50 });
        let err = c
            .post(&url)
            .timeout(Duration::from_secs(5))
            .json(&json!({ "chat_id": CHAT, "text": "second" }))
            .send()
            .await
            .expect_err("the fake must drop the connection");
        assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
        assert_eq!(fake.messages().len(), 2);
        assert_eq!(fake.fault_counts().accept_then_hang, 2);
    }

    #[tokio::test]
    async fn auth_and_token_rotation() {
        let fake = FakeTelegram::start().await;
        let c = client();
        let unauthorized = err(401, "Unauthorized");
        assert_eq!(
            call_as(&c, &fake, "999:wrong", "getMe", json!({})).await,
            unauthorized
        );
        // Auth comes before faults: a rejected request does not use one up.
        fake.push_fault(Fault::ServerError);
        assert_eq!(
            call_as(
                &c,
                &fake,
                "999:wrong",
                "sendMessage",
                json!({ "chat_id": CHAT, "text": "x" })
            )
            .await,
            unauthorized
        );
        assert_eq!(fake.fault_counts(), FaultCounts::default());
        assert!(fake.tokens_seen().is_empty());

        fake.set_tokens(&["1:old", "1:new"]);
        assert_eq!(call(&c, &fake, "getMe", json!({})).await, unauthorized);
        let (s, _) = call_as(&c, &fake, "1:old", "getMe", json!({})).await;
        assert_eq!(s, 200);
        let (s, _) = call_as(
            &c,
            &fake,
            "1:new",
            "sendMessage",
            json!({ "chat_id": CHAT, "text": "x" }),
        )
        .await;
        assert_eq!(s, 500, "the queued fault applies once authorised");
        assert_eq!(
            fake.tokens_seen(),
            vec!["1:old".to_owned(), "1:new".to_owned()]
        );

        // Unknown methods and paths without the `bot` prefix are Telegram 404s.
        assert_eq!(
            call_as(&c, &fake, "1:old", "getChatHistory", json!({})).await,
            err(404, "Not Found")
        );
        let resp = c
            .post(format!("{}/1:old/getMe", fake.base_url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 404);
        assert_eq!(fake.request_count(), 7);
        assert_eq!(
            fake.take_spec_violations(),
            ["getChatHistory: no such Bot API method"]
        );
    }

    #[tokio::test]
    async fn drop_shuts_server_down() {
        let fake = FakeTelegram::start().await;
        let url = format!("{}/bot{TOKEN}/getMe", fake.base_url());
        drop(fake);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let res = client()
            .post(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(res.is_err(), "{res:?}");
    }
}
