//! Where a completion goes when its session has no usable bound destination
//! (docs/design.md §3 "Routing a completion", rules 4 and 5). Two workers meet this case: the
//! router, when it decides, and a deliverer, when the bound thread turns out to be gone only
//! as it posts. Both ask here, so a session gets one outcome whoever noticed.

use crate::model::session::{SessionRecord, SessionState, SessionStatus};
use threadline_schemas::ConversationRef;

/// The outcome of a completion without a usable bound destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unbound<'a> {
    /// Rule 5: the session was spawned by another session that is still live: the output is
    /// that session's input (`tl.agent.*`), with the requester's conversation as its origin
    /// so a chain of sessions keeps its root thread.
    ToParent {
        /// The live session that spawned this one.
        parent: &'a SessionRecord,
        /// The conversation the session was spawned from.
        origin: &'a ConversationRef,
    },
    /// Rule 4 under `fail_closed`: nothing is posted; the outcome is `tl.out.failed`.
    FailClosed,
    /// Rule 4: posted in the requester's conversation, explicitly as a `fallback`.
    ToRequester(&'a ConversationRef),
}

/// Rule 5 alone: the session that spawned `session` (`parent`, looked up by the
/// requester's session key), when it is still live and can take the output as input.
pub(crate) fn live_parent<'a>(
    session: &SessionRecord,
    parent: Option<&'a SessionState>,
) -> Option<&'a SessionRecord> {
    parent
        .map(|p| &p.session)
        .filter(|p| p.status == SessionStatus::Active)
        .filter(|p| p.session_key == session.requester.session_key)
}

/// Rules 5 then 4: where the output of `session` goes when no binding can take it. `parent`
/// is the session named as its requester, when that is a Threadline session.
pub(crate) fn unbound<'a>(
    session: &'a SessionRecord,
    parent: Option<&'a SessionState>,
) -> Unbound<'a> {
    let origin = &session.requester.conversation;
    match live_parent(session, parent) {
        Some(parent) => Unbound::ToParent { parent, origin },
        None if session.fail_closed => Unbound::FailClosed,
        None => Unbound::ToRequester(origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_schemas::{DeliveryPolicy, Placement, Requester, SessionMode};

    fn conversation(id: &str) -> ConversationRef {
        ConversationRef {
            channel: "discord".into(),
            account_id: "bot".into(),
            conversation_id: id.into(),
            parent_conversation_id: None,
        }
    }

    fn session(key: &str, requester_key: &str, fail_closed: bool) -> SessionState {
        SessionState {
            session: SessionRecord {
                session_key: key.into(),
                agent_id: "a".into(),
                mode: SessionMode::Session,
                placement: Placement::Child,
                label: None,
                requester: Requester {
                    session_key: requester_key.into(),
                    conversation: conversation(&format!("spawned-from-{key}")),
                },
                delivery: DeliveryPolicy::BoundOnly,
                fail_closed,
                created_at: 0,
                spawn_event_id: "s".into(),
                persona: None,
                status: SessionStatus::Active,
            },
            bindings: Vec::new(),
        }
    }

    #[test]
    fn a_session_spawned_by_a_live_session_reports_to_it_with_its_own_origin() {
        let child = session("child", "parent", false);
        let parent = session("parent", "main", false);
        assert_eq!(
            unbound(&child.session, Some(&parent)),
            Unbound::ToParent {
                parent: &parent.session,
                origin: &conversation("spawned-from-child"),
            }
        );
    }

    #[test]
    fn a_live_parent_takes_the_output_even_of_a_fail_closed_session() {
        let child = session("child", "parent", true);
        let parent = session("parent", "main", false);
        assert!(matches!(
            unbound(&child.session, Some(&parent)),
            Unbound::ToParent { parent: p, .. } if p.session_key == "parent"
        ));
    }

    #[test]
    fn a_parent_that_is_no_longer_active_is_no_destination() {
        let child = session("child", "parent", false);
        for status in [SessionStatus::Completed, SessionStatus::Ended] {
            let mut parent = session("parent", "main", false);
            parent.session.status = status;
            assert_eq!(live_parent(&child.session, Some(&parent)), None);
            assert_eq!(
                unbound(&child.session, Some(&parent)),
                Unbound::ToRequester(&conversation("spawned-from-child"))
            );
        }
    }

    #[test]
    fn a_session_that_is_not_the_requester_is_no_parent() {
        let child = session("child", "parent", false);
        let stranger = session("someone-else", "main", false);
        assert_eq!(live_parent(&child.session, Some(&stranger)), None);
    }

    #[test]
    fn without_a_parent_the_requester_gets_it_unless_fail_closed() {
        let open = session("child", "main", false);
        assert_eq!(
            unbound(&open.session, None),
            Unbound::ToRequester(&conversation("spawned-from-child"))
        );
        let closed = session("child", "main", true);
        assert_eq!(unbound(&closed.session, None), Unbound::FailClosed);
    }
}
