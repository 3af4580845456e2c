//! Read-only queries for operators (`threadline sessions …`, `threadline bindings …`):
//! every session of the deployment by a cursor SCAN of the session buckets in bounded steps (never `KEYS`, which
//! blocks Redis for the whole keyspace), filtered here. Workers never call these: they find
//! what they need by key.
//!
//! On Redis Cluster every primary is scanned in turn (`RedisConnection::scan_keys`).

use super::{layout, Store};
use crate::error::WorkError;
use crate::model::session::{SessionState, SessionStatus};
use std::collections::HashMap;
use threadline_schemas::{BindingRecord, BindingStatus};

/// Keys asked for per SCAN step: small enough that one step never holds Redis up.
const SCAN_COUNT: usize = 500;

/// Which sessions a listing keeps. Empty filters keep everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionFilter {
    pub(crate) agent_id: Option<String>,
    pub(crate) status: Option<SessionStatus>,
    /// The requester's channel, or the channel of any of the session's bindings.
    pub(crate) channel: Option<String>,
}

impl SessionFilter {
    pub(crate) fn keeps(&self, state: &SessionState) -> bool {
        let s = &state.session;
        self.agent_id.as_ref().is_none_or(|a| &s.agent_id == a)
            && self.status.is_none_or(|st| s.status == st)
            && self.channel.as_ref().is_none_or(|c| {
                &s.requester.conversation.channel == c
                    || state.bindings.iter().any(|b| &b.conversation.channel == c)
            })
    }
}

/// Which bindings a listing keeps. Empty filters keep everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct BindingFilter {
    pub(crate) session_key: Option<String>,
    pub(crate) channel: Option<String>,
    pub(crate) account_id: Option<String>,
    pub(crate) conversation_id: Option<String>,
    pub(crate) status: Option<BindingStatus>,
}

impl BindingFilter {
    pub(crate) fn keeps(&self, b: &BindingRecord) -> bool {
        let c = &b.conversation;
        self.session_key
            .as_ref()
            .is_none_or(|s| &b.target_session_key == s)
            && self.channel.as_ref().is_none_or(|ch| &c.channel == ch)
            && self.account_id.as_ref().is_none_or(|a| &c.account_id == a)
            && self
                .conversation_id
                .as_ref()
                .is_none_or(|id| &c.conversation_id == id)
            && self.status.is_none_or(|st| b.status == st)
    }
}

impl Store {
    /// Every session bucket of the deployment, by SCAN.
    async fn scan_session_buckets(&self) -> Result<Vec<String>, WorkError> {
        let pattern = format!("{}*", glob_escape(&self.keys.session_bucket_prefix()));
        let mut found = self.conn.scan_keys(&pattern, "hash", SCAN_COUNT).await?;
        found.sort();
        found.dedup(); // SCAN may return a key twice while the keyspace is rehashed
        Ok(found)
    }

    /// Sessions (with all their bindings) that `keep` accepts, newest first, at most `limit`.
    pub async fn list_sessions(
        &self,
        keep: impl Fn(&SessionState) -> bool,
        limit: usize,
    ) -> Result<Vec<SessionState>, WorkError> {
        let buckets = self.scan_session_buckets().await?;
        let mut found = Vec::new();
        // A bucket holds a few dozen sessions: a few buckets per round trip.
        for chunk in buckets.chunks(16) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.hgetall(key);
            }
            let hashes: Vec<HashMap<Vec<u8>, Vec<u8>>> =
                pipe.query_async(&mut self.conn.clone()).await?;
            for fields in hashes {
                for parsed in layout::parse_bucket(&fields) {
                    match parsed {
                        Ok(state) if keep(&state) => found.push(state),
                        Ok(_) => {}
                        Err((key, error)) => {
                            tracing::warn!(session_key = %key, %error, "unreadable session skipped");
                        }
                    }
                }
            }
        }
        found.sort_by(|a, b| {
            (b.session.created_at, &b.session.session_key)
                .cmp(&(a.session.created_at, &a.session.session_key))
        });
        found.truncate(limit);
        Ok(found)
    }

    /// Bindings `filter` accepts, most recently bound first, at most `limit`. A filter on
    /// one session reads that session only; anything else scans.
    pub(crate) async fn list_bindings(
        &self,
        filter: &BindingFilter,
        limit: usize,
    ) -> Result<Vec<BindingRecord>, WorkError> {
        let sessions = match &filter.session_key {
            Some(key) => self.load_session(key).await?.into_iter().collect(),
            None => {
                self.list_sessions(|s| s.bindings.iter().any(|b| filter.keeps(b)), usize::MAX)
                    .await?
            }
        };
        let mut found: Vec<BindingRecord> = sessions
            .into_iter()
            .flat_map(|s| s.bindings)
            .filter(|b| filter.keeps(b))
            .collect();
        found.sort_by(|a, b| (b.bound_at, &b.binding_id).cmp(&(a.bound_at, &a.binding_id)));
        found.truncate(limit);
        Ok(found)
    }

    /// One binding by id, through its owner link.
    pub(crate) async fn find_binding(
        &self,
        binding_id: &str,
    ) -> Result<Option<BindingRecord>, WorkError> {
        let Some(owner) = self.binding_owner(binding_id).await? else {
            return Ok(None);
        };
        Ok(self
            .load_session(&owner)
            .await?
            .and_then(|s| s.bindings.into_iter().find(|b| b.binding_id == binding_id)))
    }
}

/// `s` as a literal inside a Redis glob pattern.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_specials_are_escaped() {
        assert_eq!(glob_escape("tl:{s:"), "tl:{s:");
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
