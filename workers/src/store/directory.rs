//! The binding directory: ZSET buckets (`keys::Keys::directory`) whose members say who owns
//! each binding (`<binding id>\x1f<session key>`) and a finished session's expiry entry
//! (`\x1e<session key>`), scored with when the sweeper next looks at them. It is both the
//! owner link of every binding and the sweeper's work list ([`DueEntry`]); an index ZSET
//! (`keys::Keys::directory_index`) keeps each bucket's earliest score, so a sweeper finds
//! what is due without reading every bucket.

use super::{query, scripts, Store};
use crate::error::WorkError;
use threadline_schemas::now_ms;

/// One entry of the directory the sweeper took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueEntry {
    /// Check a binding: expired, over, or still live.
    Binding {
        /// The binding to check.
        binding_id: String,
        /// The session that owns it.
        session_key: String,
    },
    /// Delete a finished session whose `ended_ttl_ms` passed.
    Session {
        /// The finished session.
        session_key: String,
    },
}

/// A binding's directory member: `<binding id>\x1f<session key>`.
pub(crate) fn binding_entry(binding_id: &str, session_key: &str) -> String {
    format!("{binding_id}\u{1f}{session_key}")
}

/// A finished session's expiry entry in the directory.
pub(crate) fn session_entry(session_key: &str) -> String {
    format!("\u{1e}{session_key}")
}

/// Reads a directory member.
pub(crate) fn parse_entry(member: &str) -> Option<DueEntry> {
    if let Some(session_key) = member.strip_prefix('\u{1e}') {
        return Some(DueEntry::Session {
            session_key: session_key.to_owned(),
        });
    }
    member
        .split_once('\u{1f}')
        .map(|(binding_id, session_key)| DueEntry::Binding {
            binding_id: binding_id.to_owned(),
            session_key: session_key.to_owned(),
        })
}

impl Store {
    /// Sets a directory member's score (`u64::MAX`: never due), keeping the index.
    async fn directory_set(
        &self,
        bucket: &str,
        member: &str,
        due_ms: u64,
    ) -> Result<(), WorkError> {
        let score = if due_ms == u64::MAX {
            "+inf".to_owned()
        } else {
            due_ms.to_string()
        };
        let _: i64 = scripts::DIRECTORY_SET
            .key(bucket)
            .key(self.keys.directory_index())
            .arg(member)
            .arg(score)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Removes a directory member, keeping the index.
    async fn directory_del(&self, bucket: &str, member: &str) -> Result<(), WorkError> {
        let _: i64 = scripts::DIRECTORY_DEL
            .key(bucket)
            .key(self.keys.directory_index())
            .arg(member)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Schedules an expiry check of a binding at `due_ms` (`u64::MAX`: never; a pending
    /// binding keeps only its owner link).
    pub(crate) async fn schedule_sweep(
        &self,
        session_key: &str,
        binding_id: &str,
        due_ms: u64,
    ) -> Result<(), WorkError> {
        self.directory_set(
            &self.keys.directory(binding_id),
            &binding_entry(binding_id, session_key),
            due_ms,
        )
        .await
    }

    /// A binding is over (or never became active): no more expiry checks, but its owner
    /// link stays readable for `ended_ttl_ms`, after which the sweeper drops it.
    pub(crate) async fn retire_sweep(
        &self,
        session_key: &str,
        binding_id: &str,
    ) -> Result<(), WorkError> {
        self.schedule_sweep(session_key, binding_id, now_ms() + self.ended_ttl_ms)
            .await
    }

    /// Drops a binding's directory entry (its owner link) for good.
    pub(crate) async fn unschedule_sweep(
        &self,
        session_key: &str,
        binding_id: &str,
    ) -> Result<(), WorkError> {
        self.directory_del(
            &self.keys.directory(binding_id),
            &binding_entry(binding_id, session_key),
        )
        .await
    }

    /// (Re)schedules a finished session's expiry entry.
    pub(crate) async fn schedule_session_expiry(
        &self,
        session_key: &str,
        due_ms: u64,
    ) -> Result<(), WorkError> {
        self.directory_set(
            &self.keys.directory_for_session(session_key),
            &session_entry(session_key),
            due_ms,
        )
        .await
    }

    /// Drops a finished session's expiry entry.
    pub(crate) async fn unschedule_session_expiry(
        &self,
        session_key: &str,
    ) -> Result<(), WorkError> {
        self.directory_del(
            &self.keys.directory_for_session(session_key),
            &session_entry(session_key),
        )
        .await
    }

    /// Takes up to `limit` directory entries due by `now_ms` for this sweeper, hiding them
    /// from other sweepers for `lease_ms`.
    pub async fn claim_due_sweeps(
        &self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueEntry>, WorkError> {
        let members: Vec<String> = scripts::CLAIM_DUE
            .key(self.keys.directory_index())
            .arg(now_ms)
            .arg(lease_ms)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await?;
        // A member this version cannot read stays leased and comes due again: skipped, never
        // taken for another.
        Ok(members.iter().filter_map(|m| parse_entry(m)).collect())
    }

    /// The session owning a binding (its owner link).
    pub async fn binding_owner(&self, binding_id: &str) -> Result<Option<String>, WorkError> {
        let bucket = self.keys.directory(binding_id);
        let pattern = format!("{}*", query::glob_escape(&binding_entry(binding_id, "")));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        loop {
            // A listpack bucket answers whole in one step; a large one pages.
            let (next, members): (u64, Vec<String>) = redis::cmd("ZSCAN")
                .arg(&bucket)
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            // ZSCAN answers member, score, member, score…
            for member in members.iter().step_by(2) {
                if let Some(DueEntry::Binding { session_key, .. }) = parse_entry(member) {
                    return Ok(Some(session_key));
                }
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_members_round_trip() {
        assert_eq!(
            parse_entry(&binding_entry("b-1", "agent:a:x")),
            Some(DueEntry::Binding {
                binding_id: "b-1".into(),
                session_key: "agent:a:x".into()
            })
        );
        assert_eq!(
            parse_entry(&session_entry("agent:a:x")),
            Some(DueEntry::Session {
                session_key: "agent:a:x".into()
            })
        );
    }
}
