//! What every listener does with what it heard: give it its deterministic event id, skip it
//! when it was stored before, publish it to the inbound stream and wait until JetStream has
//! it. Only then may a listener tell its platform the message is taken (commit an offset,
//! ack an envelope, answer 200), so a crash anywhere means a replay, never a loss — and the
//! replay collapses into the one event already stored.

use crate::config::PlatformConfig;
use crate::error::WorkError;
use crate::ids;
use crate::io::metrics as m;
use crate::runtime::WorkerContext;
use threadline_schemas::{
    Attachment, Author, ConversationChange, ConversationChanged, ConversationRef, MessageReceived,
    SCHEMA_VERSION,
};

/// A chat message as a listener heard it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heard {
    /// Where it was written (from [`Intake::conversation`]).
    pub(crate) conversation: ConversationRef,
    /// The platform's id of the message: the event id derives from it.
    pub(crate) message_id: String,
    /// Its text.
    pub(crate) text: String,
    /// Who wrote it.
    pub(crate) author: Author,
    /// The platform's id of the message it answers.
    pub(crate) reply_to: Option<String>,
    /// Its files.
    pub(crate) attachments: Vec<Attachment>,
}

impl Heard {
    /// Its event id: a pure function of where it was written and the platform's id of it.
    pub(crate) fn event_id(&self) -> String {
        let c = &self.conversation;
        ids::heard_event_id(
            &c.channel,
            &c.account_id,
            &c.conversation_id,
            &self.message_id,
        )
    }
}

/// The event id of a conversation change, from the platform's key of the event.
pub(crate) fn change_event_id(
    conversation: &ConversationRef,
    change: ConversationChange,
    platform_key: &str,
) -> String {
    ids::change_event_id(
        &conversation.channel,
        &conversation.account_id,
        &conversation.conversation_id,
        change.name(),
        platform_key,
    )
}

/// Whether a heard message or change was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Stored in the inbound stream now.
    New,
    /// Stored before (a replay, a platform's retry, another replica): nothing published.
    Duplicate,
}

impl Taken {
    fn name(self) -> &'static str {
        match self {
            Taken::New => "new",
            Taken::Duplicate => "duplicate",
        }
    }
}

/// One channel's way into the inbound stream.
#[derive(Clone)]
pub(crate) struct Intake {
    ctx: WorkerContext,
    channel: String,
    account_id: String,
}

impl Intake {
    /// The intake of `channel`, stamping its configured `account_id` (webhook channels:
    /// `default`).
    pub(crate) fn new(ctx: WorkerContext, channel: &str) -> Intake {
        let account_id = ctx
            .config
            .platform(channel)
            .map_or_else(|| "default".to_owned(), |p| p.account_id.clone());
        Intake {
            ctx,
            channel: channel.to_owned(),
            account_id,
        }
    }

    /// The worker's connections, configuration and shutdown signal.
    pub(crate) fn ctx(&self) -> &WorkerContext {
        &self.ctx
    }

    /// The channel this intake publishes for (`discord`, `webhook:<name>`, …).
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// The account stamped on every conversation.
    pub(crate) fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The settings of this native platform. Panics for a webhook channel: only the
    /// platform listeners call it.
    pub(crate) fn platform(&self) -> &PlatformConfig {
        self.ctx
            .config
            .platform(&self.channel)
            .unwrap_or_else(|| panic!("{} is not a native platform", self.channel))
    }

    /// A conversation of this channel and account; `parent` when `id` is a thread.
    pub(crate) fn conversation(&self, id: &str, parent: Option<&str>) -> ConversationRef {
        ConversationRef {
            channel: self.channel.clone(),
            account_id: self.account_id.clone(),
            conversation_id: id.to_owned(),
            parent_conversation_id: parent.map(str::to_owned),
        }
    }

    /// Takes one message: `Ok` means it is in the inbound stream (now or before).
    pub(crate) async fn message(&self, heard: Heard) -> Result<Taken, WorkError> {
        let event_id = heard.event_id();
        let message = MessageReceived {
            v: SCHEMA_VERSION,
            event_id,
            conversation: heard.conversation,
            text: heard.text,
            author: heard.author,
            message_id: Some(heard.message_id),
            reply_to: heard.reply_to,
            attachments: heard.attachments,
        };
        let taken = self
            .publish_once(&message.event_id, || self.ctx.outbox.heard(&message))
            .await?;
        metrics::counter!(m::HEARD, "channel" => self.channel.clone(), "kind" => "message", "outcome" => taken.name())
            .increment(1);
        tracing::debug!(event_id = %message.event_id, outcome = taken.name(), "heard a message");
        Ok(taken)
    }

    /// Takes one conversation change; `platform_key` identifies the platform's event (its
    /// id, or what makes it unique), so its replays collapse.
    pub(crate) async fn change(
        &self,
        conversation: ConversationRef,
        change: ConversationChange,
        platform_key: &str,
    ) -> Result<Taken, WorkError> {
        let changed = ConversationChanged {
            v: SCHEMA_VERSION,
            event_id: change_event_id(&conversation, change, platform_key),
            conversation,
            change,
        };
        let taken = self
            .publish_once(&changed.event_id, || {
                self.ctx.outbox.conversation_changed(&changed)
            })
            .await?;
        metrics::counter!(m::HEARD, "channel" => self.channel.clone(), "kind" => "change", "outcome" => taken.name())
            .increment(1);
        tracing::info!(event_id = %changed.event_id, change = change.name(), conversation = %changed.conversation.conversation_id, outcome = taken.name(), "heard a conversation change");
        Ok(taken)
    }

    /// Publishes unless a marker says it was stored; marks it once JetStream has it. Two
    /// replicas racing past the check publish the same `Nats-Msg-Id`, which the stream's
    /// duplicate window drops; a marker outlives that window.
    async fn publish_once(
        &self,
        event_id: &str,
        outgoing: impl FnOnce() -> crate::io::nats::Outgoing,
    ) -> Result<Taken, WorkError> {
        if self.ctx.store.was_heard(event_id).await? {
            return Ok(Taken::Duplicate);
        }
        self.ctx.publisher.send(outgoing()).await?;
        self.ctx.store.mark_heard(event_id).await?;
        Ok(Taken::New)
    }
}
