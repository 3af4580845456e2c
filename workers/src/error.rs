//! The one error type handlers return. Each variant knows whether the run loop should retry
//! (and when), refuse the event, or give up — matched exhaustively, never with `_ =>`.

use std::time::Duration;
use threadline_schemas::RejectCode;

/// What went wrong while handling one event.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// NATS publish or request failed; the broker may be restarting.
    #[error("NATS is unavailable: {0}")]
    Nats(String),
    /// Redis command failed; the store may be restarting.
    #[error("Redis is unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// The platform asked us to slow down. A wait, not a failure: it never spends the retry
    /// budget, so sustained rate limiting delays posts but never dead-letters them or leaves
    /// a multi-part post half-delivered.
    #[error("platform rate limit; retry after {after:?}")]
    RateLimited {
        /// When the platform said to try again.
        after: Duration,
    },
    /// The platform failed in a way that may pass (5xx, timeout, connection reset).
    #[error("platform error that may pass: {0}")]
    Transient(String),
    /// Nothing is wrong, the work cannot be done yet (e.g. a binding is still pending,
    /// another instance holds the post's claim). Does not spend the retry budget.
    #[error("not yet: {reason}")]
    NotYet {
        /// What is not ready yet, for logs.
        reason: String,
        /// When to look again.
        after: Duration,
    },
    /// The event is valid but refused; ends in `tl.out.rejected`.
    #[error("{code}: {message}")]
    Rejected {
        /// The documented reason code of `tl.out.rejected`.
        code: RejectCode,
        /// The reason in words.
        message: String,
    },
    /// State in Redis or a stored record cannot be read; retrying cannot help.
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
}

/// How the run loop settles a message after its handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// `Nak` with this delay; counts against the retry budget.
    Retry(Option<Duration>),
    /// `Nak` with this delay; does not count against the retry budget.
    Wait(Duration),
    /// Publish `tl.out.rejected` and ack.
    Reject,
    /// Give up now: the handler's give-up hook, a dead letter, `Term`.
    GiveUp,
}

impl WorkError {
    /// The run loop's decision for this error.
    pub(crate) fn settle(&self) -> Settle {
        match self {
            WorkError::Nats(_) | WorkError::Redis(_) | WorkError::Transient(_) => {
                Settle::Retry(None)
            }
            WorkError::RateLimited { after } | WorkError::NotYet { after, .. } => {
                Settle::Wait(*after)
            }
            WorkError::Rejected { .. } => Settle::Reject,
            WorkError::Corrupt(_) => Settle::GiveUp,
        }
    }

    /// Whether trying again later could succeed.
    pub fn is_retryable(&self) -> bool {
        match self.settle() {
            Settle::Retry(_) | Settle::Wait(_) => true,
            Settle::Reject | Settle::GiveUp => false,
        }
    }

    /// A short machine-readable code for `tl.out.failed` and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            WorkError::Nats(_) => "nats_unavailable",
            WorkError::Redis(_) => "redis_unavailable",
            WorkError::RateLimited { .. } => "rate_limited",
            WorkError::Transient(_) => "platform_unavailable",
            WorkError::NotYet { .. } => "not_yet",
            WorkError::Rejected { code, .. } => code.as_str(),
            WorkError::Corrupt(_) => "corrupt_state",
        }
    }

    pub(crate) fn rejected(code: RejectCode, message: impl Into<String>) -> Self {
        WorkError::Rejected {
            code,
            message: message.into(),
        }
    }
}

impl From<async_nats::Error> for WorkError {
    fn from(e: async_nats::Error) -> Self {
        WorkError::Nats(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_a_wait_of_its_retry_after_not_a_failure() {
        let after = Duration::from_millis(1_250);
        assert_eq!(
            WorkError::RateLimited { after }.settle(),
            Settle::Wait(after)
        );
        assert!(WorkError::RateLimited { after }.is_retryable());
        assert_eq!(
            WorkError::Transient("502".into()).settle(),
            Settle::Retry(None)
        );
    }

    #[test]
    fn refusals_and_unreadable_state_are_not_retried_and_every_error_has_its_code() {
        let rejected = WorkError::rejected(RejectCode::UnknownChannel, "no adapter");
        assert!(!rejected.is_retryable());
        assert!(!WorkError::Corrupt("bad record".into()).is_retryable());
        assert_eq!(rejected.code(), "unknown_channel");
        assert_eq!(
            WorkError::RateLimited {
                after: Duration::ZERO
            }
            .code(),
            "rate_limited"
        );
        assert_eq!(
            WorkError::Transient("x".into()).code(),
            "platform_unavailable"
        );
        assert_eq!(WorkError::Corrupt("x".into()).code(), "corrupt_state");
    }
}
