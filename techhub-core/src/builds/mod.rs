//! Builds: [`BuildService`] (from [`TechHub::builds`](crate::TechHub::builds)), the DAG runner (one `build.run`
//! job per build on queue [`BUILD_QUEUE`]), executors ([`BuildExecutor`], [`ProcessExecutor`]), logs,
//! statistics and project progress.
//!
//! Every change of a build goes through one compare-and-swap write of the whole build (see [`mutate`]): the
//! runner, external executors and callers can act on one build at once and none of them loses another's
//! change. Events are derived from what each write changed, so every transition is published exactly once.

mod executor;
mod logs;
mod process;
mod runner;
mod service;
mod signals;
mod spec;
mod stats;
pub mod telemetry;

use chrono::{DateTime, Utc};

pub use self::executor::{BuildExecutor, ModuleExit, ModuleLog, ModuleRun, ProgressSink};
pub(crate) use self::logs::BuildLogs;
pub use self::logs::LogWriter;
pub use self::process::ProcessExecutor;
pub(crate) use self::runner::BuildRunHandler;
pub use self::service::{BuildService, LogPage, LogQuery, MAX_APPEND_LINES, MAX_READ_LINES};
pub(crate) use self::signals::RunningBuilds;
pub use self::spec::{
    MAX_BATCH, MAX_COMMAND_BYTES, MAX_MODULES, MAX_NAME_BYTES, MAX_RETRIES, MAX_TIMEOUT_S, NewBuild, NewModule,
};
pub use self::stats::{
    BuildOverview, ModuleProgressReport, ModuleRunSummary, ModuleState, ModuleStats, Percentiles, ProjectProgress,
};
use crate::model::{Build, BuildId, ModuleStatus};
use crate::storage::{Conflict, StoreError};
use crate::{Error, Result, TechHub};

/// The queue `build.run` jobs go to.
pub const BUILD_QUEUE: &str = "builds";
/// The job kind that runs a build.
pub const BUILD_RUN: &str = "build.run";

/// Applies `change` to build `id` and stores it under the version it was read at, reading again and
/// re-applying after a concurrent write. Starts from `cached` when given (the runner's copy), saving a read.
/// Returns the build before and after, and what `change` returned. A `change` that fails stores nothing.
pub(crate) async fn mutate_from<T>(
    hub: &TechHub,
    id: BuildId,
    mut cached: Option<Build>,
    mut change: impl FnMut(&mut Build) -> Result<T>,
) -> Result<(Build, Build, T)> {
    loop {
        let before = match cached.take() {
            Some(build) => build,
            None => hub.storage().get_build(id).await?.ok_or_else(|| Error::not_found("no such build"))?,
        };
        let mut after = before.clone();
        let value = change(&mut after)?;
        if after == before {
            return Ok((before, after, value));
        }
        match hub.storage().update_build(after, before.version).await {
            Ok(stored) => return Ok((before, stored, value)),
            Err(StoreError::Conflict(Conflict::VersionMismatch)) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// [`mutate_from`] starting with a fresh read.
pub(crate) async fn mutate<T>(
    hub: &TechHub,
    id: BuildId,
    change: impl FnMut(&mut Build) -> Result<T>,
) -> Result<(Build, Build, T)> {
    mutate_from(hub, id, None, change).await
}

/// Publishes what a write changed, and closes the log writer of a build that finished.
pub(crate) fn announce_change(hub: &TechHub, before: &Build, after: &Build) {
    if before == after {
        return;
    }
    telemetry::announce(hub, Some(before), after);
    if after.status.is_finished() && !before.status.is_finished() {
        hub.build_logs().close(after.id);
    }
}

/// After a module changed: skips what can no longer run, marks what became ready, refreshes progress, applies
/// `fail_fast` to modules not yet started, and ends a build whose modules all finished.
pub(crate) fn settle(build: &mut Build, now: DateTime<Utc>) {
    build.propagate_skips(now);
    if build.fail_fast && build.modules.iter().any(|module| module.is_hard_failure()) {
        for module in &mut build.modules {
            if module.status == ModuleStatus::Pending {
                module.status = ModuleStatus::Cancelled;
                module.message = Some("cancelled: fail_fast after a failure".to_owned());
                module.not_before = None;
                module.finished_at = Some(now);
            }
        }
    }
    build.mark_ready(now);
    build.refresh_progress();
    if build.all_modules_finished() && !build.status.is_finished() {
        build.status = build.outcome();
        build.finished_at = Some(now);
    }
}
