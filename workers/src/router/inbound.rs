//! Inbound chat messages (`tl.in.message.<channel>`): a message in a bound conversation
//! becomes input for every session bound there and refreshes their bindings; a message in
//! an unbound conversation goes back to the gateway on `tl.out.unbound`; a message written
//! by Threadline itself (its bot, its persona webhooks, its farewells) is dropped.

use crate::error::WorkError;
use crate::io::metrics as m;
use crate::runtime::outbox::{AgentInput, MessageFacts};
use crate::runtime::runloop::{Attempt, Handler};
use crate::runtime::WorkerContext;
use threadline_schemas::{InputSource, MessageReceived, Stage};

/// Channels whose platform does not mark bot accounts: every author is looked up.
const AUTHORS_WITHOUT_BOT_FLAG: &[&str] = &["matrix"];

/// Handles `tl.in.message.>`.
pub(crate) struct Inbound {
    ctx: WorkerContext,
}

impl Inbound {
    pub(crate) fn new(ctx: WorkerContext) -> Self {
        Inbound { ctx }
    }

    /// Whether Threadline itself wrote the message: a configured own id, or an author id
    /// a deliverer learned from the platform's answer to one of our posts.
    async fn is_echo(&self, message: &MessageReceived) -> Result<bool, WorkError> {
        let channel = &message.conversation.channel;
        let configured = self
            .ctx
            .config
            .policy(channel)
            .is_some_and(|p| p.own_author_ids.contains(&message.author.id));
        if configured {
            return Ok(true);
        }
        // Only bot (or webhook) authors can be us; people are never looked up — except on
        // platforms without a bot flag (Matrix: an account is an account), where a truthful
        // gateway says `is_bot: false` for our own posts too.
        if !message.author.is_bot && !AUTHORS_WITHOUT_BOT_FLAG.contains(&channel.as_str()) {
            return Ok(false);
        }
        self.ctx
            .store
            .is_own_author(channel, &message.author.id)
            .await
    }
}

impl Handler for Inbound {
    type Event = MessageReceived;

    fn stage(&self) -> Stage {
        Stage::Router
    }

    async fn handle(&self, message: &MessageReceived, _attempt: Attempt) -> Result<(), WorkError> {
        if self.is_echo(message).await? {
            metrics::counter!(m::ECHOES, "channel" => message.conversation.channel.clone())
                .increment(1);
            tracing::debug!(event_id = %message.event_id, "our own message; dropped");
            return Ok(());
        }
        let store = &self.ctx.store;
        let bound = store.sessions_bound_to(&message.conversation).await?;
        if bound.is_empty() {
            return self
                .ctx
                .publisher
                .send(self.ctx.outbox.unbound(message))
                .await;
        }
        let inputs = bound
            .iter()
            .map(|(session, _)| {
                self.ctx.outbox.agent_input(AgentInput {
                    event_id: message.event_id.clone(),
                    agent_id: session.agent_id.clone(),
                    session_key: session.session_key.clone(),
                    text: message.text.clone(),
                    origin: message.conversation.clone(),
                    source: InputSource::Message,
                    from_session_key: None,
                    message: MessageFacts {
                        author: Some(message.author.clone()),
                        message_id: message.message_id.clone(),
                        reply_to: message.reply_to.clone(),
                        attachments: message.attachments.clone(),
                    },
                })
            })
            .collect();
        self.ctx.publisher.send_all(inputs).await?;
        for (session, binding) in &bound {
            store
                .touch_binding(&session.session_key, &binding.binding_id)
                .await?;
        }
        metrics::counter!(m::INPUTS, "source" => "message").increment(bound.len() as u64);
        Ok(())
    }

    async fn give_up(
        &self,
        _m: &MessageReceived,
        _e: &WorkError,
        _a: Attempt,
    ) -> Result<(), WorkError> {
        Ok(())
    }
}
