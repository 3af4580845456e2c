//! Where a completion goes: docs/design.md §3 "Routing a completion", rules 2–4, as one pure
//! function of the completion, the session's stored state and the clock. Rule 1 (decide once
//! per event) is the caller's: it stores what this returns and never asks again.

use crate::model::bindings::reason as ended;
use crate::model::fallback::{self, Unbound};
use crate::model::platform_codes::PermanentCode;
use crate::model::session::{SessionRecord, SessionState};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use threadline_schemas::{
    BindingRecord, BindingStatus, CompletionReported, ConversationRef, DeliveryMode,
    DeliveryPolicy, Placement, SessionPersona,
};

/// One post the router decided on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedPost {
    /// Where to post.
    pub destination: ConversationRef,
    /// Why it goes there, as the contract names it.
    pub mode: DeliveryMode,
    /// The reason published on `tl.out.delivered.reason`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The binding it goes through, for a bound post.
    pub binding_id: Option<String>,
    /// The name and picture the post shows: its session's persona.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<SessionPersona>,
}

/// The decision stored per event. Stored, so its shape is versioned by field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteDecision {
    /// Post to these destinations, in this order.
    Post {
        /// The posts, in order.
        posts: Vec<PlannedPost>,
    },
    /// Post nothing; report `tl.out.failed` with this code.
    Fail {
        /// The code on `tl.out.failed.code`.
        code: String,
        /// What went wrong, for people.
        message: String,
    },
    /// The session was spawned by another session (rule 5): its output is that session's
    /// input, not a chat post. `origin` is the conversation (and thread) the child was
    /// spawned from, so the chain keeps its root.
    Input {
        /// The parent session.
        session_key: String,
        /// The parent session's agent.
        agent_id: String,
        /// The conversation the chain started in.
        origin: ConversationRef,
        /// Why no chat post.
        reason: String,
    },
}

/// What the router should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Decided: store it and act on it.
    Decided(RouteDecision),
    /// A binding is still `pending`; ask again later (no decision is stored yet).
    Wait {
        /// When to ask again.
        retry_after: Duration,
    },
}

/// Reasons, as published on `tl.out.delivered.reason`.
pub mod reason {
    /// The session's bound conversation.
    pub const BOUND: &str = "bound";
    /// The session has no placement: its requester's conversation.
    pub const NO_PLACEMENT: &str = "no_placement";
    /// The session's policy is `requester_only`.
    pub const REQUESTER_ONLY: &str = "requester_only";
    /// The requester's copy under `bound_and_requester`.
    pub const BOUND_AND_REQUESTER: &str = "bound_and_requester";
    /// The session is unknown (its spawn never arrived).
    pub const UNKNOWN_SESSION: &str = "unknown_session";
    /// The session has no binding.
    pub const NO_ACTIVE_BINDING: &str = "no_active_binding";
    /// The session's binding ended.
    pub const BINDING_ENDED: &str = "binding_ended";
    /// The binding stayed pending too long.
    pub const BINDING_PENDING_TIMEOUT: &str = "binding_pending_timeout";
    /// Several bindings could take it and none is exact.
    pub const AMBIGUOUS_BINDING: &str = "ambiguous_binding";
}

/// Inputs besides the event and state.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    /// The clock (Unix ms).
    pub now_ms: u64,
    /// How long a pending binding is waited for.
    pub pending_timeout_ms: u64,
    /// How long the event has been in the stream.
    pub event_age_ms: u64,
    /// How long a completion of an unknown session waits for its spawn.
    pub unknown_session_grace_ms: u64,
    /// Channels this deployment has a deliverer for.
    pub channels: &'a [String],
}

/// Decides where `completion` goes. `parent` is the requesting session when it is itself a
/// Threadline session (only looked up when the session has no active binding).
pub fn decide(
    completion: &CompletionReported,
    state: Option<&SessionState>,
    parent: Option<&SessionState>,
    ctx: RouteContext<'_>,
) -> Route {
    let persona = state.and_then(|s| s.session.persona.as_ref());
    match (choose(completion, state, parent, ctx), persona) {
        // The session speaks as itself wherever its posts go.
        (Route::Decided(RouteDecision::Post { mut posts }), Some(persona)) => {
            for post in &mut posts {
                post.persona = Some(persona.clone());
            }
            Route::Decided(RouteDecision::Post { posts })
        }
        (route, _) => route,
    }
}

/// Where a completion goes, by the rules of docs/design.md §3.
fn choose(
    completion: &CompletionReported,
    state: Option<&SessionState>,
    parent: Option<&SessionState>,
    ctx: RouteContext<'_>,
) -> Route {
    let Some(state) = state else {
        if ctx.event_age_ms < ctx.unknown_session_grace_ms {
            // The spawn may still be on its way (published first, processed later).
            let left = ctx.unknown_session_grace_ms - ctx.event_age_ms;
            return Route::Wait {
                retry_after: Duration::from_millis(left.clamp(100, 1_000)),
            };
        }
        return Route::Decided(match &completion.requester {
            Some(requester) => post(
                ctx,
                vec![planned(
                    requester,
                    DeliveryMode::Fallback,
                    reason::UNKNOWN_SESSION,
                    None,
                )],
            ),
            None => RouteDecision::Fail {
                code: "no_destination".into(),
                message: format!(
                    "session {} is unknown and the completion names no requester",
                    completion.session_key
                ),
            },
        });
    };
    let session = &state.session;
    let requester = &session.requester.conversation;
    // Rule 5: where the requester destination is a live session, it gets the output as input.
    let to_parent =
        |why: &str| fallback::live_parent(session, parent).map(|p| input(p, requester, why));

    if session.delivery == DeliveryPolicy::RequesterOnly {
        if let Some(route) = to_parent(reason::REQUESTER_ONLY) {
            return route;
        }
        return Route::Decided(post(
            ctx,
            vec![planned(
                requester,
                DeliveryMode::Requester,
                reason::REQUESTER_ONLY,
                None,
            )],
        ));
    }
    if session.placement == Placement::None && state.bindings.is_empty() {
        if let Some(route) = to_parent(reason::NO_PLACEMENT) {
            return route;
        }
        return Route::Decided(post(
            ctx,
            vec![planned(
                requester,
                DeliveryMode::Requester,
                reason::NO_PLACEMENT,
                None,
            )],
        ));
    }

    let active: Vec<&BindingRecord> = state
        .bindings
        .iter()
        .filter(|b| b.status == BindingStatus::Active)
        .collect();
    let exact: Vec<&BindingRecord> = active
        .iter()
        .copied()
        .filter(|b| b.conversation.same_place(requester))
        .collect();
    let same_account: Vec<&BindingRecord> = active
        .iter()
        .copied()
        .filter(|b| {
            b.conversation.channel == requester.channel
                && b.conversation.account_id == requester.account_id
        })
        .collect();

    let bound = match (exact.as_slice(), same_account.as_slice()) {
        ([only], _) | ([], [only]) => Ok(*only),
        // Two bindings on the requester's own conversation cannot happen (one session);
        // treat anything unexpected as ambiguity rather than guess.
        ([_, _, ..], _) | ([], [_, _, ..]) => Err(reason::AMBIGUOUS_BINDING),
        ([], []) => {
            let pending = state
                .bindings
                .iter()
                .filter(|b| b.status == BindingStatus::Pending)
                .map(|b| b.bound_at)
                .max();
            match pending {
                Some(bound_at) if ctx.now_ms < bound_at + ctx.pending_timeout_ms => {
                    let left = bound_at + ctx.pending_timeout_ms - ctx.now_ms;
                    return Route::Wait {
                        retry_after: Duration::from_millis(left.clamp(100, 1_000)),
                    };
                }
                Some(_) => Err(reason::BINDING_PENDING_TIMEOUT),
                None => Err(ended_reason(state)),
            }
        }
    };

    Route::Decided(match bound {
        Ok(binding) => {
            let mut posts = vec![planned(
                &binding.conversation,
                DeliveryMode::Bound,
                reason::BOUND,
                Some(&binding.binding_id),
            )];
            if session.delivery == DeliveryPolicy::BoundAndRequester
                && !binding.conversation.same_place(requester)
            {
                posts.push(planned(
                    requester,
                    DeliveryMode::Requester,
                    reason::BOUND_AND_REQUESTER,
                    None,
                ));
            }
            post(ctx, posts)
        }
        Err(why) => match fallback::unbound(session, parent) {
            Unbound::ToParent { parent, origin } => return input(parent, origin, why),
            Unbound::FailClosed => RouteDecision::Fail {
                code: "no_bound_destination".into(),
                message: format!(
                    "no usable bound destination ({why}) and the session is fail_closed"
                ),
            },
            Unbound::ToRequester(requester) => post(
                ctx,
                vec![planned(requester, DeliveryMode::Fallback, why, None)],
            ),
        },
    })
}

/// Rule 5's decision: the output is `parent`'s input, from `origin`.
fn input(parent: &SessionRecord, origin: &ConversationRef, why: &str) -> Route {
    Route::Decided(RouteDecision::Input {
        session_key: parent.session_key.clone(),
        agent_id: parent.agent_id.clone(),
        origin: origin.clone(),
        reason: why.to_owned(),
    })
}

/// The most specific reason the session has no active binding.
fn ended_reason(state: &SessionState) -> &'static str {
    let last_ended = state
        .bindings
        .iter()
        // An ending binding is as good as ended for routing (its farewell is under way).
        .filter(|b| matches!(b.status, BindingStatus::Ended | BindingStatus::Ending))
        .max_by_key(|b| b.last_activity_at);
    let Some(last_ended) = last_ended else {
        return reason::NO_ACTIVE_BINDING;
    };
    // A thread that is gone or closed is named; any other end is just an ended binding.
    match last_ended.end_reason.as_deref().map(PermanentCode::parse) {
        Some(PermanentCode::ThreadDeleted) => ended::THREAD_DELETED,
        Some(PermanentCode::ThreadArchived) => ended::THREAD_ARCHIVED,
        Some(PermanentCode::ThreadLocked) => ended::THREAD_LOCKED,
        Some(
            PermanentCode::BotRemoved
            | PermanentCode::Forbidden
            | PermanentCode::Unauthorized
            | PermanentCode::NotFound
            | PermanentCode::Archived
            | PermanentCode::TooLarge
            | PermanentCode::ChatMigrated
            | PermanentCode::UnknownMessage
            | PermanentCode::ThreadLimit
            | PermanentCode::WrongChannelType
            | PermanentCode::CapabilityUnsupported
            | PermanentCode::Rejected
            | PermanentCode::Redirected
            | PermanentCode::UnexpectedStatus
            | PermanentCode::UnexpectedPlacement
            | PermanentCode::BadConfig
            | PermanentCode::BadResponse
            | PermanentCode::Other(_),
        )
        | None => reason::BINDING_ENDED,
    }
}

fn planned(
    destination: &ConversationRef,
    mode: DeliveryMode,
    why: &str,
    binding_id: Option<&String>,
) -> PlannedPost {
    PlannedPost {
        destination: destination.clone(),
        mode,
        reason: why.to_owned(),
        binding_id: binding_id.cloned(),
        persona: None,
    }
}

/// A post decision, or a failure when a destination's channel has no deliverer here
/// (a command nobody consumes would sit in the stream: lost in all but name).
fn post(ctx: RouteContext<'_>, posts: Vec<PlannedPost>) -> RouteDecision {
    match posts
        .iter()
        .find(|p| !ctx.channels.contains(&p.destination.channel))
    {
        Some(unroutable) => RouteDecision::Fail {
            code: "unknown_channel".into(),
            message: format!(
                "no deliverer is configured for channel {}",
                unroutable.destination.channel
            ),
        },
        None => RouteDecision::Post { posts },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::session::{SessionRecord, SessionStatus};
    use threadline_schemas::{Requester, RunStatus, SessionMode};

    const NOW: u64 = 1_000_000;

    fn conv(id: &str, parent: Option<&str>) -> ConversationRef {
        ConversationRef {
            channel: "discord".into(),
            account_id: "bot".into(),
            conversation_id: id.into(),
            parent_conversation_id: parent.map(Into::into),
        }
    }

    fn completion() -> CompletionReported {
        CompletionReported {
            v: 1,
            event_id: "e".into(),
            session_key: "agent:a:subagent:1".into(),
            status: RunStatus::Ok,
            content: "hi".into(),
            run_id: None,
            requester: Some(conv("main", None)),
            metadata: Default::default(),
            format: Default::default(),
            mentions: Vec::new(),
            reply_to: None,
        }
    }

    fn state(placement: Placement, bindings: Vec<BindingRecord>) -> SessionState {
        SessionState {
            session: SessionRecord {
                session_key: "agent:a:subagent:1".into(),
                agent_id: "a".into(),
                mode: SessionMode::Session,
                placement,
                label: None,
                requester: Requester {
                    session_key: "agent:a:main".into(),
                    conversation: conv("main", None),
                },
                delivery: DeliveryPolicy::BoundOnly,
                fail_closed: false,
                created_at: 0,
                spawn_event_id: "s".into(),
                persona: None,
                status: SessionStatus::Active,
            },
            bindings,
        }
    }

    fn binding(id: &str, thread: &str, status: BindingStatus) -> BindingRecord {
        BindingRecord {
            binding_id: id.into(),
            target_session_key: "agent:a:subagent:1".into(),
            conversation: conv(thread, Some("main")),
            status,
            bound_at: NOW - 10,
            last_activity_at: NOW - 10,
            idle_timeout_ms: 1000,
            max_age_ms: None,
            delivery: DeliveryPolicy::BoundOnly,
            end_reason: None,
            metadata: Default::default(),
        }
    }

    fn ctx(channels: &[String]) -> RouteContext<'_> {
        RouteContext {
            now_ms: NOW,
            pending_timeout_ms: 5_000,
            event_age_ms: 60_000,
            unknown_session_grace_ms: 10_000,
            channels,
        }
    }

    fn posts(route: Route) -> Vec<(String, DeliveryMode, String)> {
        match route {
            Route::Decided(RouteDecision::Post { posts }) => posts
                .into_iter()
                .map(|p| (p.destination.conversation_id, p.mode, p.reason))
                .collect(),
            other @ (Route::Decided(_) | Route::Wait { .. }) => {
                panic!("expected posts, got {other:?}")
            }
        }
    }

    #[test]
    fn completion_for_bound_session_goes_to_thread_only() {
        let channels = vec!["discord".to_owned()];
        let s = state(
            Placement::Child,
            vec![binding("b1", "t1", BindingStatus::Active)],
        );
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, ctx(&channels))),
            vec![("t1".into(), DeliveryMode::Bound, "bound".into())]
        );
    }

    #[test]
    fn bound_and_requester_posts_both_by_policy() {
        let channels = vec!["discord".to_owned()];
        let mut s = state(
            Placement::Child,
            vec![binding("b1", "t1", BindingStatus::Active)],
        );
        s.session.delivery = DeliveryPolicy::BoundAndRequester;
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, ctx(&channels))),
            vec![
                ("t1".into(), DeliveryMode::Bound, "bound".into()),
                (
                    "main".into(),
                    DeliveryMode::Requester,
                    "bound_and_requester".into()
                )
            ]
        );
    }

    #[test]
    fn no_placement_goes_to_requester_by_design() {
        let channels = vec!["discord".to_owned()];
        let s = state(Placement::None, vec![]);
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, ctx(&channels))),
            vec![(
                "main".into(),
                DeliveryMode::Requester,
                "no_placement".into()
            )]
        );
    }

    #[test]
    fn ended_binding_falls_back_with_reason_or_fails_closed() {
        let channels = vec!["discord".to_owned()];
        let mut ended = binding("b1", "t1", BindingStatus::Ended);
        ended.end_reason = Some("thread_deleted".into());
        let mut s = state(Placement::Child, vec![ended]);
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, ctx(&channels))),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "thread_deleted".into()
            )]
        );
        s.session.fail_closed = true;
        assert!(matches!(
            decide(&completion(), Some(&s), None, ctx(&channels)),
            Route::Decided(RouteDecision::Fail { code, .. }) if code == "no_bound_destination"
        ));
    }

    #[test]
    fn pending_binding_waits_then_falls_back() {
        let channels = vec!["discord".to_owned()];
        let s = state(
            Placement::Child,
            vec![binding("b1", "", BindingStatus::Pending)],
        );
        assert!(matches!(
            decide(&completion(), Some(&s), None, ctx(&channels)),
            Route::Wait { .. }
        ));
        let late = RouteContext {
            now_ms: NOW + 10_000,
            ..ctx(&channels)
        };
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, late)),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "binding_pending_timeout".into()
            )]
        );
    }

    #[test]
    fn two_candidates_without_exact_match_are_ambiguous() {
        let channels = vec!["discord".to_owned()];
        let s = state(
            Placement::Child,
            vec![
                binding("b1", "t1", BindingStatus::Active),
                binding("b2", "t2", BindingStatus::Active),
            ],
        );
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, ctx(&channels))),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "ambiguous_binding".into()
            )]
        );
    }

    #[test]
    fn unknown_session_falls_back_to_requester_or_fails_without_one() {
        let channels = vec!["discord".to_owned()];
        assert_eq!(
            posts(decide(&completion(), None, None, ctx(&channels))),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "unknown_session".into()
            )]
        );
        let mut c = completion();
        c.requester = None;
        assert!(matches!(
            decide(&c, None, None, ctx(&channels)),
            Route::Decided(RouteDecision::Fail { code, .. }) if code == "no_destination"
        ));
    }

    #[test]
    fn a_completion_that_overtook_its_spawn_waits_before_calling_the_session_unknown() {
        let channels = vec!["discord".to_owned()];
        let young = RouteContext {
            event_age_ms: 2_000,
            ..ctx(&channels)
        };
        assert!(matches!(
            decide(&completion(), None, None, young),
            Route::Wait { .. }
        ));
    }

    #[test]
    fn a_nested_session_reports_to_its_parent_with_the_root_origin() {
        let channels = vec!["discord".to_owned()];
        let mut child = state(Placement::None, vec![]);
        child.session.requester.conversation = conv("t1", Some("main"));
        let mut parent = state(
            Placement::Child,
            vec![binding("b1", "t1", BindingStatus::Active)],
        );
        parent.session.session_key = "agent:a:main".into();
        match decide(&completion(), Some(&child), Some(&parent), ctx(&channels)) {
            Route::Decided(RouteDecision::Input {
                session_key,
                origin,
                ..
            }) => {
                assert_eq!(session_key, "agent:a:main");
                assert_eq!(
                    origin,
                    conv("t1", Some("main")),
                    "the thread stays the origin"
                );
            }
            other @ (Route::Decided(_) | Route::Wait { .. }) => panic!("{other:?}"),
        }
        // A finished parent cannot take input: the chat gets it, as without a parent.
        parent.session.status = SessionStatus::Completed;
        assert_eq!(
            posts(decide(
                &completion(),
                Some(&child),
                Some(&parent),
                ctx(&channels)
            )),
            vec![("t1".into(), DeliveryMode::Requester, "no_placement".into())]
        );
    }

    fn waits(route: Route) -> Duration {
        match route {
            Route::Wait { retry_after } => retry_after,
            other @ Route::Decided(_) => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_session_is_waited_for_exactly_until_its_grace_runs_out() {
        let channels = vec!["discord".to_owned()];
        let at = |age: u64| RouteContext {
            event_age_ms: age,
            ..ctx(&channels)
        };
        // 10 s of grace, 9.7 s gone: ask again in the 300 ms left.
        assert_eq!(
            waits(decide(&completion(), None, None, at(9_700))),
            Duration::from_millis(300)
        );
        assert_eq!(
            waits(decide(&completion(), None, None, at(9_999))),
            Duration::from_millis(100),
            "never sooner than 100 ms"
        );
        // Grace over: decided, to the requester.
        assert_eq!(
            posts(decide(&completion(), None, None, at(10_000))),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "unknown_session".into()
            )]
        );
    }

    #[test]
    fn a_pending_binding_is_waited_for_exactly_until_the_pending_timeout() {
        let channels = vec!["discord".to_owned()];
        let s = state(
            Placement::Child,
            vec![binding("b1", "", BindingStatus::Pending)],
        );
        // Bound 10 ms ago with a 500 ms pending timeout: 490 ms left.
        let short = RouteContext {
            pending_timeout_ms: 500,
            ..ctx(&channels)
        };
        assert_eq!(
            waits(decide(&completion(), Some(&s), None, short)),
            Duration::from_millis(490)
        );
        // At the timeout to the millisecond: decided, explicitly.
        let due = RouteContext {
            now_ms: NOW - 10 + 500,
            ..short
        };
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, due)),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "binding_pending_timeout".into()
            )]
        );
    }

    #[test]
    fn a_binding_on_another_account_or_channel_is_never_the_destination() {
        let channels = vec!["discord".to_owned(), "slack".to_owned()];
        let mut other_bot = binding("b1", "t1", BindingStatus::Active);
        other_bot.conversation.account_id = "another-bot".into();
        let mut other_channel = binding("b2", "t2", BindingStatus::Active);
        other_channel.conversation.channel = "slack".into();
        for b in [other_bot, other_channel] {
            let s = state(Placement::Child, vec![b.clone()]);
            assert_eq!(
                posts(decide(&completion(), Some(&s), None, ctx(&channels))),
                vec![(
                    "main".into(),
                    DeliveryMode::Fallback,
                    "no_active_binding".into()
                )],
                "{:?}",
                b.conversation
            );
        }
    }

    #[test]
    fn a_child_session_without_any_binding_falls_back_as_having_none() {
        let channels = vec!["discord".to_owned()];
        // Placement asked for, no binding recorded at all: not "no placement", not "ended".
        let s = state(Placement::Child, vec![]);
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, ctx(&channels))),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "no_active_binding".into()
            )]
        );
        // A session spawned without placement that has a binding (resumed into one) uses it.
        let resumed = state(
            Placement::None,
            vec![binding("b1", "t1", BindingStatus::Active)],
        );
        assert_eq!(
            posts(decide(&completion(), Some(&resumed), None, ctx(&channels))),
            vec![("t1".into(), DeliveryMode::Bound, "bound".into())]
        );
    }

    #[test]
    fn a_binding_ended_for_a_reason_of_its_own_falls_back_as_binding_ended() {
        let channels = vec!["discord".to_owned()];
        let mut ended = binding("b1", "t1", BindingStatus::Ended);
        ended.end_reason = Some("idle_timeout".into());
        let s = state(Placement::Child, vec![ended]);
        assert_eq!(
            posts(decide(&completion(), Some(&s), None, ctx(&channels))),
            vec![(
                "main".into(),
                DeliveryMode::Fallback,
                "binding_ended".into()
            )]
        );
    }

    #[test]
    fn destination_without_deliverer_fails_instead_of_queueing_forever() {
        let s = state(Placement::None, vec![]);
        assert!(matches!(
            decide(&completion(), Some(&s), None, ctx(&[])),
            Route::Decided(RouteDecision::Fail { code, .. }) if code == "unknown_channel"
        ));
    }
}
