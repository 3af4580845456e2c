//! What keeps credentials out of logs, errors and `threadline config`: the [`Secret`] type,
//! which never formats its value, and URLs printed without their user info.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A credential, held by `secrecy` (zeroed when dropped). Its `Debug` never shows the
/// value, and it has no `Display`, so it cannot leak into logs or errors by formatting.
/// It serialises transparently: a configuration file is where a secret belongs.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    /// A secret holding `value` (empty means unset).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }
    /// The value, for the one place that sends it (an `Authorization` header, a connect).
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// Whether no value was given: an empty secret is an unset one.
    pub(crate) fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}
impl Eq for Secret {}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Accepts numbers too: figment parses `THREADLINE_NATS_PASSWORD=123456` as an integer,
/// which is still a password.
struct SecretVisitor;

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a secret string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

/// A URL without its user info (`scheme://<redacted>@host`), for messages, logs and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>@{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        (Some(_), Some(_)) | (Some(_), None) | (None, Some(_)) | (None, None) => url.to_owned(),
    }
}

/// [`redact_url`] for each URL of a comma-separated list (cluster seeds).
pub(crate) fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let mut c = Config::default();
        c.discord.token = s;
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn debug_hides_url_credentials_and_connection_secrets() {
        let c = Config {
            nats_url: "nats://svc:n4ts-pw@127.0.0.1:4222".into(),
            redis_url: "rediss://:r3dis-pw@127.0.0.1:6380".into(),
            nats_token: Some(Secret::new("n4ts-token")),
            redis_password: Some(Secret::new("r3dis-acl")),
            ..Config::default()
        };
        let printed = format!("{c:#?}");
        for secret in ["n4ts-pw", "r3dis-pw", "n4ts-token", "r3dis-acl"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("nats://<redacted>@127.0.0.1:4222"));
    }

    #[test]
    fn each_seed_of_a_url_list_loses_its_user_info() {
        assert_eq!(
            redact_urls("nats://a:pw@h1:4222, nats://h2:4222,"),
            "nats://<redacted>@h1:4222,nats://h2:4222"
        );
        assert_eq!(redact_url("no-scheme@host"), "no-scheme@host");
    }

    #[test]
    fn numeric_secrets_from_the_environment_are_strings() {
        let secret: Secret = serde_json::from_str("123456").expect("a number is a secret");
        assert_eq!(secret.expose(), "123456");
    }
}
