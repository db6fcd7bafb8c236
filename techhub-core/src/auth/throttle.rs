//! In-memory throttles of the auth service: failed sign-ins per attempted address (known or not), and mails
//! per account.
//!
//! Failed sign-ins are counted by the address that was tried, whether an account has it or not, so that
//! after the same number of failures a known and an unknown address answer alike (no account probing). The
//! stored per-account counter is still kept (it survives restarts and is shared by several servers); this
//! table only makes unknown addresses behave like known ones.
//!
//! Both tables are bounded: idle entries are forgotten, and when full the entry idle longest goes.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::clock;
use crate::config::AuthConfig;

/// The most addresses (or accounts) a table tracks at once.
const MAX_ENTRIES: usize = 100_000;
/// How long an address's failures are remembered after the last one.
const FORGET_FAILURES_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// When a lockout of `failures` failures, the last at `last_failure`, ends (`None`: not locked). Shared by
/// the stored per-account counter and the per-address table so that both answer alike.
pub(crate) fn lockout_end(
    config: &AuthConfig,
    failures: u32,
    last_failure: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let over = failures.checked_sub(config.lockout_threshold)?;
    let window = config.lockout_base.saturating_mul(1u32 << over.min(20)).min(config.lockout_cap);
    last_failure.map(|at| clock::add(at, window))
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: DateTime<Utc>,
}

/// Failed sign-ins per attempted address.
#[derive(Debug, Default)]
pub(crate) struct SignInThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

impl SignInThrottle {
    /// When the lockout of `address` ends, if it is locked at `now`. An address this table does not know
    /// (first attempt, or forgotten since a restart) starts from `stored`: the account's stored count and
    /// last failure, if an account has the address.
    pub(crate) fn locked_until(
        &self,
        config: &AuthConfig,
        address: &str,
        stored: Option<(u32, Option<DateTime<Utc>>)>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, last) = match failures.get(address) {
            Some(entry) => (entry.count, Some(entry.last)),
            None => stored.unwrap_or((0, None)),
        };
        lockout_end(config, count, last).filter(|end| now < *end)
    }

    /// Counts a failure of `address` at `now` (an unknown address starting from `stored_count`); returns the
    /// new count.
    pub(crate) fn record_failure(&self, address: &str, stored_count: u32, now: DateTime<Utc>) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if !failures.contains_key(address) && failures.len() >= MAX_ENTRIES {
            let horizon = now - FORGET_FAILURES_AFTER;
            failures.retain(|_, entry| entry.last > horizon);
            if failures.len() >= MAX_ENTRIES
                && let Some(oldest) = failures.iter().min_by_key(|(_, entry)| entry.last).map(|(key, _)| key.clone())
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(address.to_owned()).or_insert(Failures { count: stored_count, last: now });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.count
    }

    /// Resets the failures of `address` to none (after a successful sign-in). The entry stays, so a stored
    /// count written late by a background task is not read back.
    pub(crate) fn clear(&self, address: &str, now: DateTime<Utc>) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = failures.get_mut(address) {
            *entry = Failures { count: 0, last: now };
        }
    }
}

/// Mails sent to one account within the last minute and the last day.
#[derive(Debug, Default)]
pub(crate) struct MailThrottle {
    sent: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
}

/// The most mails of one kind an account gets per minute.
pub(crate) const MAILS_PER_MINUTE: usize = 1;
/// The most mails of one kind an account gets per day.
pub(crate) const MAILS_PER_DAY: usize = 10;

impl MailThrottle {
    /// Whether `key` (an account and a kind of mail) may be sent one more mail at `now`; if so, counts it.
    pub(crate) fn allow(&self, key: &str, now: DateTime<Utc>) -> bool {
        let day_ago = now - chrono::TimeDelta::days(1);
        let minute_ago = now - chrono::TimeDelta::minutes(1);
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        if !sent.contains_key(key) && sent.len() >= MAX_ENTRIES {
            sent.retain(|_, times| times.iter().any(|at| *at > day_ago));
            if sent.len() >= MAX_ENTRIES
                && let Some(oldest) =
                    sent.iter().min_by_key(|(_, times)| times.last().copied()).map(|(key, _)| key.clone())
            {
                sent.remove(&oldest);
            }
        }
        let times = sent.entry(key.to_owned()).or_default();
        times.retain(|at| *at > day_ago);
        let last_minute = times.iter().filter(|at| **at > minute_ago).count();
        if last_minute >= MAILS_PER_MINUTE || times.len() >= MAILS_PER_DAY {
            return false;
        }
        times.push(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mails_are_limited_per_minute_and_per_day() {
        let throttle = MailThrottle::default();
        let start = DateTime::<Utc>::UNIX_EPOCH;
        assert!(throttle.allow("reset:a", start));
        assert!(!throttle.allow("reset:a", start + chrono::TimeDelta::seconds(59)));
        assert!(throttle.allow("reset:b", start), "another account has its own budget");
        let mut at = start;
        for _ in 1..MAILS_PER_DAY {
            at += chrono::TimeDelta::seconds(61);
            assert!(throttle.allow("reset:a", at));
        }
        at += chrono::TimeDelta::seconds(61);
        assert!(!throttle.allow("reset:a", at), "the eleventh in a day");
        assert!(throttle.allow("reset:a", start + chrono::TimeDelta::days(1) + chrono::TimeDelta::seconds(1)));
    }

    #[test]
    fn failures_lock_an_address_known_or_not() {
        let config = AuthConfig::default();
        let throttle = SignInThrottle::default();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        for _ in 0..config.lockout_threshold {
            assert!(throttle.locked_until(&config, "x@example.com", None, now).is_none());
            throttle.record_failure("x@example.com", 0, now);
        }
        assert!(throttle.locked_until(&config, "x@example.com", None, now).is_some());
        assert!(throttle.locked_until(&config, "y@example.com", None, now).is_none());
        let stored = Some((config.lockout_threshold, Some(now)));
        assert!(throttle.locked_until(&config, "y@example.com", stored, now).is_some(), "seeded from storage");
        throttle.clear("x@example.com", now);
        assert!(throttle.locked_until(&config, "x@example.com", stored, now).is_none(), "known: storage not read");
    }
}
