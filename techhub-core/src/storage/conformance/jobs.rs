//! Rules of [`JobStore`](crate::storage::JobStore).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;

use super::fixtures::{LEASE, all_jobs, assert_each_claimed_once, at, claim, conflict, job, queues, spec, t0, worker};
use crate::model::{
    Artifact, ArtifactInfo, Job, JobFailure, JobFilter, JobId, JobState, NewJob, PageRequest, Progress, QueueCounts,
    Retry, UserId,
};
use crate::storage::{Conflict, DynStorage, StoreError};

fn failure(error: &str, retry: Retry) -> JobFailure {
    JobFailure { error: error.to_owned(), retry }
}

async fn get(store: &DynStorage, id: JobId) -> Job {
    store.get_job(id).await.expect("get works").expect("job exists")
}

/// Enqueue stores the job as given (queued, attempt 0) and it reads back by id.
pub async fn jobs_enqueue_and_get_round_trip(store: DynStorage) {
    let new = spec(
        NewJob::new("users.export", json!({ "format": "csv" }))
            .queue("exports")
            .priority(3)
            .max_attempts(2)
            .created_by(UserId::new()),
    );
    assert_eq!(store.enqueue(new.clone()).await.expect("enqueue works"), new);
    assert_eq!(get(&store, new.id).await, new);
    assert_eq!(store.get_job(JobId::new()).await.expect("get works"), None);
    assert_eq!(conflict(store.enqueue(new).await), Conflict::Duplicate);
}

/// Claims take the highest priority, then the oldest `run_at`, then the lowest id; claiming marks the job
/// running with the attempt, start time and lease.
pub async fn jobs_claim_order_is_priority_then_run_at_then_id(store: DynStorage) {
    let low = spec(NewJob::new("low", json!({})).priority(0));
    let late_high = spec(NewJob::new("late_high", json!({})).priority(10).run_at(at(2)));
    let early_high = spec(NewJob::new("early_high", json!({})).priority(10).run_at(at(1)));
    let early_high_twin = spec(NewJob::new("early_high_twin", json!({})).priority(10).run_at(at(1)));
    let middle = spec(NewJob::new("middle", json!({})).priority(5).run_at(at(3)));
    let negative = spec(NewJob::new("negative", json!({})).priority(-5));
    for job in [&negative, &low, &late_high, &middle, &early_high_twin, &early_high] {
        store.enqueue(job.clone()).await.expect("enqueue works");
    }
    let mut order = Vec::new();
    while let Some(job) = store.claim(&queues(&["default"]), &worker("w"), at(5), LEASE).await.expect("claim") {
        assert_eq!((job.state, job.attempt, job.started_at), (JobState::Running, 1, Some(at(5))));
        assert_eq!((job.lease_holder, job.lease_until), (Some(worker("w")), Some(at(35))));
        order.push(job.kind);
        assert!(order.len() <= 6, "more claims than jobs: {order:?}");
    }
    assert_eq!(order, ["early_high", "early_high_twin", "late_high", "middle", "low", "negative"]);
}

/// A delayed job is not claimable before its `run_at`, and is at it.
pub async fn jobs_delayed_job_not_claimable_before_run_at(store: DynStorage) {
    let delayed = spec(NewJob::new("later", json!({})).run_at(at(60)).priority(100));
    store.enqueue(delayed.clone()).await.expect("enqueue works");
    let names = queues(&["default"]);
    assert_eq!(store.claim(&names, &worker("w"), at(59), LEASE).await.expect("claim works"), None);
    // A due job of lower priority is claimable meanwhile.
    let due = job("now");
    store.enqueue(due.clone()).await.expect("enqueue works");
    assert_eq!(claim(&store, "default", "w", at(59)).await.id, due.id);
    assert_eq!(claim(&store, "default", "w", at(60)).await.id, delayed.id);
}

/// A claim only looks at the queues it names, and picks the best job across them.
pub async fn jobs_claim_only_from_named_queues(store: DynStorage) {
    let email = spec(NewJob::new("email.welcome", json!({})).queue("email"));
    let report = spec(NewJob::new("report", json!({})).queue("reports").priority(1));
    store.enqueue_many(vec![email.clone(), report.clone()]).await.expect("enqueue works");
    assert_eq!(store.claim(&queues(&["other"]), &worker("w"), t0(), LEASE).await.expect("claim"), None);
    assert_eq!(store.claim(&queues(&[]), &worker("w"), t0(), LEASE).await.expect("claim"), None);
    let both = queues(&["email", "reports"]);
    assert_eq!(store.claim(&both, &worker("w"), t0(), LEASE).await.expect("claim").map(|job| job.id), Some(report.id));
    assert_eq!(store.claim(&both, &worker("w"), t0(), LEASE).await.expect("claim").map(|job| job.id), Some(email.id));
}

/// 16 concurrent claimers over 1,000 jobs claim each exactly once.
pub async fn jobs_concurrent_claimers_claim_each_job_once(store: DynStorage) {
    let jobs: Vec<Job> = (0..1_000).map(|n| spec(NewJob::new("bulk", json!({ "n": n })).priority(n % 7))).collect();
    let expected: HashSet<JobId> = jobs.iter().map(|job| job.id).collect();
    store.enqueue_many(jobs).await.expect("enqueue works");

    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            let name = format!("worker-{n}");
            while let Some(job) = store.claim(&queues(&["default"]), &worker(&name), at(1), LEASE).await.expect("claim")
            {
                assert_eq!(job.lease_holder, Some(worker(&name)));
                mine.push(job.id);
                // A store that hands out a job twice would otherwise loop here forever.
                assert!(mine.len() <= 1_000, "one worker claimed more jobs than exist");
            }
            mine
        });
    }
    assert_each_claimed_once(tasks, &expected).await;
}

/// After a lease passed and another worker claimed the job, every write under the old lease is `LeaseLost`
/// and changes nothing; the new holder's writes work.
pub async fn jobs_lease_fencing_after_expiry_and_reclaim(store: DynStorage) {
    let new = spec(NewJob::new("slow", json!({})).max_attempts(3));
    store.enqueue(new.clone()).await.expect("enqueue works");
    let first = claim(&store, "default", "first", t0()).await;
    let old = first.lease().expect("running");

    assert_eq!(store.requeue_expired(at(31)).await.expect("rescue works").len(), 1);
    let second = claim(&store, "default", "second", at(31)).await;
    assert_eq!(second.attempt, 2);
    let before = get(&store, new.id).await;

    let late = at(40);
    assert_eq!(conflict(store.heartbeat(&old, late, LEASE).await), Conflict::LeaseLost);
    assert_eq!(conflict(store.report_progress(&old, Progress::new(50, None), late).await), Conflict::LeaseLost);
    assert_eq!(conflict(store.complete(&old, json!("stale"), None, late).await), Conflict::LeaseLost);
    assert_eq!(conflict(store.fail(&old, failure("stale", Retry::Never), late).await), Conflict::LeaseLost);
    assert_eq!(conflict(store.release(&old, late).await), Conflict::LeaseLost);
    assert_eq!(conflict(store.acknowledge_cancel(&old, late).await), Conflict::LeaseLost);
    assert_eq!(get(&store, new.id).await, before, "a stale lease changed the job");

    let current = second.lease().expect("running");
    let done = store.complete(&current, json!("fresh"), None, late).await.expect("holder completes");
    assert_eq!((done.state, done.result), (JobState::Succeeded, Some(json!("fresh"))));
    assert_eq!(conflict(store.complete(&current, json!("twice"), None, late).await), Conflict::LeaseLost);

    let mut missing = current;
    missing.job_id = JobId::new();
    assert!(matches!(store.heartbeat(&missing, late, LEASE).await, Err(StoreError::NotFound)));
}

/// A worker that claims the same job again in a later attempt cannot write with its earlier lease.
pub async fn jobs_same_worker_reclaim_fences_old_attempt(store: DynStorage) {
    store.enqueue(job("again")).await.expect("enqueue works");
    let first = claim(&store, "default", "solo", t0()).await.lease().expect("running");
    store.requeue_expired(at(31)).await.expect("rescue works");
    let second = claim(&store, "default", "solo", at(31)).await.lease().expect("running");
    assert_eq!((first.worker.clone(), second.attempt), (second.worker.clone(), 2));
    assert_eq!(conflict(store.complete(&first, json!(1), None, at(32)).await), Conflict::LeaseLost);
    store.complete(&second, json!(2), None, at(32)).await.expect("current attempt completes");
}

/// A heartbeat moves the lease to `now + extend`, so the job is not rescued while its worker lives.
pub async fn jobs_heartbeat_extends_lease(store: DynStorage) {
    store.enqueue(job("long")).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    let beat = store.heartbeat(&lease, at(25), Duration::from_secs(60)).await.expect("heartbeat works");
    assert_eq!(beat.lease_until, Some(at(85)));
    assert!(store.requeue_expired(at(80)).await.expect("rescue works").is_empty());
    assert_eq!(store.requeue_expired(at(86)).await.expect("rescue works").len(), 1);
}

/// Progress reports are stored and read back.
pub async fn jobs_progress_is_recorded(store: DynStorage) {
    let new = job("import");
    store.enqueue(new.clone()).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    let progress = Progress::new(42, Some("row 420 of 1000".to_owned()));
    assert_eq!(store.report_progress(&lease, progress.clone(), at(1)).await.expect("works").progress, progress);
    assert_eq!(get(&store, new.id).await.progress, progress);
}

/// A failed attempt with attempts left is queued again at `now + backoff` with its error kept, and is not
/// claimable before.
pub async fn jobs_fail_with_attempts_left_requeues_at_backoff(store: DynStorage) {
    let new = spec(NewJob::new("flaky", json!({})).max_attempts(3));
    store.enqueue(new.clone()).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    let failed = store.fail(&lease, failure("smtp timeout", Retry::After(Duration::from_secs(20))), at(2)).await;
    let failed = failed.expect("fail works");
    assert_eq!((failed.state, failed.run_at, failed.attempt), (JobState::Queued, at(22), 1));
    assert_eq!(
        (failed.last_error.as_deref(), failed.lease_holder, failed.finished_at),
        (Some("smtp timeout"), None, None)
    );

    let names = queues(&["default"]);
    assert_eq!(store.claim(&names, &worker("w"), at(21), LEASE).await.expect("claim works"), None);
    assert_eq!(claim(&store, "default", "w", at(22)).await.attempt, 2);
}

/// The last attempt's failure ends the job `failed` for good, with its error kept.
pub async fn jobs_last_attempt_fails_with_error_kept(store: DynStorage) {
    let new = spec(NewJob::new("doomed", json!({})).max_attempts(2));
    store.enqueue(new.clone()).await.expect("enqueue works");
    for (attempt, now) in [(1, t0()), (2, at(10))] {
        let lease = claim(&store, "default", "w", now).await.lease().expect("running");
        assert_eq!(lease.attempt, attempt);
        let retry = Retry::After(Duration::from_secs(10));
        store.fail(&lease, failure(&format!("boom {attempt}"), retry), now).await.expect("fail works");
    }
    let failed = get(&store, new.id).await;
    assert_eq!((failed.state, failed.attempt, failed.finished_at), (JobState::Failed, 2, Some(at(10))));
    assert_eq!(failed.last_error.as_deref(), Some("boom 2"));
    assert_eq!(store.claim(&queues(&["default"]), &worker("w"), at(100), LEASE).await.expect("claim"), None);
}

/// `Retry::Never` fails the job at once, attempts left or not.
pub async fn jobs_retry_never_fails_at_once(store: DynStorage) {
    let new = spec(NewJob::new("bad_input", json!({})).max_attempts(10));
    store.enqueue(new.clone()).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    let failed = store.fail(&lease, failure("invalid payload", Retry::Never), at(1)).await.expect("fail works");
    assert_eq!((failed.state, failed.attempt), (JobState::Failed, 1));
}

/// `requeue_expired` queues again (at `now`) only the running jobs whose lease passed; one out of attempts
/// fails with "lease expired".
pub async fn jobs_requeue_expired_rescues_only_expired_leases(store: DynStorage) {
    let crashed = spec(NewJob::new("crashed", json!({})).priority(2));
    let alive = spec(NewJob::new("alive", json!({})).priority(1));
    let exhausted = spec(NewJob::new("exhausted", json!({})).max_attempts(1));
    store.enqueue_many(vec![crashed.clone(), alive.clone(), exhausted.clone()]).await.expect("enqueue works");
    claim(&store, "default", "dead", t0()).await;
    let alive_lease = claim(&store, "default", "live", t0()).await.lease().expect("running");
    claim(&store, "default", "dead", t0()).await;
    store.heartbeat(&alive_lease, at(20), LEASE).await.expect("heartbeat works");

    assert!(store.requeue_expired(at(30)).await.expect("rescue works").is_empty(), "a lease ending now is not expired");
    let rescued = store.requeue_expired(at(31)).await.expect("rescue works");
    assert_eq!(rescued.iter().map(|job| job.id).collect::<HashSet<_>>(), HashSet::from([crashed.id, exhausted.id]));

    let crashed = get(&store, crashed.id).await;
    assert_eq!((crashed.state, crashed.run_at, crashed.lease_holder), (JobState::Queued, at(31), None));
    let exhausted = get(&store, exhausted.id).await;
    assert_eq!((exhausted.state, exhausted.last_error.as_deref()), (JobState::Failed, Some("lease expired")));
    assert_eq!(get(&store, alive.id).await.state, JobState::Running);
    assert_eq!(claim(&store, "default", "next", at(31)).await.attempt, 2);
}

/// Releasing a lease (shutdown) queues the job again at `now` without charging the attempt.
pub async fn jobs_release_does_not_charge_an_attempt(store: DynStorage) {
    let new = spec(NewJob::new("interrupted", json!({})).max_attempts(1));
    store.enqueue(new.clone()).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    let released = store.release(&lease, at(3)).await.expect("release works");
    assert_eq!((released.state, released.attempt, released.run_at), (JobState::Queued, 0, at(3)));
    assert_eq!(claim(&store, "default", "w", at(3)).await.attempt, 1, "the one attempt is still there");
}

/// Cancelling a queued job cancels it at once; a running one gets `cancel_requested` until acknowledged; a
/// finished one is `InvalidState`.
pub async fn jobs_cancel_queued_vs_running(store: DynStorage) {
    let queued = spec(NewJob::new("queued", json!({})).run_at(at(100)));
    let running = job("running");
    store.enqueue_many(vec![queued.clone(), running.clone()]).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");

    let cancelled = store.cancel(queued.id, at(1)).await.expect("cancel works");
    assert_eq!((cancelled.state, cancelled.finished_at), (JobState::Cancelled, Some(at(1))));
    assert_eq!(store.claim(&queues(&["default"]), &worker("w"), at(200), LEASE).await.expect("claim"), None);

    let requested = store.cancel(running.id, at(2)).await.expect("cancel works");
    assert_eq!((requested.state, requested.cancel_requested), (JobState::Running, true));
    assert!(store.heartbeat(&lease, at(3), LEASE).await.expect("heartbeat works").cancel_requested);
    let stopped = store.acknowledge_cancel(&lease, at(4)).await.expect("acknowledge works");
    assert_eq!((stopped.state, stopped.finished_at), (JobState::Cancelled, Some(at(4))));

    assert_eq!(conflict(store.cancel(running.id, at(5)).await), Conflict::InvalidState);
    assert!(matches!(store.cancel(JobId::new(), at(5)).await, Err(StoreError::NotFound)));
}

/// While a job with a unique key is queued or running, enqueueing that key returns it; once it finished,
/// the key is free.
pub async fn jobs_unique_key_deduplicates_while_live(store: DynStorage) {
    let keyed = |kind: &str| spec(NewJob::new(kind, json!({})).unique_key("report:2030-01"));
    let first = store.enqueue(keyed("first")).await.expect("enqueue works");
    assert_eq!(store.enqueue(keyed("second")).await.expect("enqueue works").id, first.id);
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    assert_eq!(store.enqueue(keyed("third")).await.expect("enqueue works").id, first.id);
    store.complete(&lease, json!({}), None, at(1)).await.expect("complete works");

    let fourth = store.enqueue(keyed("fourth")).await.expect("enqueue works");
    assert_ne!(fourth.id, first.id);
    assert_eq!(all_jobs(&store).await.len(), 2);
}

/// The unique key is asked before the id: enqueueing again a job whose key is live returns the live job (even
/// with an id that exists), while a job without a live key and with an existing id is a `Duplicate`.
pub async fn jobs_enqueue_asks_the_unique_key_before_the_id(store: DynStorage) {
    let keyed = spec(NewJob::new("report", json!({})).unique_key("report:2030-02"));
    let stored = store.enqueue(keyed.clone()).await.expect("enqueue works");
    assert_eq!(store.enqueue(keyed.clone()).await.expect("the live job is returned"), stored);
    assert_eq!(store.enqueue_many(vec![keyed.clone()]).await.expect("the live job is returned"), vec![stored.clone()]);

    // Another job's id with a live key: the key holder answers, nothing is stored.
    let plain = store.enqueue(job("plain")).await.expect("enqueue works");
    let borrowed_id = Job { id: plain.id, ..spec(NewJob::new("report", json!({})).unique_key("report:2030-02")) };
    assert_eq!(store.enqueue(borrowed_id).await.expect("the live job is returned").id, stored.id);
    // Without a live key, an existing id is refused.
    assert_eq!(conflict(store.enqueue(plain.clone()).await), Conflict::Duplicate);
    // Once the keyed job finished, its key is free and the id alone decides.
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    assert_eq!(lease.job_id, stored.id, "the older job is claimed first");
    store.complete(&lease, json!({}), None, at(1)).await.expect("complete works");
    assert_eq!(conflict(store.enqueue(keyed).await), Conflict::Duplicate);
    assert_eq!(all_jobs(&store).await.len(), 2);
}

/// Of 16 concurrent enqueues with one unique key exactly one job is stored, and all get it.
pub async fn jobs_unique_key_concurrent_enqueues_store_one(store: DynStorage) {
    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            let keyed = spec(NewJob::new("tick", json!({ "n": n })).unique_key("cron:nightly:2030-01-01"));
            store.enqueue(keyed).await.expect("enqueue works").id
        });
    }
    let mut ids = HashSet::new();
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.expect("task ran"));
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(all_jobs(&store).await.len(), 1);
}

/// `enqueue_many` stores all jobs or none: a duplicate id anywhere in the batch stores nothing. Unique keys
/// deduplicate within the batch too.
pub async fn jobs_enqueue_many_is_all_or_nothing(store: DynStorage) {
    let existing = job("existing");
    store.enqueue(existing.clone()).await.expect("enqueue works");
    let batch = vec![job("a"), job("b"), existing.clone(), job("c")];
    assert_eq!(conflict(store.enqueue_many(batch).await), Conflict::Duplicate);
    let repeated = job("repeated");
    assert_eq!(conflict(store.enqueue_many(vec![repeated.clone(), repeated]).await), Conflict::Duplicate);
    assert_eq!(all_jobs(&store).await.len(), 1);

    let keyed = |kind: &str| spec(NewJob::new(kind, json!({})).unique_key("batch-key"));
    let stored = store.enqueue_many(vec![job("x"), keyed("k1"), keyed("k2"), job("y")]).await.expect("works");
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[2].id, stored[1].id, "the batch's second keyed job should dedupe to the first");
    assert_eq!(all_jobs(&store).await.len(), 4);
}

/// Counts by queue and state follow every transition, with the oldest queued `run_at`.
pub async fn jobs_counts_by_queue_and_state(store: DynStorage) {
    let in_queue = |queue: &str, run_at| spec(NewJob::new("count", json!({})).queue(queue).run_at(run_at));
    store
        .enqueue_many(vec![in_queue("a", at(5)), in_queue("a", at(1)), in_queue("a", at(9)), in_queue("b", at(2))])
        .await
        .expect("enqueue works");
    let succeed = claim(&store, "a", "w", at(10)).await.lease().expect("running");
    store.complete(&succeed, json!({}), None, at(10)).await.expect("complete works");
    let fail = claim(&store, "a", "w", at(10)).await.lease().expect("running");
    store.fail(&fail, failure("no", Retry::Never), at(10)).await.expect("fail works");
    claim(&store, "a", "w", at(10)).await;
    let cancelled = store.enqueue(in_queue("b", at(50))).await.expect("enqueue works");
    store.cancel(cancelled.id, at(11)).await.expect("cancel works");

    let counts = store.queue_counts().await.expect("counts work");
    let a = QueueCounts { queue: "a".into(), running: 1, succeeded: 1, failed: 1, ..Default::default() };
    let b = QueueCounts {
        queue: "b".into(),
        queued: 1,
        cancelled: 1,
        oldest_queued_run_at: Some(at(2)),
        ..Default::default()
    };
    assert_eq!(counts, [a, b]);
}

/// A completed job keeps its artifact (bytes, content type, file name) and says so in its record.
pub async fn jobs_artifact_round_trip(store: DynStorage) {
    let export = job("users.export");
    store.enqueue(export.clone()).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    let bytes: Vec<u8> = b"email,name\nada@example.com,Ada\n".iter().copied().chain([0, 255, 10]).collect();
    let artifact =
        Artifact { content_type: "text/csv".into(), file_name: Some("users.csv".into()), bytes: bytes.clone() };
    let done = store.complete(&lease, json!({ "rows": 1 }), Some(artifact.clone()), at(1)).await.expect("works");
    let info = ArtifactInfo { content_type: "text/csv".into(), file_name: Some("users.csv".into()), size: 34 };
    assert_eq!(done.artifact, Some(info));
    assert_eq!(store.get_artifact(export.id).await.expect("get works"), Some(artifact));
    assert_eq!(store.get_artifact(JobId::new()).await.expect("get works"), None);
}

/// Pruning deletes finished jobs of the named states that finished before the cut-off, with their
/// artifacts; queued and running jobs are never pruned.
pub async fn jobs_prune_by_age_and_state(store: DynStorage) {
    let old_done = job("old_done");
    let old_failed = job("old_failed");
    let new_done = job("new_done");
    let queued = spec(NewJob::new("queued", json!({})).run_at(at(10_000)));
    let running = job("running");
    store.enqueue_many(vec![old_done.clone(), old_failed.clone(), new_done.clone()]).await.expect("enqueue works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    let artifact = Artifact { content_type: "text/plain".into(), file_name: None, bytes: b"x".to_vec() };
    store.complete(&lease, json!({}), Some(artifact), at(1)).await.expect("complete works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    store.fail(&lease, failure("no", Retry::Never), at(1)).await.expect("fail works");
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    store.complete(&lease, json!({}), None, at(100)).await.expect("complete works");
    store.enqueue_many(vec![queued.clone(), running.clone()]).await.expect("enqueue works");
    claim(&store, "default", "w", at(1)).await;

    let all_states = JobState::ALL;
    assert_eq!(store.prune_jobs(&[JobState::Succeeded], at(50)).await.expect("prune works"), 1);
    assert_eq!(store.get_job(old_done.id).await.expect("get works"), None);
    assert_eq!(store.get_artifact(old_done.id).await.expect("get works"), None);
    assert!(store.get_job(old_failed.id).await.expect("get works").is_some(), "another state was pruned");
    assert_eq!(store.prune_jobs(&all_states, at(50)).await.expect("prune works"), 1);
    assert_eq!(store.prune_jobs(&all_states, at(1_000_000)).await.expect("prune works"), 1);
    let left: HashSet<JobId> = all_jobs(&store).await.into_iter().map(|job| job.id).collect();
    assert_eq!(left, HashSet::from([queued.id, running.id]));
    let counts = store.queue_counts().await.expect("counts work");
    assert_eq!((counts[0].succeeded, counts[0].failed, counts[0].queued, counts[0].running), (0, 0, 1, 1));
}

/// Listing filters by queue, state, kind and creator, and pages by cursor in id order.
pub async fn jobs_list_filters_and_cursor(store: DynStorage) {
    let alice = UserId::new();
    let mut expected_alice = Vec::new();
    for n in 0..25 {
        let mut spec_n = NewJob::new(if n % 2 == 0 { "even" } else { "odd" }, json!({ "n": n }));
        if n % 3 == 0 {
            spec_n = spec_n.created_by(alice).queue("mine");
        }
        let job = spec(spec_n);
        if n % 3 == 0 {
            expected_alice.push(job.id);
        }
        store.enqueue(job).await.expect("enqueue works");
    }
    let mut seen = Vec::new();
    let filter = JobFilter { created_by: Some(alice), ..Default::default() };
    let mut page = PageRequest::first(2);
    loop {
        let batch = store.list_jobs(&filter, &page).await.expect("list works");
        seen.extend(batch.items.iter().map(|job| job.id));
        match batch.next_cursor {
            Some(cursor) => page = PageRequest::after(cursor, 2),
            None => break,
        }
    }
    assert_eq!(seen, expected_alice);

    let count = |filter: JobFilter| {
        let store = store.clone();
        async move { store.list_jobs(&filter, &PageRequest::first(500)).await.expect("list works").items.len() }
    };
    assert_eq!(count(JobFilter { kind: Some("even".into()), ..Default::default() }).await, 13);
    assert_eq!(count(JobFilter { queue: Some("mine".into()), ..Default::default() }).await, 9);
    claim(&store, "default", "w", t0()).await;
    assert_eq!(count(JobFilter { state: Some(JobState::Running), ..Default::default() }).await, 1);
    assert_eq!(
        count(JobFilter { state: Some(JobState::Queued), queue: Some("default".into()), ..Default::default() }).await,
        15
    );
}

/// A cancelled job can be retried; a succeeded one cannot; nor can a job whose unique key another live job
/// holds (`Duplicate`), which stays as it was.
pub async fn jobs_retry_of_cancelled_succeeded_and_key_held(store: DynStorage) {
    let cancelled = store.enqueue(job("cancel_me")).await.expect("enqueue works");
    store.cancel(cancelled.id, at(1)).await.expect("cancel works");
    let retried = store.retry(cancelled.id, at(2)).await.expect("a cancelled job can be retried");
    assert_eq!((retried.state, retried.attempt, retried.run_at), (JobState::Queued, 0, at(2)));

    let done = claim(&store, "default", "w", at(2)).await.lease().expect("running");
    store.complete(&done, json!({}), None, at(3)).await.expect("complete works");
    assert_eq!(conflict(store.retry(cancelled.id, at(4)).await), Conflict::InvalidState);
    assert_eq!(get(&store, cancelled.id).await.state, JobState::Succeeded);

    let keyed = |kind: &str| spec(NewJob::new(kind, json!({})).unique_key("nightly"));
    let first = store.enqueue(keyed("first")).await.expect("enqueue works");
    store.cancel(first.id, at(5)).await.expect("cancel works");
    let second = store.enqueue(keyed("second")).await.expect("the key is free once the first is cancelled");
    assert_ne!(second.id, first.id);
    assert_eq!(conflict(store.retry(first.id, at(6)).await), Conflict::Duplicate);
    assert_eq!(get(&store, first.id).await.state, JobState::Cancelled);
}

/// Retrying a failed or cancelled job queues it with a fresh attempt budget; other states are refused.
pub async fn jobs_retry_gives_failed_job_fresh_budget(store: DynStorage) {
    let new = spec(NewJob::new("retry_me", json!({})).max_attempts(1).unique_key("only-one"));
    store.enqueue(new.clone()).await.expect("enqueue works");
    assert_eq!(conflict(store.retry(new.id, t0()).await), Conflict::InvalidState);
    let lease = claim(&store, "default", "w", t0()).await.lease().expect("running");
    assert_eq!(conflict(store.retry(new.id, t0()).await), Conflict::InvalidState);
    store.fail(&lease, failure("broken", Retry::After(Duration::ZERO)), at(1)).await.expect("fail works");
    assert_eq!(get(&store, new.id).await.state, JobState::Failed);

    let retried = store.retry(new.id, at(5)).await.expect("retry works");
    assert_eq!(
        (retried.state, retried.attempt, retried.run_at, retried.finished_at),
        (JobState::Queued, 0, at(5), None)
    );
    assert_eq!(store.enqueue(spec(NewJob::new("dup", json!({})).unique_key("only-one"))).await.expect("ok").id, new.id);
    assert_eq!(claim(&store, "default", "w", at(5)).await.attempt, 1);
    assert!(matches!(store.retry(JobId::new(), at(5)).await, Err(StoreError::NotFound)));
}

/// Discarding a payload clears it on a finished job only, keeping the rest; unfinished jobs keep theirs.
pub async fn jobs_discard_payload_only_when_finished(store: DynStorage) {
    let queued = store.enqueue(job("users.import")).await.expect("enqueued");
    assert_eq!(conflict(store.discard_job_payload(queued.id).await), Conflict::InvalidState);
    assert_eq!(get(&store, queued.id).await.payload, queued.payload);
    let running = claim(&store, &queued.queue, "w1", t0()).await;
    assert_eq!(conflict(store.discard_job_payload(running.id).await), Conflict::InvalidState);
    let lease = running.lease().expect("leased");
    let done = store.complete(&lease, json!({ "created": 1 }), None, at(1)).await.expect("completed");
    store.discard_job_payload(done.id).await.expect("discarded");
    let after = get(&store, done.id).await;
    assert_eq!(after.payload, serde_json::Value::Null);
    assert_eq!(Job { payload: serde_json::Value::Null, ..done.clone() }, after, "nothing else changed");
    assert!(matches!(store.discard_job_payload(JobId::new()).await, Err(StoreError::NotFound)));
}
