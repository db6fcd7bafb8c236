//! Rules of the batched job calls: [`JobStore::claim_many`](crate::storage::JobStore::claim_many) and
//! [`JobStore::settle_many`](crate::storage::JobStore::settle_many).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;

use super::fixtures::{LEASE, assert_each_claimed_once, at, claim, conflict, queues, spec, worker};
use crate::model::{Artifact, Job, JobFailure, JobId, JobState, Lease, NewJob, Retry, Settlement};
use crate::storage::{Conflict, DynStorage, StoreError};

fn lease_of(job: &Job) -> Lease {
    job.lease().expect("a claimed job has a lease")
}

/// A batch claim takes the jobs successive single claims would take, in the same order (priority, then
/// `run_at`, then id, across the named queues), each changed as a single claim changes it; `max = 0` or
/// nothing due gives an empty list.
pub async fn jobs_claim_many_takes_claim_order_across_queues(store: DynStorage) {
    let low = spec(NewJob::new("low", json!({})).priority(0));
    let late_high = spec(NewJob::new("late_high", json!({})).priority(10).run_at(at(2)));
    let early_high = spec(NewJob::new("early_high", json!({})).priority(10).run_at(at(1)));
    let other_queue = spec(NewJob::new("other_queue", json!({})).priority(5).queue("reports"));
    let delayed = spec(NewJob::new("delayed", json!({})).priority(100).run_at(at(60)));
    let unnamed_queue = spec(NewJob::new("unnamed_queue", json!({})).priority(50).queue("elsewhere"));
    store
        .enqueue_many(vec![low, late_high, early_high, other_queue, delayed, unnamed_queue])
        .await
        .expect("enqueue works");
    let names = queues(&["default", "reports"]);
    assert!(store.claim_many(&names, &worker("w"), at(5), LEASE, 0).await.expect("claim").is_empty());

    let first = store.claim_many(&names, &worker("w"), at(5), LEASE, 3).await.expect("claim works");
    let kinds: Vec<&str> = first.iter().map(|job| job.kind.as_str()).collect();
    assert_eq!(kinds, ["early_high", "late_high", "other_queue"]);
    for job in &first {
        assert_eq!((job.state, job.attempt, job.started_at), (JobState::Running, 1, Some(at(5))));
        assert_eq!((job.lease_holder.clone(), job.lease_until), (Some(worker("w")), Some(at(35))));
    }
    let rest = store.claim_many(&names, &worker("w"), at(5), LEASE, 10).await.expect("claim works");
    let kinds: Vec<&str> = rest.iter().map(|job| job.kind.as_str()).collect();
    assert_eq!(kinds, ["low"], "the delayed job and the unnamed queue's job stay");
    assert!(store.claim_many(&names, &worker("w"), at(5), LEASE, 10).await.expect("claim").is_empty());
    let due_later = store.claim_many(&names, &worker("w"), at(60), LEASE, 10).await.expect("claim works");
    assert_eq!(due_later.iter().map(|job| job.kind.as_str()).collect::<Vec<_>>(), ["delayed"]);
}

/// 16 concurrent batch claimers (mixed with single claims) over 1,000 jobs claim each exactly once.
pub async fn jobs_concurrent_batch_claimers_claim_each_job_once(store: DynStorage) {
    let jobs: Vec<Job> = (0..1_000).map(|n| spec(NewJob::new("bulk", json!({ "n": n })).priority(n % 7))).collect();
    let expected: HashSet<JobId> = jobs.iter().map(|job| job.id).collect();
    store.enqueue_many(jobs).await.expect("enqueue works");

    let mut tasks = JoinSet::new();
    for n in 0..16usize {
        let store = store.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            let name = format!("worker-{n}");
            let names = queues(&["default"]);
            loop {
                // Every fourth claimer claims one at a time, the others in batches of different sizes.
                let batch = if n % 4 == 0 {
                    store.claim(&names, &worker(&name), at(1), LEASE).await.expect("claim").into_iter().collect()
                } else {
                    store.claim_many(&names, &worker(&name), at(1), LEASE, 1 + n % 9).await.expect("claim")
                };
                if batch.is_empty() {
                    break;
                }
                for job in batch {
                    assert_eq!(job.lease_holder, Some(worker(&name)));
                    mine.push(job.id);
                }
                // A store that hands out a job twice would otherwise loop here forever.
                assert!(mine.len() <= 1_000, "one worker claimed more jobs than exist");
            }
            mine
        });
    }
    assert_each_claimed_once(tasks, &expected).await;
}

/// A batched settle changes each job as the single-job call it names would (complete with its artifact,
/// fail with a retry or for good, release uncharged, acknowledge a cancel), and answers in order.
pub async fn jobs_settle_many_applies_each_settlement(store: DynStorage) {
    let specs: Vec<Job> = (0..5).map(|n| spec(NewJob::new("batch", json!({ "n": n })).max_attempts(2))).collect();
    store.enqueue_many(specs).await.expect("enqueue works");
    let claimed = store.claim_many(&queues(&["default"]), &worker("w"), at(1), LEASE, 5).await.expect("claim");
    assert_eq!(claimed.len(), 5);
    let artifact =
        Artifact { content_type: "text/plain".into(), file_name: Some("out.txt".into()), bytes: b"done".to_vec() };
    store.cancel(claimed[4].id, at(2)).await.expect("cancel requested");
    let settlements = vec![
        Settlement::Complete {
            lease: lease_of(&claimed[0]),
            result: json!({ "ok": 1 }),
            artifact: Some(artifact.clone()),
            side_writes: Vec::new(),
        },
        Settlement::Fail {
            lease: lease_of(&claimed[1]),
            failure: JobFailure { error: "flaky".into(), retry: Retry::After(Duration::from_secs(10)) },
            side_writes: Vec::new(),
        },
        Settlement::Fail {
            lease: lease_of(&claimed[2]),
            failure: JobFailure { error: "bad".into(), retry: Retry::Never },
            side_writes: Vec::new(),
        },
        Settlement::Release { lease: lease_of(&claimed[3]), side_writes: Vec::new() },
        Settlement::AcknowledgeCancel { lease: lease_of(&claimed[4]), side_writes: Vec::new() },
    ];
    let outcomes = store.settle_many(settlements, at(3)).await.expect("the batch is stored");
    let settled: Vec<Job> = outcomes.into_iter().map(|outcome| outcome.expect("every lease is current")).collect();
    let ids: Vec<JobId> = settled.iter().map(|job| job.id).collect();
    assert_eq!(ids, claimed.iter().map(|job| job.id).collect::<Vec<_>>(), "answers come in order");

    for job in &settled {
        assert_eq!(store.get_job(job.id).await.expect("get").as_ref(), Some(job), "the answer is what is stored");
    }
    let [done, retrying, failed, released, cancelled] = &settled[..] else { unreachable!("five outcomes") };
    assert_eq!(
        (done.state, done.result.clone(), done.finished_at),
        (JobState::Succeeded, Some(json!({ "ok": 1 })), Some(at(3)))
    );
    assert_eq!(done.artifact, Some(artifact.info()));
    assert_eq!(store.get_artifact(done.id).await.expect("artifact"), Some(artifact));
    assert_eq!(
        (retrying.state, retrying.run_at, retrying.last_error.as_deref()),
        (JobState::Queued, at(13), Some("flaky"))
    );
    assert_eq!((failed.state, failed.last_error.as_deref()), (JobState::Failed, Some("bad")));
    assert_eq!((released.state, released.attempt, released.run_at), (JobState::Queued, 0, at(3)));
    assert_eq!(cancelled.state, JobState::Cancelled);
    for job in &settled {
        assert_eq!((job.lease_holder.clone(), job.lease_until), (None, None), "no settled job keeps a lease");
    }
}

/// Fencing holds per job inside a batch: a stale lease (the job was rescued and claimed again) and a missing
/// job fail only their own settlements and change nothing for them; the rest of the batch is stored.
pub async fn jobs_settle_many_fences_each_job_alone(store: DynStorage) {
    let specs: Vec<Job> = (0..3).map(|n| spec(NewJob::new("fenced", json!({ "n": n })))).collect();
    store.enqueue_many(specs).await.expect("enqueue works");
    let claimed = store.claim_many(&queues(&["default"]), &worker("old"), at(1), LEASE, 3).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    // The middle job's lease runs out, it is rescued and another worker claims it.
    store.heartbeat(&lease_of(&claimed[0]), at(20), LEASE).await.expect("heartbeat");
    store.heartbeat(&lease_of(&claimed[2]), at(20), LEASE).await.expect("heartbeat");
    let rescued = store.requeue_expired(at(40)).await.expect("rescue works");
    assert_eq!(rescued.iter().map(|job| job.id).collect::<Vec<_>>(), [claimed[1].id]);
    let reclaimed = claim(&store, "default", "new", at(41)).await;
    assert_eq!(reclaimed.id, claimed[1].id);

    let missing = Lease { job_id: JobId::new(), worker: worker("old"), attempt: 1 };
    let settlements = vec![
        Settlement::Complete {
            lease: lease_of(&claimed[0]),
            result: json!(0),
            artifact: None,
            side_writes: Vec::new(),
        },
        Settlement::Complete {
            lease: lease_of(&claimed[1]),
            result: json!(1),
            artifact: None,
            side_writes: Vec::new(),
        },
        Settlement::Release { lease: missing, side_writes: Vec::new() },
        Settlement::Complete {
            lease: lease_of(&claimed[2]),
            result: json!(2),
            artifact: None,
            side_writes: Vec::new(),
        },
    ];
    let mut outcomes = store.settle_many(settlements, at(42)).await.expect("the batch is stored").into_iter();
    assert_eq!(outcomes.next().expect("first").expect("current lease").state, JobState::Succeeded);
    assert_eq!(conflict(outcomes.next().expect("second")), Conflict::LeaseLost);
    assert!(matches!(outcomes.next(), Some(Err(StoreError::NotFound))));
    assert_eq!(outcomes.next().expect("fourth").expect("current lease").state, JobState::Succeeded);
    assert!(outcomes.next().is_none());

    let stale = store.get_job(claimed[1].id).await.expect("get").expect("exists");
    assert_eq!(stale, reclaimed, "the stale settlement changed nothing");
    assert_eq!(store.settle_many(Vec::new(), at(43)).await.expect("an empty batch works").len(), 0);
}
