//! The internal command on `tl.deliver.<channel>.<lane>`: what a deliverer must do on a platform.
//! Only Threadline publishes it, but it is versioned and documented like the public events
//! because deliverers and routers of different versions run side by side during a rollout.

use crate::common::{
    check_id, check_mentions, ContentFormat, ConversationRef, DeliveryMode, SessionPersona,
    Validate,
};
use serde::{Deserialize, Serialize};

/// One unit of platform work. `delivery_id` is the dedup key at the platform boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireCommand")]
pub struct DeliveryCommand {
    /// Schema version: Threadline reads `1` and rejects others with `unsupported_version`.
    pub v: u32,
    /// The inbound event this work came from (reported on `tl.out.*`).
    pub event_id: String,
    /// Stable id of this `(event_id, destination, action)`; see `workers::ids`.
    pub delivery_id: String,
    /// What to do; the `action` tag selects the other fields.
    #[serde(flatten)]
    pub action: DeliveryAction,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DeliveryAction {
    /// Post `content` in `destination`.
    Post {
        /// Where to post.
        destination: ConversationRef,
        /// The text to post; split into parts when longer than the platform allows.
        content: String,
        /// Why this destination was chosen; reported on `tl.out.delivered`.
        mode: DeliveryMode,
        /// Why this destination (e.g. `no_placement`); reported on `tl.out.delivered`.
        reason: String,
        /// The session whose output this is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_key: Option<String>,
        /// The binding this post goes through; a successful post refreshes its activity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binding_id: Option<String>,
        /// How `content` is written (the completion's `format`; Threadline's own notices
        /// are `plain`). Absent: `markdown`.
        #[serde(default, skip_serializing_if = "ContentFormat::is_markdown")]
        format: ContentFormat,
        /// Who `content` may notify (the completion's `mentions`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<String>,
        /// The platform message the post answers (the completion's `reply_to`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
        /// The name and picture the post shows (its session's `persona`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        persona: Option<SessionPersona>,
    },
    /// Create a thread under `parent` and activate `binding_id` with it.
    CreateThread {
        /// The conversation to create the thread in.
        parent: ConversationRef,
        /// The thread's name.
        name: String,
        /// The session the thread is bound to.
        session_key: String,
        /// The pending binding that becomes active once the thread exists.
        binding_id: String,
    },
}

/// A command as it is on the wire: one flat map, read in one pass. Deriving `Deserialize`
/// through `flatten` and the internally tagged [`DeliveryAction`] made serde buffer the whole
/// map as generic content, twice, before reading it: half of a deliverer's decoding work per
/// post. Serializing through them costs nothing of the kind, so that stays derived.
#[derive(Deserialize)]
struct WireCommand {
    v: u32,
    event_id: String,
    delivery_id: String,
    action: ActionName,
    #[serde(default)]
    destination: Option<ConversationRef>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    mode: Option<DeliveryMode>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    session_key: Option<String>,
    #[serde(default)]
    binding_id: Option<String>,
    #[serde(default)]
    format: ContentFormat,
    #[serde(default)]
    mentions: Vec<String>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    persona: Option<SessionPersona>,
    #[serde(default)]
    parent: Option<ConversationRef>,
    #[serde(default)]
    name: Option<String>,
}

/// The `action` tag, named as [`DeliveryAction`]'s variants are.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActionName {
    Post,
    CreateThread,
}

impl TryFrom<WireCommand> for DeliveryCommand {
    type Error = String;

    fn try_from(wire: WireCommand) -> Result<Self, String> {
        // The message serde gives a missing field, so a rejection reads as it did.
        fn required<T>(value: Option<T>, field: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("missing field `{field}`"))
        }
        let action = match wire.action {
            ActionName::Post => DeliveryAction::Post {
                destination: required(wire.destination, "destination")?,
                content: required(wire.content, "content")?,
                mode: required(wire.mode, "mode")?,
                reason: required(wire.reason, "reason")?,
                session_key: wire.session_key,
                binding_id: wire.binding_id,
                format: wire.format,
                mentions: wire.mentions,
                reply_to: wire.reply_to,
                persona: wire.persona,
            },
            ActionName::CreateThread => DeliveryAction::CreateThread {
                parent: required(wire.parent, "parent")?,
                name: required(wire.name, "name")?,
                session_key: required(wire.session_key, "session_key")?,
                binding_id: required(wire.binding_id, "binding_id")?,
            },
        };
        Ok(DeliveryCommand {
            v: wire.v,
            event_id: wire.event_id,
            delivery_id: wire.delivery_id,
            action,
        })
    }
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
                mentions,
                reply_to,
                persona,
                ..
            } => {
                check_mentions(mentions)?;
                if let Some(persona) = persona {
                    persona.validate()?;
                }
                if let Some(reply_to) = reply_to {
                    check_id("reply_to", reply_to)?;
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: serde_json::Value) -> Result<DeliveryCommand, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    fn place() -> serde_json::Value {
        json!({"channel": "discord", "account_id": "a", "conversation_id": "c"})
    }

    /// The one-pass reading keeps what the derived one required, allowed and said.
    #[test]
    fn a_command_is_read_in_one_pass_with_the_same_rules() {
        let post = read(
            json!({"v": 1, "event_id": "e", "delivery_id": "p", "action": "post",
            "destination": place(), "content": "hi", "mode": "bound", "reason": "bound",
            "extra": [1, 2]}),
        )
        .unwrap();
        assert!(
            matches!(&post.action, DeliveryAction::Post { content, session_key: None, binding_id: None, .. } if content == "hi")
        );
        assert_eq!(read(serde_json::to_value(&post).unwrap()).unwrap(), post);

        let thread = read(json!({"v": 1, "event_id": "e", "delivery_id": "t",
            "action": "create_thread", "parent": place(), "name": "n", "session_key": "s",
            "binding_id": "b"}))
        .unwrap();
        assert!(matches!(&thread.action, DeliveryAction::CreateThread { name, .. } if name == "n"));
        assert_eq!(
            read(serde_json::to_value(&thread).unwrap()).unwrap(),
            thread
        );

        let no_content = read(json!({"v": 1, "event_id": "e", "delivery_id": "p",
            "action": "post", "destination": place(), "mode": "bound", "reason": "r"}));
        assert_eq!(no_content.unwrap_err(), "missing field `content`");
        // Optional on a post, required to create a thread.
        let no_session = read(json!({"v": 1, "event_id": "e", "delivery_id": "t",
            "action": "create_thread", "parent": place(), "name": "n", "binding_id": "b"}));
        assert_eq!(no_session.unwrap_err(), "missing field `session_key`");
        let unknown = read(json!({"v": 1, "event_id": "e", "delivery_id": "p", "action": "edit"}));
        assert!(unknown.unwrap_err().contains("unknown variant `edit`"));
    }
}
