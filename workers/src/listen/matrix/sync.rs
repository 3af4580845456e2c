//! `listen = "sync"`: the bot account's `/_matrix/client/v3/sync` long poll (spec
//! `client-server-api`, "Syncing"), one poller per account: the holder of the one unit of
//! `listen:matrix:<account>`. The unit's cursor is the `since` token, saved only after every
//! event of the batch before it was taken, so a poller killed mid-batch is replaced by one
//! that asks for the same batch again (and the intake collapses what was taken twice).
//!
//! With no cursor yet (the first start) the poller starts from now: one sync without
//! `since`, its history dropped, its `next_batch` saved. A room whose timeline came back
//! `limited` (more events than the filter's limit arrived while nobody polled) is read back
//! through `/messages` to the previous `since`, so the gap is heard too.

use super::events::{learn_names, Names};
use super::{take_events, Intake, ListenError};
use crate::error::WorkError;
use crate::runtime::leases::{self, Held};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::task::JoinSet;

/// Events per room per sync batch; a room with more since the last batch is `limited`
/// and read back through `/messages`.
const TIMELINE_LIMIT: u64 = 100;
/// Pages of `/messages` read back for one gap at most; an older part of a gap is lost (and
/// logged): that is a listener down for very long in a very busy room.
const GAP_PAGES: usize = 50;
const DEFAULT_POLL_MS: u64 = 30_000;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why one sync round failed.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    /// The token was refused: wait for a rotation (the token file is re-read each call).
    #[error("the homeserver refused the token: {0}")]
    Unauthorized(String),
    /// `M_LIMIT_EXCEEDED`.
    #[error("rate limited for {0:?}")]
    RateLimited(Duration),
    /// The homeserver failed or was unreachable, or answered something unreadable.
    #[error("homeserver: {0}")]
    Homeserver(String),
    /// NATS or Redis failed: nothing of the batch is acknowledged.
    #[error(transparent)]
    Work(#[from] WorkError),
}

/// Starts the poller's lease holder.
pub(super) fn start(intake: Intake, tasks: &mut JoinSet<()>) -> Result<(), ListenError> {
    match intake.ctx().config.token(intake.channel()) {
        Some(Ok(token)) if !token.is_empty() => {}
        Some(Ok(_)) | None => {
            return Err(ListenError::Config(
                "[matrix] listen = \"sync\" needs the bot's token (token or token_file)".into(),
            ))
        }
        Some(Err(e)) => {
            return Err(ListenError::Config(format!(
                "cannot read the Matrix token: {e}"
            )))
        }
    }
    let group = format!("listen:matrix:{}", intake.account_id());
    let ctx = intake.ctx().clone();
    tasks.spawn(leases::hold(ctx, group, 1, move |held: Held| {
        let poller = Poller::new(intake.clone());
        async move { poller.run(held).await }
    }));
    Ok(())
}

struct Poller {
    intake: Intake,
    http: reqwest::Client,
    homeserver: String,
    poll_ms: u64,
}

impl Poller {
    fn new(intake: Intake) -> Poller {
        let poll_ms = intake.platform().poll_timeout_ms.unwrap_or(DEFAULT_POLL_MS);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            // The long poll itself, plus the time a slow answer may take.
            .timeout(Duration::from_millis(poll_ms) + Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("threadline/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let homeserver = intake.platform().api_base.trim_end_matches('/').to_owned();
        Poller {
            intake,
            http,
            homeserver,
            poll_ms,
        }
    }

    /// Polls until `held` is lost.
    async fn run(&self, held: Held) {
        let lost = held.lost();
        let mut backoff = BACKOFF_MIN;
        tracing::info!(account = self.intake.account_id(), "matrix sync started");
        while !lost.is_cancelled() {
            let round = tokio::select! {
                _ = lost.cancelled() => return,
                round = self.round(&held) => round,
            };
            let wait = match round {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    continue;
                }
                Err(SyncError::RateLimited(after)) => after,
                Err(error) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    match &error {
                        SyncError::Unauthorized(_) => {
                            tracing::error!(%error, "matrix sync cannot authenticate; retrying (rotate the token)")
                        }
                        SyncError::Work(_) | SyncError::Homeserver(_) => {
                            tracing::warn!(%error, ?wait, "matrix sync round failed; the batch is asked for again")
                        }
                        SyncError::RateLimited(_) => {}
                    }
                    wait
                }
            };
            tokio::select! {
                _ = lost.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One batch: sync from the cursor, take every event, save the next cursor.
    async fn round(&self, held: &Held) -> Result<(), SyncError> {
        let Some(since) = held.cursor().await? else {
            // The first start: from now, not the account's history.
            let batch = self.sync(None, 0).await?;
            // Pending invites are for now, not history.
            self.join_invites(&batch).await;
            let next = next_batch(&batch)?;
            held.save_cursor(next).await?;
            tracing::info!(
                "matrix sync: no cursor yet, starting from now (history is not replayed)"
            );
            return Ok(());
        };
        let batch = self.sync(Some(&since), self.poll_ms).await?;
        let next = next_batch(&batch)?.to_owned();
        self.join_invites(&batch).await;
        let joined = batch["rooms"]["join"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (room, state) in &joined {
            let mut names = Names::new();
            learn_names(&mut names, as_slice(&state["state"]["events"]));
            let timeline = &state["timeline"];
            let mut events = as_slice(&timeline["events"]).to_vec();
            if timeline["limited"] == true {
                if let Some(prev) = timeline["prev_batch"].as_str() {
                    let mut gap = self.read_gap(room, prev, &since).await?;
                    gap.extend(events);
                    events = gap;
                }
            }
            learn_names(&mut names, &events);
            take_events(&self.intake, room, &events, &names).await?;
        }
        if next != since {
            held.save_cursor(&next).await?;
        }
        Ok(())
    }

    /// `GET /sync` with our filter.
    async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Result<Value, SyncError> {
        let mut url = self.url(&["sync"])?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("filter", &sync_filter(since.is_some()).to_string())
                .append_pair("timeout", &timeout_ms.to_string());
            if let Some(since) = since {
                query.append_pair("since", since);
            }
        }
        self.get(url).await
    }

    /// The events of `room` between `from` (a `prev_batch`, going back) and `to` (the
    /// `since` of this batch), oldest first.
    async fn read_gap(&self, room: &str, from: &str, to: &str) -> Result<Vec<Value>, SyncError> {
        let mut pages: Vec<Vec<Value>> = Vec::new();
        let mut from = from.to_owned();
        for _ in 0..GAP_PAGES {
            let mut url = self.url(&["rooms", room, "messages"])?;
            url.query_pairs_mut()
                .append_pair("dir", "b")
                .append_pair("from", &from)
                .append_pair("to", to)
                .append_pair("limit", &TIMELINE_LIMIT.to_string())
                .append_pair("filter", &room_event_filter().to_string());
            let page = self.get(url).await?;
            let chunk = as_slice(&page["chunk"]).to_vec();
            let end = page["end"].as_str().map(str::to_owned);
            let done = chunk.is_empty() || end.is_none();
            pages.push(chunk);
            match end {
                Some(end) if !done => from = end,
                Some(_) | None => {
                    return Ok(pages
                        .into_iter()
                        .rev()
                        .flat_map(|p| p.into_iter().rev())
                        .collect())
                }
            }
        }
        tracing::error!(
            room,
            pages = GAP_PAGES,
            "matrix sync: a gap longer than the read-back; its oldest events are not heard"
        );
        Ok(pages
            .into_iter()
            .rev()
            .flat_map(|p| p.into_iter().rev())
            .collect())
    }

    /// Joins the rooms the bot was invited to (a bot is invited to be used). A failed join
    /// is logged and left: the invite stays, and a later batch does not repeat it, so an
    /// operator joins by hand then.
    async fn join_invites(&self, batch: &Value) {
        let Some(invites) = batch["rooms"]["invite"].as_object() else {
            return;
        };
        for room in invites.keys() {
            let joined = match self.url(&["join", room]) {
                Ok(url) => self.send(self.http.post(url).json(&json!({}))).await,
                Err(e) => Err(e),
            };
            match joined {
                Ok(_) => tracing::info!(room, "matrix sync: joined a room we were invited to"),
                Err(error) => {
                    tracing::warn!(room, %error, "matrix sync: could not join a room we were invited to")
                }
            }
        }
    }

    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, SyncError> {
        let mut url = reqwest::Url::parse(&self.homeserver)
            .map_err(|e| SyncError::Homeserver(format!("homeserver URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| SyncError::Homeserver("homeserver URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        Ok(url)
    }

    async fn get(&self, url: reqwest::Url) -> Result<Value, SyncError> {
        self.send(self.http.get(url)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, SyncError> {
        let token = match self.intake.ctx().config.token(self.intake.channel()) {
            Some(Ok(token)) => token,
            Some(Err(e)) => {
                return Err(SyncError::Unauthorized(format!(
                    "cannot read the token: {e}"
                )))
            }
            None => return Err(SyncError::Unauthorized("no token configured".into())),
        };
        let response = request
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| SyncError::Homeserver(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| SyncError::Homeserver(format!("unreadable answer ({status}): {e}")))?;
        if status.is_success() {
            return Ok(body);
        }
        let what = format!(
            "{status} {}: {}",
            body["errcode"].as_str().unwrap_or_default(),
            body["error"].as_str().unwrap_or_default()
        );
        match (status.as_u16(), body["errcode"].as_str()) {
            (429, _) | (_, Some("M_LIMIT_EXCEEDED")) => Err(SyncError::RateLimited(
                Duration::from_millis(body["retry_after_ms"].as_u64().unwrap_or(1_000)),
            )),
            (401, _) | (_, Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN")) => {
                Err(SyncError::Unauthorized(what))
            }
            _ => Err(SyncError::Homeserver(what)),
        }
    }
}

fn next_batch(batch: &Value) -> Result<&str, SyncError> {
    batch["next_batch"]
        .as_str()
        .ok_or_else(|| SyncError::Homeserver("a sync answer without next_batch".into()))
}

fn as_slice(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The events the listener acts on: messages and redactions.
fn room_event_filter() -> Value {
    json!({"types": ["m.room.message", "m.room.redaction"], "lazy_load_members": true})
}

/// The sync filter (spec "Filtering"; given inline, a JSON object as the `filter`
/// parameter): room messages and redactions, the members that sent them (lazy-loaded, for
/// display names), nothing else. The first sync (`resuming` false) keeps one timeline
/// event per room, which is dropped: only its `next_batch` matters.
fn sync_filter(resuming: bool) -> Value {
    let none = json!({"not_types": ["*"]});
    let mut timeline = room_event_filter();
    timeline["limit"] = json!(if resuming { TIMELINE_LIMIT } else { 1 });
    json!({
        "presence": none,
        "account_data": none,
        "room": {
            "timeline": timeline,
            // Redundant members too: a sender's member event in every batch it writes in,
            // not only the first, so its display name is always at hand.
            "state": {"types": ["m.room.member"], "lazy_load_members": true, "include_redundant_members": true},
            "ephemeral": none,
            "account_data": none,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_asks_only_for_messages_redactions_and_their_senders() {
        let f = sync_filter(true);
        assert_eq!(
            f["room"]["timeline"]["types"],
            json!(["m.room.message", "m.room.redaction"])
        );
        assert_eq!(f["room"]["timeline"]["limit"], TIMELINE_LIMIT);
        assert_eq!(f["room"]["state"]["types"], json!(["m.room.member"]));
        assert_eq!(f["room"]["ephemeral"]["not_types"], json!(["*"]));
        assert_eq!(f["presence"]["not_types"], json!(["*"]));
        // The first sync is only for its next_batch.
        assert_eq!(sync_filter(false)["room"]["timeline"]["limit"], 1);
    }
}
