//! The fake's update side: what a bot *hears*. People write (`person_writes`, …), which
//! queues an `Update`; the bot fetches them with `getUpdates` (long polling) or has them
//! pushed to its `setWebhook` URL, as the Bot API's "Getting updates" section describes.
//!
//! Modelled as the Bot API states it (`tests/specs/telegram-api.json`, method and field
//! descriptions):
//! - `getUpdates` `offset`: "An update is considered confirmed as soon as getUpdates is
//!   called with an offset higher than its update_id"; a negative offset keeps only the last
//!   `-offset` updates; `limit` 1–100 (default 100); `timeout` in seconds, 0 = short poll;
//!   `allowed_updates` is kept until changed ("If not specified, the previous setting will
//!   be used") and applies to updates created after the call.
//! - `setWebhook` (`url`, `secret_token` 1–256 of `A-Za-z0-9_-`, `allowed_updates`,
//!   `drop_pending_updates`), `deleteWebhook` (`drop_pending_updates`), `getWebhookInfo`.
//!   While a webhook is set, unconfirmed updates are POSTed to it as JSON with header
//!   `X-Telegram-Bot-Api-Secret-Token`; "In case of an unsuccessful request (a request with
//!   response HTTP status code different from 2XY), we will repeat the request".
//!
//! Not in the spec, from public evidence:
//! - A second `getUpdates` while one is waiting ends the waiting one with 409 `Conflict:
//!   terminated by other getUpdates request; make sure that only one bot instance is
//!   running` (pengrad/java-telegram-bot-api#261, lorcalhost/BTB-manager-telegram#69);
//!   `getUpdates` while a webhook is set answers 409 `Conflict: can't use getUpdates method
//!   while webhook is active; use deleteWebhook to delete the webhook first`
//!   (inCaller/prometheus_bot#41, reo7sp/tgbot-cpp#158).
//! - Every message in a forum topic carries `reply_to_message` = the topic's
//!   `forum_topic_created` service message (aiogram/aiogram#1511, a maintainer: "all
//!   messages in topics are a response to the message of the beginning of the topic";
//!   banteg/takopi#152 shows such an update from production).
//! - The real API only accepts HTTPS webhook URLs; the fake accepts `http://127.0.0.1`
//!   too, because tests have no TLS.
//!
//! Simplifications: webhook pushes go one at a time, in `update_id` order (Telegram may use
//! up to `max_connections` at once); retries come every [`RETRY_MS`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use super::{bad_request, lock, ok, parse_params, reply, telegram_error, unix_secs, Shared};
use super::{TelegramState, BOT_FIRST_NAME, BOT_USERNAME, DEFAULT_ICON_COLOR};
use axum::http::StatusCode;

/// Update ids "start from a certain positive number and increase sequentially".
const FIRST_UPDATE_ID: i64 = 700_000_001;
/// How soon a refused webhook push is repeated.
const RETRY_MS: u64 = 200;
/// Update types received when `allowed_updates` is unset or empty ("all update types
/// except chat_member, message_reaction, and message_reaction_count").
const NOT_BY_DEFAULT: [&str; 3] = ["chat_member", "message_reaction", "message_reaction_count"];
/// The secret header Telegram sends on every webhook request.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// A Telegram user who writes in the fake's chats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelegramUser {
    /// The user's id.
    pub id: i64,
    /// Whether the user is a bot.
    pub is_bot: bool,
    /// First name (always present on Telegram).
    pub first_name: String,
    /// Last name, if set.
    pub last_name: Option<String>,
    /// `@username` without the `@`, if set.
    pub username: Option<String>,
}

impl TelegramUser {
    /// A person (no bot) with only a first name.
    pub fn person(id: i64, first_name: &str) -> TelegramUser {
        TelegramUser {
            id,
            is_bot: false,
            first_name: first_name.into(),
            last_name: None,
            username: None,
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({ "id": self.id, "is_bot": self.is_bot, "first_name": self.first_name });
        if let Some(obj) = v.as_object_mut() {
            if let Some(l) = &self.last_name {
                obj.insert("last_name".into(), json!(l));
            }
            if let Some(u) = &self.username {
                obj.insert("username".into(), json!(u));
            }
        }
        v
    }
}

/// One webhook push the fake made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookPush {
    /// The update pushed.
    pub update_id: i64,
    /// The status the bot answered; `None` when no answer came (refused, timed out).
    pub status: Option<u16>,
}

#[derive(Debug)]
struct Webhook {
    url: String,
    secret: Option<String>,
    last_error: Option<(u64, String)>,
}

/// The update queue and how the bot receives it.
#[derive(Debug)]
pub(super) struct Updates {
    next_id: i64,
    /// Unconfirmed updates, in `update_id` order.
    pending: VecDeque<Value>,
    /// Every update ever queued, so a test can push one again.
    all: Vec<Value>,
    allowed: Option<Vec<String>>,
    webhook: Option<Webhook>,
    /// Bumped by every `getUpdates`; a waiting call whose number is no longer current was
    /// terminated by a newer one.
    poll_generation: u64,
    /// Whether a `getUpdates` is waiting right now.
    polling: bool,
    /// How many waiting `getUpdates` a newer one terminated (409).
    conflicts: usize,
    /// `getUpdates` refused because a webhook was set (409).
    webhook_conflicts: usize,
    pushes: Vec<WebhookPush>,
    /// Each call of `getUpdates`, `setWebhook`, `deleteWebhook`, `getWebhookInfo`.
    calls: Vec<(String, Value)>,
    notify: Arc<Notify>,
}

impl Updates {
    pub(super) fn new() -> Updates {
        Updates {
            next_id: FIRST_UPDATE_ID,
            pending: VecDeque::new(),
            all: Vec::new(),
            allowed: None,
            webhook: None,
            poll_generation: 0,
            polling: false,
            conflicts: 0,
            webhook_conflicts: 0,
            pushes: Vec::new(),
            calls: Vec::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    fn allows(&self, kind: &str) -> bool {
        match self.allowed.as_deref() {
            Some(list) if !list.is_empty() => list.iter().any(|k| k == kind),
            Some(_) | None => !NOT_BY_DEFAULT.contains(&kind),
        }
    }

    /// Queues `{update_id, <kind>: value}`; `None` when `allowed_updates` excludes `kind`
    /// (Telegram does not create it for this bot).
    fn push(&mut self, kind: &str, value: Value) -> Option<i64> {
        if !self.allows(kind) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let update = json!({ "update_id": id, kind: value });
        self.pending.push_back(update.clone());
        self.all.push(update);
        self.notify.notify_waiters();
        Some(id)
    }

    fn confirm_below(&mut self, offset: i64) {
        self.pending.retain(|u| id_of(u) >= offset);
    }

    fn keep_last(&mut self, n: usize) {
        while self.pending.len() > n {
            self.pending.pop_front();
        }
    }
}

fn id_of(update: &Value) -> i64 {
    update["update_id"].as_i64().unwrap_or_default()
}

fn int(params: &Map<String, Value>, name: &str) -> Option<i64> {
    match params.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

fn bool_param(params: &Map<String, Value>, name: &str) -> bool {
    matches!(params.get(name), Some(Value::Bool(true)))
        || matches!(params.get(name), Some(Value::String(s)) if s == "true")
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        // "A JSON-serialized list": form-encoded clients send it as a string.
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => None,
    }
}

fn conflict(description: &str) -> Response {
    reply(telegram_error(StatusCode::CONFLICT, description))
}

const TERMINATED: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
const WEBHOOK_ACTIVE: &str = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

/// Marks the waiting call as gone when its handler ends, however it ends (a client that
/// disconnects drops it).
struct Waiting {
    shared: Shared,
    generation: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        if st.updates.poll_generation == self.generation {
            st.updates.polling = false;
        }
    }
}

/// `getUpdates`: confirms what lies below `offset`, then answers at once when updates are
/// pending, else waits up to `timeout` seconds for one.
pub(super) async fn get_updates(shared: &Shared, body: &[u8]) -> Response {
    let params = match parse_params(body) {
        Ok(p) => p,
        Err(r) => return reply(r),
    };
    let limit = match int(&params, "limit") {
        None => 100,
        Some(l) => usize::try_from(l.clamp(1, 100)).unwrap_or(100),
    };
    let timeout =
        Duration::from_secs(u64::try_from(int(&params, "timeout").unwrap_or(0)).unwrap_or(0));
    let (generation, notify) = {
        let mut st = lock(shared);
        let u = &mut st.updates;
        u.calls
            .push(("getUpdates".into(), Value::Object(params.clone())));
        if u.webhook.is_some() {
            u.webhook_conflicts += 1;
            return conflict(WEBHOOK_ACTIVE);
        }
        if let Some(list) = string_list(params.get("allowed_updates")) {
            u.allowed = Some(list);
        }
        match int(&params, "offset") {
            Some(o) if o < 0 => u.keep_last(usize::try_from(-o).unwrap_or(usize::MAX)),
            Some(o) => u.confirm_below(o),
            None => {}
        }
        if u.polling {
            u.conflicts += 1;
        }
        u.poll_generation += 1;
        u.polling = true;
        u.notify.notify_waiters();
        (u.poll_generation, Arc::clone(&u.notify))
    };
    let _waiting = Waiting {
        shared: Arc::clone(shared),
        generation,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let st = lock(shared);
            let u = &st.updates;
            if u.poll_generation != generation {
                return conflict(TERMINATED);
            }
            if u.webhook.is_some() {
                return conflict(WEBHOOK_ACTIVE);
            }
            if !u.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                let batch: Vec<Value> = u.pending.iter().take(limit).cloned().collect();
                return reply(ok(Value::Array(batch)));
            }
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn valid_secret(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl TelegramState {
    pub(super) fn set_webhook(&mut self, body: &[u8]) -> Result<super::Reply, super::Reply> {
        let params = parse_params(body)?;
        self.updates
            .calls
            .push(("setWebhook".into(), Value::Object(params.clone())));
        let url = params
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let secret = params
            .get("secret_token")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(s) = &secret {
            if !valid_secret(s) {
                // The exact wording is not documented; the 400 is.
                return Err(bad_request("secret token contains unallowed characters"));
            }
        }
        let u = &mut self.updates;
        if url.is_empty() {
            u.webhook = None;
        } else {
            let loopback = url.starts_with("http://127.0.0.1:");
            if !url.starts_with("https://") && !loopback {
                return Err(bad_request(
                    "bad webhook: An HTTPS URL must be provided for webhook",
                ));
            }
            u.webhook = Some(Webhook {
                url,
                secret,
                last_error: None,
            });
        }
        if let Some(list) = string_list(params.get("allowed_updates")) {
            u.allowed = Some(list);
        }
        if bool_param(&params, "drop_pending_updates") {
            u.pending.clear();
        }
        u.notify.notify_waiters();
        let description = if u.webhook.is_some() {
            "Webhook was set"
        } else {
            "Webhook was deleted"
        };
        Ok((
            StatusCode::OK,
            json!({ "ok": true, "result": true, "description": description }),
        ))
    }

    pub(super) fn delete_webhook(&mut self, body: &[u8]) -> Result<super::Reply, super::Reply> {
        let params = parse_params(body)?;
        self.updates
            .calls
            .push(("deleteWebhook".into(), Value::Object(params.clone())));
        let u = &mut self.updates;
        let was = u.webhook.take().is_some();
        if bool_param(&params, "drop_pending_updates") {
            u.pending.clear();
        }
        u.notify.notify_waiters();
        let description = if was {
            "Webhook was deleted"
        } else {
            "Webhook is already deleted"
        };
        Ok((
            StatusCode::OK,
            json!({ "ok": true, "result": true, "description": description }),
        ))
    }

    pub(super) fn webhook_info(&mut self) -> super::Reply {
        let u = &mut self.updates;
        u.calls.push(("getWebhookInfo".into(), json!({})));
        let mut info = json!({
            "url": u.webhook.as_ref().map(|w| w.url.clone()).unwrap_or_default(),
            "has_custom_certificate": false,
            "pending_update_count": u.pending.len(),
        });
        if let Some(obj) = info.as_object_mut() {
            if let Some((date, message)) = u.webhook.as_ref().and_then(|w| w.last_error.clone()) {
                obj.insert("last_error_date".into(), json!(date));
                obj.insert("last_error_message".into(), json!(message));
            }
            if let Some(list) = &u.allowed {
                obj.insert("allowed_updates".into(), json!(list));
            }
        }
        ok(info)
    }

    fn chat_json(&self, chat_id: i64) -> Value {
        json!({
            "id": chat_id,
            "title": format!("Chat {chat_id}"),
            "type": "supergroup",
            "is_forum": self.is_forum(chat_id),
        })
    }

    /// The topic's root: the `forum_topic_created` service message every topic message
    /// answers. Topics are created by the bot (`createForumTopic`).
    fn topic_root(&self, chat_id: i64, thread: i64) -> Value {
        let name = self
            .topics
            .iter()
            .find(|t| t.chat_id == chat_id && t.message_thread_id == thread)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| panic!("the fake has no topic {thread} in chat {chat_id}"));
        json!({
            "message_id": thread,
            "from": { "id": self.bot_id, "is_bot": true, "first_name": BOT_FIRST_NAME,
                      "username": BOT_USERNAME },
            "chat": self.chat_json(chat_id),
            "date": unix_secs(std::time::SystemTime::now()),
            "message_thread_id": thread,
            "is_topic_message": true,
            "forum_topic_created": { "name": name, "icon_color": DEFAULT_ICON_COLOR },
        })
    }

    /// A new message by `from` in `chat` (in `topic`), with `extra` fields (`text`,
    /// `forum_topic_closed`, …) merged in; → its message id, and the update queued.
    pub(super) fn person_message(
        &mut self,
        chat_id: i64,
        topic: Option<i64>,
        from: &TelegramUser,
        reply_to: Option<i64>,
        extra: Value,
    ) -> i64 {
        let message_id = self.next_message_id(chat_id);
        let mut m = json!({
            "message_id": message_id,
            "from": from.json(),
            "chat": self.chat_json(chat_id),
            "date": unix_secs(std::time::SystemTime::now()),
        });
        let root = topic.map(|t| self.topic_root(chat_id, t));
        if let Some(obj) = m.as_object_mut() {
            if let Some(thread) = topic {
                obj.insert("message_thread_id".into(), json!(thread));
                obj.insert("is_topic_message".into(), json!(true));
            }
            let replied = match reply_to {
                // Only the replied message's id and chat are modelled.
                Some(id) => Some(json!({
                    "message_id": id,
                    "chat": self.chat_json(chat_id),
                    "date": unix_secs(std::time::SystemTime::now()),
                })),
                None => root,
            };
            if let Some(r) = replied {
                obj.insert("reply_to_message".into(), r);
            }
            if let Value::Object(fields) = extra {
                obj.extend(fields);
            }
        }
        self.check_update_shape("message", &m);
        let _ = self.updates.push("message", m);
        message_id
    }

    /// A raw update of `kind`; → its `update_id`, `None` when `allowed_updates` excludes it.
    pub(super) fn inject(&mut self, kind: &str, value: Value) -> Option<i64> {
        self.check_update_shape(kind, &value);
        self.updates.push(kind, value)
    }

    /// What the fake itself sends must match the description too.
    fn check_update_shape(&mut self, kind: &str, value: &Value) {
        let update = json!({ "update_id": 1, kind: value });
        if let Some(fields) = update.as_object() {
            let wrong = super::spec::check_type("Update", fields);
            self.violations
                .extend(wrong.into_iter().map(|w| format!("fake's own update: {w}")));
        }
    }
}

/// Pushes pending updates to the webhook while one is set, until the fake is dropped.
pub(super) fn spawn_pusher(shared: Weak<Mutex<TelegramState>>) {
    tokio::spawn(async move {
        let client = crate::fakes::plain_client(Duration::from_secs(5));
        loop {
            let (next, notify) = {
                let Some(strong) = shared.upgrade() else {
                    return;
                };
                let st = lock(&strong);
                let u = &st.updates;
                let next = u.webhook.as_ref().and_then(|w| {
                    u.pending
                        .front()
                        .map(|p| (w.url.clone(), w.secret.clone(), p.clone()))
                });
                (next, Arc::clone(&u.notify))
            };
            let Some((url, secret, update)) = next else {
                let notified = notify.notified();
                // A short tick too: it also notices the fake being dropped.
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            };
            let status = push(&client, &url, secret.as_deref(), &update).await;
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let accepted = {
                let mut st = lock(&strong);
                let u = &mut st.updates;
                let id = id_of(&update);
                u.pushes.push(WebhookPush {
                    update_id: id,
                    status,
                });
                let accepted = status.is_some_and(|s| (200..300).contains(&s));
                if accepted {
                    u.pending.retain(|p| id_of(p) != id);
                } else if let Some(w) = u.webhook.as_mut() {
                    let what = match status {
                        Some(s) => format!("Wrong response from the webhook: {s}"),
                        None => "Connection refused".to_owned(),
                    };
                    w.last_error = Some((unix_secs(std::time::SystemTime::now()), what));
                }
                accepted
            };
            if !accepted {
                tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
            }
        }
    });
}

async fn push(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    update: &Value,
) -> Option<u16> {
    let mut request = client.post(url).json(update);
    if let Some(s) = secret {
        request = request.header(SECRET_HEADER, s);
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}

/// People writing to the fake from a task of their own (the chaos run's people).
#[derive(Clone)]
pub struct TelegramPeople {
    shared: super::Shared,
}

impl TelegramPeople {
    /// `from` writes `text` in `chat` (in forum topic `topic`); → the new message's id.
    pub fn person_writes(
        &self,
        chat: i64,
        topic: Option<i64>,
        from: &TelegramUser,
        text: &str,
    ) -> i64 {
        lock(&self.shared).person_message(chat, topic, from, None, json!({ "text": text }))
    }
}

impl super::FakeTelegram {
    /// A handle for writing as people from another task.
    pub fn people(&self) -> TelegramPeople {
        TelegramPeople {
            shared: self.shared.clone(),
        }
    }

    /// `from` writes `text` in `chat` (in forum topic `topic`); → the new message's id.
    /// A message in a topic answers the topic's creation message, as on Telegram.
    pub fn person_writes(
        &self,
        chat: i64,
        topic: Option<i64>,
        from: &TelegramUser,
        text: &str,
    ) -> i64 {
        self.people().person_writes(chat, topic, from, text)
    }

    /// `from` answers message `reply_to` with `text`; → the new message's id.
    pub fn person_replies(
        &self,
        chat: i64,
        topic: Option<i64>,
        from: &TelegramUser,
        reply_to: i64,
        text: &str,
    ) -> i64 {
        lock(&self.shared).person_message(
            chat,
            topic,
            from,
            Some(reply_to),
            json!({ "text": text }),
        )
    }

    /// `from` closes a forum topic: posting into it fails from now on, and a
    /// `forum_topic_closed` service message is heard in it; → that message's id.
    pub fn person_closes_topic(&self, chat: i64, topic: i64, from: &TelegramUser) -> i64 {
        let mut st = lock(&self.shared);
        if let Some(t) = st.topic_mut(chat, topic) {
            t.closed = true;
        }
        st.person_message(
            chat,
            Some(topic),
            from,
            None,
            json!({ "forum_topic_closed": {} }),
        )
    }

    /// `from` reopens a closed topic (a `forum_topic_reopened` service message); → its id.
    pub fn person_reopens_topic(&self, chat: i64, topic: i64, from: &TelegramUser) -> i64 {
        let mut st = lock(&self.shared);
        if let Some(t) = st.topic_mut(chat, topic) {
            t.closed = false;
        }
        st.person_message(
            chat,
            Some(topic),
            from,
            None,
            json!({ "forum_topic_reopened": {} }),
        )
    }

    /// Queues a raw update `{update_id, <kind>: value}` (checked against the description);
    /// → its `update_id`, `None` when the bot's `allowed_updates` excludes `kind`.
    pub fn inject_update(&self, kind: &str, value: Value) -> Option<i64> {
        lock(&self.shared).inject(kind, value)
    }

    /// Updates not yet confirmed (by a higher `getUpdates` offset or a 2xx webhook answer).
    pub fn pending_updates(&self) -> usize {
        lock(&self.shared).updates.pending.len()
    }

    /// How many waiting `getUpdates` were terminated by a concurrent one (409).
    pub fn get_updates_conflicts(&self) -> usize {
        lock(&self.shared).updates.conflicts
    }

    /// How many `getUpdates` were refused because a webhook was set (409).
    pub fn webhook_conflicts(&self) -> usize {
        lock(&self.shared).updates.webhook_conflicts
    }

    /// Each `getUpdates`, `setWebhook`, `deleteWebhook` and `getWebhookInfo` call, with its
    /// parameters, in arrival order.
    pub fn update_calls(&self) -> Vec<(String, Value)> {
        lock(&self.shared).updates.calls.clone()
    }

    /// The webhook URL set, if any.
    pub fn webhook_url(&self) -> Option<String> {
        lock(&self.shared)
            .updates
            .webhook
            .as_ref()
            .map(|w| w.url.clone())
    }

    /// Sets a webhook as a bot's earlier `setWebhook` would have (for "a webhook is still
    /// set from before" start-ups).
    pub fn preset_webhook(&self, url: &str, secret: Option<&str>) {
        let mut st = lock(&self.shared);
        st.updates.webhook = Some(Webhook {
            url: url.into(),
            secret: secret.map(str::to_owned),
            last_error: None,
        });
        st.updates.notify.notify_waiters();
    }

    /// Every webhook push so far, in order.
    pub fn webhook_pushes(&self) -> Vec<WebhookPush> {
        lock(&self.shared).updates.pushes.clone()
    }

    /// Pushes an update that was already delivered once more, as Telegram repeats a push
    /// whose answer it did not get; → the status the bot answered.
    pub async fn push_again(&self, update_id: i64) -> Option<u16> {
        let (url, secret, update) = {
            let st = lock(&self.shared);
            let u = &st.updates;
            let w = u.webhook.as_ref()?;
            let update = u.all.iter().find(|p| id_of(p) == update_id)?.clone();
            (w.url.clone(), w.secret.clone(), update)
        };
        let client = crate::fakes::plain_client(Duration::from_secs(5));
        let status = push(&client, &url, secret.as_deref(), &update).await;
        lock(&self.shared)
            .updates
            .pushes
            .push(WebhookPush { update_id, status });
        status
    }

    /// The update ids of everything queued, in order.
    pub fn update_ids(&self) -> Vec<i64> {
        lock(&self.shared).updates.all.iter().map(id_of).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::FakeTelegram;
    use super::*;
    use crate::fakes::test_client as client;
    use std::sync::atomic::{AtomicU16, Ordering};

    const TOKEN: &str = "123456:test-token";
    const CHAT: i64 = -1_001_234_567_890;

    /// A push as the webhook receiver saw it: the secret header and the body.
    type Pushed = (Option<String>, Value);

    async fn call(fake: &FakeTelegram, method: &str, body: Value) -> (u16, Value) {
        let resp = client()
            .post(format!("{}/bot{TOKEN}/{method}", fake.base_url()))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    async fn topic(fake: &FakeTelegram) -> i64 {
        let (_, b) = call(
            fake,
            "createForumTopic",
            json!({ "chat_id": CHAT, "name": "t" }),
        )
        .await;
        b["result"]["message_thread_id"].as_i64().expect("topic id")
    }

    fn ids(answer: &Value) -> Vec<i64> {
        answer["result"]
            .as_array()
            .expect("updates")
            .iter()
            .map(id_of)
            .collect()
    }

    #[tokio::test]
    async fn long_poll_waits_for_a_message_and_offset_confirms_it() {
        let fake = FakeTelegram::start().await;
        let thread = topic(&fake).await;
        let alice = TelegramUser::person(42, "Alice");
        let poll = tokio::spawn({
            let url = format!("{}/bot{TOKEN}/getUpdates", fake.base_url());
            async move {
                let r = client()
                    .post(url)
                    .json(&json!({ "timeout": 10 }))
                    .send()
                    .await;
                r.expect("send").json::<Value>().await.expect("json")
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = fake.person_writes(CHAT, Some(thread), &alice, "hello");
        let answer = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("the poll answers when the message arrives")
            .expect("join");
        let update = &answer["result"][0];
        assert_eq!(update["message"]["message_id"], id);
        assert_eq!(update["message"]["text"], "hello");
        assert_eq!(update["message"]["message_thread_id"], thread);
        assert_eq!(update["message"]["is_topic_message"], true);
        // In a topic, every message answers the topic's creation message.
        assert_eq!(update["message"]["reply_to_message"]["message_id"], thread);
        assert!(update["message"]["reply_to_message"]["forum_topic_created"].is_object());
        let first = id_of(update);

        // Not confirmed yet: the same update comes again.
        let (_, again) = call(&fake, "getUpdates", json!({})).await;
        assert_eq!(ids(&again), [first]);
        // Offset = last + 1 confirms it; a short poll then finds nothing.
        let (_, after) = call(&fake, "getUpdates", json!({ "offset": first + 1 })).await;
        assert!(ids(&after).is_empty());
        assert_eq!(fake.pending_updates(), 0);

        for n in 0..3 {
            fake.person_writes(CHAT, None, &alice, &format!("m{n}"));
        }
        let (_, two) = call(&fake, "getUpdates", json!({ "limit": 2 })).await;
        assert_eq!(ids(&two), [first + 1, first + 2]);
        let (_, last) = call(&fake, "getUpdates", json!({ "offset": -1 })).await;
        assert_eq!(ids(&last), [first + 3]);
        assert!(fake.take_spec_violations().is_empty());
    }

    #[tokio::test]
    async fn a_second_get_updates_terminates_the_waiting_one_with_409() {
        let fake = FakeTelegram::start().await;
        let url = format!("{}/bot{TOKEN}/getUpdates", fake.base_url());
        let first = tokio::spawn({
            let url = url.clone();
            async move {
                let r = client()
                    .post(url)
                    .json(&json!({ "timeout": 10 }))
                    .send()
                    .await;
                let r = r.expect("send");
                (r.status().as_u16(), r.json::<Value>().await.expect("json"))
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = call(&fake, "getUpdates", json!({ "timeout": 0 })).await;
        assert_eq!(status, 200);
        assert!(ids(&body).is_empty());
        let (status, body) = first.await.expect("join");
        assert_eq!(status, 409);
        assert_eq!(body["error_code"], 409);
        assert_eq!(body["description"], TERMINATED);
        assert_eq!(fake.get_updates_conflicts(), 1);
        // Polls one after another are no conflict.
        call(&fake, "getUpdates", json!({})).await;
        assert_eq!(fake.get_updates_conflicts(), 1);
    }

    #[tokio::test]
    async fn a_webhook_gets_every_update_with_the_secret_until_it_answers_2xx() {
        let fake = FakeTelegram::start().await;
        let seen: Arc<Mutex<Vec<Pushed>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(500));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let seen = Arc::clone(&seen);
                let status = Arc::clone(&status);
                move |headers: axum::http::HeaderMap, body: axum::Json<Value>| async move {
                    let secret = headers
                        .get(SECRET_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    lock(&seen).push((secret, body.0));
                    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let (s, b) = call(
            &fake,
            "setWebhook",
            json!({ "url": url, "secret_token": "s3cret_-X",
            "allowed_updates": ["message"] }),
        )
        .await;
        assert_eq!((s, &b["result"]), (200, &json!(true)), "{b}");
        let (s, b) = call(&fake, "getUpdates", json!({})).await;
        assert_eq!((s, b["description"].as_str()), (409, Some(WEBHOOK_ACTIVE)));

        let alice = TelegramUser::person(42, "Alice");
        let id = fake.person_writes(CHAT, None, &alice, "pushed");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while fake.webhook_pushes().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Refused (500): still pending, repeated.
        assert_eq!(fake.pending_updates(), 1);
        status.store(200, Ordering::SeqCst);
        while fake.pending_updates() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fake.pending_updates(), 0);
        let seen = lock(&seen).clone();
        assert!(seen.len() >= 3, "{seen:?}");
        assert!(seen
            .iter()
            .all(|(secret, body)| secret.as_deref() == Some("s3cret_-X")
                && body["message"]["message_id"] == id));
        let (_, info) = call(&fake, "getWebhookInfo", json!({})).await;
        assert_eq!(info["result"]["url"], url.as_str());
        assert_eq!(info["result"]["pending_update_count"], 0);
        assert!(info["result"]["last_error_message"].is_string());

        let update_id = fake.update_ids()[0];
        assert_eq!(fake.push_again(update_id).await, Some(200));

        let (s, _) = call(
            &fake,
            "setWebhook",
            json!({ "url": url, "secret_token": "no spaces" }),
        )
        .await;
        assert_eq!(s, 400);
        let (s, _) = call(&fake, "deleteWebhook", json!({})).await;
        assert_eq!(s, 200);
        let (s, _) = call(&fake, "getUpdates", json!({})).await;
        assert_eq!(s, 200);
        assert!(fake.take_spec_violations().is_empty());
    }

    #[tokio::test]
    async fn allowed_updates_filters_later_updates_and_service_messages_are_described() {
        let fake = FakeTelegram::start().await;
        let thread = topic(&fake).await;
        let alice = TelegramUser::person(42, "Alice");
        call(
            &fake,
            "getUpdates",
            json!({ "allowed_updates": ["channel_post"] }),
        )
        .await;
        fake.person_writes(CHAT, None, &alice, "not wanted");
        assert_eq!(fake.pending_updates(), 0);
        call(
            &fake,
            "getUpdates",
            json!({ "allowed_updates": ["message"] }),
        )
        .await;
        let closed = fake.person_closes_topic(CHAT, thread, &alice);
        fake.person_reopens_topic(CHAT, thread, &alice);
        let replied = fake.person_replies(CHAT, Some(thread), &alice, closed, "re");
        let (_, b) = call(&fake, "getUpdates", json!({})).await;
        let updates = b["result"].as_array().expect("updates");
        assert_eq!(updates.len(), 3);
        assert!(updates[0]["message"]["forum_topic_closed"].is_object());
        assert!(updates[1]["message"]["forum_topic_reopened"].is_object());
        assert_eq!(updates[2]["message"]["message_id"], replied);
        assert_eq!(
            updates[2]["message"]["reply_to_message"]["message_id"],
            closed
        );
        assert!(fake.take_spec_violations().is_empty());
        assert_eq!(
            fake.update_calls()
                .iter()
                .filter(|(m, _)| m == "getUpdates")
                .count(),
            3
        );
    }
}
