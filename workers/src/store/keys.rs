//! Redis key names. Every key carries a hash tag (`{…}`) so each atomic operation (a Lua
//! script or MULTI) stays in one Redis Cluster slot.
//!
//! Per-binding state lives in *buckets*: many small HASHes / ZSETs that Redis stores as
//! compact listpacks, instead of one key per entity (every key carries Redis's own
//! overhead before any data). A session, its bindings and their extra fields share one session bucket (chosen
//! by the session key), so every change to them is one script on one key; cross-entity
//! links (conversation index, the binding directory that is also the sweeper's work list,
//! labels) are separate keys written in an order that tolerates a crash between steps (see
//! `Store`).
//!
//! DO NOT CHANGE the bucket counts or `bucket_of`: stored data is found through them.

use threadline_schemas::ConversationRef;

/// Session buckets. A listpack is searched and rewritten linearly, so too few buckets make
/// routing slower as sessions grow; too many leave each bucket key shared by few sessions,
/// which costs memory per binding. This count keeps a million sessions' buckets inside the
/// listpack limits `threadline doctor` asks for (docs/benchmarks.md has the figures).
pub const SESSION_BUCKETS: u64 = 16384;
/// Conversation-index buckets.
pub(crate) const CONVERSATION_BUCKETS: u64 = 16384;
/// Binding-directory buckets (all in one slot: the sweeper claims due entries atomically).
pub(crate) const DIRECTORY_BUCKETS: u64 = 8192;

/// A stable hash (FNV-1a, 64 bit) of `s`, modulo `buckets`. DO NOT CHANGE.
pub fn bucket_of(s: &str, buckets: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in s.as_bytes() {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % buckets
}

/// Key builder for one deployment namespace (the subject prefix).
///
/// The keys a post or a completion touches (`session`, `conversation`, `route`,
/// `post_part`) are joined rather than `format!`ed: they are built on every event, where the
/// format machinery costs several times a copy into one exact allocation. The rest keep
/// `format!`.
#[derive(Debug, Clone)]
pub struct Keys {
    ns: String,
}

impl Keys {
    /// Keys of the deployment namespace `ns` (its subject prefix).
    pub fn new(ns: impl Into<String>) -> Self {
        Keys { ns: ns.into() }
    }

    /// HASH bucket holding the session: field `<session key>` → the session value, field
    /// `\x1f<binding id>` → each of its bindings, `\x1f<binding id>:<attr>` → rare extras.
    pub fn session(&self, session_key: &str) -> String {
        let mut n = itoa::Buffer::new();
        let n = n.format(bucket_of(session_key, SESSION_BUCKETS));
        [self.ns.as_str(), ":{ss:", n, "}"].concat()
    }

    /// What every session bucket's key starts with (for SCAN).
    pub(crate) fn session_bucket_prefix(&self) -> String {
        format!("{}:{{ss:", self.ns)
    }

    /// HASH label → session key, for the children of one requester session.
    pub(crate) fn labels(&self, requester_session_key: &str) -> String {
        format!("{}:{{s:{requester_session_key}}}:labels", self.ns)
    }

    /// ZSET bucket of the binding directory holding `binding_id`: member
    /// `<binding id>\x1f<session key>` (who owns the binding), score = when the sweeper next
    /// looks at it (+inf while pending; `ended_ttl_ms` after its end, when the entry goes).
    pub(crate) fn directory(&self, binding_id: &str) -> String {
        self.directory_bucket(bucket_of(binding_id, DIRECTORY_BUCKETS))
    }

    /// Directory bucket of a finished session's expiry entry (member `\x1e<session key>`).
    pub(crate) fn directory_for_session(&self, session_key: &str) -> String {
        self.directory_bucket(bucket_of(session_key, DIRECTORY_BUCKETS))
    }

    fn directory_bucket(&self, n: u64) -> String {
        format!("{}{n}", self.directory_bucket_prefix())
    }

    /// What directory bucket keys start with (the bucket number follows).
    pub(crate) fn directory_bucket_prefix(&self) -> String {
        format!("{}:{{dir}}:", self.ns)
    }

    /// ZSET bucket key → earliest score in that bucket: the sweeper's index of buckets.
    pub(crate) fn directory_index(&self) -> String {
        format!("{}:{{dir}}", self.ns)
    }

    /// HASH bucket holding the conversation's index entry: field `<conversation key>` →
    /// the ids of its live bindings, comma-separated.
    pub(crate) fn conversation(&self, conversation: &ConversationRef) -> String {
        let mut n = itoa::Buffer::new();
        let n = n.format(bucket_of(&conversation.key(), CONVERSATION_BUCKETS));
        [self.ns.as_str(), ":{cc:", n, "}"].concat()
    }

    /// STRING: the stored routing decision of one completion event.
    pub fn route(&self, event_id: &str) -> String {
        [self.ns.as_str(), ":{e:", event_id, "}:route"].concat()
    }

    /// STRING claim state of one part of one delivery: the platform-boundary dedup record.
    /// (A string per part, not a hash per delivery: a claim is then one `SET … NX PX GET`,
    /// where a hash field needed `HSETNX` and a `PEXPIRE`.)
    pub fn post_part(&self, delivery_id: &str, part: usize) -> String {
        let mut n = itoa::Buffer::new();
        [self.ns.as_str(), ":{d:", delivery_id, "}:", n.format(part)].concat()
    }

    /// SET of author ids that are Threadline itself on `channel` (echo suppression).
    pub(crate) fn own_authors(&self, channel: &str) -> String {
        format!("{}:{{own:{channel}}}", self.ns)
    }

    /// STRING counter: failed attempts of one event at one stage (the retry budget), apart
    /// from deliveries that only waited.
    pub(crate) fn failures(&self, stage: &str, event_id: &str) -> String {
        format!("{}:{{e:{event_id}}}:fails:{stage}", self.ns)
    }

    /// HASH session key → outcome: the targets a `tl.in.send` already reached.
    pub(crate) fn sent(&self, event_id: &str) -> String {
        format!("{}:{{e:{event_id}}}:sent", self.ns)
    }

    /// STRING: set once a listener's message (by its derived event id) is stored in the
    /// inbound stream; a platform's replay of it is skipped.
    pub(crate) fn heard(&self, event_id: &str) -> String {
        format!("{}:{{e:{event_id}}}:heard", self.ns)
    }

    /// STRING: where the holder of unit `unit` of lease group `group` is (a Telegram offset,
    /// a Matrix `since` token, a Discord shard's resume state). Same slot as
    /// [`Keys::lane_owners`], so a write is fenced by the lease in one script.
    pub(crate) fn lease_cursor(&self, group: &str, unit: u32) -> String {
        format!("{}:{{lanes:{group}}}:cursor:{unit}", self.ns)
    }

    /// HASH `o:<lane>` → `<instance>|<lease expiry ms>`: who pulls each delivery lane of a
    /// group (a channel).
    pub(crate) fn lane_owners(&self, group: &str) -> String {
        format!("{}:{{lanes:{group}}}", self.ns)
    }

    /// STRING: the `delivery_partitions` this deployment's lanes were set up with, recorded
    /// by the first worker that started. Routers and deliverers that disagree on it send
    /// posts to lanes nobody pulls, or a conversation's posts to two lanes out of order.
    pub(crate) fn lane_count(&self) -> String {
        format!("{}:{{lanes}}:count", self.ns)
    }

    /// ZSET instance → heartbeat expiry: the live instances sharing a group's lanes. Same
    /// slot as [`Keys::lane_owners`].
    pub(crate) fn lane_instances(&self, group: &str) -> String {
        format!("{}:{{lanes:{group}}}:live", self.ns)
    }

    /// HASH dead-letter stream sequence → JSON record of its replay (`threadline dlq
    /// replay`), so a dead letter is replayed once unless the operator insists.
    pub(crate) fn dlq_replays(&self) -> String {
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
    fn directory_buckets_and_their_index_share_a_slot() {
        let k = Keys::new("tl");
        assert_eq!(
            slot_tag(&k.directory("b-1")),
            slot_tag(&k.directory_index())
        );
        assert_eq!(
            slot_tag(&k.directory_for_session("agent:a:x")),
            slot_tag(&k.directory_index())
        );
    }

    /// Stored data is found through these names: a rewrite of how one is built must give
    /// the same bytes.
    #[test]
    fn key_names_are_pinned() {
        let k = Keys::new("tl");
        let place = ConversationRef {
            channel: "slack".into(),
            account_id: "T1".into(),
            conversation_id: "C2".into(),
            parent_conversation_id: None,
        };
        assert_eq!(k.session("agent:a:x"), "tl:{ss:4021}");
        assert_eq!(k.route("e-1"), "tl:{e:e-1}:route");
        assert_eq!(k.post_part("p-1", 3), "tl:{d:p-1}:3");
        assert_eq!(k.conversation(&place), "tl:{cc:7633}");
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Stored data is found through these numbers: they must never change.
        assert_eq!(bucket_of("", 4096), 0xcbf2_9ce4_8422_2325 % 4096);
        assert_eq!(bucket_of("a", u64::MAX), 0xaf63_dc4c_8601_ec8c);
        let buckets: std::collections::HashSet<u64> = (0..1000)
            .map(|i| bucket_of(&format!("agent:a:{i}"), SESSION_BUCKETS))
            .collect();
        assert!(buckets.len() > 800, "{} distinct buckets", buckets.len());
    }
}
