//! Slack Web API. A thread is the `ts` of its root message in a channel. Slack has no
//! idempotency key, but it has read-back: every post carries message `metadata` with the
//! part's key, and an attempt whose outcome is unknown is settled by finding that key in
//! `conversations.replies` / `conversations.history` before anything is posted again.
//! Errors come as HTTP 200 with `ok: false` and a code; rate limits as 429 + `Retry-After`
//! (and, for posting too fast, as an `ok: false` `rate_limited`).
//!
//! A reply whose thread root was deleted is not refused: `chat.postMessage` answers `ok` and
//! posts it at the channel's top level, and only the missing `message.thread_ts` in the answer
//! tells (slack-go/slack#1571; `thread_not_found` is no `chat.postMessage` error, see
//! `tests/specs/slack-chat.postMessage.json`). Every post into a thread checks the answer's
//! `thread_ts` and reports such a post as [`PlatformError::PostedInParent`], never as posted.
//!
//! Text arrives rendered as mrkdwn (`crate::render::slack`), escaped as Slack's formatting
//! reference asks, so agent output cannot form `<!channel>`, `<!here>` or `<!subteam^…>`, and
//! `<@U…>` only for the users the event allows. Without `link_names` (never sent), a bare
//! `@here` is plain text.

use super::adapter::{
    Adapter, Capabilities, Markup, PlatformError, PostRequest, Receipt, ThreadRequest,
};
use super::credentials::Credentials;
use super::http::{classify, client, retry_after_header, send, Answered};
use crate::model::channels;
use crate::model::platform_codes::PermanentCode;
use crate::render;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use threadline_schemas::{ConversationRef, SessionPersona};

/// The metadata event type Threadline marks its posts with.
const EVENT_TYPE: &str = "threadline_post";

/// Talks to the Slack Web API (or a loopback fake at the configured base URL).
pub(crate) struct Slack {
    http: reqwest::Client,
    api_base: String,
    credentials: Arc<Credentials>,
}

#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    ts: String,
    /// The root's `ts` for a thread reply (and for a root with replies); absent for a
    /// top-level message.
    #[serde(default)]
    thread_ts: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// `(channel, thread_ts)` of a conversation: a thread is a `ts` under its channel.
fn place(conversation: &ConversationRef) -> (&str, Option<&str>) {
    match &conversation.parent_conversation_id {
        Some(channel) => (channel, Some(&conversation.conversation_id)),
        None => (&conversation.conversation_id, None),
    }
}

/// Where in its channel a post goes.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// The channel's top level.
    Channel,
    /// The bound thread.
    Thread(&'a str),
    /// The thread of the message a post in a channel answers (every part of it): Slack's
    /// reply is a thread reply.
    ReplyTo(&'a str),
}

/// Where `request` goes: its thread, or for a post in a channel answering a message, that
/// message's thread.
fn target<'a>(request: &PostRequest<'a>) -> (&'a str, Target<'a>) {
    match place(request.conversation) {
        (channel, Some(ts)) => (channel, Target::Thread(ts)),
        (channel, None) => match request.reply_to.filter(|ts| is_ts(ts)) {
            Some(ts) => (channel, Target::ReplyTo(ts)),
            None => (channel, Target::Channel),
        },
    }
}

/// Whether `ts` can be a Slack message timestamp (`1700000000.000100`): a thread named by
/// anything else cannot exist, and is refused as `not_found` before a request is made.
fn is_ts(ts: &str) -> bool {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    let digits = |d: &str| !d.is_empty() && d.len() <= 16 && d.bytes().all(|b| b.is_ascii_digit());
    digits(secs) && digits(micros)
}

fn checked(thread_ts: Option<&str>) -> Result<Option<&str>, PlatformError> {
    match thread_ts {
        Some(ts) if !is_ts(ts) => Err(PlatformError::Permanent {
            code: PermanentCode::NotFound,
            message: "slack: a thread is named by its root's ts, and this is none".into(),
        }),
        Some(_) | None => Ok(thread_ts),
    }
}

/// What an `ok: false` code means for Threadline.
#[derive(Debug, PartialEq, Eq)]
enum Meaning {
    /// Never worth retrying; Threadline's name for it.
    Permanent(PermanentCode),
    /// May pass; `maybe_applied` when Slack may have acted before failing.
    Transient { maybe_applied: bool },
    /// Wait: posting too fast. The default wait when no `Retry-After` came with it.
    Wait(Duration),
}

/// Slack's error codes (as `tests/specs/slack-*.json` list them), named the way Threadline
/// reports them. `posting`: the call creates a message.
fn meaning(error: &str, in_thread: bool, posting: bool) -> Meaning {
    use Meaning::{Permanent, Transient, Wait};
    match error {
        // `conversations.replies`: the root's ts names no message (any more).
        "thread_not_found" => Permanent(PermanentCode::ThreadDeleted),
        "channel_not_found" if in_thread => Permanent(PermanentCode::ThreadDeleted),
        "channel_not_found" => Permanent(PermanentCode::NotFound),
        "is_archived" if in_thread => Permanent(PermanentCode::ThreadArchived),
        "is_archived" => Permanent(PermanentCode::Archived),
        // A thread locked by admins takes no replies: the thread is closed, as archived is.
        "restricted_action_thread_locked" => Permanent(PermanentCode::ThreadArchived),
        "not_in_channel"
        | "restricted_action"
        | "restricted_action_read_only_channel"
        | "restricted_action_thread_only_channel"
        | "restricted_action_non_threadable_channel"
        | "cannot_reply_to_message"
        | "ekm_access_denied"
        | "no_permission"
        | "missing_scope"
        | "access_denied"
        | "app_access_restricted"
        | "not_allowed_token_type"
        | "enterprise_is_restricted" => Permanent(PermanentCode::Forbidden),
        // `invalid_auth` is what Slack answers a wrong token with: its common error, listed
        // per method until slack-api-ref 860ab16d (2025-09-06).
        "invalid_auth"
        | "not_authed"
        | "token_revoked"
        | "token_expired"
        | "account_inactive"
        | "two_factor_setup_required" => Permanent(PermanentCode::Unauthorized),
        // `chat.postMessage`'s own rate limit ("Application has posted too many messages")
        // and a free workspace's message quota are answered `ok: false`, status 200: waits.
        "ratelimited" | "rate_limited" => Wait(Duration::from_secs(1)),
        "message_limit_exceeded" => Wait(Duration::from_secs(60)),
        // "It's possible some aspect of the operation succeeded before the error was raised."
        "fatal_error" | "internal_error" | "service_unavailable" => Transient {
            maybe_applied: posting,
        },
        // The POST arrived truncated, or the workspace is migrating: nothing was done.
        "request_timeout" | "team_added_to_org" | "org_login_required" => Transient {
            maybe_applied: false,
        },
        _other => Permanent(PermanentCode::Rejected),
    }
}

impl Slack {
    /// An adapter calling the Web API at `api_base` with `credentials`.
    pub(crate) fn new(api_base: &str, credentials: Arc<Credentials>, timeout: Duration) -> Self {
        Slack {
            http: client(timeout),
            api_base: api_base.trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        in_thread: bool,
        posting: bool,
    ) -> Result<Answer, PlatformError> {
        let Answered {
            status,
            headers,
            body: bytes,
        } = send(request.bearer_auth(self.credentials.current().expose())).await?;
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            if status.is_server_error() && answer.error.as_deref() == Some("request_timeout") {
                // Documented as "the POST data was either missing or truncated".
                return Err(PlatformError::Transient {
                    message: format!("slack: {status} request_timeout"),
                    maybe_applied: false,
                });
            }
            return Err(classify(
                status,
                &headers,
                None,
                answer.error.clone().unwrap_or_default(),
                || PermanentCode::Rejected,
            ));
        }
        if answer.ok {
            return Ok(answer);
        }
        let error = answer
            .error
            .clone()
            .unwrap_or_else(|| "unknown_error".into());
        Err(match meaning(&error, in_thread, posting) {
            Meaning::Permanent(code) => PlatformError::Permanent {
                code,
                message: format!("slack: {error}"),
            },
            Meaning::Transient { maybe_applied } => PlatformError::Transient {
                message: format!("slack: {error}"),
                maybe_applied,
            },
            Meaning::Wait(default) => PlatformError::RateLimited {
                after: retry_after_header(&headers).unwrap_or(default),
            },
        })
    }

    async fn post_message(
        &self,
        channel: &str,
        at: Target<'_>,
        text: &str,
        persona: Option<&SessionPersona>,
        key: &str,
    ) -> Result<Receipt, PlatformError> {
        let (thread_ts, replying) = match at {
            Target::Channel => (None, false),
            Target::Thread(ts) => (checked(Some(ts))?, false),
            Target::ReplyTo(ts) => (Some(ts), true),
        };
        let mut body = json!({
            "channel": channel,
            // Rendered already (`crate::render::slack`): escaped, mentions only as allowed.
            "text": text,
            "unfurl_links": false,
            "metadata": {"event_type": EVENT_TYPE, "event_payload": {"key": key}},
        });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        if let Some(persona) = persona {
            // Needs the `chat:write.customize` scope (chat.postMessage, "username", "icon_url").
            body["username"] = json!(persona.name);
            if let Some(url) = &persona.avatar_url {
                body["icon_url"] = json!(url);
            }
        }
        let request = self
            .http
            .post(format!("{}/chat.postMessage", self.api_base))
            .json(&body);
        let answer = self
            .call(request, thread_ts.is_some() && !replying, true)
            .await?;
        let ts = answer
            .ts
            .clone()
            .or_else(|| answer.message.as_ref().map(|m| m.ts.clone()))
            .filter(|ts| !ts.is_empty())
            .ok_or_else(|| PlatformError::Transient {
                message: "slack answered ok without a ts".into(),
                maybe_applied: true,
            })?;
        let Some(message) = answer.message else {
            // Where it went cannot be told: the part is in doubt, and read-back finds it.
            return Err(PlatformError::Transient {
                message: "slack answered ok without the message".into(),
                maybe_applied: true,
            });
        };
        let receipt = Receipt {
            message_id: ts,
            author_id: message.user,
        };
        match thread_ts {
            // A reply whose message is gone lands in the channel: where the session is bound.
            Some(_) if replying => Ok(receipt),
            Some(root) if message.thread_ts.as_deref() != Some(root) => {
                Err(PlatformError::PostedInParent {
                    code: PermanentCode::ThreadDeleted,
                    receipt,
                })
            }
            Some(_) | None => Ok(receipt),
        }
    }

    /// Our message carrying `key` in `channel` (or its thread) since `since_ms`.
    async fn find(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        key: &str,
        since_ms: u64,
    ) -> Result<Option<Receipt>, PlatformError> {
        let thread_ts = checked(thread_ts)?;
        let oldest = format!("{:.6}", since_ms as f64 / 1000.0);
        let (method, mut query) = match thread_ts {
            Some(ts) => ("conversations.replies", vec![("ts", ts.to_owned())]),
            None => ("conversations.history", Vec::new()),
        };
        query.extend([
            ("channel", channel.to_owned()),
            ("oldest", oldest),
            ("limit", "200".to_owned()),
            ("include_all_metadata", "true".to_owned()),
        ]);
        let request = self
            .http
            .get(format!("{}/{method}", self.api_base))
            .query(&query);
        let answer = match self.call(request, thread_ts.is_some(), false).await {
            Ok(answer) => answer,
            // The root is gone, and its replies with it: nothing of ours is left there.
            Err(PlatformError::Permanent {
                code: PermanentCode::ThreadDeleted,
                ..
            }) if thread_ts.is_some() => Answer::default(),
            Err(error) => return Err(error),
        };
        Ok(answer
            .messages
            .into_iter()
            .find(|m| {
                m.metadata.as_ref().is_some_and(|meta| {
                    meta["event_type"] == EVENT_TYPE && meta["event_payload"]["key"] == key
                })
            })
            .map(|m| Receipt {
                message_id: m.ts,
                author_id: m.user,
            }))
    }
}

fn starter_text(name: &str) -> String {
    format!("🧵 {name}")
}

impl Adapter for Slack {
    fn channel(&self) -> &str {
        "slack"
    }

    fn capabilities(&self) -> Capabilities {
        channels::SLACK
    }

    fn markup(&self) -> Markup {
        Markup::Slack
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        let (channel, at) = target(&request);
        self.post_message(
            channel,
            at,
            request.text,
            request.persona,
            request.idempotency_key,
        )
        .await
    }

    /// A Slack thread is a root message with replies, and a reply cannot be a root: a child
    /// of a thread is a new root in the thread's channel (the binder hands over top-level
    /// parents; a thread given anyway is taken for its channel).
    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        let (channel, _) = place(request.parent);
        let root = self
            .post_message(
                channel,
                Target::Channel,
                &render::slack::plain(&starter_text(request.name)).text,
                None,
                request.idempotency_key,
            )
            .await?;
        Ok(thread_of(request.parent, root.message_id))
    }

    /// In a thread, an earlier attempt's post may also be at the channel's top level, where
    /// Slack puts a reply to a deleted root: found there, it is reported as
    /// [`PlatformError::PostedInParent`], as the post itself would have been.
    async fn find_posted(
        &self,
        request: PostRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<Receipt>, PlatformError> {
        let key = request.idempotency_key;
        let (channel, thread_ts) = place(request.conversation);
        if let (_, Target::ReplyTo(root)) = target(&request) {
            // In the thread of the message answered, or in the channel if it was gone.
            if let Some(found) = self.find(channel, Some(root), key, since_ms).await? {
                return Ok(Some(found));
            }
            return self.find(channel, None, key, since_ms).await;
        }
        let found = self.find(channel, thread_ts, key, since_ms).await?;
        if found.is_some() || thread_ts.is_none() {
            return Ok(found);
        }
        match self.find(channel, None, key, since_ms).await? {
            Some(receipt) => Err(PlatformError::PostedInParent {
                code: PermanentCode::ThreadDeleted,
                receipt,
            }),
            None => Ok(None),
        }
    }

    async fn find_thread(
        &self,
        request: ThreadRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<ConversationRef>, PlatformError> {
        let (channel, _) = place(request.parent);
        let found = self
            .find(channel, None, request.idempotency_key, since_ms)
            .await?;
        Ok(found.map(|root| thread_of(request.parent, root.message_id)))
    }

    /// `chat.delete` (a bot token deletes only the bot's own posts, which is all Threadline
    /// deletes). Its arguments and errors: `tests/specs/slack-chat.delete.json`.
    async fn delete(
        &self,
        conversation: &ConversationRef,
        message_id: &str,
    ) -> Result<(), PlatformError> {
        let (channel, _) = place(conversation);
        let request = self
            .http
            .post(format!("{}/chat.delete", self.api_base))
            .json(&json!({"channel": channel, "ts": message_id}));
        match self.call(request, false, false).await {
            Ok(_) => Ok(()),
            Err(PlatformError::Permanent { message, .. })
                if message == "slack: message_not_found" =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// The thread rooted at `ts` in the parent's channel (the parent's own channel when the
/// parent is itself a thread).
fn thread_of(parent: &ConversationRef, ts: String) -> ConversationRef {
    let (channel, _) = place(parent);
    ConversationRef {
        channel: "slack".into(),
        account_id: parent.account_id.clone(),
        conversation_id: ts,
        parent_conversation_id: Some(channel.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_errors_name_the_lost_thread_wait_out_rate_limits_and_keep_transients_retryable() {
        use Meaning::{Permanent, Transient, Wait};
        assert_eq!(
            meaning("thread_not_found", true, false),
            Permanent(PermanentCode::ThreadDeleted)
        );
        assert_eq!(
            meaning("is_archived", true, true),
            Permanent(PermanentCode::ThreadArchived)
        );
        assert_eq!(
            meaning("restricted_action_thread_locked", true, true),
            Permanent(PermanentCode::ThreadArchived)
        );
        assert_eq!(
            meaning("channel_not_found", false, true),
            Permanent(PermanentCode::NotFound)
        );
        assert_eq!(
            meaning("not_in_channel", false, true),
            Permanent(PermanentCode::Forbidden)
        );
        for auth in [
            "invalid_auth",
            "not_authed",
            "token_revoked",
            "token_expired",
        ] {
            assert_eq!(
                meaning(auth, false, true),
                Permanent(PermanentCode::Unauthorized),
                "{auth}"
            );
        }
        assert_eq!(
            meaning("rate_limited", false, true),
            Wait(Duration::from_secs(1))
        );
        assert_eq!(
            meaning("fatal_error", false, true),
            Transient {
                maybe_applied: true
            }
        );
        assert_eq!(
            meaning("request_timeout", false, true),
            Transient {
                maybe_applied: false
            }
        );
        assert_eq!(
            meaning("msg_too_long", false, true),
            Permanent(PermanentCode::Rejected)
        );
    }

    #[test]
    fn only_a_slack_ts_names_a_thread() {
        assert!(is_ts("1700000000.000100") && is_ts("1700000000"));
        for bad in ["", "abc", "1.2.3", "-1.5", "1.", "1e9"] {
            assert!(!is_ts(bad), "{bad}");
        }
    }

    #[test]
    fn a_child_of_a_thread_is_rooted_in_the_threads_channel() {
        let thread = ConversationRef {
            channel: "slack".into(),
            account_id: "T1".into(),
            conversation_id: "1700000000.000100".into(),
            parent_conversation_id: Some("C1".into()),
        };
        let child = thread_of(&thread, "1700000001.000200".into());
        assert_eq!(child.parent_conversation_id.as_deref(), Some("C1"));
        assert_eq!(place(&child), ("C1", Some("1700000001.000200")));
    }
}
