//! The build service end to end on the store under test: the rules of [`BuildStore`](crate::storage::BuildStore)
//! as the runner, the log writer and statistics use them together, with real processes.

use std::time::Duration;

use crate::builds::{BUILD_QUEUE, LogQuery, NewBuild, NewModule, ProcessExecutor};
use crate::jobs::{Backoff, WorkerConfig};
use crate::model::{Build, BuildId, BuildStatus, ModuleStatus, OutcomeFilter};
use crate::storage::DynStorage;
use crate::{Actor, BuildConfig, Config, TechHub};

async fn finished(hub: &TechHub, id: BuildId) -> Build {
    for _ in 0..3_000 {
        let build = hub.builds().get(&Actor::System, id).await.expect("the build exists");
        if build.status.is_finished() {
            return build;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the build never finished");
}

/// A build runs its DAG on this store: order, a failure skipping its dependent, logs read by offset in pages
/// without gap or repeat, a retry of the failed module, the log cap, and statistics from the kept outcomes.
pub async fn builds_run_end_to_end_through_the_service(store: DynStorage) {
    let backoff = Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(10), jitter: 0.0 };
    let config = BuildConfig::default().retry_backoff(backoff).log_head_lines(20).log_max_bytes(2_000);
    let hub = TechHub::builder()
        .shared_storage(store)
        .config(Config::default().builds(config))
        .build_executor(ProcessExecutor::new().grace(Duration::from_millis(200)))
        .build()
        .expect("hub builds");
    let mut workers = WorkerConfig::default().queue(BUILD_QUEUE, 1);
    workers.poll_interval = Duration::from_millis(20);
    let _workers = hub.start_workers(workers).expect("workers start");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flag = dir.path().join("fixed");
    let spec = NewBuild::new(
        "conformance",
        vec![
            NewModule::new("lines").command("i=1; while [ $i -le 300 ]; do echo line $i; i=$((i+1)); done"),
            NewModule::new("check").command(format!("test -f {}", flag.display())).depends_on(["lines"]),
            NewModule::new("after").command("echo after").depends_on(["check"]),
        ],
    );
    let build = hub.builds().create(&Actor::System, spec).await.expect("created");
    let build = finished(&hub, build.id).await;
    assert_eq!(build.status, BuildStatus::Failed);
    let statuses: Vec<ModuleStatus> = build.modules.iter().map(|module| module.status).collect();
    assert_eq!(statuses, [ModuleStatus::Succeeded, ModuleStatus::Failed, ModuleStatus::Skipped]);

    // Pages of 7 from offset 0: what the cap kept, in order, each line once.
    let mut offset = 0;
    let mut texts = Vec::new();
    loop {
        let query = LogQuery { module: Some("lines".into()), offset, limit: Some(7) };
        let page = hub.builds().read_log(&Actor::System, build.id, &query).await.expect("reads");
        if page.lines.is_empty() {
            assert!(page.truncated);
            break;
        }
        assert!(page.lines.iter().all(|line| line.seq >= offset));
        offset = page.next_offset;
        texts.extend(page.lines.into_iter().map(|line| line.text));
    }
    assert_eq!(texts[..20], (1..=20).map(|n| format!("line {n}")).collect::<Vec<_>>()[..]);
    assert!(texts[20].contains("lines dropped"), "{}", texts[20]);
    assert_eq!(texts.last().map(String::as_str), Some("line 300"));

    std::fs::write(&flag, "").expect("the flag is written");
    hub.builds().retry_module(&Actor::System, build.id, "check").await.expect("retried");
    let build = finished(&hub, build.id).await;
    assert_eq!(build.status, BuildStatus::Succeeded);
    assert_eq!(build.module("check").map(|module| module.attempt), Some(2));

    let overview = hub.builds().overview(&Actor::System, &OutcomeFilter::default()).await.expect("overview");
    assert_eq!((overview.total, overview.success_rate), (1, Some(1.0)));
    let modules = hub.builds().module_stats(&Actor::System, &OutcomeFilter::default()).await.expect("stats");
    assert_eq!(modules.len(), 3);
    let progress = hub.builds().progress(&Actor::System).await.expect("progress");
    assert_eq!((progress.len(), progress[0].status), (1, BuildStatus::Succeeded));
}
