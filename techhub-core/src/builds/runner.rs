//! The `build.run` job: walks a build's DAG from its stored state, starting every ready module up to the
//! per-build concurrency, and applies timeouts, automatic retries, `allow_failure`, `fail_fast`, skip
//! propagation and cancellation. A run taken up after a crash (its job's lease expired) fails the modules the
//! lost runner had running (`executor lost`, retried if retries are left) and goes on; it never starts over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, interval, sleep_until};
use tokio_util::sync::CancellationToken;

use super::executor::ModuleLog;
use super::{BuildExecutor, LogWriter, ModuleExit, ModuleRun, ProgressSink, announce_change, mutate_from, settle};
use crate::jobs::{JobContext, JobError, JobHandler};
use crate::model::{Build, BuildId, BuildStatus, Module, ModuleStatus};
use crate::{Result, TechHub};

/// How often running modules' latest progress is written.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How often the runner reads its build for a cancel stored by another process.
const CANCEL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The payload of a `build.run` job.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct BuildRunPayload {
    pub(crate) build_id: BuildId,
}

/// Runs `build.run` jobs.
pub(crate) struct BuildRunHandler;

#[async_trait]
impl JobHandler for BuildRunHandler {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let payload: BuildRunPayload = ctx.payload_as()?;
        let hub = ctx.hub().clone();
        let Some(executor) = hub.build_executor().cloned() else {
            return Err(JobError::permanent("this process has no build executor"));
        };
        let Some(build) = hub.storage().get_build(payload.build_id).await.map_err(crate::Error::from)? else {
            return Err(JobError::permanent("the build no longer exists"));
        };
        let log = hub.build_logs().writer(&hub, build.id, build.created_by);
        let runner = Runner {
            hub,
            ctx,
            executor,
            id: build.id,
            build,
            running: JoinSet::new(),
            stops: HashMap::new(),
            progress: HashMap::new(),
            halt: None,
            log,
        };
        runner.run().await
    }
}

/// Why the runner stopped starting modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// A cancel was asked for: the build ends `cancelled`.
    Cancelled,
    /// The build ran past its timeout: it ends `timed_out`.
    TimedOut,
    /// This runner must let go (shutdown, lost lease): the build stays as stored, for the next runner.
    Abandoned,
}

/// What one module task reports: its index, the attempt it ran, how it ended, and whether it timed out.
type Finished = (usize, u32, ModuleExit, bool);

struct Runner {
    hub: TechHub,
    ctx: JobContext,
    executor: Arc<dyn BuildExecutor>,
    id: BuildId,
    /// The latest stored build (every write goes through [`Runner::commit`]).
    build: Build,
    running: JoinSet<Finished>,
    /// Running modules: their stop token, and the status to record if this runner stopped them.
    stops: HashMap<usize, (CancellationToken, Option<ModuleStatus>)>,
    progress: HashMap<usize, ProgressSink>,
    halt: Option<Halt>,
    log: LogWriter,
}

fn instant_of(hub: &TechHub, at: DateTime<Utc>) -> Instant {
    Instant::now() + (at - hub.now()).to_std().unwrap_or(Duration::ZERO)
}

fn start(module: &mut Module, now: DateTime<Utc>) {
    module.status = ModuleStatus::Running;
    module.attempt += 1;
    module.progress = 0;
    module.message = None;
    module.exit_code = None;
    module.not_before = None;
    module.started_at = Some(now);
    module.finished_at = None;
}

/// Records how a run ended: a failure with retries left (and the build still going) waits for a retry.
fn finish(
    module: &mut Module,
    status: ModuleStatus,
    exit: &ModuleExit,
    retry: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    module.exit_code = exit.exit_code;
    module.finished_at = Some(now);
    let reason = exit.message.clone().unwrap_or_else(|| status.as_str().to_owned());
    match retry {
        Some(not_before) if matches!(status, ModuleStatus::Failed | ModuleStatus::TimedOut) => {
            module.retries_used += 1;
            module.status = ModuleStatus::Pending;
            module.progress = 0;
            module.not_before = Some(not_before);
            module.message = Some(format!("attempt {} {}: {reason}; retrying", module.attempt, status.as_str()));
        }
        _ => {
            module.status = status;
            module.message = Some(reason);
            if status == ModuleStatus::Succeeded {
                module.progress = 100;
                module.message = exit.message.clone();
            }
        }
    }
}

impl Runner {
    async fn run(mut self) -> Result<Value, JobError> {
        let (cancelled, _registration) = self.hub.running_builds().register(self.id);
        let mut poll = interval(CANCEL_POLL_INTERVAL);
        self.resume().await?;
        let deadline = self
            .build
            .timeout_s
            .zip(self.build.started_at)
            .map(|(timeout, started)| instant_of(&self.hub, started + chrono::TimeDelta::seconds(timeout as i64)));
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut progress = interval(PROGRESS_INTERVAL);
        while !self.build.status.is_finished() {
            if self.halt.is_none() {
                self.start_ready().await?;
            }
            if self.running.is_empty() {
                match self.halt {
                    Some(Halt::Abandoned) => break,
                    Some(halt) => {
                        self.end_halted(halt).await?;
                        continue;
                    }
                    None if self.next_retry().is_none() => {
                        // Nothing runs and nothing can start: end what is left (not reachable in a valid DAG).
                        self.end_stuck().await?;
                        continue;
                    }
                    None => {}
                }
            }
            let retry_at = self.next_retry().map(|at| instant_of(&self.hub, at));
            tokio::select! {
                Some(joined) = self.running.join_next() => {
                    match joined {
                        Ok(finished) => self.record(finished).await?,
                        Err(error) => tracing::error!(build_id = %self.id, error = %error, "a module task ended abnormally"),
                    }
                }
                () = self.ctx.cancelled(), if self.halt.is_none() => self.stop_requested().await?,
                () = cancelled.cancelled(), if self.halt.is_none() => self.halt_with(Halt::Cancelled),
                _ = poll.tick(), if self.halt.is_none() => self.poll_cancel().await?,
                () = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && self.halt.is_none() => {
                    self.halt_with(Halt::TimedOut);
                }
                () = sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() && self.halt.is_none() => {}
                _ = progress.tick() => self.flush_progress().await?,
            }
        }
        // Whatever a stopped module still had queued reaches the store before the job ends.
        let _ = self.log.flush().await;
        if self.halt == Some(Halt::Abandoned) && !self.build.status.is_finished() {
            return Err(JobError::retry("the build runner was stopped; the build resumes from its stored state"));
        }
        Ok(json!({ "build_id": self.id, "status": self.build.status }))
    }

    /// Writes `change` (from the cached build), publishes what changed, and keeps the result.
    async fn commit(&mut self, change: impl FnMut(&mut Build) -> Result<()>) -> Result<(), JobError> {
        let (before, after, ()) = mutate_from(&self.hub, self.id, Some(self.build.clone()), change).await?;
        announce_change(&self.hub, &before, &after);
        self.build = after;
        Ok(())
    }

    /// Takes the build up from its stored state: starts it, and fails what a lost runner had running.
    async fn resume(&mut self) -> Result<(), JobError> {
        let now = self.hub.now();
        let backoff = self.hub.config().builds.retry_backoff;
        self.commit(|build| {
            if build.status.is_finished() {
                return Ok(());
            }
            if build.status == BuildStatus::Queued {
                build.status = BuildStatus::Running;
                build.started_at = Some(now);
            }
            let cancelled = build.cancel_requested;
            for module in &mut build.modules {
                if module.status == ModuleStatus::Running {
                    let retry = (module.retries_used < module.retries && !cancelled)
                        .then(|| crate::clock::add(now, backoff.delay(module.retries_used + 1)));
                    finish(module, ModuleStatus::Failed, &ModuleExit::failed(None, "executor lost"), retry, now);
                }
            }
            settle(build, now);
            Ok(())
        })
        .await?;
        if self.build.cancel_requested && !self.build.status.is_finished() {
            self.halt = Some(Halt::Cancelled);
        }
        Ok(())
    }

    /// The earliest time a module waiting for an automatic retry may start.
    fn next_retry(&self) -> Option<DateTime<Utc>> {
        self.build
            .ready_modules()
            .into_iter()
            .filter(|index| !self.stops.contains_key(index))
            .filter_map(|index| self.build.modules[index].not_before)
            .min()
    }

    async fn start_ready(&mut self) -> Result<(), JobError> {
        let now = self.hub.now();
        let free = self.hub.config().builds.module_concurrency.saturating_sub(self.running.len());
        let chosen: Vec<usize> = self
            .build
            .ready_modules()
            .into_iter()
            .filter(|index| !self.stops.contains_key(index))
            .filter(|&index| self.build.modules[index].not_before.is_none_or(|at| at <= now))
            .take(free)
            .collect();
        if chosen.is_empty() {
            return Ok(());
        }
        self.commit(|build| {
            for &index in &chosen {
                if build.modules[index].status == ModuleStatus::Pending && build.dependencies_done(index) {
                    start(&mut build.modules[index], now);
                }
            }
            build.refresh_progress();
            Ok(())
        })
        .await?;
        for index in chosen {
            let module = &self.build.modules[index];
            if module.status == ModuleStatus::Running && module.started_at == Some(now) {
                self.spawn(index);
            }
        }
        Ok(())
    }

    fn spawn(&mut self, index: usize) {
        let module = &self.build.modules[index];
        let token = CancellationToken::new();
        let sink = ProgressSink::default();
        let attempt = module.attempt;
        let timeout = module.timeout_s.map(Duration::from_secs);
        self.stops.insert(index, (token.clone(), None));
        self.progress.insert(index, sink.clone());
        let Some(command) = module.command.clone() else {
            // A module without a command in a build run here has nothing to do.
            self.running.spawn(async move { (index, attempt, ModuleExit::succeeded(), false) });
            return;
        };
        let run = ModuleRun {
            build_id: self.id,
            project: self.build.project.clone(),
            git_ref: self.build.git_ref.clone(),
            module: module.name.clone(),
            command,
            attempt,
            cancel: token.clone(),
            log: ModuleLog { writer: self.log.clone(), module: module.name.clone(), clock: self.hub.clock().clone() },
            progress: sink,
        };
        let executor = self.executor.clone();
        self.running.spawn(async move {
            let running = executor.run(run);
            tokio::pin!(running);
            let Some(timeout) = timeout else { return (index, attempt, running.await, false) };
            tokio::select! {
                exit = &mut running => (index, attempt, exit, false),
                () = tokio::time::sleep(timeout) => {
                    token.cancel();
                    (index, attempt, running.await, true)
                }
            }
        });
    }

    /// Records finished modules in one write: the one just joined and any others already done.
    async fn record(&mut self, first: Finished) -> Result<(), JobError> {
        let mut finished = vec![first];
        while let Some(joined) = self.running.try_join_next() {
            match joined {
                Ok(more) => finished.push(more),
                Err(error) => tracing::error!(build_id = %self.id, error = %error, "a module task ended abnormally"),
            }
        }
        let finished: Vec<(Finished, Option<ModuleStatus>)> = finished
            .into_iter()
            .map(|done| {
                self.progress.remove(&done.0);
                let forced = self.stops.remove(&done.0).and_then(|(_, cause)| cause);
                (done, forced)
            })
            .collect();
        if self.halt == Some(Halt::Abandoned) {
            return Ok(());
        }
        // The modules' lines are stored before anyone hears they ended.
        let _ = self.log.flush().await;
        let now = self.hub.now();
        let backoff = self.hub.config().builds.retry_backoff;
        let going_on = self.halt.is_none();
        let build_timed_out = self.halt == Some(Halt::TimedOut);
        self.commit(|build| {
            let stopping = build.cancel_requested || !going_on;
            for ((index, attempt, exit, timed_out), forced) in &finished {
                let module = &mut build.modules[*index];
                if module.status != ModuleStatus::Running || module.attempt != *attempt {
                    continue;
                }
                let status = match forced {
                    Some(cause) => *cause,
                    None if *timed_out => ModuleStatus::TimedOut,
                    None if exit.success => ModuleStatus::Succeeded,
                    None => ModuleStatus::Failed,
                };
                let exit = if *timed_out && forced.is_none() {
                    ModuleExit {
                        message: Some(format!("timed out after {} s", module.timeout_s.unwrap_or(0))),
                        ..exit.clone()
                    }
                } else {
                    exit.clone()
                };
                let retry = (module.retries_used < module.retries && !stopping && forced.is_none())
                    .then(|| crate::clock::add(now, backoff.delay(module.retries_used + 1)));
                finish(module, status, &exit, retry, now);
            }
            if build_timed_out {
                // The build's own timeout decides its status, whatever its modules' outcome would say.
                build.propagate_skips(now);
                if build.all_modules_finished() && !build.status.is_finished() {
                    build.status = BuildStatus::TimedOut;
                    build.finished_at = Some(now);
                }
            }
            settle(build, now);
            Ok(())
        })
        .await?;
        if self.build.fail_fast && self.build.modules.iter().any(Module::is_hard_failure) {
            for (token, cause) in self.stops.values_mut() {
                cause.get_or_insert(ModuleStatus::Cancelled);
                token.cancel();
            }
        }
        Ok(())
    }

    /// The job was asked to stop: a cancel of the build, or this runner must let go (shutdown, lost lease).
    async fn stop_requested(&mut self) -> Result<(), JobError> {
        let stored = self.hub.storage().get_build(self.id).await.map_err(crate::Error::from)?;
        let cancel = stored.as_ref().is_some_and(|build| build.cancel_requested);
        if let Some(stored) = stored {
            self.build = stored;
        }
        self.halt_with(if cancel { Halt::Cancelled } else { Halt::Abandoned });
        Ok(())
    }

    /// Reads the build for a cancel stored by another process.
    async fn poll_cancel(&mut self) -> Result<(), JobError> {
        let stored = self.hub.storage().get_build(self.id).await.map_err(crate::Error::from)?;
        if stored.is_some_and(|build| build.cancel_requested) {
            self.halt_with(Halt::Cancelled);
        }
        Ok(())
    }

    fn halt_with(&mut self, halt: Halt) {
        self.halt = Some(halt);
        let cause = match halt {
            Halt::Cancelled => Some(ModuleStatus::Cancelled),
            Halt::TimedOut => Some(ModuleStatus::TimedOut),
            Halt::Abandoned => None,
        };
        for (token, recorded) in self.stops.values_mut() {
            *recorded = cause;
            token.cancel();
        }
    }

    /// Ends a halted build once its modules stopped: what never started is cancelled.
    async fn end_halted(&mut self, halt: Halt) -> Result<(), JobError> {
        let now = self.hub.now();
        self.commit(|build| {
            if build.status.is_finished() {
                return Ok(());
            }
            let why = if halt == Halt::TimedOut { "cancelled: the build timed out" } else { "cancelled" };
            for module in &mut build.modules {
                if !module.status.is_finished() {
                    module.status = ModuleStatus::Cancelled;
                    module.message = Some(why.to_owned());
                    module.not_before = None;
                    module.finished_at = Some(now);
                }
            }
            if halt == Halt::TimedOut {
                build.status = BuildStatus::TimedOut;
                build.finished_at = Some(now);
            }
            settle(build, now);
            Ok(())
        })
        .await
    }

    async fn end_stuck(&mut self) -> Result<(), JobError> {
        let now = self.hub.now();
        self.commit(|build| {
            for module in &mut build.modules {
                if !module.status.is_finished() {
                    module.status = ModuleStatus::Skipped;
                    module.message = Some("skipped: it can never run".to_owned());
                    module.finished_at = Some(now);
                }
            }
            settle(build, now);
            Ok(())
        })
        .await
    }

    /// Writes the latest progress of running modules, in one write.
    async fn flush_progress(&mut self) -> Result<(), JobError> {
        let reported: Vec<(usize, (u8, Option<String>))> =
            self.progress.iter().filter_map(|(index, sink)| sink.take().map(|progress| (*index, progress))).collect();
        if reported.is_empty() {
            return Ok(());
        }
        self.commit(|build| {
            for (index, (percent, message)) in &reported {
                let module = &mut build.modules[*index];
                if module.status == ModuleStatus::Running {
                    module.progress = *percent;
                    module.message = message.clone();
                }
            }
            build.refresh_progress();
            Ok(())
        })
        .await
    }
}
