//! Every id Threadline derives instead of drawing at random. Redeliveries of one event must
//! land on the same session, binding, dedup key and `Nats-Msg-Id`, so these are pure
//! functions of the event. DO NOT CHANGE the derivations: ids stored in Redis and in-flight
//! messages of a running deployment depend on them, and a change would re-post or re-create.

use sha2::{Digest, Sha256};
use threadline_schemas::ConversationRef;
use uuid::Uuid;

/// Namespace for Threadline's UUIDv5 ids (a fixed random UUID).
const NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_98b4_4d0b_a5e7_1c2d_3e4f_5a6b);

fn v5(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes())
}

/// The generated session key of a spawn without `session_key`.
pub fn session_key(agent_id: &str, spawn_event_id: &str) -> String {
    format!(
        "agent:{agent_id}:subagent:{}",
        v5(&["session", spawn_event_id])
    )
}

/// The `event_id` of a chat message a listener heard: a pure function of the platform's
/// message id (and where it was written: some platforms number messages per chat), so a
/// replay after a resume, a platform's retry and two replicas hearing the same message all
/// publish one event.
pub(crate) fn heard_event_id(
    channel: &str,
    account_id: &str,
    conversation_id: &str,
    message_id: &str,
) -> String {
    v5(&["heard", channel, account_id, conversation_id, message_id]).to_string()
}

/// The `event_id` of a conversation change a listener heard, from the platform's own key of
/// the event (its id, or what identifies it).
pub(crate) fn change_event_id(
    channel: &str,
    account_id: &str,
    conversation_id: &str,
    change: &str,
    platform_key: &str,
) -> String {
    v5(&[
        "change",
        channel,
        account_id,
        conversation_id,
        change,
        platform_key,
    ])
    .to_string()
}

/// The binding a spawn creates.
pub(crate) fn binding_id(spawn_event_id: &str) -> String {
    format!("b-{}", v5(&["binding", spawn_event_id]).simple())
}

/// One post of one event to one destination: the platform-boundary dedup key.
pub(crate) fn post_delivery_id(event_id: &str, destination: &ConversationRef) -> String {
    // Built per routed completion: encoded into a buffer, not through `Display`.
    let id = v5(&["post", event_id, &destination.key()]);
    ["p-", id.simple().encode_lower(&mut Uuid::encode_buffer())].concat()
}

/// The one farewell of one binding.
pub(crate) fn farewell_delivery_id(binding_id: &str) -> String {
    format!("f-{}", v5(&["farewell", binding_id]).simple())
}

/// Thread creation for one binding.
pub(crate) fn thread_delivery_id(binding_id: &str) -> String {
    format!("t-{}", v5(&["thread", binding_id]).simple())
}

/// Idempotency key of one part of one delivery (Discord nonce ≤ 25 chars, so a hash).
pub fn part_key(delivery_id: &str, part: usize) -> String {
    // The digest of `<delivery id>\x1f<part>`, fed in pieces (built per post).
    let digest = Sha256::new()
        .chain_update(delivery_id)
        .chain_update("\u{1f}")
        .chain_update(itoa::Buffer::new().format(part))
        .finalize();
    // 12 bytes → 24 hex chars: fits Discord's 25-character nonce, 96 bits of uniqueness.
    hex::encode(&digest[..12])
}

/// `Nats-Msg-Id`s of what the workers publish: JetStream drops a re-publish of the same
/// logical message within the stream's duplicate window.
pub(crate) mod msg_id {
    use sha2::{Digest, Sha256};

    /// `id` as a header value: ids built from an event that failed validation may hold line
    /// breaks (async-nats panics on those) or be huge. Such an id is replaced by its digest,
    /// still a pure function of the input, so a redelivery dedups the same way.
    pub(crate) fn header_safe(id: String) -> String {
        if id.len() <= 512 && !id.chars().any(char::is_control) {
            return id;
        }
        ["h:", &hex::encode(Sha256::digest(id.as_bytes()))].concat()
    }

    /// `tl.out.spawned` of one spawn.
    pub(crate) fn spawned(event_id: &str) -> String {
        format!("spawned:{event_id}")
    }
    /// `tl.out.rejected` of one event at one stage.
    pub(crate) fn rejected(stage: &str, event_id: &str) -> String {
        format!("rejected:{stage}:{event_id}")
    }
    /// `tl.out.delivered` of one delivery.
    pub(crate) fn delivered(delivery_id: &str) -> String {
        ["delivered:", delivery_id].concat()
    }
    /// `tl.out.failed` of one delivery (deliverer) or one completion (router).
    pub(crate) fn failed(delivery_or_event_id: &str) -> String {
        format!("failed:{delivery_or_event_id}")
    }
    /// `tl.out.binding` of one change of one binding.
    pub(crate) fn binding(binding_id: &str, change: &str) -> String {
        format!("binding:{binding_id}:{change}")
    }
    /// `tl.agent.*` input of one event for one session.
    pub(crate) fn input(event_id: &str, session_key: &str) -> String {
        format!("input:{event_id}:{session_key}")
    }
    /// `tl.out.unbound` of one chat message.
    pub(crate) fn unbound(event_id: &str) -> String {
        format!("unbound:{event_id}")
    }
    /// `tl.out.sent` of one send.
    pub(crate) fn sent(event_id: &str) -> String {
        format!("sent:{event_id}")
    }
    /// The dead letter of one stream message at one stage.
    pub(crate) fn dead_letter(stage: &str, stream_seq: u64) -> String {
        format!("dlq:{stage}:{stream_seq}")
    }
    /// An operator's replay of one dead letter: the one id drawn at random, because every
    /// replay (`--force` included) must be stored, never dropped as a duplicate.
    pub(crate) fn replay(dead_letter_seq: u64) -> String {
        format!("replay:{dead_letter_seq}:{}", uuid::Uuid::new_v4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_across_calls_and_distinct_per_input() {
        assert_eq!(session_key("a", "e1"), session_key("a", "e1"));
        assert_ne!(session_key("a", "e1"), session_key("a", "e2"));
        assert!(session_key("larry", "e1").starts_with("agent:larry:subagent:"));
        let nonce = part_key("p-1", 0);
        assert_eq!(nonce.len(), 24);
        assert_ne!(nonce, part_key("p-1", 1));
    }

    /// The derivations' values, pinned: a running deployment's stored claims and in-flight
    /// messages carry them, so a rewrite of how one is computed must give the same bytes.
    #[test]
    fn derived_ids_are_pinned() {
        let place = ConversationRef {
            channel: "discord".into(),
            account_id: "bot-1".into(),
            conversation_id: "c-9".into(),
            parent_conversation_id: None,
        };
        assert_eq!(
            post_delivery_id("e-1", &place),
            "p-3594e7e5eec25b98a1c57a1e40358e2d"
        );
        assert_eq!(part_key("p-1", 0), "9c29a707c8275bf6193840e1");
        assert_eq!(part_key("p-1", 12), "96453363f5bbbeac4847a2ad");
        assert_eq!(msg_id::delivered("p-1"), "delivered:p-1");
    }

    #[test]
    fn a_msg_id_that_cannot_be_a_header_becomes_its_digest() {
        assert_eq!(
            msg_id::header_safe("rejected:router:e-1".into()),
            "rejected:router:e-1"
        );
        let evil = msg_id::header_safe("rejected:router:e\r\nX: 1".into());
        assert!(evil.starts_with("h:") && evil.len() == 66, "{evil}");
        assert_eq!(
            evil,
            msg_id::header_safe("rejected:router:e\r\nX: 1".into())
        );
        assert!(msg_id::header_safe("x".repeat(600)).starts_with("h:"));
    }
}
