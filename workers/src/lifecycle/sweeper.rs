//! The sweeper: ends expired bindings. Every binder instance runs one; each due binding is
//! taken by one sweeper at a time (a lease on the shared work list), and ending goes through
//! `ending`, so several sweepers at once still post exactly one farewell.

use crate::error::WorkError;
use crate::model::bindings::{expiry, next_check, Farewell};
use crate::runtime::ending::end_binding;
use crate::runtime::WorkerContext;
use crate::store::DueEntry;
use std::time::Duration;
use threadline_schemas::{now_ms, BindingStatus};

/// How many due bindings one pass takes.
const BATCH: usize = 256;

/// Sweeps every `sweep_interval_ms` until shutdown.
pub(crate) async fn run(ctx: WorkerContext) {
    let interval = Duration::from_millis(ctx.config.sweep_interval_ms.max(10));
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        loop {
            match sweep_once(&ctx).await {
                Ok(n) if n == BATCH => continue, // more may be due
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "sweep failed; the bindings stay due and are retried");
                    break;
                }
            }
        }
    }
}

/// One pass: ends what is expired, reschedules what is not. Returns how many it took.
pub(crate) async fn sweep_once(ctx: &WorkerContext) -> Result<usize, WorkError> {
    let store = &ctx.store;
    let now = now_ms();
    // A lease longer than one pass: a sweeper that dies mid-pass frees its share after it.
    let lease = (ctx.config.sweep_interval_ms * 4).max(5_000);
    let due = store.claim_due_sweeps(now, lease, BATCH).await?;
    for entry in &due {
        let (session_key, binding_id) = match entry {
            DueEntry::Binding {
                session_key,
                binding_id,
            } => (session_key, binding_id),
            DueEntry::Session { session_key } => {
                // A finished session's `ended_ttl_ms` passed: delete it (or look again).
                match store.expire_session(session_key).await? {
                    Some(due) => store.schedule_session_expiry(session_key, due).await?,
                    None => store.unschedule_session_expiry(session_key).await?,
                }
                continue;
            }
        };
        let binding = store
            .load_session(session_key)
            .await?
            .and_then(|s| s.bindings.into_iter().find(|b| &b.binding_id == binding_id));
        match binding {
            Some(b) if b.status == BindingStatus::Ending => {
                // A crashed pass began it; finish (the farewell is deduplicated).
                let why = b.end_reason.clone().unwrap_or_else(|| "expired".into());
                end_binding(ctx, session_key, binding_id, &why, Farewell::InConversation).await?;
            }
            Some(b) if b.status == BindingStatus::Active => match expiry(&b, now) {
                Some(why) => {
                    end_binding(ctx, session_key, binding_id, why, Farewell::InConversation)
                        .await?;
                }
                // Touched since it was scheduled: check again when it could next expire.
                None => {
                    store
                        .schedule_sweep(session_key, binding_id, next_check(&b))
                        .await?
                }
            },
            // Not active yet: its owner link stays, without expiry checks.
            Some(b) if b.status == BindingStatus::Pending => {
                store
                    .schedule_sweep(session_key, binding_id, u64::MAX)
                    .await?
            }
            // Ended `ended_ttl_ms` ago (see `end_binding`), or gone: drop its owner link.
            Some(_) | None => store.unschedule_sweep(session_key, binding_id).await?,
        }
    }
    Ok(due.len())
}
