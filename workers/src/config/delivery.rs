//! How events are handled and posted: delivery lanes, attempts and their timeouts, and what
//! to do when a post's outcome is unknown.

use super::Config;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Lanes per channel of a new deployment. Each busy lane is a consumer nats-server serves on
/// its own, so every lane more costs it more per post; four instances posting for one
/// channel at once is already past what any platform lets one bot post.
pub const DEFAULT_DELIVERY_PARTITIONS: u32 = 4;

/// What to do with a post whose earlier attempt may have landed, on a platform that offers
/// neither an idempotency key nor a way to read recent messages (Telegram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownOutcome {
    /// Post again: a possible duplicate rather than a possible loss.
    #[default]
    Repost,
    /// Do not post again: a possible loss rather than a possible duplicate.
    Skip,
}

impl Config {
    /// Delivery lanes per channel: `delivery_partitions`, or [`DEFAULT_DELIVERY_PARTITIONS`]
    /// when unset, and at least one. A worker resolves an unset count to the deployment's
    /// recorded one before it uses it (`WorkerContext::connect_with`), as `doctor` does.
    pub fn lanes(&self) -> u32 {
        self.delivery_partitions
            .unwrap_or(DEFAULT_DELIVERY_PARTITIONS)
            .max(1)
    }

    /// `ack_wait_ms`: how long JetStream waits for an ack before redelivering.
    pub(crate) fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
    /// `http_timeout_ms`: the limit of one platform call.
    pub(crate) fn http_timeout(&self) -> Duration {
        Duration::from_millis(self.http_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_count_in_the_file_is_kept_as_set() {
        let dir = crate::config::scratch_dir("lanes");
        let file = dir.join("t.toml");
        std::fs::write(&file, "delivery_partitions = 16\n").expect("write");
        let c = Config::load(Some(&file)).expect("loads");
        assert_eq!((c.delivery_partitions, c.lanes()), (Some(16), 16));
        // `threadline config` says what an unset count means rather than `None`.
        assert!(format!("{c:?}").contains("delivery_partitions: 16,"));
        let unset = format!("{:?}", Config::default());
        assert!(
            unset.contains("delivery_partitions: unset (the deployment's recorded count; a new deployment gets 4)"),
            "{unset}"
        );
        std::fs::write(&file, "delivery_partitions = 0\n").expect("write");
        assert_eq!(Config::load(Some(&file)).expect("loads").lanes(), 1);
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
