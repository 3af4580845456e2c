//! What a chat platform adapter is: its capabilities (which drive the binder's and router's
//! decisions) and two operations, post and create-thread, whose errors say whether trying
//! again can help.

pub use crate::model::channels::Capabilities;
use crate::model::platform_codes::PermanentCode;
pub use crate::render::Markup;
use std::future::Future;
use std::time::Duration;
use threadline_schemas::{ContentFormat, ConversationRef, SessionPersona};

/// One part of one post.
#[derive(Debug, Clone, Copy)]
pub struct PostRequest<'a> {
    /// Where the part goes.
    pub conversation: &'a ConversationRef,
    /// The part's text, rendered for the platform ([`crate::render`]).
    pub text: &'a str,
    /// Matrix: the part's `formatted_body`.
    pub html: Option<&'a str>,
    /// How the content was written (a webhook receiver renders it itself).
    pub format: ContentFormat,
    /// The users the part may notify (allowed by the event and mentioned in the part).
    pub mentions: &'a [String],
    /// The platform message the post answers. Where a reply is one message, only the first
    /// part is marked as one; Slack's reply is its thread, which holds every part.
    pub reply_to: Option<&'a str>,
    /// The name and picture the post shows instead of the bot's, where the platform can.
    pub persona: Option<&'a SessionPersona>,
    /// Stable per (delivery, part): the platform idempotency key where there is one.
    pub idempotency_key: &'a str,
    /// The completion (or send) the post belongs to.
    pub event_id: &'a str,
    /// The delivery the part belongs to: one per (event, destination).
    pub delivery_id: &'a str,
    /// This part's index.
    pub part: usize,
    /// How many parts the post has.
    pub parts: usize,
    /// The session the post speaks for, when there is one.
    pub session_key: Option<&'a str>,
    /// Post as the bot itself, never a persona (farewells: they must not echo as input).
    pub bot_only: bool,
}

/// A thread to create under `parent`.
#[derive(Debug, Clone, Copy)]
pub struct ThreadRequest<'a> {
    /// The conversation the thread is created in.
    pub parent: &'a ConversationRef,
    /// The thread's name.
    pub name: &'a str,
    /// Stable per creation: the platform idempotency key where there is one.
    pub idempotency_key: &'a str,
    /// The session the thread is for.
    pub session_key: &'a str,
}

/// What the platform answered to a successful post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The platform's id of the message.
    pub message_id: String,
    /// The author the platform recorded (our bot's id): learned for echo suppression.
    pub author_id: Option<String>,
}

/// A platform call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// 429: wait this long.
    #[error("rate limited for {after:?}")]
    RateLimited {
        /// How long to wait.
        after: Duration,
    },
    /// Worth retrying (408, 5xx, timeouts, connection failures). `maybe_applied` when the
    /// request may have reached the platform and been acted on.
    #[error("transient platform failure: {message}")]
    Transient {
        /// What the platform or the transport said.
        message: String,
        /// Whether the request may have been acted on.
        maybe_applied: bool,
    },
    /// Never worth retrying (other 4xx). `code` is Threadline's name for it
    /// (`thread_deleted`, `thread_archived`, `forbidden`, …).
    #[error("{code}: {message}")]
    Permanent {
        /// Threadline's name for it.
        code: PermanentCode,
        /// The platform's own words.
        message: String,
    },
    /// The platform took the post but put it in the destination's parent conversation, not
    /// in the thread asked for: Slack answers `ok` to a reply whose thread root was deleted
    /// and posts it at the channel's top level. The post exists (`receipt`); `code` says why
    /// the thread could not hold it (`thread_deleted`).
    #[error("{code}: posted in the parent conversation as {}", receipt.message_id)]
    PostedInParent {
        /// Why the thread could not hold it.
        code: PermanentCode,
        /// The post, where the platform put it.
        receipt: Receipt,
    },
}

/// One chat platform.
pub trait Adapter: Send + Sync + 'static {
    /// The channel name events use (`discord`, `webhook:<name>`).
    fn channel(&self) -> &str;

    /// What the channel can do (drives the binder's and the router's decisions).
    fn capabilities(&self) -> Capabilities;

    /// How content is rendered for this channel.
    fn markup(&self) -> Markup {
        Markup::AsWritten
    }

    /// Whether re-sending this post with its key cannot duplicate it. Per post, because one
    /// platform may post through identities with and without keys (Discord bot vs persona).
    fn keyed(&self, _request: &PostRequest<'_>) -> bool {
        self.capabilities().idempotency_key
    }

    /// How long the platform remembers an idempotency key, when only for a while: an attempt
    /// in doubt older than this is settled by read-back, never by re-sending with the key.
    /// `None`: the key holds for as long as Threadline's own dedup record.
    fn key_window(&self) -> Option<Duration> {
        None
    }

    /// Posts one message part.
    fn post(
        &self,
        request: PostRequest<'_>,
    ) -> impl Future<Output = Result<Receipt, PlatformError>> + Send;

    /// Creates a thread; returns the thread as a conversation.
    fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> impl Future<Output = Result<ConversationRef, PlatformError>> + Send;

    /// Platforms with read-back: finds the message an earlier attempt of this part posted
    /// (by the idempotency key the adapter attaches to every post) since `since_ms`.
    fn find_posted(
        &self,
        _request: PostRequest<'_>,
        _since_ms: u64,
    ) -> impl Future<Output = Result<Option<Receipt>, PlatformError>> + Send {
        async { Ok(None) }
    }

    /// Deletes a message this adapter posted (`message_id` from its [`Receipt`]) in
    /// `conversation`: how a post the platform placed where the session forbids
    /// ([`PlatformError::PostedInParent`] under `fail_closed`) is taken back. A message
    /// already gone counts as deleted.
    fn delete(
        &self,
        _conversation: &ConversationRef,
        _message_id: &str,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send {
        async {
            Err(PlatformError::Permanent {
                code: PermanentCode::CapabilityUnsupported,
                message: "this adapter cannot delete its posts".into(),
            })
        }
    }

    /// Platforms with read-back: finds the thread an earlier attempt created.
    fn find_thread(
        &self,
        _request: ThreadRequest<'_>,
        _since_ms: u64,
    ) -> impl Future<Output = Result<Option<ConversationRef>, PlatformError>> + Send {
        async { Ok(None) }
    }
}
