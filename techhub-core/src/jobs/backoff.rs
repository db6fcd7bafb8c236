//! Retry delays: exponential, capped, with jitter so that jobs failing together do not retry together.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: attempt `n` waits about `base * 2^(n-1)`, never more than `cap`, scaled by a random
/// factor in `[1 - jitter, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failed attempt (before jitter).
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// How much of the delay is random, 0.0 (none) to 1.0 ("full jitter").
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(2), cap: Duration::from_secs(15 * 60), jitter: 0.5 }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let exponential = self.base.saturating_mul(1u32 << exponent.min(31)).min(self.cap);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return exponential;
        }
        let factor = 1.0 - rand::rng().random_range(0.0..=jitter);
        exponential.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(60), jitter: 0.0 };
        let delays: Vec<u64> = (1..=9).map(|attempt| backoff.delay(attempt).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let backoff = Backoff { base: Duration::from_secs(10), cap: Duration::from_secs(3600), jitter: 0.5 };
        for _ in 0..1_000 {
            let delay = backoff.delay(3);
            assert!((Duration::from_secs(20)..=Duration::from_secs(40)).contains(&delay), "{delay:?}");
        }
    }
}
