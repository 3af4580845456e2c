//! Why a chat platform refused a post or a thread for good, in Threadline's words: the code
//! published on `tl.out.failed.code`, and — when the refusal means the bound thread is lost —
//! on `tl.out.binding.reason` (docs/contract.md). Each adapter maps its platform's errors
//! onto these; the deliverer and the router act on them by variant, never by string.

use crate::model::bindings::{reason, Farewell};
use std::fmt;

/// A permanent platform error, as Threadline names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PermanentCode {
    /// The thread (or channel) is gone.
    ThreadDeleted,
    /// The thread is archived or closed and takes no posts.
    ThreadArchived,
    /// A moderator locked the thread.
    ThreadLocked,
    /// The bot was removed from the conversation (kicked, banned, blocked).
    BotRemoved,
    /// The bot lacks the rights to do this in a conversation it is in.
    Forbidden,
    /// The platform rejected the token.
    Unauthorized,
    /// The conversation does not exist.
    NotFound,
    /// The (top-level) conversation is archived.
    Archived,
    /// The message is too large for the platform.
    TooLarge,
    /// The chat has a new id (Telegram: upgraded to a supergroup).
    ChatMigrated,
    /// The message referred to does not exist.
    UnknownMessage,
    /// The conversation holds as many active threads as the platform allows.
    ThreadLimit,
    /// The conversation is of a type that cannot take this post.
    WrongChannelType,
    /// The adapter or the conversation cannot do what was asked.
    CapabilityUnsupported,
    /// Refused for any other reason the platform named.
    Rejected,
    /// The configured URL redirects elsewhere.
    Redirected,
    /// The platform answered with a status that means nothing here.
    UnexpectedStatus,
    /// The platform put a post somewhere it was not asked to.
    UnexpectedPlacement,
    /// The channel's configuration cannot work (an unusable URL).
    BadConfig,
    /// The platform's answer could not be read.
    BadResponse,
    /// A code Threadline does not act on (a webhook receiver's `http_<status>`, or a code a
    /// newer version recorded), kept as it was given.
    Other(String),
}

impl PermanentCode {
    /// Every code Threadline acts on, for parsing.
    const KNOWN: [PermanentCode; 20] = [
        PermanentCode::ThreadDeleted,
        PermanentCode::ThreadArchived,
        PermanentCode::ThreadLocked,
        PermanentCode::BotRemoved,
        PermanentCode::Forbidden,
        PermanentCode::Unauthorized,
        PermanentCode::NotFound,
        PermanentCode::Archived,
        PermanentCode::TooLarge,
        PermanentCode::ChatMigrated,
        PermanentCode::UnknownMessage,
        PermanentCode::ThreadLimit,
        PermanentCode::WrongChannelType,
        PermanentCode::CapabilityUnsupported,
        PermanentCode::Rejected,
        PermanentCode::Redirected,
        PermanentCode::UnexpectedStatus,
        PermanentCode::UnexpectedPlacement,
        PermanentCode::BadConfig,
        PermanentCode::BadResponse,
    ];

    /// The code on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            PermanentCode::ThreadDeleted => reason::THREAD_DELETED,
            PermanentCode::ThreadArchived => reason::THREAD_ARCHIVED,
            PermanentCode::ThreadLocked => reason::THREAD_LOCKED,
            PermanentCode::BotRemoved => reason::BOT_REMOVED,
            PermanentCode::Forbidden => "forbidden",
            PermanentCode::Unauthorized => "unauthorized",
            PermanentCode::NotFound => "not_found",
            PermanentCode::Archived => "archived",
            PermanentCode::TooLarge => "too_large",
            PermanentCode::ChatMigrated => "chat_migrated",
            PermanentCode::UnknownMessage => "unknown_message",
            PermanentCode::ThreadLimit => "thread_limit",
            PermanentCode::WrongChannelType => "wrong_channel_type",
            PermanentCode::CapabilityUnsupported => "capability_unsupported",
            PermanentCode::Rejected => "rejected",
            PermanentCode::Redirected => "redirected",
            PermanentCode::UnexpectedStatus => "unexpected_status",
            PermanentCode::UnexpectedPlacement => "unexpected_placement",
            PermanentCode::BadConfig => "bad_config",
            PermanentCode::BadResponse => "bad_response",
            PermanentCode::Other(code) => code,
        }
    }

    /// The code a wire string names (as recorded in a part's claim or a binding's end
    /// reason); one Threadline does not act on stays [`PermanentCode::Other`].
    pub fn parse(code: &str) -> PermanentCode {
        PermanentCode::KNOWN
            .into_iter()
            .find(|known| known.as_str() == code)
            .unwrap_or_else(|| PermanentCode::Other(code.to_owned()))
    }

    /// Whether the bound conversation can take no post any more, and then where its
    /// binding's farewell goes: in the parent when the thread is only closed, nowhere when
    /// it is gone or the bot is out of it.
    pub fn lost_thread(&self) -> Option<Farewell> {
        match self {
            PermanentCode::ThreadArchived | PermanentCode::ThreadLocked => Some(Farewell::InParent),
            PermanentCode::ThreadDeleted | PermanentCode::BotRemoved => Some(Farewell::None),
            PermanentCode::Forbidden
            | PermanentCode::Unauthorized
            | PermanentCode::NotFound
            | PermanentCode::Archived
            | PermanentCode::TooLarge
            | PermanentCode::ChatMigrated
            | PermanentCode::UnknownMessage
            | PermanentCode::ThreadLimit
            | PermanentCode::WrongChannelType
            | PermanentCode::CapabilityUnsupported
            | PermanentCode::Rejected
            | PermanentCode::Redirected
            | PermanentCode::UnexpectedStatus
            | PermanentCode::UnexpectedPlacement
            | PermanentCode::BadConfig
            | PermanentCode::BadResponse
            | PermanentCode::Other(_) => None,
        }
    }
}

impl fmt::Display for PermanentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_reads_back_as_itself_and_keeps_its_wire_name() {
        let wire: Vec<&str> = PermanentCode::KNOWN
            .iter()
            .map(PermanentCode::as_str)
            .collect();
        assert_eq!(
            wire,
            [
                "thread_deleted",
                "thread_archived",
                "thread_locked",
                "bot_removed",
                "forbidden",
                "unauthorized",
                "not_found",
                "archived",
                "too_large",
                "chat_migrated",
                "unknown_message",
                "thread_limit",
                "wrong_channel_type",
                "capability_unsupported",
                "rejected",
                "redirected",
                "unexpected_status",
                "unexpected_placement",
                "bad_config",
                "bad_response",
            ]
        );
        for code in PermanentCode::KNOWN {
            assert_eq!(PermanentCode::parse(code.as_str()), code);
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    #[test]
    fn a_code_threadline_does_not_act_on_is_kept_as_given() {
        let code = PermanentCode::parse("http_418");
        assert_eq!(code, PermanentCode::Other("http_418".into()));
        assert_eq!(code.as_str(), "http_418");
        assert_eq!(code.lost_thread(), None);
    }

    #[test]
    fn a_closed_thread_says_goodbye_in_its_parent_and_a_gone_one_nowhere() {
        assert_eq!(
            PermanentCode::ThreadArchived.lost_thread(),
            Some(Farewell::InParent)
        );
        assert_eq!(
            PermanentCode::ThreadLocked.lost_thread(),
            Some(Farewell::InParent)
        );
        assert_eq!(
            PermanentCode::ThreadDeleted.lost_thread(),
            Some(Farewell::None)
        );
        assert_eq!(
            PermanentCode::BotRemoved.lost_thread(),
            Some(Farewell::None)
        );
        for kept in [
            PermanentCode::Forbidden,
            PermanentCode::Archived,
            PermanentCode::NotFound,
            PermanentCode::Rejected,
        ] {
            assert_eq!(kept.lost_thread(), None, "{kept}");
        }
    }
}
