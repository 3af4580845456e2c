//! Discord (API v10). Bot messages carry a `nonce` with `enforce_nonce`, so a re-sent part
//! returns the message the first attempt created instead of a second one. A child thread is
//! started from a nonce'd starter message: Discord gives such a thread the starter message's
//! id and refuses a second thread on it (160004), so creation is idempotent end to end.

use super::adapter::{Adapter, Capabilities, PlatformError, PostRequest, Receipt, ThreadRequest};
use super::credentials::Credentials;
use super::http::{classify, client, transport_error};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use threadline_schemas::ConversationRef;

/// Discord's limit for one message's content.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// The capabilities of the Discord adapter.
pub const CAPABILITIES: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    idempotency_key: true,
    read_back: true,
    max_message_chars: MAX_MESSAGE_CHARS,
};

/// Talks to Discord's HTTP API (or a loopback fake at the configured base URL).
pub struct Discord {
    http: reqwest::Client,
    api_base: String,
    credentials: Arc<Credentials>,
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

/// Discord's JSON error codes Threadline names.
fn permanent_code(status: u16, code: Option<i64>) -> String {
    match (status, code) {
        (_, Some(10003)) => "thread_deleted",
        (_, Some(50083)) => "thread_archived",
        (_, Some(10008)) => "unknown_message",
        (_, Some(50001)) | (_, Some(50013)) | (403, _) => "forbidden",
        (401, _) => "unauthorized",
        (404, _) => "not_found",
        (_, Some(50035)) | (_, _) => "rejected",
    }
    .to_owned()
}

impl Discord {
    pub fn new(api_base: &str, credentials: Arc<Credentials>, timeout: Duration) -> Self {
        Discord {
            http: client(timeout),
            api_base: api_base.trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    async fn call(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), PlatformError> {
        let response = self
            .http
            .post(format!("{}{path}", self.api_base))
            .header(
                "Authorization",
                format!("Bot {}", self.credentials.current().expose()),
            )
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            return Ok((status.as_u16(), value));
        }
        let error: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        if error.code == Some(160004) {
            // "A thread has already been created for this message": the caller decides.
            return Ok((status.as_u16(), json!({"code": 160004})));
        }
        let message = error.message.clone().unwrap_or_default();
        Err(classify(
            status,
            &headers,
            error
                .retry_after
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
            message,
            || permanent_code(status.as_u16(), error.code),
        ))
    }

    async fn create_message(
        &self,
        channel_id: &str,
        content: &str,
        nonce: &str,
    ) -> Result<Receipt, PlatformError> {
        let (_, value) = self
            .call(
                &format!("/channels/{channel_id}/messages"),
                json!({
                    "content": content,
                    "nonce": nonce,
                    "enforce_nonce": true,
                    // Agents' output must never ping @everyone or roles.
                    "allowed_mentions": {"parse": []},
                }),
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
}

impl Adapter for Discord {
    fn channel(&self) -> &str {
        "discord"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        self.create_message(
            &request.conversation.conversation_id,
            request.text,
            request.idempotency_key,
        )
        .await
    }

    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        let parent_id = &request.parent.conversation_id;
        let starter = self
            .create_message(
                parent_id,
                &format!("🧵 {}", request.name),
                request.idempotency_key,
            )
            .await?
            .message_id;
        let (status, value) = self
            .call(
                &format!("/channels/{parent_id}/messages/{starter}/threads"),
                json!({"name": request.name, "auto_archive_duration": 1440}),
            )
            .await?;
        let thread_id = if status == 400 && value["code"] == 160004 {
            // Our earlier attempt created it; a thread started from a message has its id.
            starter
        } else {
            serde_json::from_value::<Created>(value)
                .map(|c| c.id)
                .map_err(|e| PlatformError::Transient {
                    message: format!("unexpected thread body: {e}"),
                    maybe_applied: true,
                })?
        };
        Ok(ConversationRef {
            channel: "discord".into(),
            account_id: request.parent.account_id.clone(),
            conversation_id: thread_id,
            parent_conversation_id: Some(parent_id.clone()),
        })
    }
}
