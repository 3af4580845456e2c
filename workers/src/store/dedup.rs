//! Per-event records, each keyed by the event id (`{e:<event id>}`) and kept for
//! `dedup_ttl_ms`: the routing decision of a completion (so a redelivery is routed the same
//! way), the targets a `tl.in.send` already reached, the retry budget of an event at a
//! stage, and the messages a listener already stored.

use super::Store;
use crate::error::WorkError;
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use std::collections::HashMap;

impl Store {
    /// The decision stored for an event, if any.
    pub(crate) async fn load_route(&self, event_id: &str) -> Result<Option<Vec<u8>>, WorkError> {
        Ok(self.conn.clone().get(self.keys.route(event_id)).await?)
    }

    /// Stores a decision unless one exists, in one round trip (`SET … NX GET`, Redis 7.0+):
    /// `None` when ours is stored now, `Some(theirs)` when another attempt stored one first.
    pub(crate) async fn store_route(
        &self,
        event_id: &str,
        decision: &[u8],
    ) -> Result<Option<Vec<u8>>, WorkError> {
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .get(true)
            .with_expiration(SetExpiry::PX(self.dedup_ttl_ms));
        Ok(self
            .conn
            .clone()
            .set_options(self.keys.route(event_id), decision, options)
            .await?)
    }

    /// Targets a send event already reached (session key → outcome).
    pub(crate) async fn sent_targets(
        &self,
        event_id: &str,
    ) -> Result<HashMap<String, String>, WorkError> {
        Ok(self.conn.clone().hgetall(self.keys.sent(event_id)).await?)
    }

    /// Records that a send event reached `session_key`.
    pub(crate) async fn record_sent(
        &self,
        event_id: &str,
        session_key: &str,
        outcome: &str,
    ) -> Result<(), WorkError> {
        let key = self.keys.sent(event_id);
        let _: () = redis::pipe()
            .hset(&key, session_key, outcome)
            .ignore()
            .pexpire(&key, self.dedup_ttl_ms as i64)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Whether a listener already stored the message with this derived event id.
    pub(crate) async fn was_heard(&self, event_id: &str) -> Result<bool, WorkError> {
        Ok(self.conn.clone().exists(self.keys.heard(event_id)).await?)
    }

    /// Records that a listener's message is stored in the inbound stream, for
    /// `dedup_ttl_ms`: longer than any platform replays.
    pub(crate) async fn mark_heard(&self, event_id: &str) -> Result<(), WorkError> {
        let options = SetOptions::default().with_expiration(SetExpiry::PX(self.dedup_ttl_ms));
        let _: () = self
            .conn
            .clone()
            .set_options(self.keys.heard(event_id), 1, options)
            .await?;
        Ok(())
    }

    /// Counts one failed attempt of `event_id` at `stage`; returns the failures so far.
    /// JetStream's delivery count cannot be the budget: it also counts deliveries that were
    /// only told to wait (a pending binding, another instance's claim).
    pub(crate) async fn count_failure(
        &self,
        stage: &str,
        event_id: &str,
    ) -> Result<u32, WorkError> {
        let key = self.keys.failures(stage, event_id);
        let (count,): (u32,) = redis::pipe()
            .incr(&key, 1)
            .pexpire(&key, self.dedup_ttl_ms as i64)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }
}
