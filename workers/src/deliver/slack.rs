//! Slack Web API. A thread is the `ts` of its root message in a channel. Slack has no
//! idempotency key, but it has read-back: every post carries message `metadata` with the
//! part's key, and an attempt whose outcome is unknown is settled by finding that key in
//! `conversations.replies` / `conversations.history` before anything is posted again.
//! Errors come as HTTP 200 with `ok: false` and a code; rate limits as 429 + `Retry-After`.

use super::adapter::{Adapter, Capabilities, PlatformError, PostRequest, Receipt, ThreadRequest};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use threadline_schemas::ConversationRef;

/// Slack accepts 40,000 characters but recommends at most 4,000 per message.
pub const MAX_MESSAGE_CHARS: usize = 4_000;

pub const CAPABILITIES: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    idempotency_key: false,
    read_back: true,
    max_message_chars: MAX_MESSAGE_CHARS,
};

/// The metadata event type Threadline marks its posts with.
const EVENT_TYPE: &str = "threadline_post";

/// Talks to the Slack Web API (or a loopback fake at the configured base URL).
pub struct Slack {
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

/// Slack's error codes, named the way Threadline reports them. `Ok(())` means retryable.
fn permanent_code(error: &str, in_thread: bool) -> Result<String, ()> {
    Ok(match error {
        "thread_not_found" | "message_not_found" => "thread_deleted",
        "channel_not_found" if in_thread => "thread_deleted",
        "is_archived" if in_thread => "thread_archived",
        "channel_not_found" => "not_found",
        "is_archived" => "archived",
        "not_in_channel" | "restricted_action" | "missing_scope" => "forbidden",
        "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive" => "unauthorized",
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            return Err(())
        }
        _other => "rejected",
    }
    .to_owned())
}

impl Slack {
    pub fn new(api_base: &str, credentials: Arc<Credentials>, timeout: Duration) -> Self {
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
            return Err(classify(
                status,
                &headers,
                None,
                answer.error.clone().unwrap_or_default(),
                || "rejected".to_owned(),
            ));
        }
        if answer.ok {
            return Ok(answer);
        }
        let error = answer
            .error
            .clone()
            .unwrap_or_else(|| "unknown_error".into());
        Err(match permanent_code(&error, in_thread) {
            Ok(code) => PlatformError::Permanent {
                code,
                message: format!("slack: {error}"),
            },
            Err(()) => PlatformError::Transient {
                message: format!("slack: {error}"),
                maybe_applied: posting,
            },
        })
    }

    async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
        key: &str,
    ) -> Result<Receipt, PlatformError> {
        let mut body = json!({
            "channel": channel,
            "text": text,
            "unfurl_links": false,
            "metadata": {"event_type": EVENT_TYPE, "event_payload": {"key": key}},
        });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        let request = self
            .http
            .post(format!("{}/chat.postMessage", self.api_base))
            .json(&body);
        let answer = self.call(request, thread_ts.is_some(), true).await?;
        let ts = answer
            .ts
            .clone()
            .or_else(|| answer.message.as_ref().map(|m| m.ts.clone()))
            .filter(|ts| !ts.is_empty())
            .ok_or_else(|| PlatformError::Transient {
                message: "slack answered ok without a ts".into(),
                maybe_applied: true,
            })?;
        Ok(Receipt {
            message_id: ts,
            author_id: answer.message.and_then(|m| m.user),
        })
    }

    /// Our message carrying `key` in `channel` (or its thread) since `since_ms`.
    async fn find(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        key: &str,
        since_ms: u64,
    ) -> Result<Option<Receipt>, PlatformError> {
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
        let answer = self.call(request, thread_ts.is_some(), false).await?;
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
        CAPABILITIES
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        let (channel, thread_ts) = place(request.conversation);
        self.post_message(channel, thread_ts, request.text, request.idempotency_key)
            .await
    }

    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        let channel = &request.parent.conversation_id;
        let root = self
            .post_message(
                channel,
                None,
                &starter_text(request.name),
                request.idempotency_key,
            )
            .await?;
        Ok(thread_of(request.parent, root.message_id))
    }

    async fn find_posted(
        &self,
        request: PostRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<Receipt>, PlatformError> {
        let (channel, thread_ts) = place(request.conversation);
        self.find(channel, thread_ts, request.idempotency_key, since_ms)
            .await
    }

    async fn find_thread(
        &self,
        request: ThreadRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<ConversationRef>, PlatformError> {
        let found = self
            .find(
                &request.parent.conversation_id,
                None,
                request.idempotency_key,
                since_ms,
            )
            .await?;
        Ok(found.map(|root| thread_of(request.parent, root.message_id)))
    }
}

fn thread_of(parent: &ConversationRef, ts: String) -> ConversationRef {
    ConversationRef {
        channel: "slack".into(),
        account_id: parent.account_id.clone(),
        conversation_id: ts,
        parent_conversation_id: Some(parent.conversation_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_errors_name_the_lost_thread_and_keep_transients_retryable() {
        assert_eq!(
            permanent_code("thread_not_found", true).unwrap(),
            "thread_deleted"
        );
        assert_eq!(
            permanent_code("is_archived", true).unwrap(),
            "thread_archived"
        );
        assert_eq!(
            permanent_code("channel_not_found", false).unwrap(),
            "not_found"
        );
        assert_eq!(
            permanent_code("invalid_auth", false).unwrap(),
            "unauthorized"
        );
        assert!(permanent_code("internal_error", false).is_err());
    }
}
