//! Events other services publish on `tl.in.*`.

use crate::common::{
    check_id, check_mentions, check_token, ContentFormat, ConversationRef, DeliveryPolicy,
    Metadata, Placement, SessionMode, SessionPersona, Validate,
};
use serde::{Deserialize, Serialize};

/// Fields every inbound event carries; read first so a rejection can name the event.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    /// The event's `v`, of whatever type, so a wrong version is reported as `unsupported_version`.
    #[serde(default)]
    pub v: Option<serde_json::Value>,
    /// The event's `event_id`, of whatever type; echoed on the rejection when it is a string.
    #[serde(default)]
    pub event_id: Option<serde_json::Value>,
}

/// Who asked for a spawn: the requesting session and the conversation it works in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requester {
    /// The requesting session's key.
    pub session_key: String,
    /// Where the requester works: parent of a `child` thread, the bound place for `current`.
    pub conversation: ConversationRef,
}

/// `tl.in.spawn`: an agent asks for a child session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequested {
    /// Schema version: Threadline reads `1` and rejects others with `unsupported_version`.
    pub v: u32,
    /// Publisher-chosen UUID, reused on retries, also `Nats-Msg-Id`; every outcome reports it.
    pub event_id: String,
    /// The agent that runs the child session; a subject token (`tl.agent.<agent_id>`).
    pub agent_id: String,
    /// Who asked for the spawn; output without a binding goes to its conversation.
    pub requester: Requester,
    /// What the child session is asked to do, as the requester phrased it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `run` (default): the session ends after its completion; `session`: it persists.
    #[serde(default)]
    pub mode: SessionMode,
    /// Where the session is bound (default `none`).
    #[serde(default)]
    pub placement: Placement,
    /// A name unique among the requester's sessions (else `label_taken`); `tl.in.send` can use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A named session (`agent:<agent_id>:…`); generated from `event_id` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// If `session_key` names an existing session, re-attach to it instead of `session_exists`.
    #[serde(default)]
    pub resume_if_exists: bool,
    /// Which destinations the bound session's output goes to (default `bound_only`).
    #[serde(default)]
    pub delivery: DeliveryPolicy,
    /// Bound destination unusable: `true` posts nothing (`tl.out.failed`), `false` falls back.
    #[serde(default)]
    pub fail_closed: bool,
    /// Idle timeout of the binding this spawn creates, in milliseconds (default 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Maximum age of the binding this spawn creates, in milliseconds (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Name of the thread created for `placement: child`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_name: Option<String>,
    /// Free-form publisher metadata; Threadline carries it and never interprets it.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// The name and picture the session's posts show, where the platform allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<SessionPersona>,
}

impl Validate for SpawnRequested {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        check_token("agent_id", &self.agent_id)?;
        check_id("requester.session_key", &self.requester.session_key)?;
        self.requester.conversation.validate()?;
        if let Some(label) = &self.label {
            check_id("label", label)?;
        }
        if let Some(persona) = &self.persona {
            persona.validate()?;
        }
        if self.idle_timeout_ms == Some(0) || self.max_age_ms == Some(0) {
            return Err("`idle_timeout_ms` and `max_age_ms` must be positive when set".into());
        }
        if let Some(key) = &self.session_key {
            check_id("session_key", key)?;
            let namespace = format!("agent:{}:", self.agent_id);
            match key.strip_prefix(&namespace) {
                Some(rest) if !rest.is_empty() => {}
                Some(_) | None => {
                    return Err(format!(
                        "`session_key` must be namespaced under the agent: `{namespace}<name>`"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Outcome of a session's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// `ok`: the run finished successfully.
    Ok,
    /// `error`: the run failed.
    Error,
    /// `timeout`: the run timed out.
    Timeout,
}

/// `tl.in.completion`: a session's run finished; `content` goes to its destination(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionReported {
    /// Schema version: Threadline reads `1` and rejects others with `unsupported_version`.
    pub v: u32,
    /// Publisher-chosen UUID, reused on retries, also `Nats-Msg-Id`; routing is fixed per id.
    pub event_id: String,
    /// The session whose run finished.
    pub session_key: String,
    /// Outcome of the run.
    pub status: RunStatus,
    /// The text to post; split into several platform messages when too long.
    pub content: String,
    /// The publisher's id of the run, carried for correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where to post when the session is unknown to Threadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<ConversationRef>,
    /// Free-form publisher metadata; Threadline carries it and never interprets it.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// How `content` is written: `markdown` (the default) or `plain`.
    #[serde(default, skip_serializing_if = "ContentFormat::is_markdown")]
    pub format: ContentFormat,
    /// The platform user ids `content` may notify, written `<@ID>` in it; nobody else is
    /// notified, and no broadcast (`@everyone`, `@here`, `<!channel>`, `@room`) ever is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// The platform message this completion answers (a session input's `message_id`):
    /// posted as a reply to it where the platform has replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

impl Validate for CompletionReported {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        check_id("session_key", &self.session_key)?;
        check_mentions(&self.mentions)?;
        if let Some(reply_to) = &self.reply_to {
            check_id("reply_to", reply_to)?;
        }
        if let Some(requester) = &self.requester {
            requester.validate()?;
        }
        Ok(())
    }
}

/// Who a `tl.in.send` is for. Variants are tried in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SendTarget {
    /// `{session_key}`: one session by key; tried first.
    SessionKey {
        /// The target session's key.
        session_key: String,
    },
    /// `{label, requester_session_key}`: one session by its requester's label; tried second.
    Label {
        /// The label given at spawn.
        label: String,
        /// The session that spawned the labelled session; labels are unique per requester.
        requester_session_key: String,
    },
    /// `{conversation}`: every session bound to this conversation.
    Conversation {
        /// Every session bound to this conversation receives the message.
        conversation: ConversationRef,
    },
}

/// `tl.in.send`: a message into one or more sessions (`sessions_send`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequested {
    /// Schema version: Threadline reads `1` and rejects others with `unsupported_version`.
    pub v: u32,
    /// Publisher-chosen UUID, reused on retries, also `Nats-Msg-Id`; every outcome reports it.
    pub event_id: String,
    /// The text delivered to each target session as input.
    pub message: String,
    /// Who the message is for.
    pub target: SendTarget,
    /// The sending session, when the message comes from another session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session_key: Option<String>,
}

impl Validate for SendRequested {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        match &self.target {
            SendTarget::SessionKey { session_key } => check_id("target.session_key", session_key),
            SendTarget::Label {
                label,
                requester_session_key,
            } => {
                check_id("target.label", label)?;
                check_id("target.requester_session_key", requester_session_key)
            }
            SendTarget::Conversation { conversation } => conversation.validate(),
        }
    }
}

/// The author of an inbound chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Author {
    /// The author's platform user id; Threadline uses it for echo suppression.
    pub id: String,
    /// Whether the platform marks the author as a bot.
    pub is_bot: bool,
    /// The author's display name, when the platform says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A file attached to an inbound chat message: what the platform says about it. Threadline
/// never downloads it; `url` is where the platform serves it (it may need the bot's token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Where the platform serves it (`https://…`, Matrix `mxc://…`, Telegram `tg-file:<file_id>`).
    pub url: String,
}

/// `tl.in.message.<channel>`: a person (or bot) wrote in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageReceived {
    /// Schema version: Threadline reads `1` and rejects others with `unsupported_version`.
    pub v: u32,
    /// Publisher-chosen UUID, reused on retries, also `Nats-Msg-Id`; every outcome reports it.
    pub event_id: String,
    /// Where the message was written; `channel` matches the subject's last token.
    pub conversation: ConversationRef,
    /// The message text.
    pub text: String,
    /// The author of the message.
    pub author: Author,
    /// The platform's id of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The platform's id of the message this one answers, when it is a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Files attached to the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl Validate for MessageReceived {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        self.conversation.validate()?;
        check_id("author.id", &self.author.id)
    }
}

/// What happened to a conversation on its platform (`tl.in.conversation.<channel>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationChange {
    /// `locked`: nobody but moderators may write there any more (a locked Discord thread, a
    /// closed Telegram forum topic).
    Locked,
    /// `archived`: the conversation is archived and cannot be written to (a Slack channel).
    /// Discord's automatic thread archiving is not this: a post revives such a thread.
    Archived,
    /// `deleted`: the conversation is gone.
    Deleted,
    /// `root_deleted`: the message a thread hangs from was deleted or redacted.
    RootDeleted,
    /// `reopened`: a locked conversation may be written to again. Ended bindings stay ended.
    Reopened,
}

impl ConversationChange {
    /// The name on the wire, also the reason a binding ended by it carries.
    pub fn name(self) -> &'static str {
        match self {
            ConversationChange::Locked => "locked",
            ConversationChange::Archived => "archived",
            ConversationChange::Deleted => "deleted",
            ConversationChange::RootDeleted => "root_deleted",
            ConversationChange::Reopened => "reopened",
        }
    }
}

/// `tl.in.conversation.<channel>`: a conversation changed on its platform (published by the
/// listeners, or by a gateway that keeps its own ingestion). The binder ends every binding on
/// it, except for `reopened`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationChanged {
    /// Schema version: Threadline reads `1` and rejects others with `unsupported_version`.
    pub v: u32,
    /// Publisher-chosen id, reused on retries, also `Nats-Msg-Id`.
    pub event_id: String,
    /// The conversation that changed; `channel` matches the subject's last token.
    pub conversation: ConversationRef,
    /// What happened to it.
    pub change: ConversationChange,
}

impl Validate for ConversationChanged {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        self.conversation.validate()
    }
}

/// Operator commands on `tl.in.control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlOp {
    /// `unbind`: end a binding (or all of a session's bindings).
    Unbind,
    /// `touch`: refresh a binding's activity.
    Touch,
    /// `credentials_rotated`: the channel's deliverers re-read their token from the next post on.
    CredentialsRotated,
}

/// `tl.in.control`: unbind, touch, credentials rotated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequested {
    /// Schema version: Threadline reads `1` and rejects others with `unsupported_version`.
    pub v: u32,
    /// Publisher-chosen UUID, reused on retries, also `Nats-Msg-Id`; every outcome reports it.
    pub event_id: String,
    /// The command; `unbind`/`touch` need `binding_id` or `session_key`, the rotation `channel`.
    pub op: ControlOp,
    /// The binding to act on (`unbind`, `touch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
    /// Act on every binding of this session (`unbind`, `touch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Why; recorded as the binding's `end_reason` and on `tl.out.binding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The channel whose credentials rotated (`credentials_rotated`; a subject token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Limits `credentials_rotated` to one account on the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

impl Validate for ControlRequested {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        if let Some(binding_id) = &self.binding_id {
            check_id("binding_id", binding_id)?;
        }
        if let Some(session_key) = &self.session_key {
            check_id("session_key", session_key)?;
        }
        match self.op {
            ControlOp::Unbind | ControlOp::Touch => {
                if self.binding_id.is_none() && self.session_key.is_none() {
                    return Err(
                        format!("`{:?}` needs `binding_id` or `session_key`", self.op)
                            .to_lowercase(),
                    );
                }
                Ok(())
            }
            ControlOp::CredentialsRotated => match &self.channel {
                Some(channel) => check_token("channel", channel),
                None => Err("`credentials_rotated` needs `channel`".into()),
            },
        }
    }
}
