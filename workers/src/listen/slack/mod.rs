//! The Slack listener, in the mode `[slack] listen` names:
//!
//! - `events`: the Events API. Slack POSTs each event to `POST /slack/events` on the one HTTP
//!   server; every request's signature is checked, the event is taken (stored in JetStream)
//!   and only then answered 200, within Slack's 3 s. A request that cannot be taken in time
//!   is answered 503, so Slack retries it; its retries, and the same event reaching two
//!   replicas behind a load balancer, collapse to one input by the event's deterministic id.
//!   Any number of replicas.
//! - `socket`: Socket Mode. `connections` websockets (default 2) from `apps.connections.open`
//!   with the app-level token; each envelope is acknowledged only once its event was taken,
//!   so one Slack redelivers when a listener dies. Reconnects on `disconnect` and on a dropped
//!   socket. Every replica opens its own connections (Slack spreads events over all of an
//!   app's connections): any number of replicas, too.
//!
//! Both modes read the same payloads (`event.rs`) and take them the same way ([`take`]).

mod event;
mod events_api;
mod socket;
mod verify;

use super::{Heard, Intake, ListenError, Routes, Taken};
use crate::config::ListenMode;
use crate::WorkError;
use event::{Change, Changed, Inbound, Said};
use threadline_schemas::{Attachment, Author, ConversationChange};
use tokio::task::JoinSet;

/// Starts the Slack listener in `intake`'s configured mode: the Events API route, or the
/// Socket Mode connections on `tasks` (they return when `intake.ctx().shutdown` is cancelled).
pub(crate) async fn start(
    intake: Intake,
    tasks: &mut JoinSet<()>,
    routes: &mut Routes,
) -> Result<(), ListenError> {
    let config = &intake.ctx().config;
    match intake.platform().listen {
        ListenMode::Off => Ok(()),
        ListenMode::Events => {
            // Read once now so a missing secret stops start-up; every request reads it again,
            // so a rotated secret file takes effect without a restart.
            secret(config.listen_secret("slack"), "listen_secret")?;
            routes.add(events_api::routes(intake));
            Ok(())
        }
        ListenMode::Socket => {
            secret(config.app_token("slack"), "app_token")?;
            let connections = intake
                .platform()
                .connections
                .unwrap_or(socket::DEFAULT_CONNECTIONS)
                .clamp(1, socket::MAX_CONNECTIONS);
            for slot in 0..connections {
                tasks.spawn(socket::run(intake.clone(), slot));
            }
            Ok(())
        }
        mode @ (ListenMode::Gateway
        | ListenMode::Poll
        | ListenMode::Webhook
        | ListenMode::Sync
        | ListenMode::Appservice) => Err(ListenError::Config(format!(
            "[slack] listen = {mode:?}: Slack listens with `events` (the Events API) or `socket` \
             (Socket Mode)"
        ))),
    }
}

/// A configured, readable, non-empty secret, or why not (never the value).
fn secret(
    found: Option<Result<crate::config::Secret, std::io::Error>>,
    setting: &str,
) -> Result<crate::config::Secret, ListenError> {
    match found {
        Some(Ok(secret)) if !secret.is_empty() => Ok(secret),
        Some(Ok(_)) | None => Err(ListenError::Config(format!(
            "[slack] {setting} (or {setting}_file) is not set"
        ))),
        Some(Err(e)) => Err(ListenError::Config(format!(
            "[slack] {setting}_file cannot be read: {e}"
        ))),
    }
}

/// Takes what one event means: publishes a message or a conversation's change and waits
/// until it is stored. `Ok` only then; ignored events are `Ok(None)`.
async fn take(intake: &Intake, inbound: Inbound) -> Result<Option<Taken>, WorkError> {
    match inbound {
        Inbound::Said(said) => intake.message(heard(intake, said)).await.map(Some),
        Inbound::Changed(changed) => {
            let Changed {
                channel,
                thread_ts,
                change,
                key,
            } = changed;
            let conversation = match &thread_ts {
                Some(root) => intake.conversation(root, Some(&channel)),
                None => intake.conversation(&channel, None),
            };
            intake
                .change(conversation, conversation_change(change), &key)
                .await
                .map(Some)
        }
        Inbound::Ignored(why) => {
            tracing::debug!(why, "slack event not taken");
            Ok(None)
        }
    }
}

fn conversation_change(change: Change) -> ConversationChange {
    match change {
        Change::Archived => ConversationChange::Archived,
        Change::Deleted => ConversationChange::Deleted,
        Change::RootDeleted => ConversationChange::RootDeleted,
        Change::Locked => ConversationChange::Locked,
    }
}

/// A message in the shape every listener hands over. A thread is its root's `ts` under the
/// channel — exactly the conversation `deliver/slack.rs` posts a thread's replies to — so the
/// binding Threadline made for a thread it started is the one this finds.
fn heard(intake: &Intake, said: Said) -> Heard {
    let conversation = match &said.thread_ts {
        Some(root) => intake.conversation(root, Some(&said.channel)),
        None => intake.conversation(&said.channel, None),
    };
    Heard {
        conversation,
        message_id: said.ts,
        text: said.text,
        author: Author {
            id: said.author,
            is_bot: said.is_bot,
            name: said.author_name,
        },
        // Slack has no reply-to: an answer to a message is a reply in its thread, which the
        // conversation already says.
        reply_to: None,
        attachments: said
            .files
            .into_iter()
            // A file without a URL (a tombstoned or hidden one) cannot be pointed at.
            .filter_map(|f| {
                Some(Attachment {
                    url: f.url_private?,
                    name: f.name,
                    content_type: f.mimetype,
                    size: f.size,
                })
            })
            .collect(),
    }
}
