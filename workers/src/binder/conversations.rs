//! Conversation changes (`tl.in.conversation.<channel>`): a thread locked, archived or
//! deleted, or the message it hangs from deleted, ends every binding on it — as soon as the
//! listener hears it, not when the next post fails.

use crate::error::WorkError;
use crate::model::bindings::Farewell;
use crate::runtime::ending::end_binding;
use crate::runtime::runloop::{Attempt, Handler};
use crate::runtime::WorkerContext;
use threadline_schemas::{ConversationChange, ConversationChanged, Stage};

/// Handles `tl.in.conversation.>`.
pub(crate) struct Conversations {
    ctx: WorkerContext,
}

impl Conversations {
    pub(crate) fn new(ctx: WorkerContext) -> Self {
        Conversations { ctx }
    }
}

/// Why a binding ends, and where its farewell goes, when its conversation changed; `None`
/// when the change ends nothing. A thread's reasons are the platform codes a failed post
/// would have recorded, so routing names the lost thread the same way whoever noticed.
pub(crate) fn ending(change: ConversationChange, thread: bool) -> Option<(&'static str, Farewell)> {
    match (change, thread) {
        (ConversationChange::Reopened, _) => None,
        (ConversationChange::Locked, true) => Some(("thread_locked", Farewell::InParent)),
        (ConversationChange::Archived, true) => Some(("thread_archived", Farewell::InParent)),
        (ConversationChange::Deleted, true) => Some(("thread_deleted", Farewell::None)),
        // The thread is still there and people may still read it: say goodbye in it.
        (ConversationChange::RootDeleted, _) => {
            Some(("thread_root_deleted", Farewell::InConversation))
        }
        (ConversationChange::Locked, false) => Some(("locked", Farewell::None)),
        (ConversationChange::Archived, false) => Some(("archived", Farewell::None)),
        (ConversationChange::Deleted, false) => Some(("deleted", Farewell::None)),
    }
}

impl Handler for Conversations {
    type Event = ConversationChanged;

    fn stage(&self) -> Stage {
        Stage::Binder
    }

    async fn handle(
        &self,
        changed: &ConversationChanged,
        _attempt: Attempt,
    ) -> Result<(), WorkError> {
        let thread = changed.conversation.parent_conversation_id.is_some();
        let Some((why, farewell)) = ending(changed.change, thread) else {
            tracing::info!(event_id = %changed.event_id, "conversation reopened; ended bindings stay ended");
            return Ok(());
        };
        let bound = self
            .ctx
            .store
            .sessions_bound_to(&changed.conversation)
            .await?;
        for (session, binding) in bound {
            end_binding(
                &self.ctx,
                &session.session_key,
                &binding.binding_id,
                why,
                farewell,
            )
            .await?;
        }
        Ok(())
    }

    async fn give_up(
        &self,
        _c: &ConversationChanged,
        _e: &WorkError,
        _a: Attempt,
    ) -> Result<(), WorkError> {
        // The dead letter is the record; the bindings still end when a post finds them gone.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_thread_ends_with_the_reason_a_failed_post_would_record() {
        assert_eq!(
            ending(ConversationChange::Deleted, true),
            Some(("thread_deleted", Farewell::None))
        );
        assert_eq!(
            ending(ConversationChange::Locked, true),
            Some(("thread_locked", Farewell::InParent))
        );
        assert_eq!(
            ending(ConversationChange::Archived, true),
            Some(("thread_archived", Farewell::InParent))
        );
    }

    #[test]
    fn a_deleted_root_says_goodbye_in_the_thread_and_a_reopening_ends_nothing() {
        assert_eq!(
            ending(ConversationChange::RootDeleted, true),
            Some(("thread_root_deleted", Farewell::InConversation))
        );
        assert_eq!(ending(ConversationChange::Reopened, true), None);
        assert_eq!(ending(ConversationChange::Reopened, false), None);
    }

    #[test]
    fn a_changed_channel_ends_its_bindings_without_a_farewell() {
        for change in [
            ConversationChange::Locked,
            ConversationChange::Archived,
            ConversationChange::Deleted,
        ] {
            assert_eq!(ending(change, false).map(|(_, f)| f), Some(Farewell::None));
        }
    }
}
