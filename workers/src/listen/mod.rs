//! Listeners: Threadline hearing the platforms itself. Each turns what its platform sends
//! (Gateway dispatches, Slack events, Telegram updates, Matrix sync batches or appservice
//! transactions, a bridge's webhook calls) into `tl.in.message.<channel>` and
//! `tl.in.conversation.<channel>` events through the [`intake::Intake`], which gives each
//! one an id derived from the platform's own, so every platform message is one event however
//! often it is heard. Work only one replica may do (a poll, a sync, a Gateway shard) is held
//! through `runtime::leases`; everything the platform calls (HTTP) any replica serves.

pub(crate) mod discord;
pub(crate) mod http;
pub(crate) mod intake;
pub(crate) mod matrix;
pub(crate) mod slack;
pub(crate) mod telegram;
pub mod webhook;

pub(crate) use http::Routes;
pub(crate) use intake::{Heard, Intake, Taken};

use crate::config::{ListenMode, Platform};
use crate::error::WorkError;
use crate::runtime::WorkerContext;
use tokio::task::JoinSet;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The configuration does not allow it (a missing secret, a mode the platform lacks).
    #[error("listener configuration: {0}")]
    Config(String),
    /// The platform refused a start-up call (a bad token, `setWebhook` failed).
    #[error("the platform refused: {0}")]
    Platform(String),
    /// NATS or Redis failed while starting.
    #[error(transparent)]
    Work(#[from] WorkError),
}

/// Starts the listener of `channel` as configured: its tasks on `tasks`, its HTTP routes on
/// `routes` (served by the caller, once, for every listener of the process).
pub(crate) async fn start(
    ctx: &WorkerContext,
    channel: &str,
    tasks: &mut JoinSet<()>,
    routes: &mut Routes,
) -> Result<(), ListenError> {
    let intake = Intake::new(ctx.clone(), channel);
    let Some(platform) = Platform::parse(channel) else {
        return webhook::start(intake, routes);
    };
    let mode = ctx.config.platform_of(platform).listen;
    if mode == ListenMode::Off {
        return Err(ListenError::Config(format!(
            "[{channel}] listen is off; set it to one of {}",
            modes(platform)
        )));
    }
    if !ListenMode::of(platform).contains(&mode) {
        return Err(ListenError::Config(format!(
            "[{channel}] listen = \"{}\" is not a {channel} mode; use one of {}",
            mode.name(),
            modes(platform)
        )));
    }
    match platform {
        Platform::Discord => discord::start(intake, tasks, routes).await,
        Platform::Slack => slack::start(intake, tasks, routes).await,
        Platform::Telegram => telegram::start(intake, tasks, routes).await,
        Platform::Matrix => matrix::start(intake, tasks, routes).await,
    }
}

fn modes(platform: Platform) -> String {
    ListenMode::of(platform)
        .iter()
        .map(|m| format!("\"{}\"", m.name()))
        .collect::<Vec<_>>()
        .join(", ")
}
