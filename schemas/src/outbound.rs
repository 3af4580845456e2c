//! Events Threadline publishes on `tl.out.*` and `tl.agent.*` for anyone to observe.
//! Each carries `v` so consumers can version-check exactly like Threadline does.

use crate::common::{BindingRecord, ConversationRef, DeliveryMode, SessionMode};
use crate::inbound::Author;
use serde::{Deserialize, Serialize};

fn v1() -> u32 {
    crate::SCHEMA_VERSION
}

/// `tl.out.spawned`: a spawn was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSpawned {
    #[serde(default = "v1")]
    pub v: u32,
    pub event_id: String,
    pub session_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub mode: SessionMode,
    /// True when a named session already existed and `resume_if_exists` re-attached to it.
    pub resumed: bool,
    /// The binding the spawn created or kept; `pending` while a child thread is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingRecord>,
}

/// `tl.out.rejected`: an inbound event was refused; the original bytes are on `tl.dlq.<stage>`
/// when the event could not be decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRejected {
    #[serde(default = "v1")]
    pub v: u32,
    pub event_id: String,
    pub stage: String,
    pub code: String,
    pub message: String,
}

/// How a post whose earlier attempt had an unknown outcome was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconciliation {
    /// Re-sent with the platform's idempotency key (Discord nonce, Matrix txn id,
    /// `Idempotency-Key`): the platform guarantees one message.
    IdempotencyKey,
    /// Found our earlier message by reading the conversation back.
    ReadBack,
    /// Re-posted without any way to know whether the first attempt landed.
    UnknownOutcome,
}

/// `tl.out.delivered`: one destination was posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostDelivered {
    #[serde(default = "v1")]
    pub v: u32,
    pub event_id: String,
    pub destination: ConversationRef,
    pub mode: DeliveryMode,
    pub reason: String,
    /// The platform's id of the (first) message.
    pub platform_message_id: String,
    /// Every part's id when the content was split; the first equals `platform_message_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_message_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Set when an earlier attempt's outcome was unknown and had to be settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<Reconciliation>,
}

/// `tl.out.failed`: one destination was given up (or, with `fail_closed`, never tried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostFailed {
    #[serde(default = "v1")]
    pub v: u32,
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<ConversationRef>,
    pub code: String,
    pub message: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
}

/// What happened to a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingChange {
    Bound,
    Ending,
    Ended,
}

/// `tl.out.binding`: binding lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingChanged {
    #[serde(default = "v1")]
    pub v: u32,
    pub binding: BindingRecord,
    pub change: BindingChange,
    pub reason: String,
}

/// `tl.out.unbound`: an inbound message matched no binding; the gateway handles it normally.
/// Carries the message itself, so the gateway needs no state of its own to do that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageUnbound {
    #[serde(default = "v1")]
    pub v: u32,
    pub event_id: String,
    pub conversation: ConversationRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// Where a session input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputSource {
    /// A person wrote in a conversation the session is bound to (`tl.in.message.*`).
    Message,
    /// Another session or service sent it (`tl.in.send`).
    Send,
    /// A child session finished (a nested completion).
    Completion,
}

/// How one target of a `tl.in.send` fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendOutcome {
    /// The input is on `tl.agent.<agent_id>`.
    Delivered,
    /// No such session (or label, or no session bound to the conversation).
    NotFound,
    /// The session exists but has ended.
    Ended,
}

/// One target of a `tl.in.send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResult {
    /// The session, when the target resolved to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    pub outcome: SendOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `tl.out.sent`: the result of a `tl.in.send`, naming each target and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendCompleted {
    #[serde(default = "v1")]
    pub v: u32,
    pub event_id: String,
    pub results: Vec<SendResult>,
}

/// `tl.agent.<agent_id>`: input for one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInput {
    #[serde(default = "v1")]
    pub v: u32,
    pub event_id: String,
    pub session_key: String,
    pub text: String,
    /// Where the input came from; replies to it belong there. Along a chain of nested
    /// sessions this stays the root conversation (and thread).
    pub origin: ConversationRef,
    pub source: InputSource,
    /// The sending session (`tl.in.send` with `from_session_key`, or the finished child).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session_key: Option<String>,
}
