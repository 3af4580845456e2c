//! The Slack listener (being built: issue 30).

use super::{Intake, ListenError, Routes};
use tokio::task::JoinSet;

/// Starts the Slack listener in its configured mode.
pub(crate) async fn start(
    intake: Intake,
    _tasks: &mut JoinSet<()>,
    _routes: &mut Routes,
) -> Result<(), ListenError> {
    Err(ListenError::Config(format!(
        "the {} listener is not built yet",
        intake.channel()
    )))
}
