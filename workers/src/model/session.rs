//! A session as every layer speaks of it: what was spawned, its status, and its bindings.

use serde::{Deserialize, Serialize};
use threadline_schemas::{BindingRecord, DeliveryPolicy, Placement, Requester, SessionMode};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    /// A `run` session whose completion was routed.
    Completed,
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
    pub session_key: String,
    pub agent_id: String,
    pub mode: SessionMode,
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub requester: Requester,
    pub delivery: DeliveryPolicy,
    pub fail_closed: bool,
    pub created_at: u64,
    pub spawn_event_id: String,
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
    pub session: SessionRecord,
    pub bindings: Vec<BindingRecord>,
}
