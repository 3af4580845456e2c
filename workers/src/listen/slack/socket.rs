//! Socket Mode (api.slack.com/apis/socket-mode): one task per connection slot opens a
//! websocket URL with `apps.connections.open` (the app-level `xapp-` token), reads `hello`,
//! and takes each `events_api` envelope before acknowledging it with `{"envelope_id"}` —
//! Slack sends an unacknowledged envelope again, so a listener that dies mid-event loses
//! nothing. On `disconnect` (`warning`: the socket closes soon; `refresh_requested`: Slack
//! wants a new one; `link_disabled`: Socket Mode was turned off) the slot opens a new URL at
//! once, and the old socket is still served until Slack closes it, so that no event falls
//! into the gap between the two; a dropped or silent socket is reopened after a backoff.
//!
//! Slack allows an app several connections at once ("up to 10") and spreads events over
//! them; it may send one event on more than one of them (api.slack.com/apis/socket-mode,
//! "Using multiple connections"): the intake's deterministic ids make those one input.

use super::event::{self, Payload};
use super::{secret, take};
use crate::listen::Intake;
use crate::runtime::retry;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Connections per listener when `connections` is not set: one can be replaced while the
/// other carries events.
pub(super) const DEFAULT_CONNECTIONS: u32 = 2;
/// Slack's limit of open connections per app.
pub(super) const MAX_CONNECTIONS: u32 = 10;
/// Envelopes taken at once per connection; past it the socket is read no further until one
/// is done, so a slow NATS slows Slack down instead of queueing without bound.
const MAX_IN_FLIGHT: usize = 64;
/// How long `hello` may take after the websocket opened.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A socket that sent nothing (not even a pong) for this long is taken for dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// How long a socket Slack asked to replace is still served: Slack closes it itself soon
/// after its `disconnect` (a `warning` "about 10 seconds" before).
const RETIRE_LIMIT: Duration = Duration::from_secs(15);
/// How often a quiet socket is pinged.
const PING_EVERY: Duration = Duration::from_secs(10);
/// First and longest wait before reopening after a failure.
const RECONNECT_BASE: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A taking that failed is tried again after this long at first.
const TAKE_RETRY_BASE: Duration = Duration::from_millis(100);
const TAKE_RETRY_MAX: Duration = Duration::from_secs(5);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How one connection ended.
#[derive(Debug)]
enum Ended {
    /// Shutdown: everything taken was acknowledged; do not reopen.
    Shutdown,
    /// Slack asked for a new connection (`disconnect`): reopen at once.
    Refresh(String),
    /// It failed (could not open, dropped, went silent): reopen after a backoff.
    Failed(String),
}

/// One Socket Mode frame (the fields Threadline reads).
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    retry_attempt: Option<u32>,
}

/// Keeps connection `slot` open until shutdown.
pub(super) async fn run(intake: Intake, slot: u32) {
    let shutdown = intake.ctx().shutdown.clone();
    let http = http_client(intake.ctx().config.http_timeout());
    // Sockets Slack asked to replace, still served until Slack closes them.
    let mut retiring: JoinSet<()> = JoinSet::new();
    let mut failures = 0u32;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        match connection(&intake, &http, slot).await {
            (Ended::Shutdown, _) => break,
            (Ended::Refresh(reason), live) => {
                failures = 0;
                tracing::info!(slot, reason, "slack asked for a new socket; reconnecting");
                if let Some(live) = live {
                    retiring.spawn(retire(intake.clone(), live, slot));
                }
            }
            (Ended::Failed(why), _) => {
                failures = failures.saturating_add(1);
                let wait = retry::delay_after(failures, RECONNECT_BASE, RECONNECT_MAX);
                tracing::warn!(
                    slot,
                    why,
                    wait_ms = wait.as_millis() as u64,
                    "slack socket failed; reconnecting"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
        while retiring.try_join_next().is_some() {}
    }
    while retiring.join_next().await.is_some() {}
}

fn http_client(timeout: Duration) -> reqwest::Client {
    // reqwest and tungstenite are built without a provider of their own: ring, process-wide.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[derive(Debug, Default, Deserialize)]
struct Opened {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// `apps.connections.open` → a single-use websocket URL.
async fn open_url(intake: &Intake, http: &reqwest::Client) -> Result<String, String> {
    let token =
        secret(intake.ctx().config.app_token("slack"), "app_token").map_err(|e| e.to_string())?;
    let base = intake.platform().api_base.trim_end_matches('/').to_owned();
    let response = http
        .post(format!("{base}/apps.connections.open"))
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| format!("apps.connections.open: {}", e.without_url()))?;
    let status = response.status();
    let opened: Opened = response.json().await.unwrap_or_default();
    match (opened.ok, opened.url) {
        (true, Some(url)) => Ok(url),
        (true, None) | (false, _) => Err(format!(
            "apps.connections.open answered {status} {}",
            opened.error.as_deref().unwrap_or("without a url")
        )),
    }
}

/// A socket and the envelopes being taken on it.
struct Live {
    ws: Socket,
    in_flight: JoinSet<Option<String>>,
}

/// One connection, from `apps.connections.open` to its end. On `disconnect` the socket comes
/// back still open: Slack keeps sending on it for a while, and it is served (by [`retire`])
/// while its replacement opens, so no event falls into the gap.
async fn connection(intake: &Intake, http: &reqwest::Client, slot: u32) -> (Ended, Option<Live>) {
    let shutdown = intake.ctx().shutdown.clone();
    let opened = tokio::select! {
        opened = open(intake, http) => opened,
        () = shutdown.cancelled() => return (Ended::Shutdown, None),
    };
    let ws = match opened {
        Ok(ws) => ws,
        Err(why) => return (Ended::Failed(why), None),
    };
    tracing::debug!(slot, "slack socket open");
    let mut live = Live {
        ws,
        in_flight: JoinSet::new(),
    };
    match drive(intake, &mut live, slot, None).await {
        Ended::Refresh(reason) => (Ended::Refresh(reason), Some(live)),
        ended @ (Ended::Shutdown | Ended::Failed(_)) => {
            close(live).await;
            (ended, None)
        }
    }
}

/// Serves a socket Slack asked to replace until Slack closes it (or [`RETIRE_LIMIT`]).
async fn retire(intake: Intake, mut live: Live, slot: u32) {
    let until = Instant::now() + RETIRE_LIMIT;
    let ended = drive(&intake, &mut live, slot, Some(until)).await;
    tracing::debug!(slot, ?ended, "replaced slack socket closed");
    close(live).await;
}

/// What was taken is acknowledged before the socket closes (on shutdown too: the takings
/// finish, as the run loops drain); an envelope whose taking did not finish is Slack's to
/// send again.
async fn close(mut live: Live) {
    while let Some(done) = live.in_flight.join_next().await {
        if let Ok(Some(envelope_id)) = done {
            if ack(&mut live.ws, &envelope_id).await.is_err() {
                break;
            }
        }
    }
    let _ = live.ws.close(None).await;
}

/// Reads envelopes, takes them, acknowledges what was taken, until the socket ends, Slack
/// asks for a new one (not once `retiring_until` is set: then it runs until that instant).
async fn drive(
    intake: &Intake,
    live: &mut Live,
    slot: u32,
    retiring_until: Option<Instant>,
) -> Ended {
    let shutdown = intake.ctx().shutdown.clone();
    let Live { ws, in_flight } = live;
    let mut heard_at = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retired = async {
        match retiring_until {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(retired);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ended::Shutdown,
            Some(done) = in_flight.join_next() => {
                if let Ok(Some(envelope_id)) = done {
                    if let Err(e) = ack(ws, &envelope_id).await {
                        return Ended::Failed(format!("acknowledging: {e}"));
                    }
                }
            }
            () = &mut retired => return Ended::Failed("replaced".into()),
            _ = ping.tick() => {
                if heard_at.elapsed() > SILENCE_LIMIT {
                    return Ended::Failed("the socket went silent".into());
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    return Ended::Failed("the socket dropped".into());
                }
            }
            frame = ws.next(), if in_flight.len() < MAX_IN_FLIGHT => {
                heard_at = Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        return Ended::Failed(format!("slack closed the socket: {close:?}"));
                    }
                    Some(Ok(_ping_pong_or_binary)) => continue,
                    Some(Err(e)) => return Ended::Failed(format!("the socket failed: {e}")),
                    None => return Ended::Failed("the socket dropped".into()),
                };
                let frame: Frame = match serde_json::from_str(text.as_str()) {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::warn!(slot, error = %e, "unreadable slack socket frame");
                        continue;
                    }
                };
                match (frame.kind.as_str(), frame.envelope_id) {
                    ("disconnect", _) if retiring_until.is_none() => {
                        return Ended::Refresh(frame.reason.unwrap_or_default());
                    }
                    ("events_api", Some(envelope_id)) => {
                        let intake = intake.clone();
                        let payload = frame.payload.unwrap_or(Value::Null);
                        let retry_attempt = frame.retry_attempt.unwrap_or(0);
                        in_flight.spawn(async move {
                            taken(&intake, payload, retry_attempt).await.then_some(envelope_id)
                        });
                    }
                    // Slash commands and interactivity are not read; acknowledged so that
                    // Slack does not send them again.
                    (_other, Some(envelope_id)) => {
                        if let Err(e) = ack(ws, &envelope_id).await {
                            return Ended::Failed(format!("acknowledging: {e}"));
                        }
                    }
                    (_hello_disconnect_or_other, None) => {}
                }
            }
        }
    }
}

/// Opens the websocket and waits for its `hello`.
async fn open(intake: &Intake, http: &reqwest::Client) -> Result<Socket, String> {
    let url = open_url(intake, http).await?;
    let (mut ws, _) = tokio::time::timeout(HELLO_TIMEOUT, tokio_tungstenite::connect_async(&url))
        .await
        .map_err(|_| "the socket did not open in time".to_owned())?
        .map_err(|e| format!("the socket did not open: {e}"))?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Text(text)) => {
                    let frame: Option<Frame> = serde_json::from_str(text.as_str()).ok();
                    if frame.is_some_and(|f| f.kind == "hello") {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("before hello: {e}")),
            }
        }
        Err("the socket closed before hello".to_owned())
    })
    .await
    .map_err(|_| "no hello in time".to_owned())?;
    hello.map(|()| ws)
}

async fn ack(ws: &mut Socket, envelope_id: &str) -> Result<(), String> {
    let frame = json!({ "envelope_id": envelope_id }).to_string();
    ws.send(Message::text(frame))
        .await
        .map_err(|e| e.to_string())
}

/// Takes one envelope's payload, trying again while the failure may pass (NATS or Redis
/// down): `true` once it is stored or cannot ever be (acknowledge), `false` at shutdown
/// before that (leave it to Slack's redelivery).
async fn taken(intake: &Intake, payload: Value, retry_attempt: u32) -> bool {
    let inbound = match event::payload_of(payload) {
        Ok(Payload::Callback { event_id, inbound }) => {
            tracing::debug!(event_id, retry_attempt, "slack envelope");
            inbound
        }
        Ok(Payload::UrlVerification { .. } | Payload::RateLimited | Payload::Other(_)) => {
            return true
        }
        Err(e) => {
            tracing::warn!(error = %e, "a slack envelope's payload is no event");
            return true;
        }
    };
    let shutdown = &intake.ctx().shutdown;
    let mut failures = 0u32;
    loop {
        match take(intake, inbound.clone()).await {
            Ok(_) => return true,
            Err(e) if e.is_retryable() => {
                failures = failures.saturating_add(1);
                let wait = retry::delay_after(failures, TAKE_RETRY_BASE, TAKE_RETRY_MAX);
                tracing::warn!(error = %e, failures, "slack event not stored yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return false,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "slack event refused");
                return true;
            }
        }
    }
}
