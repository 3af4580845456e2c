//! Loopback fake of a generic webhook receiver (the `webhook:<name>` channel):
//! stores JSON POSTs, honours `Idempotency-Key`, optionally checks a bearer token.
//!
//! This is the contract Threadline's webhook deliverer targets, not a real
//! product's API: `POST /hook/{name}` with any JSON body answers
//! `{"message_id"}`, plus a `conversation_id` when the body asks for
//! `"action": "create_thread"`.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{rejection::PathRejection, ConnectInfo, Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Value};

use super::{
    faulted, handle_methods, lock, reply, retry_after_header_secs, serve, wait_for_len, Common,
    ConnCtl, Platform, Server,
};

/// One accepted delivery (a repeated `Idempotency-Key` is not a new delivery).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDelivery {
    /// The `{name}` of `/hook/{name}`.
    pub name: String,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
    /// The JSON body as sent.
    pub body: Value,
    /// The bearer token, or the raw `Authorization` value if it was not `Bearer`.
    pub auth: Option<String>,
}

/// Handle to a running fake webhook receiver; dropping it shuts the server down.
pub struct FakeWebhook {
    server: Server,
    shared: Shared,
}

type Shared = super::Shared<WebhookState>;

impl FakeWebhook {
    /// Starts the fake on a free loopback port; no token is required.
    pub async fn start() -> FakeWebhook {
        let routes = Router::new()
            .route("/hook/{name}", post(receive))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed);
        let (server, shared) = serve(WebhookState::default(), routes).await;
        FakeWebhook { server, shared }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.server.url("")
    }

    /// `http://127.0.0.1:PORT/hook/{name}`, the URL to configure for `webhook:<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.base_url())
    }

    /// Accepted deliveries in arrival order, without idempotent repeats.
    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        lock(&self.shared).deliveries.clone()
    }

    /// Accepted deliveries with the instant each arrived.
    pub fn deliveries_with_times(&self) -> Vec<(WebhookDelivery, std::time::Instant)> {
        self.deliveries_with_times_since(0)
    }

    /// Like [`deliveries_with_times`](Self::deliveries_with_times), from the `from`-th
    /// accepted delivery on: a caller that measures in rounds copies only its round.
    pub fn deliveries_with_times_since(
        &self,
        from: usize,
    ) -> Vec<(WebhookDelivery, std::time::Instant)> {
        let st = lock(&self.shared);
        st.deliveries
            .iter()
            .cloned()
            .zip(st.arrived.iter().copied())
            .skip(from)
            .collect()
    }

    /// How many deliveries were accepted (cheaper than `deliveries().len()`).
    pub fn delivery_count(&self) -> usize {
        lock(&self.shared).deliveries.len()
    }

    /// How many requests repeated an already accepted `Idempotency-Key`.
    pub fn duplicate_keys_seen(&self) -> usize {
        lock(&self.shared).duplicate_keys_seen
    }

    /// With `Some(token)`, POSTs without `Authorization: Bearer <token>` get 401.
    pub fn require_token(&self, token: Option<&str>) {
        lock(&self.shared).required_token = token.map(str::to_owned);
    }

    /// Waits until at least `n` deliveries are stored or `timeout` passes, and
    /// returns whatever is stored then (the caller asserts on the count).
    pub async fn wait_for_deliveries(&self, n: usize, timeout: Duration) -> Vec<WebhookDelivery> {
        wait_for_len(n, timeout, || self.deliveries()).await
    }
}

handle_methods!(FakeWebhook, faults: "webhook POST");

#[derive(Default)]
struct WebhookState {
    common: Common,
    required_token: Option<String>,
    deliveries: Vec<WebhookDelivery>,
    /// When each delivery arrived (benchmark latency), parallel to `deliveries`.
    arrived: Vec<std::time::Instant>,
    /// First response per (hook name, key), replayed for repeats: keys are
    /// scoped to one receiver, as each hook is a separate endpoint.
    responses: HashMap<(String, String), Value>,
    duplicate_keys_seen: usize,
}

impl WebhookState {
    fn accept(
        &mut self,
        name: &str,
        key: Option<String>,
        auth: Option<String>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return (StatusCode::BAD_REQUEST, json!({ "error": "invalid_json" }));
        };
        if let Some(k) = &key {
            if let Some(first) = self.responses.get(&(name.to_owned(), k.clone())) {
                self.duplicate_keys_seen += 1;
                return (StatusCode::OK, first.clone());
            }
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let response = if body.get("action").and_then(Value::as_str) == Some("create_thread") {
            json!({ "conversation_id": uuid::Uuid::new_v4().to_string(), "message_id": message_id })
        } else {
            json!({ "message_id": message_id })
        };
        if let Some(k) = &key {
            self.responses
                .insert((name.to_owned(), k.clone()), response.clone());
        }
        self.deliveries.push(WebhookDelivery {
            name: name.to_owned(),
            idempotency_key: key,
            body,
            auth,
        });
        self.arrived.push(std::time::Instant::now());
        (StatusCode::OK, response)
    }
}

async fn receive(
    State(shared): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path(name)) = path else {
        return not_found().await;
    };
    let auth = match headers.get(header::AUTHORIZATION).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(v)) => Some(v.strip_prefix("Bearer ").unwrap_or(v).to_owned()),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "invalid_authorization"),
    };
    let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
        None => None,
        Some(Ok(v)) if !v.trim().is_empty() => Some(v.to_owned()),
        Some(_) => return error(StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
    };
    let authorized = match &lock(&shared).required_token {
        None => true,
        Some(required) => auth.as_deref() == Some(required.as_str()),
    };
    // Checked before the fault source: a rejected request must not use up a
    // fault meant for a real attempt.
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    faulted(&shared, &conn, |st| {
        reply(st.accept(&name, key, auth, &body))
    })
    .await
}

impl Platform for WebhookState {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn rate_limited(retry_after_ms: u64) -> Response {
        let body = json!({ "error": "rate_limited", "retry_after_ms": retry_after_ms });
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_header_secs(retry_after_ms)),
        );
        resp
    }

    fn server_error() -> Response {
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal")
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
}

fn error(status: StatusCode, code: &str) -> Response {
    reply((status, json!({ "error": code })))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fakes::{test_client as client, Fault};

    async fn post(
        c: &reqwest::Client,
        url: &str,
        key: Option<&str>,
        token: Option<&str>,
        body: Value,
    ) -> (u16, HeaderMap, Value) {
        let mut req = c.post(url).json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.expect("json body"))
    }

    #[tokio::test]
    async fn idempotency_key_dedup() {
        let fake = FakeWebhook::start().await;
        let c = client();
        let url = fake.url("ops");
        let body = json!({ "text": "done", "event_id": "e1" });
        let (s1, _, first) = post(&c, &url, Some("k-1"), Some("tok"), body.clone()).await;
        let (s2, _, second) = post(&c, &url, Some("k-1"), Some("tok"), body.clone()).await;
        assert_eq!((s1, s2), (200, 200));
        assert_eq!(first, second);
        assert!(first["message_id"].is_string());
        assert_eq!(fake.duplicate_keys_seen(), 1);
        assert_eq!(
            fake.deliveries(),
            vec![WebhookDelivery {
                name: "ops".to_owned(),
                idempotency_key: Some("k-1".to_owned()),
                body: body.clone(),
                auth: Some("tok".to_owned()),
            }]
        );

        // Other keys, other hooks and key-less posts are all new deliveries.
        post(&c, &url, Some("k-2"), None, body.clone()).await;
        post(&c, &fake.url("other"), Some("k-1"), None, body.clone()).await;
        post(&c, &url, None, None, body.clone()).await;
        post(&c, &url, None, None, body).await;
        assert_eq!(fake.deliveries().len(), 5);
        assert_eq!(fake.duplicate_keys_seen(), 1);
        assert_eq!(fake.request_count(), 6);
    }

    #[tokio::test]
    async fn create_thread_returns_conversation() {
        let fake = FakeWebhook::start().await;
        let c = client();
        let (s, _, r) = post(
            &c,
            &fake.url("ops"),
            None,
            None,
            json!({ "action": "create_thread", "name": "child" }),
        )
        .await;
        assert_eq!(s, 200);
        assert!(r["conversation_id"].is_string());
        assert!(r["message_id"].is_string());
    }

    #[tokio::test]
    async fn required_token() {
        let fake = FakeWebhook::start().await;
        let c = client();
        fake.require_token(Some("secret"));
        fake.push_fault(Fault::ServerError);
        let (s, _, b) = post(&c, &fake.url("ops"), None, Some("nope"), json!({})).await;
        assert_eq!((s, b), (401, json!({ "error": "unauthorized" })));
        // The rejected request left the fault for the next real attempt.
        let (s, _, b) = post(&c, &fake.url("ops"), None, Some("secret"), json!({})).await;
        assert_eq!((s, b), (500, json!({ "error": "internal" })));
        let (s, _, _) = post(&c, &fake.url("ops"), None, Some("secret"), json!({})).await;
        assert_eq!(s, 200);
        assert_eq!(fake.deliveries().len(), 1);
    }

    #[tokio::test]
    async fn faults() {
        let fake = FakeWebhook::start().await;
        let c = client();
        let url = fake.url("ops");
        fake.push_fault(Fault::RateLimited {
            retry_after_ms: 1500,
        });
        let (s, h, b) = post(&c, &url, Some("k"), None, json!({ "n": 1 })).await;
        assert_eq!(s, 429);
        assert_eq!(
            h.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
        assert_eq!(
            b,
            json!({ "error": "rate_limited", "retry_after_ms": 1500 })
        );
        assert!(fake.deliveries().is_empty());

        // A hung request is stored; its retry with the same key is a duplicate.
        fake.push_fault(Fault::AcceptThenHang { hold_ms: 2_000 });
        let err = c
            .post(&url)
            .header("Idempotency-Key", "k")
            .timeout(Duration::from_millis(300))
            .json(&json!({ "n": 1 }))
            .send()
            .await
            .expect_err("the fake must not answer");
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(
            fake.wait_for_deliveries(1, Duration::from_secs(1))
                .await
                .len(),
            1
        );
        let (s, _, _) = post(&c, &url, Some("k"), None, json!({ "n": 1 })).await;
        assert_eq!(s, 200);
        assert_eq!(fake.deliveries().len(), 1);
        assert_eq!(fake.duplicate_keys_seen(), 1);

        let resp = c
            .post(&url)
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 400);
    }
}
