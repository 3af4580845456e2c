//! Discord (API v10). Bot messages carry a `nonce` with `enforce_nonce`, so a re-sent part
//! returns the message the first attempt created instead of a second one. A child thread is
//! started from a nonce'd starter message: Discord gives such a thread the starter message's
//! id and refuses a second thread on it (160004), so creation is idempotent end to end.
//! Where a persona (channel webhook) is configured, posts go out under it through webhook
//! execute (with `thread_id` for threads). Webhook executes take no nonce, so an unknown
//! outcome there is settled by reading the conversation back for the persona's message.

use super::adapter::{Adapter, Capabilities, PlatformError, PostRequest, Receipt, ThreadRequest};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use crate::config::Persona;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
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
    /// Parent channel id → the persona posting there.
    personas: BTreeMap<String, Persona>,
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
    pub fn new(
        api_base: &str,
        credentials: Arc<Credentials>,
        timeout: Duration,
        personas: BTreeMap<String, Persona>,
    ) -> Self {
        Discord {
            http: client(timeout),
            api_base: api_base.trim_end_matches('/').to_owned(),
            credentials,
            personas,
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

    /// Webhook execute: `POST /webhooks/{id}/{token}?wait=true[&thread_id=…]`.
    async fn execute(
        &self,
        persona: &Persona,
        request: PostRequest<'_>,
    ) -> Result<Receipt, PlatformError> {
        let c = request.conversation;
        let mut url = format!(
            "{}/webhooks/{}/{}?wait=true",
            self.api_base,
            persona.webhook_id,
            persona.webhook_token.expose()
        );
        if c.parent_conversation_id.is_some() {
            url.push_str(&format!("&thread_id={}", snowflake(&c.conversation_id)?));
        }
        let mut body = json!({"content": request.text, "allowed_mentions": {"parse": []}});
        if let Some(name) = &persona.username {
            body["username"] = json!(name);
        }
        if let Some(avatar) = &persona.avatar_url {
            body["avatar_url"] = json!(avatar);
        }
        let answer = send(self.http.post(url).json(&body)).await?;
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

    async fn call(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), PlatformError> {
        let answer = send(
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
            // "A thread has already been created for this message": the caller decides.
            return Ok((status, json!({"code": 160004})));
        }
        Err(failure(&answer))
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
        nonce: &str,
    ) -> Result<Receipt, PlatformError> {
        let channel_id = snowflake(channel_id)?;
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

/// Discord ids are snowflakes (digits). Anything else from an event is refused before it
/// becomes part of a request path or query: `../`, `?` or `&` would let an event choose
/// which endpoint of the platform the bot's token is sent to.
fn snowflake(id: &str) -> Result<&str, PlatformError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        // `not_found`: no Discord channel has such an id (one name per permanent error).
        Err(PlatformError::Permanent {
            code: "not_found".into(),
            message: "a Discord conversation id must be a snowflake (digits only)".into(),
        })
    }
}

/// Unix ms a Discord snowflake was made at.
fn snowflake_ms(id: u64) -> u64 {
    (id >> 22) + 1_420_070_400_000
}

impl Adapter for Discord {
    fn channel(&self) -> &str {
        "discord"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn keyed(&self, request: &PostRequest<'_>) -> bool {
        // Bot messages carry a nonce; webhook executes cannot.
        self.persona(request).is_none()
    }

    async fn find_posted(
        &self,
        request: PostRequest<'_>,
        since_ms: u64,
    ) -> Result<Option<Receipt>, PlatformError> {
        let Some(persona) = self.persona(&request) else {
            return Ok(None);
        };
        let channel = snowflake(&request.conversation.conversation_id)?;
        let url = format!("{}/channels/{channel}/messages?limit=50", self.api_base);
        let answer = send(self.as_bot(self.http.get(url))).await?;
        if !answer.status.is_success() {
            return Err(failure(&answer));
        }
        let messages: Vec<serde_json::Value> =
            serde_json::from_slice(&answer.body).unwrap_or_default();
        // Ours: by this persona, with this part's text, not older than the claim window.
        let found = messages.iter().find(|m| {
            m["webhook_id"] == persona.webhook_id.as_str()
                && m["content"] == request.text
                && m["id"]
                    .as_str()
                    .and_then(|id| id.parse::<u64>().ok())
                    .is_some_and(|id| snowflake_ms(id) >= since_ms)
        });
        Ok(found.and_then(|m| m["id"].as_str()).map(|id| Receipt {
            message_id: id.to_owned(),
            author_id: Some(persona.webhook_id.clone()),
        }))
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        if let Some(persona) = self.persona(&request) {
            return self.execute(persona, request).await;
        }
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
