//! Builds: a DAG of modules with progress, and an append-only log.
//!
//! The state machines live here, once, as plain methods on [`Build`] and [`Module`]: the service, the runner and
//! every store see the same rules (see ARCHITECTURE.md, "Builds").

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
    /// Every module succeeded (or failed with `allow_failure`).
    Succeeded,
    /// A module failed, timed out or was skipped.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// The build ran past its own timeout.
    TimedOut,
}

impl BuildStatus {
    /// Every status.
    pub const ALL: [Self; 6] =
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled, Self::TimedOut];

    /// Whether the build is done for good (until a module of it is retried).
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut)
    }

    /// The status as the API spells it (`"timed_out"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }
}

/// Where one module of a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModuleStatus {
    /// Not started (or waiting for an automatic retry).
    #[default]
    Pending,
    /// Running.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished badly.
    Failed,
    /// Not run: a dependency failed, timed out, was cancelled or skipped.
    Skipped,
    /// Stopped by a cancel (or by `fail_fast`).
    Cancelled,
    /// Ran past its timeout and was stopped.
    TimedOut,
}

impl ModuleStatus {
    /// Every status.
    pub const ALL: [Self; 7] =
        [Self::Pending, Self::Running, Self::Succeeded, Self::Failed, Self::Skipped, Self::Cancelled, Self::TimedOut];

    /// Whether the module is done (until retried).
    pub const fn is_finished(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// The status as the API spells it (`"timed_out"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Whether a run ended in a way a retry may fix (failed, timed out, cancelled).
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut | Self::Cancelled)
    }
}

/// One step of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    /// Unique within its build.
    pub name: String,
    /// What the executor runs, if it runs anything.
    pub command: Option<String>,
    /// Modules that must succeed (or fail with `allow_failure`) first.
    pub depends_on: Vec<String>,
    /// A failure of this module neither fails the build nor blocks its dependents.
    #[serde(default)]
    pub allow_failure: bool,
    /// How long one run may take, in seconds (`None`: only the build's timeout applies).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// How many times a failed run is retried automatically.
    #[serde(default)]
    pub retries: u32,
    /// Where it is.
    pub status: ModuleStatus,
    /// 0 to 100.
    pub progress: u8,
    /// What it is doing, or why it ended as it did.
    pub message: Option<String>,
    /// Runs started so far (0 before the first; each start, automatic retries and manual ones included, adds 1).
    #[serde(default)]
    pub attempt: u32,
    /// Automatic retries used since the last manual retry (bounded by `retries`).
    #[serde(default)]
    pub retries_used: u32,
    /// The exit code of the last finished run, when a process ran.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// A pending module waiting for an automatic retry starts no earlier than this.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Lines of its log were dropped to keep it under the cap.
    #[serde(default)]
    pub log_truncated: bool,
    /// When the module became ready to run (its dependencies done): the start of its queue time.
    #[serde(default)]
    pub ready_at: Option<DateTime<Utc>>,
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
            allow_failure: false,
            timeout_s: None,
            retries: 0,
            status: ModuleStatus::Pending,
            progress: 0,
            message: None,
            attempt: 0,
            retries_used: 0,
            exit_code: None,
            not_before: None,
            log_truncated: false,
            ready_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// Depends on `names`.
    #[must_use]
    pub fn depends_on<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.depends_on = names.into_iter().map(Into::into).collect();
        self
    }

    /// Runs `command`.
    #[must_use]
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// How long the last (or current) run took, in milliseconds.
    pub fn duration_ms(&self) -> Option<u64> {
        let end = self.finished_at?;
        millis_between(self.started_at?, end)
    }

    /// Whether a dependent may start: it succeeded, or failed with `allow_failure`.
    pub fn unblocks_dependents(&self) -> bool {
        self.status == ModuleStatus::Succeeded
            || (self.allow_failure && matches!(self.status, ModuleStatus::Failed | ModuleStatus::TimedOut))
    }

    /// Whether its dependents can never run: it ended without unblocking them.
    pub fn blocks_dependents(&self) -> bool {
        self.status.is_finished() && !self.unblocks_dependents()
    }

    /// Whether it counts against the build: finished without success and without `allow_failure`.
    pub fn is_hard_failure(&self) -> bool {
        matches!(self.status, ModuleStatus::Failed | ModuleStatus::TimedOut | ModuleStatus::Skipped)
            && !(self.allow_failure && self.status != ModuleStatus::Skipped)
    }
}

fn millis_between(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<u64> {
    u64::try_from((end - start).num_milliseconds()).ok()
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
    /// On the first hard failure, cancel the running modules and start no more.
    #[serde(default)]
    pub fail_fast: bool,
    /// How long the whole build may run, in seconds (`None`: no limit).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// A cancel was asked for while it ran; the runner ends it as `cancelled`.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Who started it.
    pub created_by: Option<UserId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The job that runs it (`None`: driven by an external executor).
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
            fail_fast: false,
            timeout_s: None,
            cancel_requested: false,
            created_by: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            job_id: None,
            version: 0,
        }
    }

    /// The module called `name`.
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|module| module.name == name)
    }

    /// The index of the module called `name`.
    pub fn module_index(&self, name: &str) -> Option<usize> {
        self.modules.iter().position(|module| module.name == name)
    }

    /// Whether any module has a command (the build then runs on the hub's executor).
    pub fn has_commands(&self) -> bool {
        self.modules.iter().any(|module| module.command.is_some())
    }

    /// How long it ran (or has run, if `now` is given for a running build), in milliseconds.
    pub fn duration_ms(&self) -> Option<u64> {
        millis_between(self.started_at?, self.finished_at?)
    }

    /// How long it waited before it started, in milliseconds.
    pub fn queued_ms(&self) -> Option<u64> {
        millis_between(self.created_at, self.started_at?)
    }

    /// Whether every dependency of module `index` lets it start.
    pub fn dependencies_done(&self, index: usize) -> bool {
        self.modules[index].depends_on.iter().all(|name| self.module(name).is_some_and(Module::unblocks_dependents))
    }

    /// Pending modules whose dependencies are done, in declaration order (waiting retries included).
    pub fn ready_modules(&self) -> Vec<usize> {
        (0..self.modules.len())
            .filter(|&index| self.modules[index].status == ModuleStatus::Pending && self.dependencies_done(index))
            .collect()
    }

    /// Skips every pending module that can never run (a dependency blocks it), through the whole graph, at
    /// `now`. Returns the indexes skipped, in the order they were.
    pub fn propagate_skips(&mut self, now: DateTime<Utc>) -> Vec<usize> {
        let mut skipped = Vec::new();
        loop {
            let next = (0..self.modules.len()).find_map(|index| {
                let module = &self.modules[index];
                if module.status != ModuleStatus::Pending {
                    return None;
                }
                module
                    .depends_on
                    .iter()
                    .find(|name| self.module(name).is_some_and(Module::blocks_dependents))
                    .map(|blocker| (index, blocker.clone()))
            });
            let Some((index, blocker)) = next else { return skipped };
            let blocked_by = self.module(&blocker).map_or(ModuleStatus::Failed, |module| module.status);
            let module = &mut self.modules[index];
            module.status = ModuleStatus::Skipped;
            module.message = Some(format!("skipped: dependency {blocker} {}", blocked_by.as_str()));
            module.not_before = None;
            module.finished_at = Some(now);
            skipped.push(index);
        }
    }

    /// Marks the modules that just became ready (`ready_at`), at `now`.
    pub fn mark_ready(&mut self, now: DateTime<Utc>) {
        for index in self.ready_modules() {
            self.modules[index].ready_at.get_or_insert(now);
        }
    }

    /// Whether every module has finished.
    pub fn all_modules_finished(&self) -> bool {
        self.modules.iter().all(|module| module.status.is_finished())
    }

    /// The status a build whose modules all finished ends with: `cancelled` after a cancel, `succeeded` when
    /// every module succeeded or failed with `allow_failure`, else `failed`.
    pub fn outcome(&self) -> BuildStatus {
        if self.cancel_requested {
            BuildStatus::Cancelled
        } else if self.modules.iter().all(|module| {
            module.status == ModuleStatus::Succeeded || (module.allow_failure && !module.is_hard_failure())
        }) {
            BuildStatus::Succeeded
        } else {
            BuildStatus::Failed
        }
    }

    /// Recomputes `progress` from the modules' (a finished module counts as 100).
    pub fn refresh_progress(&mut self) {
        if self.modules.is_empty() {
            return;
        }
        let total: u64 = self
            .modules
            .iter()
            .map(|module| if module.status.is_finished() { 100 } else { u64::from(module.progress.min(100)) })
            .sum();
        self.progress = u8::try_from(total / self.modules.len() as u64).unwrap_or(100);
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
    /// TechHub's own notes (module started, finished, lines dropped).
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

impl NewLogLine {
    /// The stored line, numbered `seq`.
    pub fn numbered(self, seq: u64) -> LogLine {
        LogLine { seq, at: self.at, module: self.module, stream: self.stream, text: self.text }
    }
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

/// What statistics keep of a finished build: a compact record the store writes beside the build whenever the
/// build is stored finished (and removes when a retry makes it run again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildOutcome {
    /// The build.
    pub id: BuildId,
    /// Its project.
    pub project: String,
    /// Its ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// How it ended.
    pub status: BuildStatus,
    /// Who started it.
    pub created_by: Option<UserId>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// How long it ran.
    pub duration_ms: Option<u64>,
    /// How long it waited to start.
    pub queued_ms: Option<u64>,
    /// Its modules' last runs.
    pub modules: Vec<ModuleOutcome>,
}

/// How one module's last run of a finished build ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleOutcome {
    /// The module.
    pub name: String,
    /// How it ended.
    pub status: ModuleStatus,
    /// How long the run took (`None` when it never ran).
    pub duration_ms: Option<u64>,
    /// How long it waited between becoming ready and starting.
    pub queued_ms: Option<u64>,
    /// Runs in all.
    pub attempt: u32,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl BuildOutcome {
    /// The outcome of `build`, if it is finished.
    pub fn of(build: &Build) -> Option<Self> {
        if !build.status.is_finished() {
            return None;
        }
        Some(Self {
            id: build.id,
            project: build.project.clone(),
            git_ref: build.git_ref.clone(),
            status: build.status,
            created_by: build.created_by,
            finished_at: build.finished_at.unwrap_or(build.created_at),
            duration_ms: build.duration_ms(),
            queued_ms: build.queued_ms(),
            modules: build
                .modules
                .iter()
                .map(|module| ModuleOutcome {
                    name: module.name.clone(),
                    status: module.status,
                    duration_ms: module.duration_ms(),
                    queued_ms: module
                        .ready_at
                        .zip(module.started_at)
                        .and_then(|(ready, start)| millis_between(ready, start)),
                    attempt: module.attempt,
                    finished_at: module.finished_at,
                })
                .collect(),
        })
    }
}

/// Which finished builds statistics cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutcomeFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only builds that finished at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl OutcomeFilter {
    /// Whether `outcome` passes the filter.
    pub fn matches(&self, outcome: &BuildOutcome) -> bool {
        self.project.as_ref().is_none_or(|project| *project == outcome.project)
            && self.since.is_none_or(|since| outcome.finished_at >= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + seconds, 0).expect("in range")
    }

    #[test]
    fn skips_carry_through_the_graph_unless_failure_is_allowed() {
        let mut build = Build::new(
            "p",
            "main",
            vec![
                Module::new("a"),
                Module::new("b").depends_on(["a"]),
                Module::new("c").depends_on(["b"]),
                Module::new("d").depends_on(["c"]),
                Module::new("e"),
            ],
            at(0),
        );
        build.modules[0].status = ModuleStatus::Failed;
        assert_eq!(build.propagate_skips(at(1)), [1, 2, 3]);
        assert_eq!(build.modules[3].message.as_deref(), Some("skipped: dependency c skipped"));
        assert_eq!(build.ready_modules(), [4]);

        let mut tolerant = Build::new("p", "main", vec![Module::new("a"), Module::new("b").depends_on(["a"])], at(0));
        tolerant.modules[0].allow_failure = true;
        tolerant.modules[0].status = ModuleStatus::Failed;
        assert!(tolerant.propagate_skips(at(1)).is_empty());
        assert_eq!(tolerant.ready_modules(), [1]);
        tolerant.modules[1].status = ModuleStatus::Succeeded;
        assert_eq!(tolerant.outcome(), BuildStatus::Succeeded);
        tolerant.modules[1].status = ModuleStatus::Skipped;
        assert_eq!(tolerant.outcome(), BuildStatus::Failed);
    }
}
