//! Posting: every part of a post claimed, posted and settled in order; a doubt about an
//! earlier attempt settled (by the platform's key, by read-back, or by `unknown_outcome`);
//! the outcome reported (`tl.out.delivered`, `tl.out.failed`), and a lost bound thread's
//! completion sent where the router's rules say.

use super::adapter::{Adapter, Capabilities, PlatformError, PostRequest};
use super::claim::{self, PartClaim, PartState};
use super::{read_back_since, Deliverer, Failure};
use crate::config::UnknownOutcome;
use crate::error::WorkError;
use crate::ids;
use crate::io::metrics as m;
use crate::io::nats::Outgoing;
use crate::model::bindings::{Farewell, FAREWELL_REASON};
use crate::model::fallback::{self, Unbound};
use crate::model::platform_codes::PermanentCode;
use crate::model::session::SessionRecord;
use crate::render::{self, Mentions};
use crate::runtime::ending::end_binding;
use crate::runtime::outbox::{AgentInput, Delivered, PostCommand};
use crate::runtime::WorkerContext;
use std::time::{Duration, Instant};
use threadline_schemas::{
    ContentFormat, ConversationRef, DeliveryAction, DeliveryCommand, DeliveryMode, DeliveryPolicy,
    InputSource, Reconciliation,
};

/// How a part in doubt is settled.
enum Doubt<'a> {
    /// Send it (again) on this claim, reporting how the doubt was handled.
    Resend(PartClaim<'a>, Reconciliation),
    /// Already there (found by read-back), or not to be re-sent (`unknown_outcome = skip`).
    Settled(String, Reconciliation),
    /// Found by read-back, but in the destination's parent (see [`Posted::InParent`]).
    InParent(String, PermanentCode),
}

/// What one post attempt came to.
enum Posted<'a> {
    Done {
        ids: Vec<String>,
        reconciled: Option<Reconciliation>,
        /// The last part, posted but not yet recorded as sent: the caller records it
        /// together with its other writes (one round trip's wait, not two).
        unsettled: Option<(PartClaim<'a>, String)>,
    },
    Failed(Failure),
    /// A part meant for a thread landed in the thread's parent ([`PlatformError::PostedInParent`]):
    /// the parts' ids so far, the last one the misplaced part's. No later part was posted.
    InParent {
        ids: Vec<String>,
        code: PermanentCode,
        reconciled: Option<Reconciliation>,
    },
}

impl<A: Adapter> Deliverer<A> {
    /// Posts every part not yet sent, in order.
    async fn post_parts<'a>(
        &'a self,
        command: &'a DeliveryCommand,
        destination: &ConversationRef,
        content: &str,
        session_key: Option<&str>,
        is_farewell: bool,
    ) -> Result<Posted<'a>, WorkError> {
        let store = &self.ctx.store;
        let caps = self.adapter.capabilities();
        let (format, mentions, reply_to, persona) = match &command.action {
            DeliveryAction::Post {
                format,
                mentions,
                reply_to,
                persona,
                ..
            } => (
                *format,
                mentions.as_slice(),
                reply_to.as_deref(),
                persona.as_ref(),
            ),
            DeliveryAction::CreateThread { .. } => (ContentFormat::Plain, &[][..], None, None),
        };
        let parts = render::parts(
            content,
            format,
            self.adapter.markup(),
            caps.max_message_chars,
            &Mentions::new(mentions),
        );
        let mut message_ids = Vec::with_capacity(parts.len());
        let mut reconciled = None;
        let mut unsettled = None;
        for (index, part) in parts.iter().enumerate() {
            let key = ids::part_key(&command.delivery_id, index);
            let request = PostRequest {
                conversation: destination,
                text: &part.rendered.text,
                html: part.rendered.html.as_deref(),
                format,
                mentions: &part.mentioned,
                reply_to,
                persona,
                idempotency_key: &key,
                event_id: &command.event_id,
                delivery_id: &command.delivery_id,
                part: index,
                parts: parts.len(),
                session_key,
                bot_only: is_farewell,
            };
            let claim = match claim::claim(store, &command.delivery_id, index, self.lease_ms())
                .await?
            {
                PartState::Sent(id) => {
                    metrics::counter!(m::DEDUP_HITS, "kind" => "post_already_sent").increment(1);
                    match claim::in_parent_part(&id) {
                        // Posted in the parent by an earlier attempt: in the thread it is
                        // still misplaced; once the rest goes to the parent it is a part.
                        Some((code, id)) if destination.parent_conversation_id.is_some() => {
                            message_ids.push(id.to_owned());
                            return Ok(Posted::InParent {
                                ids: message_ids,
                                code,
                                reconciled,
                            });
                        }
                        Some((_, id)) => message_ids.push(id.to_owned()),
                        None => message_ids.push(id),
                    }
                    continue;
                }
                PartState::Failed(code) => {
                    return Ok(Posted::Failed(Failure {
                        message: format!("part {index} failed earlier with {code}"),
                        code,
                        attempts: 0,
                    }))
                }
                PartState::Busy(ms) => {
                    return Err(WorkError::NotYet {
                        reason: "another instance is posting this delivery".into(),
                        after: Duration::from_millis(ms.max(50)),
                    })
                }
                PartState::Claimed(claim) if claim.doubt_since().is_none() => claim,
                PartState::Claimed(claim) => match self.settle_doubt(request, claim, caps).await? {
                    Doubt::Resend(claim, how) => {
                        reconciled = Some(how);
                        claim
                    }
                    Doubt::Settled(id, how) => {
                        reconciled = Some(how);
                        message_ids.push(id);
                        continue;
                    }
                    Doubt::InParent(id, code) => {
                        message_ids.push(id);
                        return Ok(Posted::InParent {
                            ids: message_ids,
                            code,
                            reconciled: Some(Reconciliation::ReadBack),
                        });
                    }
                },
            };
            let posted = match self.adapter.post(request).await {
                // A top-level destination is its own parent: nothing was misplaced.
                Err(PlatformError::PostedInParent { receipt, .. })
                    if destination.parent_conversation_id.is_none() =>
                {
                    Ok(receipt)
                }
                other => other,
            };
            match posted {
                Ok(receipt) => {
                    self.learn_author(&receipt).await?;
                    if index + 1 == parts.len() {
                        unsettled = Some((claim, receipt.message_id.clone()));
                    } else {
                        claim.sent(&receipt.message_id).await?;
                    }
                    message_ids.push(receipt.message_id);
                }
                Err(PlatformError::PostedInParent { code, receipt }) => {
                    self.learn_author(&receipt).await?;
                    claim.sent_in_parent(&code, &receipt.message_id).await?;
                    message_ids.push(receipt.message_id);
                    return Ok(Posted::InParent {
                        ids: message_ids,
                        code,
                        reconciled,
                    });
                }
                Err(error) => {
                    return self
                        .settle_failed_part(claim, error)
                        .await
                        .map(Posted::Failed)
                }
            }
        }
        Ok(Posted::Done {
            ids: message_ids,
            reconciled,
            unsettled,
        })
    }

    /// Whether re-sending with the platform's key still cannot duplicate what an attempt
    /// claimed at `since_ms` may have posted: always, unless the platform forgets keys.
    fn key_still_holds(&self, since_ms: u64) -> bool {
        match self.adapter.key_window() {
            None => true,
            Some(window) => {
                since_ms > 0
                    && threadline_schemas::now_ms().saturating_sub(since_ms)
                        < u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
            }
        }
    }

    /// An earlier attempt on this part (the oldest claimed at `since_ms`) may have posted.
    /// With an idempotency key the platform still remembers, re-send; with read-back, look
    /// for it first; with neither, follow `unknown_outcome`.
    async fn settle_doubt<'a>(
        &self,
        request: PostRequest<'_>,
        claim: PartClaim<'a>,
        caps: Capabilities,
    ) -> Result<Doubt<'a>, WorkError> {
        let since_ms = claim.doubt_since().unwrap_or(0);
        if self.adapter.keyed(&request) && self.key_still_holds(since_ms) {
            metrics::counter!(m::DEDUP_HITS, "kind" => "platform_idempotency").increment(1);
            return Ok(Doubt::Resend(claim, Reconciliation::IdempotencyKey));
        }
        if caps.read_back {
            let since = read_back_since(since_ms);
            return match self.adapter.find_posted(request, since).await {
                Ok(Some(receipt)) => {
                    metrics::counter!(m::DEDUP_HITS, "kind" => "read_back").increment(1);
                    claim.sent(&receipt.message_id).await?;
                    Ok(Doubt::Settled(receipt.message_id, Reconciliation::ReadBack))
                }
                // Read back and not there: posting again cannot duplicate it.
                Ok(None) => Ok(Doubt::Resend(claim, Reconciliation::ReadBack)),
                // There, but where the platform put it rather than in the thread.
                Err(PlatformError::PostedInParent { code, receipt }) => {
                    metrics::counter!(m::DEDUP_HITS, "kind" => "read_back").increment(1);
                    claim.sent_in_parent(&code, &receipt.message_id).await?;
                    Ok(Doubt::InParent(receipt.message_id, code))
                }
                Err(error) => {
                    // Could not read: still in doubt; keep it that way and retry later
                    // (with the rotated token, when the read met a 401).
                    if matches!(
                        &error,
                        PlatformError::Permanent {
                            code: PermanentCode::Unauthorized,
                            ..
                        }
                    ) {
                        self.credentials.reload();
                    }
                    claim.unknown().await?;
                    Err(match error {
                        PlatformError::RateLimited { after } => WorkError::RateLimited { after },
                        PlatformError::Transient { message, .. }
                        | PlatformError::Permanent { message, .. } => WorkError::Transient(
                            format!("reading back an unknown outcome: {message}"),
                        ),
                        // Answered above; kept so the match stays exhaustive.
                        error @ PlatformError::PostedInParent { .. } => WorkError::Transient(
                            format!("reading back an unknown outcome: {error}"),
                        ),
                    })
                }
            };
        }
        metrics::counter!(m::UNKNOWN_OUTCOMES, "channel" => self.adapter.channel().to_owned())
            .increment(1);
        let policy = self
            .ctx
            .config
            .platform(self.adapter.channel())
            .map(|p| p.unknown_outcome)
            .unwrap_or_default();
        match policy {
            UnknownOutcome::Repost => Ok(Doubt::Resend(claim, Reconciliation::UnknownOutcome)),
            UnknownOutcome::Skip => {
                let id = format!("unknown:{}", request.idempotency_key);
                claim.sent(&id).await?;
                Ok(Doubt::Settled(id, Reconciliation::UnknownOutcome))
            }
        }
    }

    /// Records a failed attempt on a part and turns it into the run loop's decision: an
    /// error to retry after, or the failure for good.
    pub(super) async fn settle_failed_part(
        &self,
        claim: PartClaim<'_>,
        error: PlatformError,
    ) -> Result<Failure, WorkError> {
        let channel = self.adapter.channel().to_owned();
        let attempts = claim.number();
        match error {
            PlatformError::RateLimited { after } => {
                metrics::counter!(m::RATE_LIMITED, "channel" => channel.clone()).increment(1);
                metrics::counter!(m::PLATFORM_RETRIES, "channel" => channel, "reason" => "rate_limited").increment(1);
                claim.not_posted().await?;
                Err(WorkError::RateLimited { after })
            }
            PlatformError::Transient {
                message,
                maybe_applied,
            } => {
                metrics::counter!(m::PLATFORM_RETRIES, "channel" => channel, "reason" => "transient").increment(1);
                if maybe_applied {
                    claim.unknown().await?;
                } else {
                    claim.not_posted().await?;
                }
                Err(WorkError::Transient(message))
            }
            PlatformError::Permanent {
                code: PermanentCode::Unauthorized,
                message,
            } if self.credentials.reload() => {
                // The token was rotated under us: nothing was posted, try again with the
                // new one rather than give the post up.
                metrics::counter!(m::PLATFORM_RETRIES, "channel" => channel, "reason" => "unauthorized").increment(1);
                claim.not_posted().await?;
                Err(WorkError::Transient(format!(
                    "{message}; retrying with the rotated token"
                )))
            }
            // Posts answer this in `post_parts`; a thread's creation never posts in a thread.
            error @ PlatformError::PostedInParent { .. } => {
                let code = PermanentCode::UnexpectedPlacement;
                claim.failed(&code).await?;
                Ok(Failure {
                    code,
                    message: error.to_string(),
                    attempts,
                })
            }
            PlatformError::Permanent { code, message } => {
                claim.failed(&code).await?;
                metrics::counter!(m::POSTS, "channel" => channel, "result" => "failed")
                    .increment(1);
                Ok(Failure {
                    code,
                    message,
                    attempts,
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn handle_post(
        &self,
        command: &DeliveryCommand,
        destination: &ConversationRef,
        content: &str,
        mode: DeliveryMode,
        reason: &str,
        session_key: Option<&str>,
        binding_id: Option<&str>,
    ) -> Result<(), WorkError> {
        let out = match self
            .post_parts(
                command,
                destination,
                content,
                session_key,
                reason == FAREWELL_REASON,
            )
            .await?
        {
            Posted::Failed(failure) => {
                let code = failure.code.clone();
                tracing::warn!(event_id = %command.event_id, channel = self.adapter.channel(), %code, message = %failure.message, "post failed for good");
                let failed = self
                    .ctx
                    .outbox
                    .delivery_failed(command, failure.reported(destination, session_key));
                if let (DeliveryMode::Bound, Some(session_key), Some(binding_id)) =
                    (mode, session_key, binding_id)
                {
                    // The bound conversation cannot take this post nor any later one.
                    if let Some(farewell) = code.lost_thread() {
                        return self
                            .thread_lost(
                                command,
                                content,
                                (session_key, binding_id),
                                (&code, farewell),
                                failed,
                            )
                            .await;
                    }
                }
                failed
            }
            Posted::InParent {
                ids,
                code,
                reconciled,
            } => {
                return self
                    .posted_in_parent(
                        command,
                        destination,
                        content,
                        session_key,
                        binding_id,
                        (ids, reconciled),
                        &code,
                    )
                    .await
            }
            Posted::Done {
                ids,
                reconciled,
                unsettled,
            } => {
                return self
                    .report_delivered(
                        command,
                        destination,
                        (mode, reason),
                        session_key,
                        binding_id,
                        (ids, reconciled, unsettled),
                    )
                    .await
            }
        };
        self.ctx.publisher.send(out).await
    }

    /// Reports a post whose every part is on the platform: records its last part, touches
    /// its binding (when due) and publishes `tl.out.delivered`.
    #[allow(clippy::type_complexity)]
    async fn report_delivered(
        &self,
        command: &DeliveryCommand,
        destination: &ConversationRef,
        (mode, reason): (DeliveryMode, &str),
        session_key: Option<&str>,
        binding_id: Option<&str>,
        (ids, reconciled, unsettled): (
            Vec<String>,
            Option<Reconciliation>,
            Option<(PartClaim<'_>, String)>,
        ),
    ) -> Result<(), WorkError> {
        metrics::counter!(m::POSTS, "channel" => self.adapter.channel().to_owned(), "result" => "posted").increment(1);
        crate::io::trace::record_delivery_latency(self.adapter.channel());
        let delivered = self.ctx.outbox.delivered(
            command,
            Delivered {
                destination: destination.clone(),
                mode,
                reason: reason.to_owned(),
                platform_message_ids: ids,
                session_key: session_key.map(str::to_owned),
                reconciled,
            },
        );
        // Recording the post, the touch and the report are independent: one round
        // trip's wait, not three. (A crash before the record lands leaves the part
        // in doubt, settled by key or read-back as any crash after the call is.)
        let settle = async {
            if let Some((claim, id)) = unsettled {
                claim.sent(&id).await?;
            }
            Ok::<(), WorkError>(())
        };
        let touch = async {
            let (Some(session_key), Some(binding_id)) = (session_key, binding_id) else {
                return Ok(());
            };
            if !self.touches.due(binding_id, Instant::now()) {
                return Ok(());
            }
            let touched = self.ctx.store.touch_binding(session_key, binding_id).await;
            if touched.is_err() {
                self.touches.forget(binding_id);
            }
            touched.map(drop)
        };
        futures::try_join!(settle, touch, self.ctx.publisher.send(delivered))?;
        Ok(())
    }

    /// A part meant for a thread landed in its parent conversation (Slack posts a reply to a
    /// deleted root at the channel's top level and answers `ok`). The thread is gone: its
    /// binding ends without a farewell (`code`). What was posted is reported for what it
    /// was, never as `bound`, and no text is posted twice:
    /// - by default the rest of the post follows into the parent, where the misplaced part
    ///   is, and the whole is reported as a `fallback` there (`reason` = `code`);
    /// - with the session's `fail_closed` (and for a farewell, which speaks of the gone
    ///   thread) the misplaced part is deleted and the post reported as `tl.out.failed`
    ///   with `code`, as a lost thread is on every platform under `fail_closed`. If the
    ///   platform refuses to delete it, it stays where it is, and the post is completed and
    ///   reported there as by default: `tl.out.failed` must mean nobody got it;
    /// - with `bound_and_requester`, when the parent is the requester's conversation (which
    ///   gets its own copy), the misplaced part is a second copy there: deleted, and the post
    ///   then ends as any lost thread's does (`thread_lost`).
    ///
    /// Every step is recorded in the parts' claims first, so a redelivery (crash, retry)
    /// takes the same way without posting anything again.
    #[allow(clippy::too_many_arguments)]
    async fn posted_in_parent(
        &self,
        command: &DeliveryCommand,
        destination: &ConversationRef,
        content: &str,
        session_key: Option<&str>,
        binding_id: Option<&str>,
        (ids, reconciled_before): (Vec<String>, Option<Reconciliation>),
        code: &PermanentCode,
    ) -> Result<(), WorkError> {
        let parent = destination.parent();
        let is_farewell = matches!(&command.action,
            DeliveryAction::Post { reason, .. } if reason == FAREWELL_REASON);
        tracing::warn!(event_id = %command.event_id, channel = self.adapter.channel(), %code,
            thread = %destination.conversation_id, "the platform posted into the parent, not the thread");
        if let (Some(session_key), Some(binding_id)) = (session_key, binding_id) {
            end_binding(
                &self.ctx,
                session_key,
                binding_id,
                code.as_str(),
                Farewell::None,
            )
            .await?;
        }
        let session = match session_key {
            Some(key) => self.ctx.store.load_session(key).await?,
            None => None,
        };
        let fail_closed = session.as_ref().is_some_and(|s| s.session.fail_closed);
        // `bound_and_requester` posts a copy to the requester's conversation too: when that
        // is where the platform put this one, it is the same text a second time there.
        let requester_has_it = binding_id.is_some()
            && session.as_ref().is_some_and(|s| {
                s.session.delivery == DeliveryPolicy::BoundAndRequester
                    && s.session.requester.conversation.same_place(&parent)
            });
        if fail_closed || is_farewell || requester_has_it {
            let index = ids.len().saturating_sub(1);
            let misplaced = ids.last().cloned().unwrap_or_default();
            match self.adapter.delete(&parent, &misplaced).await {
                Ok(()) => {
                    claim::retract_from_parent(&self.ctx.store, &command.delivery_id, index, code)
                        .await?;
                    metrics::counter!(m::POSTS, "channel" => self.adapter.channel().to_owned(), "result" => "failed").increment(1);
                    let message = format!(
                        "part {index} was posted in {} instead of the thread (its root is gone) and deleted again",
                        parent.conversation_id
                    );
                    let failure = Failure {
                        code: code.clone(),
                        message,
                        attempts: 1,
                    };
                    let failed = self
                        .ctx
                        .outbox
                        .delivery_failed(command, failure.reported(destination, session_key));
                    // Now as any lost thread: the same outcome, the same fallback (the
                    // requester's own copy's delivery id, so it is not posted again).
                    return match (session_key, binding_id) {
                        (Some(session_key), Some(binding_id)) => {
                            // Ended above without a farewell: the thread is gone.
                            self.thread_lost(
                                command,
                                content,
                                (session_key, binding_id),
                                (code, Farewell::None),
                                failed,
                            )
                            .await
                        }
                        (None, _) | (_, None) => self.ctx.publisher.send(failed).await,
                    };
                }
                Err(PlatformError::RateLimited { after }) => {
                    return Err(WorkError::RateLimited { after })
                }
                Err(PlatformError::Transient { message, .. }) => {
                    return Err(WorkError::Transient(format!(
                        "deleting a post misplaced in the parent: {message}"
                    )))
                }
                Err(
                    error
                    @ (PlatformError::Permanent { .. } | PlatformError::PostedInParent { .. }),
                ) => {
                    tracing::warn!(event_id = %command.event_id, %error,
                        "the misplaced part cannot be deleted; completing the post where it is");
                }
            }
        }
        metrics::counter!(m::FALLBACKS, "reason" => code.to_string()).increment(1);
        match self
            .post_parts(command, &parent, content, session_key, is_farewell)
            .await?
        {
            Posted::Done {
                ids,
                reconciled,
                unsettled,
            } => {
                self.report_delivered(
                    command,
                    &parent,
                    (DeliveryMode::Fallback, code.as_str()),
                    session_key,
                    None,
                    (ids, reconciled.or(reconciled_before), unsettled),
                )
                .await
            }
            Posted::Failed(failure) => {
                self.ctx
                    .publisher
                    .send(
                        self.ctx
                            .outbox
                            .delivery_failed(command, failure.reported(&parent, session_key)),
                    )
                    .await
            }
            // The parent is top-level: nothing posted there can land in a parent of its own.
            Posted::InParent { .. } => Err(WorkError::Corrupt(
                "a top-level conversation reported a post in its parent".into(),
            )),
        }
    }

    /// The bound thread is gone (deleted), closed (archived, locked), or the bot was removed
    /// from it (`bot_removed`): end its binding — with a farewell in the parent when closed,
    /// without one otherwise — and send the completion where the router would have sent it
    /// had it known ([`fallback::unbound`]): to the spawning session as input when that is
    /// live, else to the requester's conversation, explicitly (`fallback` with the reason),
    /// unless the session is `fail_closed`. The fallback's delivery id is the one the router
    /// would give a requester post, so `bound_and_requester` cannot post twice; the input's
    /// message id is the one the router would give it.
    async fn thread_lost(
        &self,
        command: &DeliveryCommand,
        content: &str,
        (session_key, binding_id): (&str, &str),
        (code, farewell): (&PermanentCode, Farewell),
        failed: Outgoing,
    ) -> Result<(), WorkError> {
        end_binding(&self.ctx, session_key, binding_id, code.as_str(), farewell).await?;
        let store = &self.ctx.store;
        let Some(state) = store.load_session(session_key).await? else {
            return self.ctx.publisher.send(failed).await;
        };
        let parent = store
            .load_session(&state.session.requester.session_key)
            .await?;
        // The completion's one final outcome is the fallback's (`tl.out.delivered` with this
        // reason, or `tl.out.failed` if that post fails too; or the parent's input): a
        // `tl.out.failed` beside it would tell a publisher waiting for the outcome that
        // nobody got it.
        let out = match fallback::unbound(&state.session, parent.as_ref()) {
            Unbound::ToParent { parent, origin } => {
                parent_input(&self.ctx, command, content, session_key, parent, origin)
            }
            Unbound::FailClosed => failed,
            Unbound::ToRequester(requester) => {
                metrics::counter!(m::FALLBACKS, "reason" => code.to_string()).increment(1);
                requester_fallback(&self.ctx, command, content, session_key, requester, code)
            }
        };
        self.ctx.publisher.send(out).await
    }
}

/// A lost thread's completion as the live session that spawned it gets it: the same event
/// under the same message id as the router's rule 5 input.
fn parent_input(
    ctx: &WorkerContext,
    command: &DeliveryCommand,
    content: &str,
    session_key: &str,
    parent: &SessionRecord,
    origin: &ConversationRef,
) -> Outgoing {
    ctx.outbox.agent_input(AgentInput {
        event_id: command.event_id.clone(),
        agent_id: parent.agent_id.clone(),
        session_key: parent.session_key.clone(),
        text: content.to_owned(),
        origin: origin.clone(),
        source: InputSource::Completion,
        from_session_key: Some(session_key.to_owned()),
        message: crate::runtime::outbox::MessageFacts::default(),
    })
}

/// A lost thread's completion posted in the requester's conversation instead, explicitly as
/// a fallback with the reason `code`, under the delivery id the router gives a requester post.
fn requester_fallback(
    ctx: &WorkerContext,
    command: &DeliveryCommand,
    content: &str,
    session_key: &str,
    requester: &ConversationRef,
    code: &PermanentCode,
) -> Outgoing {
    let (format, mentions, persona) = match &command.action {
        DeliveryAction::Post {
            format,
            mentions,
            persona,
            ..
        } => (*format, mentions.clone(), persona.clone()),
        DeliveryAction::CreateThread { .. } => (ContentFormat::default(), Vec::new(), None),
    };
    ctx.outbox.post(PostCommand {
        event_id: command.event_id.clone(),
        delivery_id: ids::post_delivery_id(&command.event_id, requester),
        destination: requester.clone(),
        content: content.to_owned(),
        mode: DeliveryMode::Fallback,
        reason: code.to_string(),
        session_key: Some(session_key.to_owned()),
        binding_id: None,
        format,
        mentions,
        // The message answered is in the bound thread: a reply to it from elsewhere would
        // point nowhere (or be refused), so the fallback is a plain post.
        reply_to: None,
        persona,
    })
}
