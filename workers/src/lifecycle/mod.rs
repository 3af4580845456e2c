//! Binding lifecycle: when a binding expires (idle timeout, max age), how it ends (through
//! `ending`, with at most one farewell posted by the bot identity), and the sweeper that
//! finds expired bindings — safe to run in every binder instance at once.

pub mod sweeper;

use crate::binder::binding_event;
use crate::error::WorkError;
use crate::ids;
use crate::plumbing::nats::Outgoing;
use crate::plumbing::Plumbing;
use threadline_schemas::{
    BindingChange, BindingRecord, ConversationRef, DeliveryAction, DeliveryCommand, DeliveryMode,
    SCHEMA_VERSION,
};

/// The `reason` of a farewell post; deliverers post these as the bot, never a persona.
pub const FAREWELL_REASON: &str = "farewell";

/// Why a binding is over, as published on `tl.out.binding.reason`.
pub mod reason {
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    pub const MAX_AGE: &str = "max_age";
    pub const THREAD_ARCHIVED: &str = "thread_archived";
    pub const THREAD_DELETED: &str = "thread_deleted";
    /// Closed by a moderator (Discord: a locked thread refuses the bot's posts).
    pub const THREAD_LOCKED: &str = "thread_locked";
    /// The bot was removed from the bound conversation (Matrix: kicked or banned).
    pub const BOT_REMOVED: &str = "bot_removed";
}

/// When the binding should next be checked for expiry (Unix ms).
pub fn next_check(binding: &BindingRecord) -> u64 {
    let idle = binding
        .last_activity_at
        .saturating_add(binding.idle_timeout_ms);
    match binding.max_age_ms {
        Some(max_age) => idle.min(binding.bound_at.saturating_add(max_age)),
        None => idle,
    }
}

/// Whether the binding is expired at `now_ms`, and why. Max age wins over idleness.
pub fn expiry(binding: &BindingRecord, now_ms: u64) -> Option<&'static str> {
    if binding
        .max_age_ms
        .is_some_and(|max_age| now_ms >= binding.bound_at.saturating_add(max_age))
    {
        return Some(reason::MAX_AGE);
    }
    (now_ms
        >= binding
            .last_activity_at
            .saturating_add(binding.idle_timeout_ms))
    .then_some(reason::IDLE_TIMEOUT)
}

/// Where a farewell goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Farewell {
    /// In the bound conversation itself (expiry).
    InConversation,
    /// In the conversation holding the thread (the thread is archived: cannot post there).
    InParent,
    /// None (the thread is gone).
    None,
}

/// The farewell's text.
pub fn farewell_text(why: &str) -> String {
    let because = match why {
        reason::IDLE_TIMEOUT => "it was idle too long",
        reason::MAX_AGE => "it reached its maximum age",
        reason::THREAD_ARCHIVED => "its thread was archived",
        reason::THREAD_LOCKED => "its thread was locked",
        _other => "it was unbound",
    };
    format!("👋 This session has ended because {because}. Messages here no longer reach it.")
}

fn farewell_command(
    binding: &BindingRecord,
    destination: ConversationRef,
    mode: DeliveryMode,
    why: &str,
) -> DeliveryCommand {
    DeliveryCommand {
        v: SCHEMA_VERSION,
        event_id: format!("farewell:{}", binding.binding_id),
        delivery_id: ids::farewell_delivery_id(&binding.binding_id),
        action: DeliveryAction::Post {
            destination,
            content: farewell_text(why),
            mode,
            reason: FAREWELL_REASON.into(),
            session_key: Some(binding.target_session_key.clone()),
            // Not an activity: a farewell must not keep the binding alive.
            binding_id: None,
        },
    }
}

/// Ends a binding through `ending`: publishes the farewell (at most one is ever posted: its
/// delivery id is fixed per binding) and `tl.out.binding` `ending`, then marks it ended and
/// publishes `ended`. A crash anywhere is finished by the next call for the same binding,
/// so callers (the sweeper, a deliverer that found the thread gone) may simply retry.
/// Returns whether the binding is ended now (false when it was gone or ended before).
pub async fn end_binding(
    plumbing: &Plumbing,
    session_key: &str,
    binding_id: &str,
    why: &str,
    farewell: Farewell,
) -> Result<bool, WorkError> {
    let store = &plumbing.store;
    if !store.begin_ending(session_key, binding_id, why).await? {
        // Ended already (or unknown): no more expiry checks; the owner link stays
        // `ended_ttl_ms`, then the sweeper drops it.
        store.retire_sweep(session_key, binding_id).await?;
        return Ok(false);
    }
    let Some(binding) = store
        .load_session(session_key)
        .await?
        .and_then(|s| s.bindings.into_iter().find(|b| b.binding_id == binding_id))
    else {
        return Ok(false);
    };
    let mut out = Vec::new();
    let target = match farewell {
        Farewell::InConversation => Some((binding.conversation.clone(), DeliveryMode::Bound)),
        Farewell::InParent => Some((binding.conversation.parent(), DeliveryMode::Requester)),
        Farewell::None => None,
    };
    if let Some((destination, mode)) = target {
        let command = farewell_command(&binding, destination.clone(), mode, why);
        out.push(Outgoing::event(
            plumbing.deliver_subject(&destination),
            command.delivery_id.clone(),
            &command,
        ));
    }
    out.push(binding_event(plumbing, binding, BindingChange::Ending, why));
    plumbing.publisher.send_all(out).await?;
    if let Some(ended) = store.end_binding(session_key, binding_id, why).await? {
        plumbing
            .publisher
            .send(binding_event(plumbing, ended, BindingChange::Ended, why))
            .await?;
    }
    store.retire_sweep(session_key, binding_id).await?;
    tracing::info!(
        session_key,
        binding_id,
        reason = why,
        ?farewell,
        "binding ended"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_schemas::{BindingStatus, DeliveryPolicy};

    fn binding(last: u64, idle: u64, max_age: Option<u64>) -> BindingRecord {
        BindingRecord {
            binding_id: "b".into(),
            target_session_key: "s".into(),
            conversation: ConversationRef {
                channel: "discord".into(),
                account_id: "a".into(),
                conversation_id: "t".into(),
                parent_conversation_id: Some("c".into()),
            },
            status: BindingStatus::Active,
            bound_at: 1_000,
            last_activity_at: last,
            idle_timeout_ms: idle,
            max_age_ms: max_age,
            delivery: DeliveryPolicy::BoundOnly,
            end_reason: None,
            metadata: Default::default(),
        }
    }

    #[test]
    fn idle_bindings_expire_after_their_last_activity() {
        let b = binding(5_000, 1_000, None);
        assert_eq!(next_check(&b), 6_000);
        assert_eq!(expiry(&b, 5_999), None);
        assert_eq!(expiry(&b, 6_000), Some(reason::IDLE_TIMEOUT));
    }

    #[test]
    fn max_age_ends_even_an_active_conversation() {
        let b = binding(9_000, 10_000, Some(8_000));
        assert_eq!(next_check(&b), 9_000);
        assert_eq!(expiry(&b, 9_000), Some(reason::MAX_AGE));
    }
}
