//! The Redis connection every worker uses: a `ConnectionManager` (reconnects in the
//! background) with deliberate timeouts instead of redis-rs's 500 ms default, or a Redis
//! Cluster connection (`RedisConnection` is either, for the store).

use crate::config::Config;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, ServerErrorKind, Value};
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

/// The store's connection: one Redis server, or a Redis Cluster (`redis_cluster = true`).
/// Cheap to clone; both kinds multiplex one connection per server.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Connects to what the configuration names: a Redis Cluster through its seed nodes, or a
/// single server.
pub async fn connect_store(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<RedisConnection, redis::RedisError> {
    if config.redis_cluster {
        connect_cluster(config, shutdown)
            .await
            .map(RedisConnection::Cluster)
    } else {
        connect(config, shutdown).await.map(RedisConnection::Single)
    }
}

/// Connects to a Redis Cluster through the comma-separated seed nodes of `redis_url`,
/// retrying until one answers or `shutdown` fires. The client learns the slot map from
/// the seeds and follows `MOVED`/`ASK` redirections itself.
pub async fn connect_cluster(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<ClusterConnection, redis::RedisError> {
    let seeds: Vec<&str> = config
        .redis_url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    let timeout = Duration::from_millis(config.redis_timeout_ms);
    let client = ClusterClientBuilder::new(seeds)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(6)
        .build()?;
    let mut attempt = 0u32;
    loop {
        match client.get_async_connection().await {
            Ok(connection) => return Ok(connection),
            Err(error) if !shutdown.is_cancelled() && attempt < 120 => {
                attempt += 1;
                tracing::warn!(%error, attempt, "Redis Cluster is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    /// On a cluster, a plain (non-`MULTI`) pipeline whose keys live in several slots is
    /// refused by the client before anything is sent. Such a pipeline only batches round
    /// trips — it was never atomic — so it is run command by command, in order, instead.
    /// A `MULTI` pipeline across slots stays an error: atomicity cannot span slots.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(conn) => Box::pin(async move {
                match conn.req_packed_commands(pipeline, offset, count).await {
                    Err(error)
                        if !pipeline.is_transaction()
                            && error.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot) =>
                    {
                        let mut values = Vec::with_capacity(pipeline.len());
                        for cmd in pipeline.cmd_iter() {
                            values.push(conn.req_packed_command(cmd).await?);
                        }
                        Ok(values.into_iter().skip(offset).take(count).collect())
                    }
                    other => other,
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(conn) => conn.get_db(),
            RedisConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        RedisConnection::Single(conn)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(conn: ClusterConnection) -> Self {
        RedisConnection::Cluster(conn)
    }
}
