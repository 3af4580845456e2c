//! Discord (API v10). Bot messages carry a `nonce` with `enforce_nonce`, so a re-sent part
//! returns the message the first attempt created instead of a second one — but Discord
//! checks the nonce "in the past few minutes" only (discord-api-docs
//! developers/resources/message.mdx, "Create Message", `enforce_nonce`), so an attempt in
//! doubt older than [`Discord::key_window`] is settled by reading the channel back for the
//! bot's own message (whose content the bot always sees), never by a blind re-send.
//!
//! A child thread under a text channel is started from a nonce'd starter message: Discord
//! gives such a thread the starter message's id and refuses a second thread on it (160004),
//! so creation is idempotent end to end. Under a forum or media channel (types 15/16) the
//! thread and its first message are one request, `POST /channels/{id}/threads` with a
//! `message` (developers/topics/threads.mdx, "Creating Threads in Forum and Media
//! Channels"); the channel's type is read once (`GET /channels/{id}`) and cached.
//!
//! Where a persona (channel webhook) is configured, posts go out under it through webhook
//! execute (with `thread_id` for threads). Webhook executes take no nonce, so an unknown
//! outcome there is settled by reading the conversation back (see `find_posted`).
//!
//! Posting into an archived thread unarchives it, unless a moderator locked the thread
//! (developers/topics/threads.mdx, "Active & Archived Threads"): a locked thread answers
//! 160005 "Thread is locked" (or 50083 when it is locked and archived), and that is the
//! thread being closed (`thread_locked`).
//!
//! Rate limits (developers/topics/rate-limits.mdx): a global 429 pauses every request of
//! this bot in this process; a bucket that reports `X-RateLimit-Remaining: 0` is waited out
//! (`X-RateLimit-Reset-After`) before its next request.

use super::adapter::{
    Adapter, Capabilities, Markup, PlatformError, PostRequest, Receipt, ThreadRequest,
};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use crate::config::Persona;
use crate::model::channels;
use crate::model::platform_codes::PermanentCode;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use threadline_schemas::ConversationRef;

/// Discord's limit for a thread's name (developers/resources/channel.mdx, "Start Thread
/// from Message": 1-100 characters).
const MAX_THREAD_NAME_CHARS: usize = 100;
/// How long a nonce is trusted by default: well inside Discord's "past few minutes".
pub(crate) const DEFAULT_NONCE_WINDOW: Duration = Duration::from_secs(60);
/// A wait for a rate-limit bucket up to this long is served in place; a longer one is
/// answered as a 429 without sending, so the claim on the part is not held through it.
const INLINE_WAIT: Duration = Duration::from_secs(1);
/// Discord snowflakes count milliseconds from 2015-01-01T00:00:00Z.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// Channel types a thread is created in with its first message (threads.mdx, "Forums",
/// "Media Channels"; channel.mdx, "Channel Types": GUILD_FORUM 15, GUILD_MEDIA 16).
const FORUM_TYPES: [u64; 2] = [15, 16];

/// Talks to Discord's HTTP API (or a loopback fake at the configured base URL).
pub(crate) struct Discord {
    http: reqwest::Client,
    api_base: String,
    credentials: Arc<Credentials>,
    /// Parent channel id → the persona posting there.
    personas: BTreeMap<String, Persona>,
    nonce_window: Duration,
    limits: Mutex<Limits>,
    /// Channel id → its type and guild, learned once (a channel keeps its type).
    channel_types: Mutex<HashMap<String, ChannelInfo>>,
    /// The bot's own user id (`GET /users/@me`), learned once.
    bot_user_id: tokio::sync::OnceCell<String>,
}

/// What Discord's rate-limit headers said, per route and for the whole bot.
#[derive(Default)]
struct Limits {
    /// A global 429: no request of this bot before then.
    global_until: Option<Instant>,
    /// Route → the bucket Discord named for it (`X-RateLimit-Bucket`: routes may share one).
    buckets: HashMap<String, String>,
    /// `bucket:top-level resource` → exhausted until then (`Remaining: 0`, or a 429).
    until: HashMap<String, Instant>,
}

/// One request's rate-limit identity: the route (method and path shape) and its top-level
/// resource (a channel or a webhook), which Discord limits separately (rate-limits.mdx).
struct Route {
    shape: &'static str,
    major: String,
}

impl Limits {
    fn key(&self, route: &Route) -> String {
        let bucket = self
            .buckets
            .get(route.shape)
            .map(String::as_str)
            .unwrap_or(route.shape);
        format!("{bucket}:{}", route.major)
    }

    /// How long to wait before `route` may be called, if at all.
    fn wait(&self, route: &Route, now: Instant) -> Option<Duration> {
        let bucket = self.until.get(&self.key(route)).copied();
        [self.global_until, bucket]
            .into_iter()
            .flatten()
            .filter(|until| *until > now)
            .max()
            .map(|until| until - now)
    }

    /// Learns from an answer's headers (and a 429's body).
    fn learn(&mut self, route: &Route, answer: &Answered, now: Instant) {
        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        if let Some(bucket) = header("x-ratelimit-bucket") {
            self.buckets
                .insert(route.shape.to_owned(), bucket.to_owned());
        }
        let seconds = |v: Option<&str>| {
            v.and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
        };
        let key = self.key(route);
        if answer.status.as_u16() == 429 {
            let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
            let after = body
                .retry_after
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .or_else(|| seconds(header("retry-after")))
                .unwrap_or(Duration::from_secs(1));
            // rate-limits.mdx, "Header Format" and "Global Rate Limit": a global limit is
            // the bot's, whichever route met it.
            let global = body.global == Some(true)
                || header("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true"))
                || header("x-ratelimit-scope") == Some("global");
            if global {
                self.global_until = Some(now + after);
            } else {
                self.until.insert(key, now + after);
            }
            return;
        }
        if header("x-ratelimit-remaining") == Some("0") {
            if let Some(after) = seconds(header("x-ratelimit-reset-after")) {
                self.until.insert(key, now + after);
            }
        }
    }
}

/// Discord's JSON error body.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retry_after: Option<f64>,
    #[serde(default)]
    global: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: String,
    #[serde(default)]
    author: Option<Author>,
}

#[derive(Debug, Deserialize)]
struct Author {
    id: String,
}

/// A message as `GET /channels/{id}/messages` lists it: only what an app without the
/// MESSAGE_CONTENT intent still sees is relied on (message.mdx, "Message Object", note
/// on `content`, `embeds`, `attachments`, `components`).
#[derive(Debug, Deserialize)]
struct Listed {
    id: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    webhook_id: Option<String>,
    author: ListedAuthor,
}

#[derive(Debug, Deserialize)]
struct ListedAuthor {
    id: String,
    #[serde(default)]
    username: Option<String>,
}

/// A non-success answer as a [`PlatformError`]: Discord's error body carries the code
/// Threadline names and, on 429, a fractional `retry_after` more precise than the header.
fn failure(answer: &Answered) -> PlatformError {
    let error: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
    classify(
        answer.status,
        &answer.headers,
        error
            .retry_after
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        error.message.clone().unwrap_or_default(),
        || permanent_code(answer.status.as_u16(), error.code),
    )
}

/// Discord's JSON error codes Threadline names (developers/topics/opcodes-and-status-codes.mdx,
/// "JSON Error Codes").
fn permanent_code(status: u16, code: Option<i64>) -> PermanentCode {
    match (status, code) {
        // Unknown Channel: the thread (or channel) was deleted.
        (_, Some(10003)) => PermanentCode::ThreadDeleted,
        // Thread is locked; and "operation on an archived thread", which a post meets only
        // when the thread is locked as well (an unlocked one is unarchived by the post).
        (_, Some(160005)) | (_, Some(50083)) => PermanentCode::ThreadLocked,
        (_, Some(10008)) => PermanentCode::UnknownMessage,
        // Maximum number of active threads reached.
        (_, Some(160006)) => PermanentCode::ThreadLimit,
        // Cannot send a message in a forum channel / wrong channel type.
        (_, Some(40058)) | (_, Some(50024)) => PermanentCode::WrongChannelType,
        (_, Some(50001)) | (_, Some(50013)) | (403, _) => PermanentCode::Forbidden,
        (401, _) => PermanentCode::Unauthorized,
        (404, _) => PermanentCode::NotFound,
        (_, Some(50035)) | (_, _) => PermanentCode::Rejected,
    }
}

/// Who a post may ping: exactly the users the event allows and the part mentions; never
/// `@everyone`, `@here` or a role, whatever the text says (message.mdx, "Allowed Mentions
/// Object": an empty `parse` and an explicit `users` list). An id that is no snowflake names
/// no Discord user, and Discord would refuse the whole message for it.
fn allowed_mentions(users: &[String]) -> serde_json::Value {
    let users: Vec<&String> = users.iter().filter(|u| snowflake(u).is_ok()).collect();
    json!({"parse": [], "users": users})
}

/// The smallest snowflake made at Unix ms `ms`: `after=` it lists what came since.
fn snowflake_at(ms: u64) -> u64 {
    ms.saturating_sub(DISCORD_EPOCH_MS) << 22
}

/// At most `max` characters of `text`.
fn clip(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// What Threadline keeps of a channel: its type, and its guild (for listing threads).
#[derive(Debug, Clone, Deserialize)]
struct ChannelInfo {
    #[serde(rename = "type")]
    kind: u64,
    #[serde(default)]
    guild_id: Option<String>,
}

impl Discord {
    /// An adapter posting through `api_base` with `credentials` (and `personas` per channel); a nonce is trusted for `nonce_window`.
    pub(crate) fn new(
        api_base: &str,
        credentials: Arc<Credentials>,
        timeout: Duration,
        personas: BTreeMap<String, Persona>,
        nonce_window: Duration,
    ) -> Self {
        Discord {
            http: client(timeout),
            api_base: api_base.trim_end_matches('/').to_owned(),
            credentials,
            personas,
            nonce_window,
            limits: Mutex::new(Limits::default()),
            channel_types: Mutex::new(HashMap::new()),
            bot_user_id: tokio::sync::OnceCell::new(),
        }
    }

    /// The persona for a post, if its channel has one and the post may use it.
    fn persona(&self, request: &PostRequest<'_>) -> Option<&Persona> {
        if request.bot_only {
            return None;
        }
        let c = request.conversation;
        let channel = c
            .parent_conversation_id
            .as_ref()
            .unwrap_or(&c.conversation_id);
        self.personas.get(channel)
    }

    /// Sends one request under what Discord's rate-limit headers said so far, and learns
    /// from its answer. A bucket exhausted for longer than [`INLINE_WAIT`] (or a global
    /// pause) answers as a 429 without sending.
    async fn request(
        &self,
        route: Route,
        request: reqwest::RequestBuilder,
    ) -> Result<Answered, PlatformError> {
        let wait = self
            .limits
            .lock()
            .ok()
            .and_then(|l| l.wait(&route, Instant::now()));
        if let Some(wait) = wait {
            if wait > INLINE_WAIT {
                return Err(PlatformError::RateLimited { after: wait });
            }
            tokio::time::sleep(wait).await;
        }
        let answer = send(request).await?;
        if let Ok(mut limits) = self.limits.lock() {
            limits.learn(&route, &answer, Instant::now());
        }
        Ok(answer)
    }

    /// Webhook execute: `POST /webhooks/{id}/{token}?wait=true[&thread_id=…]`.
    async fn execute(
        &self,
        persona: &Persona,
        request: PostRequest<'_>,
    ) -> Result<Receipt, PlatformError> {
        let c = request.conversation;
        let webhook = snowflake(&persona.webhook_id)?;
        let mut url = format!(
            "{}/webhooks/{webhook}/{}?wait=true",
            self.api_base,
            persona.webhook_token.expose()
        );
        if c.parent_conversation_id.is_some() {
            url.push_str(&format!("&thread_id={}", snowflake(&c.conversation_id)?));
        }
        // Only the users the event allows may be pinged; never @everyone, @here or roles
        // (message.mdx, "Allowed Mentions Object").
        let mut body = json!({
            "content": request.text,
            "allowed_mentions": allowed_mentions(request.mentions),
        });
        // The session's own persona wins over the channel's (docs/rendering.md, "Personas").
        let session = request.persona;
        if let Some(name) = session.map(|p| &p.name).or(persona.username.as_ref()) {
            body["username"] = json!(name);
        }
        let avatar = session
            .and_then(|p| p.avatar_url.as_ref())
            .or(persona.avatar_url.as_ref());
        if let Some(avatar) = avatar {
            body["avatar_url"] = json!(avatar);
        }
        let route = Route {
            shape: "POST /webhooks/{}/{}",
            major: webhook.to_owned(),
        };
        let answer = self.request(route, self.http.post(url).json(&body)).await?;
        if !answer.status.is_success() {
            return Err(failure(&answer));
        }
        let created: Created =
            serde_json::from_slice(&answer.body).map_err(|e| PlatformError::Transient {
                message: format!("unexpected webhook message body: {e}"),
                maybe_applied: true,
            })?;
        Ok(Receipt {
            message_id: created.id,
            author_id: Some(persona.webhook_id.clone()),
        })
    }

    /// A bot `POST`; 400 160004 ("A thread has already been created for this message") is
    /// handed back for the caller to decide.
    async fn call(
        &self,
        route: Route,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), PlatformError> {
        let answer = self
            .request(
                route,
                self.as_bot(self.http.post(format!("{}{path}", self.api_base)))
                    .json(&body),
            )
            .await?;
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            let value = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
            return Ok((status, value));
        }
        let error: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
        if error.code == Some(160004) {
            return Ok((status, json!({"code": 160004})));
        }
        Err(failure(&answer))
    }

    /// A bot `GET` of `path` (with its query), parsed as `T`.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        route: Route,
        path: &str,
    ) -> Result<T, PlatformError> {
        let answer = self
            .request(
                route,
                self.as_bot(self.http.get(format!("{}{path}", self.api_base))),
            )
            .await?;
        if !answer.status.is_success() {
            return Err(failure(&answer));
        }
        serde_json::from_slice(&answer.body).map_err(|e| PlatformError::Transient {
            message: format!("unexpected body from GET {}: {e}", route_name(path)),
            maybe_applied: false,
        })
    }

    /// Authenticates as the bot with the token current right now.
    fn as_bot(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let value = format!("Bot {}", self.credentials.current().expose());
        // Marked sensitive, so a `Debug` of the request shows `Sensitive`, not the token.
        match reqwest::header::HeaderValue::from_str(&value) {
            Ok(mut header) => {
                header.set_sensitive(true);
                request.header(reqwest::header::AUTHORIZATION, header)
            }
            // Not a valid header value: reqwest refuses the request when it is sent.
            Err(_) => request.header(reqwest::header::AUTHORIZATION, value),
        }
    }

    async fn create_message(
        &self,
        channel_id: &str,
        content: &str,
        mentions: &[String],
        reply_to: Option<&str>,
        nonce: &str,
    ) -> Result<Receipt, PlatformError> {
        let channel_id = snowflake(channel_id)?;
        let mut body = json!({
            "content": content,
            "nonce": nonce,
            "enforce_nonce": true,
            "allowed_mentions": allowed_mentions(mentions),
        });
        if let Some(id) = reply_to.filter(|id| snowflake(id).is_ok()) {
            // A reply to a message deleted meanwhile is still posted, as a plain message
            // (message.mdx, "Message Reference Object": `fail_if_not_exists`); replying pings
            // nobody, since `allowed_mentions.replied_user` is left false.
            body["message_reference"] = json!({"message_id": id, "fail_if_not_exists": false});
        }
        let (_, value) = self
            .call(
                Route {
                    shape: "POST /channels/{}/messages",
                    major: channel_id.to_owned(),
                },
                &format!("/channels/{channel_id}/messages"),
                body,
            )
            .await?;
        serde_json::from_value::<Created>(value)
            .map(|c| Receipt {
                message_id: c.id,
                author_id: c.author.map(|a| a.id),
            })
            .map_err(|e| PlatformError::Transient {
                message: format!("unexpected message body: {e}"),
                maybe_applied: true,
            })
    }

    /// The channel's type and guild, read once (`GET /channels/{id}`).
    async fn channel_info(&self, channel_id: &str) -> Result<ChannelInfo, PlatformError> {
        let cached = self
            .channel_types
            .lock()
            .ok()
            .and_then(|c| c.get(channel_id).cloned());
        if let Some(info) = cached {
            return Ok(info);
        }
        let info: ChannelInfo = self
            .get(
                Route {
                    shape: "GET /channels/{}",
                    major: channel_id.to_owned(),
                },
                &format!("/channels/{channel_id}"),
            )
            .await?;
        if let Ok(mut cache) = self.channel_types.lock() {
            cache.insert(channel_id.to_owned(), info.clone());
        }
        Ok(info)
    }

    /// The bot's own user id (`GET /users/@me`), read once.
    async fn bot_id(&self) -> Result<&str, PlatformError> {
        #[derive(Deserialize)]
        struct Me {
            id: String,
        }
        self.bot_user_id
            .get_or_try_init(|| async {
                let me: Me = self
                    .get(
                        Route {
                            shape: "GET /users/@me",
                            major: String::new(),
                        },
                        "/users/@me",
                    )
                    .await?;
                Ok(me.id)
            })
            .await
            .map(String::as_str)
    }

    /// The messages of a channel made since `since_ms` (oldest first, up to 100).
    async fn listed_since(
        &self,
        channel_id: &str,
        since_ms: u64,
    ) -> Result<Vec<Listed>, PlatformError> {
        // `after` a snowflake made just before `since_ms` (channel.mdx, "Get Channel
        // Messages"): what came since, whatever else the channel holds.
        let after = snowflake_at(since_ms).saturating_sub(1);
        let mut listed: Vec<Listed> = self
            .get(
                Route {
                    shape: "GET /channels/{}/messages",
                    major: channel_id.to_owned(),
                },
                &format!("/channels/{channel_id}/messages?after={after}&limit=100"),
            )
            .await?;
        listed.sort_by_key(|m| m.id.parse::<u64>().unwrap_or(u64::MAX));
        Ok(listed)
    }

    /// Where a child thread goes: a thread cannot hold threads, so under a thread's
    /// parent channel (the binder already passes a top-level parent; this keeps the
    /// adapter right on its own).
    fn top_level(parent: &ConversationRef) -> &str {
        parent
            .parent_conversation_id
            .as_deref()
            .unwrap_or(&parent.conversation_id)
    }

    fn thread_ref(parent: &ConversationRef, parent_id: &str, thread_id: String) -> ConversationRef {
        ConversationRef {
            channel: "discord".into(),
            account_id: parent.account_id.clone(),
            conversation_id: thread_id,
            parent_conversation_id: Some(parent_id.to_owned()),
        }
    }

    /// Starts a thread from a starter message, or finds that it was: a thread started
    /// from a message has the message's id, and 160004 says it exists.
    async fn thread_from(
        &self,
        parent_id: &str,
        starter: &str,
        name: &str,
    ) -> Result<String, PlatformError> {
        let (status, value) = self
            .call(
                Route {
                    shape: "POST /channels/{}/messages/{}/threads",
                    major: parent_id.to_owned(),
                },
                &format!("/channels/{parent_id}/messages/{starter}/threads"),
                json!({"name": name, "auto_archive_duration": 1440}),
            )
            .await?;
        if status == 400 && value["code"] == 160004 {
            return Ok(starter.to_owned());
        }
        serde_json::from_value::<Created>(value)
            .map(|c| c.id)
            .map_err(|e| PlatformError::Transient {
                message: format!("unexpected thread body: {e}"),
                maybe_applied: true,
            })
    }
}

/// A path without its query, for messages (a query may hold ids only, never secrets).
fn route_name(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// A thread's name as Discord takes it: 1-100 characters.
fn thread_name(name: &str) -> &str {
    let name = clip(name.trim(), MAX_THREAD_NAME_CHARS);
    if name.is_empty() {
        "session"
    } else {
        name
    }
}

/// The starter message of a thread named `name`.
fn starter_text(name: &str) -> String {
    format!("🧵 {name}")
}

/// Discord ids are snowflakes (digits). Anything else from an event is refused before it
/// becomes part of a request path or query: `../`, `?` or `&` would let an event choose
/// which endpoint of the platform the bot's token is sent to.
fn snowflake(id: &str) -> Result<&str, PlatformError> {
    if !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        // `not_found`: no Discord channel has such an id (one name per permanent error).
        Err(PlatformError::Permanent {
            code: PermanentCode::NotFound,
            message: "a Discord conversation id must be a snowflake (digits only)".into(),
        })
    }
}

impl Adapter for Discord {
    fn channel(&self) -> &str {
        "discord"
    }

    fn capabilities(&self) -> Capabilities {
        channels::DISCORD
    }

    fn markup(&self) -> Markup {
        Markup::Discord
    }

    fn keyed(&self, request: &PostRequest<'_>) -> bool {
        // Bot messages carry a nonce; webhook executes cannot.
        self.persona(request).is_none()
    }

    fn key_window(&self) -> Option<Duration> {
        Some(self.nonce_window)
    }

    /// Finds what an attempt in doubt since `since_ms` posted, from what the listing shows
    /// an app without the MESSAGE_CONTENT intent: ids, authors, `webhook_id` — and the
    /// content of the bot's own messages, which it always sees.
    ///
    /// Why that is enough: posts to one conversation are serialised (one delivery lane per
    /// conversation, parts in order), so from the moment this part was first claimed
    /// (`since_ms`) until it is settled, nothing else of Threadline's is posted into this
    /// conversation. Every earlier part and earlier delivery was answered — created —
    /// before that claim. So the persona's messages here since then can only be attempts
    /// at this part; the earliest is the one to keep (a later one would be a re-send after
    /// a read-back that did not yet show it). Where the content is visible (the app has the
    /// intent) it must also be this part's text. The bot's own messages must be, always.
    /// This relies on the hosts' clocks agreeing with Discord's (snowflakes carry
    /// Discord's time) to within the time a post's answer takes to come back and be
    /// recorded, and on nothing outside Threadline posting through the same webhook.
    async fn find_posted(
        &self,
        request: PostRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<Receipt>, PlatformError> {
        let channel = snowflake(&request.conversation.conversation_id)?;
        let persona = self.persona(&request);
        let bot = match persona {
            Some(_) => None,
            None => Some(self.bot_id().await?.to_owned()),
        };
        let listed = self.listed_since(channel, since_ms).await?;
        let found = listed.into_iter().find(|m| match (persona, &bot) {
            (Some(persona), _) => {
                m.webhook_id.as_deref() == Some(persona.webhook_id.as_str())
                    && (m.content.is_empty() || m.content == request.text)
                    && persona
                        .username
                        .as_ref()
                        .is_none_or(|name| m.author.username.as_ref() == Some(name))
            }
            (None, Some(bot)) => {
                m.webhook_id.is_none() && m.author.id == *bot && m.content == request.text
            }
            (None, None) => false,
        });
        Ok(found.map(|m| Receipt {
            message_id: m.id,
            author_id: Some(match persona {
                Some(persona) => persona.webhook_id.clone(),
                None => m.author.id,
            }),
        }))
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        if let Some(persona) = self.persona(&request) {
            return self.execute(persona, request).await;
        }
        self.create_message(
            &request.conversation.conversation_id,
            request.text,
            request.mentions,
            // The first part answers the message; the rest follow it. A persona's webhook
            // execute cannot reply (it takes no `message_reference`).
            request.reply_to.filter(|_| request.part == 0),
            request.idempotency_key,
        )
        .await
    }

    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        let parent_id = snowflake(Self::top_level(request.parent))?;
        let name = thread_name(request.name);
        let info = self.channel_info(parent_id).await?;
        if FORUM_TYPES.contains(&info.kind) {
            // A forum post is its thread and first message at once (threads.mdx,
            // "Creating Threads in Forum and Media Channels"; channel.mdx, "Start Thread
            // in Forum or Media Channel"). It takes no nonce: a doubt is settled by
            // `find_thread` before this is sent again.
            let (_, value) = self
                .call(
                    Route {
                        shape: "POST /channels/{}/threads",
                        major: parent_id.to_owned(),
                    },
                    &format!("/channels/{parent_id}/threads"),
                    json!({
                        "name": name,
                        "auto_archive_duration": 1440,
                        "message": {
                            "content": starter_text(name),
                            "allowed_mentions": {"parse": []},
                        },
                    }),
                )
                .await?;
            let thread =
                serde_json::from_value::<Created>(value).map_err(|e| PlatformError::Transient {
                    message: format!("unexpected forum thread body: {e}"),
                    maybe_applied: true,
                })?;
            return Ok(Self::thread_ref(request.parent, parent_id, thread.id));
        }
        let starter = self
            .create_message(
                parent_id,
                &starter_text(name),
                &[],
                None,
                request.idempotency_key,
            )
            .await?
            .message_id;
        let thread_id = self.thread_from(parent_id, &starter, name).await?;
        Ok(Self::thread_ref(request.parent, parent_id, thread_id))
    }

    /// An earlier attempt's thread: in a text channel, the bot's starter message made
    /// since then (the bot sees its own content) — a thread is then started from it, or
    /// found started (160004); in a forum, the bot's active thread of that name made since
    /// then. Sound for the reason `find_posted` gives: one conversation's deliveries are
    /// serialised.
    async fn find_thread(
        &self,
        request: ThreadRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<ConversationRef>, PlatformError> {
        let parent_id = snowflake(Self::top_level(request.parent))?;
        let name = thread_name(request.name);
        let info = self.channel_info(parent_id).await?;
        let bot = self.bot_id().await?.to_owned();
        if FORUM_TYPES.contains(&info.kind) {
            #[derive(Deserialize)]
            struct Active {
                threads: Vec<ActiveThread>,
            }
            #[derive(Deserialize)]
            struct ActiveThread {
                id: String,
                #[serde(default)]
                parent_id: Option<String>,
                #[serde(default)]
                owner_id: Option<String>,
                #[serde(default)]
                name: String,
            }
            let Some(guild) = info.guild_id.as_deref().map(snowflake).transpose()? else {
                return Ok(None);
            };
            // guild.mdx, "List Active Guild Threads": every active thread of the guild.
            let active: Active = self
                .get(
                    Route {
                        shape: "GET /guilds/{}/threads/active",
                        major: guild.to_owned(),
                    },
                    &format!("/guilds/{guild}/threads/active"),
                )
                .await?;
            let after = snowflake_at(since_ms);
            let found = active
                .threads
                .into_iter()
                .filter(|t| {
                    t.parent_id.as_deref() == Some(parent_id)
                        && t.owner_id.as_deref() == Some(bot.as_str())
                        && t.name == name
                        && t.id.parse::<u64>().is_ok_and(|id| id >= after)
                })
                .min_by_key(|t| t.id.parse::<u64>().unwrap_or(u64::MAX));
            return Ok(found.map(|t| Self::thread_ref(request.parent, parent_id, t.id)));
        }
        let text = starter_text(name);
        let listed = self.listed_since(parent_id, since_ms).await?;
        let Some(starter) = listed
            .into_iter()
            .find(|m| m.webhook_id.is_none() && m.author.id == bot && m.content == text)
        else {
            return Ok(None);
        };
        let thread_id = self.thread_from(parent_id, &starter.id, name).await?;
        Ok(Some(Self::thread_ref(request.parent, parent_id, thread_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use reqwest::StatusCode;

    fn answer(status: u16, headers: &[(&'static str, &str)], body: serde_json::Value) -> Answered {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Answered {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.to_string().into(),
        }
    }

    fn route(shape: &'static str, major: &str) -> Route {
        Route {
            shape,
            major: major.into(),
        }
    }

    #[test]
    fn discord_error_codes_name_what_threadline_does_about_them() {
        for (status, code, named) in [
            (404, Some(10003), "thread_deleted"),
            (400, Some(160005), "thread_locked"),
            (400, Some(50083), "thread_locked"),
            (404, Some(10008), "unknown_message"),
            (400, Some(160006), "thread_limit"),
            (400, Some(40058), "wrong_channel_type"),
            (400, Some(50024), "wrong_channel_type"),
            (403, Some(50001), "forbidden"),
            (403, Some(50013), "forbidden"),
            (401, Some(0), "unauthorized"),
            (404, Some(0), "not_found"),
            (400, Some(50035), "rejected"),
        ] {
            assert_eq!(
                permanent_code(status, code).as_str(),
                named,
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn a_global_429_pauses_every_route_and_a_route_429_only_its_own() {
        let now = Instant::now();
        let mut limits = Limits::default();
        let post = route("POST /channels/{}/messages", "1");
        let other = route("POST /channels/{}/messages", "2");
        limits.learn(
            &post,
            &answer(
                429,
                &[("x-ratelimit-scope", "user")],
                json!({"retry_after": 2.5, "global": false}),
            ),
            now,
        );
        assert_eq!(limits.wait(&post, now), Some(Duration::from_millis(2_500)));
        assert_eq!(
            limits.wait(&other, now),
            None,
            "another channel is another bucket"
        );
        limits.learn(
            &other,
            &answer(
                429,
                &[("x-ratelimit-global", "true")],
                json!({"retry_after": 4.0, "global": true}),
            ),
            now,
        );
        let me = route("GET /users/@me", "");
        assert_eq!(limits.wait(&me, now), Some(Duration::from_secs(4)));
        assert_eq!(limits.wait(&post, now + Duration::from_secs(5)), None);
    }

    #[test]
    fn remaining_zero_waits_for_reset_after_on_the_named_bucket() {
        let now = Instant::now();
        let mut limits = Limits::default();
        let post = route("POST /channels/{}/messages", "1");
        let headers = [
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "0.75"),
            ("x-ratelimit-bucket", "abcd"),
        ];
        limits.learn(&post, &answer(200, &headers, json!({})), now);
        assert_eq!(limits.wait(&post, now), Some(Duration::from_millis(750)));
        let headers = [
            ("x-ratelimit-remaining", "3"),
            ("x-ratelimit-reset-after", "1"),
        ];
        let fresh = Limits::default();
        let mut fresh = fresh;
        fresh.learn(&post, &answer(200, &headers, json!({})), now);
        assert_eq!(fresh.wait(&post, now), None, "requests left: no wait");
    }

    #[test]
    fn snowflakes_and_names_fit_discord() {
        let ms = 1_700_000_000_123;
        assert_eq!((snowflake_at(ms) >> 22) + DISCORD_EPOCH_MS, ms);
        assert_eq!(thread_name(&"x".repeat(150)).chars().count(), 100);
        assert_eq!(thread_name("   "), "session");
        assert_eq!(thread_name("é".repeat(101).as_str()).chars().count(), 100);
        assert!(snowflake("12/../34").is_err());
        assert!(snowflake(&"9".repeat(21)).is_err());
    }
}
