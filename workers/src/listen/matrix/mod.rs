//! The Matrix listener (docs/listen-matrix.md), in one of two modes:
//!
//! - `sync`: the bot account's `/sync` long poll, by the one replica holding the unit of
//!   lease group `listen:matrix:<account>`; the `since` token is the unit's cursor, saved only
//!   after every event of the batch was taken ([`sync`]).
//! - `appservice`: the homeserver PUTs transactions to `listen_addr`; any replica answers,
//!   and a transaction is answered 200 only once every event in it was taken
//!   ([`appservice`]).
//!
//! Both turn events into intake calls the same way ([`take_events`]).

mod appservice;
pub(crate) mod events;
mod sync;

use super::{Intake, ListenError, Routes};
use crate::config::ListenMode;
use crate::error::WorkError;
use events::{map_event, Mapped, Names};
use serde_json::Value;
use threadline_schemas::ConversationChange;
use tokio::task::JoinSet;

/// Starts the Matrix listener in its configured mode.
pub(crate) async fn start(
    intake: Intake,
    tasks: &mut JoinSet<()>,
    routes: &mut Routes,
) -> Result<(), ListenError> {
    match intake.platform().listen {
        ListenMode::Sync => sync::start(intake, tasks),
        ListenMode::Appservice => appservice::start(intake, routes),
        mode @ (ListenMode::Off
        | ListenMode::Gateway
        | ListenMode::Events
        | ListenMode::Socket
        | ListenMode::Poll
        | ListenMode::Webhook) => Err(ListenError::Config(format!(
            "[matrix] listen = \"{}\" is not a Matrix mode",
            mode.name()
        ))),
    }
}

/// Takes `events` of `room`, in order; stops at the first that could not be taken (the
/// caller must not acknowledge the batch then: it is heard again, and what was taken
/// collapses).
pub(crate) async fn take_events(
    intake: &Intake,
    room: &str,
    events: &[Value],
    names: &Names,
) -> Result<(), WorkError> {
    let conversation = |id: &str, parent: Option<&str>| intake.conversation(id, parent);
    for event in events {
        match map_event(room, event, names, &conversation) {
            Mapped::Message(heard) => {
                intake.message(heard).await?;
            }
            Mapped::Redacted { conversation, key } => {
                // Most redactions hit ordinary messages; only a thread root with a binding
                // means something to the binder.
                if intake
                    .ctx()
                    .store
                    .bindings_for_conversation(&conversation)
                    .await?
                    .is_empty()
                {
                    continue;
                }
                intake
                    .change(conversation, ConversationChange::RootDeleted, &key)
                    .await?;
            }
            Mapped::Ignored => {}
        }
    }
    Ok(())
}
