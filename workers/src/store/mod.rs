//! Threadline's state in Redis, one file per table; [`Store`] is the one handle to all of
//! them (each file adds its own `impl Store` block):
//!
//! - `sessions.rs` — sessions: create (named or generated), load with their bindings,
//!   finish, expire; the requester's labels.
//! - `bindings.rs` — bindings: bind, activate, touch, begin ending, end; the conversation
//!   index that finds the bindings of a place (inbound routing).
//! - `directory.rs` — the binding directory: who owns each binding, and the sweeper's work
//!   list of due expiry checks ([`DueEntry`]).
//! - `dedup.rs` — per-event records: the routing decision of a completion, the targets a
//!   send reached, the retry budget.
//! - `post_claims.rs` — where a post to a platform (Discord, Slack, …) is deduplicated: a
//!   [`Claim`] on each part before the call, settled with a [`PartOutcome`] after it.
//! - `authors.rs` — the author ids that are Threadline itself on a channel (echo suppression).
//! - `lanes.rs` — who owns which delivery lane (leases).
//! - `replays.rs` — dead letters an operator replayed.
//! - `query.rs` — operator listings by SCAN (the CLI; workers never call these).
//!
//! Below them: `keys.rs` names every key, `layout.rs` encodes the session bucket's values,
//! `scripts.rs` loads the Lua scripts of `lua/`.
//!
//! A session and all its bindings live in one HASH bucket (see `keys`), so every change to
//! them is one atomic script in one slot. Records are positional MessagePack behind a
//! version byte (`layout`), so a session with its binding fits Redis's compact listpack
//! encoding. Links to other entities (conversation index, binding owner, labels)
//! are written *before* the primary record when creating and removed *after* it when
//! ending; a crash in between leaves a dangling link, never a binding nobody can find, and
//! readers check links against the primary record. Everything per event expires.

mod authors;
mod bindings;
mod cursors;
mod dedup;
mod directory;
/// Redis key names (one place; stored data is found through them).
pub mod keys;
/// Who owns which delivery lane (leases).
pub mod lanes;
/// How session and binding values are encoded in the session bucket.
pub mod layout;
mod post_claims;
pub(crate) mod query;
/// Dead letters an operator replayed.
pub mod replays;
/// The Lua scripts (public so tests can run one twice as a cluster client would).
pub mod scripts;
mod sessions;

pub use bindings::Activated;
pub use directory::DueEntry;
pub use post_claims::{Claim, PartOutcome};
pub use sessions::Created;

use crate::config::Config;
use crate::error::WorkError;
use crate::io::redis::RedisConnection;
use keys::Keys;
use std::sync::Arc;

/// Sessions whose binding ids this process has read lately (at most this many).
const KNOWN_SESSIONS: usize = 16_384;

/// Handle to the Redis state. Cheap to clone (a multiplexed connection).
#[derive(Clone)]
pub struct Store {
    conn: RedisConnection,
    keys: Keys,
    dedup_ttl_ms: u64,
    ended_ttl_ms: u64,
    /// Session key → its binding ids when last read. Only a hint for the next read (which
    /// checks it), so a session bound to a thread reads as one plain `HMGET` per
    /// completion instead of a script, which costs Redis several times as much.
    known: Arc<quick_cache::sync::Cache<String, Arc<Vec<String>>>>,
}

impl Store {
    /// A store over `conn` for the deployment `config` names (its key namespace and the
    /// lifetimes of what it keeps).
    pub fn new(conn: impl Into<RedisConnection>, config: &Config) -> Self {
        Store {
            conn: conn.into(),
            keys: Keys::new(config.subject_prefix.clone()),
            dedup_ttl_ms: config.dedup_ttl_ms,
            ended_ttl_ms: config.ended_ttl_ms,
            known: Arc::new(quick_cache::sync::Cache::new(KNOWN_SESSIONS)),
        }
    }

    /// The key names of this deployment.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for callers that need a raw command (tests, the CLI).
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }
}

fn corrupt(what: impl std::fmt::Display) -> WorkError {
    WorkError::Corrupt(what.to_string())
}

/// A script answered something this version does not know: state written by another
/// version, or a script out of step with the code that parses its answers. Retrying cannot
/// help, so it becomes [`WorkError::Corrupt`].
#[derive(Debug, thiserror::Error)]
#[error("script {script} answered {answer:?}, which this version does not know")]
pub(crate) struct UnknownAnswer {
    /// Which script answered.
    script: &'static str,
    /// What it answered.
    answer: String,
}

impl UnknownAnswer {
    fn new(script: &'static str, answer: impl std::fmt::Display) -> Self {
        UnknownAnswer {
            script,
            answer: answer.to_string(),
        }
    }
}

impl From<UnknownAnswer> for WorkError {
    fn from(e: UnknownAnswer) -> Self {
        WorkError::Corrupt(e.to_string())
    }
}

/// A script's `1` / `0` answer (done / not done).
fn flag(script: &'static str, answer: i64) -> Result<bool, UnknownAnswer> {
    match answer {
        1 => Ok(true),
        0 => Ok(false),
        other => Err(UnknownAnswer::new(script, other)),
    }
}
