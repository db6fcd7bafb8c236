//! The API's build objects (API.md, "Builds"), built field by field from the core's types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use techhub_core::builds::{
    BuildOverview, LogPage, ModuleProgressReport, ModuleRunSummary, ModuleState, ModuleStats, Percentiles,
    ProjectProgress,
};
use techhub_core::model::{Build, BuildStatus, LogLine, LogStream, Module, ModuleStatus};
use utoipa::ToSchema;
use uuid::Uuid;

/// One module of a build.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModuleView {
    /// Unique within the build.
    pub name: String,
    /// What the server's executor runs, if anything.
    pub command: Option<String>,
    /// Modules that must finish well first.
    pub depends_on: Vec<String>,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`, `cancelled` or `timed_out`.
    #[schema(value_type = crate::schema_names::ModuleStatusName, example = "running")]
    pub status: ModuleStatus,
    /// A failure neither fails the build nor blocks dependents.
    pub allow_failure: bool,
    /// One run's timeout, in seconds.
    pub timeout_s: Option<u64>,
    /// Automatic retries of a failed run.
    pub retries: u32,
    /// 0 to 100.
    pub progress: u8,
    /// What it is doing, or why it ended as it did.
    pub message: Option<String>,
    /// Runs started so far.
    pub attempt: u32,
    /// The last run's exit code.
    pub exit_code: Option<i32>,
    /// When the current or last run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last run finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long the last run took.
    pub duration_ms: Option<u64>,
}

impl From<Module> for ModuleView {
    fn from(module: Module) -> Self {
        Self {
            duration_ms: module.duration_ms(),
            name: module.name,
            command: module.command,
            depends_on: module.depends_on,
            status: module.status,
            allow_failure: module.allow_failure,
            timeout_s: module.timeout_s,
            retries: module.retries,
            progress: module.progress,
            message: module.message,
            attempt: module.attempt,
            exit_code: module.exit_code,
            started_at: module.started_at,
            finished_at: module.finished_at,
        }
    }
}

/// A build: a DAG of modules.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuildView {
    /// Its id.
    pub id: Uuid,
    /// The project built.
    pub project: String,
    /// The ref built.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` or `timed_out`.
    #[schema(value_type = crate::schema_names::BuildStatusName, example = "running")]
    pub status: BuildStatus,
    /// Higher runs first.
    pub priority: i32,
    /// 0 to 100 over all modules.
    pub progress: u8,
    /// Stop at the first hard failure.
    pub fail_fast: bool,
    /// The whole build's timeout, in seconds.
    pub timeout_s: Option<u64>,
    /// A cancel was asked for and is under way.
    pub cancel_requested: bool,
    /// Its modules.
    pub modules: Vec<ModuleView>,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it ran.
    pub duration_ms: Option<u64>,
    /// How long it waited to start.
    pub queued_ms: Option<u64>,
    /// The job that runs it on the server (`null`: an external executor drives it).
    pub job_id: Option<Uuid>,
}

impl From<Build> for BuildView {
    fn from(build: Build) -> Self {
        Self {
            duration_ms: build.duration_ms(),
            queued_ms: build.queued_ms(),
            id: build.id.into(),
            project: build.project,
            git_ref: build.git_ref,
            status: build.status,
            priority: build.priority,
            progress: build.progress,
            fail_fast: build.fail_fast,
            timeout_s: build.timeout_s,
            cancel_requested: build.cancel_requested,
            modules: build.modules.into_iter().map(Into::into).collect(),
            created_by: build.created_by.map(Into::into),
            created_at: build.created_at,
            started_at: build.started_at,
            finished_at: build.finished_at,
            job_id: build.job_id.map(Into::into),
        }
    }
}

/// The builds a batch created.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuildBatchView {
    /// In the order asked for.
    pub builds: Vec<BuildView>,
}

/// One log line.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogLineView {
    /// Its position in the build's log (gapless from 0, except where the cap dropped lines).
    pub seq: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// The module that wrote it.
    pub module: Option<String>,
    /// `stdout`, `stderr` or `system`.
    #[schema(value_type = crate::schema_names::LogStreamName, example = "stdout")]
    pub stream: LogStream,
    /// The text.
    pub text: String,
}

impl From<LogLine> for LogLineView {
    fn from(line: LogLine) -> Self {
        Self { seq: line.seq, at: line.at, module: line.module, stream: line.stream, text: line.text }
    }
}

/// A page of a build's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogPageView {
    /// The lines, in `seq` order.
    pub lines: Vec<LogLineView>,
    /// Read (or follow `build.log` events) from here next.
    pub next_offset: u64,
    /// Lines were dropped to keep the log under its cap.
    pub truncated: bool,
}

impl From<LogPage> for LogPageView {
    fn from(page: LogPage) -> Self {
        Self {
            lines: page.lines.into_iter().map(Into::into).collect(),
            next_offset: page.next_offset,
            truncated: page.truncated,
        }
    }
}

/// The 50th and 95th percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PercentilesView {
    /// The median.
    pub p50: Option<u64>,
    /// The 95th percentile.
    pub p95: Option<u64>,
}

impl From<Percentiles> for PercentilesView {
    fn from(value: Percentiles) -> Self {
        Self { p50: value.p50, p95: value.p95 }
    }
}

/// Builds at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OverviewView {
    /// Builds counted (finished in the window, queued or running now).
    pub total: u64,
    /// Per status.
    pub by_status: BTreeMap<String, u64>,
    /// Succeeded over finished builds, cancelled ones left out (0 to 1).
    pub success_rate: Option<f64>,
    /// How long finished builds ran.
    pub duration_ms: PercentilesView,
    /// How long finished builds waited to start.
    pub queued_ms: PercentilesView,
}

impl From<BuildOverview> for OverviewView {
    fn from(overview: BuildOverview) -> Self {
        Self {
            total: overview.total,
            by_status: overview.by_status,
            success_rate: overview.success_rate,
            duration_ms: overview.duration_ms.into(),
            queued_ms: overview.queued_ms.into(),
        }
    }
}

/// One module of one project over the window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModuleStatsView {
    /// The project.
    pub project: String,
    /// The module.
    pub module: String,
    /// Runs counted.
    pub runs: u64,
    /// Succeeded over runs, cancelled ones left out (0 to 1).
    pub success_rate: Option<f64>,
    /// How long runs took.
    pub duration_ms: PercentilesView,
    /// How it ended in the newest finished build.
    #[schema(value_type = crate::schema_names::ModuleStatusName)]
    pub last_status: ModuleStatus,
    /// Refs on which it both failed and succeeded.
    pub flaky: u64,
}

impl From<ModuleStats> for ModuleStatsView {
    fn from(stats: ModuleStats) -> Self {
        Self {
            project: stats.project,
            module: stats.module,
            runs: stats.runs,
            success_rate: stats.success_rate,
            duration_ms: stats.duration_ms.into(),
            last_status: stats.last_status,
            flaky: stats.flaky,
        }
    }
}

/// Where a module of a latest build is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModuleStateView {
    /// The module.
    pub name: String,
    /// Its status.
    #[schema(value_type = crate::schema_names::ModuleStatusName)]
    pub status: ModuleStatus,
    /// Its progress.
    pub progress: u8,
    /// Its message.
    pub message: Option<String>,
    /// When it last changed state.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<ModuleState> for ModuleStateView {
    fn from(state: ModuleState) -> Self {
        Self {
            name: state.name,
            status: state.status,
            progress: state.progress,
            message: state.message,
            updated_at: state.updated_at,
        }
    }
}

/// A project's newest build.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectProgressView {
    /// The project.
    pub project: String,
    /// Its newest build.
    pub latest_build_id: Uuid,
    /// That build's status.
    #[schema(value_type = crate::schema_names::BuildStatusName)]
    pub status: BuildStatus,
    /// That build's progress.
    pub progress: u8,
    /// Its modules.
    pub modules: Vec<ModuleStateView>,
}

impl From<ProjectProgress> for ProjectProgressView {
    fn from(progress: ProjectProgress) -> Self {
        Self {
            project: progress.project,
            latest_build_id: progress.latest_build_id.into(),
            status: progress.status,
            progress: progress.progress,
            modules: progress.modules.into_iter().map(Into::into).collect(),
        }
    }
}

/// One finished run of a module.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModuleRunView {
    /// The build.
    pub build_id: Uuid,
    /// The build's ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// How it ended.
    #[schema(value_type = crate::schema_names::ModuleStatusName)]
    pub status: ModuleStatus,
    /// How long it ran.
    pub duration_ms: Option<u64>,
    /// Runs in that build.
    pub attempt: u32,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<ModuleRunSummary> for ModuleRunView {
    fn from(run: ModuleRunSummary) -> Self {
        Self {
            build_id: run.build_id.into(),
            git_ref: run.git_ref,
            status: run.status,
            duration_ms: run.duration_ms,
            attempt: run.attempt,
            finished_at: run.finished_at,
        }
    }
}

/// A module's latest state and recent runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModuleProgressView {
    /// The project.
    pub project: String,
    /// The module.
    pub module: String,
    /// Its state in the project's newest build.
    pub latest: Option<ModuleStateView>,
    /// Its recent runs, newest first.
    pub recent_runs: Vec<ModuleRunView>,
}

impl From<ModuleProgressReport> for ModuleProgressView {
    fn from(report: ModuleProgressReport) -> Self {
        Self {
            project: report.project,
            module: report.module,
            latest: report.latest.map(Into::into),
            recent_runs: report.recent_runs.into_iter().map(Into::into).collect(),
        }
    }
}
