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
    /// The platform asked us to slow down.
    #[error("platform rate limit; retry after {after:?}")]
    RateLimited { after: Duration },
    /// The platform failed in a way that may pass (5xx, timeout, connection reset).
    #[error("platform error that may pass: {0}")]
    Transient(String),
    /// Nothing is wrong, the work cannot be done yet (e.g. a binding is still pending,
    /// another instance holds the post's claim). Does not spend the retry budget.
    #[error("not yet: {reason}")]
    NotYet { reason: String, after: Duration },
    /// The event is valid but refused; ends in `tl.out.rejected`.
    #[error("{code}: {message}")]
    Rejected { code: RejectCode, message: String },
    /// State in Redis or a stored record cannot be read; retrying cannot help.
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
}

/// How the run loop settles a message after its handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
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
    pub fn settle(&self) -> Settle {
        match self {
            WorkError::Nats(_) | WorkError::Redis(_) | WorkError::Transient(_) => {
                Settle::Retry(None)
            }
            // A platform's "slow down" is no failure: waiting it out spends no retry budget.
            WorkError::RateLimited { after } => Settle::Wait(*after),
            WorkError::NotYet { after, .. } => Settle::Wait(*after),
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

    pub fn rejected(code: RejectCode, message: impl Into<String>) -> Self {
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
