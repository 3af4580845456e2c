//! Retry pacing for redeliveries. The only module that touches the `backoff` crate (it is
//! unmaintained upstream), so swapping it out means changing this file alone. The delay is
//! handed to JetStream as `Nak(delay)`; nothing sleeps in-process.

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use std::time::Duration;

/// Delay before attempt `attempt + 1`, after `attempt` (1-based) failed attempts:
/// exponential from `base`, capped at `max`, with ±20 % jitter so replicas do not retry
/// in lockstep after a shared outage.
pub(crate) fn delay_after(attempt: u32, base: Duration, max: Duration) -> Duration {
    let mut policy = ExponentialBackoff {
        initial_interval: base,
        current_interval: base,
        randomization_factor: 0.2,
        multiplier: 2.0,
        max_interval: max,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    };
    let mut delay = base;
    for _ in 0..attempt.clamp(1, 32) {
        delay = policy.next_backoff().unwrap_or(max);
    }
    delay.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let first = delay_after(1, base, max);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        let fourth = delay_after(4, base, max);
        assert!(fourth >= Duration::from_millis(640), "{fourth:?}");
        let capped = delay_after(30, base, max);
        assert!(capped <= max && capped >= max.mul_f64(0.8), "{capped:?}");
    }
}
