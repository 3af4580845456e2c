//! Who owns which delivery lane: leases in Redis, one hash per lane group (a channel), so
//! the whole assignment is one script in one slot.
//!
//! Every instance of a deliverer heartbeats its group. The live instances split the lanes
//! evenly (each owns at most `ceil(lanes / live)`); an instance takes free lanes — never
//! released or left by a crashed owner whose lease ran out — up to its share, and gives back
//! lanes above its share itself, after draining them (`release_lane`), so a lane is never
//! pulled by two instances that both believe they own it while their leases are valid.

use super::{flag, Store, UnknownAnswer};
use crate::error::WorkError;
use redis::{AsyncCommands, ExistenceCheck, Script, SetOptions};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Heartbeat of one instance in one lane group. KEYS: the owners hash (`o:<lane>` →
/// `<instance>|<lease expiry ms>`), the live-instance zset (instance → expiry).
/// ARGV: instance, now ms, lease ms, lanes, leaving (`1` on shutdown: share 0).
/// → {share, {lane, previous expiry, …}}: every lane this instance owns after the call, with
/// the expiry of the lease it replaced: 0 when it was free (released, never owned),
/// `-1` when this instance already held it, else the crashed owner's lapsed expiry.
///
/// Safe to run twice: the second run finds the lanes owned (`-1`), which the caller treats
/// like a takeover it cannot date (see `runtime::lanes`).
static HEARTBEAT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/lane_heartbeat.lua")));

/// Gives a lane back if this instance still owns it. ARGV: lane, instance. → 1 | 0.
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/lane_release.lua")));

/// How this instance came to hold a lane, as of one heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Held before this heartbeat (or a re-sent heartbeat took it: treat as [`Lapsed`]).
    Renewed,
    /// Was free: released cleanly by its last owner, or never owned.
    Free,
    /// Taken from an owner whose lease ran out at this time (Unix ms): it may have died with
    /// posts in flight, which JetStream redelivers only after `ack_wait`.
    ///
    /// [`Lapsed`]: Holding::Lapsed
    Lapsed(u64),
}

/// One heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneShare {
    /// Lanes this instance should own at most.
    pub share: usize,
    /// Every lane this instance owns after the heartbeat, and how it came to hold it.
    pub lanes: BTreeMap<u32, Holding>,
}

impl Holding {
    /// `HEARTBEAT`'s answer for one lane: the expiry of the lease it replaced.
    fn parse(replaced: i64) -> Result<Self, UnknownAnswer> {
        match replaced {
            -1 => Ok(Holding::Renewed),
            0 => Ok(Holding::Free),
            expiry if expiry > 0 => Ok(Holding::Lapsed(expiry as u64)),
            other => Err(UnknownAnswer::new("HEARTBEAT", other)),
        }
    }
}

impl Store {
    /// Records `lanes` as the deployment's lane count unless one is recorded already, and
    /// returns the recorded count (`lanes` itself when this call recorded it). One `SET … NX
    /// GET`: workers starting together agree on whichever got there first.
    pub(crate) async fn record_lane_count(&self, lanes: u32) -> Result<u32, WorkError> {
        let recorded: Option<u32> = self
            .conn
            .clone()
            .set_options(
                self.keys.lane_count(),
                lanes,
                SetOptions::default()
                    .conditional_set(ExistenceCheck::NX)
                    .get(true),
            )
            .await?;
        Ok(recorded.unwrap_or(lanes))
    }

    /// The deployment's recorded lane count, if a worker has started (for the operator).
    pub(crate) async fn recorded_lane_count(&self) -> Result<Option<u32>, WorkError> {
        Ok(self.conn.clone().get(self.keys.lane_count()).await?)
    }

    /// Heartbeats `instance` in lane group `group` and takes free lanes up to its share.
    /// `leaving`: the instance is shutting down (its share becomes 0; it still holds what it
    /// has until it releases each lane).
    pub async fn lane_heartbeat(
        &self,
        group: &str,
        instance: &str,
        lanes: u32,
        lease_ms: u64,
        leaving: bool,
    ) -> Result<LaneShare, WorkError> {
        let (share, flat): (i64, Vec<i64>) = HEARTBEAT
            .key(self.keys.lane_owners(group))
            .key(self.keys.lane_instances(group))
            .arg(instance)
            .arg(threadline_schemas::now_ms())
            .arg(lease_ms)
            .arg(lanes)
            .arg(if leaving { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        let lanes = flat
            .chunks_exact(2)
            .map(|pair| {
                let lane = u32::try_from(pair[0])
                    .map_err(|_| UnknownAnswer::new("HEARTBEAT", format!("lane {}", pair[0])))?;
                Ok((lane, Holding::parse(pair[1])?))
            })
            .collect::<Result<_, UnknownAnswer>>()?;
        Ok(LaneShare {
            share: share.max(0) as usize,
            lanes,
        })
    }

    /// Gives `lane` back (after its posts in flight are settled). `true` when it was held.
    pub(crate) async fn release_lane(
        &self,
        group: &str,
        instance: &str,
        lane: u32,
    ) -> Result<bool, WorkError> {
        let released: i64 = RELEASE
            .key(self.keys.lane_owners(group))
            .arg(lane)
            .arg(instance)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(flag("RELEASE", released)?)
    }

    /// Current owners of a group's lanes whose leases have not lapsed (lane → instance),
    /// for the operator.
    pub async fn lane_owners(&self, group: &str) -> Result<BTreeMap<u32, String>, WorkError> {
        let fields: BTreeMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.lane_owners(group))
            .await?;
        let now = threadline_schemas::now_ms();
        Ok(fields
            .into_iter()
            .filter_map(|(field, value)| {
                let lane = field.strip_prefix("o:")?.parse().ok()?;
                let (owner, until) = value.split_once('|')?;
                let live = until.parse::<u64>().is_ok_and(|until| until > now);
                live.then(|| (lane, owner.to_owned()))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_answers_tell_renewed_free_and_lapsed_lanes_and_refuse_others() {
        assert_eq!(Holding::parse(-1).unwrap(), Holding::Renewed);
        assert_eq!(Holding::parse(0).unwrap(), Holding::Free);
        assert_eq!(Holding::parse(1_700).unwrap(), Holding::Lapsed(1_700));
        assert!(Holding::parse(-2).is_err());
    }
}
