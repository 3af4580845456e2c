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
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The `event_id` of the `tl.in.spawn` event.
    pub event_id: String,
    /// The session's key: the named one, or a generated `agent:<agent_id>:subagent:<uuid>`.
    pub session_key: String,
    /// The session's label, when the spawn gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The session's mode: `run` or `session`.
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
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The refused event's `event_id`.
    pub event_id: String,
    /// The stage that refused it: `binder`, `router` or `deliver.<channel>`.
    pub stage: String,
    /// Why, as a [`RejectCode`](crate::RejectCode) string (`malformed`, `invalid_event`, …).
    pub code: String,
    /// Human-readable detail, e.g. which field is missing.
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
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The inbound event whose output was posted.
    pub event_id: String,
    /// Where it was posted.
    pub destination: ConversationRef,
    /// Why this destination was chosen: `bound`, `requester` or `fallback`.
    pub mode: DeliveryMode,
    /// Why this destination, e.g. `no_placement`, `binding_ended`, `thread_deleted`.
    pub reason: String,
    /// The platform's id of the (first) message.
    pub platform_message_id: String,
    /// Every part's id when the content was split; the first equals `platform_message_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_message_ids: Vec<String>,
    /// The session whose output this was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Set when an earlier attempt's outcome was unknown and had to be settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<Reconciliation>,
}

/// `tl.out.failed`: one destination was given up (or, with `fail_closed`, never tried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostFailed {
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The inbound event whose output was not posted.
    pub event_id: String,
    /// The destination given up; absent when there was none (e.g. `no_bound_destination`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<ConversationRef>,
    /// Why, e.g. `no_bound_destination` or a permanent platform error.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// How many platform attempts were made (0 when never tried).
    pub attempts: u32,
    /// The session whose output this was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
}

/// What happened to a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingChange {
    /// `bound`: the session is now bound to the conversation.
    Bound,
    /// `ending`: the binding is ending; its farewell is being posted.
    Ending,
    /// `ended`: the binding is over.
    Ended,
}

/// `tl.out.binding`: binding lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingChanged {
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The binding after the change.
    pub binding: BindingRecord,
    /// What happened to the binding.
    pub change: BindingChange,
    /// Why the binding changed (spawn, idle timeout, max age, `unbind`, thread archived, …).
    pub reason: String,
}

/// `tl.out.unbound`: an inbound message matched no binding; the gateway handles it normally.
/// Carries the message itself, so the gateway needs no state of its own to do that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageUnbound {
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The `event_id` of the `tl.in.message.<channel>` event.
    pub event_id: String,
    /// Where the message was written.
    pub conversation: ConversationRef,
    /// The message text, copied from the `tl.in.message.<channel>` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Who wrote the message, copied from the `tl.in.message.<channel>` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    /// The platform's id of the message, when the `tl.in.message.<channel>` event had one.
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
    /// How the target fared.
    pub outcome: SendOutcome,
    /// Human-readable detail, e.g. why the target was not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `tl.out.sent`: the result of a `tl.in.send`, naming each target and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendCompleted {
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The `event_id` of the `tl.in.send` event.
    pub event_id: String,
    /// One per target; a `conversation` gives one per session bound there (or one `not_found`).
    pub results: Vec<SendResult>,
}

/// `tl.agent.<agent_id>`: input for one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInput {
    /// Schema version (always `1`); consumers refuse versions they do not know; absent means 1.
    #[serde(default = "v1")]
    pub v: u32,
    /// The inbound event this input came from (a message, send or completion, per `source`).
    pub event_id: String,
    /// The session the input is for.
    pub session_key: String,
    /// The input text: the message, the sent text, or the finished child's content.
    pub text: String,
    /// Where the input came from; replies to it belong there. Along a chain of nested
    /// sessions this stays the root conversation (and thread).
    pub origin: ConversationRef,
    /// Where the input came from: `message`, `send` or `completion`.
    pub source: InputSource,
    /// The sending session (`tl.in.send` with `from_session_key`, or the finished child).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session_key: Option<String>,
    /// `message` only: who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<crate::Author>,
    /// `message` only: the platform's id of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// `message` only: the platform's id of the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// `message` only: the files attached to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::Attachment>,
}
