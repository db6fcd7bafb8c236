//! The [`BuildExecutor`] trait: what runs one module's command.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::LogWriter;
use crate::model::{BuildId, LogStream, NewLogLine};

/// Runs one module. Implementations stream output to [`ModuleRun::log`], may report progress, and must stop
/// (and leave nothing running) soon after [`ModuleRun::cancel`] fires: a cancel, a timeout, `fail_fast` or a
/// shutdown. The runner decides what a stop means; the executor only reports how the run ended.
#[async_trait]
pub trait BuildExecutor: Send + Sync + 'static {
    /// Runs the module's command to its end.
    async fn run(&self, run: ModuleRun) -> ModuleExit;

    /// A short name for reports (`"process"`).
    fn name(&self) -> &'static str;
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleExit {
    /// It finished well.
    pub success: bool,
    /// The process's exit code, if one exited.
    pub exit_code: Option<i32>,
    /// Why it failed (or a note on success).
    pub message: Option<String>,
}

impl ModuleExit {
    /// A successful run.
    pub fn succeeded() -> Self {
        Self { success: true, exit_code: Some(0), message: None }
    }

    /// A failed run.
    pub fn failed(exit_code: Option<i32>, message: impl Into<String>) -> Self {
        Self { success: false, exit_code, message: Some(message.into()) }
    }
}

/// Everything an executor gets for one run.
#[derive(Debug, Clone)]
pub struct ModuleRun {
    /// The build.
    pub build_id: BuildId,
    /// Its project.
    pub project: String,
    /// Its ref.
    pub git_ref: String,
    /// The module's name.
    pub module: String,
    /// What to run.
    pub command: String,
    /// This run's number (from 1).
    pub attempt: u32,
    /// Fires when the run must stop.
    pub cancel: CancellationToken,
    /// Where output goes.
    pub log: ModuleLog,
    /// Where progress goes.
    pub progress: ProgressSink,
}

/// A module's view of its build's log.
#[derive(Clone)]
pub struct ModuleLog {
    pub(crate) writer: LogWriter,
    pub(crate) module: String,
    pub(crate) clock: Arc<dyn crate::clock::Clock>,
}

impl fmt::Debug for ModuleLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleLog").field("module", &self.module).finish_non_exhaustive()
    }
}

impl ModuleLog {
    /// Queues lines of `stream` (batched into the store; waits only when the writer is far behind).
    pub async fn lines(&self, stream: LogStream, lines: impl IntoIterator<Item = String>) {
        let at = self.clock.now();
        let lines =
            lines.into_iter().map(|text| NewLogLine { at, module: Some(self.module.clone()), stream, text }).collect();
        if let Err(error) = self.writer.write(lines).await {
            tracing::warn!(module = %self.module, error = %error, "a module's log line was lost");
        }
    }

    /// Queues one line.
    pub async fn line(&self, stream: LogStream, text: impl Into<String>) {
        self.lines(stream, [text.into()]).await;
    }
}

/// A progress report: percent and message.
type Report = (u8, Option<String>);

/// Where a run reports progress; cheap (it keeps the latest value, the runner writes it at a bounded rate).
#[derive(Debug, Clone, Default)]
pub struct ProgressSink {
    latest: Arc<Mutex<Option<Report>>>,
}

impl ProgressSink {
    /// Reports `percent` (capped at 100) and an optional message.
    pub fn report(&self, percent: u8, message: Option<String>) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some((percent.min(100), message));
    }

    /// The progress reported since the last call, if any.
    pub(crate) fn take(&self) -> Option<Report> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}
