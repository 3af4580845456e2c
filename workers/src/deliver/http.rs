//! HTTP plumbing shared by the adapters: the client, and the one exhaustive mapping from a
//! response to retry / wait / give up (429 → wait `Retry-After`; 408 and 5xx → retry with
//! backoff; other 4xx → permanent).

use super::adapter::PlatformError;
use crate::plumbing::trace::PlatformCall;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::time::Duration;

/// A client for one adapter. Timeouts bound every call so a claim's lease outlives it.
pub fn client(timeout: Duration) -> reqwest::Client {
    // rustls without a default provider: install ring once (async-nats uses ring too, so no
    // second crypto library is built). Ignored when another caller installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("threadline/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A platform's answer, read whole.
pub struct Answered {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// Sends `request` and reads the whole answer; a request that got no answer is a transport
/// error (see [`transport_error`]).
///
/// The call is a child span of the event being handled, and carries its `traceparent`.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Answered, PlatformError> {
    let (client, request) = request.build_split();
    let mut request = request.map_err(transport_error)?;
    let call = PlatformCall::start(
        request.method().as_str(),
        request.url().host_str().unwrap_or_default(),
    );
    for (name, value) in &call.headers {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
            request.headers_mut().insert(*name, value);
        }
    }
    let answered = async {
        let mut response = client.execute(request).await.map_err(transport_error)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let body = response.bytes().await.map_err(transport_error)?;
        Ok(Answered {
            status,
            headers,
            body,
        })
    }
    .await;
    call.finish(answered.as_ref().ok().map(|a| a.status.as_u16()));
    answered
}

/// Classifies a non-success response. `platform_code` and `retry_after_body` come from the
/// platform's error body, when it has them; `permanent_code` names a permanent error.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    retry_after_body: Option<Duration>,
    message: String,
    permanent_code: impl FnOnce() -> String,
) -> PlatformError {
    match status.as_u16() {
        429 => PlatformError::RateLimited {
            after: retry_after_body
                .or_else(|| retry_after_header(headers))
                .unwrap_or(Duration::from_secs(1)),
        },
        408 | 500..=599 => PlatformError::Transient {
            message: format!("{status}: {message}"),
            // The platform may have stored the message before failing.
            maybe_applied: true,
        },
        400..=499 => PlatformError::Permanent {
            code: permanent_code(),
            message: format!("{status}: {message}"),
        },
        // 1xx/2xx never reach here; 3xx means a misconfigured base URL.
        100..=399 | 600..=u16::MAX => PlatformError::Permanent {
            code: "unexpected_status".into(),
            message: format!("{status}: {message}"),
        },
        0..=99 => PlatformError::Permanent {
            code: "unexpected_status".into(),
            message: format!("{status}: {message}"),
        },
    }
}

/// `Retry-After` in (possibly fractional) seconds.
pub fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A failed request (no response): connection failures happen before anything was sent;
/// a timeout may come after the platform acted.
pub fn transport_error(error: reqwest::Error) -> PlatformError {
    PlatformError::Transient {
        maybe_applied: !error.is_connect(),
        message: without_url(error).to_string(),
    }
}

/// reqwest errors carry the URL, which for webhooks may embed a secret path.
fn without_url(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> String {
        "bad_request".into()
    }

    #[test]
    fn statuses_map_to_retry_wait_or_give_up() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "0.25".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, None, String::new(), code),
            PlatformError::RateLimited {
                after: Duration::from_millis(250)
            }
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &h, None, String::new(), code),
            PlatformError::Transient { .. }
        ));
        assert!(matches!(
            classify(StatusCode::REQUEST_TIMEOUT, &h, None, String::new(), code),
            PlatformError::Transient { .. }
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, &h, None, String::new(), code),
            PlatformError::Permanent { code, .. } if code == "bad_request"
        ));
    }
}
