//! The generic webhook channel, `webhook:<name>`: a JSON POST per message part to a URL from
//! configuration, with an `Idempotency-Key` header the receiver uses to drop re-sends. This
//! is how bridges to platforms without a native adapter (WhatsApp, Signal, Feishu) plug in.
//!
//! Request bodies: `{"action":"post", event_id, delivery_id, part, parts, conversation,
//! text, session_key}` → `{"message_id"}`; `{"action":"create_thread", parent, name,
//! session_key}` → `{"conversation_id"}` (only when the webhook is configured with threads).

use super::adapter::{Adapter, Capabilities, PlatformError, PostRequest, Receipt, ThreadRequest};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use crate::config::WebhookConfig;
use crate::model::channels;
use crate::model::platform_codes::PermanentCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use threadline_schemas::{ContentFormat, ConversationRef, SessionPersona};

/// One configured webhook.
pub struct Webhook {
    channel: String,
    http: reqwest::Client,
    config: WebhookConfig,
    /// `config.url`, parsed once rather than on every post (`None`: unparseable, and
    /// every call reports it).
    url: Option<reqwest::Url>,
    credentials: Arc<Credentials>,
}

/// A post's request body, serialized straight from the borrowed request: on the hot path,
/// where a `json!` tree would allocate a map and a copy of every string first.
/// `session_key` is `null` when absent, as it always was.
#[derive(Serialize)]
struct PostBody<'a> {
    action: &'static str,
    event_id: &'a str,
    delivery_id: &'a str,
    part: usize,
    parts: usize,
    conversation: &'a ConversationRef,
    text: &'a str,
    session_key: Option<&'a str>,
    /// How `text` is written: absent is CommonMark, the receiver renders it.
    #[serde(skip_serializing_if = "ContentFormat::is_markdown")]
    format: ContentFormat,
    /// Who `<@ID>` tokens in `text` may notify.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    mentions: &'a [String],
    /// The message the post answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    /// The name and picture the post should show.
    #[serde(skip_serializing_if = "Option::is_none")]
    persona: Option<&'a SessionPersona>,
}

#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    message_id: Option<serde_json::Value>,
    #[serde(default)]
    conversation_id: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

fn id_string(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(_)
        | serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Array(_)
        | serde_json::Value::Object(_) => None,
    }
}

impl Webhook {
    /// The adapter of webhook channel `webhook:<name>`, as `config` describes it.
    pub fn new(
        name: &str,
        config: WebhookConfig,
        credentials: Arc<Credentials>,
        timeout: Duration,
    ) -> Self {
        Webhook {
            channel: format!("webhook:{name}"),
            http: client(timeout),
            url: reqwest::Url::parse(&config.url).ok(),
            config,
            credentials,
        }
    }

    async fn call(&self, key: &str, body: &impl Serialize) -> Result<Answer, PlatformError> {
        let request = match &self.url {
            Some(url) => self.http.post(url.clone()),
            None => self.http.post(&self.config.url),
        };
        let mut request = request.header("Idempotency-Key", key).json(body);
        let token = self.credentials.current();
        if !token.is_empty() {
            // `bearer_auth` marks the header sensitive: it prints as `Sensitive` in `Debug`.
            request = request.bearer_auth(token.expose());
        }
        let Answered {
            status,
            headers,
            body: bytes,
        } = send(request).await?;
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        if status.is_success() {
            return Ok(answer);
        }
        Err(classify(
            status,
            &headers,
            answer.retry_after_ms.map(Duration::from_millis),
            answer.error.clone().unwrap_or_default(),
            || match status.as_u16() {
                401 => PermanentCode::Unauthorized,
                403 => PermanentCode::Forbidden,
                404 => PermanentCode::NotFound,
                other => PermanentCode::Other(format!("http_{other}")),
            },
        ))
    }
}

impl Adapter for Webhook {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn capabilities(&self) -> Capabilities {
        channels::webhook(&self.config)
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        let answer = self
            .call(
                request.idempotency_key,
                &PostBody {
                    action: "post",
                    event_id: request.event_id,
                    delivery_id: request.delivery_id,
                    part: request.part,
                    parts: request.parts,
                    conversation: request.conversation,
                    text: request.text,
                    session_key: request.session_key,
                    format: request.format,
                    mentions: request.mentions,
                    reply_to: request.reply_to,
                    persona: request.persona,
                },
            )
            .await?;
        // Receivers without ids of their own are fine: the idempotency key identifies the part.
        Ok(Receipt {
            message_id: answer
                .message_id
                .as_ref()
                .and_then(id_string)
                .unwrap_or_else(|| request.idempotency_key.to_owned()),
            // Webhook receivers post under identities we cannot learn; configure them in
            // `own_author_ids`.
            author_id: None,
        })
    }

    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        if !self.config.threads {
            return Err(PlatformError::Permanent {
                code: PermanentCode::CapabilityUnsupported,
                message: format!("{} is not configured with threads", self.channel),
            });
        }
        let answer = self
            .call(
                request.idempotency_key,
                &json!({
                    "action": "create_thread",
                    "parent": request.parent,
                    "name": request.name,
                    "session_key": request.session_key,
                }),
            )
            .await?;
        let conversation_id = answer
            .conversation_id
            .as_ref()
            .and_then(id_string)
            .ok_or_else(|| PlatformError::Permanent {
                code: PermanentCode::BadResponse,
                message: "create_thread answer has no conversation_id".into(),
            })?;
        Ok(ConversationRef {
            channel: self.channel.clone(),
            account_id: request.parent.account_id.clone(),
            conversation_id,
            parent_conversation_id: Some(request.parent.conversation_id.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed body is the wire shape receivers were written against: the same keys and
    /// values the `json!` body had, `session_key` included as `null` when there is none.
    #[test]
    fn the_post_body_keeps_its_wire_shape() {
        let conversation = ConversationRef {
            channel: "webhook:ops".into(),
            account_id: "acct".into(),
            conversation_id: "chat-42".into(),
            parent_conversation_id: Some("chat-1".into()),
        };
        for session_key in [Some("agent:main:child"), None] {
            let body = PostBody {
                action: "post",
                event_id: "ev-1",
                delivery_id: "dl-1",
                part: 1,
                parts: 3,
                conversation: &conversation,
                text: "hello \"there\"\n",
                session_key,
                format: ContentFormat::Markdown,
                mentions: &[],
                reply_to: None,
                persona: None,
            };
            assert_eq!(
                serde_json::to_value(&body).unwrap(),
                json!({
                    "action": "post",
                    "event_id": "ev-1",
                    "delivery_id": "dl-1",
                    "part": 1,
                    "parts": 3,
                    "conversation": {
                        "channel": "webhook:ops",
                        "account_id": "acct",
                        "conversation_id": "chat-42",
                        "parent_conversation_id": "chat-1",
                    },
                    "text": "hello \"there\"\n",
                    "session_key": session_key,
                })
            );
        }
    }
}
