//! Redis key names. Every key carries a hash tag (`{…}`) naming the one entity it belongs
//! to, so each atomic operation (a Lua script or MULTI on one entity) stays in one Redis
//! Cluster slot: a session and its bindings share `{s:<session_key>}`; cross-entity links
//! (conversation index, binding owner, labels) are separate keys written in an order that
//! tolerates a crash between steps (see `Store`).

use threadline_schemas::ConversationRef;

/// Key builder for one deployment namespace (the subject prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    ns: String,
}

impl Keys {
    pub fn new(ns: impl Into<String>) -> Self {
        Keys { ns: ns.into() }
    }

    /// HASH: the session's fields and all its bindings (`b:<id>…` fields).
    pub fn session(&self, session_key: &str) -> String {
        format!("{}:{{s:{session_key}}}", self.ns)
    }

    /// HASH label → session key, for the children of one requester session.
    pub fn labels(&self, requester_session_key: &str) -> String {
        format!("{}:{{s:{requester_session_key}}}:labels", self.ns)
    }

    /// STRING: the session that owns a binding (for unbind by binding id).
    pub fn binding_owner(&self, binding_id: &str) -> String {
        format!("{}:{{b:{binding_id}}}", self.ns)
    }

    /// HASH binding id → session key: live bindings of one conversation.
    pub fn conversation(&self, conversation: &ConversationRef) -> String {
        format!("{}:{{c:{}}}", self.ns, conversation.key())
    }

    /// STRING: the stored routing decision of one completion event.
    pub fn route(&self, event_id: &str) -> String {
        format!("{}:{{e:{event_id}}}:route", self.ns)
    }

    /// HASH part → claim state: the platform-boundary dedup record of one delivery.
    pub fn post(&self, delivery_id: &str) -> String {
        format!("{}:{{d:{delivery_id}}}", self.ns)
    }

    /// ZSET `<session key>\u{1f}<binding id>` → when the binding is next due for an expiry
    /// check. One key for the deployment: the sweeper's work list.
    pub fn sweep(&self) -> String {
        format!("{}:{{sweep}}", self.ns)
    }

    /// SET of author ids that are Threadline itself on `channel` (echo suppression).
    pub fn own_authors(&self, channel: &str) -> String {
        format!("{}:{{own:{channel}}}", self.ns)
    }

    /// STRING counter: failed attempts of one event at one stage (the retry budget), apart
    /// from deliveries that only waited.
    pub fn failures(&self, stage: &str, event_id: &str) -> String {
        format!("{}:{{e:{event_id}}}:fails:{stage}", self.ns)
    }

    /// HASH session key → outcome: the targets a `tl.in.send` already reached.
    pub fn sent(&self, event_id: &str) -> String {
        format!("{}:{{e:{event_id}}}:sent", self.ns)
    }

    /// HASH `o:<lane>` → `<instance>|<lease expiry ms>`: who pulls each delivery lane of a
    /// group (a channel).
    pub fn lane_owners(&self, group: &str) -> String {
        format!("{}:{{lanes:{group}}}", self.ns)
    }

    /// ZSET instance → heartbeat expiry: the live instances sharing a group's lanes. Same
    /// slot as [`Keys::lane_owners`].
    pub fn lane_instances(&self, group: &str) -> String {
        format!("{}:{{lanes:{group}}}:live", self.ns)
    }

    /// HASH dead-letter stream sequence → JSON record of its replay (`threadline dlq
    /// replay`), so a dead letter is replayed once unless the operator insists.
    pub fn dlq_replays(&self) -> String {
        format!("{}:{{dlq}}:replays", self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = key[open..].find('}').unwrap() + open;
        &key[open + 1..close]
    }

    #[test]
    fn a_session_and_its_labels_share_a_slot() {
        let k = Keys::new("tl");
        assert_eq!(
            slot_tag(&k.session("agent:a:main")),
            slot_tag(&k.labels("agent:a:main"))
        );
        assert_ne!(
            slot_tag(&k.session("agent:a:x")),
            slot_tag(&k.session("agent:a:y"))
        );
    }
}
