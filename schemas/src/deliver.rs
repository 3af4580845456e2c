//! The internal command on `tl.deliver.<channel>`: what a deliverer must do on a platform.
//! Only Threadline publishes it, but it is versioned and documented like the public events
//! because deliverers and routers of different versions run side by side during a rollout.

use crate::common::{check_id, ConversationRef, DeliveryMode, Validate};
use serde::{Deserialize, Serialize};

/// One unit of platform work. `delivery_id` is the dedup key at the platform boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryCommand {
    pub v: u32,
    /// The inbound event this work came from (reported on `tl.out.*`).
    pub event_id: String,
    /// Stable id of this `(event_id, destination, action)`; see `workers::ids`.
    pub delivery_id: String,
    #[serde(flatten)]
    pub action: DeliveryAction,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DeliveryAction {
    /// Post `content` in `destination`.
    Post {
        destination: ConversationRef,
        content: String,
        mode: DeliveryMode,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_key: Option<String>,
        /// The binding this post goes through; a successful post refreshes its activity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binding_id: Option<String>,
    },
    /// Create a thread under `parent` and activate `binding_id` with it.
    CreateThread {
        parent: ConversationRef,
        name: String,
        session_key: String,
        binding_id: String,
    },
}

impl Validate for DeliveryCommand {
    fn validate(&self) -> Result<(), String> {
        check_id("event_id", &self.event_id)?;
        check_id("delivery_id", &self.delivery_id)?;
        match &self.action {
            DeliveryAction::Post {
                destination,
                binding_id,
                session_key,
                ..
            } => {
                if let Some(binding_id) = binding_id {
                    check_id("binding_id", binding_id)?;
                }
                if let Some(session_key) = session_key {
                    check_id("session_key", session_key)?;
                }
                destination.validate()
            }
            DeliveryAction::CreateThread {
                parent,
                name,
                session_key,
                binding_id,
            } => {
                check_id("name", name)?;
                check_id("session_key", session_key)?;
                check_id("binding_id", binding_id)?;
                parent.validate()
            }
        }
    }
}
