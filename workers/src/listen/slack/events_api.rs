//! `POST /slack/events`: the Events API's Request URL (api.slack.com/apis/events-api).
//!
//! Order of work for one request: the signature (else 401, nothing read), the payload, then
//! for an event its taking, answered 200 only once the event is stored. Slack wants an answer
//! within 3 s ("Responding to events") and retries otherwise — immediately, after a minute,
//! after five ("Retries", with `X-Slack-Retry-Num` and `X-Slack-Retry-Reason`): an event
//! that cannot be taken within [`TAKE_BUDGET`] is answered 503 so that it is retried, never
//! 200 unstored. A retry of an event already taken is taken again and found a duplicate.

use super::event::{self, Payload};
use super::verify;
use super::{secret, take};
use crate::listen::Intake;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The path Slack is configured to POST to.
pub(super) const PATH: &str = "/slack/events";
/// How long taking one event may take before the answer goes out as 503: inside Slack's 3 s,
/// with room for the answer's way back.
pub(super) const TAKE_BUDGET: Duration = Duration::from_millis(2_500);

/// The Events API route, over `intake`.
pub(super) fn routes(intake: Intake) -> Router {
    Router::new().route(PATH, post(receive)).with_state(intake)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn receive(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> Response {
    let signing_secret = match secret(intake.ctx().config.listen_secret("slack"), "listen_secret") {
        Ok(secret) => secret,
        Err(e) => {
            // The operator must act: every event is refused (and Slack retries them).
            tracing::error!(error = %e, "slack events cannot be verified");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let verified = verify::verify(
        signing_secret.expose().as_bytes(),
        header(&headers, "x-slack-request-timestamp"),
        header(&headers, "x-slack-signature"),
        &body,
        now_secs(),
    );
    if let Err(refused) = verified {
        tracing::warn!(why = %refused, "a request to the slack events URL was refused");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let payload = match event::payload(&body) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::warn!(error = %e, "a signed slack request is no event payload");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    match payload {
        Payload::UrlVerification { challenge } => {
            Json(json!({ "challenge": challenge })).into_response()
        }
        Payload::Callback { event_id, inbound } => {
            let retry = header(&headers, "x-slack-retry-num");
            match tokio::time::timeout(TAKE_BUDGET, take(&intake, inbound)).await {
                Ok(Ok(taken)) => {
                    tracing::debug!(event_id, ?taken, retry, "slack event taken");
                    StatusCode::OK.into_response()
                }
                Ok(Err(e)) if e.is_retryable() => {
                    tracing::warn!(event_id, error = %e, "slack event not stored; Slack retries it");
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
                Ok(Err(e)) => {
                    // Retrying cannot change the outcome: 200, so Slack stops.
                    tracing::warn!(event_id, error = %e, "slack event refused");
                    StatusCode::OK.into_response()
                }
                Err(_elapsed) => {
                    tracing::warn!(event_id, "slack event not stored in time; Slack retries it");
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
            }
        }
        Payload::RateLimited => {
            tracing::warn!("slack is rate-limiting this app's events: some are dropped");
            StatusCode::OK.into_response()
        }
        Payload::Other(kind) => {
            tracing::debug!(kind, "slack payload type not read");
            StatusCode::OK.into_response()
        }
    }
}
