//! The model-based property test: random sequences of user, token and job operations are applied to the store
//! and to a plain in-memory reference model, and every observable result must agree.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use super::Harness;
use super::fixtures::{LEASE, t0, worker};
use crate::clock;
use crate::model::{
    Consumed, Email, Job, JobFailure, JobId, JobState, Lease, NewJob, PageRequest, QueueCounts, Retry, Role,
    TokenFamilyId, TokenHash, TokenKind, TokenRecord, User, UserFilter, UserId,
};
use crate::storage::{Conflict, DynStorage, StoreError, StoreResult, TokenSelector};

const QUEUES: [&str; 3] = ["q0", "q1", "email"];
const KINDS: [TokenKind; 3] = [TokenKind::Refresh, TokenKind::PasswordReset, TokenKind::EmailVerify];
const MAX_ATTEMPTS: u32 = 2;

#[derive(Debug, Clone)]
enum Op {
    InsertUser { email: u8, shout: bool, admin: bool },
    RenameUser { user: u8, stale: bool },
    SetRole { user: u8, admin: bool },
    DeleteUser { user: u8 },
    IssueToken { user: u8, kind: u8, ttl_secs: u16 },
    ConsumeToken { token: u8, kind: u8 },
    RevokeUserTokens { user: u8 },
    Enqueue { queue: u8, priority: i8, delay_secs: u8, key: Option<u8> },
    Claim { queue_mask: u8 },
    Complete { lease: u8 },
    Fail { lease: u8, retry_secs: Option<u8> },
    Cancel { job: u8 },
    Advance { secs: u8 },
    RequeueExpired,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..5u8, any::<bool>(), any::<bool>()).prop_map(|(email, shout, admin)| Op::InsertUser { email, shout, admin }),
        (any::<u8>(), any::<bool>()).prop_map(|(user, stale)| Op::RenameUser { user, stale }),
        (any::<u8>(), any::<bool>()).prop_map(|(user, admin)| Op::SetRole { user, admin }),
        any::<u8>().prop_map(|user| Op::DeleteUser { user }),
        (any::<u8>(), 0..3u8, 1..120u16).prop_map(|(user, kind, ttl_secs)| Op::IssueToken { user, kind, ttl_secs }),
        (any::<u8>(), 0..3u8).prop_map(|(token, kind)| Op::ConsumeToken { token, kind }),
        any::<u8>().prop_map(|user| Op::RevokeUserTokens { user }),
        (0..3u8, -2..3i8, 0..3u8, proptest::option::of(0..3u8)).prop_map(|(queue, priority, delay, key)| Op::Enqueue {
            queue,
            priority,
            delay_secs: delay * 10,
            key
        }),
        (1..8u8).prop_map(|queue_mask| Op::Claim { queue_mask }),
        any::<u8>().prop_map(|lease| Op::Complete { lease }),
        (any::<u8>(), proptest::option::of(0..20u8)).prop_map(|(lease, retry_secs)| Op::Fail { lease, retry_secs }),
        any::<u8>().prop_map(|job| Op::Cancel { job }),
        (1..40u8).prop_map(|secs| Op::Advance { secs }),
        Just(Op::RequeueExpired),
    ]
}

#[derive(Debug, Clone)]
struct ModelUser {
    id: UserId,
    email: Email,
    role: Role,
    version: u64,
    exists: bool,
}

#[derive(Debug, Clone)]
struct ModelToken {
    raw: String,
    kind: TokenKind,
    user: UserId,
    expires_at: DateTime<Utc>,
    consumed: bool,
    exists: bool,
}

#[derive(Debug, Clone)]
struct ModelJob {
    id: JobId,
    queue: &'static str,
    priority: i32,
    run_at: DateTime<Utc>,
    state: JobState,
    attempt: u32,
    key: Option<String>,
    lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Model {
    users: Vec<ModelUser>,
    tokens: Vec<ModelToken>,
    jobs: Vec<ModelJob>,
    leases: Vec<Lease>,
}

impl Model {
    fn active_admins(&self) -> usize {
        self.users.iter().filter(|user| user.exists && user.role == Role::Admin).count()
    }

    fn job_mut(&mut self, id: JobId) -> &mut ModelJob {
        self.jobs.iter_mut().find(|job| job.id == id).expect("the model knows every job")
    }

    fn live_job_with_key(&self, key: &str) -> Option<JobId> {
        self.jobs.iter().find(|job| !job.state.is_finished() && job.key.as_deref() == Some(key)).map(|job| job.id)
    }

    fn holds(&self, lease: &Lease) -> bool {
        self.jobs
            .iter()
            .any(|job| job.id == lease.job_id && job.state == JobState::Running && job.attempt == lease.attempt)
    }

    fn counts(&self) -> Vec<QueueCounts> {
        let mut counts: BTreeMap<&str, QueueCounts> = BTreeMap::new();
        for job in &self.jobs {
            let entry = counts
                .entry(job.queue)
                .or_insert_with(|| QueueCounts { queue: job.queue.into(), ..Default::default() });
            *entry.get_mut(job.state) += 1;
            if job.state == JobState::Queued {
                entry.oldest_queued_run_at =
                    Some(entry.oldest_queued_run_at.map_or(job.run_at, |at| at.min(job.run_at)));
            }
        }
        counts.into_values().collect()
    }
}

fn pick<T>(items: &[T], index: u8) -> Option<&T> {
    (!items.is_empty()).then(|| &items[usize::from(index) % items.len()])
}

/// What a result looks like for comparison: `Ok` or the error's shape.
fn outcome<T>(result: &StoreResult<T>) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(conflict)) => Err(format!("conflict {conflict:?}")),
        Err(StoreError::NotFound) => Err("not found".to_owned()),
        Err(other) => Err(format!("unexpected {other:?}")),
    }
}

fn conflict_of(conflict: Conflict) -> Result<(), String> {
    Err(format!("conflict {conflict:?}"))
}

fn user_value(model: &ModelUser, role: Role, now: DateTime<Utc>) -> User {
    let mut user = User::new(model.email.clone(), format!("renamed at {now}"), role, now);
    user.id = model.id;
    user
}

async fn apply(store: &DynStorage, model: &mut Model, now: &mut DateTime<Utc>, op: Op) -> Result<(), TestCaseError> {
    let now_value = *now;
    match op {
        Op::InsertUser { email, shout, admin } => {
            let raw = format!("user{email}@example.com");
            let address = Email::parse(&if shout { raw.to_uppercase() } else { raw }).expect("valid");
            let role = if admin { Role::Admin } else { Role::User };
            let user = User::new(address.clone(), "model", role, now_value);
            let spec = NewJob::new("email.welcome", json!({})).queue("email").max_attempts(MAX_ATTEMPTS);
            let welcome = Job::new(spec, now_value).expect("valid");
            let taken = model.users.iter().any(|known| known.exists && known.email == address);
            let result = store.insert_user(user.clone(), vec![welcome.clone()]).await;
            let expected = if taken { conflict_of(Conflict::EmailTaken) } else { Ok(()) };
            prop_assert_eq!(outcome(&result), expected);
            if !taken {
                model.users.push(ModelUser { id: user.id, email: address, role, version: 1, exists: true });
                model.jobs.push(ModelJob {
                    id: welcome.id,
                    queue: "email",
                    priority: 0,
                    run_at: now_value,
                    state: JobState::Queued,
                    attempt: 0,
                    key: None,
                    lease_until: None,
                });
            }
        }
        Op::RenameUser { user, stale } => {
            let Some(target) = pick(&model.users, user).cloned() else { return Ok(()) };
            let expected_version = if stale { target.version + 1 } else { target.version };
            let result = store.update_user(user_value(&target, target.role, now_value), expected_version, vec![]).await;
            let expected = match (target.exists, stale) {
                (false, _) => Err("not found".to_owned()),
                (true, true) => conflict_of(Conflict::VersionMismatch),
                (true, false) => Ok(()),
            };
            prop_assert_eq!(outcome(&result), expected.clone());
            if expected.is_ok() {
                prop_assert_eq!(result.expect("ok").version, target.version + 1);
                model.users.iter_mut().filter(|known| known.id == target.id).for_each(|known| known.version += 1);
            }
        }
        Op::SetRole { user, admin } => {
            let Some(target) = pick(&model.users, user).cloned() else { return Ok(()) };
            let role = if admin { Role::Admin } else { Role::User };
            let demotes_last = target.role == Role::Admin && role == Role::User && model.active_admins() == 1;
            let result = store.update_user(user_value(&target, role, now_value), target.version, vec![]).await;
            let expected = match (target.exists, demotes_last) {
                (false, _) => Err("not found".to_owned()),
                (true, true) => conflict_of(Conflict::LastActiveAdmin),
                (true, false) => Ok(()),
            };
            prop_assert_eq!(outcome(&result), expected.clone());
            if expected.is_ok() {
                let known = model.users.iter_mut().find(|known| known.id == target.id).expect("known");
                known.role = role;
                known.version += 1;
            }
        }
        Op::DeleteUser { user } => {
            let Some(target) = pick(&model.users, user).cloned() else { return Ok(()) };
            let last_admin = target.role == Role::Admin && model.active_admins() == 1;
            let result = store.delete_user(target.id, None).await;
            let expected = match (target.exists, last_admin) {
                (false, _) => Err("not found".to_owned()),
                (true, true) => conflict_of(Conflict::LastActiveAdmin),
                (true, false) => Ok(()),
            };
            prop_assert_eq!(outcome(&result), expected.clone());
            if expected.is_ok() {
                model.users.iter_mut().filter(|known| known.id == target.id).for_each(|known| known.exists = false);
                model.tokens.iter_mut().filter(|token| token.user == target.id).for_each(|token| token.exists = false);
            }
        }
        Op::IssueToken { user, kind, ttl_secs } => {
            let Some(owner) = pick(&model.users, user).map(|known| known.id) else { return Ok(()) };
            let raw = format!("token-{}", model.tokens.len());
            let kind = KINDS[usize::from(kind)];
            let expires_at = clock::add(now_value, Duration::from_secs(u64::from(ttl_secs)));
            let record =
                TokenRecord::new(TokenHash::of(&raw), kind, owner, TokenFamilyId::new(), now_value, expires_at);
            prop_assert_eq!(outcome(&store.insert_token(record).await), Ok(()));
            model.tokens.push(ModelToken { raw, kind, user: owner, expires_at, consumed: false, exists: true });
        }
        Op::ConsumeToken { token, kind } => {
            let count = model.tokens.len();
            if count == 0 {
                return Ok(());
            }
            let token = &mut model.tokens[usize::from(token) % count];
            let kind = KINDS[usize::from(kind)];
            let result = store.consume_token(&TokenHash::of(&token.raw), kind, now_value, None).await;
            let found = token.exists && token.kind == kind && now_value < token.expires_at;
            let expected = match (found, token.consumed) {
                (false, _) => "none",
                (true, true) => "replayed",
                (true, false) => "fresh",
            };
            let actual = match result.map_err(|error| TestCaseError::fail(format!("{error:?}")))? {
                None => "none",
                Some(Consumed::Replayed(_)) => "replayed",
                Some(Consumed::Fresh(record)) => {
                    prop_assert_eq!(record.user_id, token.user);
                    "fresh"
                }
            };
            prop_assert_eq!(actual, expected);
            if found {
                token.consumed = true;
            }
        }
        Op::RevokeUserTokens { user } => {
            let Some(owner) = pick(&model.users, user).map(|known| known.id) else { return Ok(()) };
            let selector = TokenSelector::User { user_id: owner, kind: None, except_family: None };
            let revoked =
                store.revoke_tokens(selector).await.map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
            let mut expected = 0;
            for token in model.tokens.iter_mut().filter(|token| token.user == owner && token.exists) {
                token.exists = false;
                expected += 1;
            }
            prop_assert_eq!(revoked, expected);
        }
        Op::Enqueue { queue, priority, delay_secs, key } => {
            let queue = QUEUES[usize::from(queue)];
            let run_at = clock::add(now_value, Duration::from_secs(u64::from(delay_secs)));
            let key = key.map(|key| format!("key-{key}"));
            let mut spec = NewJob::new("model", json!({})).queue(queue).priority(i32::from(priority)).run_at(run_at);
            spec = spec.max_attempts(MAX_ATTEMPTS);
            if let Some(key) = &key {
                spec = spec.unique_key(key.clone());
            }
            let job = Job::new(spec, now_value).expect("valid");
            let stored = store.enqueue(job.clone()).await.map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
            match key.as_deref().and_then(|key| model.live_job_with_key(key)) {
                Some(existing) => prop_assert_eq!(stored.id, existing),
                None => {
                    prop_assert_eq!(stored.id, job.id);
                    model.jobs.push(ModelJob {
                        id: job.id,
                        queue,
                        priority: i32::from(priority),
                        run_at,
                        state: JobState::Queued,
                        attempt: 0,
                        key,
                        lease_until: None,
                    });
                }
            }
        }
        Op::Claim { queue_mask } => {
            let names: Vec<String> = QUEUES
                .iter()
                .enumerate()
                .filter(|(bit, _)| queue_mask & (1 << bit) != 0)
                .map(|(_, q)| (*q).to_owned())
                .collect();
            let expected = model
                .jobs
                .iter()
                .filter(|job| job.state == JobState::Queued && job.run_at <= now_value)
                .filter(|job| names.iter().any(|name| name == job.queue))
                .min_by_key(|job| (Reverse(job.priority), job.run_at, job.id))
                .map(|job| job.id);
            let claimed = store.claim(&names, &worker("model"), now_value, LEASE).await;
            let claimed = claimed.map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
            prop_assert_eq!(claimed.as_ref().map(|job| job.id), expected);
            if let Some(claimed) = claimed {
                let job = model.job_mut(claimed.id);
                job.state = JobState::Running;
                job.attempt += 1;
                job.lease_until = Some(clock::add(now_value, LEASE));
                prop_assert_eq!(claimed.attempt, job.attempt);
                model.leases.push(claimed.lease().expect("running"));
            }
        }
        Op::Complete { lease } => {
            let Some(lease) = pick(&model.leases, lease).cloned() else { return Ok(()) };
            let holds = model.holds(&lease);
            let result = store.complete(&lease, json!({}), None, now_value).await;
            prop_assert_eq!(outcome(&result), if holds { Ok(()) } else { conflict_of(Conflict::LeaseLost) });
            if holds {
                model.job_mut(lease.job_id).state = JobState::Succeeded;
            }
        }
        Op::Fail { lease, retry_secs } => {
            let Some(lease) = pick(&model.leases, lease).cloned() else { return Ok(()) };
            let holds = model.holds(&lease);
            let retry = retry_secs.map_or(Retry::Never, |secs| Retry::After(Duration::from_secs(u64::from(secs))));
            let result = store.fail(&lease, JobFailure { error: "model".into(), retry }, now_value).await;
            prop_assert_eq!(outcome(&result), if holds { Ok(()) } else { conflict_of(Conflict::LeaseLost) });
            if holds {
                let job = model.job_mut(lease.job_id);
                match retry {
                    Retry::After(delay) if job.attempt < MAX_ATTEMPTS => {
                        job.state = JobState::Queued;
                        job.run_at = clock::add(now_value, delay);
                    }
                    _ => job.state = JobState::Failed,
                }
            }
        }
        Op::Cancel { job } => {
            let Some(target) = pick(&model.jobs, job).cloned() else { return Ok(()) };
            let result = store.cancel(target.id, now_value).await;
            let expected = if target.state.is_finished() { conflict_of(Conflict::InvalidState) } else { Ok(()) };
            prop_assert_eq!(outcome(&result), expected);
            if target.state == JobState::Queued {
                model.job_mut(target.id).state = JobState::Cancelled;
            }
        }
        Op::Advance { secs } => *now = clock::add(now_value, Duration::from_secs(u64::from(secs))),
        Op::RequeueExpired => {
            let rescued =
                store.requeue_expired(now_value).await.map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
            let mut expected = Vec::new();
            for job in model.jobs.iter_mut().filter(|job| job.state == JobState::Running) {
                if job.lease_until.is_some_and(|until| until < now_value) {
                    if job.attempt < MAX_ATTEMPTS {
                        job.state = JobState::Queued;
                        job.run_at = now_value;
                    } else {
                        job.state = JobState::Failed;
                    }
                    expected.push(job.id);
                }
            }
            let mut rescued: Vec<JobId> = rescued.into_iter().map(|job| job.id).collect();
            rescued.sort();
            expected.sort();
            prop_assert_eq!(rescued, expected);
        }
    }
    let counts = store.queue_counts().await.map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
    prop_assert_eq!(counts, model.counts());
    Ok(())
}

async fn final_state_agrees(store: &DynStorage, model: &Model) -> Result<(), TestCaseError> {
    for job in &model.jobs {
        let stored = store.get_job(job.id).await.map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
        let stored = stored.ok_or_else(|| TestCaseError::fail("a job vanished"))?;
        prop_assert_eq!((stored.state, stored.attempt, stored.run_at), (job.state, job.attempt, job.run_at));
    }
    let page = store.list_users(&UserFilter::default(), &PageRequest::first(500)).await;
    let listed: Vec<(UserId, u64, Role)> = page
        .map_err(|error| TestCaseError::fail(format!("{error:?}")))?
        .items
        .iter()
        .map(|u| (u.id, u.version, u.role))
        .collect();
    let expected: Vec<(UserId, u64, Role)> =
        model.users.iter().filter(|user| user.exists).map(|user| (user.id, user.version, user.role)).collect();
    prop_assert_eq!(listed, expected);
    Ok(())
}

/// Random sequences of user, token and job operations give the same observable results on the store as on a
/// plain reference model: every call's outcome, the claim chosen, the counts after every step, and the final
/// state of every job and user.
pub fn model_based_operations_match_the_reference<H: Harness + ?Sized>(harness: &H) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime");
    // No persistence file: the suite runs inside adapters' crates and must not write into them.
    let config = Config { cases: 96, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..80), |ops| {
        runtime.block_on(async {
            let fixture = harness.fresh().await;
            let store = fixture.store();
            let mut model = Model::default();
            let mut now = t0();
            for op in ops {
                apply(&store, &mut model, &mut now, op).await?;
            }
            final_state_agrees(&store, &model).await
        })
    });
    if let Err(failure) = result {
        panic!("the store disagrees with the reference model: {failure:?}");
    }
}
