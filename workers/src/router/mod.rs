//! The router: turns `tl.in.completion` into platform work on `tl.deliver.<channel>`.
//! The decision for an event is made once and stored (docs/design.md §3 rule 1); every redelivery
//! re-publishes the stored decision, so a binding that changes between two attempts can
//! never send one completion to both a thread and its parent channel.

pub mod decide;
pub(crate) mod inbound;
pub(crate) mod lookup;
pub(crate) mod send;

use crate::error::WorkError;
use crate::ids;
use crate::io::metrics as m;
use crate::io::nats::Outgoing;
use crate::model::session::SessionStatus;
use crate::runtime::outbox::{AgentInput, Failure, PostCommand};
use crate::runtime::runloop::{Attempt, Handler};
use crate::runtime::WorkerContext;
use decide::{Route, RouteContext, RouteDecision};
use threadline_schemas::{
    now_ms, BindingStatus, CompletionReported, InputSource, SessionMode, Stage,
};

/// Routes completions.
pub(crate) struct Router {
    ctx: WorkerContext,
    channels: Vec<String>,
}

impl Router {
    pub(crate) fn new(ctx: WorkerContext) -> Self {
        let channels = ctx.config.channels();
        Router { ctx, channels }
    }

    fn failed(
        &self,
        completion: &CompletionReported,
        code: &str,
        message: &str,
        attempts: u32,
    ) -> Outgoing {
        self.ctx.outbox.completion_failed(
            completion,
            Failure {
                destination: completion.requester.clone(),
                code: code.to_owned(),
                message: message.to_owned(),
                attempts,
                session_key: Some(completion.session_key.clone()),
            },
        )
    }

    /// What a decision publishes. Deterministic in (decision, completion), so a redelivery
    /// publishes byte-identical commands under the same message ids.
    fn effects(&self, decision: &RouteDecision, completion: &CompletionReported) -> Vec<Outgoing> {
        match decision {
            RouteDecision::Fail { code, message } => {
                vec![self.failed(completion, code, message, 0)]
            }
            RouteDecision::Input {
                session_key,
                agent_id,
                origin,
                reason: _,
            } => vec![self.ctx.outbox.agent_input(AgentInput {
                event_id: completion.event_id.clone(),
                agent_id: agent_id.clone(),
                session_key: session_key.clone(),
                text: completion.content.clone(),
                origin: origin.clone(),
                source: InputSource::Completion,
                from_session_key: Some(completion.session_key.clone()),
                message: crate::runtime::outbox::MessageFacts::default(),
            })],
            RouteDecision::Post { posts } => posts
                .iter()
                .map(|planned| {
                    self.ctx.outbox.post(PostCommand {
                        event_id: completion.event_id.clone(),
                        delivery_id: ids::post_delivery_id(
                            &completion.event_id,
                            &planned.destination,
                        ),
                        destination: planned.destination.clone(),
                        content: completion.content.clone(),
                        mode: planned.mode,
                        reason: planned.reason.clone(),
                        session_key: Some(completion.session_key.clone()),
                        binding_id: planned.binding_id.clone(),
                        format: completion.format,
                        mentions: completion.mentions.clone(),
                        reply_to: completion.reply_to.clone(),
                        persona: planned.persona.clone(),
                    })
                })
                .collect(),
        }
    }
}

/// The decision an earlier attempt stored: this attempt follows it.
fn replayed(stored: &[u8]) -> Result<RouteDecision, WorkError> {
    metrics::counter!(m::DEDUP_HITS, "kind" => "route_replay").increment(1);
    rmp_serde::from_slice(stored)
        .map_err(|e| WorkError::Corrupt(format!("stored routing decision: {e}")))
}

impl Handler for Router {
    type Event = CompletionReported;

    fn stage(&self) -> Stage {
        Stage::Router
    }

    async fn handle(
        &self,
        completion: &CompletionReported,
        attempt: Attempt,
    ) -> Result<(), WorkError> {
        let store = &self.ctx.store;
        let state = store.load_session(&completion.session_key).await?;
        let now = now_ms();
        let ctx = RouteContext {
            now_ms: now,
            pending_timeout_ms: self.ctx.config.pending_timeout_ms,
            event_age_ms: now.saturating_sub(attempt.published_ms),
            unknown_session_grace_ms: self.ctx.config.unknown_session_grace_ms,
            channels: &self.channels,
        };
        // Rule 5 needs the requesting session, but only when no binding can win.
        let parent = match &state {
            Some(s) if !s.bindings.iter().any(|b| b.status == BindingStatus::Active) => {
                store.load_session(&s.session.requester.session_key).await?
            }
            Some(_) | None => None,
        };
        // Decide first and store with `NX`: the first decision stored for an event is the
        // one every later attempt follows, whatever the bindings say by then. Deciding
        // before looking saves a round trip on every first attempt; a redelivery only
        // decides once more in vain.
        let decision = match decide::decide(completion, state.as_ref(), parent.as_ref(), ctx) {
            // Nothing to decide yet — unless an earlier attempt decided (the session may
            // have expired since).
            Route::Wait { retry_after } => match store.load_route(&completion.event_id).await? {
                Some(stored) => replayed(&stored)?,
                None => {
                    return Err(WorkError::NotYet {
                        reason: "the session is unknown yet, or its binding is pending".into(),
                        after: retry_after,
                    })
                }
            },
            Route::Decided(decision) => {
                let blob = rmp_serde::to_vec_named(&decision)
                    .map_err(|e| WorkError::Corrupt(e.to_string()))?;
                match store.store_route(&completion.event_id, &blob).await? {
                    Some(stored) => replayed(&stored)?,
                    None => {
                        if let RouteDecision::Post { posts } = &decision {
                            for post in posts
                                .iter()
                                .filter(|p| p.mode == threadline_schemas::DeliveryMode::Fallback)
                            {
                                metrics::counter!(m::FALLBACKS, "reason" => post.reason.clone())
                                    .increment(1);
                            }
                        }
                        tracing::info!(event_id = %completion.event_id, session_key = %completion.session_key, ?decision, "completion routed");
                        decision
                    }
                }
            }
        };
        self.ctx
            .publisher
            .send_all(self.effects(&decision, completion))
            .await?;
        if let Some(state) = state {
            if state.session.mode == SessionMode::Run
                && state.session.status == SessionStatus::Active
            {
                store
                    .finish_session(&state.session, SessionStatus::Completed)
                    .await?;
            }
        }
        Ok(())
    }

    async fn give_up(
        &self,
        completion: &CompletionReported,
        error: &WorkError,
        attempt: Attempt,
    ) -> Result<(), WorkError> {
        self.ctx
            .publisher
            .send(self.failed(completion, error.code(), &error.to_string(), attempt.number))
            .await
    }
}
