//! Coalesces the `last_activity_at` refreshes of busy bindings.
//!
//! Every successful post to a bound conversation refreshes its binding's activity time
//! (docs/design.md §3 "Bindings"); a thread that receives many posts a second would pay a store write
//! for each, for a time nobody needs finer than `touch_interval_ms`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bindings this instance refreshed lately. Past this many, stale entries are dropped
/// before a new one is added, so the map stays small however many bindings pass through.
const REMEMBERED: usize = 4_096;

/// Which bindings this instance refreshed lately, so a busy binding is touched at most once per interval.
pub(crate) struct TouchCoalescer {
    interval: Duration,
    refreshed: Mutex<HashMap<String, Instant>>,
}

impl TouchCoalescer {
    /// Coalesces touches of one binding to one per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        TouchCoalescer {
            interval,
            refreshed: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a post at `now` should refresh `binding_id`; when it should, the refresh is
    /// remembered as done (call [`forget`](Self::forget) if it fails).
    pub(crate) fn due(&self, binding_id: &str, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let Ok(mut refreshed) = self.refreshed.lock() else {
            return true;
        };
        let recent = |at: &Instant| now.saturating_duration_since(*at) < self.interval;
        if refreshed.get(binding_id).is_some_and(recent) {
            return false;
        }
        if refreshed.len() >= REMEMBERED {
            refreshed.retain(|_, at| recent(at));
        }
        refreshed.insert(binding_id.to_owned(), now);
        true
    }

    /// A refresh that did not happen: the next post refreshes.
    pub(crate) fn forget(&self, binding_id: &str) {
        if let Ok(mut refreshed) = self.refreshed.lock() {
            refreshed.remove(binding_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_binding_is_refreshed_once_per_interval() {
        let touch = TouchCoalescer::new(SECOND);
        let t0 = Instant::now();
        assert!(touch.due("b1", t0));
        assert!(!touch.due("b1", t0 + SECOND / 2));
        assert!(
            touch.due("b2", t0 + SECOND / 2),
            "other bindings are independent"
        );
        assert!(touch.due("b1", t0 + SECOND));
        assert!(!touch.due("b1", t0 + SECOND + SECOND / 2));
    }

    #[test]
    fn a_failed_refresh_is_retried_by_the_next_post() {
        let touch = TouchCoalescer::new(SECOND);
        let t0 = Instant::now();
        assert!(touch.due("b1", t0));
        touch.forget("b1");
        assert!(touch.due("b1", t0 + Duration::from_millis(1)));
    }

    #[test]
    fn zero_refreshes_on_every_post() {
        let touch = TouchCoalescer::new(Duration::ZERO);
        let t0 = Instant::now();
        assert!(touch.due("b1", t0));
        assert!(touch.due("b1", t0));
    }

    #[test]
    fn stale_entries_are_dropped_rather_than_grown_past_the_bound() {
        let touch = TouchCoalescer::new(SECOND);
        let t0 = Instant::now();
        for n in 0..REMEMBERED {
            assert!(touch.due(&format!("old-{n}"), t0));
        }
        assert!(touch.due("new", t0 + 2 * SECOND));
        assert_eq!(touch.refreshed.lock().unwrap().len(), 1);
        assert!(!touch.due("new", t0 + 2 * SECOND));
    }
}
