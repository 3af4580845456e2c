//! The one run loop every worker uses: pull → decode → handle → settle. Deliverers pull
//! their ordered lanes with `runtime::lanes` instead, which decides *when* a message may
//! start and hands it to the same decode → handle → settle path here.
//!
//! - Pulls with bounded `batch()` requests, never the `messages()` stream, whose client-side
//!   pending count can stall under CPU pressure (docs/pitfalls.md 1).
//! - Bad bytes: the original payload goes to `tl.dlq.<stage>` with the reason, a
//!   `tl.out.rejected` follows when the event id is readable, then `Term`. If those publishes
//!   fail, the message is `Nak`ed instead: nothing is dropped without a trace.
//! - A handler's `Ok` means what it produced is stored (JetStream acked, Redis written);
//!   only then is the input acked.
//! - Retryable errors `Nak` with a delay (JetStream paces redelivery); after
//!   `max_attempts` the handler's give-up hook reports the failure and the event is
//!   dead-lettered.
//! - On shutdown: stop pulling, finish in-flight work within the drain deadline, flush acks.

use super::outbox::{dlq_headers, DeadLetter};
use super::pulls::Pulls;
use super::retry;
use super::WorkerContext;
use crate::error::{Settle, WorkError};
use crate::io::metrics as m;
use crate::io::trace;
use async_nats::jetstream::{consumer::PullConsumer, AckKind, Message};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use threadline_schemas::codec::Versioned;
use threadline_schemas::{decode, DecodeError, Encoding, Stage, Validate};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long a worker's pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Which delivery of a message this is.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for the first delivery.
    pub number: u32,
    /// The attempts an event gets before it is given up (`max_attempts`).
    pub max: u32,
    /// When the event was stored in its stream (Unix ms): its age survives redeliveries.
    pub published_ms: u64,
}

/// A worker's logic. `handle` is called once per delivery of a valid event.
pub trait Handler: Send + Sync + 'static {
    /// The event the worker handles, decoded and validated before `handle` sees it.
    type Event: DeserializeOwned + Validate + Versioned + Send + Sync + 'static;

    /// The stage named in rejections, dead letters, metrics and spans.
    fn stage(&self) -> Stage;

    /// Does the work. `Ok` only once every effect is durably stored.
    fn handle(
        &self,
        event: &Self::Event,
        attempt: Attempt,
    ) -> impl Future<Output = Result<(), WorkError>> + Send;

    /// Events with the same key are handled one at a time, in stream order, where a worker
    /// pulls ordered lanes (`runtime::lanes`); `None` (the default) imposes no order.
    fn order_key(&self, _event: &Self::Event) -> Option<String> {
        None
    }

    /// Called once before an event is dead-lettered after failing for good, so the
    /// handler can emit its terminal outcome (e.g. `tl.out.failed`).
    fn give_up(
        &self,
        event: &Self::Event,
        error: &WorkError,
        attempt: Attempt,
    ) -> impl Future<Output = Result<(), WorkError>> + Send;
}

/// Pulls from `consumer` and runs `handler` until `ctx.shutdown` fires, then drains.
/// `concurrency` bounds the events handled at once from this consumer.
pub async fn run<H: Handler>(
    handler: Arc<H>,
    consumer: PullConsumer,
    ctx: WorkerContext,
    concurrency: usize,
) {
    let stage = handler.stage();
    let concurrency = concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let shutdown = ctx.shutdown.clone();
    // Shared by the spawned events: a `WorkerContext` clone is many (Arc, String)s.
    let shared = Arc::new(ctx.clone());
    tracing::info!(stage = %stage.name(), concurrency, "worker started");
    tokio::spawn(watch_pending(
        consumer.clone(),
        ctx.health.clone(),
        shutdown.clone(),
        Duration::from_millis(ctx.config.pending_poll_ms.max(100)),
    ));

    let mut pulls = Pulls::default();
    'pull: while !shutdown.is_cancelled() {
        while let Some(done) = tasks.try_join_next() {
            if let Err(error) = done {
                tracing::error!(stage = %stage.name(), %error, "handler task panicked; its message will be redelivered");
            }
        }
        // Pull again once half the permits are free: one pull request for many events,
        // not one per event finished (each request is a round trip through the broker).
        let free = permits.available_permits();
        if free == 0 || (free * 2 < concurrency && !tasks.is_empty()) {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'pull,
                _ = tasks.join_next() => continue 'pull,
            }
        }
        if pulls.can_pull() {
            let request = consumer
                .batch()
                .max_messages(free.min(256))
                .expires(PULL_EXPIRES)
                .messages();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'pull,
                batch = request => match batch {
                    Ok(batch) => pulls.start(batch, PULL_EXPIRES),
                    Err(error) => {
                        tracing::warn!(stage = %stage.name(), %error, "pull request failed; NATS may be restarting");
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'pull,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'pull,
                        }
                    }
                },
            }
        }
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'pull,
                next = pulls.next() => next,
            };
            match next {
                None => break,
                Some(Err(error)) => {
                    tracing::debug!(stage = %stage.name(), %error, "pull batch ended early");
                    break;
                }
                Some(Ok(message)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break 'pull;
                    };
                    let handler = handler.clone();
                    let ctx = shared.clone();
                    tasks.spawn(async move {
                        let decoded = decode_message::<H>(&message, &ctx);
                        traced_process(&*handler, message, decoded, &ctx).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    let in_flight = tasks.len();
    tracing::info!(stage = %stage.name(), in_flight, "draining");
    let drain = Duration::from_millis(ctx.config.drain_timeout_ms);
    if tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(stage = %stage.name(), "drain deadline passed; unfinished events will be redelivered");
        tasks.abort_all();
    }
    // Plain acks are only queued in the client (docs/pitfalls.md 7).
    if let Err(error) = crate::io::nats::flush_queued(&ctx.nats).await {
        tracing::warn!(%error, "flushing acks on shutdown failed; some events will be redelivered");
    }
    tracing::info!(stage = %stage.name(), "worker stopped");
}

/// Publishes the consumer's backlog as gauges until `shutdown`: what is waiting for this
/// worker (all instances together: the numbers are the shared durable's).
pub(crate) async fn watch_pending(
    mut consumer: PullConsumer,
    health: super::health::Health,
    shutdown: tokio_util::sync::CancellationToken,
    every: Duration,
) {
    use async_nats::jetstream::context::ConsumerInfoErrorKind;
    let durable = consumer.cached_info().name.clone();
    loop {
        match consumer.info().await {
            Ok(info) => {
                health.consumer_found(&durable);
                metrics::gauge!(m::CONSUMER_PENDING, "durable" => durable.clone())
                    .set(info.num_pending as f64);
                metrics::gauge!(m::CONSUMER_ACK_PENDING, "durable" => durable.clone())
                    .set(info.num_ack_pending as f64);
            }
            // Deleted under a running worker: its pulls fail quietly from now on, and a
            // restart (which recreates it) is the fix, so say so on `/readyz`.
            Err(error)
                if matches!(
                    error.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                tracing::error!(%durable, %error, "consumer is gone; restart this worker to recreate it");
                health.consumer_missing(&durable);
            }
            Err(error) => tracing::debug!(%durable, %error, "reading consumer info failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// What settling one delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Acked or terminated: done with.
    Done,
    /// Nak'd (JetStream redelivers it after this delay), or its ack could not be sent
    /// (redelivered after `ack_wait`): it will come back.
    Deferred(Duration),
}

/// The event in a message, per its content type and the size limit.
pub(crate) fn decode_message<H: Handler>(
    message: &Message,
    ctx: &WorkerContext,
) -> Result<H::Event, DecodeError> {
    let content_type = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str().to_owned());
    decode::<H::Event>(
        &message.payload,
        Encoding::from_content_type(content_type.as_deref()),
        ctx.config.max_event_bytes,
    )
    .map_err(|mut error| {
        // An event whose id could not be read (oversize, undecodable bytes, an id of the
        // wrong type) is still answered by the id its publisher gave JetStream: the contract
        // has `Nats-Msg-Id` set to the event id.
        // (A dead letter replayed by the operator carries a fresh `replay:` id instead.)
        let headers = message.headers.as_ref();
        let replayed = headers.is_some_and(|h| h.get(dlq_headers::REPLAY_OF).is_some());
        if error.event_id.is_none() && !replayed {
            error.event_id = headers
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str())
                .filter(|id| threadline_schemas::check_id("Nats-Msg-Id", id).is_ok())
                .map(str::to_owned);
        }
        error
    })
}

/// [`process`] inside the span of this event, continuing the trace its headers carry.
pub(crate) async fn traced_process<H: Handler>(
    handler: &H,
    message: Message,
    decoded: Result<H::Event, DecodeError>,
    ctx: &WorkerContext,
) -> Settled {
    // The reply subject's metadata, parsed once for everything below.
    let delivery = match message.info() {
        Ok(info) => Delivery {
            attempt: info.delivered.max(1) as u32,
            stream_seq: info.stream_sequence,
            published_ms: (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
        },
        Err(_) => Delivery {
            attempt: 1,
            stream_seq: 0,
            published_ms: threadline_schemas::now_ms(),
        },
    };
    let cx = ctx.telemetry.event_context(
        &handler.stage(),
        &message.subject,
        message.headers.as_ref(),
        delivery.published_ms,
    );
    // Boxed: a future passed down is kept by value at every level (argument, then awaited),
    // so unboxed it would make each spawned task as large as the whole chain, copied whole.
    trace::Telemetry::run_in(
        cx,
        Box::pin(process(handler, message, delivery, decoded, ctx)),
    )
    .await
}

/// Where a message stands, from its JetStream metadata.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    /// 1 for the first delivery.
    attempt: u32,
    stream_seq: u64,
    /// When it was stored (Unix ms).
    published_ms: u64,
}

/// One delivery of one message, settled exactly once.
async fn process<H: Handler>(
    handler: &H,
    message: Message,
    delivery: Delivery,
    decoded: Result<H::Event, DecodeError>,
    ctx: &WorkerContext,
) -> Settled {
    let stage = handler.stage();
    let started = Instant::now();
    let stream_seq = delivery.stream_seq;
    let attempt = Attempt {
        number: delivery.attempt,
        max: ctx.config.max_attempts.max(1),
        published_ms: delivery.published_ms,
    };
    let (ack, outcome) = match decoded {
        Err(error) => {
            match Box::pin(reject_bad_input(&stage, &message, stream_seq, &error, ctx)).await {
                Ok(()) => (AckKind::Term, "dead_letter"),
                Err(publish_error) => {
                    tracing::warn!(stage = %stage.name(), %publish_error, "could not dead-letter bad input yet; will retry");
                    (AckKind::Nak(Some(Duration::from_secs(1))), "retry")
                }
            }
        }
        Ok(event) => {
            trace::set_event_id(event.event_id());
            let result = with_progress(&message, ctx.config.ack_wait(), async {
                // Boxed: a handler's future is large, and without the box every spawned
                // task's future would hold it inline, copied whole when spawned.
                Box::pin(handler.handle(&event, attempt)).await
            })
            .await;
            match result {
                Ok(()) => (AckKind::Ack, "ack"),
                Err(error) => {
                    Box::pin(settle_error(
                        handler, &event, error, attempt, &message, stream_seq, ctx,
                    ))
                    .await
                }
            }
        }
    };
    let settled = match ack {
        AckKind::Nak(delay) => Settled::Deferred(delay.unwrap_or_default()),
        AckKind::Ack | AckKind::Progress | AckKind::Next | AckKind::Term => Settled::Done,
    };
    let settled = match message.ack_with(ack).await {
        Ok(()) => settled,
        Err(error) => {
            tracing::warn!(stage = %stage.name(), %error, "ack failed; the event will be redelivered");
            Settled::Deferred(ctx.config.ack_wait())
        }
    };
    trace::set_outcome(outcome);
    let stage = stage.name();
    metrics::counter!(m::EVENTS, "stage" => stage.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!(m::HANDLE_SECONDS, "stage" => stage)
        .record(started.elapsed().as_secs_f64());
    settled
}

async fn settle_error<H: Handler>(
    handler: &H,
    event: &H::Event,
    error: WorkError,
    attempt: Attempt,
    message: &Message,
    stream_seq: u64,
    ctx: &WorkerContext,
) -> (AckKind, &'static str) {
    let stage = handler.stage();
    let config = &ctx.config;
    // The retry budget counts failures only; `attempt` from here on says how many.
    let attempt = match error.settle() {
        Settle::Retry(_) => Attempt {
            number: failures(&stage, event, attempt, ctx).await,
            ..attempt
        },
        Settle::Wait(_) | Settle::Reject | Settle::GiveUp => attempt,
    };
    match error.settle() {
        Settle::Wait(delay) => {
            tracing::debug!(stage = %stage.name(), event_id = event.event_id(), %error, "waiting");
            (AckKind::Nak(Some(delay)), "wait")
        }
        Settle::Retry(after) if attempt.number < attempt.max => {
            let delay = after.unwrap_or_else(|| {
                retry::delay_after(
                    attempt.number,
                    Duration::from_millis(config.retry_base_ms),
                    Duration::from_millis(config.retry_max_ms),
                )
            });
            tracing::warn!(stage = %stage.name(), event_id = event.event_id(), attempt = attempt.number, ?delay, %error, "retrying");
            (AckKind::Nak(Some(delay)), "retry")
        }
        Settle::Reject => {
            // For `Rejected` the message alone reads best; the code is in its own field.
            let text = match &error {
                WorkError::Rejected { message, .. } => message.clone(),
                WorkError::Nats(_)
                | WorkError::Redis(_)
                | WorkError::RateLimited { .. }
                | WorkError::Transient(_)
                | WorkError::NotYet { .. }
                | WorkError::Corrupt(_) => error.to_string(),
            };
            let code = error.code();
            let rejected = ctx.outbox.rejected(&stage, event.event_id(), code, &text);
            match ctx.publisher.send(rejected).await {
                Ok(()) => {
                    tracing::info!(stage = %stage.name(), event_id = event.event_id(), code, reason = %text, "event rejected");
                    (AckKind::Ack, "reject")
                }
                Err(publish_error) => {
                    tracing::warn!(stage = %stage.name(), %publish_error, "could not publish rejection; will retry");
                    (AckKind::Nak(Some(Duration::from_secs(1))), "retry")
                }
            }
        }
        Settle::Retry(_) | Settle::GiveUp => {
            let reported = match handler.give_up(event, &error, attempt).await {
                Ok(()) => {
                    dead_letter(
                        &stage,
                        message,
                        stream_seq,
                        error.code(),
                        &format!("given up after {} attempts: {error}", attempt.number),
                        attempt.number,
                        ctx,
                    )
                    .await
                }
                Err(report_error) => Err(report_error),
            };
            match reported {
                Ok(()) => {
                    tracing::error!(stage = %stage.name(), event_id = event.event_id(), attempts = attempt.number, %error, "event given up and dead-lettered");
                    (AckKind::Term, "dead_letter")
                }
                Err(report_error) => {
                    tracing::warn!(stage = %stage.name(), %report_error, "could not record give-up yet; will retry");
                    (AckKind::Nak(Some(Duration::from_secs(1))), "retry")
                }
            }
        }
    }
}

/// Failed attempts of this event at this stage, this one included. Waits (`NotYet`) do not
/// count, so an event that waited for a pending binding still has its whole retry budget.
/// Without Redis the count cannot be kept, and JetStream's delivery count (waits included)
/// stands in: never more attempts than that.
async fn failures<E: Versioned>(
    stage: &Stage,
    event: &E,
    attempt: Attempt,
    ctx: &WorkerContext,
) -> u32 {
    match ctx
        .store
        .count_failure(&stage.name(), event.event_id())
        .await
    {
        // Never above the delivery count: an event replayed from the dead letters (same
        // event id, new message) starts a fresh budget.
        Ok(count) => count.min(attempt.number),
        Err(error) => {
            tracing::debug!(%error, "cannot count the failure; using the delivery count");
            attempt.number
        }
    }
}

/// Runs `work`, telling JetStream we are still at it so a slow platform call is not
/// redelivered to another instance mid-flight.
async fn with_progress<T>(
    message: &Message,
    ack_wait: Duration,
    work: impl Future<Output = T>,
) -> T {
    let beat = (ack_wait / 3).max(Duration::from_millis(200));
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            result = &mut work => return result,
            _ = tokio::time::sleep(beat) => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(%error, "progress ack failed");
                }
            }
        }
    }
}

async fn reject_bad_input(
    stage: &Stage,
    message: &Message,
    stream_seq: u64,
    error: &DecodeError,
    ctx: &WorkerContext,
) -> Result<(), WorkError> {
    tracing::warn!(stage = %stage.name(), code = %error.code, reason = %error.message, event_id = ?error.event_id, "bad input dead-lettered");
    dead_letter(
        stage,
        message,
        stream_seq,
        error.code.as_str(),
        &error.message,
        1,
        ctx,
    )
    .await?;
    if let Some(event_id) = &error.event_id {
        let rejected = ctx
            .outbox
            .rejected(stage, event_id, error.code.as_str(), &error.message);
        ctx.publisher.send(rejected).await?;
    }
    Ok(())
}

/// Copies the original bytes (and content type) to `tl.dlq.<stage>` with the reason in
/// headers ([`super::outbox::Outbox::dead_letter`]).
async fn dead_letter(
    stage: &Stage,
    message: &Message,
    stream_seq: u64,
    code: &str,
    reason: &str,
    attempts: u32,
    ctx: &WorkerContext,
) -> Result<(), WorkError> {
    let out = ctx.outbox.dead_letter(DeadLetter {
        stage,
        subject: message.subject.as_str(),
        stream_seq,
        payload: message.payload.clone(),
        content_type: message
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .map(|v| v.as_str()),
        code,
        reason,
        attempts,
    });
    metrics::counter!(m::EVENTS, "stage" => stage.name(), "outcome" => "dead_lettered")
        .increment(1);
    ctx.publisher.send(out).await?;
    metrics::counter!(m::DEAD_LETTERS, "stage" => stage.name(), "code" => code.to_owned())
        .increment(1);
    Ok(())
}
