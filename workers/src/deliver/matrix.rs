//! Matrix client-server API. A thread is its root event in a room (`m.thread` relation).
//! Every send carries the part's key as the transaction id, which the homeserver treats as
//! idempotent per access token: a re-sent part returns the first event instead of a second.

use super::adapter::{Adapter, Capabilities, PlatformError, PostRequest, Receipt, ThreadRequest};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use threadline_schemas::ConversationRef;

/// Events are limited to 64 KiB of JSON; this leaves room for escaping and the envelope.
pub const MAX_MESSAGE_CHARS: usize = 12_000;

pub const CAPABILITIES: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    idempotency_key: true,
    read_back: true,
    max_message_chars: MAX_MESSAGE_CHARS,
};

/// Talks to a Matrix homeserver (or a loopback fake at the configured URL).
pub struct Matrix {
    http: reqwest::Client,
    homeserver: String,
    credentials: Arc<Credentials>,
    /// Our user id, learned once (`whoami`) for echo suppression.
    user_id: OnceLock<String>,
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
fn permanent_code(status: u16, errcode: &str, error: &str, in_thread: bool) -> String {
    match errcode {
        "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN" => "unauthorized",
        "M_FORBIDDEN" => "forbidden",
        "M_NOT_FOUND" if in_thread => "thread_deleted",
        _ if in_thread && error.to_ascii_lowercase().contains("thread root") => "thread_deleted",
        "M_TOO_LARGE" => "too_large",
        _ if status == 404 => "not_found",
        _ => "rejected",
    }
    .to_owned()
}

impl Matrix {
    pub fn new(homeserver: &str, credentials: Arc<Credentials>, timeout: Duration) -> Self {
        Matrix {
            http: client(timeout),
            homeserver: homeserver.trim_end_matches('/').to_owned(),
            credentials,
            user_id: OnceLock::new(),
        }
    }

    /// `{homeserver}/_matrix/client/v3/<segments…>`, each segment percent-encoded (room ids
    /// hold `!` and `:`).
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, PlatformError> {
        let mut url =
            reqwest::Url::parse(&self.homeserver).map_err(|e| PlatformError::Permanent {
                code: "bad_config".into(),
                message: format!("matrix homeserver URL: {e}"),
            })?;
        url.path_segments_mut()
            .map_err(|()| PlatformError::Permanent {
                code: "bad_config".into(),
                message: "matrix homeserver URL cannot take a path".into(),
            })?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        Ok(url)
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        in_thread: bool,
    ) -> Result<Answer, PlatformError> {
        let Answered {
            status,
            headers,
            body: bytes,
        } = send(request.bearer_auth(self.credentials.current().expose())).await?;
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        if status.is_success() {
            return Ok(answer);
        }
        let errcode = answer.errcode.clone().unwrap_or_default();
        let error = answer.error.clone().unwrap_or_default();
        Err(classify(
            status,
            &headers,
            answer.retry_after_ms.map(Duration::from_millis),
            format!("{errcode}: {error}"),
            || permanent_code(status.as_u16(), &errcode, &error, in_thread),
        ))
    }

    async fn send(
        &self,
        room: &str,
        content: Value,
        txn: &str,
        in_thread: bool,
    ) -> Result<Receipt, PlatformError> {
        let url = self.url(&["rooms", room, "send", "m.room.message", txn])?;
        let answer = self
            .call(self.http.put(url).json(&content), in_thread)
            .await?;
        let event_id = answer.event_id.ok_or_else(|| PlatformError::Transient {
            message: "matrix answered without an event_id".into(),
            maybe_applied: true,
        })?;
        Ok(Receipt {
            message_id: event_id,
            author_id: self.whoami().await,
        })
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
}

impl Adapter for Matrix {
    fn channel(&self) -> &str {
        "matrix"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        let c = request.conversation;
        let mut content = json!({"msgtype": "m.text", "body": request.text});
        let room = match &c.parent_conversation_id {
            Some(room) => {
                content["m.relates_to"] = json!({
                    "rel_type": "m.thread",
                    "event_id": c.conversation_id,
                    // Clients without thread support show the post as a reply to the root.
                    "is_falling_back": true,
                    "m.in_reply_to": {"event_id": c.conversation_id},
                });
                room
            }
            None => &c.conversation_id,
        };
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
        let room = &request.parent.conversation_id;
        let root = self
            .send(
                room,
                json!({"msgtype": "m.notice", "body": format!("🧵 {}", request.name)}),
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
            permanent_code(400, "M_UNKNOWN", "Thread root not found", true),
            "thread_deleted"
        );
        assert_eq!(
            permanent_code(403, "M_FORBIDDEN", "not in room", false),
            "forbidden"
        );
        assert_eq!(
            permanent_code(401, "M_UNKNOWN_TOKEN", "", false),
            "unauthorized"
        );
    }
}
