//! The Telegram listener: what people write in the bot's chats and forum topics becomes
//! `tl.in.message.telegram`; a topic closed or reopened becomes a conversation change. Two
//! modes (`[telegram] listen`), as the Bot API offers ("Getting updates"):
//!
//! - `poll`: `getUpdates` long polling by one replica at a time. Telegram answers 409 to a
//!   second `getUpdates` running at once, so the replicas hold a lease
//!   (`listen:telegram:<account>`, one unit) and only its holder polls; a dead holder's
//!   lease moves after `listen_lease_ms`. The offset (last `update_id` + 1) is the unit's
//!   cursor, saved only once every update of the batch was taken; the next `getUpdates`
//!   passes it, which is what confirms those updates to Telegram ("An update is considered
//!   confirmed as soon as getUpdates is called with an offset higher than its update_id").
//!   A crash before that re-reads the batch, and the intake drops what it already took. A
//!   webhook left set makes `getUpdates` fail, so start-up calls `deleteWebhook` first
//!   (keeping pending updates: they are polled).
//! - `webhook`: Telegram POSTs each update to `POST /telegram/webhook` (set with
//!   `setWebhook` at start: `public_url`, `secret_token` = the listen secret). Every request
//!   must carry `X-Telegram-Bot-Api-Secret-Token` equal to it (compared in constant time),
//!   else 401 and nothing is published. 200 only once the update was taken; anything else
//!   makes Telegram repeat it. Any number of replicas behind a load balancer.

mod api;
mod update;

use super::{Heard, Intake, ListenError, Routes};
use crate::config::ListenMode;
use crate::runtime::leases::{self, Held};
use crate::runtime::retry;
use crate::WorkError;
use api::{Api, ApiError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use threadline_schemas::{Attachment, Author, ConversationChange};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use update::{Meaning, Said, TopicChange, Update};

/// Where Telegram pushes updates in webhook mode; `public_url` must reach it.
pub(crate) const WEBHOOK_PATH: &str = "/telegram/webhook";
/// The header Telegram puts the webhook's `secret_token` in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// The long poll's wait when `poll_timeout_ms` is unset.
const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(30);

/// Starts the listener in the configured mode: the lease-holding poller on `tasks`, or the
/// webhook route (after `setWebhook`).
pub(crate) async fn start(
    intake: Intake,
    tasks: &mut JoinSet<()>,
    routes: &mut Routes,
) -> Result<(), ListenError> {
    let platform = intake.platform();
    let api = Api::new(Arc::clone(&intake.ctx().config), &platform.api_base);
    match platform.listen {
        ListenMode::Off => Ok(()),
        ListenMode::Poll => start_poll(intake, api, tasks).await,
        ListenMode::Webhook => start_webhook(intake, api, routes).await,
        other @ (ListenMode::Gateway
        | ListenMode::Events
        | ListenMode::Socket
        | ListenMode::Sync
        | ListenMode::Appservice) => Err(ListenError::Config(format!(
            "[telegram] listen must be `poll` or `webhook`, not {other:?}"
        ))),
    }
}

async fn start_poll(intake: Intake, api: Api, tasks: &mut JoinSet<()>) -> Result<(), ListenError> {
    // "getUpdates … will not work if an outgoing webhook is set up": take it down, keeping
    // what is pending (no `drop_pending_updates`), which the poll then fetches.
    api.delete_webhook()
        .await
        .map_err(|e| ListenError::Platform(format!("deleteWebhook: {e}")))?;
    let wait = intake
        .platform()
        .poll_timeout_ms
        .map(|ms| Duration::from_millis(ms).max(Duration::from_secs(1)))
        .unwrap_or(DEFAULT_POLL_WAIT);
    let group = format!("listen:telegram:{}", intake.account_id());
    let ctx = intake.ctx().clone();
    tasks.spawn(async move {
        leases::hold(ctx, group, 1, move |held| {
            poll(intake.clone(), api.clone(), held, wait)
        })
        .await;
    });
    Ok(())
}

/// Sleeps `delay`, or until `lost` is cancelled; → whether it was.
async fn pause(lost: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        () = lost.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

fn backoff(failures: u32) -> Duration {
    retry::delay_after(
        failures,
        Duration::from_millis(250),
        Duration::from_secs(30),
    )
}

/// The poller of the lease's one unit, until the lease is lost.
async fn poll(intake: Intake, api: Api, held: Held, wait: Duration) {
    let lost = held.lost();
    let mut failures = 0;
    let mut offset = loop {
        match held.cursor().await {
            Ok(cursor) => break cursor.and_then(|c| c.parse::<i64>().ok()),
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "telegram poll cannot read its offset yet");
                if pause(&lost, backoff(failures)).await {
                    return;
                }
            }
        }
    };
    failures = 0;
    loop {
        let answer = tokio::select! {
            biased;
            () = lost.cancelled() => return,
            answer = api.get_updates(offset, wait) => answer,
        };
        let batch = match answer {
            Ok(batch) => batch,
            Err(e) => {
                failures += 1;
                let delay = match &e {
                    ApiError::RateLimited(after) => *after,
                    ApiError::Conflict(_) | ApiError::Unreachable(_) => backoff(failures),
                    ApiError::Refused { .. } => {
                        // A wrong token or parameters: polling on cannot fix it, but a
                        // rotated token can, so keep trying, slowly.
                        tracing::error!(error = %e, "telegram refuses getUpdates");
                        backoff(failures.max(8))
                    }
                };
                if let ApiError::Conflict(_) | ApiError::Unreachable(_) = &e {
                    tracing::warn!(error = %e, "telegram getUpdates failed; polling again");
                }
                if pause(&lost, delay).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        match take_batch(&intake, &batch, &lost).await {
            Batch::Taken(Some(next)) => {
                // Telegram is told by the next getUpdates; the saved cursor spares a new
                // holder re-reading this batch. Not saved (Redis down, the lease gone):
                // the batch comes again and the intake drops it as already taken.
                if let Err(e) = held.save_cursor(&next.to_string()).await {
                    tracing::warn!(error = %e, "telegram poll offset not saved");
                }
                offset = Some(next);
            }
            Batch::Taken(None) => {}
            Batch::Failed(e) => {
                failures += 1;
                tracing::warn!(error = %e, "telegram update not taken; the batch is fetched again");
                if pause(&lost, backoff(failures)).await {
                    return;
                }
            }
            Batch::Lost => return,
        }
    }
}

enum Batch {
    /// Every update taken; the next offset (`None`: the batch was empty).
    Taken(Option<i64>),
    /// One could not be taken (NATS or Redis down): nothing after it was tried.
    Failed(WorkError),
    /// The lease went while taking them.
    Lost,
}

/// Takes a batch in order, stopping at the first failure so the offset never passes an
/// update that was not taken.
async fn take_batch(intake: &Intake, batch: &[Value], lost: &CancellationToken) -> Batch {
    let mut last = None;
    for raw in batch {
        if lost.is_cancelled() {
            return Batch::Lost;
        }
        let id = raw["update_id"].as_i64();
        match api::read(raw) {
            Some(update) => {
                if let Err(e) = take(intake, &update).await {
                    return Batch::Failed(e);
                }
            }
            // Not an Update at all: nothing can ever read it, so it is passed.
            None => {
                tracing::warn!(update_id = ?id, "telegram sent an update the listener cannot read")
            }
        }
        last = id.max(last);
    }
    Batch::Taken(last.map(|id| id + 1))
}

/// Hands one update to the intake; Ok once it is durable, carries nothing, or can never be
/// taken. A refusal no retry can change (an event the contract rejects) is dropped with an
/// error in the log: holding on to it would stop every later update of the bot.
async fn take(intake: &Intake, update: &Update) -> Result<(), WorkError> {
    match take_once(intake, update).await {
        Err(e) if !e.is_retryable() => {
            tracing::error!(update_id = update.update_id, error = %e,
                "telegram update refused by the intake; dropped");
            Ok(())
        }
        other @ (Ok(()) | Err(_)) => other,
    }
}

async fn take_once(intake: &Intake, update: &Update) -> Result<(), WorkError> {
    match update.meaning() {
        Meaning::Said(said) => intake.message(heard(intake, said)).await.map(drop),
        Meaning::Topic { place, change, key } => {
            let topic = intake.conversation(&place.id, place.parent.as_deref());
            let change = match change {
                TopicChange::Closed => ConversationChange::Locked,
                TopicChange::Reopened => ConversationChange::Reopened,
            };
            intake.change(topic, change, &key).await.map(drop)
        }
        Meaning::Nothing(why) => {
            tracing::debug!(update_id = update.update_id, why, "telegram update skipped");
            Ok(())
        }
    }
}

fn heard(intake: &Intake, said: Said) -> Heard {
    Heard {
        conversation: intake.conversation(&said.place.id, said.place.parent.as_deref()),
        message_id: said.message_id,
        text: said.text,
        author: Author {
            id: said.writer.id,
            is_bot: said.writer.is_bot,
            name: said.writer.name,
        },
        reply_to: said.reply_to,
        attachments: said
            .files
            .into_iter()
            .map(|f| Attachment {
                name: f.name,
                content_type: f.content_type,
                size: f.size,
                url: f.url,
            })
            .collect(),
    }
}

/// "1-256 characters. Only characters A-Z, a-z, 0-9, _ and - are allowed" (setWebhook).
fn valid_secret_token(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

async fn start_webhook(intake: Intake, api: Api, routes: &mut Routes) -> Result<(), ListenError> {
    let Some(url) = intake.platform().public_url.clone() else {
        return Err(ListenError::Config(
            "[telegram] listen = \"webhook\" needs public_url (the URL Telegram posts to)".into(),
        ));
    };
    let secret =
        match intake.ctx().config.listen_secret("telegram") {
            Some(Ok(s)) if !s.is_empty() => s,
            Some(Err(e)) => {
                return Err(ListenError::Config(format!(
                    "[telegram] listen_secret_file cannot be read: {e}"
                )))
            }
            Some(Ok(_)) | None => return Err(ListenError::Config(
                "[telegram] listen = \"webhook\" needs listen_secret (the webhook's secret_token)"
                    .into(),
            )),
        };
    if !valid_secret_token(secret.expose()) {
        return Err(ListenError::Config(
            "[telegram] listen_secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -".into(),
        ));
    }
    api.set_webhook(&url, secret.expose())
        .await
        .map_err(|e| ListenError::Platform(format!("setWebhook: {e}")))?;
    routes.add(
        axum::Router::new()
            .route(WEBHOOK_PATH, axum::routing::post(webhook))
            .with_state(intake),
    );
    Ok(())
}

/// One pushed update: refused without the right secret; 200 once taken; 503 when it could
/// not be taken yet (Telegram repeats it).
async fn webhook(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Re-read per request, so a rotated secret file applies at once.
    let expected = match intake.ctx().config.listen_secret("telegram") {
        Some(Ok(s)) if !s.is_empty() => s,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "telegram webhook secret cannot be read");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        Some(Ok(_)) | None => return StatusCode::UNAUTHORIZED,
    };
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.expose().as_bytes())) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(update) = serde_json::from_slice::<Update>(&body) else {
        // Signed, but no Update: a repeat could not read better, so it is not asked for.
        tracing::warn!("telegram webhook pushed a body the listener cannot read");
        return StatusCode::OK;
    };
    match take(&intake, &update).await {
        Ok(()) => StatusCode::OK,
        Err(e) => {
            tracing::warn!(update_id = update.update_id, error = %e,
                "telegram update not taken; Telegram will push it again");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_tokens_are_what_set_webhook_accepts() {
        assert!(valid_secret_token("abc-DEF_123"));
        assert!(valid_secret_token(&"x".repeat(256)));
        assert!(!valid_secret_token(""));
        assert!(!valid_secret_token(&"x".repeat(257)));
        assert!(!valid_secret_token("has space"));
        assert!(!valid_secret_token("ünïcode"));
    }
}
