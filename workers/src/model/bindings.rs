//! The rules of a binding's life: when it expires (idle timeout, max age), why it ended, and
//! where and what its farewell is.

use threadline_schemas::BindingRecord;

/// The `reason` of a farewell post; deliverers post these as the bot, never a persona.
pub const FAREWELL_REASON: &str = "farewell";

/// Why a binding is over, as published on `tl.out.binding.reason`.
pub mod reason {
    /// Idle longer than its idle timeout.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// Older than its maximum age.
    pub const MAX_AGE: &str = "max_age";
    /// The bound thread was archived (closed).
    pub const THREAD_ARCHIVED: &str = "thread_archived";
    /// The bound thread was deleted.
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

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_schemas::{BindingStatus, ConversationRef, DeliveryPolicy};

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
