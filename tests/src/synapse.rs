//! A real Matrix homeserver for tests: Synapse (`matrix-synapse` from PyPI, pinned in
//! `tests/python/synapse-requirements.txt`, installed by `infra/test.sh` into
//! `target/synapse-venv`), started on a free loopback port with SQLite in its own temp dir,
//! like [`crate::servers`]' nats-server and redis-server: one server per test, killed by PID
//! when dropped (and by itself when the test process dies).
//!
//! Users are registered through the shared-secret admin API, rooms are made and changed
//! through the client-server API, and what the server stored is read back the same way, so
//! a test asserts on what a Matrix client would see.
//!
//! Tests need Synapse only where they say so: [`SynapseServer::start`] returns `None` (and
//! prints a loud "SKIPPED") when it is not installed, except in CI (`CI=true`), where a
//! missing Synapse fails the test.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::servers::free_port;

/// The `server_name` of every test homeserver: user ids are `@name:threadline.test`.
pub const SERVER_NAME: &str = "threadline.test";
/// Synapse compiles its templates and runs its schema migrations on the first start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 40;

/// Runs Synapse's main module, and ends it when the process that started it is gone: a
/// test process killed outright (no `Drop`) must not leave homeservers behind.
const LAUNCHER: &str = "\
import os, runpy, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ['synapse.app.homeserver', '-c', sys.argv[1]]
runpy.run_module('synapse.app.homeserver', run_name='__main__', alter_sys=True)
";

/// How the homeserver is configured.
#[derive(Debug, Clone, Copy)]
pub struct SynapseOptions {
    /// `rc_message`: events a user may send per second across all rooms, after a burst.
    pub messages_per_second: f64,
    /// `rc_message` burst: events a user may send at once before the rate applies.
    pub message_burst: u32,
}

impl Default for SynapseOptions {
    /// No message limit a test meets unless it asks for one.
    fn default() -> Self {
        SynapseOptions {
            messages_per_second: 1_000.0,
            message_burst: 1_000,
        }
    }
}

/// The interpreter of the Synapse venv, or `None` (skip) outside CI.
pub fn synapse_python() -> Option<PathBuf> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let candidate = std::env::var_os("THREADLINE_SYNAPSE_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = root.join("target/synapse-venv/bin/python");
            venv.is_file().then_some(venv)
        });
    let problem = match &candidate {
        None => {
            "THREADLINE_SYNAPSE_PYTHON is not set and target/synapse-venv does not exist".to_owned()
        }
        Some(python) => match std::process::Command::new(python)
            .args(["-c", "import synapse.app.homeserver"])
            .output()
        {
            Ok(out) if out.status.success() => return candidate,
            Ok(out) => format!(
                "{} cannot import Synapse: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(error) => format!("cannot run {}: {error}", python.display()),
        },
    };
    if in_ci {
        panic!("{problem}; infra/test.sh installs it (ensure_synapse_env)");
    }
    eprintln!(
        "\n\n*** SKIPPED: a test that needs a real Matrix homeserver: {problem}.\n\
         *** Run ./infra/test.sh, or: python3 -m venv target/synapse-venv && \
         target/synapse-venv/bin/pip install -r tests/python/synapse-requirements.txt\n\n"
    );
    None
}

/// A registered Matrix account.
#[derive(Debug, Clone)]
pub struct MatrixUser {
    /// The full id, `@localpart:threadline.test`.
    pub user_id: String,
    /// The part before the `:`.
    pub localpart: String,
    /// The password it was registered with (for [`SynapseServer::login`]).
    pub password: String,
    /// The access token of this login.
    pub access_token: String,
    /// The device of this login.
    pub device_id: String,
}

/// A running Synapse; killed (SIGKILL, by PID) when dropped.
pub struct SynapseServer {
    child: Option<Child>,
    python: PathBuf,
    port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    shared_secret: String,
    http: reqwest::Client,
    /// How long the last start took until `/_matrix/client/versions` answered.
    pub startup: Duration,
    /// Declared last: removed after the child is gone.
    dir: TempDir,
}

impl SynapseServer {
    /// A homeserver with default options, or `None` when Synapse is not installed (outside CI).
    pub async fn start() -> Option<SynapseServer> {
        SynapseServer::start_with(SynapseOptions::default()).await
    }

    /// A homeserver configured by `options` on a free port, waiting until it answers;
    /// `None` when Synapse is not installed (outside CI).
    pub async fn start_with(options: SynapseOptions) -> Option<SynapseServer> {
        SynapseServer::start_full(options, None).await
    }

    /// A homeserver that also runs the Application Service of `registration` (the YAML of a
    /// registration file, Synapse's `app_service_config_files`); `None` when Synapse is not
    /// installed (outside CI).
    pub async fn start_with_app_service(
        options: SynapseOptions,
        registration: &str,
    ) -> Option<SynapseServer> {
        SynapseServer::start_full(options, Some(registration)).await
    }

    async fn start_full(
        options: SynapseOptions,
        registration: Option<&str>,
    ) -> Option<SynapseServer> {
        let python = synapse_python()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir for Synapse");
        let mut server = SynapseServer {
            child: None,
            python,
            port: 0,
            config_path: dir.path().join("homeserver.yaml"),
            log_path: dir.path().join("synapse.log"),
            shared_secret: uuid::Uuid::new_v4().to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            startup: Duration::ZERO,
            dir,
        };
        std::fs::write(server.dir.path().join("signing.key"), signing_key())
            .expect("write the signing key");
        let app_service = registration.map(|yaml| {
            let path = server.dir.path().join("appservice.yaml");
            std::fs::write(&path, yaml).expect("write the appservice registration");
            path
        });
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            server.write_config(options, app_service.as_deref());
            match server.spawn_and_wait().await {
                Ok(()) => return Some(server),
                Err(why) => last = why,
            }
        }
        panic!(
            "Synapse failed to start: {last}\nlast lines of its log:\n{}",
            log_tail(&server.log_path)
        );
    }

    /// The homeserver URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// PID of the running server, `None` while it is killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL (this PID only) and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port with the same database (after [`kill`](Self::kill)).
    pub async fn start_again(&mut self) {
        self.kill().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => panic!(
                    "Synapse failed to restart: {why}\nlast lines of its log:\n{}",
                    log_tail(&self.log_path)
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Crash-restart: SIGKILL, then start on the same port and database.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start_again().await;
    }

    fn write_config(&self, options: SynapseOptions, app_service: Option<&Path>) {
        let dir = self.dir.path();
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let relaxed = json!({"per_second": 1000, "burst_count": 1000});
        // JSON is YAML: Synapse reads this as its homeserver.yaml.
        let config = json!({
            "server_name": SERVER_NAME,
            "pid_file": path("homeserver.pid"),
            "listeners": [{
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": false,
                "x_forwarded": false,
                // The client API (which serves /_synapse/admin too); no federation listener.
                "resources": [{"names": ["client"], "compress": false}],
            }],
            "database": {"name": "sqlite3", "args": {"database": path("homeserver.db")}},
            "media_store_path": path("media"),
            "signing_key_path": path("signing.key"),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": uuid::Uuid::new_v4().to_string(),
            "form_secret": uuid::Uuid::new_v4().to_string(),
            "report_stats": false,
            "enable_metrics": false,
            "trusted_key_servers": [],
            "suppress_key_server_warning": true,
            "federation_domain_whitelist": [],
            "url_preview_enabled": false,
            "presence": {"enabled": false},
            "rc_message": {
                "per_second": options.messages_per_second,
                "burst_count": options.message_burst,
            },
            "rc_login": {"address": relaxed, "account": relaxed, "failed_attempts": relaxed},
            "rc_registration": relaxed,
            "rc_joins": {"local": relaxed, "remote": relaxed},
            "rc_invites": {"per_room": relaxed, "per_user": relaxed, "per_issuer": relaxed},
            "rc_admin_redaction": relaxed,
        });
        let mut config = config;
        if let Some(registration) = app_service {
            config["app_service_config_files"] = json!([registration.to_string_lossy()]);
        }
        std::fs::write(&self.config_path, config.to_string()).expect("write homeserver.yaml");
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new(&self.python)
            .arg("-c")
            .arg(LAUNCHER)
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not spawn {}: {e}", self.python.display()))?;
        self.child = Some(child);
        let versions = format!("{}/_matrix/client/versions", self.url());
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited during start-up ({status})"));
            }
            let answered = self
                .http
                .get(&versions)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                self.startup = started.elapsed();
                return Ok(());
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        self.kill().await;
        Err(format!("did not answer within {READY_TIMEOUT:?}"))
    }

    /// Registers `localpart` with the shared-secret admin API (Synapse's
    /// `POST /_synapse/admin/v1/register`: a nonce, then an HMAC-SHA1 of
    /// `nonce\0user\0password\0admin|notadmin` keyed with the secret).
    pub async fn register(&self, localpart: &str, admin: bool) -> MatrixUser {
        let url = format!("{}/_synapse/admin/v1/register", self.url());
        let nonce: Value = self.ok(self.http.get(&url)).await;
        let nonce = nonce["nonce"].as_str().expect("nonce").to_owned();
        let password = format!("pw-{}", uuid::Uuid::new_v4());
        let mut mac = Hmac::<Sha1>::new_from_slice(self.shared_secret.as_bytes()).expect("hmac");
        for (i, part) in [
            nonce.as_str(),
            localpart,
            &password,
            if admin { "admin" } else { "notadmin" },
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        let mac = hex_lower(&mac.finalize().into_bytes());
        let body = json!({
            "nonce": nonce, "username": localpart, "password": password,
            "admin": admin, "mac": mac,
        });
        let answer: Value = self.ok(self.http.post(&url).json(&body)).await;
        MatrixUser {
            user_id: answer["user_id"].as_str().expect("user_id").to_owned(),
            localpart: localpart.to_owned(),
            password,
            access_token: answer["access_token"].as_str().expect("token").to_owned(),
            device_id: answer["device_id"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// A fresh login of `user`: a new device with a new access token.
    pub async fn login(&self, user: &MatrixUser) -> MatrixUser {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.localpart},
            "password": user.password,
        });
        let answer: Value = self
            .ok(self.http.post(self.client_url("login")).json(&body))
            .await;
        MatrixUser {
            access_token: answer["access_token"].as_str().expect("token").to_owned(),
            device_id: answer["device_id"].as_str().unwrap_or_default().to_owned(),
            ..user.clone()
        }
    }

    /// Lifts (0) or sets `user`'s message limit (`admin` must be a server admin).
    pub async fn override_ratelimit(
        &self,
        admin: &MatrixUser,
        user: &MatrixUser,
        per_second: u32,
        burst: u32,
    ) {
        let url = format!(
            "{}/_synapse/admin/v1/users/{}/override_ratelimit",
            self.url(),
            enc(&user.user_id)
        );
        let body = json!({"messages_per_second": per_second, "burst_count": burst});
        let _: Value = self
            .ok(self
                .http
                .post(url)
                .bearer_auth(&admin.access_token)
                .json(&body))
            .await;
    }

    /// A room `owner` creates (power level 100) with `members` invited and joined.
    pub async fn room(&self, owner: &MatrixUser, members: &[&MatrixUser]) -> String {
        let invite: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        let body = json!({"preset": "private_chat", "invite": invite, "name": "threadline test"});
        let answer: Value = self
            .ok(self
                .http
                .post(self.client_url("createRoom"))
                .bearer_auth(&owner.access_token)
                .json(&body))
            .await;
        let room = answer["room_id"].as_str().expect("room_id").to_owned();
        for member in members {
            let _: Value = self
                .ok(self
                    .http
                    .post(self.client_url(&format!("rooms/{}/join", enc(&room))))
                    .bearer_auth(&member.access_token)
                    .json(&json!({})))
                .await;
        }
        room
    }

    /// Sends an `m.room.message` as `user`; returns its event id.
    pub async fn send(&self, user: &MatrixUser, room: &str, content: Value) -> String {
        let txn = uuid::Uuid::new_v4();
        let url = self.client_url(&format!("rooms/{}/send/m.room.message/{txn}", enc(room)));
        let answer: Value = self
            .ok(self
                .http
                .put(url)
                .bearer_auth(&user.access_token)
                .json(&content))
            .await;
        answer["event_id"].as_str().expect("event_id").to_owned()
    }

    /// A raw client-server request as `user`: (status, body).
    pub async fn call(
        &self,
        user: &MatrixUser,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.client_url(path))
            .bearer_auth(&user.access_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to Synapse");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Redacts `event_id` in `room` as `user`, asserting Synapse accepted it.
    pub async fn redact(&self, user: &MatrixUser, room: &str, event_id: &str) {
        let path = format!(
            "rooms/{}/redact/{}/{}",
            enc(room),
            enc(event_id),
            uuid::Uuid::new_v4()
        );
        let (status, body) = self
            .call(
                user,
                reqwest::Method::PUT,
                &path,
                Some(json!({"reason": "test"})),
            )
            .await;
        assert_eq!(status, 200, "redact: {body}");
    }

    /// Kicks `target` out of `room` as `user`, asserting Synapse accepted it.
    pub async fn kick(&self, user: &MatrixUser, room: &str, target: &MatrixUser) {
        let path = format!("rooms/{}/kick", enc(room));
        let (status, body) = self
            .call(
                user,
                reqwest::Method::POST,
                &path,
                Some(json!({"user_id": target.user_id, "reason": "test"})),
            )
            .await;
        assert_eq!(status, 200, "kick: {body}");
    }

    /// Sets `target`'s power level in `room` (as the room's owner).
    pub async fn set_power_level(
        &self,
        owner: &MatrixUser,
        room: &str,
        target: &MatrixUser,
        level: u32,
    ) {
        let path = format!("rooms/{}/state/m.room.power_levels", enc(room));
        let (status, mut levels) = self.call(owner, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "power levels: {levels}");
        levels["users"][&target.user_id] = json!(level);
        let (status, body) = self
            .call(owner, reqwest::Method::PUT, &path, Some(levels))
            .await;
        assert_eq!(status, 200, "set power levels: {body}");
    }

    /// Every event of `room` `reader` may see, oldest first.
    pub async fn timeline(&self, reader: &MatrixUser, room: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!("rooms/{}/messages?dir=f&limit=1000", enc(room));
            if let Some(from) = &from {
                path.push_str(&format!("&from={from}"));
            }
            let (status, page) = self.call(reader, reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "messages: {page}");
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            if chunk.is_empty() {
                return events;
            }
            events.extend(chunk);
            match page["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => return events,
            }
        }
    }

    /// The `m.room.message` events of `room`, oldest first: those in the thread of `root`,
    /// or with `None` those outside every thread (the room's own timeline).
    pub async fn messages_in(
        &self,
        reader: &MatrixUser,
        room: &str,
        root: Option<&str>,
    ) -> Vec<Value> {
        self.timeline(reader, room)
            .await
            .into_iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter(|e| {
                let rel = &e["content"]["m.relates_to"];
                let thread = (rel["rel_type"] == "m.thread")
                    .then(|| rel["event_id"].as_str())
                    .flatten();
                thread == root
            })
            .collect()
    }

    /// The bodies of [`messages_in`](Self::messages_in) (redacted events have none).
    pub async fn bodies_in(
        &self,
        reader: &MatrixUser,
        room: &str,
        root: Option<&str>,
    ) -> Vec<String> {
        self.messages_in(reader, room, root)
            .await
            .into_iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// `GET /notifications` of `user` (`highlight`: only those that highlight, e.g. @room).
    pub async fn notifications(&self, user: &MatrixUser, highlight: bool) -> Vec<Value> {
        let path = if highlight {
            "notifications?only=highlight&limit=100"
        } else {
            "notifications?limit=100"
        };
        let (status, body) = self.call(user, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "notifications: {body}");
        body["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn client_url(&self, path: &str) -> String {
        format!("{}/_matrix/client/v3/{path}", self.url())
    }

    async fn ok(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.send().await.expect("request to Synapse");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "Synapse answered {status}: {body}");
        body
    }
}

impl Drop for SynapseServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
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

/// Percent-encodes an id for one path segment (`!room:server`, `$event`, `@user:server`).
pub fn enc(id: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("url");
    url.path_segments_mut().expect("base").push(id);
    url.path().trim_start_matches('/').to_owned()
}

/// A signing key in Synapse's file format: `ed25519 <key id> <unpadded base64 seed>`.
fn signing_key() -> String {
    let seed: [u8; 32] = rand::random();
    format!(
        "ed25519 a_test {}\n",
        data_encoding::BASE64_NOPAD.encode(&seed)
    )
}

fn hex_lower(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A loopback HTTP proxy in front of a homeserver that can make one send's outcome
/// unknown: the request reaches the server (which stores the event), the answer is held
/// back until [`release`](HoldingProxy::release) and then dropped, so the client times out
/// not knowing. It also records the access token of every request, and counts the event
/// sends and the homeserver's 429 answers it passed on.
pub struct HoldingProxy {
    server: crate::fakes::Server,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    hold_next_send: std::sync::atomic::AtomicBool,
    release: tokio::sync::Notify,
    held: std::sync::atomic::AtomicUsize,
    tokens: std::sync::Mutex<Vec<String>>,
    sends: std::sync::atomic::AtomicUsize,
    rate_limited: std::sync::atomic::AtomicUsize,
    unreachable: std::sync::atomic::AtomicUsize,
}

impl HoldingProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> HoldingProxy {
        let state = std::sync::Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            hold_next_send: std::sync::atomic::AtomicBool::new(false),
            release: tokio::sync::Notify::new(),
            held: std::sync::atomic::AtomicUsize::new(0),
            tokens: std::sync::Mutex::new(Vec::new()),
            sends: std::sync::atomic::AtomicUsize::new(0),
            rate_limited: std::sync::atomic::AtomicUsize::new(0),
            unreachable: std::sync::atomic::AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(std::sync::Arc::clone(&state));
        let server = crate::fakes::Server::start(router).await;
        HoldingProxy { server, state }
    }

    /// The proxy's URL (`http://127.0.0.1:PORT`), to configure as the homeserver.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// The next event send is forwarded, and its answer held back.
    pub fn hold_next_send(&self) {
        self.state
            .hold_next_send
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ends every held answer (the connection closes without one).
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }

    /// How many answers were held back so far.
    pub fn held(&self) -> usize {
        self.state.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Event sends (`PUT …/send/…`) forwarded so far, retries included.
    pub fn sends(&self) -> usize {
        self.state.sends.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// 429 answers of the homeserver passed on so far.
    pub fn rate_limited(&self) -> usize {
        self.state
            .rate_limited
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests answered 502 because the homeserver could not be reached (it was down).
    pub fn unreachable(&self) -> usize {
        self.state
            .unreachable
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The access token of every request so far, in order.
    pub fn tokens_seen(&self) -> Vec<String> {
        self.state
            .tokens
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }
}

async fn forward(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 24)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Some(token) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        if let Ok(mut tokens) = state.tokens.lock() {
            tokens.push(token.to_owned());
        }
    }
    let is_send = parts.method == axum::http::Method::PUT && path.contains("/send/");
    if is_send {
        state.sends.fetch_add(1, Ordering::SeqCst);
    }
    let mut upstream = state
        .http
        .request(parts.method.clone(), format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let answered = upstream.send().await;
    if is_send && state.hold_next_send.swap(false, Ordering::SeqCst) {
        state.held.fetch_add(1, Ordering::SeqCst);
        state.release.notified().await;
        // Dropped without an answer: the client cannot tell whether the send took.
        return axum::http::StatusCode::from_u16(599)
            .unwrap_or(axum::http::StatusCode::BAD_GATEWAY)
            .into_response();
    }
    match answered {
        Ok(response) => {
            if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                state.rate_limited.fetch_add(1, Ordering::SeqCst);
            }
            let status = axum::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let headers = response.headers().clone();
            let bytes = response.bytes().await.unwrap_or_default();
            let mut answer = (status, bytes).into_response();
            for name in ["content-type", "retry-after"] {
                if let Some(value) = headers.get(name) {
                    if let Ok(value) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
                        answer.headers_mut().insert(name, value);
                    }
                }
            }
            answer
        }
        // The homeserver is down (restarting): what a reverse proxy says then.
        Err(_) => {
            state.unreachable.fetch_add(1, Ordering::SeqCst);
            axum::http::StatusCode::BAD_GATEWAY.into_response()
        }
    }
}
