//! Deliverers: one per channel, each the same handler around a platform [`Adapter`].
//!
//! Effectively once per `(event_id, destination)`: every part of a post is claimed in Redis
//! before the platform call and marked sent with the platform's id after. A redelivered,
//! already-sent part is skipped; an attempt whose outcome is unknown (crash or timeout after
//! the request left) is re-sent only with the platform's idempotency key, and reported as
//! reconciled on `tl.out.delivered`.
//!
//! Here: the [`Deliverer`] handler and its dispatch. `claim` is the post claim protocol,
//! `posting` posts and reports a post, `thread` creates a child thread, `registry` builds
//! each channel's adapter from its name; the adapters are `discord`, `slack`, `telegram`,
//! `matrix` and `webhook`.

pub mod adapter;
mod claim;
pub mod credentials;
pub(crate) mod discord;
pub(crate) mod http;
pub mod matrix;
mod posting;
pub(crate) mod registry;
pub(crate) mod slack;
pub(crate) mod telegram;
mod thread;
pub(crate) mod touch;
pub mod webhook;

use crate::error::WorkError;
use crate::model::platform_codes::PermanentCode;
use crate::runtime::outbox;
use crate::runtime::runloop::{Attempt, Handler};
use crate::runtime::WorkerContext;
use adapter::{Adapter, Receipt};
use credentials::Credentials;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use threadline_schemas::{ConversationRef, DeliveryAction, DeliveryCommand, Stage};
use touch::TouchCoalescer;

/// The handler of `tl.deliver.<channel>`.
pub(crate) struct Deliverer<A: Adapter> {
    adapter: A,
    ctx: WorkerContext,
    /// The token the adapter sends; reloaded on a 401.
    credentials: Arc<Credentials>,
    /// Author ids already recorded as ours, so each is written to Redis once per process.
    own_authors: Mutex<HashSet<String>>,
    /// Which bindings this instance refreshed lately (`touch_interval_ms`).
    touches: TouchCoalescer,
}

/// How far back read-back looks for an earlier attempt's post.
const READ_BACK_WINDOW_MS: u64 = 3_600_000;

/// Where read-back starts looking for what an attempt in doubt since `since_ms` posted.
fn read_back_since(since_ms: u64) -> u64 {
    if since_ms > 0 {
        since_ms
    } else {
        threadline_schemas::now_ms().saturating_sub(READ_BACK_WINDOW_MS)
    }
}

/// A post (or thread) that failed for good.
struct Failure {
    code: PermanentCode,
    message: String,
    attempts: u32,
}

impl Failure {
    /// The failure as `tl.out.failed` reports it for a post to (or a thread under)
    /// `destination` on behalf of `session_key`.
    fn reported(self, destination: &ConversationRef, session_key: Option<&str>) -> outbox::Failure {
        outbox::Failure {
            destination: Some(destination.clone()),
            code: self.code.as_str().to_owned(),
            message: self.message,
            attempts: self.attempts,
            session_key: session_key.map(str::to_owned),
        }
    }
}

impl<A: Adapter> Deliverer<A> {
    /// A deliverer posting through `adapter` with `credentials`.
    pub(crate) fn new(adapter: A, credentials: Arc<Credentials>, ctx: WorkerContext) -> Self {
        Deliverer {
            adapter,
            credentials,
            own_authors: Mutex::new(HashSet::new()),
            touches: TouchCoalescer::new(Duration::from_millis(ctx.config.touch_interval_ms)),
            ctx,
        }
    }

    /// Remembers the platform's author id of our posts: messages by it are echoes.
    async fn learn_author(&self, receipt: &Receipt) -> Result<(), WorkError> {
        let Some(author) = &receipt.author_id else {
            return Ok(());
        };
        let known = self
            .own_authors
            .lock()
            .map(|set| set.contains(author))
            .unwrap_or(false);
        if !known {
            self.ctx
                .store
                .add_own_author(self.adapter.channel(), author)
                .await?;
            if let Ok(mut set) = self.own_authors.lock() {
                set.insert(author.clone());
            }
        }
        Ok(())
    }

    fn lease_ms(&self) -> u64 {
        self.ctx.config.claim_lease_ms
    }
}

impl<A: Adapter> Handler for Deliverer<A> {
    type Event = DeliveryCommand;

    fn stage(&self) -> Stage {
        Stage::Deliver(self.adapter.channel().to_owned())
    }

    /// The conversation the command was partitioned by: its posts happen in order.
    fn order_key(&self, command: &DeliveryCommand) -> Option<String> {
        Some(match &command.action {
            DeliveryAction::Post { destination, .. } => destination.key(),
            DeliveryAction::CreateThread { parent, .. } => parent.key(),
        })
    }

    async fn handle(&self, command: &DeliveryCommand, _attempt: Attempt) -> Result<(), WorkError> {
        match &command.action {
            DeliveryAction::Post {
                destination,
                content,
                mode,
                reason,
                session_key,
                binding_id,
                ..
            } => {
                self.handle_post(
                    command,
                    destination,
                    content,
                    *mode,
                    reason,
                    session_key.as_deref(),
                    binding_id.as_deref(),
                )
                .await
            }
            DeliveryAction::CreateThread {
                parent,
                name,
                session_key,
                binding_id,
            } => {
                self.handle_create_thread(command, parent, name, session_key, binding_id)
                    .await
            }
        }
    }

    async fn give_up(
        &self,
        command: &DeliveryCommand,
        error: &WorkError,
        attempt: Attempt,
    ) -> Result<(), WorkError> {
        match &command.action {
            DeliveryAction::Post {
                destination,
                session_key,
                ..
            } => {
                let failure = outbox::Failure {
                    destination: Some(destination.clone()),
                    code: error.code().to_owned(),
                    message: error.to_string(),
                    attempts: attempt.number,
                    session_key: session_key.clone(),
                };
                self.ctx
                    .publisher
                    .send(self.ctx.outbox.delivery_failed(command, failure))
                    .await
            }
            DeliveryAction::CreateThread {
                parent,
                session_key,
                binding_id,
                ..
            } => {
                let failure = Failure {
                    code: PermanentCode::parse(error.code()),
                    message: error.to_string(),
                    attempts: attempt.number,
                };
                self.thread_failed(command, parent, session_key, binding_id, failure)
                    .await
            }
        }
    }
}
