//! The Bot API calls the listener makes: `getUpdates`, `setWebhook`, `deleteWebhook`. The
//! token is part of every URL, so no URL is ever logged or put in an error (reqwest's
//! errors are stripped of theirs).

use super::update::Update;
use crate::config::Config;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Telegram's answer envelope: `{ok, result}` or `{ok: false, error_code, description,
/// parameters}`.
#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// Why a call did not work.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No answer (connection refused, reset, timed out), or a 5xx: may pass.
    #[error("telegram did not answer: {0}")]
    Unreachable(String),
    /// 429: wait this long.
    #[error("telegram rate limit; retry after {0:?}")]
    RateLimited(Duration),
    /// 409 on `getUpdates`: another `getUpdates` runs for this bot (a second poller — a
    /// lease handing over, or another deployment with the same token) or a webhook is set.
    #[error("telegram conflict: {0}")]
    Conflict(String),
    /// Any other refusal (401 wrong token, 400 bad parameters): an operator must look.
    #[error("telegram refused ({status}): {description}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Telegram's description.
        description: String,
    },
}

/// Calls the Bot API at the configured base with the current token.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    config: Arc<Config>,
    api_base: String,
}

impl Api {
    /// An API client for `config`'s `[telegram]` settings.
    pub(crate) fn new(config: Arc<Config>, api_base: &str) -> Api {
        // rustls without a default provider: install ring once (ignored when installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("threadline/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Api {
            http,
            config,
            api_base: api_base.trim_end_matches('/').to_owned(),
        }
    }

    async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        // Re-read per call: a rotated token file applies to the next poll.
        let token = match self.config.token("telegram") {
            Some(Ok(t)) => t,
            Some(Err(e)) => return Err(ApiError::Unreachable(format!("token file: {e}"))),
            None => {
                return Err(ApiError::Refused {
                    status: 401,
                    description: "no telegram token configured".into(),
                })
            }
        };
        let url = format!("{}/bot{}/{method}", self.api_base, token.expose());
        let response = self
            .http
            .post(url)
            .timeout(timeout)
            .json(&params)
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))?;
        let answer: Option<Answer> = serde_json::from_slice(&body).ok();
        let description = answer
            .as_ref()
            .and_then(|a| a.description.clone())
            .unwrap_or_else(|| format!("HTTP {status}"));
        match (status, answer) {
            (
                200..=299,
                Some(Answer {
                    ok: true, result, ..
                }),
            ) => Ok(result.unwrap_or(Value::Null)),
            (429, answer) => {
                let secs = answer
                    .and_then(|a| a.parameters)
                    .and_then(|p| p.retry_after)
                    .unwrap_or(1);
                Err(ApiError::RateLimited(Duration::from_secs(secs.max(1))))
            }
            (409, _) => Err(ApiError::Conflict(description)),
            (500..=599, _) | (200..=299, _) => Err(ApiError::Unreachable(description)),
            (status, _) => Err(ApiError::Refused {
                status,
                description,
            }),
        }
    }

    /// Long-polls for updates from `offset` (confirming every update below it), waiting up
    /// to `wait` for one. → the updates as JSON (each read by the caller, so one it cannot
    /// read does not hide the others).
    pub(crate) async fn get_updates(
        &self,
        offset: Option<i64>,
        wait: Duration,
    ) -> Result<Vec<Value>, ApiError> {
        let mut params = json!({
            "timeout": wait.as_secs(),
            "allowed_updates": super::update::ALLOWED_UPDATES,
        });
        if let (Some(o), Some(obj)) = (offset, params.as_object_mut()) {
            obj.insert("offset".into(), json!(o));
        }
        // The HTTP timeout outlasts the long poll, so an idle poll is an empty answer.
        let result = self
            .call("getUpdates", params, wait + Duration::from_secs(10))
            .await?;
        match result {
            Value::Array(updates) => Ok(updates),
            other @ (Value::Null
            | Value::Bool(_)
            | Value::Number(_)
            | Value::String(_)
            | Value::Object(_)) => Err(ApiError::Unreachable(format!(
                "getUpdates answered no list: {}",
                other.to_string().chars().take(200).collect::<String>()
            ))),
        }
    }

    /// `deleteWebhook` without `drop_pending_updates`: what arrived meanwhile is polled.
    pub(crate) async fn delete_webhook(&self) -> Result<(), ApiError> {
        self.call("deleteWebhook", json!({}), Duration::from_secs(15))
            .await
            .map(drop)
    }

    /// `setWebhook` to `url` with `secret_token` and the listener's `allowed_updates`.
    pub(crate) async fn set_webhook(&self, url: &str, secret: &str) -> Result<(), ApiError> {
        let params = json!({
            "url": url,
            "secret_token": secret,
            "allowed_updates": super::update::ALLOWED_UPDATES,
        });
        self.call("setWebhook", params, Duration::from_secs(15))
            .await
            .map(drop)
    }
}

/// Reads one update of a batch; `None` when it is not an `Update` at all.
pub(crate) fn read(update: &Value) -> Option<Update> {
    serde_json::from_value(update.clone()).ok()
}
