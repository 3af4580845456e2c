//! Thread creation: a child thread created exactly once under its parent (looked for first
//! when an earlier attempt may have created it), then bound; or, when it cannot be, the
//! binding that waited for it ended.

use super::adapter::{Adapter, ThreadRequest};
use super::claim::{self, PartState};
use super::{read_back_since, Deliverer, Failure};
use crate::error::WorkError;
use crate::ids;
use crate::store::Activated;
use std::time::Duration;
use threadline_schemas::{BindingChange, ConversationRef, DeliveryCommand};

impl<A: Adapter> Deliverer<A> {
    /// Creates the thread a `child` binding waits for, and binds it.
    pub(super) async fn handle_create_thread(
        &self,
        command: &DeliveryCommand,
        parent: &ConversationRef,
        name: &str,
        session_key: &str,
        binding_id: &str,
    ) -> Result<(), WorkError> {
        let store = &self.ctx.store;
        let thread = match claim::claim(store, &command.delivery_id, 0, self.lease_ms()).await? {
            PartState::Sent(thread_id) => ConversationRef {
                channel: parent.channel.clone(),
                account_id: parent.account_id.clone(),
                conversation_id: thread_id,
                parent_conversation_id: Some(parent.conversation_id.clone()),
            },
            PartState::Failed(code) => {
                let failure = Failure {
                    code,
                    message: "failed earlier".into(),
                    attempts: 0,
                };
                return self
                    .thread_failed(command, parent, session_key, binding_id, failure)
                    .await;
            }
            PartState::Busy(ms) => {
                return Err(WorkError::NotYet {
                    reason: "another instance is creating this thread".into(),
                    after: Duration::from_millis(ms.max(50)),
                })
            }
            PartState::Claimed(claim) => {
                let key = ids::part_key(&command.delivery_id, 0);
                let request = ThreadRequest {
                    parent,
                    name,
                    idempotency_key: &key,
                    session_key,
                };
                let caps = self.adapter.capabilities();
                // In doubt, an earlier attempt's thread is looked for first where the
                // platform lets us read: a second thread is a duplicate, and a key may be
                // forgotten by now or not cover every way a platform creates threads.
                // Not being able to look is no answer: the doubt stays, and the attempt
                // is retried.
                let earlier = match claim.doubt_since() {
                    Some(since) if caps.read_back => {
                        self.adapter
                            .find_thread(request, read_back_since(since))
                            .await
                    }
                    Some(_) | None => Ok(None),
                };
                let created = match earlier {
                    Ok(Some(thread)) => Ok(thread),
                    Ok(None) => self.adapter.create_thread(request).await,
                    Err(error) => Err(error),
                };
                match created {
                    Ok(thread) => {
                        claim.sent(&thread.conversation_id).await?;
                        thread
                    }
                    Err(error) => {
                        let failure = self.settle_failed_part(claim, error).await?;
                        return self
                            .thread_failed(command, parent, session_key, binding_id, failure)
                            .await;
                    }
                }
            }
        };
        let (activated, binding) = store
            .activate_binding(session_key, binding_id, &thread)
            .await?;
        match (activated, binding) {
            (Activated::Now | Activated::Already, Some(binding)) => {
                tracing::info!(session_key, binding_id, thread = %thread.conversation_id, "thread created and bound");
                self.ctx
                    .publisher
                    .send(
                        self.ctx
                            .outbox
                            .binding(binding, BindingChange::Bound, "thread_created"),
                    )
                    .await
            }
            (activated, _) => {
                tracing::info!(
                    session_key,
                    binding_id,
                    ?activated,
                    "thread created after its binding ended; left unbound"
                );
                Ok(())
            }
        }
    }

    /// The thread could not be created (`failure`): report it, and end the binding that
    /// waited for it.
    pub(super) async fn thread_failed(
        &self,
        command: &DeliveryCommand,
        parent: &ConversationRef,
        session_key: &str,
        binding_id: &str,
        failure: Failure,
    ) -> Result<(), WorkError> {
        let (code, message) = (failure.code.clone(), failure.message.clone());
        let mut out = vec![self
            .ctx
            .outbox
            .delivery_failed(command, failure.reported(parent, Some(session_key)))];
        if let Some(binding) = self
            .ctx
            .store
            .end_binding(session_key, binding_id, "thread_create_failed")
            .await?
        {
            out.push(self.ctx.outbox.binding(
                binding,
                BindingChange::Ended,
                "thread_create_failed",
            ));
        }
        tracing::warn!(
            session_key,
            binding_id,
            %code,
            %message,
            "thread creation failed; binding ended"
        );
        self.ctx.publisher.send_all(out).await
    }
}
