//! A queue's start rate and the token bucket that enforces it, kept by the store so that every process
//! sharing the store takes from one bucket.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A queue's start rate: at most `per_second` jobs a second on average, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

    /// How many tokens the bucket holds when full.
    fn capacity(&self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// The state of one queue's token bucket, as a store keeps it: the tokens left at `updated_at`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateBucket {
    /// Tokens left (fractional: the bucket refills continuously).
    pub tokens: f64,
    /// When `tokens` was computed.
    pub updated_at: DateTime<Utc>,
}

/// What a take from a queue's bucket granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStarts {
    /// How many jobs may start now (at most the number asked for).
    pub granted: u32,
    /// When fewer were granted than asked: how long until the next token is there.
    pub next_in: Option<Duration>,
}

impl RateBucket {
    /// A full bucket at `now` (a queue no one took from yet).
    pub fn full(limit: &RateLimit, now: DateTime<Utc>) -> Self {
        Self { tokens: limit.capacity(), updated_at: now }
    }

    /// Adds the tokens earned since `updated_at`, up to the capacity. A clock that moved back earns nothing
    /// (and the bucket keeps its later time, so the same interval is never earned twice).
    fn refill(&mut self, limit: &RateLimit, now: DateTime<Utc>) {
        if now <= self.updated_at {
            return;
        }
        let earned = (now - self.updated_at).to_std().unwrap_or_default().as_secs_f64() * limit.per_second;
        self.tokens = (self.tokens + earned).min(limit.capacity());
        self.updated_at = now;
    }

    /// Takes up to `want` whole tokens at `now`.
    pub fn take(&mut self, limit: &RateLimit, now: DateTime<Utc>, want: u32) -> QueueStarts {
        self.refill(limit, now);
        // Whole tokens only; `tokens` is at most the capacity (a u32), so the cast cannot overflow.
        let whole = self.tokens.max(0.0).floor() as u32;
        let granted = whole.min(want);
        self.tokens -= f64::from(granted);
        let next_in = (granted < want).then(|| {
            let missing = (1.0 - self.tokens).max(0.0);
            Duration::from_secs_f64(missing / limit.per_second)
        });
        QueueStarts { granted, next_in }
    }

    /// Gives back `count` tokens taken but not used, up to the capacity.
    pub fn give_back(&mut self, limit: &RateLimit, now: DateTime<Utc>, count: u32) {
        self.refill(limit, now);
        self.tokens = (self.tokens + f64::from(count)).min(limit.capacity());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_893_456_000_000 + millis).unwrap_or_default()
    }

    #[test]
    fn a_bucket_grants_its_burst_then_its_rate() {
        let limit = RateLimit::per_second(10.0).burst(3);
        let mut bucket = RateBucket::full(&limit, at(0));
        assert_eq!(bucket.take(&limit, at(0), 2).granted, 2);
        let short = bucket.take(&limit, at(0), 2);
        assert_eq!(short.granted, 1);
        let wait = short.next_in.expect("empty");
        assert!((Duration::from_millis(99)..=Duration::from_millis(101)).contains(&wait), "{wait:?}");
        assert_eq!(bucket.take(&limit, at(50), 1).granted, 0);
        assert_eq!(bucket.take(&limit, at(100), 1), QueueStarts { granted: 1, next_in: None });
        bucket.give_back(&limit, at(100), 1);
        assert_eq!(bucket.take(&limit, at(100), 1).granted, 1);
        // A long pause refills up to the burst, no further.
        assert_eq!(bucket.take(&limit, at(60_000), 10).granted, 3);
    }

    #[test]
    fn a_clock_moving_back_earns_nothing() {
        let limit = RateLimit::per_second(1.0);
        let mut bucket = RateBucket::full(&limit, at(10_000));
        assert_eq!(bucket.take(&limit, at(10_000), 1).granted, 1);
        assert_eq!(bucket.take(&limit, at(0), 1).granted, 0);
        assert_eq!(bucket.take(&limit, at(10_500), 1).granted, 0);
        assert_eq!(bucket.take(&limit, at(11_000), 1).granted, 1);
    }
}
