//! Inbound webhooks, `POST /webhooks/<name>`: how a generic bridge (WhatsApp, Signal, Feishu,
//! …) pushes its platform's messages into `webhook:<name>`. Each request is signed like
//! Slack's: `X-Threadline-Timestamp` (Unix seconds) and `X-Threadline-Signature` =
//! `v1=` + hex HMAC-SHA256 of `v1:<timestamp>:<body>` under the channel's
//! `inbound_secret`. A request older than [`WINDOW_SECS`] is refused, so a captured request
//! cannot be replayed later; one replayed within the window is the same message, which the
//! intake collapses by its `message_id`.

use super::{Intake, ListenError, Routes, Taken};
use crate::error::WorkError;
use crate::io::metrics as m;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use threadline_schemas::{check_id, Attachment, Author, ConversationChange, Validate};

/// How far a request's timestamp may be from now, in seconds (Slack's replay window).
pub(crate) const WINDOW_SECS: u64 = 300;

/// The timestamp header.
pub(crate) const TIMESTAMP: &str = "x-threadline-timestamp";
/// The signature header.
pub(crate) const SIGNATURE: &str = "x-threadline-signature";

/// What a bridge sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Pushed {
    /// A message was written.
    Message {
        /// The bridged account; default `default`.
        #[serde(default)]
        account_id: Option<String>,
        conversation_id: String,
        #[serde(default)]
        parent_conversation_id: Option<String>,
        /// The bridged platform's id of the message: one event per id.
        message_id: String,
        text: String,
        author: Author,
        #[serde(default)]
        reply_to: Option<String>,
        #[serde(default)]
        attachments: Vec<Attachment>,
    },
    /// A conversation changed.
    Change {
        #[serde(default)]
        account_id: Option<String>,
        conversation_id: String,
        #[serde(default)]
        parent_conversation_id: Option<String>,
        change: ConversationChange,
        /// What identifies this change on the bridged platform (its event id).
        key: String,
    },
}

/// Adds `POST /webhooks/<name>` for this webhook channel.
pub(crate) fn start(intake: Intake, routes: &mut Routes) -> Result<(), ListenError> {
    let channel = intake.channel().to_owned();
    let Some(name) = channel.strip_prefix("webhook:") else {
        return Err(ListenError::Config(format!("{channel} is not a channel")));
    };
    match intake.ctx().config.listen_secret(&channel) {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            return Err(ListenError::Config(format!(
                "cannot read the inbound secret of {channel}: {e}"
            )))
        }
        None => {
            return Err(ListenError::Config(format!(
                "[webhooks.{name}] has no inbound_secret: its messages could not be verified"
            )))
        }
    }
    let path = format!("/webhooks/{name}");
    routes.add(
        axum::Router::new()
            .route(&path, post(receive))
            .with_state(intake),
    );
    Ok(())
}

/// Why a request was refused.
#[derive(Debug)]
enum Refusal {
    Unsigned(&'static str),
    Invalid(String),
    Unavailable(WorkError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Refusal::Unsigned(why) => (StatusCode::UNAUTHORIZED, why.to_owned()),
            Refusal::Invalid(why) => (StatusCode::BAD_REQUEST, why),
            // The bridge should retry: nothing was stored.
            Refusal::Unavailable(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        (
            status,
            Json(serde_json::json!({ "ok": false, "error": text })),
        )
            .into_response()
    }
}

async fn receive(
    State(intake): State<Intake>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match take(&intake, &headers, &body).await {
        Ok((event_id, taken)) => Json(serde_json::json!({
            "ok": true,
            "event_id": event_id,
            "duplicate": taken == Taken::Duplicate,
        }))
        .into_response(),
        Err(refusal) => {
            let reason = match &refusal {
                Refusal::Unsigned(_) => "signature",
                Refusal::Invalid(_) => "invalid",
                Refusal::Unavailable(_) => "unavailable",
            };
            metrics::counter!(m::LISTEN_REFUSED, "channel" => intake.channel().to_owned(), "reason" => reason)
                .increment(1);
            tracing::warn!(
                channel = intake.channel(),
                ?refusal,
                "inbound webhook request refused"
            );
            refusal.into_response()
        }
    }
}

async fn take(
    intake: &Intake,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Taken), Refusal> {
    let secret = match intake.ctx().config.listen_secret(intake.channel()) {
        Some(Ok(secret)) => secret,
        Some(Err(e)) => return Err(Refusal::Unavailable(WorkError::Transient(e.to_string()))),
        None => return Err(Refusal::Unsigned("no inbound secret is configured")),
    };
    verify(
        secret.expose().as_bytes(),
        headers,
        body,
        threadline_schemas::now_ms() / 1000,
    )?;
    let pushed: Pushed = serde_json::from_slice(body)
        .map_err(|e| Refusal::Invalid(format!("not a Threadline webhook message: {e}")))?;
    match pushed {
        Pushed::Message {
            account_id,
            conversation_id,
            parent_conversation_id,
            message_id,
            text,
            author,
            reply_to,
            attachments,
        } => {
            let conversation = pushed_conversation(
                intake,
                account_id,
                &conversation_id,
                parent_conversation_id.as_deref(),
            )?;
            check_id("message_id", &message_id).map_err(Refusal::Invalid)?;
            check_id("author.id", &author.id).map_err(Refusal::Invalid)?;
            let heard = super::Heard {
                conversation,
                message_id,
                text,
                author,
                reply_to,
                attachments,
            };
            let event_id = heard.event_id();
            let taken = intake.message(heard).await.map_err(Refusal::Unavailable)?;
            Ok((event_id, taken))
        }
        Pushed::Change {
            account_id,
            conversation_id,
            parent_conversation_id,
            change,
            key,
        } => {
            let conversation = pushed_conversation(
                intake,
                account_id,
                &conversation_id,
                parent_conversation_id.as_deref(),
            )?;
            check_id("key", &key).map_err(Refusal::Invalid)?;
            let event_id = super::intake::change_event_id(&conversation, change, &key);
            let taken = intake
                .change(conversation, change, &key)
                .await
                .map_err(Refusal::Unavailable)?;
            Ok((event_id, taken))
        }
    }
}

/// The conversation a bridge names, under its account when it names one.
fn pushed_conversation(
    intake: &Intake,
    account_id: Option<String>,
    id: &str,
    parent: Option<&str>,
) -> Result<threadline_schemas::ConversationRef, Refusal> {
    let mut conversation = intake.conversation(id, parent);
    if let Some(account) = account_id {
        conversation.account_id = account;
    }
    conversation.validate().map_err(Refusal::Invalid)?;
    Ok(conversation)
}

/// Checks the request's signature and age against `secret`, `now` in Unix seconds.
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: u64) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header(TIMESTAMP).ok_or(Refusal::Unsigned("no X-Threadline-Timestamp"))?;
    let at: u64 = timestamp
        .parse()
        .map_err(|_| Refusal::Unsigned("X-Threadline-Timestamp is not Unix seconds"))?;
    if at.abs_diff(now) > WINDOW_SECS {
        return Err(Refusal::Unsigned(
            "X-Threadline-Timestamp is more than five minutes from now",
        ));
    }
    let signature = header(SIGNATURE)
        .and_then(|s| s.strip_prefix("v1="))
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(Refusal::Unsigned("no X-Threadline-Signature: v1=<hex>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| Refusal::Unsigned("the inbound secret cannot key an HMAC"))?;
    mac.update(b"v1:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| Refusal::Unsigned("X-Threadline-Signature does not match"))
}

/// The signature headers of `body` at `timestamp` under `secret` (what a bridge sends).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> (String, String) {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(b"v1:");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b":");
    mac.update(body);
    (
        timestamp.to_string(),
        format!("v1={}", hex::encode(mac.finalize().into_bytes())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn signed(secret: &[u8], at: u64, body: &[u8]) -> HeaderMap {
        let (ts, sig) = sign(secret, at, body);
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP, HeaderValue::from_str(&ts).unwrap());
        headers.insert(SIGNATURE, HeaderValue::from_str(&sig).unwrap());
        headers
    }

    #[test]
    fn a_request_signed_with_the_secret_within_the_window_is_accepted() {
        let headers = signed(b"s3cret", 1_000, b"{}");
        assert!(verify(b"s3cret", &headers, b"{}", 1_000 + WINDOW_SECS).is_ok());
    }

    #[test]
    fn another_secret_a_changed_body_or_a_stale_timestamp_is_refused() {
        let headers = signed(b"s3cret", 1_000, b"{}");
        assert!(matches!(
            verify(b"other", &headers, b"{}", 1_000),
            Err(Refusal::Unsigned(_))
        ));
        assert!(matches!(
            verify(b"s3cret", &headers, b"{ }", 1_000),
            Err(Refusal::Unsigned(_))
        ));
        assert!(matches!(
            verify(b"s3cret", &headers, b"{}", 1_001 + WINDOW_SECS),
            Err(Refusal::Unsigned(_))
        ));
        assert!(matches!(
            verify(b"s3cret", &HeaderMap::new(), b"{}", 1_000),
            Err(Refusal::Unsigned(_))
        ));
    }
}
