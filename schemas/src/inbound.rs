//! Events other services publish on `tl.in.*`.

use crate::common::{
    check_id, check_token, ConversationRef, DeliveryPolicy, Metadata, Placement, SessionMode,
    Validate,
};
use serde::{Deserialize, Serialize};

/// Fields every inbound event carries; read first so a rejection can name the event.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub v: Option<serde_json::Value>,
    #[serde(default)]
    pub event_id: Option<serde_json::Value>,
}

/// Who asked for a spawn: the requesting session and the conversation it works in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requester {
    pub session_key: String,
    pub conversation: ConversationRef,
}

/// `tl.in.spawn`: an agent asks for a child session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequested {
    pub v: u32,
    pub event_id: String,
    pub agent_id: String,
    pub requester: Requester,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default)]
    pub mode: SessionMode,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A named session (`agent:<agent_id>:…`); generated from `event_id` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(default)]
    pub resume_if_exists: bool,
    #[serde(default)]
    pub delivery: DeliveryPolicy,
    #[serde(default)]
    pub fail_closed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_name: Option<String>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
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
    Ok,
    Error,
    Timeout,
}

/// `tl.in.completion`: a session's run finished; `content` goes to its destination(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionReported {
    pub v: u32,
    pub event_id: String,
    pub session_key: String,
    pub status: RunStatus,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where to post when the session is unknown to Threadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<ConversationRef>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

impl Validate for CompletionReported {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        check_id("session_key", &self.session_key)?;
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
    SessionKey {
        session_key: String,
    },
    Label {
        label: String,
        requester_session_key: String,
    },
    Conversation {
        conversation: ConversationRef,
    },
}

/// `tl.in.send`: a message into one or more sessions (`sessions_send`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequested {
    pub v: u32,
    pub event_id: String,
    pub message: String,
    pub target: SendTarget,
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
    pub id: String,
    pub is_bot: bool,
}

/// `tl.in.message.<channel>`: a person (or bot) wrote in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageReceived {
    pub v: u32,
    pub event_id: String,
    pub conversation: ConversationRef,
    pub text: String,
    pub author: Author,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl Validate for MessageReceived {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        self.conversation.validate()?;
        check_id("author.id", &self.author.id)
    }
}

/// Operator commands on `tl.in.control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlOp {
    Unbind,
    Touch,
    CredentialsRotated,
}

/// `tl.in.control`: unbind, touch, credentials rotated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequested {
    pub v: u32,
    pub event_id: String,
    pub op: ControlOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
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
