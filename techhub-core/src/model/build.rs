//! Builds: a pipeline of modules with progress, and an append-only log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BuildId, JobId, UserId};

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Waiting to run.
    Queued,
    /// Modules are running.
    Running,
    /// Every module succeeded (or was skipped).
    Succeeded,
    /// A module failed.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl BuildStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// Whether the build is done for good.
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Where one module of a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModuleStatus {
    /// Not started.
    #[default]
    Pending,
    /// Running.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished badly.
    Failed,
    /// Not run (a dependency failed).
    Skipped,
    /// Stopped by a cancel.
    Cancelled,
}

/// One step of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// Unique within its build.
    pub name: String,
    /// What the executor runs, if it runs anything.
    pub command: Option<String>,
    /// Modules that must succeed first.
    pub depends_on: Vec<String>,
    /// Where it is.
    pub status: ModuleStatus,
    /// 0 to 100.
    pub progress: u8,
    /// What it is doing.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Module {
    /// A pending module called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            command: None,
            depends_on: Vec::new(),
            status: ModuleStatus::Pending,
            progress: 0,
            message: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// A build of one project at one ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// The build's id.
    pub id: BuildId,
    /// The project built.
    pub project: String,
    /// The ref built (branch, tag or commit).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Where it is.
    pub status: BuildStatus,
    /// Higher runs first.
    pub priority: i32,
    /// 0 to 100, over all modules.
    pub progress: u8,
    /// Its steps.
    pub modules: Vec<Module>,
    /// Who started it.
    pub created_by: Option<UserId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The job that runs it.
    pub job_id: Option<JobId>,
    /// Bumped by every write (optimistic concurrency).
    pub version: u64,
}

impl Build {
    /// A queued build of `project` at `git_ref` with `modules`, created at `now`.
    pub fn new(
        project: impl Into<String>,
        git_ref: impl Into<String>,
        modules: Vec<Module>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: BuildId::new(),
            project: project.into(),
            git_ref: git_ref.into(),
            status: BuildStatus::Queued,
            priority: 0,
            progress: 0,
            modules,
            created_by: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            job_id: None,
            version: 0,
        }
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// TechHub's own notes (module started, finished).
    System,
}

/// A line to append to a build's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLogLine {
    /// When it was written.
    pub at: DateTime<Utc>,
    /// The module that wrote it, if any.
    pub module: Option<String>,
    /// The stream.
    pub stream: LogStream,
    /// The text.
    pub text: String,
}

/// A line of a build's log, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its position in the build's log, from 0, without gaps.
    pub seq: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// The module that wrote it, if any.
    pub module: Option<String>,
    /// The stream.
    pub stream: LogStream,
    /// The text.
    pub text: String,
}

/// Which builds to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only this status.
    pub status: Option<BuildStatus>,
    /// Only builds started by this user.
    pub created_by: Option<UserId>,
}

impl BuildFilter {
    /// Whether `build` passes the filter.
    pub fn matches(&self, build: &Build) -> bool {
        self.project.as_ref().is_none_or(|project| *project == build.project)
            && self.status.is_none_or(|status| status == build.status)
            && self.created_by.is_none_or(|user| Some(user) == build.created_by)
    }
}
