//! Small builders shared by the rules.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use crate::clock::{Clock, ManualClock};
use tokio::task::JoinSet;

use crate::model::{Email, Job, JobFilter, JobId, NewJob, PageRequest, Role, User, WorkerId};
use crate::storage::{Conflict, DynStorage, StoreError, StoreResult};

/// The lease every rule claims with.
pub(super) const LEASE: Duration = Duration::from_secs(30);

/// The suite's fixed "now".
pub(super) fn t0() -> DateTime<Utc> {
    ManualClock::at_epoch().now()
}

/// `t0 + seconds`.
pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(seconds)
}

pub(super) fn email(raw: &str) -> Email {
    Email::parse(raw).expect("test emails are valid")
}

pub(super) fn user(raw_email: &str) -> User {
    User::new(email(raw_email), "Test User", Role::User, t0())
}

pub(super) fn admin(raw_email: &str) -> User {
    User::new(email(raw_email), "Test Admin", Role::Admin, t0())
}

pub(super) fn job(kind: &str) -> Job {
    spec(NewJob::new(kind, json!({ "kind": kind })))
}

pub(super) fn spec(spec: NewJob) -> Job {
    Job::new(spec, t0()).expect("test jobs are valid")
}

pub(super) fn worker(name: &str) -> WorkerId {
    WorkerId::new(name)
}

pub(super) fn queues(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// The conflict a result failed with; panics on success or another error.
#[track_caller]
pub(super) fn conflict<T: std::fmt::Debug>(result: StoreResult<T>) -> Conflict {
    match result {
        Err(StoreError::Conflict(conflict)) => conflict,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Claims one job from `queue` at `now`, which must exist.
pub(super) async fn claim(store: &DynStorage, queue: &str, name: &str, now: DateTime<Utc>) -> Job {
    store.claim(&queues(&[queue]), &worker(name), now, LEASE).await.expect("claim works").expect("a job is due")
}

/// Every job in the store, in id order.
pub(super) async fn all_jobs(store: &DynStorage) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut page = PageRequest::first(500);
    loop {
        let batch = store.list_jobs(&JobFilter::default(), &page).await.expect("list works");
        jobs.extend(batch.items);
        match batch.next_cursor {
            Some(cursor) => page = PageRequest::after(cursor, 500),
            None => return jobs,
        }
    }
}

/// Gathers what concurrent claimers returned and asserts that every job of `expected` was claimed exactly once.
pub(super) async fn assert_each_claimed_once(mut claimers: JoinSet<Vec<JobId>>, expected: &HashSet<JobId>) {
    let mut claimed = Vec::new();
    while let Some(mine) = claimers.join_next().await {
        claimed.extend(mine.expect("task ran"));
    }
    assert_eq!(claimed.len(), expected.len(), "some job was claimed twice or not at all");
    assert_eq!(&claimed.into_iter().collect::<HashSet<_>>(), expected);
}
