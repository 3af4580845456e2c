//! What a spawn asks for, checked against the channel's capabilities: the session record
//! and the binding to create. Pure, so every placement rule is unit-tested without Redis.

use crate::error::WorkError;
use crate::ids;
use crate::model::channels::Capabilities;
use crate::model::session::{SessionRecord, SessionStatus};
use threadline_schemas::{
    BindingRecord, BindingStatus, ConversationRef, Placement, RejectCode, SpawnRequested,
};

/// The records a spawn creates.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnPlan {
    /// The session to create.
    pub session: SessionRecord,
    /// `None` for `placement:"none"`.
    pub binding: Option<BindingRecord>,
    /// The thread name when a child thread must be created.
    pub create_thread: Option<String>,
}

/// Binding lifetimes when the spawn names none (per channel, else deployment-wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// How long a binding may stay without activity.
    pub idle_timeout_ms: u64,
    /// How long a binding may live at most, if limited.
    pub max_age_ms: Option<u64>,
}

/// Plans `spawn`. `caps` is `None` when the requester's channel has no adapter here.
pub fn plan_spawn(
    spawn: &SpawnRequested,
    caps: Option<Capabilities>,
    now_ms: u64,
    defaults: Defaults,
) -> Result<SpawnPlan, WorkError> {
    let requester = &spawn.requester.conversation;
    let Some(caps) = caps else {
        return Err(WorkError::rejected(
            RejectCode::UnknownChannel,
            format!("no adapter is configured for channel {}", requester.channel),
        ));
    };
    if spawn.placement == Placement::Child && !caps.child_creation {
        // Never silently downgraded to another placement (docs/design.md §3).
        return Err(WorkError::rejected(
            RejectCode::CapabilityUnsupported,
            format!(
                "channel {} cannot create child threads; use placement \"none\" or \"current\"",
                requester.channel
            ),
        ));
    }
    if spawn.persona.is_some() && !caps.session_personas {
        // Never silently posted as the bot instead (docs/rendering.md, "Personas").
        return Err(WorkError::rejected(
            RejectCode::CapabilityUnsupported,
            format!(
                "channel {} cannot show a session's own name and picture; leave `persona` out",
                requester.channel
            ),
        ));
    }
    if matches!(spawn.placement, Placement::Current | Placement::Child) {
        // A binding to a string no platform could have named would never see a post land
        // or a person write.
        crate::model::conversation_ids::check(requester)
            .map_err(|message| WorkError::rejected(RejectCode::InvalidEvent, message))?;
    }
    let session_key = spawn
        .session_key
        .clone()
        .unwrap_or_else(|| ids::session_key(&spawn.agent_id, &spawn.event_id));
    let session = SessionRecord {
        session_key: session_key.clone(),
        agent_id: spawn.agent_id.clone(),
        mode: spawn.mode,
        placement: spawn.placement,
        label: spawn.label.clone(),
        requester: spawn.requester.clone(),
        delivery: spawn.delivery,
        fail_closed: spawn.fail_closed,
        created_at: now_ms,
        spawn_event_id: spawn.event_id.clone(),
        persona: spawn.persona.clone(),
        status: SessionStatus::Active,
    };
    let binding = |conversation: ConversationRef, status: BindingStatus| BindingRecord {
        binding_id: ids::binding_id(&spawn.event_id),
        target_session_key: session_key.clone(),
        conversation,
        status,
        bound_at: now_ms,
        last_activity_at: now_ms,
        idle_timeout_ms: spawn.idle_timeout_ms.unwrap_or(defaults.idle_timeout_ms),
        max_age_ms: spawn.max_age_ms.or(defaults.max_age_ms),
        delivery: spawn.delivery,
        end_reason: None,
        metadata: spawn.metadata.clone(),
    };
    Ok(match spawn.placement {
        Placement::None => SpawnPlan {
            session,
            binding: None,
            create_thread: None,
        },
        Placement::Current => SpawnPlan {
            binding: Some(binding(requester.clone(), BindingStatus::Active)),
            session,
            create_thread: None,
        },
        Placement::Child => {
            // The thread does not exist yet. Until the platform confirms it, the id is a
            // placeholder that names the binding and can never match a real conversation.
            let pending = ConversationRef {
                channel: requester.channel.clone(),
                account_id: requester.account_id.clone(),
                conversation_id: format!("pending:{}", ids::binding_id(&spawn.event_id)),
                parent_conversation_id: Some(thread_parent(requester).conversation_id),
            };
            let name = spawn
                .thread_name
                .clone()
                .or_else(|| spawn.label.clone())
                .unwrap_or_else(|| format!("{} session", spawn.agent_id));
            SpawnPlan {
                binding: Some(binding(pending, BindingStatus::Pending)),
                session,
                create_thread: Some(name.chars().take(100).collect()),
            }
        }
    })
}

/// Where a child thread of `requester` is created. No platform nests threads: a child asked
/// for from inside a thread becomes a sibling thread under the same parent (the Discord text
/// or forum channel, the Slack channel, the Telegram forum chat, the Matrix room), while its
/// requester — and so every fallback — stays the thread the agent works in.
pub(crate) fn thread_parent(requester: &ConversationRef) -> ConversationRef {
    match &requester.parent_conversation_id {
        Some(parent) => ConversationRef {
            channel: requester.channel.clone(),
            account_id: requester.account_id.clone(),
            conversation_id: parent.clone(),
            parent_conversation_id: None,
        },
        None => requester.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookConfig;
    use crate::model::channels;
    use threadline_schemas::{Requester, SessionMode};

    fn spawn(channel: &str, placement: Placement) -> SpawnRequested {
        SpawnRequested {
            v: 1,
            event_id: "e1".into(),
            agent_id: "larry".into(),
            requester: Requester {
                session_key: "agent:larry:main".into(),
                conversation: ConversationRef {
                    channel: channel.into(),
                    account_id: "acct".into(),
                    conversation_id: "100000000000000001".into(),
                    parent_conversation_id: None,
                },
            },
            task: None,
            mode: SessionMode::Session,
            placement,
            label: Some("budget".into()),
            session_key: None,
            resume_if_exists: false,
            delivery: Default::default(),
            fail_closed: false,
            idle_timeout_ms: None,
            max_age_ms: None,
            thread_name: None,
            metadata: Default::default(),
            persona: None,
        }
    }

    const D: Defaults = Defaults {
        idle_timeout_ms: 9,
        max_age_ms: None,
    };

    fn no_threads() -> Capabilities {
        channels::webhook(&WebhookConfig {
            url: "http://x".into(),
            threads: false,
            token: None,
            token_file: None,
            max_message_chars: 100,
            idle_timeout_ms: None,
            max_age_ms: None,
            own_author_ids: Vec::new(),
            inbound_secret: None,
            inbound_secret_file: None,
        })
    }

    #[test]
    fn session_mode_without_placement_works_on_a_channel_without_threads() {
        let plan = plan_spawn(
            &spawn("webhook:wa", Placement::None),
            Some(no_threads()),
            5,
            D,
        )
        .unwrap();
        assert_eq!(plan.binding, None);
        assert_eq!(plan.session.mode, SessionMode::Session);
        assert!(plan
            .session
            .session_key
            .starts_with("agent:larry:subagent:"));
    }

    #[test]
    fn child_placement_without_threads_is_rejected_not_downgraded() {
        let err = plan_spawn(
            &spawn("webhook:wa", Placement::Child),
            Some(no_threads()),
            5,
            D,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            WorkError::Rejected {
                code: RejectCode::CapabilityUnsupported,
                ..
            }
        ));
    }

    #[test]
    fn child_placement_plans_a_pending_binding_and_a_thread() {
        let plan = plan_spawn(
            &spawn("discord", Placement::Child),
            Some(channels::DISCORD),
            5,
            D,
        )
        .unwrap();
        let binding = plan.binding.unwrap();
        assert_eq!(binding.status, BindingStatus::Pending);
        assert_eq!(
            binding.conversation.parent_conversation_id.as_deref(),
            Some("100000000000000001")
        );
        assert_eq!(binding.idle_timeout_ms, 9);
        assert_eq!(plan.create_thread.as_deref(), Some("budget"));
    }

    #[test]
    fn current_placement_binds_the_requester_conversation_at_once() {
        let plan = plan_spawn(
            &spawn("webhook:wa", Placement::Current),
            Some(no_threads()),
            5,
            D,
        )
        .unwrap();
        let binding = plan.binding.unwrap();
        assert_eq!(binding.status, BindingStatus::Active);
        assert_eq!(binding.conversation.conversation_id, "100000000000000001");
    }

    #[test]
    fn a_child_asked_for_from_inside_a_thread_is_planned_under_the_threads_parent() {
        let mut s = spawn("discord", Placement::Child);
        s.requester.conversation.conversation_id = "100000000000000005".into();
        s.requester.conversation.parent_conversation_id = Some("100000000000000001".into());
        let plan = plan_spawn(&s, Some(channels::DISCORD), 5, D).unwrap();
        let binding = plan.binding.unwrap();
        assert_eq!(
            binding.conversation.parent_conversation_id.as_deref(),
            Some("100000000000000001")
        );
        // The requester stays the thread: fallbacks go where the agent works.
        assert_eq!(
            plan.session.requester.conversation.conversation_id,
            "100000000000000005"
        );
        let parent = thread_parent(&s.requester.conversation);
        assert_eq!(
            (
                parent.conversation_id.as_str(),
                parent.parent_conversation_id
            ),
            ("100000000000000001", None)
        );
    }

    #[test]
    fn a_binding_to_an_id_the_platform_could_not_have_is_refused() {
        for placement in [Placement::Current, Placement::Child] {
            let mut s = spawn("discord", placement);
            s.requester.conversation.conversation_id = "general".into();
            let err = plan_spawn(&s, Some(channels::DISCORD), 5, D).unwrap_err();
            assert!(
                matches!(&err, WorkError::Rejected { code: RejectCode::InvalidEvent, message }
                    if message.contains("general")),
                "{err:?}"
            );
        }
        // Without a binding the requester's conversation is only posted to: the platform's
        // own answer reports a bad id there.
        let mut s = spawn("discord", Placement::None);
        s.requester.conversation.conversation_id = "general".into();
        assert!(plan_spawn(&s, Some(channels::DISCORD), 5, D).is_ok());
    }

    #[test]
    fn unknown_channel_is_rejected() {
        let err = plan_spawn(&spawn("telegram", Placement::None), None, 5, D).unwrap_err();
        assert!(matches!(
            err,
            WorkError::Rejected {
                code: RejectCode::UnknownChannel,
                ..
            }
        ));
    }
}
