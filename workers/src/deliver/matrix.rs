//! Matrix client-server API. A thread is its root event in a room (`m.thread` relation).
//!
//! Every send carries the part's key twice: as the transaction id, which the homeserver
//! treats as idempotent per *device* (access token), and in the content
//! ([`KEY_FIELD`]), where read-back finds it whichever device sent it. A token from a new
//! login is a new device, so a re-send after a rotation is not deduplicated by the server:
//! a part in doubt is read back first (spec `_index.md`, "Transaction identifiers").
//!
//! What Synapse does, and the spec does not say: a thread reply under a *redacted* root is
//! accepted (so the root is read back before a bound post, `unsigned.redacted_because`); an
//! unknown root answers 400 `M_UNKNOWN` "Can't send relation to unknown event"; a bot that
//! was kicked gets 403 `M_FORBIDDEN` (its membership, read back, says `leave`); and its
//! `rc_message` limit counts a user's events across all rooms, so posts are paced per
//! account ([`Pacer`]).

use super::adapter::{
    Adapter, Capabilities, Markup, PlatformError, PostRequest, Receipt, ThreadRequest,
};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use crate::model::channels;
use crate::model::platform_codes::PermanentCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use threadline_schemas::ConversationRef;

/// The content field holding the part's key, for read-back (a namespaced custom field:
/// room_send.yaml lets `m.room.message` content carry any further properties).
pub const KEY_FIELD: &str = "org.threadline.key";

/// How many `/messages` pages read-back looks through before it calls a part not posted.
const READ_BACK_PAGES: usize = 10;
const READ_BACK_PAGE: usize = 100;

/// A post waits for its slot (and retries its 429s) inside the call this long at most; a
/// longer wait goes back to the run loop as a rate limit (a wait, not a failure), keeping
/// its slot. Waiting in the call keeps a conversation's posts in order: a post handed back
/// to the run loop lets the conversation's next post overtake it.
const MAX_WAIT_IN_CALL: Duration = Duration::from_secs(120);

/// Talks to a Matrix homeserver (or a loopback fake at the configured URL).
pub struct Matrix {
    http: reqwest::Client,
    homeserver: String,
    credentials: Arc<Credentials>,
    /// Our user id, learned once (`whoami`) for echo suppression and read-back.
    user_id: OnceLock<String>,
    /// The adapter's one token is one account: its sends share one message limit.
    pacer: Pacer,
}

#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    errcode: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// Matrix error codes, named the way Threadline reports them.
fn permanent_code(status: u16, errcode: &str, error: &str, in_thread: bool) -> PermanentCode {
    match errcode {
        "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN" => PermanentCode::Unauthorized,
        "M_FORBIDDEN" => PermanentCode::Forbidden,
        "M_NOT_FOUND" if in_thread => PermanentCode::ThreadDeleted,
        // Synapse's answer to a relation whose target it does not know (a root that never
        // existed here, or was purged).
        "M_UNKNOWN" if in_thread && error.contains("unknown event") => PermanentCode::ThreadDeleted,
        "M_TOO_LARGE" => PermanentCode::TooLarge,
        _ if status == 404 => PermanentCode::NotFound,
        _ => PermanentCode::Rejected,
    }
}

/// Paces one account's sends by what the homeserver said about its limit: after a 429,
/// the sends that queue up get slots `retry_after` apart instead of all retrying at the same
/// instant; once the queue is through, sends go straight out again until the next 429. A
/// post keeps its slot (by its key) when it goes back to the run loop to wait.
#[derive(Default)]
struct Pacer {
    state: Mutex<PacerState>,
}

#[derive(Default)]
struct PacerState {
    /// The last 429's `retry_after`: the time one more send needs.
    interval: Duration,
    /// The first free slot while a queue is waiting; past: no queue.
    next_free: Option<Instant>,
    /// Part key → its slot.
    slots: HashMap<String, Instant>,
}

/// Slots of posts that never came back are dropped after this long.
const PACER_SLOT_TTL: Duration = Duration::from_secs(600);

impl Pacer {
    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the post with `key` must wait before it is sent.
    fn reserve(&self, key: &str, now: Instant) -> Duration {
        let mut st = self.lock();
        if let Some(slot) = st.slots.get(key) {
            return slot.saturating_duration_since(now);
        }
        let Some(free) = st.next_free.filter(|free| *free > now) else {
            return Duration::ZERO;
        };
        st.next_free = Some(free + st.interval);
        st.slots
            .retain(|_, at| now.saturating_duration_since(*at) < PACER_SLOT_TTL);
        st.slots.insert(key.to_owned(), free);
        free.saturating_duration_since(now)
    }

    /// The homeserver refused `key` for `retry_after`: learn the interval, give the post a
    /// new slot, and say how long it waits.
    fn limited(&self, key: &str, retry_after: Duration, now: Instant) -> Duration {
        let mut st = self.lock();
        st.interval = retry_after;
        let earliest = now + retry_after;
        let slot = st.next_free.map_or(earliest, |free| free.max(earliest));
        st.next_free = Some(slot + st.interval);
        st.slots.insert(key.to_owned(), slot);
        slot.saturating_duration_since(now)
    }

    fn sent(&self, key: &str) {
        self.lock().slots.remove(key);
    }
}

impl Matrix {
    /// An adapter for the homeserver at `homeserver`, as the account of `credentials`.
    pub fn new(homeserver: &str, credentials: Arc<Credentials>, timeout: Duration) -> Self {
        Matrix {
            http: client(timeout),
            homeserver: homeserver.trim_end_matches('/').to_owned(),
            credentials,
            user_id: OnceLock::new(),
            pacer: Pacer::default(),
        }
    }

    /// `{homeserver}/_matrix/client/v3/<segments…>`, each segment percent-encoded (room ids
    /// hold `!` and `:`).
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, PlatformError> {
        let mut url =
            reqwest::Url::parse(&self.homeserver).map_err(|e| PlatformError::Permanent {
                code: PermanentCode::BadConfig,
                message: format!("matrix homeserver URL: {e}"),
            })?;
        url.path_segments_mut()
            .map_err(|()| PlatformError::Permanent {
                code: PermanentCode::BadConfig,
                message: "matrix homeserver URL cannot take a path".into(),
            })?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        Ok(url)
    }

    /// One call; a non-2xx answer is classified (`raw` keeps the body of a 2xx).
    async fn call_raw(
        &self,
        request: reqwest::RequestBuilder,
        in_thread: bool,
    ) -> Result<bytes::Bytes, (PlatformError, Answer)> {
        let Answered {
            status,
            headers,
            body: bytes,
        } = send(request.bearer_auth(self.credentials.current().expose()))
            .await
            .map_err(|e| (e, Answer::default()))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        let errcode = answer.errcode.clone().unwrap_or_default();
        let error = answer.error.clone().unwrap_or_default();
        Err((
            classify(
                status,
                &headers,
                answer.retry_after_ms.map(Duration::from_millis),
                format!("{errcode}: {error}"),
                || permanent_code(status.as_u16(), &errcode, &error, in_thread),
            ),
            answer,
        ))
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        in_thread: bool,
    ) -> Result<Answer, PlatformError> {
        let bytes = self
            .call_raw(request, in_thread)
            .await
            .map_err(|(e, _)| e)?;
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    async fn get_json(&self, url: reqwest::Url) -> Result<Value, PlatformError> {
        let bytes = self
            .call_raw(self.http.get(url), false)
            .await
            .map_err(|(e, _)| e)?;
        serde_json::from_slice(&bytes).map_err(|e| PlatformError::Transient {
            message: format!("matrix answered with unreadable JSON: {e}"),
            maybe_applied: false,
        })
    }

    /// Sends one event, paced by the account's limit.
    async fn send(
        &self,
        room: &str,
        content: Value,
        txn: &str,
        in_thread: bool,
    ) -> Result<Receipt, PlatformError> {
        let started = Instant::now();
        let mut wait = self.pacer.reserve(txn, started);
        let answer = loop {
            if started.elapsed() + wait > MAX_WAIT_IN_CALL {
                return Err(PlatformError::RateLimited { after: wait });
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let url = self.url(&["rooms", room, "send", "m.room.message", txn])?;
            match self
                .call_raw(self.http.put(url).json(&content), in_thread)
                .await
            {
                Ok(bytes) => break serde_json::from_slice::<Answer>(&bytes).unwrap_or_default(),
                // Refused before anything was stored: wait for the next slot and send again.
                Err((PlatformError::RateLimited { after }, _)) => {
                    wait = self.pacer.limited(txn, after, Instant::now());
                    metrics::counter!(crate::io::metrics::RATE_LIMITED, "channel" => "matrix")
                        .increment(1);
                    continue;
                }
                Err((
                    PlatformError::Permanent {
                        code: PermanentCode::Forbidden,
                        message,
                    },
                    _,
                )) => {
                    self.pacer.sent(txn);
                    return Err(PlatformError::Permanent {
                        code: self.why_forbidden(room).await,
                        message,
                    });
                }
                Err((error, _)) => {
                    self.pacer.sent(txn);
                    return Err(error);
                }
            }
        };
        self.pacer.sent(txn);
        let event_id = answer.event_id.ok_or_else(|| PlatformError::Transient {
            message: "matrix answered without an event_id".into(),
            maybe_applied: true,
        })?;
        Ok(Receipt {
            message_id: event_id,
            author_id: self.whoami().await,
        })
    }

    /// A 403 on a send: `bot_removed` when our membership reads `leave` or `ban` (kicked,
    /// banned, or left: nothing can be posted there until someone invites us back), else
    /// `forbidden` (e.g. a power level too low to post).
    async fn why_forbidden(&self, room: &str) -> PermanentCode {
        let Some(me) = self.whoami().await else {
            return PermanentCode::Forbidden;
        };
        let Ok(url) = self.url(&["rooms", room, "state", "m.room.member", &me]) else {
            return PermanentCode::Forbidden;
        };
        match self.get_json(url).await {
            Ok(member) => match member["membership"].as_str() {
                Some("leave" | "ban") => PermanentCode::BotRemoved,
                Some(_) | None => PermanentCode::Forbidden,
            },
            Err(_) => PermanentCode::Forbidden,
        }
    }

    /// Whether the thread root was redacted (Synapse still accepts replies under it, so the
    /// send alone would never tell). A root that cannot be read is left to the send to judge.
    async fn root_redacted(&self, room: &str, root: &str) -> bool {
        let Ok(url) = self.url(&["rooms", room, "event", root]) else {
            return false;
        };
        match self.get_json(url).await {
            Ok(event) => event["unsigned"]["redacted_because"].is_object(),
            Err(_) => false,
        }
    }

    /// Our user id; `None` until the homeserver told us (echo suppression then relies on
    /// `own_author_ids`).
    async fn whoami(&self) -> Option<String> {
        if let Some(id) = self.user_id.get() {
            return Some(id.clone());
        }
        let url = self.url(&["account", "whoami"]).ok()?;
        let answer = self.call(self.http.get(url), false).await.ok()?;
        let id = answer.user_id?;
        Some(self.user_id.get_or_init(|| id).clone())
    }

    /// Our event in `room` carrying `key` (see [`KEY_FIELD`]), newest first, back to
    /// `since_ms` or [`READ_BACK_PAGES`] pages.
    async fn find_by_key(
        &self,
        room: &str,
        key: &str,
        since_ms: u64,
    ) -> Result<Option<String>, PlatformError> {
        let me = self
            .whoami()
            .await
            .ok_or_else(|| PlatformError::Transient {
                message: "matrix whoami failed; cannot read back".into(),
                maybe_applied: false,
            })?;
        let mut from: Option<String> = None;
        for _ in 0..READ_BACK_PAGES {
            let mut url = self.url(&["rooms", room, "messages"])?;
            url.query_pairs_mut()
                .append_pair("dir", "b")
                .append_pair("limit", &READ_BACK_PAGE.to_string());
            if let Some(from) = &from {
                url.query_pairs_mut().append_pair("from", from);
            }
            let page = self.get_json(url).await?;
            let chunk = page["chunk"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            for event in chunk {
                if event["sender"] == me.as_str() && event["content"][KEY_FIELD] == key {
                    return Ok(event["event_id"].as_str().map(str::to_owned));
                }
            }
            let older = chunk
                .last()
                .and_then(|e| e["origin_server_ts"].as_u64())
                .is_some_and(|ts| ts < since_ms);
            match page["end"].as_str() {
                Some(end) if !older && !chunk.is_empty() => from = Some(end.to_owned()),
                Some(_) | None => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// `content` with what every event Threadline sends carries: no mentions (agent text with
/// `@room` or a user id must not notify anyone: mentions module, "it is recommended that
/// clients still include a `m.mentions` property on each event"), and the part's key.
fn with_envelope(mut content: Value, key: &str) -> Value {
    content["m.mentions"] = json!({});
    content[KEY_FIELD] = json!(key);
    content
}

impl Adapter for Matrix {
    fn channel(&self) -> &str {
        "matrix"
    }

    fn capabilities(&self) -> Capabilities {
        channels::MATRIX
    }

    fn markup(&self) -> Markup {
        Markup::Matrix
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        let c = request.conversation;
        // The first part answers the message (rich replies module); the rest follow it.
        let answered = request
            .reply_to
            .filter(|id| request.part == 0 && id.starts_with('$'));
        let mut content = json!({"msgtype": "m.text", "body": request.text});
        if let Some(html) = request.html {
            content["format"] = json!("org.matrix.custom.html");
            content["formatted_body"] = json!(html);
        }
        let room = match &c.parent_conversation_id {
            Some(room) => {
                // Once per post, before its first part: a redacted root ends the binding and
                // the text goes to the fallback instead, once.
                if request.part == 0 && self.root_redacted(room, &c.conversation_id).await {
                    return Err(PlatformError::Permanent {
                        code: PermanentCode::ThreadDeleted,
                        message: format!("thread root {} was redacted", c.conversation_id),
                    });
                }
                content["m.relates_to"] = match answered {
                    // A reply within the thread (threading module, "Replies within threads").
                    Some(event_id) => json!({
                        "rel_type": "m.thread",
                        "event_id": c.conversation_id,
                        "is_falling_back": false,
                        "m.in_reply_to": {"event_id": event_id},
                    }),
                    None => json!({
                        "rel_type": "m.thread",
                        "event_id": c.conversation_id,
                        // Clients without thread support show the post as a reply to the root.
                        "is_falling_back": true,
                        "m.in_reply_to": {"event_id": c.conversation_id},
                    }),
                };
                room
            }
            None => {
                if let Some(event_id) = answered {
                    content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": event_id}});
                }
                &c.conversation_id
            }
        };
        let mut content = with_envelope(content, request.idempotency_key);
        if !request.mentions.is_empty() {
            // Only the users the event allows, never `room` (mentions module).
            content["m.mentions"] = json!({"user_ids": request.mentions});
        }
        self.send(
            room,
            content,
            request.idempotency_key,
            c.parent_conversation_id.is_some(),
        )
        .await
    }

    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        // Matrix threads do not nest: a child of a thread is a new thread in its room.
        let room = request
            .parent
            .parent_conversation_id
            .as_ref()
            .unwrap_or(&request.parent.conversation_id);
        let content = json!({"msgtype": "m.notice", "body": format!("🧵 {}", request.name)});
        let root = self
            .send(
                room,
                with_envelope(content, request.idempotency_key),
                request.idempotency_key,
                false,
            )
            .await?;
        Ok(ConversationRef {
            channel: "matrix".into(),
            account_id: request.parent.account_id.clone(),
            conversation_id: root.message_id,
            parent_conversation_id: Some(room.clone()),
        })
    }

    async fn find_posted(
        &self,
        request: PostRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<Receipt>, PlatformError> {
        let c = request.conversation;
        let room = c
            .parent_conversation_id
            .as_ref()
            .unwrap_or(&c.conversation_id);
        Ok(self
            .find_by_key(room, request.idempotency_key, since_ms)
            .await?
            .map(|message_id| Receipt {
                message_id,
                author_id: self.user_id.get().cloned(),
            }))
    }

    async fn find_thread(
        &self,
        request: ThreadRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<ConversationRef>, PlatformError> {
        let room = request
            .parent
            .parent_conversation_id
            .as_ref()
            .unwrap_or(&request.parent.conversation_id);
        Ok(self
            .find_by_key(room, request.idempotency_key, since_ms)
            .await?
            .map(|root| ConversationRef {
                channel: "matrix".into(),
                account_id: request.parent.account_id.clone(),
                conversation_id: root,
                parent_conversation_id: Some(room.clone()),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_single_path_segments() {
        let creds =
            Credentials::load("matrix", Arc::new(crate::config::Config::default())).unwrap();
        let m = Matrix::new("http://127.0.0.1:1/", creds, Duration::from_secs(1));
        // `!` and `:` are legal in a path segment; `/`, `#`, `?` and spaces must not split it.
        let url = m
            .url(&["rooms", "!a/b c#d?:fake", "send", "m.room.message", "t1"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/_matrix/client/v3/rooms/!a%2Fb%20c%23d%3F:fake/send/m.room.message/t1"
        );
    }

    #[test]
    fn matrix_errors_name_the_lost_thread() {
        assert_eq!(
            permanent_code(
                400,
                "M_UNKNOWN",
                "Can't send relation to unknown event",
                true
            )
            .as_str(),
            "thread_deleted"
        );
        assert_eq!(
            permanent_code(
                400,
                "M_UNKNOWN",
                "Can't send relation to unknown event",
                false
            )
            .as_str(),
            "rejected"
        );
        assert_eq!(
            permanent_code(403, "M_FORBIDDEN", "not in room", false).as_str(),
            "forbidden"
        );
        assert_eq!(
            permanent_code(401, "M_UNKNOWN_TOKEN", "", false).as_str(),
            "unauthorized"
        );
    }

    #[test]
    fn pacer_spaces_sends_after_a_limit_and_keeps_each_posts_slot() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        // No limit met yet: nothing waits.
        assert_eq!(pacer.reserve("a", t0), Duration::ZERO);
        let step = Duration::from_millis(500);
        assert_eq!(pacer.limited("a", step, t0), step);
        // The next ones queue behind it, one interval apart, instead of all at t0 + step.
        assert_eq!(pacer.reserve("b", t0), step * 2);
        assert_eq!(pacer.reserve("c", t0), step * 3);
        // A post that comes back keeps its slot.
        assert_eq!(pacer.reserve("b", t0 + step), step);
        pacer.sent("b");
        // Once the queue is through, sends go straight out again.
        assert_eq!(pacer.reserve("d", t0 + step * 100), Duration::ZERO);
        assert_eq!(pacer.reserve("e", t0 + step * 100), Duration::ZERO);
    }
}
