//! The bindings table: one field per binding in its session's bucket (see `sessions.rs`),
//! and the conversation index (`keys::Keys::conversation`: a conversation → the ids of its
//! live bindings) through which an inbound message finds the sessions bound to its place.
//! A binding goes pending → active → ending → ended; its owner link and expiry checks are
//! in the directory (`directory.rs`).

use super::{corrupt, flag, layout, scripts, Store, UnknownAnswer};
use crate::error::WorkError;
use crate::model::session::SessionRecord;
use threadline_schemas::{now_ms, BindingRecord, BindingStatus, ConversationRef};

/// Result of activating a pending binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activated {
    /// Activated now.
    Now,
    /// Was already active (a redelivery of the confirmation).
    Already,
    /// Ended or gone before the platform confirmed it: its status then (`ending`, `ended`,
    /// `missing`).
    TooLate(String),
}

/// `ADD_BINDING`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    /// Added now.
    Now,
    /// Already there (a redelivery).
    Present,
    /// The session does not exist.
    NoSession,
}

impl Added {
    fn parse(answer: i64) -> Result<Self, UnknownAnswer> {
        match answer {
            1 => Ok(Added::Now),
            0 => Ok(Added::Present),
            -1 => Ok(Added::NoSession),
            other => Err(UnknownAnswer::new("ADD_BINDING", other)),
        }
    }
}

/// `ACTIVATE_BINDING`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    /// pending → active now.
    Activated,
    /// Active before this call.
    AlreadyActive,
    /// Ending since: too late.
    Ending,
    /// Ended since: too late.
    Ended,
    /// Not in its session (gone).
    Missing,
}

impl Activation {
    fn parse(answer: &str) -> Result<Self, UnknownAnswer> {
        match answer {
            "activated" => Ok(Activation::Activated),
            "active" => Ok(Activation::AlreadyActive),
            "ending" => Ok(Activation::Ending),
            "ended" => Ok(Activation::Ended),
            "missing" => Ok(Activation::Missing),
            other => Err(UnknownAnswer::new("ACTIVATE_BINDING", other)),
        }
    }
}

/// `BEGIN_ENDING`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// This call moved it to `ending`.
    Began,
    /// It was `ending` already (a crashed attempt began it).
    Already,
    /// It has ended.
    Ended,
    /// Not in its session (gone).
    Missing,
}

impl Ending {
    fn parse(answer: &str) -> Result<Self, UnknownAnswer> {
        match answer {
            "ending" => Ok(Ending::Began),
            "already" => Ok(Ending::Already),
            "ended" => Ok(Ending::Ended),
            "missing" => Ok(Ending::Missing),
            other => Err(UnknownAnswer::new("BEGIN_ENDING", other)),
        }
    }
}

/// `END_BINDING`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// This call ended it (or is a re-send of the call that did).
    Ended,
    /// Another call ended it.
    Noop,
    /// Not in its session (gone).
    Missing,
}

impl End {
    fn parse(answer: &str) -> Result<Self, UnknownAnswer> {
        match answer {
            "ended" => Ok(End::Ended),
            "noop" => Ok(End::Noop),
            "missing" => Ok(End::Missing),
            other => Err(UnknownAnswer::new("END_BINDING", other)),
        }
    }
}

impl Store {
    /// Adds a binding (idempotent). Links first, primary last. `Ok(true)` when this call
    /// added it.
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
        Ok(match Added::parse(added)? {
            Added::Now => true,
            Added::Present | Added::NoSession => false,
        })
    }

    /// The links of a binding: its directory entry (owner link; due for an expiry check
    /// when `index`, else never) and, when `index`, its conversation's index entry.
    async fn link_binding(&self, binding: &BindingRecord, index: bool) -> Result<(), WorkError> {
        // The directory entry names the owner; it is also the sweeper's work list, where
        // every active binding is from the moment it is active (pending ones never come due).
        let due = if index {
            crate::model::bindings::next_check(binding)
        } else {
            u64::MAX
        };
        self.schedule_sweep(&binding.target_session_key, &binding.binding_id, due)
            .await?;
        if index {
            let linked: i64 = scripts::CONVERSATION_LINK
                .key(self.keys.conversation(&binding.conversation))
                .arg(binding.conversation.key())
                .arg(&binding.binding_id)
                .invoke_async(&mut self.conn.clone())
                .await?;
            // Present already: a redelivery, or an activation after the add.
            let _added = flag("CONVERSATION_LINK", linked)?;
        }
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
        let too_late = match Activation::parse(&answer)? {
            Activation::Activated => return Ok((Activated::Now, Some(binding))),
            Activation::AlreadyActive => return Ok((Activated::Already, Some(binding))),
            Activation::Ending => "ending",
            Activation::Ended => "ended",
            Activation::Missing => "missing",
        };
        // Ended while the thread was being created: take the index link back.
        self.unlink_conversation(&binding).await?;
        Ok((Activated::TooLate(too_late.to_owned()), Some(binding)))
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
        let ended = End::parse(&answer)?;
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
        Ok(match ended {
            End::Ended => binding,
            End::Noop | End::Missing => None,
        })
    }

    /// Takes a binding out of its conversation's index entry (a pending binding was never
    /// in it).
    async fn unlink_conversation(&self, binding: &BindingRecord) -> Result<(), WorkError> {
        if binding.status == BindingStatus::Pending {
            return Ok(()); // never indexed: its conversation does not exist yet
        }
        let removed: i64 = scripts::CONVERSATION_UNLINK
            .key(self.keys.conversation(&binding.conversation))
            .arg(binding.conversation.key())
            .arg(&binding.binding_id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        // Absent already: a repeat, or a link a crash never wrote.
        let _removed = flag("CONVERSATION_UNLINK", removed)?;
        Ok(())
    }

    /// Refreshes the binding's `last_activity_at` (only while active). `Ok(true)` when it
    /// is active.
    pub(crate) async fn touch_binding(
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
        Ok(flag("TOUCH_BINDING", touched)?)
    }

    /// Moves a binding to `ending` (see `runtime::ending`). `Ok(true)` when it is ending
    /// now (this call or a crashed earlier one began it), `Ok(false)` when it already ended
    /// or does not exist.
    pub(crate) async fn begin_ending(
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
        Ok(match Ending::parse(&answer)? {
            Ending::Began | Ending::Already => true,
            Ending::Ended | Ending::Missing => false,
        })
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
        let link: Option<String> = redis::AsyncCommands::hget(
            &mut self.conn.clone(),
            self.keys.conversation(conversation),
            conversation.key(),
        )
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_script_answers_parse_and_an_unknown_one_is_an_error() {
        assert_eq!(Added::parse(-1).unwrap(), Added::NoSession);
        assert!(Added::parse(2).is_err());
        assert_eq!(Activation::parse("ended").unwrap(), Activation::Ended);
        assert!(Activation::parse("pending").is_err());
        assert_eq!(Ending::parse("already").unwrap(), Ending::Already);
        assert!(Ending::parse("begun").is_err());
        assert_eq!(End::parse("noop").unwrap(), End::Noop);
        assert!(End::parse("done").is_err());
    }
}
