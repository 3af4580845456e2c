//! Slack's request signing: `X-Slack-Signature` is `v0=` and the hex HMAC-SHA256, keyed
//! with the app's signing secret, of `v0:{X-Slack-Request-Timestamp}:{raw body}`; a request
//! whose timestamp is more than five minutes from now is refused as a possible replay
//! (api.slack.com/authentication/verifying-requests-from-slack, "Validating a request").

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signature scheme version Slack sends (the `v0` of `v0=…`).
const VERSION: &str = "v0";
/// Slack's documented replay window, in seconds, either side of now.
pub(crate) const REPLAY_WINDOW_SECS: u64 = 5 * 60;

/// Why a request is not taken as Slack's. Every case is answered 401 and nothing is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// No `X-Slack-Signature` or no `X-Slack-Request-Timestamp`.
    #[error("the request carries no Slack signature")]
    Unsigned,
    /// The timestamp is no number of seconds.
    #[error("the request timestamp is no Unix time")]
    BadTimestamp,
    /// The timestamp is outside the replay window.
    #[error("the request timestamp is outside Slack's five-minute window")]
    Stale,
    /// The signature is not the one the signing secret makes.
    #[error("the request signature does not match the signing secret")]
    BadSignature,
}

/// Checks one request: `timestamp` and `signature` are the two headers as sent, `body` the
/// raw bytes (before any parsing: the signature covers them exactly), `now_secs` Unix time.
pub(crate) fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), Refused> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(Refused::Unsigned);
    };
    let sent: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refused::BadTimestamp)?;
    if sent.abs_diff(now_secs) > REPLAY_WINDOW_SECS {
        return Err(Refused::Stale);
    }
    let digest = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(Refused::BadSignature)?;
    let mut mac = keyed(secret);
    mac.update(VERSION.as_bytes());
    mac.update(b":");
    mac.update(timestamp.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time: no timing tells how much of a guess matched.
    mac.verify_slice(&digest).map_err(|_| Refused::BadSignature)
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Slack's "Verifying requests from Slack" page: its secret,
    /// timestamp, body and the signature it shows.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const NOW: u64 = 1_531_420_618;

    fn check(ts: Option<&str>, sig: Option<&str>, body: &str, now: u64) -> Result<(), Refused> {
        verify(SECRET.as_bytes(), ts, sig, body.as_bytes(), now)
    }

    #[test]
    fn slacks_own_example_request_verifies() {
        assert_eq!(check(Some(TIMESTAMP), Some(SIGNATURE), BODY, NOW), Ok(()));
        assert_eq!(
            check(Some(TIMESTAMP), Some(SIGNATURE), BODY, NOW + 299),
            Ok(())
        );
        assert_eq!(
            check(Some(TIMESTAMP), Some(SIGNATURE), BODY, NOW - 300),
            Ok(())
        );
    }

    #[test]
    fn an_unsigned_request_is_refused() {
        assert_eq!(
            check(None, Some(SIGNATURE), BODY, NOW),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            check(Some(TIMESTAMP), None, BODY, NOW),
            Err(Refused::Unsigned)
        );
    }

    #[test]
    fn a_request_outside_the_five_minute_window_is_refused_even_when_signed() {
        assert_eq!(
            check(Some(TIMESTAMP), Some(SIGNATURE), BODY, NOW + 301),
            Err(Refused::Stale)
        );
        assert_eq!(
            check(Some(TIMESTAMP), Some(SIGNATURE), BODY, NOW - 301),
            Err(Refused::Stale)
        );
        assert_eq!(
            check(Some("yesterday"), Some(SIGNATURE), BODY, NOW),
            Err(Refused::BadTimestamp)
        );
    }

    #[test]
    fn a_changed_body_timestamp_secret_or_scheme_breaks_the_signature() {
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            check(Some(TIMESTAMP), Some(SIGNATURE), &tampered, NOW),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(Some("1531420619"), Some(SIGNATURE), BODY, NOW),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(
                b"another secret",
                Some(TIMESTAMP),
                Some(SIGNATURE),
                BODY.as_bytes(),
                NOW
            ),
            Err(Refused::BadSignature)
        );
        let v1 = SIGNATURE.replace("v0=", "v1=");
        assert_eq!(
            check(Some(TIMESTAMP), Some(&v1), BODY, NOW),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(Some(TIMESTAMP), Some("v0=not-hex"), BODY, NOW),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(Some(TIMESTAMP), Some(&SIGNATURE[..40]), BODY, NOW),
            Err(Refused::BadSignature)
        );
    }
}
