//! Real `nats-server` and `redis-server` processes for tests: free loopback ports, a private store, killed on drop.
//!
//! Modelled on the nats.rs `nats-server` test crate. Every server gets its own temporary
//! directory (config, data, log) and its own ports, so tests run in parallel and never touch
//! the default 4222/6379. `restart()` keeps the port and the data directory, which is what
//! fault tests need: JetStream streams and Redis AOF data survive a SIGKILL.

/// Test CAs and certificates (PEM files) for NATS and Redis TLS.
pub mod tls;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a server may take to answer after it was spawned before the test gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// Fresh-port attempts in `start()`: a port from [`free_port`] can be taken by someone else
/// between our probe and the server's bind.
const START_ATTEMPTS: usize = 5;
/// Same-port attempts in `start_again()`: the old socket may take a moment to be released.
const RESTART_ATTEMPTS: usize = 20;
/// Pause between same-port attempts.
const RESTART_PAUSE: Duration = Duration::from_millis(250);
/// Lines of the server log quoted in a start-up panic.
const LOG_TAIL_LINES: usize = 40;

/// Returns a loopback TCP port that was free a moment ago.
///
/// The port is only reserved while the probe listener lives, so a caller that binds later can
/// lose a race; the servers in this module retry with a new port when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the probe listener")
        .port()
}

/// A `nats-server` with JetStream (file store) on free loopback ports, killed when dropped.
pub struct NatsServer {
    /// The child process; declared first so it is killed before `dir` is removed.
    process: ServerProcess,
    /// Client port, kept across restarts so existing clients can reconnect.
    port: u16,
    /// Monitoring port, used for the `/healthz` readiness probe.
    monitor_port: u16,
    /// Config, JetStream store and log; lives as long as the server so state survives restarts.
    dir: TempDir,
    /// Appended to the generated config (`NatsOptions::extra_config`).
    extra_config: String,
}

/// Extra settings for [`NatsServer::start_with`] (security tests).
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// NATS config text appended to the generated config: `authorization { … }`,
    /// `accounts { … }`, `tls { … }`. `{port}` is replaced with the client port.
    pub extra_config: String,
}

impl NatsServer {
    /// Starts a JetStream-enabled server on fresh free ports with an empty file store.
    ///
    /// Panics (with the server's log tail) if it cannot be started.
    pub async fn start() -> NatsServer {
        NatsServer::start_with(NatsOptions::default()).await
    }

    /// [`start`](Self::start) with authentication, accounts or TLS configured.
    pub async fn start_with(options: NatsOptions) -> NatsServer {
        let binary = find_binary("nats-server", "THREADLINE_TEST_NATS_SERVER");
        let dir = tempfile::Builder::new()
            .prefix("threadline-nats-")
            .tempdir()
            .expect("create a temp dir for nats-server");
        let mut server = NatsServer {
            process: ServerProcess::new("nats-server", binary, dir.path().join("nats-server.log")),
            port: 0,
            monitor_port: 0,
            dir,
            extra_config: options.extra_config,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            server.monitor_port = free_port();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(failure) => {
                    server.process.kill().await;
                    if attempt == START_ATTEMPTS || !failure.may_retry() {
                        server.process.give_up(&failure, "start");
                    }
                    tracing::debug!(attempt, %failure, "nats-server did not start; retrying on new ports");
                }
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// Client URL, e.g. `nats://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Monitoring endpoint, e.g. `http://127.0.0.1:8222` (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// PID of the running server, `None` while it is killed.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server with SIGKILL (no clean shutdown, like a crash) and reaps it.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts the server again on the same port with the same store, so JetStream state survives.
    ///
    /// Kills the current process first if it is still running.
    pub async fn start_again(&mut self) {
        self.process.kill().await;
        for attempt in 1..=RESTART_ATTEMPTS {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(failure) => {
                    self.process.kill().await;
                    if attempt == RESTART_ATTEMPTS || !failure.may_retry() {
                        self.process.give_up(&failure, "restart");
                    }
                    tracing::debug!(attempt, %failure, port = self.port, "nats-server did not restart; port may still be held");
                    tokio::time::sleep(RESTART_PAUSE).await;
                }
            }
        }
    }

    /// Crash-restart: [`kill`](Self::kill) then [`start_again`](Self::start_again).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start_again().await;
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let config = self.write_config();
        self.process
            .spawn(vec!["-c".into(), config.into_os_string()])
            .map_err(StartFailure::Spawn)?;
        let (port, monitor_port) = (self.port, self.monitor_port);
        // The monitor comes up before JetStream and the client listener, so both are checked:
        // once clients are accepted, JetStream state has been recovered.
        self.process
            .wait_ready(Instant::now() + READY_TIMEOUT, || async move {
                nats_healthy(monitor_port).await && nats_greets(port).await
            })
            .await?;
        tracing::debug!(pid = ?self.pid(), port = self.port, "nats-server ready");
        Ok(())
    }

    /// Writes the config for the current ports; the store path never changes.
    fn write_config(&self) -> PathBuf {
        let store = self.dir.path().join("store");
        // 8MB, not the 1MB default: Threadline enforces its own 1 MiB event limit (dead letter
        // instead of a bare publish error), and tests publish oversized events to prove it.
        let config = format!(
            "listen: 127.0.0.1:{port}\n\
             http: 127.0.0.1:{monitor}\n\
             max_payload: 8MB\n\
             jetstream {{\n  store_dir: {store}\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n",
            port = self.port,
            monitor = self.monitor_port,
            store = nats_quote(&store),
        );
        let config = config + &self.extra_config.replace("{port}", &self.port.to_string());
        let path = self.dir.path().join("nats-server.conf");
        std::fs::write(&path, config).expect("write nats-server config");
        path
    }
}

/// Overrides `appendfsync` of the Redis servers this process starts (the benchmark's
/// `--appendfsync`).
pub const APPENDFSYNC_ENV: &str = "THREADLINE_TEST_REDIS_APPENDFSYNC";

/// The listpack settings of the compact Redis layout, as in infra/redis.conf (a test that
/// needs Redis's defaults passes them again in `RedisOptions::args`: later ones win).
fn listpack_args() -> Vec<OsString> {
    threadline::store::layout::REDIS_SETTINGS
        .iter()
        .flat_map(|(name, value)| [format!("--{name}").into(), value.to_string().into()])
        .collect()
}

/// A `redis-server` with AOF persistence on a free loopback port, killed when dropped.
pub struct RedisServer {
    /// The child process; declared first so it is killed before `dir` is removed.
    process: ServerProcess,
    /// Port, kept across restarts so existing clients can reconnect.
    port: u16,
    /// Data directory (AOF) and log; lives as long as the server so data survives restarts.
    dir: TempDir,
    /// Extra arguments and TLS (`RedisOptions`).
    options: RedisOptions,
    /// The TLS port when `options.tls` is set, else 0.
    tls_port: u16,
}

/// Extra settings for [`RedisServer::start_with`] (security tests).
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Appended to the command line, e.g. ACL users:
    /// `["--user", "tl", "on", ">pw", "~*", "&*", "+@all", "--user", "default", "off"]`.
    pub args: Vec<String>,
    /// Also serve TLS on a second free port (the plain port stays, for readiness probes).
    pub tls: Option<RedisTls>,
}

/// PEM files for `--tls-port`.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// The server's certificate (`--tls-cert-file`).
    pub cert_file: PathBuf,
    /// Its private key (`--tls-key-file`).
    pub key_file: PathBuf,
    /// The CA clients' certificates are checked against (Redis requires one).
    pub ca_file: PathBuf,
    /// `--tls-auth-clients`: whether clients must present a certificate.
    pub auth_clients: bool,
}

impl RedisServer {
    /// Starts a server on a fresh free port with `appendonly yes`, `appendfsync always` and no RDB snapshots.
    ///
    /// Panics (with the server's log tail) if it cannot be started.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default()).await
    }

    /// `rediss://` URL of the TLS port (`RedisOptions::tls`).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    /// [`start`](Self::start) with ACL users or TLS configured.
    pub async fn start_with(options: RedisOptions) -> RedisServer {
        let binary = find_binary("redis-server", "THREADLINE_TEST_REDIS_SERVER");
        let dir = tempfile::Builder::new()
            .prefix("threadline-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        let mut server = RedisServer {
            process: ServerProcess::new(
                "redis-server",
                binary,
                dir.path().join("redis-server.log"),
            ),
            port: 0,
            dir,
            options,
            tls_port: 0,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            if server.options.tls.is_some() {
                server.tls_port = free_port();
            }
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(failure) => {
                    server.process.kill().await;
                    if attempt == START_ATTEMPTS || !failure.may_retry() {
                        server.process.give_up(&failure, "start");
                    }
                    tracing::debug!(attempt, %failure, "redis-server did not start; retrying on a new port");
                }
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// Client URL, e.g. `redis://127.0.0.1:40931`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PID of the running server, `None` while it is killed.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server with SIGKILL (no clean shutdown, like a crash) and reaps it.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts the server again on the same port with the same data directory; it replays the AOF.
    ///
    /// Kills the current process first if it is still running.
    pub async fn start_again(&mut self) {
        self.process.kill().await;
        for attempt in 1..=RESTART_ATTEMPTS {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(failure) => {
                    self.process.kill().await;
                    if attempt == RESTART_ATTEMPTS || !failure.may_retry() {
                        self.process.give_up(&failure, "restart");
                    }
                    tracing::debug!(attempt, %failure, port = self.port, "redis-server did not restart; port may still be held");
                    tokio::time::sleep(RESTART_PAUSE).await;
                }
            }
        }
    }

    /// Crash-restart: [`kill`](Self::kill) then [`start_again`](Self::start_again).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start_again().await;
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let data_dir = self.dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create the redis data dir");
        let port = self.port.to_string();
        // Only the benchmark changes this (`--appendfsync everysec`), to show what the
        // durability setting costs; tests always run with `always`.
        let appendfsync = std::env::var(APPENDFSYNC_ENV).unwrap_or_else(|_| "always".into());
        let mut args: Vec<OsString> = [
            "--bind",
            "127.0.0.1",
            "--port",
            port.as_str(),
            // Debian's packaged config has `appendonly no`; durability tests need the AOF.
            "--appendonly",
            "yes",
            // `always`: with `everysec` Redis may postpone the write behind a slow fsync and
            // still answer, so a SIGKILL loses acknowledged writes (seen: a binding lost in
            // the restart test). Threadline acks its inputs on those answers.
            "--appendfsync",
            appendfsync.as_str(),
            // No RDB snapshots: the AOF is the only persistence, as in infra/redis.conf.
            "--save",
            "",
            "--daemonize",
            "no",
            "--dir",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push(data_dir.into_os_string());
        args.extend(listpack_args());
        if let Some(tls) = &self.options.tls {
            args.extend(
                [
                    "--tls-port".into(),
                    self.tls_port.to_string().into(),
                    "--tls-cert-file".into(),
                    tls.cert_file.clone().into_os_string(),
                    "--tls-key-file".into(),
                    tls.key_file.clone().into_os_string(),
                    "--tls-ca-cert-file".into(),
                    tls.ca_file.clone().into_os_string(),
                    "--tls-auth-clients".into(),
                    if tls.auth_clients { "yes" } else { "no" }.into(),
                ]
                .into_iter()
                .map(|a: OsString| a),
            );
        }
        args.extend(self.options.args.iter().map(OsString::from));
        self.process.spawn(args).map_err(StartFailure::Spawn)?;

        // PING answers `-LOADING` until the AOF is replayed, so PONG means the data is back.
        let url = self.url();
        self.process
            .wait_ready(Instant::now() + READY_TIMEOUT, || redis_pongs(&url))
            .await?;
        tracing::debug!(pid = ?self.pid(), port = self.port, "redis-server ready");
        Ok(())
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("url", &self.url())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Why one attempt to bring a server up failed.
#[derive(Debug)]
enum StartFailure {
    /// The binary could not be executed at all.
    Spawn(std::io::Error),
    /// The server exited during start-up, typically because its port was taken.
    Exited(ExitStatus),
    /// The server kept running but never answered.
    TimedOut,
}

impl StartFailure {
    /// Only an early exit can be a port race; a spawn error or a hang will not fix itself.
    fn may_retry(&self) -> bool {
        match self {
            StartFailure::Exited(_) => true,
            StartFailure::Spawn(_) | StartFailure::TimedOut => false,
        }
    }
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::Spawn(error) => write!(f, "could not be spawned: {error}"),
            StartFailure::Exited(status) => write!(f, "exited during start-up ({status})"),
            StartFailure::TimedOut => write!(f, "did not become ready within {READY_TIMEOUT:?}"),
        }
    }
}

/// One server child process: spawning with output to a log file, SIGKILL and reaping.
struct ServerProcess {
    /// Binary name, for messages.
    name: &'static str,
    /// Resolved binary path.
    binary: PathBuf,
    /// stdout and stderr of every incarnation, appended, quoted when start-up fails.
    log_path: PathBuf,
    /// The running child; `None` before the first spawn and after a kill.
    child: Option<Child>,
}

impl ServerProcess {
    fn new(name: &'static str, binary: PathBuf, log_path: PathBuf) -> ServerProcess {
        ServerProcess {
            name,
            binary,
            log_path,
            child: None,
        }
    }

    fn spawn(&mut self, args: Vec<OsString>) -> std::io::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            // Backstop for paths that skip our Drop (e.g. a panic while the struct is half built).
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Exit status if the child has already exited (it is reaped then).
    fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut()?.try_wait() {
            Ok(status) => status,
            Err(error) => {
                tracing::warn!(server = self.name, %error, "could not poll the server process");
                None
            }
        }
    }

    /// SIGKILLs the child (tokio signals exactly this PID) and waits until it is reaped.
    async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Err(error) = child.start_kill() {
            // Already exited: start_kill refuses once the child has been reaped.
            tracing::debug!(server = self.name, %error, "kill skipped");
        }
        if let Err(error) = child.wait().await {
            tracing::warn!(server = self.name, %error, "could not reap the server process");
        }
    }

    /// Probes `ready` every [`PROBE_INTERVAL`] until it answers true; fails when the child
    /// exits first (a port race, often) or `deadline` passes.
    async fn wait_ready<F, Fut>(
        &mut self,
        deadline: Instant,
        mut ready: F,
    ) -> Result<(), StartFailure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        loop {
            if let Some(status) = self.exited() {
                return Err(StartFailure::Exited(status));
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::TimedOut);
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    fn give_up(&self, failure: &StartFailure, action: &str) -> ! {
        panic!(
            "{name} failed to {action}: {failure}\nbinary: {binary}\nlast lines of its output:\n{tail}",
            name = self.name,
            binary = self.binary.display(),
            tail = log_tail(&self.log_path),
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Drop cannot await, so reap by polling briefly; the server then no longer holds its
        // port or writes into the temp dir that is removed right after.
        if child.start_kill().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// `GET /healthz?js-enabled-only=true` on the monitor port answers 200 once JetStream is enabled.
async fn nats_healthy(monitor_port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(("127.0.0.1", monitor_port)).await.ok()?;
        stream
            .write_all(b"GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let status_line = response.split(|&b| b == b'\n').next()?;
        Some(status_line.windows(5).any(|w| w == b" 200 "))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

/// The client port accepts connections and sends the NATS `INFO` greeting.
async fn nats_greets(port: u16) -> bool {
    let probe = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        Some(line.starts_with("INFO "))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

/// `PING` answers `PONG` (or `NOAUTH`: a server with ACLs answers, it just wants a login;
/// `LOADING` still means not ready).
async fn redis_pongs(url: &str) -> bool {
    let probe = async {
        let client = redis::Client::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        match redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
        {
            Ok(pong) => Some(pong == "PONG"),
            Err(error) => Some(error.code() == Some("NOAUTH")),
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

/// Quotes a path as a NATS config string (for `tls { cert_file: … }` in
/// [`NatsOptions::extra_config`]).
pub fn nats_quote(path: &Path) -> String {
    let escaped = path
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Finds a server binary: the env override, else `PATH`, `/usr/sbin` and `/usr/bin`.
fn find_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env_var}={} is not a file", path.display());
        return path;
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        // Debian puts nats-server in /usr/sbin, which a non-root PATH often lacks.
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: run infra/test.sh (installs it) or apt-get install {name}")
        })
}

/// The last lines of a log file, or a note why there are none.
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Err(error) =
        File::open(path).and_then(|mut file| std::io::Read::read_to_string(&mut file, &mut text))
    {
        return format!("(log unreadable: {error})");
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "(log empty)".to_owned()
    } else {
        tail
    }
}

/// Nodes in a [`NatsCluster`] or [`RedisCluster`]: the smallest cluster that survives the
/// loss of one member (NATS R3 quorum) and spreads keys over several masters (Redis).
pub const CLUSTER_NODES: usize = 3;
/// How long a cluster may take to elect its leaders or assign its slots.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One member of a [`NatsCluster`].
struct NatsNode {
    /// The child process; declared first so it is killed before `dir` is removed.
    process: ServerProcess,
    /// `server_name`, which JetStream clustering requires and stream info reports as leader.
    name: String,
    port: u16,
    monitor_port: u16,
    /// Route port the other members connect to.
    cluster_port: u16,
    /// Config, JetStream store and log of this node alone.
    dir: TempDir,
}

/// A three-node `nats-server` cluster with JetStream on free loopback ports: each node has
/// its own store and `server_name`, routes to the other two, and is killed when dropped.
/// Ready once the JetStream meta leader is elected (streams can be created).
pub struct NatsCluster {
    nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts the nodes and waits until JetStream answers through the cluster.
    ///
    /// Panics (with the log tail of a failing node) if it cannot be started.
    pub async fn start() -> NatsCluster {
        let binary = find_binary("nats-server", "THREADLINE_TEST_NATS_SERVER");
        let mut nodes: Vec<NatsNode> = (1..=CLUSTER_NODES)
            .map(|n| {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("threadline-nats-n{n}-"))
                    .tempdir()
                    .expect("create a temp dir for a nats-server node");
                NatsNode {
                    process: ServerProcess::new(
                        "nats-server",
                        binary.clone(),
                        dir.path().join("nats-server.log"),
                    ),
                    name: format!("n{n}"),
                    port: 0,
                    monitor_port: 0,
                    cluster_port: 0,
                    dir,
                }
            })
            .collect();
        for attempt in 1..=START_ATTEMPTS {
            for node in &mut nodes {
                node.port = free_port();
                node.monitor_port = free_port();
                node.cluster_port = free_port();
            }
            let mut cluster = NatsCluster { nodes };
            match cluster.spawn_and_wait().await {
                Ok(()) => return cluster,
                Err((index, failure)) => {
                    for node in &mut cluster.nodes {
                        node.process.kill().await;
                    }
                    if attempt == START_ATTEMPTS || !failure.may_retry() {
                        cluster.nodes[index].process.give_up(&failure, "start");
                    }
                    tracing::debug!(attempt, %failure, "nats cluster did not start; retrying on new ports");
                    nodes = cluster.nodes;
                }
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// Every node's client URL, comma-separated: what `nats_url` takes for a cluster.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URL of node `index` (0-based).
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].port)
    }

    /// `server_name` of node `index`, as JetStream reports stream leaders.
    pub fn name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    /// The node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// PID of node `index`, `None` while it is killed.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].process.pid()
    }

    /// Kills node `index` with SIGKILL (a crash: no leadership hand-over) and reaps it.
    pub async fn kill(&mut self, index: usize) {
        self.nodes[index].process.kill().await;
    }

    /// Spawns every node, then waits for each to accept clients and for the meta leader.
    /// On failure, names the node to blame.
    async fn spawn_and_wait(&mut self) -> Result<(), (usize, StartFailure)> {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.cluster_port))
            .collect();
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let config = node.write_config(&routes);
            node.process
                .spawn(vec!["-c".into(), config.into_os_string()])
                .map_err(|e| (index, StartFailure::Spawn(e)))?;
        }
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let port = node.port;
            node.process
                .wait_ready(deadline, || nats_greets(port))
                .await
                .map_err(|failure| (index, failure))?;
        }
        // Streams can only be created once the members elected a meta leader; until then
        // `$JS.API.INFO` answers with an error (or not at all).
        let client = async_nats::connect(
            (0..self.nodes.len())
                .map(|i| self.url(i))
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|_| (0, StartFailure::TimedOut))?;
        loop {
            if jetstream_answers(&client).await {
                tracing::debug!(urls = %self.urls(), "nats cluster ready");
                return Ok(());
            }
            for (index, node) in self.nodes.iter_mut().enumerate() {
                if let Some(status) = node.process.exited() {
                    return Err((index, StartFailure::Exited(status)));
                }
            }
            if Instant::now() >= deadline {
                return Err((0, StartFailure::TimedOut));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl NatsNode {
    /// Writes this node's config for the current ports; `routes` lists every member's route
    /// URL (a node ignores the route to itself).
    fn write_config(&self, routes: &[String]) -> PathBuf {
        let store = self.dir.path().join("store");
        let config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{port}\n\
             http: 127.0.0.1:{monitor}\n\
             max_payload: 8MB\n\
             jetstream {{\n  store_dir: {store}\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n\
             cluster {{\n  name: threadline-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{routes}]\n}}\n",
            name = self.name,
            port = self.port,
            monitor = self.monitor_port,
            store = nats_quote(&store),
            cluster_port = self.cluster_port,
            routes = routes.join(", "),
        );
        let path = self.dir.path().join("nats-server.conf");
        std::fs::write(&path, config).expect("write nats-server config");
        path
    }
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("urls", &self.urls())
            .field(
                "pids",
                &(0..self.nodes.len())
                    .map(|i| self.pid(i))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `$JS.API.INFO` answers without an error: JetStream has a meta leader. A raw request,
/// because async-nats' `query_account()` cannot read 2.9's answer (docs/pitfalls.md 5).
async fn jetstream_answers(client: &async_nats::Client) -> bool {
    let request = client.request("$JS.API.INFO", bytes::Bytes::new());
    match tokio::time::timeout(Duration::from_secs(2), request).await {
        Ok(Ok(reply)) => serde_json::from_slice::<serde_json::Value>(&reply.payload)
            .map(|answer| answer.get("error").is_none())
            .unwrap_or(false),
        Ok(Err(_)) | Err(_) => false,
    }
}

/// One master of a [`RedisCluster`].
struct RedisNode {
    /// The child process; declared first so it is killed before `dir` is removed.
    process: ServerProcess,
    port: u16,
    /// Cluster bus port (set explicitly: the default, port + 10000, may not exist).
    bus_port: u16,
    /// `nodes.conf`, AOF and log of this node alone.
    dir: TempDir,
}

/// A three-master Redis Cluster (no replicas) on free loopback ports, with AOF like
/// [`RedisServer`]; every node killed when dropped. Ready once `cluster_state:ok`.
pub struct RedisCluster {
    nodes: Vec<RedisNode>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled` servers, assigns the slots with
    /// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
    ///
    /// Panics (with the log tail of a failing node) if it cannot be started.
    pub async fn start() -> RedisCluster {
        let binary = find_binary("redis-server", "THREADLINE_TEST_REDIS_SERVER");
        let mut nodes: Vec<RedisNode> = (1..=CLUSTER_NODES)
            .map(|n| {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("threadline-redis-n{n}-"))
                    .tempdir()
                    .expect("create a temp dir for a redis-server node");
                RedisNode {
                    process: ServerProcess::new(
                        "redis-server",
                        binary.clone(),
                        dir.path().join("redis-server.log"),
                    ),
                    port: 0,
                    bus_port: 0,
                    dir,
                }
            })
            .collect();
        for attempt in 1..=START_ATTEMPTS {
            for node in &mut nodes {
                node.port = free_port();
                node.bus_port = free_port();
            }
            let mut cluster = RedisCluster { nodes };
            match cluster.spawn_and_wait().await {
                Ok(()) => match cluster.form().await {
                    Ok(()) => return cluster,
                    Err(message) => panic!("redis cluster did not form: {message}"),
                },
                Err((index, failure)) => {
                    for node in &mut cluster.nodes {
                        node.process.kill().await;
                    }
                    if attempt == START_ATTEMPTS || !failure.may_retry() {
                        cluster.nodes[index].process.give_up(&failure, "start");
                    }
                    tracing::debug!(attempt, %failure, "redis cluster did not start; retrying on new ports");
                    nodes = cluster.nodes;
                }
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// Every node's URL, comma-separated: what `redis_url` takes with `redis_cluster = true`.
    pub fn urls(&self) -> String {
        self.node_urls().join(",")
    }

    /// Each node's URL, to ask nodes one by one (e.g. `DBSIZE`).
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// PID of node `index`, `None` while it is killed.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].process.pid()
    }

    async fn spawn_and_wait(&mut self) -> Result<(), (usize, StartFailure)> {
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let data_dir = node.dir.path().join("data");
            std::fs::create_dir_all(&data_dir).expect("create the redis data dir");
            let (port, bus_port) = (node.port.to_string(), node.bus_port.to_string());
            let mut args: Vec<OsString> = [
                "--bind",
                "127.0.0.1",
                "--port",
                port.as_str(),
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                bus_port.as_str(),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                // As RedisServer: the AOF, fsynced before each answer, is the persistence.
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--dir",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            args.push(data_dir.into_os_string());
            args.extend(listpack_args());
            node.process
                .spawn(args)
                .map_err(|e| (index, StartFailure::Spawn(e)))?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let url = format!("redis://127.0.0.1:{}", node.port);
            node.process
                .wait_ready(deadline, || redis_pongs(&url))
                .await
                .map_err(|failure| (index, failure))?;
        }
        Ok(())
    }

    /// Assigns the 16384 slots evenly over the nodes and joins them, then waits for
    /// `cluster_state:ok` everywhere.
    async fn form(&self) -> Result<(), String> {
        let cli = find_binary("redis-cli", "THREADLINE_TEST_REDIS_CLI");
        let mut create = Command::new(cli);
        create.arg("--cluster").arg("create");
        for node in &self.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(CLUSTER_READY_TIMEOUT, output)
            .await
            .map_err(|_| "redis-cli --cluster create did not finish".to_owned())?
            .map_err(|e| format!("redis-cli could not run: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        for url in self.node_urls() {
            loop {
                if redis_cluster_ok(&url).await {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("{url} never reported cluster_state:ok"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("urls", &self.urls())
            .field(
                "pids",
                &(0..self.nodes.len())
                    .map(|i| self.pid(i))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `CLUSTER INFO` on one node says `cluster_state:ok` (all slots served).
async fn redis_cluster_ok(url: &str) -> bool {
    let probe = async {
        let client = redis::Client::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(info)) if info.lines().any(|line| line.trim() == "cluster_state:ok"))
}

/// Runs `work` (a benchmark or chaos run) until it finishes, or until SIGINT or SIGTERM
/// arrives: then `work` is dropped, and with it every server and worker process it started
/// (they stop on drop), so an interrupted run leaves nothing behind. → `None` when
/// interrupted.
pub async fn until_interrupted<F: std::future::Future>(work: F) -> Option<F::Output> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Some(work.await);
    };
    tokio::select! {
        done = work => Some(done),
        _ = term.recv() => None,
        _ = int.recv() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::{self, stream};

    fn process_exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[tokio::test]
    async fn jetstream_stream_and_message_survive_nats_restart() {
        let mut server = NatsServer::start().await;
        assert!(server.url().ends_with(&format!(":{}", server.port())));
        let first_pid = server.pid().expect("running server has a pid");

        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = jetstream::new(client.clone());
        js.create_stream(stream::Config {
            name: "SURVIVE".to_owned(),
            subjects: vec!["survive.>".to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
        js.publish("survive.small", "hello".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        // Over the 1 MiB default: the 8MB max_payload must let oversized events through to Threadline.
        let big = vec![b'x'; 2 * 1024 * 1024];
        js.publish("survive.big", big.clone().into())
            .await
            .expect("publish 2 MB")
            .await
            .expect("ack 2 MB");
        client.flush().await.expect("flush");
        drop(js);
        drop(client);

        server.restart().await;
        let second_pid = server.pid().expect("restarted server has a pid");
        assert_ne!(first_pid, second_pid);
        assert!(!process_exists(first_pid), "old server process is gone");

        let client = async_nats::connect(server.url()).await.expect("reconnect");
        let js = jetstream::new(client);
        let mut stream = js
            .get_stream("SURVIVE")
            .await
            .expect("stream survives the restart");
        assert_eq!(stream.info().await.expect("stream info").state.messages, 2);
        let first = stream.get_raw_message(1).await.expect("message 1");
        assert_eq!(first.subject.as_str(), "survive.small");
        assert_eq!(&first.payload[..], b"hello");
        let second = stream.get_raw_message(2).await.expect("message 2");
        assert_eq!(second.payload.len(), big.len());
    }

    #[tokio::test]
    async fn redis_value_survives_restart_through_the_aof() {
        let mut server = RedisServer::start().await;
        assert!(server.url().ends_with(&format!(":{}", server.port())));
        let first_pid = server.pid().expect("running server has a pid");

        let client = redis::Client::open(server.url()).expect("client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        redis::cmd("SET")
            .arg("threadline:test")
            .arg("survives")
            .query_async::<()>(&mut connection)
            .await
            .expect("SET");
        drop(connection);

        server.restart().await;
        assert_ne!(server.pid(), Some(first_pid));
        assert!(!process_exists(first_pid), "old server process is gone");

        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("reconnect");
        let value: Option<String> = redis::cmd("GET")
            .arg("threadline:test")
            .query_async(&mut connection)
            .await
            .expect("GET");
        assert_eq!(value.as_deref(), Some("survives"));
    }

    #[tokio::test]
    async fn kill_stops_the_process_and_frees_the_port() {
        let mut nats = NatsServer::start().await;
        let mut redis = RedisServer::start().await;
        let (nats_pid, redis_pid) = (
            nats.pid().expect("nats pid"),
            redis.pid().expect("redis pid"),
        );

        nats.kill().await;
        redis.kill().await;

        assert_eq!((nats.pid(), redis.pid()), (None, None));
        assert!(!process_exists(nats_pid));
        assert!(!process_exists(redis_pid));
        assert!(TcpStream::connect(("127.0.0.1", nats.port()))
            .await
            .is_err());
        assert!(TcpStream::connect(("127.0.0.1", redis.port()))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn dropping_a_server_kills_its_process_and_removes_its_dir() {
        let nats = NatsServer::start().await;
        let redis = RedisServer::start().await;
        let pids = [
            nats.pid().expect("nats pid"),
            redis.pid().expect("redis pid"),
        ];
        let dirs = [nats.dir.path().to_owned(), redis.dir.path().to_owned()];

        drop(nats);
        drop(redis);

        for pid in pids {
            assert!(
                !process_exists(pid),
                "process {pid} still exists after drop"
            );
        }
        for dir in dirs {
            assert!(!dir.exists(), "{} still exists after drop", dir.display());
        }
    }

    #[tokio::test]
    async fn parallel_servers_get_distinct_ports() {
        let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
        let (c, d) = tokio::join!(RedisServer::start(), RedisServer::start());
        let mut ports = vec![a.port(), b.port(), c.port(), d.port()];
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4);
        assert!(!ports.contains(&4222) && !ports.contains(&6379));
    }
}
