//! Builders for the events tests publish, with fresh ids and the defaults of docs/design.md §2.

use threadline_schemas::{
    Author, CompletionReported, ControlOp, ControlRequested, ConversationRef, MessageReceived,
    Placement, Requester, RunStatus, SendRequested, SendTarget, SessionMode, SpawnRequested,
};

/// A fresh event id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A spawn of agent `larry` from `requester`'s main session.
pub fn spawn(
    requester: &ConversationRef,
    placement: Placement,
    mode: SessionMode,
) -> SpawnRequested {
    SpawnRequested {
        v: 1,
        event_id: new_id(),
        agent_id: "larry".into(),
        requester: Requester {
            session_key: format!("agent:larry:main:{}", requester.conversation_id),
            conversation: requester.clone(),
        },
        task: Some("plan the budget".into()),
        mode,
        placement,
        label: None,
        session_key: None,
        resume_if_exists: false,
        delivery: Default::default(),
        fail_closed: false,
        idle_timeout_ms: None,
        max_age_ms: None,
        thread_name: Some("budget planning".into()),
        metadata: Default::default(),
        persona: None,
    }
}

/// A successful completion of `session_key`.
pub fn completion(session_key: &str, content: &str) -> CompletionReported {
    CompletionReported {
        v: 1,
        event_id: new_id(),
        session_key: session_key.into(),
        status: RunStatus::Ok,
        content: content.into(),
        run_id: None,
        requester: None,
        metadata: Default::default(),
        format: Default::default(),
        mentions: Vec::new(),
        reply_to: None,
    }
}

/// An operator `unbind` of every binding of `session_key`.
pub fn unbind_session(session_key: &str, reason: &str) -> ControlRequested {
    ControlRequested {
        v: 1,
        event_id: new_id(),
        op: ControlOp::Unbind,
        binding_id: None,
        session_key: Some(session_key.into()),
        reason: Some(reason.into()),
        channel: None,
        account_id: None,
    }
}

/// A person (or, with `is_bot`, a bot) writing `text` in `conversation`.
pub fn message(
    conversation: &ConversationRef,
    author: &str,
    is_bot: bool,
    text: &str,
) -> MessageReceived {
    MessageReceived {
        v: 1,
        event_id: new_id(),
        conversation: conversation.clone(),
        text: text.into(),
        author: Author {
            id: author.into(),
            is_bot,
            name: None,
        },
        message_id: Some(new_id()),
        reply_to: None,
        attachments: Vec::new(),
    }
}

/// A `tl.in.send` of `text` to `target`.
pub fn send(target: SendTarget, text: &str) -> SendRequested {
    SendRequested {
        v: 1,
        event_id: new_id(),
        message: text.into(),
        target,
        from_session_key: Some("agent:larry:main".into()),
    }
}

/// An operator control event.
pub fn control(op: ControlOp) -> ControlRequested {
    ControlRequested {
        v: 1,
        event_id: new_id(),
        op,
        binding_id: None,
        session_key: None,
        reason: None,
        channel: None,
        account_id: None,
    }
}
