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
    let client = redis::Client::open(config.redis_url.as_str())?;
    let timeout = Duration::from_millis(config.redis_timeout_ms);
    let manager_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(6)
        .set_max_delay(Duration::from_secs(2));
    let mut attempt = 0u32;
    loop {
        match client
            .get_connection_manager_with_config(manager_config.clone())
            .await
        {
            Ok(manager) => return Ok(manager),
            Err(error) if !shutdown.is_cancelled() && attempt < 120 => {
                attempt += 1;
                tracing::warn!(%error, attempt, "Redis is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}
