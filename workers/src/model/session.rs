//! A session as every layer speaks of it: what was spawned, its status, and its bindings.

use serde::{Deserialize, Serialize};
use threadline_schemas::{
    BindingRecord, DeliveryPolicy, Placement, Requester, SessionMode, SessionPersona,
};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Live: its bindings route, it takes input.
    Active,
    /// A `run` session whose completion was routed.
    Completed,
    /// Ended (unbound, expired, or its run is over).
    Ended,
}

impl SessionStatus {
    /// The status's name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Completed => "completed",
            SessionStatus::Ended => "ended",
        }
    }
    /// The status a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(SessionStatus::Active),
            "completed" => Some(SessionStatus::Completed),
            "ended" => Some(SessionStatus::Ended),
            _other => None,
        }
    }
}

/// A session as spawned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session's key (`agent:<agent>:…`).
    pub session_key: String,
    /// The agent running it.
    pub agent_id: String,
    /// `run` (one completion) or `session` (lives on).
    pub mode: SessionMode,
    /// Where its output goes: a thread of its own, the requester's conversation, or none.
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Its name among the requester's sessions, when named.
    pub label: Option<String>,
    /// Who spawned it, and from which conversation.
    pub requester: Requester,
    /// Which destinations get its completions.
    pub delivery: DeliveryPolicy,
    /// Never fall back to the requester: fail instead.
    pub fail_closed: bool,
    /// When it was spawned (Unix ms).
    pub created_at: u64,
    /// The spawn event's id.
    pub spawn_event_id: String,
    /// The name and picture its posts show, where the platform allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<SessionPersona>,
    /// Not part of the stored blob: kept in its own field so it can change atomically.
    #[serde(skip, default = "active")]
    pub status: SessionStatus,
}

fn active() -> SessionStatus {
    SessionStatus::Active
}

/// A session with all its bindings (any status), as one read returns them.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    /// The session.
    pub session: SessionRecord,
    /// Its bindings, of any status.
    pub bindings: Vec<BindingRecord>,
}

impl std::str::FromStr for SessionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionStatus::parse(s).ok_or_else(|| {
            format!("unknown session status {s:?} (expected active, completed or ended)")
        })
    }
}
