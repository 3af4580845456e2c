//! The binder: accepts spawns (`tl.in.spawn`) — creating sessions, labels and bindings,
//! and asking the channel's deliverer for a child thread —, operator commands
//! (`tl.in.control`) and conversation changes the listeners heard (`tl.in.conversation.*`). Every step is idempotent per spawn event, so a redelivery finishes
//! what a crashed attempt started and re-publishes the same outcome under the same ids.

mod conversations;
pub mod plan;

pub(crate) use conversations::Conversations;

use crate::error::WorkError;
use crate::model::bindings::Farewell;
use crate::model::channels;
use crate::model::session::SessionStatus;
use crate::runtime::ending::end_binding;
use crate::runtime::outbox::ThreadCommand;
use crate::runtime::runloop::{Attempt, Handler};
use crate::runtime::WorkerContext;
use crate::store::Created;
use threadline_schemas::{
    now_ms, BindingChange, BindingStatus, ControlOp, ControlRequested, RejectCode, SpawnRequested,
    Stage,
};

/// Handles `tl.in.spawn`.
pub(crate) struct Spawner {
    ctx: WorkerContext,
}

impl Spawner {
    pub(crate) fn new(ctx: WorkerContext) -> Self {
        Spawner { ctx }
    }

    /// Takes the label for `session_key`, reclaiming it from a session that is over.
    async fn claim_label(
        &self,
        spawn: &SpawnRequested,
        label: &str,
        session_key: &str,
    ) -> Result<(), WorkError> {
        let store = &self.ctx.store;
        let requester = &spawn.requester.session_key;
        let Some(holder) = store
            .claim_label(requester, label, session_key, None)
            .await?
        else {
            return Ok(());
        };
        let holder_live = store
            .load_session(&holder)
            .await?
            .is_some_and(|s| s.session.status == SessionStatus::Active);
        if !holder_live
            && store
                .claim_label(requester, label, session_key, Some(&holder))
                .await?
                .is_none()
        {
            return Ok(());
        }
        Err(WorkError::rejected(
            RejectCode::LabelTaken,
            format!("label {label:?} is already used by session {holder} of this requester"),
        ))
    }
}

impl Handler for Spawner {
    type Event = SpawnRequested;

    fn stage(&self) -> Stage {
        Stage::Binder
    }

    async fn handle(&self, spawn: &SpawnRequested, _attempt: Attempt) -> Result<(), WorkError> {
        let config = &self.ctx.config;
        let store = &self.ctx.store;
        let caps = channels::capabilities(&spawn.requester.conversation.channel, config);
        let policy = config
            .policy(&spawn.requester.conversation.channel)
            .unwrap_or_default();
        let defaults = plan::Defaults {
            idle_timeout_ms: policy
                .idle_timeout_ms
                .unwrap_or(config.default_idle_timeout_ms),
            max_age_ms: policy.max_age_ms,
        };
        if spawn.persona.is_some() && spawn.requester.conversation.channel == "discord" {
            // Discord shows a chosen name and picture only on a webhook's posts, and a
            // webhook belongs to one channel: without one configured there, the session's
            // posts could only be the bot's.
            let c = &spawn.requester.conversation;
            let channel = c
                .parent_conversation_id
                .as_ref()
                .unwrap_or(&c.conversation_id);
            // discord-webhook.mdx: a webhook's name "does not contain the substrings `clyde`
            // or `discord` (case-insensitive)"; Discord would refuse every post under it.
            let name = spawn
                .persona
                .as_ref()
                .map(|p| p.name.to_lowercase())
                .unwrap_or_default();
            if name.contains("clyde") || name.contains("discord") {
                return Err(WorkError::rejected(
                    RejectCode::InvalidEvent,
                    "`persona.name` on Discord must not contain `clyde` or `discord`",
                ));
            }
            if !config.discord.personas.contains_key(channel) {
                return Err(WorkError::rejected(
                    RejectCode::CapabilityUnsupported,
                    format!(
                        "a persona on Discord needs a webhook in channel {channel}: configure \
                         [discord.personas.\"{channel}\"] (docs/rendering.md, \"Personas\")"
                    ),
                ));
            }
        }
        let plan = plan::plan_spawn(spawn, caps, now_ms(), defaults)?;
        let session_key = plan.session.session_key.clone();

        if let Some(label) = &spawn.label {
            self.claim_label(spawn, label, &session_key).await?;
        }
        let resumed = match store.create_session(&plan.session).await? {
            Created::Created | Created::Replay => false,
            Created::Exists if spawn.resume_if_exists => true,
            Created::Exists => {
                return Err(WorkError::rejected(
                    RejectCode::SessionExists,
                    format!("session {session_key} exists; set resume_if_exists to re-attach"),
                ))
            }
        };

        let mut out = Vec::new();
        let existing_live = if resumed {
            store.load_session(&session_key).await?.and_then(|s| {
                s.bindings
                    .into_iter()
                    .find(|b| matches!(b.status, BindingStatus::Active | BindingStatus::Pending))
            })
        } else {
            None
        };
        // A resumed session keeps its bindings; a new binding only when it has none.
        let binding = match (existing_live, plan.binding) {
            (Some(existing), _) => Some(existing),
            (None, Some(binding)) => {
                store.add_binding(&binding).await?;
                if binding.status == BindingStatus::Active {
                    out.push(self.ctx.outbox.binding(
                        binding.clone(),
                        BindingChange::Bound,
                        "placement_current",
                    ));
                }
                if let Some(name) = &plan.create_thread {
                    out.push(self.ctx.outbox.create_thread(ThreadCommand {
                        event_id: spawn.event_id.clone(),
                        lane: spawn.requester.conversation.clone(),
                        parent: plan::thread_parent(&spawn.requester.conversation),
                        name: name.clone(),
                        session_key: session_key.clone(),
                        binding_id: binding.binding_id.clone(),
                    }));
                }
                Some(binding)
            }
            (None, None) => None,
        };
        out.push(
            self.ctx
                .outbox
                .spawned(spawn, &session_key, resumed, binding),
        );
        self.ctx.publisher.send_all(out).await?;
        tracing::info!(event_id = %spawn.event_id, %session_key, resumed, placement = ?spawn.placement, "spawn accepted");
        Ok(())
    }

    async fn give_up(
        &self,
        _spawn: &SpawnRequested,
        _error: &WorkError,
        _attempt: Attempt,
    ) -> Result<(), WorkError> {
        // The dead letter is the record: a spawn has no destination to report as failed.
        Ok(())
    }
}

/// Handles `tl.in.control`.
pub(crate) struct Control {
    ctx: WorkerContext,
}

impl Control {
    pub(crate) fn new(ctx: WorkerContext) -> Self {
        Control { ctx }
    }

    /// The bindings a control event names: one by id, or every live one of a session.
    async fn targets(
        &self,
        control: &ControlRequested,
    ) -> Result<Vec<(String, String)>, WorkError> {
        let store = &self.ctx.store;
        if let Some(binding_id) = &control.binding_id {
            let owner = store.binding_owner(binding_id).await?.ok_or_else(|| {
                WorkError::rejected(RejectCode::NotFound, format!("no binding {binding_id}"))
            })?;
            return Ok(vec![(owner, binding_id.clone())]);
        }
        let session_key = control.session_key.as_deref().unwrap_or_default();
        let state = store.load_session(session_key).await?.ok_or_else(|| {
            WorkError::rejected(RejectCode::NotFound, format!("no session {session_key}"))
        })?;
        Ok(state
            .bindings
            .into_iter()
            .filter(|b| b.status != BindingStatus::Ended)
            .map(|b| (b.target_session_key, b.binding_id))
            .collect())
    }
}

impl Handler for Control {
    type Event = ControlRequested;

    fn stage(&self) -> Stage {
        Stage::Binder
    }

    async fn handle(&self, control: &ControlRequested, _attempt: Attempt) -> Result<(), WorkError> {
        let store = &self.ctx.store;
        match control.op {
            ControlOp::Unbind => {
                let reason = control.reason.as_deref().unwrap_or("unbound");
                for (session_key, binding_id) in self.targets(control).await? {
                    // An operator's unbind is not the session's goodbye: no farewell.
                    end_binding(&self.ctx, &session_key, &binding_id, reason, Farewell::None)
                        .await?;
                }
                Ok(())
            }
            ControlOp::Touch => {
                for (session_key, binding_id) in self.targets(control).await? {
                    store.touch_binding(&session_key, &binding_id).await?;
                }
                Ok(())
            }
            ControlOp::CredentialsRotated => {
                // Every deliverer instance of the channel listens (core NATS, not a queue
                // group): each re-reads its token source before its next call.
                let channel = control.channel.as_deref().unwrap_or_default();
                if channels::capabilities(channel, &self.ctx.config).is_none() {
                    // Announcing it would reach nobody: say so to whoever rotated.
                    return Err(WorkError::rejected(
                        RejectCode::UnknownChannel,
                        format!("no adapter is configured for channel {channel}"),
                    ));
                }
                let (subject, payload) = self
                    .ctx
                    .outbox
                    .credentials_rotated(channel, &control.event_id);
                self.ctx
                    .nats
                    .publish(subject, payload)
                    .await
                    .map_err(|e| WorkError::Nats(e.to_string()))?;
                self.ctx
                    .nats
                    .flush()
                    .await
                    .map_err(|e| WorkError::Nats(e.to_string()))?;
                tracing::info!(channel, "credentials rotation announced to the deliverers");
                Ok(())
            }
        }
    }

    async fn give_up(
        &self,
        _control: &ControlRequested,
        _error: &WorkError,
        _attempt: Attempt,
    ) -> Result<(), WorkError> {
        Ok(())
    }
}
