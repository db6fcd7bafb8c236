//! Key layouts of the index trees.
//!
//! Keys are built so that user input cannot forge one: every part is fixed-width (16-byte ids, 32-byte token
//! hashes, 8-byte times and 4-byte priorities, big-endian with the sign bit flipped so byte order is value
//! order) except at most one name (a queue or project), which comes first behind a 2-byte length. A name can
//! therefore never reach into the parts after it, and a scan of one queue's prefix never sees another queue's
//! keys (with plain concatenation, queue `a`'s prefix would also match every key of queue `ab`). Trees keyed by a
//! name alone (emails, unique keys, per-queue counters) use the name as the whole key, which is unambiguous.

use chrono::{DateTime, Utc};
use sled::IVec;
use techhub_core::model::{JobId, JobState, TokenHash};
use uuid::Uuid;

use crate::codec::corrupt;
use techhub_core::storage::StoreResult;

/// An id's width in a key.
pub(crate) const ID: usize = 16;
/// A time's width in a key.
pub(crate) const TIME: usize = 8;
const PRIORITY: usize = 4;
const SIGN: u64 = 1 << 63;

/// A time as 8 bytes whose byte order is time order.
pub(crate) fn time(at: DateTime<Utc>) -> [u8; TIME] {
    ((at.timestamp_micros() as u64) ^ SIGN).to_be_bytes()
}

fn time_from(bytes: &[u8]) -> StoreResult<DateTime<Utc>> {
    let bytes: [u8; TIME] = bytes.try_into().map_err(|_| corrupt("a key's time is cut short"))?;
    let micros = (u64::from_be_bytes(bytes) ^ SIGN) as i64;
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("a key's time is out of range"))
}

fn priority_ascending(priority: i32) -> u32 {
    (priority as u32) ^ (SIGN >> 32) as u32
}

/// A priority as 4 bytes whose byte order is *descending* priority: claims take the highest first.
fn priority_descending(priority: i32) -> [u8; PRIORITY] {
    (!priority_ascending(priority)).to_be_bytes()
}

/// A priority as stored beside a delayed job (plain big-endian).
pub(crate) fn priority_value(priority: i32) -> [u8; PRIORITY] {
    priority.to_be_bytes()
}

pub(crate) fn priority_from_value(bytes: &[u8]) -> StoreResult<i32> {
    Ok(i32::from_be_bytes(bytes.try_into().map_err(|_| corrupt("a stored priority is not 4 bytes"))?))
}

fn id_from(bytes: &[u8]) -> StoreResult<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| corrupt("a key's id is not 16 bytes"))
}

/// The length-prefixed form of a name that leads a composite key; `None` if the name does not fit the prefix.
fn named(name: &str, tail: usize) -> Option<Vec<u8>> {
    let length = u16::try_from(name.len()).ok()?;
    let mut key = Vec::with_capacity(2 + name.len() + tail);
    key.extend_from_slice(&length.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    Some(key)
}

fn joined(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + parts.iter().map(|part| part.len()).sum::<usize>());
    key.extend_from_slice(prefix);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// [`joined`] built on the stack and copied once into its `IVec` (inline up to 22 bytes): the index keys every
/// job transition writes, spared a `Vec` each.
fn index_key(prefix: &[u8], parts: &[&[u8]]) -> IVec {
    let mut buffer = [0u8; 128];
    let length = prefix.len() + parts.iter().map(|part| part.len()).sum::<usize>();
    let Some(key) = buffer.get_mut(..length) else { return joined(prefix, parts).into() };
    let (head, mut rest) = key.split_at_mut(prefix.len());
    head.copy_from_slice(prefix);
    for part in parts {
        let (this, after) = rest.split_at_mut(part.len());
        this.copy_from_slice(part);
        rest = after;
    }
    IVec::from(&*key)
}

/// The keys of one queue in the ready and delayed indexes.
///
/// - ready: `queue · priority (descending) · run_at · id` → nothing, so the queue's first key is the job to
///   claim next (the claim order is priority, then `run_at`, then id).
/// - delayed: `queue · run_at · id` → priority, so due jobs are a prefix in `run_at` order.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    prefix: Vec<u8>,
}

/// A decoded ready key. Its order (priority key, then `run_at`, then id) is the claim order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReadyEntry {
    pub(crate) priority_key: [u8; PRIORITY],
    pub(crate) run_at: DateTime<Utc>,
    pub(crate) id: JobId,
}

/// A decoded delayed key and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DelayedEntry {
    pub(crate) run_at: DateTime<Utc>,
    pub(crate) id: JobId,
}

impl QueueKeys {
    /// The keys of `queue`; `None` for a name longer than 65,535 bytes (no such queue can exist).
    pub(crate) fn new(queue: &str) -> Option<Self> {
        named(queue, 0).map(|prefix| Self { prefix })
    }

    /// The prefix every key of this queue starts with.
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    pub(crate) fn ready(&self, priority: i32, run_at: DateTime<Utc>, id: JobId) -> IVec {
        index_key(&self.prefix, &[&priority_descending(priority), &time(run_at), id.as_bytes()])
    }

    /// The first key of the priority level after the one `priority_key` encodes, or `None` after the lowest.
    pub(crate) fn next_level(&self, priority_key: [u8; PRIORITY]) -> Option<Vec<u8>> {
        let next = u32::from_be_bytes(priority_key).checked_add(1)?;
        Some(joined(&self.prefix, &[&next.to_be_bytes()]))
    }

    pub(crate) fn delayed(&self, run_at: DateTime<Utc>, id: JobId) -> IVec {
        index_key(&self.prefix, &[&time(run_at), id.as_bytes()])
    }

    /// The key after which delayed jobs are not due at `now` (the delayed keys below it are due).
    pub(crate) fn delayed_due_end(&self, now: DateTime<Utc>) -> Vec<u8> {
        joined(&self.prefix, &[&time(now), &[0xff; ID]])
    }

    pub(crate) fn decode_ready(&self, key: &[u8]) -> StoreResult<ReadyEntry> {
        let tail = key.strip_prefix(self.prefix.as_slice()).ok_or_else(|| corrupt("a ready key of another queue"))?;
        if tail.len() != PRIORITY + TIME + ID {
            return Err(corrupt("a ready key has the wrong length"));
        }
        let (priority, rest) = tail.split_at(PRIORITY);
        let (run_at, id) = rest.split_at(TIME);
        Ok(ReadyEntry {
            priority_key: priority.try_into().map_err(|_| corrupt("a ready key's priority"))?,
            run_at: time_from(run_at)?,
            id: JobId::from_uuid(id_from(id)?),
        })
    }

    pub(crate) fn decode_delayed(&self, key: &[u8]) -> StoreResult<DelayedEntry> {
        let tail = key.strip_prefix(self.prefix.as_slice()).ok_or_else(|| corrupt("a delayed key of another queue"))?;
        if tail.len() != TIME + ID {
            return Err(corrupt("a delayed key has the wrong length"));
        }
        let (run_at, id) = tail.split_at(TIME);
        Ok(DelayedEntry { run_at: time_from(run_at)?, id: JobId::from_uuid(id_from(id)?) })
    }
}

/// Running jobs by lease end: `lease_until · id`.
pub(crate) fn lease(until: DateTime<Utc>, id: JobId) -> IVec {
    index_key(&time(until), &[id.as_bytes()])
}

/// The first lease key not expired at `now` (leases ending before `now` sort below it).
pub(crate) fn lease_expiry_end(now: DateTime<Utc>) -> Vec<u8> {
    joined(&time(now), &[&[0; ID]])
}

/// `(lease_until, id)` of a lease key.
pub(crate) fn decode_time_id(key: &[u8]) -> StoreResult<(DateTime<Utc>, JobId)> {
    if key.len() != TIME + ID {
        return Err(corrupt("a time-ordered key has the wrong length"));
    }
    let (at, id) = key.split_at(TIME);
    Ok((time_from(at)?, JobId::from_uuid(id_from(id)?)))
}

/// Finished jobs by state and end: `state · finished_at · id`, so pruning reads one state's old jobs.
pub(crate) fn finished(state: JobState, at: DateTime<Utc>, id: JobId) -> IVec {
    index_key(&[state.index() as u8], &[&time(at), id.as_bytes()])
}

/// The range of finished keys of `state` that finished before `before`.
pub(crate) fn finished_before(state: JobState, before: DateTime<Utc>) -> (Vec<u8>, Vec<u8>) {
    (vec![state.index() as u8], joined(&[state.index() as u8], &[&time(before), &[0; ID]]))
}

/// The job id at the end of a finished key.
pub(crate) fn finished_id(key: &[u8]) -> StoreResult<JobId> {
    key.get(1..).map(decode_time_id).transpose()?.map(|(_, id)| id).ok_or_else(|| corrupt("an empty finished key"))
}

/// An owner's records: `owner id · record id` (jobs by creator, tokens by user or family use the hash instead).
pub(crate) fn owned(owner: &Uuid, record: &[u8]) -> Vec<u8> {
    joined(owner.as_bytes(), &[record])
}

/// The record part of an [`owned`] key.
pub(crate) fn owned_record(key: &[u8]) -> StoreResult<&[u8]> {
    key.get(ID..).ok_or_else(|| corrupt("an owner key is cut short"))
}

/// Tokens by expiry: `expires_at · hash`.
pub(crate) fn token_expiry(at: DateTime<Utc>, hash: &TokenHash) -> Vec<u8> {
    joined(&time(at), &[hash.as_bytes()])
}

/// The first expiry key of tokens still valid at `now` (`expires_at <= now` is expired).
pub(crate) fn token_expiry_end(now: DateTime<Utc>) -> Vec<u8> {
    joined(&time(now), &[&[0xff; 32]])
}

/// `(expires_at, hash)` of a token expiry key.
pub(crate) fn decode_token_expiry(key: &[u8]) -> StoreResult<(DateTime<Utc>, TokenHash)> {
    if key.len() != TIME + 32 {
        return Err(corrupt("a token expiry key has the wrong length"));
    }
    let (at, hash) = key.split_at(TIME);
    let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("a token hash is not 32 bytes"))?;
    Ok((time_from(at)?, TokenHash::from_bytes(hash)))
}

/// A build's log line: `build id · seq`.
pub(crate) fn log_line(build: &Uuid, seq: u64) -> Vec<u8> {
    joined(build.as_bytes(), &[&seq.to_be_bytes()])
}

/// Builds by project: `project · build id`; `None` for a name longer than 65,535 bytes.
pub(crate) fn project_build(project: &str, build: &Uuid) -> Option<Vec<u8>> {
    named(project, ID).map(|prefix| joined(&prefix, &[build.as_bytes()]))
}

/// The prefix of a project's keys in the by-project index.
pub(crate) fn project_prefix(project: &str) -> Option<Vec<u8>> {
    named(project, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).expect("in range")
    }

    #[test]
    fn times_and_priorities_sort_as_their_values() {
        let times = [i64::MIN / 2, -1, 0, 1, 1_893_456_000_000_000];
        for pair in times.windows(2) {
            assert!(time(at(pair[0])) < time(at(pair[1])));
        }
        let priorities = [i32::MIN, -5, -1, 0, 1, 10, i32::MAX];
        for pair in priorities.windows(2) {
            assert!(priority_descending(pair[0]) > priority_descending(pair[1]), "{pair:?}");
        }
        let keys = QueueKeys::new("q").expect("short");
        assert_eq!(keys.decode_ready(&keys.ready(-3, at(7), JobId::from_uuid(Uuid::nil()))).expect("ok").run_at, at(7));
    }

    #[test]
    fn naive_concatenation_collides_but_length_prefixed_keys_do_not() {
        let id = JobId::new();
        let now = at(1_000);
        // Plain concatenation: a worker of queue "a" scans the prefix b"a", which also holds every key of queue
        // "ab", so it would claim ("ab", 0, now, id) as if it were ("a", ...).
        let plain = |queue: &str| [queue.as_bytes(), &priority_descending(0), &time(now), id.as_bytes()].concat();
        assert!(plain("ab").starts_with(b"a"));
        // A separator byte does not help: the name "a\0x" puts its keys under "a\0", the prefix of queue "a".
        let separated = |queue: &str| [queue.as_bytes(), b"\0", &priority_descending(0)].concat();
        assert!(separated("a\0x").starts_with(&separated("a")[..2]));
        let forged = "a\0x";

        let names = ["", "a", "ab", "a\0", "a\0b", forged, "\0\u{1}a", "\u{1}", "ÿ", &"n".repeat(300)];
        for first in names {
            let one = QueueKeys::new(first).expect("short");
            let keys_of_one = [
                one.ready(0, now, id).to_vec(),
                one.ready(i32::MIN, now, id).to_vec(),
                one.delayed(now, id).to_vec(),
                one.delayed_due_end(now),
            ];
            for second in names.iter().filter(|second| **second != first) {
                let other = QueueKeys::new(second).expect("short");
                for key in &keys_of_one {
                    assert!(!key.starts_with(other.prefix()), "{first:?} forged a key of {second:?}");
                    assert_ne!(key, &other.ready(0, now, id).to_vec());
                    assert_ne!(key, &other.delayed(now, id).to_vec());
                }
            }
            assert_eq!(one.decode_ready(&one.ready(5, now, id)).expect("decodes").id, id);
            assert_eq!(one.decode_delayed(&one.delayed(now, id)).expect("decodes").run_at, now);
        }
        assert!(QueueKeys::new(&"n".repeat(70_000)).is_none());
    }

    #[test]
    fn project_keys_are_length_prefixed_too() {
        let id = Uuid::now_v7();
        let web = project_build("web", &id).expect("short");
        let webapp = project_build("webapp", &id).expect("short");
        assert!(!webapp.starts_with(&project_prefix("web").expect("short")));
        assert!(web.starts_with(&project_prefix("web").expect("short")));
    }

    #[test]
    fn range_ends_split_due_from_not_due() {
        let id = JobId::new();
        assert!(lease(at(9), id).to_vec() < lease_expiry_end(at(10)));
        assert!(lease(at(10), id).to_vec() >= lease_expiry_end(at(10)), "a lease ending now has not expired");
        let hash = TokenHash::of("t");
        assert!(token_expiry(at(10), &hash) < token_expiry_end(at(10)), "a token expiring now has expired");
        let (start, end) = finished_before(JobState::Succeeded, at(10));
        let done = finished(JobState::Succeeded, at(9), id).to_vec();
        assert!(start <= done && done < end);
        assert!(finished(JobState::Succeeded, at(10), id).to_vec() >= end);
        assert!(finished(JobState::Failed, at(1), id).to_vec() >= end, "another state's keys");
        assert_eq!(finished_id(&done).expect("decodes"), id);
    }
}
