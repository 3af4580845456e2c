//! HTTP plumbing shared by the adapters: the client, and the one exhaustive mapping from a
//! response to retry / wait / give up (429 → wait `Retry-After`; 408 and 5xx → retry with
//! backoff; other 4xx → permanent).

use super::adapter::PlatformError;
use crate::io::trace::PlatformCall;
use crate::model::platform_codes::PermanentCode;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::time::Duration;

/// A client for one adapter. Timeouts bound every call so a claim's lease outlives it.
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    // rustls without a default provider: install ring once (async-nats uses ring too, so no
    // second crypto library is built). Ignored when another caller installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // A followed 301/302/303 re-sends a POST as a GET without its body: whatever the
        // new location answers, the post was not made, and a 2xx would report it made.
        // A redirect is a misconfigured URL; `classify` says so.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("threadline/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A platform's answer, read whole.
pub(crate) struct Answered {
    /// The response's status.
    pub(crate) status: StatusCode,
    /// The response's headers.
    pub(crate) headers: HeaderMap,
    /// The response's body.
    pub(crate) body: bytes::Bytes,
}

/// Sends `request` and reads the whole answer; a request that got no answer is a transport
/// error (see [`transport_error`]).
///
/// The call is a child span of the event being handled, and carries its `traceparent`.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Answered, PlatformError> {
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
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    retry_after_body: Option<Duration>,
    message: String,
    permanent_code: impl FnOnce() -> PermanentCode,
) -> PlatformError {
    // The platform's words end up in `tl.out.failed`, dead letters and logs: bounded.
    let message = threadline_schemas::bounded(&message, threadline_schemas::MAX_REASON_CHARS);
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
        // Redirects are not followed (see `client`): the configured URL is not the one the
        // platform answers at. Only the new location's origin is named: a webhook's path
        // may hold a secret.
        300..=399 => PlatformError::Permanent {
            code: PermanentCode::Redirected,
            message: format!(
                "{status}: the platform redirects to {}; configure the URL it answers at",
                redirect_origin(headers)
            ),
        },
        // 1xx/2xx never reach here.
        100..=299 | 600..=u16::MAX => PlatformError::Permanent {
            code: PermanentCode::UnexpectedStatus,
            message: format!("{status}: {message}"),
        },
        0..=99 => PlatformError::Permanent {
            code: PermanentCode::UnexpectedStatus,
            message: format!("{status}: {message}"),
        },
    }
}

/// The scheme, host and port of a redirect's `Location` (relative: "the same host").
fn redirect_origin(headers: &HeaderMap) -> String {
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    match location.map(reqwest::Url::parse) {
        Some(Ok(url)) => url.origin().ascii_serialization(),
        Some(Err(_)) => "another path on the same host".into(),
        None => "an unnamed location".into(),
    }
}

/// `Retry-After` in (possibly fractional) seconds.
pub(crate) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A failed request (no response): connection failures happen before anything was sent;
/// a timeout may come after the platform acted.
pub(crate) fn transport_error(error: reqwest::Error) -> PlatformError {
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

    fn code() -> PermanentCode {
        PermanentCode::Rejected
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
            PlatformError::Permanent {
                code: PermanentCode::Rejected,
                ..
            }
        ));
    }

    #[test]
    fn a_redirect_is_a_misconfigured_url_named_by_its_origin_only() {
        let mut h = HeaderMap::new();
        h.insert(
            "location",
            "https://hooks.example.com:8443/secret-path?t=1"
                .parse()
                .unwrap(),
        );
        let error = classify(StatusCode::FOUND, &h, None, String::new(), code);
        let PlatformError::Permanent {
            code: named,
            message,
        } = error
        else {
            panic!("{error:?}");
        };
        assert_eq!(named, PermanentCode::Redirected);
        assert!(
            message.contains("https://hooks.example.com:8443") && !message.contains("secret"),
            "{message}"
        );
        h.insert("location", "/elsewhere".parse().unwrap());
        let error = classify(StatusCode::MOVED_PERMANENTLY, &h, None, String::new(), code);
        assert!(
            matches!(&error, PlatformError::Permanent { code: named, message }
                if *named == PermanentCode::Redirected && message.contains("same host")),
            "{error:?}"
        );
    }
}
