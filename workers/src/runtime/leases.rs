//! Work that one replica at a time may do: a Telegram poll, a Matrix sync, a Discord Gateway
//! shard. Each is a unit of a lease group, held through the same Redis leases as the
//! delivery lanes (`store::lanes`): the live replicas split a group's units evenly, a replica
//! that stops renewing loses its units after `listen_lease_ms`, and one that joins is handed
//! its share by the others giving units back. Each unit carries a cursor — where its last
//! holder got to — which only the current holder can move.

use super::WorkerContext;
use crate::error::WorkError;
use crate::store::Store;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One unit of a lease group, as its holder sees it.
#[derive(Clone)]
pub struct Held {
    group: Arc<str>,
    unit: u32,
    instance: Arc<str>,
    lost: CancellationToken,
    store: Store,
}

impl Held {
    /// Which unit (a shard number; 0 for groups of one).
    pub fn unit(&self) -> u32 {
        self.unit
    }

    /// Cancelled when this replica must stop working on the unit: its lease is lost or about
    /// to run out, another replica needs its share, or the process shuts down.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Where the unit's last holder got to, if it saved anything.
    pub async fn cursor(&self) -> Result<Option<String>, WorkError> {
        self.store.cursor(&self.group, self.unit).await
    }

    /// Saves where this holder got to. Fails (without writing) once the unit is no longer
    /// this replica's, so a holder that lost its lease cannot move the next one back; the
    /// work is then cancelled too.
    pub async fn save_cursor(&self, value: &str) -> Result<(), WorkError> {
        if self
            .store
            .save_cursor(&self.group, self.unit, &self.instance, value)
            .await?
        {
            return Ok(());
        }
        self.lost.cancel();
        Err(WorkError::NotYet {
            reason: format!(
                "unit {} of {} is no longer held here",
                self.unit, self.group
            ),
            after: Duration::ZERO,
        })
    }
}

/// A unit this replica works on.
struct Running {
    lost: CancellationToken,
    task: JoinHandle<()>,
    /// Work on it no later than this: the lease, less a margin for clock differences.
    valid_until: Instant,
}

/// Runs `work` for every unit of `group` (`units` of them) this replica holds, for as long as
/// it holds it, until shutdown; then waits for every `work` to return and gives the units
/// back, so another replica takes them over at once. `work` must return soon after
/// [`Held::lost`] is cancelled; a `work` that returns on its own is started again after the
/// next renewal while the unit is still held here.
pub async fn hold<F, Fut>(ctx: WorkerContext, group: String, units: u32, work: F)
where
    F: Fn(Held) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let instance: Arc<str> = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
    .into();
    let group_name: Arc<str> = group.as_str().into();
    let lease_ms = ctx.config.listen_lease_ms.max(300);
    let every = Duration::from_millis(lease_ms / 3);
    // Leases are compared against the clocks of other hosts: stop well before ours ends.
    let usable = Duration::from_millis(lease_ms - lease_ms / 4);
    let mut running: BTreeMap<u32, Running> = BTreeMap::new();
    tracing::info!(%group, %instance, units, "lease holder started");
    while !ctx.shutdown.is_cancelled() {
        let sent = Instant::now();
        match ctx
            .store
            .lane_heartbeat(&group, &instance, units, lease_ms, false)
            .await
        {
            Ok(share) => {
                // The highest-numbered units beyond the share go back to the replicas that
                // have fewer.
                let keep: Vec<u32> = share.lanes.keys().copied().take(share.share).collect();
                let give_back: Vec<u32> = share.lanes.keys().copied().skip(share.share).collect();
                for unit in &give_back {
                    if let Some(done) = running.remove(unit) {
                        stop(done).await;
                    }
                    release(&ctx.store, &group, &instance, *unit).await;
                }
                for (unit, held) in running.iter_mut() {
                    if keep.contains(unit) {
                        held.valid_until = sent + usable;
                    }
                }
                for unit in keep {
                    let restart = running
                        .get(&unit)
                        .is_some_and(|r| r.task.is_finished() && !r.lost.is_cancelled());
                    if restart {
                        running.remove(&unit);
                    }
                    if running.contains_key(&unit) {
                        continue;
                    }
                    let lost = ctx.shutdown.child_token();
                    let held = Held {
                        group: group_name.clone(),
                        unit,
                        instance: instance.clone(),
                        lost: lost.clone(),
                        store: ctx.store.clone(),
                    };
                    tracing::info!(%group, unit, "unit taken");
                    running.insert(
                        unit,
                        Running {
                            lost,
                            task: tokio::spawn(work(held)),
                            valid_until: sent + usable,
                        },
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%group, %error, "lease renewal failed; work stops before the leases run out");
            }
        }
        // Units lost to another replica (they vanished from the answer and were not renewed),
        // or whose lease may run out before the next renewal lands.
        let next = sent + every;
        loop {
            let now = Instant::now();
            let expired: Vec<u32> = running
                .iter()
                .filter(|(_, r)| r.valid_until <= now || r.lost.is_cancelled())
                .map(|(unit, _)| *unit)
                .collect();
            for unit in expired {
                if let Some(done) = running.remove(&unit) {
                    tracing::warn!(%group, unit, "unit no longer held here; its work stops");
                    stop(done).await;
                }
            }
            let wake = running
                .values()
                .map(|r| r.valid_until)
                .fold(next, Instant::min);
            if wake >= next {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(next) => break,
                }
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
    for (unit, done) in std::mem::take(&mut running) {
        stop(done).await;
        release(&ctx.store, &group, &instance, unit).await;
    }
    // Leaving: the other replicas stop counting this one at once.
    if let Err(error) = ctx
        .store
        .lane_heartbeat(&group, &instance, units, lease_ms, true)
        .await
    {
        tracing::warn!(%group, %error, "could not leave the lease group; it forgets this replica when its heartbeat runs out");
    }
    tracing::info!(%group, %instance, "lease holder stopped");
}

/// Stops a unit's work and waits for it.
async fn stop(done: Running) {
    done.lost.cancel();
    if let Err(error) = done.task.await {
        tracing::error!(%error, "a leased unit's work panicked");
    }
}

/// Gives a unit back (only if it is still ours).
async fn release(store: &Store, group: &str, instance: &str, unit: u32) {
    match store.release_lane(group, instance, unit).await {
        Ok(_) => tracing::info!(%group, unit, "unit given back"),
        Err(error) => {
            tracing::warn!(%group, unit, %error, "could not give the unit back; it frees up when its lease runs out")
        }
    }
}
