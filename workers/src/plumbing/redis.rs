//! The Redis connection every worker uses: a `ConnectionManager` (reconnects in the
//! background) with deliberate timeouts instead of redis-rs's 500 ms default.

use crate::config::Config;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Connects, retrying until Redis answers or `shutdown` fires, so a worker may start
/// before its Redis does.
pub async fn connect(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis_client(config)?;
    let timeout = Duration::from_millis(config.redis_timeout_ms);
    let manager_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(6)
        .set_max_delay(Duration::from_secs(2));
    let mut attempt = 0u32;
    loop {
        let error = match client
            .get_connection_manager_with_config(manager_config.clone())
            .await
        {
            // One PING shows whether Redis accepts these credentials before any work
            // depends on it (without it, missing credentials surface as NOAUTH mid-run).
            Ok(mut manager) => match redis::cmd("PING").query_async::<()>(&mut manager).await {
                Ok(()) => return Ok(manager),
                Err(error) => error,
            },
            Err(error) => error,
        };
        // Wrong credentials or an untrusted certificate: retrying will not help.
        if refused(&error) || shutdown.is_cancelled() || attempt >= 120 {
            return Err(error);
        }
        attempt += 1;
        tracing::warn!(%error, attempt, "Redis is not reachable yet; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether Redis (or its TLS handshake) refused us, as opposed to not being up yet.
fn refused(error: &redis::RedisError) -> bool {
    let tls = super::tls_refused(error);
    tls || error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// The `redis::Client` for `config`: the URL, plus the ACL user and password and, for
/// `rediss://`, a custom CA and client certificate (README "Security"). Secrets given
/// separately override any in the URL.
pub fn redis_client(config: &Config) -> Result<redis::Client, redis::RedisError> {
    use redis::IntoConnectionInfo;
    let invalid = |what: &'static str, detail: String| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, what, detail))
    };
    let mut info = config.redis_url.as_str().into_connection_info()?;
    let password = config
        .redis_password()
        .map_err(|e| invalid("redis_password_file", e.to_string()))?;
    if config.redis_username.is_some() || password.is_some() {
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &config.redis_username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &password {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
    }
    let wants_tls = config.redis_tls_ca_file.is_some()
        || config.redis_tls_cert_file.is_some()
        || config.redis_tls_key_file.is_some();
    // redis-rs builds its rustls config from the process-wide provider (as reqwest does).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !wants_tls {
        return redis::Client::open(info);
    }
    let read = |setting: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| invalid(setting, format!("{}: {e}", path.display())))
    };
    let root_cert = config
        .redis_tls_ca_file
        .as_deref()
        .map(|path| read("cannot read redis_tls_ca_file", path))
        .transpose()?;
    let client_tls = match (&config.redis_tls_cert_file, &config.redis_tls_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("cannot read redis_tls_cert_file", cert)?,
            client_key: read("cannot read redis_tls_key_file", key)?,
        }),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                "redis_tls_cert_file and redis_tls_key_file go together",
                String::new(),
            ))
        }
    };
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
}
