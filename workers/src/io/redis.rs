//! The Redis connection every worker uses: a `ConnectionManager` (reconnects in the
//! background) with deliberate timeouts instead of redis-rs's 500 ms default, or a Redis
//! Cluster connection (`RedisConnection` is either, for the store).

use crate::config::Config;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, ServerErrorKind, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Connects, retrying until Redis answers or `shutdown` fires, so a worker may start
/// before its Redis does.
pub(crate) async fn connect(
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

/// The store's connection: one Redis server, or a Redis Cluster (`redis_cluster = true`).
/// Cheap to clone; both kinds multiplex one connection per server.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server, reconnecting by itself.
    Single(ConnectionManager),
    /// A Redis Cluster, following slot redirections by itself.
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
pub(crate) async fn connect_cluster(
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
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(6);
    // The same ACL credentials as a single server (docs/security.md); every node shares them.
    if let Some(user) = &config.redis_username {
        builder = builder.username(user.clone());
    }
    let password = config.redis_password().map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "redis_password_file",
            e.to_string(),
        ))
    })?;
    if let Some(password) = password {
        builder = builder.password(password.expose());
    }
    let client = builder.build()?;
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

impl RedisConnection {
    /// Every key matching `pattern` whose type is `kind` (`hash`, …), by cursor `SCAN` in
    /// steps of `count` keys (never `KEYS`, which blocks the server). On a cluster a SCAN
    /// covers one node, so every primary is scanned in turn.
    pub(crate) async fn scan_keys(
        &self,
        pattern: &str,
        kind: &str,
        count: usize,
    ) -> redis::RedisResult<Vec<String>> {
        let scan = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count)
                .arg("TYPE")
                .arg(kind);
            cmd
        };
        let mut found = Vec::new();
        match self.clone() {
            RedisConnection::Single(mut conn) => {
                let mut cursor = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) =
                        scan(cursor).query_async(&mut conn).await?;
                    found.extend(keys);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            RedisConnection::Cluster(mut conn) => {
                for (host, port) in primaries(&mut conn).await? {
                    let mut cursor = 0;
                    loop {
                        let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let answer = conn.route_command(scan(cursor), node).await?;
                        let (next, keys): (u64, Vec<String>) = redis::from_redis_value(answer)?;
                        found.extend(keys);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
        }
        Ok(found)
    }
}

/// The primaries of a cluster, from `CLUSTER SLOTS` (each slot range names its primary
/// first: `[start, end, [host, port, id], replicas…]`).
async fn primaries(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut nodes = Vec::new();
    for range in ranges {
        let Some(primary) = range.into_iter().nth(2) else {
            continue;
        };
        let primary: Vec<Value> = redis::from_redis_value(primary)?;
        let (Some(host), Some(port)) = (primary.first(), primary.get(1)) else {
            continue;
        };
        let node: (String, u16) = (
            redis::from_redis_value(host.clone())?,
            redis::from_redis_value(port.clone())?,
        );
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }
    Ok(nodes)
}

/// Whether Redis (or its TLS handshake) refused us, as opposed to not being up yet.
fn refused(error: &redis::RedisError) -> bool {
    let tls = super::tls_refused(error);
    tls || error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// The `redis::Client` for `config`: the URL, plus the ACL user and password and, for
/// `rediss://`, a custom CA and client certificate (docs/security.md). Secrets given
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
