//! `tl.in.send` (`sessions_send`): a message into one session (by key, or by label within a
//! requester) or into every session bound to a conversation. One input per target; the
//! result (`tl.out.sent`) names each target and its outcome. Targets already reached are
//! recorded, so a redelivery completes the others without repeating any.

use crate::error::WorkError;
use crate::io::metrics as m;
use crate::io::nats::Outgoing;
use crate::model::session::{SessionRecord, SessionState, SessionStatus};
use crate::runtime::outbox::AgentInput;
use crate::runtime::runloop::{Attempt, Handler};
use crate::runtime::WorkerContext;
use threadline_schemas::{
    BindingStatus, InputSource, SendOutcome, SendRequested, SendResult, SendTarget, Stage,
};

/// Handles `tl.in.send`.
pub(crate) struct Sender {
    ctx: WorkerContext,
}

impl Sender {
    pub(crate) fn new(ctx: WorkerContext) -> Self {
        Sender { ctx }
    }

    /// The sessions a target names; an empty list when it names none.
    async fn resolve(&self, target: &SendTarget) -> Result<Vec<SessionState>, WorkError> {
        let store = &self.ctx.store;
        let key = match target {
            SendTarget::SessionKey { session_key } => Some(session_key.clone()),
            SendTarget::Label {
                label,
                requester_session_key,
            } => store.label_holder(requester_session_key, label).await?,
            SendTarget::Conversation { conversation } => {
                let mut states = Vec::new();
                for (session, _) in store.sessions_bound_to(conversation).await? {
                    if let Some(state) = store.load_session(&session.session_key).await? {
                        states.push(state);
                    }
                }
                return Ok(states);
            }
        };
        Ok(match key {
            Some(key) => store.load_session(&key).await?.into_iter().collect(),
            None => Vec::new(),
        })
    }
}

/// Where input for a session comes from: its active binding's conversation (the thread
/// people talk to it in), else its requester's conversation.
fn origin_of(state: &SessionState) -> threadline_schemas::ConversationRef {
    state
        .bindings
        .iter()
        .find(|b| b.status == BindingStatus::Active)
        .map(|b| b.conversation.clone())
        .unwrap_or_else(|| state.session.requester.conversation.clone())
}

fn input(
    ctx: &WorkerContext,
    send: &SendRequested,
    session: &SessionRecord,
    origin: threadline_schemas::ConversationRef,
) -> Outgoing {
    ctx.outbox.agent_input(AgentInput {
        event_id: send.event_id.clone(),
        agent_id: session.agent_id.clone(),
        session_key: session.session_key.clone(),
        text: send.message.clone(),
        origin,
        source: InputSource::Send,
        from_session_key: send.from_session_key.clone(),
        message: crate::runtime::outbox::MessageFacts::default(),
    })
}

impl Handler for Sender {
    type Event = SendRequested;

    fn stage(&self) -> Stage {
        Stage::Router
    }

    async fn handle(&self, send: &SendRequested, _attempt: Attempt) -> Result<(), WorkError> {
        let store = &self.ctx.store;
        let reached = store.sent_targets(&send.event_id).await?;
        let targets = self.resolve(&send.target).await?;
        let mut results = Vec::with_capacity(targets.len().max(1));
        if targets.is_empty() {
            results.push(SendResult {
                session_key: None,
                outcome: SendOutcome::NotFound,
                message: Some(format!("no session matches {:?}", send.target)),
            });
        }
        for state in &targets {
            let key = &state.session.session_key;
            if reached.contains_key(key) {
                // Reached by an earlier attempt: report it, do not repeat it.
                results.push(SendResult {
                    session_key: Some(key.clone()),
                    outcome: SendOutcome::Delivered,
                    message: None,
                });
                continue;
            }
            if state.session.status != SessionStatus::Active {
                results.push(SendResult {
                    session_key: Some(key.clone()),
                    outcome: SendOutcome::Ended,
                    message: Some(format!("session is {:?}", state.session.status).to_lowercase()),
                });
                continue;
            }
            // Each target is stored before the next, so one failing publish neither loses
            // the ones before it nor repeats them on redelivery.
            self.ctx
                .publisher
                .send(input(&self.ctx, send, &state.session, origin_of(state)))
                .await?;
            store.record_sent(&send.event_id, key, "delivered").await?;
            metrics::counter!(m::INPUTS, "source" => "send").increment(1);
            results.push(SendResult {
                session_key: Some(key.clone()),
                outcome: SendOutcome::Delivered,
                message: None,
            });
        }
        self.ctx
            .publisher
            .send(self.ctx.outbox.sent(&send.event_id, results))
            .await
    }

    async fn give_up(
        &self,
        _s: &SendRequested,
        _e: &WorkError,
        _a: Attempt,
    ) -> Result<(), WorkError> {
        Ok(())
    }
}
