//! Rules of [`BuildStore`](crate::storage::BuildStore).

use tokio::task::JoinSet;

use super::fixtures::{all_jobs, at, conflict, job, t0};
use crate::model::{
    Build, BuildFilter, BuildId, BuildOutcome, BuildStatus, LogLine, LogStream, Module, ModuleStatus, NewLogLine,
    OutcomeFilter, PageRequest, UserId,
};
use crate::storage::{Conflict, DynStorage, StoreError};

fn build(project: &str) -> Build {
    Build::new(project, "main", vec![Module::new("compile"), Module::new("test")], t0())
}

fn line(text: &str) -> NewLogLine {
    NewLogLine { at: at(1), module: Some("compile".into()), stream: LogStream::Stdout, text: text.to_owned() }
}

/// Builds read back as stored with version 1; updates are versioned and a stale one changes nothing.
pub async fn builds_insert_get_and_versioned_update(store: DynStorage) {
    let new = build("web");
    let stored = store.insert_builds(vec![new.clone()], vec![]).await.expect("insert works").remove(0);
    assert_eq!(stored, Build { version: 1, ..new });
    assert_eq!(store.get_build(stored.id).await.expect("get works"), Some(stored.clone()));
    assert_eq!(store.get_build(BuildId::new()).await.expect("get works"), None);

    let mut running = stored.clone();
    running.status = BuildStatus::Running;
    running.modules[0].progress = 40;
    let updated = store.update_build(running, 1).await.expect("update works");
    assert_eq!((updated.version, updated.modules[0].progress), (2, 40));

    let stale = Build { status: BuildStatus::Cancelled, ..stored.clone() };
    assert_eq!(conflict(store.update_build(stale, 1).await), Conflict::VersionMismatch);
    assert_eq!(store.get_build(stored.id).await.expect("get works"), Some(updated));
    assert!(matches!(store.update_build(build("ghost"), 1).await, Err(StoreError::NotFound)));
}

/// A batch of builds and their jobs is stored all together or not at all.
pub async fn builds_batch_insert_is_all_or_nothing(store: DynStorage) {
    let existing = store.insert_builds(vec![build("api")], vec![]).await.expect("insert works").remove(0);
    let refused = store.insert_builds(vec![build("a"), existing.clone(), build("b")], vec![job("build.run")]).await;
    assert_eq!(conflict(refused), Conflict::Duplicate);
    let page = store.list_builds(&BuildFilter::default(), &PageRequest::first(50)).await.expect("list works");
    assert_eq!(page.items.len(), 1);
    assert!(all_jobs(&store).await.is_empty());

    let stored = store.insert_builds(vec![build("a"), build("b")], vec![job("build.run"), job("build.run")]).await;
    assert_eq!(stored.expect("insert works").len(), 2);
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.len(), 2);

    // A follow-up job that cannot be stored (its id exists) refuses the builds too, and changes no job.
    let orphan = build("orphan");
    let refused = store.insert_builds(vec![orphan.clone()], vec![jobs[0].clone()]).await;
    assert_eq!(conflict(refused), Conflict::Duplicate);
    assert_eq!(store.get_build(orphan.id).await.expect("get works"), None);
    assert_eq!(all_jobs(&store).await, jobs);
}

/// Log lines are numbered from 0 in append order and read back by offset and limit.
pub async fn builds_log_append_and_read_by_offset(store: DynStorage) {
    let id = store.insert_builds(vec![build("log")], vec![]).await.expect("insert works")[0].id;
    assert_eq!(store.append_log(id, vec![line("one"), line("two")]).await.expect("append works"), 2);
    assert_eq!(store.append_log(id, vec![line("three")]).await.expect("append works"), 3);
    assert_eq!(store.append_log(id, vec![]).await.expect("append works"), 3);

    let all = store.read_log(id, 0, 100).await.expect("read works");
    assert_eq!(
        all.iter().map(|line| (line.seq, line.text.as_str())).collect::<Vec<_>>(),
        [(0, "one"), (1, "two"), (2, "three")]
    );
    assert_eq!((all[0].module.as_deref(), all[0].stream, all[0].at), (Some("compile"), LogStream::Stdout, at(1)));
    let tail = store.read_log(id, 1, 1).await.expect("read works");
    assert_eq!(tail.iter().map(|line| line.seq).collect::<Vec<_>>(), [1]);
    assert!(store.read_log(id, 3, 10).await.expect("read works").is_empty());
    assert!(store.read_log(id, u64::MAX, 10).await.expect("read works").is_empty());
    assert!(matches!(store.append_log(BuildId::new(), vec![line("x")]).await, Err(StoreError::NotFound)));

    // A large batch (a busy module's 100 ms) numbers on just the same.
    let many: Vec<NewLogLine> = (0..1_000).map(|n| line(&format!("many {n}"))).collect();
    assert_eq!(store.append_log(id, many).await.expect("append works"), 1_003);
    let read = store.read_log(id, 3, 2_000).await.expect("read works");
    assert_eq!(read.len(), 1_000);
    assert!(read.iter().enumerate().all(|(n, line)| line.seq == 3 + n as u64 && line.text == format!("many {n}")));
}

/// Concurrent appends interleave whole batches, with no gap and no repeated `seq`.
pub async fn builds_concurrent_log_appends_have_no_gaps(store: DynStorage) {
    let id = store.insert_builds(vec![build("busy")], vec![]).await.expect("insert works")[0].id;
    let mut tasks = JoinSet::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            for n in 0..25 {
                let batch = vec![line(&format!("{writer}:{n}:a")), line(&format!("{writer}:{n}:b"))];
                store.append_log(id, batch).await.expect("append works");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task ran");
    }
    let log = store.read_log(id, 0, 1_000).await.expect("read works");
    assert_eq!(log.len(), 400);
    assert!(log.iter().enumerate().all(|(n, line)| line.seq == n as u64));
    for pair in log.chunks(2) {
        assert_eq!(pair[0].text.trim_end_matches('a'), pair[1].text.trim_end_matches('b'), "a batch was split");
    }
}

/// Listing filters by project, status and creator, in id order.
pub async fn builds_list_filters(store: DynStorage) {
    let owner = UserId::new();
    let mut mine = build("web");
    mine.created_by = Some(owner);
    let mut failed = build("web");
    failed.status = BuildStatus::Failed;
    store.insert_builds(vec![mine.clone(), failed.clone(), build("api")], vec![]).await.expect("insert works");

    let ids = |filter: BuildFilter| {
        let store = store.clone();
        async move {
            let page = store.list_builds(&filter, &PageRequest::first(50)).await.expect("list works");
            page.items.into_iter().map(|build| build.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(BuildFilter { project: Some("web".into()), ..Default::default() }).await, [mine.id, failed.id]);
    assert_eq!(ids(BuildFilter { status: Some(BuildStatus::Failed), ..Default::default() }).await, [failed.id]);
    assert_eq!(ids(BuildFilter { created_by: Some(owner), ..Default::default() }).await, [mine.id]);
}

/// Truncation deletes the named lines and replaces the marker's, without renumbering: the next append numbers
/// on from the log's length.
pub async fn builds_truncate_log_drops_lines_and_keeps_numbering(store: DynStorage) {
    let id = store.insert_builds(vec![build("cap")], vec![]).await.expect("insert works")[0].id;
    let lines = (0..6).map(|n| line(&format!("l{n}"))).collect();
    assert_eq!(store.append_log(id, lines).await.expect("append works"), 6);
    let marker = LogLine {
        seq: 2,
        at: at(2),
        module: Some("compile".into()),
        stream: LogStream::System,
        text: "2 lines dropped".into(),
    };
    store.truncate_log(id, marker.clone(), vec![3, 4, 99]).await.expect("truncate works");
    let log = store.read_log(id, 0, 100).await.expect("read works");
    assert_eq!(log.iter().map(|line| line.seq).collect::<Vec<_>>(), [0, 1, 2, 5]);
    assert_eq!(log[2], marker);
    assert_eq!(store.read_log(id, 3, 1).await.expect("read works")[0].seq, 5);
    assert_eq!(store.append_log(id, vec![line("l6")]).await.expect("append works"), 7);
    assert_eq!(store.read_log(id, 6, 10).await.expect("read works")[0].text, "l6");
    let missing = store.truncate_log(BuildId::new(), marker, vec![1]).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

/// Counts per status follow inserts and updates, in status order, without zero entries.
pub async fn builds_counts_by_status(store: DynStorage) {
    assert!(store.build_counts().await.expect("counts work").is_empty());
    let mut failed = build("x");
    failed.status = BuildStatus::Failed;
    let stored = store.insert_builds(vec![build("a"), build("b"), failed], vec![]).await.expect("insert works");
    assert_eq!(store.build_counts().await.expect("counts work"), [(BuildStatus::Queued, 2), (BuildStatus::Failed, 1)]);
    let running = Build { status: BuildStatus::Running, ..stored[0].clone() };
    store.update_build(running, 1).await.expect("update works");
    assert_eq!(
        store.build_counts().await.expect("counts work"),
        [(BuildStatus::Queued, 1), (BuildStatus::Running, 1), (BuildStatus::Failed, 1)]
    );
}

/// A build stored finished has its outcome kept (filtered by project and finish time); stored unfinished
/// again, the outcome is gone.
pub async fn builds_outcomes_follow_finished_builds(store: DynStorage) {
    let mut web = build("web");
    web.status = BuildStatus::Succeeded;
    web.started_at = Some(at(1));
    web.finished_at = Some(at(11));
    web.modules[0].status = ModuleStatus::Succeeded;
    let api = build("api");
    let stored = store.insert_builds(vec![web.clone(), api], vec![]).await.expect("insert works");
    let all = store.build_outcomes(&OutcomeFilter::default()).await.expect("outcomes work");
    assert_eq!(all, [BuildOutcome::of(&stored[0]).expect("finished")]);
    assert_eq!(all[0].duration_ms, Some(10_000));

    let mut api = stored[1].clone();
    api.status = BuildStatus::Failed;
    api.finished_at = Some(at(20));
    let api = store.update_build(api, 1).await.expect("update works");
    let by_project = OutcomeFilter { project: Some("api".into()), ..Default::default() };
    assert_eq!(
        store.build_outcomes(&by_project).await.expect("outcomes work"),
        [BuildOutcome::of(&api).expect("finished")]
    );
    let recent = OutcomeFilter { since: Some(at(15)), ..Default::default() };
    assert_eq!(store.build_outcomes(&recent).await.expect("outcomes work").len(), 1);

    let rerun = Build { status: BuildStatus::Running, finished_at: None, ..api };
    store.update_build(rerun, 2).await.expect("update works");
    assert!(store.build_outcomes(&by_project).await.expect("outcomes work").is_empty());
    assert_eq!(store.build_outcomes(&OutcomeFilter::default()).await.expect("outcomes work").len(), 1);
}

/// The newest build of every project, in project order.
pub async fn builds_latest_per_project(store: DynStorage) {
    assert!(store.latest_builds().await.expect("latest works").is_empty());
    let (old_web, api, new_web) = (build("web"), build("api"), build("web"));
    store.insert_builds(vec![old_web, api.clone()], vec![]).await.expect("insert works");
    store.insert_builds(vec![new_web.clone()], vec![]).await.expect("insert works");
    let latest = store.latest_builds().await.expect("latest works");
    assert_eq!(latest.iter().map(|build| build.id).collect::<Vec<_>>(), [api.id, new_web.id]);
}
