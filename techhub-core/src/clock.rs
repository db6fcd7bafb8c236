//! Time, injected: every expiry, lease, backoff and timestamp in TechHub comes from a [`Clock`].
//!
//! Production code uses [`SystemClock`]; tests use [`ManualClock`] and move time forward by hand instead of
//! sleeping, so time-dependent logic is tested exactly and fast.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};

/// A source of the current time.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time, in UTC, with microsecond precision (so it round-trips through every store).
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }
}

/// A clock that stands still until a test moves it. Clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock showing `start` (truncated to microseconds).
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(truncate_to_micros(start))) }
    }

    /// A clock showing 2030-01-01T00:00:00Z, a fixed point that keeps test output stable.
    pub fn at_epoch() -> Self {
        // 2030-01-01T00:00:00Z as Unix seconds; a constant in range, so the conversion cannot fail.
        Self::new(DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = add(*now, by);
    }

    /// Sets the clock to `to` (which may be earlier: tests of clock skew need that).
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = truncate_to_micros(to);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::at_epoch()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `at + by`, saturating at the end of representable time instead of panicking.
pub fn add(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(by).ok().and_then(|delta| at.checked_add_signed(delta)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at - by`, saturating at the start of representable time instead of panicking.
pub fn sub(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(by).ok().and_then(|delta| at.checked_sub_signed(delta)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Drops the nanoseconds below a microsecond (what every store keeps). Through the sub-second field alone:
/// `duration_trunc` goes through a general rounding path that cost about a thousand instructions a call, and
/// the clock is read several times per job.
fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = at.nanosecond();
    at.with_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_whole_microseconds_only() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("a valid time");
        assert_eq!(truncate_to_micros(at), DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("valid"));
        let now = SystemClock.now();
        assert_eq!(now.nanosecond() % 1_000, 0);
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = ManualClock::at_epoch();
        let twin = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        twin.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - start, TimeDelta::seconds(90));
    }

    #[test]
    fn system_clock_has_microsecond_precision() {
        assert_eq!(SystemClock.now().timestamp_subsec_nanos() % 1_000, 0);
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(add(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)), DateTime::<Utc>::MAX_UTC);
        assert_eq!(sub(DateTime::<Utc>::MIN_UTC, Duration::from_secs(1)), DateTime::<Utc>::MIN_UTC);
    }
}
