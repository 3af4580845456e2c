//! The sessions table: one field per session in its session bucket (`keys::Keys::session`),
//! beside its bindings' fields; plus each requester's labels (label → child session).
//! A finished session stays readable for `ended_ttl_ms`, then the sweeper deletes it with
//! its bindings (its expiry entry lives in the directory: `directory.rs`).

use super::{corrupt, flag, layout, scripts, Store, UnknownAnswer};
use crate::error::WorkError;
use crate::model::session::{SessionRecord, SessionState, SessionStatus};
use redis::AsyncCommands;
use std::sync::Arc;
use threadline_schemas::now_ms;

/// Result of creating a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This call created it.
    Created,
    /// This very spawn event created it earlier (a redelivery).
    Replay,
    /// Another spawn created it.
    Exists,
}

impl Created {
    /// `CREATE_SESSION`'s answer.
    fn parse(answer: &str) -> Result<Self, UnknownAnswer> {
        match answer {
            "created" => Ok(Created::Created),
            "replay" => Ok(Created::Replay),
            "exists" => Ok(Created::Exists),
            other => Err(UnknownAnswer::new("CREATE_SESSION", other)),
        }
    }
}

/// `EXPIRE_SESSION`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// Deleted now, with its bindings.
    Deleted,
    /// Not there (deleted before).
    Gone,
    /// Active again (resumed by name): kept.
    Resumed,
    /// Finished, but its `ended_ttl_ms` runs until this time (Unix ms).
    NotDue(u64),
}

impl Expired {
    fn parse(answer: &str) -> Result<Self, UnknownAnswer> {
        match answer {
            "deleted" => Ok(Expired::Deleted),
            "gone" => Ok(Expired::Gone),
            "active" => Ok(Expired::Resumed),
            other => other
                .parse()
                .map(Expired::NotDue)
                .map_err(|_| UnknownAnswer::new("EXPIRE_SESSION", other)),
        }
    }
}

/// `CLAIM_LABEL`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelClaim {
    /// The label is this session's now.
    Taken,
    /// Another session holds it: its key.
    HeldBy(String),
}

impl LabelClaim {
    fn parse(answer: String) -> Self {
        // Any other answer is the holder's session key, which may be any text but `ok`
        // (session keys are `agent:…`).
        if answer == "ok" {
            LabelClaim::Taken
        } else {
            LabelClaim::HeldBy(answer)
        }
    }
}

/// `RELEASE_LABEL`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Released {
    /// It pointed at the session and is free now.
    Released,
    /// Another session took it over meanwhile: left alone.
    Kept,
}

impl Released {
    fn parse(answer: &str) -> Result<Self, UnknownAnswer> {
        match answer {
            "released" => Ok(Released::Released),
            "kept" => Ok(Released::Kept),
            other => Err(UnknownAnswer::new("RELEASE_LABEL", other)),
        }
    }
}

impl Store {
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
        Ok(Created::parse(&answer)?)
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
    pub(crate) async fn finish_session(
        &self,
        session: &SessionRecord,
        status: SessionStatus,
    ) -> Result<(), WorkError> {
        let now = now_ms();
        if status != SessionStatus::Active {
            // The expiry entry first (a link): a crash after it leaves an entry the sweeper
            // drops, never a finished session nobody deletes.
            self.schedule_session_expiry(&session.session_key, now + self.ended_ttl_ms)
                .await?;
        }
        let set: i64 = scripts::SET_SESSION_STATUS
            .key(self.keys.session(&session.session_key))
            .arg(&session.session_key)
            .arg(layout::session_status_letter(status))
            .arg(now)
            .invoke_async(&mut self.conn.clone())
            .await?;
        // A session that is gone has nothing to finish: its expiry entry finds it gone.
        let _exists = flag("SET_SESSION_STATUS", set)?;
        if let (SessionStatus::Completed | SessionStatus::Ended, Some(label)) =
            (status, &session.label)
        {
            // Only if it still points at this session (another may have taken it over).
            let answer: String = scripts::RELEASE_LABEL
                .key(self.keys.labels(&session.requester.session_key))
                .arg(label)
                .arg(&session.session_key)
                .invoke_async(&mut self.conn.clone())
                .await?;
            match Released::parse(&answer)? {
                Released::Released | Released::Kept => {}
            }
        }
        Ok(())
    }

    /// Deletes a finished session once `ended_ttl_ms` passed since it finished.
    /// `Ok(Some(due))` when it is not due yet (reschedule), `Ok(None)` when done (deleted,
    /// gone, or resumed).
    pub(crate) async fn expire_session(&self, session_key: &str) -> Result<Option<u64>, WorkError> {
        let answer: String = scripts::EXPIRE_SESSION
            .key(self.keys.session(session_key))
            .arg(session_key)
            .arg(now_ms())
            .arg(self.ended_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match Expired::parse(&answer)? {
            Expired::NotDue(due) => Some(due),
            Expired::Deleted | Expired::Gone | Expired::Resumed => None,
        })
    }

    /// Takes `label` under `requester_session_key` for `session_key`. Returns the holder
    /// when another session has it (unless it is `replace`, a holder known to be over).
    pub(crate) async fn claim_label(
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
        Ok(match LabelClaim::parse(answer) {
            LabelClaim::Taken => None,
            LabelClaim::HeldBy(holder) => Some(holder),
        })
    }

    /// The session a label points to.
    pub(crate) async fn label_holder(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_script_answers_parse_and_an_unknown_one_is_an_error() {
        assert_eq!(Created::parse("replay").unwrap(), Created::Replay);
        assert!(Created::parse("made").is_err());
        assert_eq!(Expired::parse("active").unwrap(), Expired::Resumed);
        assert_eq!(Expired::parse("1700").unwrap(), Expired::NotDue(1700));
        assert!(Expired::parse("later").is_err());
        assert_eq!(Released::parse("kept").unwrap(), Released::Kept);
        assert!(Released::parse("freed").is_err());
        assert_eq!(
            LabelClaim::parse("agent:a:b".into()),
            LabelClaim::HeldBy("agent:a:b".into())
        );
        assert_eq!(LabelClaim::parse("ok".into()), LabelClaim::Taken);
    }
}
