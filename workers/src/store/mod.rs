//! Session and binding state in Redis — the `SessionBindingService` of the seed plan:
//! create sessions (named or generated), bind, list bindings by session, resolve by
//! conversation, touch, unbind; plus the dedup records of the pipeline (routing decisions
//! and post claims), all of which expire.
//!
//! A session and all its bindings live in one HASH bucket (see `keys`), so every change to
//! them is one atomic script in one slot. Records are positional MessagePack behind a
//! version byte (`layout`), so a session with its binding fits Redis's compact listpack
//! encoding. Links to other entities (conversation index, binding owner, labels)
//! are written *before* the primary record when creating and removed *after* it when
//! ending; a crash in between leaves a dangling link, never a binding nobody can find, and
//! readers check links against the primary record.

pub mod keys;
pub mod lanes;
pub mod layout;
pub mod query;
pub mod replays;
/// The Lua scripts, public so tests can run one twice as a cluster client would.
pub mod scripts;

use crate::config::Config;
use crate::error::WorkError;
use crate::io::redis::RedisConnection;
use crate::model::session::{SessionRecord, SessionState, SessionStatus};
use keys::Keys;
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use std::collections::HashMap;
use std::sync::Arc;
use threadline_schemas::{now_ms, BindingRecord, BindingStatus, ConversationRef};

/// Result of creating a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// This very spawn event created it earlier (a redelivery).
    Replay,
    /// Another spawn created it.
    Exists,
}

/// Result of activating a pending binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activated {
    /// Activated now.
    Now,
    /// Was already active (a redelivery of the confirmation).
    Already,
    /// Ended or gone before the platform confirmed it.
    TooLate(String),
}

/// A claim on one part of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First attempt, or the previous one certainly did not post. Carries the attempt number.
    Fresh(u32),
    /// A previous attempt may have posted (crash or timeout after the request left).
    /// `since_ms`: when the oldest attempt that may have posted was claimed (Unix ms; 0 when
    /// not known), for platform keys that are remembered only for a while.
    InDoubt { attempt: u32, since_ms: u64 },
    /// Another attempt holds a live lease; retry after this many ms.
    Busy(u64),
    /// Already posted; the platform's message id.
    Sent(String),
    /// Failed for good earlier, with this code.
    Failed(String),
}

/// How an attempt on a claimed part ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    Sent(String),
    Failed(String),
    /// The platform refused before doing anything (429, 4xx, connection refused).
    NotPosted(u32),
    /// The request may have been applied (timeout, 5xx mid-flight), by this attempt or one
    /// claimed since `since_ms` (Unix ms: when the doubt began).
    Unknown {
        attempt: u32,
        since_ms: u64,
    },
}

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
    /// completion instead of a script: a script call costs Redis several times as much.
    known: Arc<quick_cache::sync::Cache<String, Arc<Vec<String>>>>,
}

fn corrupt(what: impl std::fmt::Display) -> WorkError {
    WorkError::Corrupt(what.to_string())
}

impl Store {
    pub fn new(conn: impl Into<RedisConnection>, config: &Config) -> Self {
        Store {
            conn: conn.into(),
            keys: Keys::new(config.subject_prefix.clone()),
            dedup_ttl_ms: config.dedup_ttl_ms,
            ended_ttl_ms: config.ended_ttl_ms,
            known: Arc::new(quick_cache::sync::Cache::new(KNOWN_SESSIONS)),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for callers that need a raw command (tests, the CLI).
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    // ---- sessions -------------------------------------------------------------------

    /// Creates the session unless it exists; the session's `spawn_event_id` tells a
    /// redelivery of the same spawn from a different spawn naming the same key.
    pub async fn create_session(&self, session: &SessionRecord) -> Result<Created, WorkError> {
        let value = layout::session_value(session, None, &[]).map_err(corrupt)?;
        let answer: String = scripts::CREATE_SESSION
            .key(self.keys.session(&session.session_key))
            .arg(&session.session_key)
            .arg(&session.spawn_event_id)
            .arg(value)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match answer.as_str() {
            "created" => Ok(Created::Created),
            "replay" => Ok(Created::Replay),
            "exists" => Ok(Created::Exists),
            other => Err(corrupt(format!("create_session answered {other}"))),
        }
    }

    /// The session and all its bindings, in one round trip.
    pub async fn load_session(&self, session_key: &str) -> Result<Option<SessionState>, WorkError> {
        let bucket = self.keys.session(session_key);
        // Known binding ids: one `HMGET` reads the session and those bindings together, and
        // is the answer when the session still lists exactly them.
        if let Some(ids) = self.known.get(session_key) {
            let reply: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&bucket)
                .arg(layout::fetch_fields(session_key, &ids))
                .query_async(&mut self.conn.clone())
                .await?;
            match layout::parse_fetched(session_key, &ids, reply)? {
                layout::Fetched::Current(None) => {
                    self.known.remove(session_key);
                    return Ok(None);
                }
                layout::Fetched::Current(Some(state)) => return Ok(Some(state)),
                layout::Fetched::Changed => {}
            }
        }
        let reply: Vec<Option<Vec<u8>>> = scripts::LOAD_SESSION
            .key(bucket)
            .arg(session_key)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match layout::parse_loaded(session_key, reply)? {
            Some((state, ids)) => {
                self.known.insert(session_key.to_owned(), Arc::new(ids));
                Some(state)
            }
            None => {
                self.known.remove(session_key);
                None
            }
        })
    }

    /// Marks a session `completed` or `ended`: it stays readable for `ended_ttl_ms` (late
    /// completions still fall back with a precise reason), then expires, and its label is
    /// freed for the requester's next session. No unbounded growth.
    pub async fn finish_session(
        &self,
        session: &SessionRecord,
        status: SessionStatus,
    ) -> Result<(), WorkError> {
        let now = now_ms();
        if status != SessionStatus::Active {
            // The expiry entry first (a link): a crash after it leaves an entry the sweeper
            // drops, never a finished session nobody deletes.
            self.directory_set(
                &self.keys.directory_for_session(&session.session_key),
                &layout::session_entry(&session.session_key),
                (now + self.ended_ttl_ms) as f64,
            )
            .await?;
        }
        let _: i64 = scripts::SET_SESSION_STATUS
            .key(self.keys.session(&session.session_key))
            .arg(&session.session_key)
            .arg(layout::session_status_letter(status))
            .arg(now)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if let (SessionStatus::Completed | SessionStatus::Ended, Some(label)) =
            (status, &session.label)
        {
            // Only if it still points at this session (another may have taken it over).
            let _: String = scripts::RELEASE_LABEL
                .key(self.keys.labels(&session.requester.session_key))
                .arg(label)
                .arg(&session.session_key)
                .invoke_async(&mut self.conn.clone())
                .await?;
        }
        Ok(())
    }

    /// Takes `label` under `requester_session_key` for `session_key`. Returns the holder
    /// when another session has it (unless it is `replace`, a holder known to be over).
    pub async fn claim_label(
        &self,
        requester_session_key: &str,
        label: &str,
        session_key: &str,
        replace: Option<&str>,
    ) -> Result<Option<String>, WorkError> {
        let answer: String = scripts::CLAIM_LABEL
            .key(self.keys.labels(requester_session_key))
            .arg(label)
            .arg(session_key)
            .arg(replace.unwrap_or(""))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if answer == "ok" { None } else { Some(answer) })
    }

    /// The session a label points to.
    pub async fn label_holder(
        &self,
        requester_session_key: &str,
        label: &str,
    ) -> Result<Option<String>, WorkError> {
        Ok(self
            .conn
            .clone()
            .hget(self.keys.labels(requester_session_key), label)
            .await?)
    }

    // ---- bindings -------------------------------------------------------------------

    /// Adds a binding (idempotent). Links first, primary last.
    pub async fn add_binding(&self, binding: &BindingRecord) -> Result<bool, WorkError> {
        self.link_binding(binding, binding.status == BindingStatus::Active)
            .await?;
        let Some(owner) = self.load_session(&binding.target_session_key).await? else {
            return Ok(false); // bindings are added to sessions that exist (binder)
        };
        let value = layout::binding_value(binding, layout::Relative::to(&owner.session))
            .map_err(corrupt)?;
        let added: i64 = scripts::ADD_BINDING
            .key(self.keys.session(&binding.target_session_key))
            .arg(&binding.target_session_key)
            .arg(&binding.binding_id)
            .arg(value)
            .arg(now_ms())
            .arg(self.ended_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(added == 1)
    }

    async fn link_binding(&self, binding: &BindingRecord, index: bool) -> Result<(), WorkError> {
        // The directory entry names the owner; it is also the sweeper's work list, where
        // every active binding is from the moment it is active (pending ones never come due).
        let due = if index {
            crate::model::bindings::next_check(binding) as f64
        } else {
            f64::INFINITY
        };
        self.directory_set(
            &self.keys.directory(&binding.binding_id),
            &layout::binding_entry(&binding.binding_id, &binding.target_session_key),
            due,
        )
        .await?;
        if index {
            let _: i64 = scripts::CONVERSATION_LINK
                .key(self.keys.conversation(&binding.conversation))
                .arg(binding.conversation.key())
                .arg(&binding.binding_id)
                .invoke_async(&mut self.conn.clone())
                .await?;
        }
        Ok(())
    }

    async fn directory_set(&self, bucket: &str, member: &str, score: f64) -> Result<(), WorkError> {
        let score = if score.is_infinite() {
            "+inf".to_owned()
        } else {
            format!("{score}")
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

    async fn directory_del(&self, bucket: &str, member: &str) -> Result<(), WorkError> {
        let _: i64 = scripts::DIRECTORY_DEL
            .key(bucket)
            .key(self.keys.directory_index())
            .arg(member)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// pending → active once the platform confirmed `conversation`.
    pub async fn activate_binding(
        &self,
        session_key: &str,
        binding_id: &str,
        conversation: &ConversationRef,
    ) -> Result<(Activated, Option<BindingRecord>), WorkError> {
        let Some(state) = self.load_session(session_key).await? else {
            return Ok((Activated::TooLate("missing".into()), None));
        };
        let session = state.session;
        let Some(mut binding) = state
            .bindings
            .into_iter()
            .find(|b| b.binding_id == binding_id)
        else {
            return Ok((Activated::TooLate("missing".into()), None));
        };
        binding.conversation = conversation.clone();
        binding.status = BindingStatus::Active;
        binding.last_activity_at = now_ms();
        self.link_binding(&binding, true).await?;
        let blob =
            layout::binding_static(&binding, layout::Relative::to(&session)).map_err(corrupt)?;
        let answer: String = scripts::ACTIVATE_BINDING
            .key(self.keys.session(session_key))
            .arg(binding_id)
            .arg(blob)
            .arg(binding.last_activity_at)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match answer.as_str() {
            "activated" => Ok((Activated::Now, Some(binding))),
            "active" => Ok((Activated::Already, Some(binding))),
            other => {
                // Ended while the thread was being created: take the index link back.
                self.unlink_conversation(&binding).await?;
                Ok((Activated::TooLate(other.to_owned()), Some(binding)))
            }
        }
    }

    /// Ends a binding. Returns the record when this call ended it (so exactly one caller
    /// reports `ended`), `None` when it was already ended or unknown.
    pub async fn end_binding(
        &self,
        session_key: &str,
        binding_id: &str,
        reason: &str,
    ) -> Result<Option<BindingRecord>, WorkError> {
        let answer: String = scripts::END_BINDING
            .key(self.keys.session(session_key))
            .arg(binding_id)
            .arg(reason)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(now_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let state = self.load_session(session_key).await?;
        let binding =
            state.and_then(|s| s.bindings.into_iter().find(|b| b.binding_id == binding_id));
        if let Some(b) = &binding {
            // Primary first, links after: a crash here leaves a stale link that readers
            // filter out, never a live binding without its index entry.
            self.unlink_conversation(b).await?;
            if b.status == BindingStatus::Ended {
                // The owner link stays `ended_ttl_ms` (readable, unbind answers precisely),
                // then the sweeper drops it.
                self.retire_sweep(session_key, binding_id).await?;
            }
        }
        Ok(if answer == "ended" { binding } else { None })
    }

    async fn unlink_conversation(&self, binding: &BindingRecord) -> Result<(), WorkError> {
        if binding.status == BindingStatus::Pending {
            return Ok(()); // never indexed: its conversation does not exist yet
        }
        let _: i64 = scripts::CONVERSATION_UNLINK
            .key(self.keys.conversation(&binding.conversation))
            .arg(binding.conversation.key())
            .arg(&binding.binding_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Refreshes the binding's `last_activity_at` (only while active).
    pub async fn touch_binding(
        &self,
        session_key: &str,
        binding_id: &str,
    ) -> Result<bool, WorkError> {
        let touched: i64 = scripts::TOUCH_BINDING
            .key(self.keys.session(session_key))
            .arg(binding_id)
            .arg(now_ms())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(touched == 1)
    }

    /// Moves a binding to `ending` (see `lifecycle`). `Ok(true)` when it is ending now
    /// (this call or a crashed earlier one began it), `Ok(false)` when it already ended or
    /// does not exist.
    pub async fn begin_ending(
        &self,
        session_key: &str,
        binding_id: &str,
        reason: &str,
    ) -> Result<bool, WorkError> {
        let answer: String = scripts::BEGIN_ENDING
            .key(self.keys.session(session_key))
            .arg(binding_id)
            .arg(reason)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(matches!(answer.as_str(), "ending" | "already"))
    }

    // ---- the sweeper's work list --------------------------------------------------------

    /// Schedules an expiry check of a binding at `due_ms`.
    pub async fn schedule_sweep(
        &self,
        session_key: &str,
        binding_id: &str,
        due_ms: u64,
    ) -> Result<(), WorkError> {
        // u64::MAX: never due (a pending binding keeps only its owner link).
        let due = if due_ms == u64::MAX {
            f64::INFINITY
        } else {
            due_ms as f64
        };
        self.directory_set(
            &self.keys.directory(binding_id),
            &layout::binding_entry(binding_id, session_key),
            due,
        )
        .await
    }

    /// A binding is over (or never became active): no more expiry checks, but its owner
    /// link stays readable for `ended_ttl_ms`, after which the sweeper drops it.
    pub async fn retire_sweep(&self, session_key: &str, binding_id: &str) -> Result<(), WorkError> {
        self.schedule_sweep(session_key, binding_id, now_ms() + self.ended_ttl_ms)
            .await
    }

    /// Drops a binding's directory entry (its owner link) for good.
    pub async fn unschedule_sweep(
        &self,
        session_key: &str,
        binding_id: &str,
    ) -> Result<(), WorkError> {
        self.directory_del(
            &self.keys.directory(binding_id),
            &layout::binding_entry(binding_id, session_key),
        )
        .await
    }

    /// Drops a finished session's expiry entry.
    pub async fn unschedule_session_expiry(&self, session_key: &str) -> Result<(), WorkError> {
        self.directory_del(
            &self.keys.directory_for_session(session_key),
            &layout::session_entry(session_key),
        )
        .await
    }

    /// Deletes a finished session once `ended_ttl_ms` passed since it finished.
    /// `Ok(Some(due))` when it is not due yet (reschedule), `Ok(None)` when done (deleted,
    /// gone, or resumed).
    pub async fn expire_session(&self, session_key: &str) -> Result<Option<u64>, WorkError> {
        let answer: String = scripts::EXPIRE_SESSION
            .key(self.keys.session(session_key))
            .arg(session_key)
            .arg(now_ms())
            .arg(self.ended_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(answer.parse().ok())
    }

    /// Reschedules a finished session's expiry entry.
    pub async fn schedule_session_expiry(
        &self,
        session_key: &str,
        due_ms: u64,
    ) -> Result<(), WorkError> {
        self.directory_set(
            &self.keys.directory_for_session(session_key),
            &layout::session_entry(session_key),
            due_ms as f64,
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
    ) -> Result<Vec<layout::DueEntry>, WorkError> {
        let members: Vec<String> = scripts::CLAIM_DUE
            .key(self.keys.directory_index())
            .arg(now_ms)
            .arg(lease_ms)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| layout::parse_entry(m))
            .collect())
    }

    // ---- echo suppression -----------------------------------------------------------

    /// Records an author id as Threadline's own on `channel`.
    pub async fn add_own_author(&self, channel: &str, author_id: &str) -> Result<(), WorkError> {
        let _: () = self
            .conn
            .clone()
            .sadd(self.keys.own_authors(channel), author_id)
            .await?;
        Ok(())
    }

    pub async fn is_own_author(&self, channel: &str, author_id: &str) -> Result<bool, WorkError> {
        Ok(self
            .conn
            .clone()
            .sismember(self.keys.own_authors(channel), author_id)
            .await?)
    }

    // ---- retry budget -------------------------------------------------------------------

    /// Counts one failed attempt of `event_id` at `stage`; returns the failures so far.
    /// JetStream's delivery count cannot be the budget: it also counts deliveries that were
    /// only told to wait (a pending binding, another instance's claim).
    pub async fn count_failure(&self, stage: &str, event_id: &str) -> Result<u32, WorkError> {
        let key = self.keys.failures(stage, event_id);
        let (count,): (u32,) = redis::pipe()
            .incr(&key, 1)
            .pexpire(&key, self.dedup_ttl_ms as i64)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }

    // ---- send dedup -------------------------------------------------------------------

    /// Targets a send event already reached (session key → outcome).
    pub async fn sent_targets(&self, event_id: &str) -> Result<HashMap<String, String>, WorkError> {
        Ok(self.conn.clone().hgetall(self.keys.sent(event_id)).await?)
    }

    /// Records that a send event reached `session_key`.
    pub async fn record_sent(
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

    /// The session owning a binding.
    pub async fn binding_owner(&self, binding_id: &str) -> Result<Option<String>, WorkError> {
        let bucket = self.keys.directory(binding_id);
        let pattern = format!(
            "{}*",
            query::glob_escape(&layout::binding_entry(binding_id, ""))
        );
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
                if let Some(layout::DueEntry::Binding { session_key, .. }) =
                    layout::parse_entry(member)
                {
                    return Ok(Some(session_key));
                }
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }

    /// Live bindings of a conversation, checked against their sessions.
    pub async fn bindings_for_conversation(
        &self,
        conversation: &ConversationRef,
    ) -> Result<Vec<BindingRecord>, WorkError> {
        Ok(self
            .sessions_bound_to(conversation)
            .await?
            .into_iter()
            .map(|(_, binding)| binding)
            .collect())
    }

    /// Sessions with a live binding in a conversation, with that binding.
    pub async fn sessions_bound_to(
        &self,
        conversation: &ConversationRef,
    ) -> Result<Vec<(SessionRecord, BindingRecord)>, WorkError> {
        let link: Option<String> = self
            .conn
            .clone()
            .hget(self.keys.conversation(conversation), conversation.key())
            .await?;
        let mut found = Vec::new();
        for binding_id in link.iter().flat_map(|l| l.split(',')) {
            let binding_id = binding_id.to_owned();
            let Some(session_key) = self.binding_owner(&binding_id).await? else {
                continue; // a link left by a crash, or an owner link already dropped
            };
            let Some(state) = self.load_session(&session_key).await? else {
                continue;
            };
            let live = state.bindings.into_iter().find(|b| {
                b.binding_id == binding_id
                    && b.status == BindingStatus::Active
                    && b.conversation.same_place(conversation)
            });
            if let Some(binding) = live {
                found.push((state.session, binding));
            }
        }
        found.sort_by(|a, b| a.1.binding_id.cmp(&b.1.binding_id));
        Ok(found)
    }

    // ---- routing decisions ----------------------------------------------------------

    /// The decision stored for an event, if any.
    pub async fn load_route(&self, event_id: &str) -> Result<Option<Vec<u8>>, WorkError> {
        Ok(self.conn.clone().get(self.keys.route(event_id)).await?)
    }

    /// Stores a decision unless one exists, in one round trip (`SET … NX GET`, Redis 7.0+):
    /// `None` when ours is stored now, `Some(theirs)` when another attempt stored one first.
    pub async fn store_route(
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

    // ---- post claims ----------------------------------------------------------------

    /// Claims part `part` of `delivery_id` before calling the platform.
    pub async fn claim_part(
        &self,
        delivery_id: &str,
        part: usize,
        lease_ms: u64,
    ) -> Result<Claim, WorkError> {
        let key = self.keys.post_part(delivery_id, part);
        // Nearly every claim is the first one: one plain `SET … NX PX … GET` (a fraction of
        // a script call for Redis) takes it. Only a part claimed before goes through the
        // script, which reads what the earlier attempt left.
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .get(true)
            .with_expiration(SetExpiry::PX(self.dedup_ttl_ms));
        let earlier: Option<String> = self
            .conn
            .clone()
            .set_options(
                &key,
                ["c|", itoa::Buffer::new().format(now_ms()), "|1"].concat(),
                options,
            )
            .await?;
        if earlier.is_none() {
            return Ok(Claim::Fresh(1));
        }
        let (kind, value): (String, String) = scripts::CLAIM_PART
            .key(&key)
            .arg(now_ms())
            .arg(lease_ms)
            .arg(self.dedup_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let number = || value.parse::<u64>().map_err(corrupt);
        Ok(match kind.as_str() {
            "claimed" => Claim::Fresh(number()? as u32),
            "in_doubt" => {
                let (attempt, since) = value.split_once('|').unwrap_or((&value, "0"));
                Claim::InDoubt {
                    attempt: attempt.parse::<u32>().map_err(corrupt)?,
                    since_ms: since.parse::<u64>().map_err(corrupt)?,
                }
            }
            "busy" => Claim::Busy(number()?),
            "sent" => Claim::Sent(value),
            "failed" => Claim::Failed(value),
            other => return Err(corrupt(format!("claim answered {other}"))),
        })
    }

    /// Records how an attempt on a claimed part ended.
    pub async fn settle_part(
        &self,
        delivery_id: &str,
        part: usize,
        outcome: &PartOutcome,
    ) -> Result<(), WorkError> {
        let state = match outcome {
            PartOutcome::Sent(id) => ["s|", id].concat(),
            PartOutcome::Failed(code) => format!("f|{code}"),
            PartOutcome::NotPosted(n) => format!("r|{n}"),
            PartOutcome::Unknown { attempt, since_ms } => format!("d|{attempt}|{since_ms}"),
        };
        // The record outlives the claim by the dedup window, like the claim itself.
        let _: () = self
            .conn
            .clone()
            .pset_ex(
                self.keys.post_part(delivery_id, part),
                state,
                self.dedup_ttl_ms,
            )
            .await?;
        Ok(())
    }
}
