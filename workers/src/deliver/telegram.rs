//! Telegram Bot API. A thread is a forum topic (`message_thread_id`) in a supergroup chat.
//! Telegram offers no idempotency key and bots cannot read chat history, so an attempt whose
//! outcome is unknown cannot be settled: it is re-posted or not according to
//! `[telegram] unknown_outcome`, and reported as `reconciled: "unknown_outcome"` either way.
//! The token is part of the URL path, so no URL is ever logged (see `http::transport_error`).

use super::adapter::{Adapter, Capabilities, PlatformError, PostRequest, Receipt, ThreadRequest};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use threadline_schemas::ConversationRef;

pub const MAX_MESSAGE_CHARS: usize = 4_096;

pub const CAPABILITIES: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    idempotency_key: false,
    read_back: false,
    max_message_chars: MAX_MESSAGE_CHARS,
};

/// Talks to the Telegram Bot API (or a loopback fake at the configured base URL).
pub struct Telegram {
    http: reqwest::Client,
    api_base: String,
    credentials: Arc<Credentials>,
}

#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Debug, Default, Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// Telegram's error descriptions, named the way Threadline reports them.
fn permanent_code(status: u16, description: &str) -> String {
    let d = description.to_ascii_lowercase();
    if d.contains("message thread not found") {
        "thread_deleted"
    } else if d.contains("topic_closed") {
        "thread_archived"
    } else if d.contains("chat not found") {
        "not_found"
    } else if d.contains("bot was blocked") || d.contains("bot was kicked") || status == 403 {
        "forbidden"
    } else if status == 401 {
        "unauthorized"
    } else if d.contains("not a forum") {
        "capability_unsupported"
    } else {
        "rejected"
    }
    .to_owned()
}

/// A chat id as Telegram wants it: a number when it is one, else the `@username` string.
fn chat(id: &str) -> Value {
    id.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(id))
}

impl Telegram {
    pub fn new(api_base: &str, credentials: Arc<Credentials>, timeout: Duration) -> Self {
        Telegram {
            http: client(timeout),
            api_base: api_base.trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    async fn call(&self, method: &str, body: Value) -> Result<Value, PlatformError> {
        let url = format!(
            "{}/bot{}/{method}",
            self.api_base,
            self.credentials.current().expose()
        );
        let Answered {
            status,
            headers,
            body: bytes,
        } = send(self.http.post(url).json(&body)).await?;
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        match (status.is_success() && answer.ok, answer.result) {
            (true, Some(result)) => Ok(result),
            (true, None) | (false, _) => {
                let description = answer.description.clone().unwrap_or_default();
                Err(classify(
                    status,
                    &headers,
                    answer
                        .parameters
                        .as_ref()
                        .and_then(|p| p.retry_after)
                        .map(Duration::from_secs),
                    description.clone(),
                    || permanent_code(status.as_u16(), &description),
                ))
            }
        }
    }
}

impl Adapter for Telegram {
    fn channel(&self) -> &str {
        "telegram"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        let c = request.conversation;
        let mut body = json!({"text": request.text, "disable_web_page_preview": true});
        match &c.parent_conversation_id {
            Some(chat_id) => {
                body["chat_id"] = chat(chat_id);
                body["message_thread_id"] = chat(&c.conversation_id);
            }
            None => body["chat_id"] = chat(&c.conversation_id),
        }
        let result = self.call("sendMessage", body).await?;
        let message_id = result["message_id"]
            .as_i64()
            .ok_or_else(|| PlatformError::Transient {
                message: "telegram answered ok without a message_id".into(),
                maybe_applied: true,
            })?;
        Ok(Receipt {
            message_id: message_id.to_string(),
            author_id: result["from"]["id"].as_i64().map(|id| id.to_string()),
        })
    }

    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        let name: String = request.name.chars().take(128).collect();
        let result = self
            .call(
                "createForumTopic",
                json!({"chat_id": chat(&request.parent.conversation_id), "name": name}),
            )
            .await?;
        let thread =
            result["message_thread_id"]
                .as_i64()
                .ok_or_else(|| PlatformError::Transient {
                    message: "telegram answered ok without a message_thread_id".into(),
                    maybe_applied: true,
                })?;
        Ok(ConversationRef {
            channel: "telegram".into(),
            account_id: request.parent.account_id.clone(),
            conversation_id: thread.to_string(),
            parent_conversation_id: Some(request.parent.conversation_id.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_descriptions_map_to_clear_outcomes() {
        assert_eq!(
            permanent_code(400, "Bad Request: message thread not found"),
            "thread_deleted"
        );
        assert_eq!(
            permanent_code(400, "Bad Request: TOPIC_CLOSED"),
            "thread_archived"
        );
        assert_eq!(
            permanent_code(400, "Bad Request: chat not found"),
            "not_found"
        );
        assert_eq!(
            permanent_code(403, "Forbidden: bot was blocked by the user"),
            "forbidden"
        );
        assert_eq!(chat("-100123"), json!(-100123));
        assert_eq!(chat("@news"), json!("@news"));
    }
}
