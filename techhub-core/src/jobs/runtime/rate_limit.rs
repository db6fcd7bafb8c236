//! A token bucket per queue: "at most N jobs a second, bursts of B", shared by the queue's workers.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A queue's start rate: at most `per_second` jobs a second on average, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Average jobs started per second.
    pub per_second: f64,
    /// How many may start back to back after a quiet spell (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// At most `per_second` jobs a second, with no burst beyond one.
    pub fn per_second(per_second: f64) -> Self {
        Self { per_second, burst: 1 }
    }

    /// Allows bursts of `burst`.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }
}

#[derive(Debug)]
pub(super) struct TokenBucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(super) fn new(limit: RateLimit) -> Self {
        let capacity = f64::from(limit.burst.max(1));
        Self { limit, state: Mutex::new((capacity, Instant::now())) }
    }

    /// Takes a token: `None` if one was free, else how long until one will be.
    pub(super) fn take(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        let capacity = f64::from(self.limit.burst.max(1));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.limit.per_second).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - *tokens) / self.limit.per_second))
        }
    }

    /// Gives back a token that was not used (the claim found no job).
    pub(super) fn refund(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = (state.0 + 1.0).min(f64::from(self.limit.burst.max(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_the_burst_then_the_rate() {
        let bucket = TokenBucket::new(RateLimit::per_second(10.0).burst(3));
        assert_eq!((bucket.take(), bucket.take(), bucket.take()), (None, None, None));
        let wait = bucket.take().expect("empty");
        assert!((Duration::from_millis(99)..=Duration::from_millis(101)).contains(&wait), "{wait:?}");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(bucket.take(), None);
        bucket.refund();
        assert_eq!(bucket.take(), None);
    }
}
