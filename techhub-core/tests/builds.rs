//! Builds end to end over the memory store with real processes (`sh -c`): the DAG walk, skips, allow_failure,
//! fail_fast, timeouts, cancel of a whole process group, retries (manual and automatic), crash resume, logs
//! (offsets and the cap), statistics, external executors, batches and the policy.
//!
//! Waits are bounded polls of the stored build (they fail after a minute); no assertion depends on timing.

use std::path::Path;
use std::time::Duration;

use techhub_core::builds::{LogQuery, NewBuild, NewModule, ProcessExecutor};
use techhub_core::clock::ManualClock;
use techhub_core::events::EventKind;
use techhub_core::jobs::{Backoff, WorkerConfig, WorkerHandle};
use techhub_core::model::{
    Build, BuildFilter, BuildId, BuildStatus, LogStream, ModuleStatus, OutcomeFilter, PageRequest, Role, UserId,
};
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, BuildConfig, Config, ErrorKind, TechHub};
use techhub_store_memory::MemoryStore;

const SYSTEM: Actor = Actor::System;

fn build_config() -> BuildConfig {
    BuildConfig::default().retry_backoff(Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(50),
        jitter: 0.0,
    })
}

fn hub_on(store: DynStorage, config: BuildConfig) -> TechHub {
    TechHub::builder()
        .shared_storage(store)
        .config(Config::default().builds(config))
        .build_executor(ProcessExecutor::new().grace(Duration::from_millis(300)))
        .build()
        .expect("hub builds")
}

fn workers(hub: &TechHub) -> WorkerHandle {
    let mut config = WorkerConfig::default().queue("builds", 2);
    config.poll_interval = Duration::from_millis(50);
    config.rescue_interval = Duration::from_millis(100);
    config.lease = Duration::from_secs(1);
    config.heartbeat_interval = Duration::from_millis(200);
    config.retention = None;
    hub.start_workers(config).expect("workers start")
}

fn running_hub(config: BuildConfig) -> (TechHub, WorkerHandle) {
    let hub = hub_on(std::sync::Arc::new(MemoryStore::new()), config);
    let handle = workers(&hub);
    (hub, handle)
}

fn module(name: &str, command: &str) -> NewModule {
    NewModule::new(name).command(command)
}

async fn wait_until(hub: &TechHub, id: BuildId, what: &str, done: impl Fn(&Build) -> bool) -> Build {
    for _ in 0..3_000 {
        let build = hub.builds().get(&SYSTEM, id).await.expect("the build exists");
        if done(&build) {
            return build;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the build never got {what}");
}

async fn finished(hub: &TechHub, id: BuildId) -> Build {
    wait_until(hub, id, "finished", |build| build.status.is_finished()).await
}

fn status(build: &Build, name: &str) -> ModuleStatus {
    build.module(name).expect("the module exists").status
}

async fn log_texts(hub: &TechHub, id: BuildId, module: Option<&str>) -> Vec<String> {
    let query = LogQuery { module: module.map(str::to_owned), offset: 0, limit: None };
    let page = hub.builds().read_log(&SYSTEM, id, &query).await.expect("log reads");
    page.lines.into_iter().map(|line| line.text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_runs_in_order_and_independent_modules_overlap() {
    let (hub, _workers) = running_hub(build_config());
    let mut events = hub.subscribe();
    let spec = NewBuild::new(
        "web",
        vec![
            module("a", "sleep 0.4; echo a done"),
            module("b", "sleep 0.4; echo b done"),
            module("c", "echo c done").depends_on(["a", "b"]),
        ],
    );
    let build = hub.builds().create(&SYSTEM, spec).await.expect("created");
    let build = finished(&hub, build.id).await;
    assert_eq!(build.status, BuildStatus::Succeeded);
    let (a, b, c) = (build.module("a").unwrap(), build.module("b").unwrap(), build.module("c").unwrap());
    assert!(a.started_at < b.finished_at && b.started_at < a.finished_at, "a and b ran at the same time");
    assert!(c.started_at >= a.finished_at && c.started_at >= b.finished_at, "c waited for a and b");
    assert_eq!((a.exit_code, c.attempt, build.progress), (Some(0), 1, 100));
    assert_eq!(log_texts(&hub, build.id, Some("c")).await, ["c done"]);

    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.subject == *build.id.as_uuid() && event.kind != EventKind::BuildLog {
            kinds.push((event.kind, event.data["module"].as_str().map(str::to_owned)));
        }
    }
    for name in ["a", "b", "c"] {
        assert!(kinds.contains(&(EventKind::ModuleStarted, Some(name.to_owned()))));
        assert!(kinds.contains(&(EventKind::ModuleSucceeded, Some(name.to_owned()))));
    }
    assert_eq!(kinds.first().map(|kind| kind.0), Some(EventKind::BuildQueued));
    assert_eq!(kinds.last().map(|kind| kind.0), Some(EventKind::BuildSucceeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_skips_its_dependents_three_levels_deep_and_independent_branches_run_on() {
    let (hub, _workers) = running_hub(build_config());
    let spec = NewBuild::new(
        "web",
        vec![
            module("a", "echo broken >&2; exit 3"),
            module("b", "true").depends_on(["a"]),
            module("c", "true").depends_on(["b"]),
            module("d", "true").depends_on(["c"]),
            module("e", "true"),
        ],
    );
    let build = finished(&hub, hub.builds().create(&SYSTEM, spec).await.expect("created").id).await;
    assert_eq!(build.status, BuildStatus::Failed);
    let a = build.module("a").unwrap();
    assert_eq!(
        (a.status, a.exit_code, a.message.as_deref()),
        (ModuleStatus::Failed, Some(3), Some("exited with code 3"))
    );
    for name in ["b", "c", "d"] {
        assert_eq!(status(&build, name), ModuleStatus::Skipped, "{name}");
        assert_eq!(build.module(name).unwrap().attempt, 0);
    }
    assert_eq!(status(&build, "e"), ModuleStatus::Succeeded);
    let lines = hub.builds().read_log(&SYSTEM, build.id, &LogQuery::default()).await.expect("reads").lines;
    assert!(lines.iter().any(|line| line.stream == LogStream::Stderr && line.text == "broken"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_failure_unblocks_dependents_and_keeps_the_build_green() {
    let (hub, _workers) = running_hub(build_config());
    let mut lint = module("lint", "exit 1");
    lint.allow_failure = true;
    let spec = NewBuild::new("web", vec![lint, module("test", "true").depends_on(["lint"])]);
    let build = finished(&hub, hub.builds().create(&SYSTEM, spec).await.expect("created").id).await;
    assert_eq!(build.status, BuildStatus::Succeeded);
    assert_eq!((status(&build, "lint"), status(&build, "test")), (ModuleStatus::Failed, ModuleStatus::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_cancels_running_siblings_and_what_never_started() {
    let (hub, _workers) = running_hub(build_config().module_concurrency(2));
    let mut spec = NewBuild::new(
        "web",
        vec![module("quick", "sleep 0.2; exit 1"), module("slow", "sleep 30"), module("later", "sleep 30")],
    );
    spec.fail_fast = Some(true);
    let build = finished(&hub, hub.builds().create(&SYSTEM, spec).await.expect("created").id).await;
    assert_eq!(build.status, BuildStatus::Failed);
    assert_eq!(status(&build, "quick"), ModuleStatus::Failed);
    assert_eq!(status(&build, "slow"), ModuleStatus::Cancelled);
    assert_eq!(status(&build, "later"), ModuleStatus::Cancelled);
    assert_eq!(build.module("later").unwrap().attempt, 0, "never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_past_its_timeout_is_stopped_and_timed_out() {
    let (hub, _workers) = running_hub(build_config());
    let mut slow = module("slow", "sleep 30");
    slow.timeout_s = Some(1);
    let spec = NewBuild::new("web", vec![slow, module("after", "true").depends_on(["slow"]), module("other", "true")]);
    let build = finished(&hub, hub.builds().create(&SYSTEM, spec).await.expect("created").id).await;
    assert_eq!(build.status, BuildStatus::Failed);
    let slow = build.module("slow").unwrap();
    assert_eq!((slow.status, slow.message.as_deref()), (ModuleStatus::TimedOut, Some("timed out after 1 s")));
    assert_eq!(status(&build, "after"), ModuleStatus::Skipped);
    assert_eq!(status(&build, "other"), ModuleStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_past_its_own_timeout_ends_timed_out() {
    let (hub, _workers) = running_hub(build_config());
    let mut spec = NewBuild::new("web", vec![module("slow", "sleep 30"), module("after", "true").depends_on(["slow"])]);
    spec.timeout_s = Some(1);
    let build = finished(&hub, hub.builds().create(&SYSTEM, spec).await.expect("created").id).await;
    assert_eq!(build.status, BuildStatus::TimedOut);
    assert_eq!((status(&build, "slow"), status(&build, "after")), (ModuleStatus::TimedOut, ModuleStatus::Skipped));
    assert!(build.duration_ms().is_some_and(|ms| ms >= 1_000));
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waits only for its parent to read its status: it runs nothing.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn read_pid(path: &Path) -> u32 {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the command never wrote its child's pid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_whole_process_group_even_a_child_ignoring_sigterm() {
    let (hub, _workers) = running_hub(build_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("child.pid");
    // The child ignores SIGTERM (as does the shell), so only the SIGKILL after the grace period ends them.
    let command = format!(
        "trap '' TERM; (trap '' TERM; while true; do sleep 0.05; done) & echo $! > {}; wait",
        pid_file.display()
    );
    let spec =
        NewBuild::new("web", vec![module("stubborn", &command), module("next", "true").depends_on(["stubborn"])]);
    let build = hub.builds().create(&SYSTEM, spec).await.expect("created");
    let child = read_pid(&pid_file).await;
    assert!(!process_gone(child), "the child runs");
    let requested = hub.builds().cancel(&SYSTEM, build.id).await.expect("cancel accepted");
    assert!(requested.cancel_requested && requested.status == BuildStatus::Running);
    let build = finished(&hub, build.id).await;
    assert_eq!(build.status, BuildStatus::Cancelled);
    // A cancelled dependency skips its dependents, as any dependency that did not succeed does.
    assert_eq!((status(&build, "stubborn"), status(&build, "next")), (ModuleStatus::Cancelled, ModuleStatus::Skipped));
    for _ in 0..100 {
        if process_gone(child) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(process_gone(child), "the child that ignored SIGTERM was killed");
    let again = hub.builds().cancel(&SYSTEM, build.id).await.expect_err("finished");
    assert_eq!(again.kind(), ErrorKind::Conflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_module_reruns_it_and_its_skipped_dependents() {
    let (hub, _workers) = running_hub(build_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let flag = dir.path().join("ready");
    let spec = NewBuild::new(
        "web",
        vec![
            module("compile", &format!("test -f {}", flag.display())),
            module("test", "true").depends_on(["compile"]),
            module("docs", "true"),
        ],
    );
    let build = finished(&hub, hub.builds().create(&SYSTEM, spec).await.expect("created").id).await;
    assert_eq!((build.status, status(&build, "test")), (BuildStatus::Failed, ModuleStatus::Skipped));
    let refused = hub.builds().retry_module(&SYSTEM, build.id, "docs").await.expect_err("docs succeeded");
    assert_eq!(refused.kind(), ErrorKind::Conflict);

    std::fs::write(&flag, "").expect("flag written");
    let retried = hub.builds().retry_module(&SYSTEM, build.id, "compile").await.expect("retry accepted");
    assert_eq!(retried.status, BuildStatus::Running);
    let build = finished(&hub, build.id).await;
    assert_eq!(build.status, BuildStatus::Succeeded);
    let compile = build.module("compile").unwrap();
    assert_eq!((compile.status, compile.attempt), (ModuleStatus::Succeeded, 2));
    assert_eq!((status(&build, "test"), build.module("test").unwrap().attempt), (ModuleStatus::Succeeded, 1));
    assert_eq!(build.module("docs").unwrap().attempt, 1, "docs did not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_retries_run_a_failed_module_again() {
    let (hub, _workers) = running_hub(build_config());
    let dir = tempfile::tempdir().expect("temp dir");
    let counter = dir.path().join("count");
    let command = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo attempt $n; test $n -ge 3",
        c = counter.display()
    );
    let mut flaky = module("flaky", &command);
    flaky.retries = Some(2);
    let mut hopeless = module("hopeless", "exit 2");
    hopeless.retries = Some(1);
    let spec = NewBuild::new("web", vec![flaky, hopeless]);
    let build = finished(&hub, hub.builds().create(&SYSTEM, spec).await.expect("created").id).await;
    let flaky = build.module("flaky").unwrap();
    assert_eq!((flaky.status, flaky.attempt, flaky.retries_used), (ModuleStatus::Succeeded, 3, 2));
    let hopeless = build.module("hopeless").unwrap();
    assert_eq!((hopeless.status, hopeless.attempt), (ModuleStatus::Failed, 2));
    assert_eq!(log_texts(&hub, build.id, Some("flaky")).await, ["attempt 1", "attempt 2", "attempt 3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_runtime_died_is_taken_up_from_its_stored_state() {
    let store: DynStorage = std::sync::Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let counter = dir.path().join("count");
    let first = hub_on(store.clone(), build_config());
    let crashed = workers(&first);
    // `long` hangs on its first run (and records its pid); on the second it succeeds.
    let long = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; if [ $n -eq 1 ]; then echo $$ > {p}; sleep 60; fi",
        c = counter.display(),
        p = pid_file.display()
    );
    let mut long = module("long", &long);
    long.retries = Some(1);
    let spec = NewBuild::new(
        "web",
        vec![module("first", "true"), long.depends_on(["first"]), module("last", "true").depends_on(["long"])],
    );
    let build = first.builds().create(&SYSTEM, spec).await.expect("created");
    let shell = read_pid(&pid_file).await;
    drop(crashed);
    for _ in 0..200 {
        if process_gone(shell) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(process_gone(shell), "dropping the runtime killed the module's processes");
    let stored = first.builds().get(&SYSTEM, build.id).await.expect("exists");
    assert_eq!((stored.status, status(&stored, "long")), (BuildStatus::Running, ModuleStatus::Running));

    let second = hub_on(store, build_config());
    let _rescuer = workers(&second);
    let build = finished(&second, build.id).await;
    assert_eq!(build.status, BuildStatus::Succeeded);
    assert_eq!(build.module("first").unwrap().attempt, 1, "finished modules are not run again");
    let long = build.module("long").unwrap();
    assert_eq!((long.status, long.attempt), (ModuleStatus::Succeeded, 2));
    assert_eq!(status(&build, "last"), ModuleStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_read_by_offset_while_written_never_miss_or_repeat_a_line() {
    let (hub, _workers) = running_hub(build_config());
    let command =
        "i=1; while [ $i -le 3000 ]; do echo line $i; if [ $((i % 300)) -eq 0 ]; then sleep 0.05; fi; i=$((i+1)); done";
    let build =
        hub.builds().create(&SYSTEM, NewBuild::new("web", vec![module("spam", command)])).await.expect("created");
    let mut offset = 0;
    let mut seen: Vec<(u64, String)> = Vec::new();
    loop {
        let done = hub.builds().get(&SYSTEM, build.id).await.expect("exists").status.is_finished();
        let query = LogQuery { module: None, offset, limit: Some(97) };
        let page = hub.builds().read_log(&SYSTEM, build.id, &query).await.expect("reads");
        seen.extend(page.lines.iter().map(|line| (line.seq, line.text.clone())));
        offset = page.next_offset;
        if done && page.lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected: Vec<(u64, String)> = (1..=3000).map(|n| (n - 1, format!("line {n}"))).collect();
    assert_eq!(seen, expected);
    let past = LogQuery { module: None, offset: 3_001, limit: None };
    let error = hub.builds().read_log(&SYSTEM, build.id, &past).await.expect_err("past the end");
    assert_eq!((error.kind(), error.fields()[0].field.as_str()), (ErrorKind::InvalidInput, "offset"));
    let at_end = LogQuery { module: None, offset: 3_000, limit: None };
    assert!(hub.builds().read_log(&SYSTEM, build.id, &at_end).await.expect("at the end").lines.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_cap_keeps_the_head_a_rolling_tail_and_one_marker() {
    let (hub, _workers) = running_hub(build_config().log_head_lines(10).log_max_bytes(1_000));
    let command = "i=1; while [ $i -le 500 ]; do echo l$i; i=$((i+1)); done";
    let build =
        hub.builds().create(&SYSTEM, NewBuild::new("web", vec![module("noisy", command)])).await.expect("created");
    let build = finished(&hub, build.id).await;
    let page = hub.builds().read_log(&SYSTEM, build.id, &LogQuery::default()).await.expect("reads");
    assert!(page.truncated);
    let texts: Vec<&str> = page.lines.iter().map(|line| line.text.as_str()).collect();
    let head: Vec<String> = (1..=10).map(|n| format!("l{n}")).collect();
    assert_eq!(texts[..10], head.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    let markers: Vec<_> = page.lines.iter().filter(|line| line.stream == LogStream::System).collect();
    assert_eq!(markers.len(), 1, "one marker line");
    assert_eq!(page.lines[10].stream, LogStream::System);
    let kept_tail = &texts[11..];
    assert_eq!(kept_tail.last(), Some(&"l500"));
    let dropped = 500 - 10 - kept_tail.len();
    assert!(markers[0].text.starts_with(&format!("[{dropped} lines dropped")), "{}", markers[0].text);
    let tail_numbers: Vec<usize> = kept_tail.iter().map(|text| text[1..].parse().expect("a number")).collect();
    assert!(tail_numbers.windows(2).all(|pair| pair[1] == pair[0] + 1), "the tail is the newest lines, in order");
    let kept_bytes: usize =
        page.lines.iter().filter(|line| line.stream != LogStream::System).map(|line| line.text.len() + 1).sum();
    assert!(kept_bytes <= 1_000, "{kept_bytes} bytes kept");
}

/// A hub without an executor, driven by hand (external executor) on a manual clock.
fn manual_hub() -> (TechHub, ManualClock) {
    let clock = ManualClock::at_epoch();
    let hub = TechHub::builder().storage(MemoryStore::new()).clock(clock.clone()).build().expect("hub builds");
    (hub, clock)
}

async fn drive(hub: &TechHub, clock: &ManualClock, git_ref: &str, outcome: &[(&str, bool, u64)]) -> Build {
    let modules = outcome.iter().map(|(name, _, _)| NewModule::new(*name)).collect();
    let mut spec = NewBuild::new("web", modules);
    spec.git_ref = Some(git_ref.to_owned());
    let build = hub.builds().create(&SYSTEM, spec).await.expect("created");
    clock.advance(Duration::from_secs(1));
    for (name, ok, seconds) in outcome {
        hub.builds().start_module(&SYSTEM, build.id, name).await.expect("started");
        clock.advance(Duration::from_secs(*seconds));
        if *ok {
            hub.builds().complete_module(&SYSTEM, build.id, name, None).await.expect("completed");
        } else {
            hub.builds().fail_module(&SYSTEM, build.id, name, Some("red".into()), Some(1)).await.expect("failed");
        }
    }
    hub.builds().get(&SYSTEM, build.id).await.expect("exists")
}

#[tokio::test]
async fn statistics_on_a_known_set_of_builds() {
    let (hub, clock) = manual_hub();
    let one = drive(&hub, &clock, "main", &[("compile", true, 10), ("test", true, 20)]).await;
    let two = drive(&hub, &clock, "main", &[("compile", true, 30), ("test", false, 40)]).await;
    let three = drive(&hub, &clock, "feature", &[("compile", true, 50), ("test", false, 60)]).await;
    assert_eq!(
        (one.status, two.status, three.status),
        (BuildStatus::Succeeded, BuildStatus::Failed, BuildStatus::Failed)
    );
    assert_eq!(one.duration_ms(), Some(30_000));
    assert_eq!(one.queued_ms(), Some(1_000));
    // A cancelled build counts in the totals but not in the success rate.
    let cancelled =
        hub.builds().create(&SYSTEM, NewBuild::new("web", vec![NewModule::new("compile")])).await.expect("created");
    hub.builds().cancel(&SYSTEM, cancelled.id).await.expect("cancelled");
    let queued =
        hub.builds().create(&SYSTEM, NewBuild::new("web", vec![NewModule::new("compile")])).await.expect("created");

    let overview = hub.builds().overview(&SYSTEM, &OutcomeFilter::default()).await.expect("overview");
    assert_eq!(overview.total, 5);
    assert_eq!(overview.by_status.get("succeeded"), Some(&1));
    assert_eq!(overview.by_status.get("failed"), Some(&2));
    assert_eq!(overview.by_status.get("cancelled"), Some(&1));
    assert_eq!(overview.by_status.get("queued"), Some(&1));
    assert_eq!(overview.success_rate, Some(1.0 / 3.0));
    assert_eq!((overview.duration_ms.p50, overview.duration_ms.p95), (Some(70_000), Some(110_000)));
    assert_eq!(overview.queued_ms.p50, Some(1_000));

    let modules = hub.builds().module_stats(&SYSTEM, &OutcomeFilter::default()).await.expect("module stats");
    let test = modules.iter().find(|stats| stats.module == "test").expect("test stats");
    assert_eq!((test.runs, test.success_rate, test.flaky), (3, Some(1.0 / 3.0), 1));
    assert_eq!(
        (test.duration_ms.p50, test.duration_ms.p95, test.last_status),
        (Some(40_000), Some(60_000), ModuleStatus::Failed)
    );
    let compile = modules.iter().find(|stats| stats.module == "compile").expect("compile stats");
    assert_eq!((compile.runs, compile.success_rate, compile.flaky), (3, Some(1.0), 0));

    let since = OutcomeFilter { project: None, since: three.finished_at };
    assert_eq!(hub.builds().overview(&SYSTEM, &since).await.expect("overview").by_status.get("failed"), Some(&1));

    let progress = hub.builds().progress(&SYSTEM).await.expect("progress");
    assert_eq!(progress.len(), 1);
    assert_eq!((progress[0].latest_build_id, progress[0].status), (queued.id, BuildStatus::Queued));
    let report = hub.builds().module_progress(&SYSTEM, Some("web"), "test").await.expect("module progress");
    assert_eq!(report.recent_runs.iter().map(|run| run.build_id).collect::<Vec<_>>(), [three.id, two.id, one.id]);
    assert!(report.latest.is_none(), "the newest build has no test module");
}

#[tokio::test]
async fn external_executor_transitions_and_their_refusals() {
    let (hub, _clock) = manual_hub();
    let spec = NewBuild::new("web", vec![NewModule::new("compile"), NewModule::new("test").depends_on(["compile"])]);
    let build = hub.builds().create(&SYSTEM, spec).await.expect("created");
    let builds = hub.builds();
    let conflict = |result: techhub_core::Result<Build>| result.expect_err("refused").kind();
    assert_eq!(conflict(builds.complete_module(&SYSTEM, build.id, "compile", None).await), ErrorKind::Conflict);
    assert_eq!(conflict(builds.start_module(&SYSTEM, build.id, "test").await), ErrorKind::Conflict);
    assert_eq!(conflict(builds.update_module(&SYSTEM, build.id, "compile", Some(5), None).await), ErrorKind::Conflict);
    assert_eq!(conflict(builds.start_module(&SYSTEM, build.id, "ghost").await), ErrorKind::NotFound);

    let started = builds.start_module(&SYSTEM, build.id, "compile").await.expect("starts");
    assert_eq!((started.status, status(&started, "compile")), (BuildStatus::Running, ModuleStatus::Running));
    assert_eq!(conflict(builds.start_module(&SYSTEM, build.id, "compile").await), ErrorKind::Conflict);
    let updated =
        builds.update_module(&SYSTEM, build.id, "compile", Some(40), Some("halfway".into())).await.expect("updates");
    assert_eq!((updated.modules[0].progress, updated.progress), (40, 20));
    let bad = builds.update_module(&SYSTEM, build.id, "compile", Some(101), None).await.expect_err("over 100");
    assert_eq!(bad.kind(), ErrorKind::InvalidInput);
    builds
        .append_log(&SYSTEM, build.id, Some("compile".into()), LogStream::Stdout, vec!["one".into(), "two".into()])
        .await
        .expect("logs");
    builds.complete_module(&SYSTEM, build.id, "compile", None).await.expect("completes");
    builds.start_module(&SYSTEM, build.id, "test").await.expect("test starts");
    let done = builds.fail_module(&SYSTEM, build.id, "test", Some("2 failures".into()), Some(1)).await.expect("fails");
    assert_eq!((done.status, done.modules[1].exit_code), (BuildStatus::Failed, Some(1)));
    assert_eq!(conflict(builds.cancel(&SYSTEM, build.id).await), ErrorKind::Conflict);
    assert_eq!(log_texts(&hub, build.id, None).await, ["one", "two"]);
    let unknown = builds.append_log(&SYSTEM, build.id, Some("ghost".into()), LogStream::Stdout, vec!["x".into()]).await;
    assert_eq!(unknown.expect_err("unknown module").kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_batch_is_stored_all_or_nothing_and_bad_input_names_the_field() {
    let (hub, _clock) = manual_hub();
    let good = NewBuild::new("web", vec![NewModule::new("a")]);
    let cycle =
        NewBuild::new("api", vec![NewModule::new("a").depends_on(["b"]), NewModule::new("b").depends_on(["a"])]);
    let error = hub.builds().create_batch(&SYSTEM, vec![good.clone(), cycle]).await.expect_err("a cycle");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.fields()[0].field.starts_with("builds[1].modules["), "{error:?}");
    let all = hub.builds().list(&SYSTEM, BuildFilter::default(), &PageRequest::first(50)).await.expect("lists");
    assert!(all.items.is_empty(), "nothing was stored");

    let unknown = NewBuild::new("api", vec![NewModule::new("a").depends_on(["ghost"])]);
    let error = hub.builds().create(&SYSTEM, unknown).await.expect_err("unknown dependency");
    assert_eq!(error.fields()[0].field, "modules[0].depends_on");

    let stored = hub.builds().create_batch(&SYSTEM, vec![good.clone(), good]).await.expect("stored");
    assert_eq!(stored.len(), 2);
    let all = hub.builds().list(&SYSTEM, BuildFilter::default(), &PageRequest::first(50)).await.expect("lists");
    assert_eq!(all.items.len(), 2);
}

#[tokio::test]
async fn users_cannot_see_cancel_or_drive_another_users_build_nor_give_commands() {
    let (hub, _clock) = manual_hub();
    let (ada, bob) = (Actor::user(UserId::new(), Role::User), Actor::user(UserId::new(), Role::User));
    let admin = Actor::user(UserId::new(), Role::Admin);
    let spec = NewBuild::new("web", vec![NewModule::new("a")]);
    let build = hub.builds().create(&ada, spec).await.expect("a user creates a build");
    let builds = hub.builds();
    assert_eq!(builds.get(&bob, build.id).await.expect_err("hidden").kind(), ErrorKind::NotFound);
    assert_eq!(builds.cancel(&bob, build.id).await.expect_err("hidden").kind(), ErrorKind::NotFound);
    assert_eq!(builds.start_module(&bob, build.id, "a").await.expect_err("hidden").kind(), ErrorKind::NotFound);
    let read = builds.read_log(&bob, build.id, &LogQuery::default()).await;
    assert_eq!(read.expect_err("hidden").kind(), ErrorKind::NotFound);
    let append = builds.append_log(&bob, build.id, None, LogStream::Stdout, vec!["x".into()]).await;
    assert_eq!(append.expect_err("hidden").kind(), ErrorKind::NotFound);
    assert!(builds.list(&bob, BuildFilter::default(), &PageRequest::first(50)).await.expect("lists").items.is_empty());
    assert!(builds.progress(&bob).await.expect("progress").is_empty());
    assert_eq!(
        builds.list(&admin, BuildFilter::default(), &PageRequest::first(50)).await.expect("lists").items.len(),
        1
    );
    builds.start_module(&ada, build.id, "a").await.expect("the creator drives its build");

    let with_command = NewBuild::new("web", vec![NewModule::new("a").command("rm -rf /")]);
    let refused = builds.create(&ada, with_command.clone()).await.expect_err("users give no commands");
    assert_eq!(refused.fields()[0].field, "modules[0].command");
    let refused = builds.create(&admin, with_command).await.expect_err("no executor here");
    assert_eq!(refused.fields()[0].field, "modules[0].command");
    assert!(refused.fields()[0].message.contains("executor is off"));
}

#[tokio::test]
async fn too_many_queued_builds_are_rate_limited() {
    let hub = TechHub::builder()
        .storage(MemoryStore::new())
        .config(Config::default().builds(BuildConfig::default().max_queued(2)))
        .build()
        .expect("hub builds");
    let spec = NewBuild::new("web", vec![NewModule::new("a")]);
    hub.builds().create_batch(&SYSTEM, vec![spec.clone(), spec.clone()]).await.expect("two fit");
    let error = hub.builds().create(&SYSTEM, spec).await.expect_err("a third does not");
    assert_eq!(error.kind(), ErrorKind::RateLimited);
}
