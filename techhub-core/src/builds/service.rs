//! [`BuildService`]: create, read, list, cancel and retry builds, drive modules for external executors, and
//! append and read logs, with the caller's rights checked here.

use serde::{Deserialize, Serialize};

use super::runner::BuildRunPayload;
use super::spec::{Allowed, prepare};
use super::{BUILD_QUEUE, BUILD_RUN, LogWriter, MAX_BATCH, NewBuild, announce_change, mutate, settle, telemetry};
use crate::actor::Actor;
use crate::model::{
    Build, BuildFilter, BuildId, BuildStatus, Job, LogLine, LogStream, ModuleStatus, NewJob, NewLogLine, Page,
    PageRequest,
};
use crate::{Error, ErrorKind, Result, TechHub};

/// The most lines one append may carry.
pub const MAX_APPEND_LINES: usize = 10_000;
/// The most lines one read returns.
pub const MAX_READ_LINES: usize = 5_000;

/// Builds as callers see them. Get one with [`TechHub::builds`].
///
/// The policy: any signed-in user creates builds; users see, cancel, retry, drive and log only the builds they
/// created (other builds are `NotFound` to them, so ids cannot be probed), and their statistics cover only
/// their own builds; admins and [`Actor::System`] see and do everything. Module `command`s run on this host,
/// so only admins and the system may give them, and only when the hub has a build executor.
#[derive(Debug, Clone)]
pub struct BuildService {
    pub(super) hub: TechHub,
}

/// Which log lines to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only this module's lines.
    pub module: Option<String>,
    /// The first `seq` wanted (default 0).
    pub offset: u64,
    /// At most this many lines (default and maximum [`MAX_READ_LINES`]).
    pub limit: Option<usize>,
}

/// A page of a build's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The lines, in `seq` order.
    pub lines: Vec<LogLine>,
    /// The offset to read (or follow live events) from next.
    pub next_offset: u64,
    /// Lines of the build (or of the module asked for) were dropped to keep the log under its cap.
    pub truncated: bool,
}

impl BuildService {
    pub(crate) fn new(hub: TechHub) -> Self {
        Self { hub }
    }

    fn allowed(&self, actor: &Actor) -> Allowed {
        let commands = if !actor.is_privileged() {
            Err("only admins may give modules a command")
        } else if self.hub.build_executor().is_none() {
            Err("the build executor is off (TECHHUB_BUILD_EXECUTOR=none), so modules cannot have a command")
        } else {
            Ok(())
        };
        Allowed { commands }
    }

    /// Creates a build. Invalid input is `InvalidInput` naming the field (`modules[1].depends_on`); more queued
    /// builds than the hub allows is `RateLimited`.
    pub async fn create(&self, actor: &Actor, spec: NewBuild) -> Result<Build> {
        Ok(self.create_all(actor, vec![spec], false).await?.remove(0))
    }

    /// Creates several builds in one atomic write: all, or (one being invalid) none. Fields are named
    /// `builds[i].…`.
    pub async fn create_batch(&self, actor: &Actor, specs: Vec<NewBuild>) -> Result<Vec<Build>> {
        if specs.is_empty() || specs.len() > MAX_BATCH {
            return Err(Error::invalid_field("builds", format!("a batch holds 1 to {MAX_BATCH} builds")));
        }
        self.create_all(actor, specs, true).await
    }

    async fn create_all(&self, actor: &Actor, specs: Vec<NewBuild>, batch: bool) -> Result<Vec<Build>> {
        let allowed = self.allowed(actor);
        let now = self.hub.now();
        let config = &self.hub.config().builds;
        let mut builds = Vec::with_capacity(specs.len());
        let mut refused: Option<Error> = None;
        for (index, spec) in specs.into_iter().enumerate() {
            let prefix = if batch { format!("builds[{index}].") } else { String::new() };
            match prepare(spec, &prefix, &allowed, config, actor.user_id(), now) {
                Ok(build) => builds.push(build),
                Err(error) => {
                    refused = Some(match refused {
                        None => error,
                        Some(mut all) => {
                            for field in error.fields() {
                                all = all.with_field(field.field.clone(), field.message.clone());
                            }
                            all
                        }
                    });
                }
            }
        }
        if let Some(error) = refused {
            return Err(error);
        }
        let queued = self
            .hub
            .storage()
            .build_counts()
            .await?
            .into_iter()
            .find_map(|(status, count)| (status == BuildStatus::Queued).then_some(count))
            .unwrap_or(0);
        if queued + builds.len() as u64 > config.max_queued as u64 {
            return Err(Error::new(
                ErrorKind::RateLimited,
                format!("{queued} builds are queued, and at most {} may be; try again later", config.max_queued),
            ));
        }
        let mut jobs = Vec::new();
        for build in &mut builds {
            if build.has_commands() {
                let mut spec = NewJob::typed(BUILD_RUN, &BuildRunPayload { build_id: build.id })?
                    .queue(BUILD_QUEUE)
                    .priority(build.priority)
                    .max_attempts(10);
                spec.created_by = build.created_by;
                let job = Job::new(spec, now)?;
                build.job_id = Some(job.id);
                jobs.push(job);
            }
        }
        let stored = self.hub.storage().insert_builds(builds, jobs.clone()).await?;
        for build in &stored {
            tracing::info!(build_id = %build.id, project = %build.project, modules = build.modules.len(), "build created");
            telemetry::announce(&self.hub, None, build);
        }
        self.hub.jobs().announce(&jobs);
        Ok(stored)
    }

    /// A build the actor may see.
    pub async fn get(&self, actor: &Actor, id: BuildId) -> Result<Build> {
        match self.hub.storage().get_build(id).await? {
            Some(build) if actor.may_access(build.created_by) => Ok(build),
            _ => Err(Error::not_found("no such build")),
        }
    }

    /// A page of the builds the actor may see that pass `filter` (a user's filter is narrowed to its own).
    pub async fn list(&self, actor: &Actor, mut filter: BuildFilter, page: &PageRequest) -> Result<Page<Build>> {
        if !actor.is_privileged() {
            filter.created_by = actor.user_id();
        }
        Ok(self.hub.storage().list_builds(&filter, page).await?)
    }

    /// Applies `change` to a build the actor may see, and publishes what changed.
    async fn change(&self, actor: &Actor, id: BuildId, change: impl FnMut(&mut Build) -> Result<()>) -> Result<Build> {
        self.get(actor, id).await?;
        let (before, after, ()) = mutate(&self.hub, id, change).await?;
        announce_change(&self.hub, &before, &after);
        Ok(after)
    }

    /// Cancels a build: a queued one (or one driven by an external executor) at once; a running one as soon
    /// as its runner has stopped its modules (SIGTERM, then SIGKILL after the grace period). A finished build
    /// is a `Conflict`. The returned build tells which: `cancelled`, or `running` with `cancel_requested`.
    pub async fn cancel(&self, actor: &Actor, id: BuildId) -> Result<Build> {
        let now = self.hub.now();
        let build = self
            .change(actor, id, |build| {
                if build.status.is_finished() {
                    return Err(Error::conflict("the build has already finished"));
                }
                build.cancel_requested = true;
                if build.status == BuildStatus::Queued || build.job_id.is_none() {
                    for module in &mut build.modules {
                        if !module.status.is_finished() {
                            module.status = ModuleStatus::Cancelled;
                            module.message = Some("cancelled".to_owned());
                            module.not_before = None;
                            module.finished_at = Some(now);
                        }
                    }
                    settle(build, now);
                }
                Ok(())
            })
            .await?;
        if let Some(job_id) = build.job_id {
            if build.status.is_finished() {
                // Cancelled while queued: its job is cancelled too (a job that already ended has nothing to stop).
                match self.hub.jobs().cancel(&Actor::System, job_id).await {
                    Ok(_) => {}
                    Err(error) if matches!(error.kind(), ErrorKind::Conflict | ErrorKind::NotFound) => {}
                    Err(error) => return Err(error),
                }
            } else {
                // The runner stops the modules: here at once, in another process at its next poll of the build.
                self.hub.running_builds().cancel(id);
            }
        }
        Ok(build)
    }

    /// Runs a module of a finished build again, with the modules skipped because of it: the module must have
    /// failed, timed out or been cancelled (else `Conflict`). The build runs again (`running`).
    pub async fn retry_module(&self, actor: &Actor, id: BuildId, module: &str) -> Result<Build> {
        let now = self.hub.now();
        let current = self.get(actor, id).await?;
        let job = if current.has_commands() {
            let mut spec = NewJob::typed(BUILD_RUN, &BuildRunPayload { build_id: id })?
                .queue(BUILD_QUEUE)
                .priority(current.priority)
                .max_attempts(10);
            spec.created_by = current.created_by;
            Some(Job::new(spec, now)?)
        } else {
            None
        };
        let job_id = job.as_ref().map(|job| job.id);
        let build = self
            .change(actor, id, |build| {
                if !build.status.is_finished() {
                    return Err(Error::conflict("only a finished build's modules can be retried"));
                }
                let index = build.module_index(module).ok_or_else(|| Error::not_found("no such module"))?;
                if !build.modules[index].status.is_retryable() {
                    return Err(Error::conflict(format!(
                        "module {module} is {}; only a failed, timed out or cancelled module can be retried",
                        build.modules[index].status.as_str()
                    )));
                }
                for (n, candidate) in build.modules.iter_mut().enumerate() {
                    if n == index || candidate.status == ModuleStatus::Skipped {
                        candidate.status = ModuleStatus::Pending;
                        candidate.progress = 0;
                        candidate.message = None;
                        candidate.exit_code = None;
                        candidate.retries_used = 0;
                        candidate.not_before = None;
                        candidate.ready_at = None;
                        candidate.started_at = None;
                        candidate.finished_at = None;
                    }
                }
                build.status = BuildStatus::Running;
                build.finished_at = None;
                build.cancel_requested = false;
                if job_id.is_some() {
                    build.job_id = job_id;
                }
                // Modules still blocked by another failure are skipped again at once.
                settle(build, now);
                Ok(())
            })
            .await?;
        if let Some(job) = job
            && build.job_id == Some(job.id)
        {
            let job = self.hub.storage().enqueue(job).await?;
            self.hub.jobs().announce([&job]);
        }
        Ok(build)
    }

    /// A build an external executor may drive: the actor may see it, and no runner of this hub owns it.
    async fn external(&self, actor: &Actor, id: BuildId) -> Result<()> {
        let build = self.get(actor, id).await?;
        if build.job_id.is_some() {
            return Err(Error::conflict(
                "this build runs on the hub's executor; its modules cannot be driven from outside",
            ));
        }
        Ok(())
    }

    /// An external executor starts a module: it must be pending with its dependencies done, in an unfinished
    /// build (else `Conflict`).
    pub async fn start_module(&self, actor: &Actor, id: BuildId, module: &str) -> Result<Build> {
        self.external(actor, id).await?;
        let now = self.hub.now();
        self.change(actor, id, |build| {
            if build.status.is_finished() {
                return Err(Error::conflict("the build has finished"));
            }
            let index = build.module_index(module).ok_or_else(|| Error::not_found("no such module"))?;
            let status = build.modules[index].status;
            if status != ModuleStatus::Pending {
                return Err(Error::conflict(format!("module {module} is {}, not pending", status.as_str())));
            }
            if !build.dependencies_done(index) {
                return Err(Error::conflict(format!("the dependencies of module {module} have not succeeded")));
            }
            let module = &mut build.modules[index];
            module.status = ModuleStatus::Running;
            module.attempt += 1;
            module.started_at = Some(now);
            module.finished_at = None;
            module.progress = 0;
            if build.status == BuildStatus::Queued {
                build.status = BuildStatus::Running;
                build.started_at = Some(now);
            }
            build.refresh_progress();
            Ok(())
        })
        .await
    }

    /// An external executor reports a running module's progress (0 to 100) and message.
    pub async fn update_module(
        &self,
        actor: &Actor,
        id: BuildId,
        module: &str,
        progress: Option<u8>,
        message: Option<String>,
    ) -> Result<Build> {
        if progress.is_some_and(|progress| progress > 100) {
            return Err(Error::invalid_field("progress", "progress is 0 to 100"));
        }
        self.external(actor, id).await?;
        self.change(actor, id, |build| {
            let index = running(build, module)?;
            let module = &mut build.modules[index];
            if let Some(progress) = progress {
                module.progress = progress;
            }
            if message.is_some() {
                module.message = message.clone();
            }
            build.refresh_progress();
            Ok(())
        })
        .await
    }

    /// An external executor ends a running module well.
    pub async fn complete_module(
        &self,
        actor: &Actor,
        id: BuildId,
        module: &str,
        message: Option<String>,
    ) -> Result<Build> {
        self.end_module(actor, id, module, ModuleStatus::Succeeded, message, None).await
    }

    /// An external executor ends a running module badly.
    pub async fn fail_module(
        &self,
        actor: &Actor,
        id: BuildId,
        module: &str,
        message: Option<String>,
        exit_code: Option<i32>,
    ) -> Result<Build> {
        self.end_module(actor, id, module, ModuleStatus::Failed, message, exit_code).await
    }

    async fn end_module(
        &self,
        actor: &Actor,
        id: BuildId,
        module: &str,
        status: ModuleStatus,
        message: Option<String>,
        exit_code: Option<i32>,
    ) -> Result<Build> {
        self.external(actor, id).await?;
        let now = self.hub.now();
        self.change(actor, id, |build| {
            let index = running(build, module)?;
            let module = &mut build.modules[index];
            module.status = status;
            module.message = message.clone();
            module.exit_code = exit_code;
            module.finished_at = Some(now);
            if status == ModuleStatus::Succeeded {
                module.progress = 100;
            }
            settle(build, now);
            Ok(())
        })
        .await
    }

    /// Appends lines to a build's log (external executors; the hub's executor writes its own) and returns once
    /// they are stored. `module`, when given, must be a module of the build.
    pub async fn append_log(
        &self,
        actor: &Actor,
        id: BuildId,
        module: Option<String>,
        stream: LogStream,
        lines: Vec<String>,
    ) -> Result<()> {
        if lines.len() > MAX_APPEND_LINES {
            return Err(Error::invalid_field("lines", format!("at most {MAX_APPEND_LINES} lines per call")));
        }
        let writer = self.log_writer(actor, id, module.as_deref()).await?;
        let at = self.hub.now();
        let lines = lines.into_iter().map(|text| NewLogLine { at, module: module.clone(), stream, text }).collect();
        writer.write(lines).await?;
        writer.flush().await
    }

    /// The log writer of a build the actor may see (for embedders that stream many lines): lines written to
    /// it are batched into the store and published. `module`, when given, must exist.
    pub async fn log_writer(&self, actor: &Actor, id: BuildId, module: Option<&str>) -> Result<LogWriter> {
        let build = self.get(actor, id).await?;
        if let Some(module) = module
            && build.module(module).is_none()
        {
            return Err(Error::invalid_field("module", format!("the build has no module {module:?}")));
        }
        Ok(self.hub.build_logs().writer(&self.hub, build.id, build.created_by))
    }

    /// Reads a build's log from `query.offset`. An offset past the end of the log is `InvalidInput`.
    pub async fn read_log(&self, actor: &Actor, id: BuildId, query: &LogQuery) -> Result<LogPage> {
        let build = self.get(actor, id).await?;
        if let Some(module) = &query.module
            && build.module(module).is_none()
        {
            return Err(Error::invalid_field("module", format!("the build has no module {module:?}")));
        }
        let limit = query.limit.unwrap_or(MAX_READ_LINES).clamp(1, MAX_READ_LINES);
        let storage = self.hub.storage();
        // The last line is never dropped, so an offset is inside the log when a line at or after offset - 1 exists.
        if query.offset > 0 && storage.read_log(id, query.offset - 1, 1).await?.is_empty() {
            return Err(Error::invalid_field("offset", "the offset is past the end of the log"));
        }
        let mut lines = Vec::new();
        let mut next_offset = query.offset;
        loop {
            let chunk = storage.read_log(id, next_offset, limit).await?;
            if chunk.is_empty() {
                break;
            }
            let full = chunk.len() == limit;
            for line in chunk {
                if lines.len() == limit {
                    break;
                }
                next_offset = line.seq + 1;
                if query.module.as_ref().is_none_or(|module| line.module.as_ref() == Some(module)) {
                    lines.push(line);
                }
            }
            if lines.len() == limit || !full || query.module.is_none() {
                break;
            }
        }
        let truncated = match &query.module {
            Some(module) => build.module(module).is_some_and(|module| module.log_truncated),
            None => build.modules.iter().any(|module| module.log_truncated),
        };
        Ok(LogPage { lines, next_offset, truncated })
    }
}

/// The index of `module`, which must be running.
fn running(build: &Build, module: &str) -> Result<usize> {
    let index = build.module_index(module).ok_or_else(|| Error::not_found("no such module"))?;
    let status = build.modules[index].status;
    if status != ModuleStatus::Running {
        return Err(Error::conflict(format!("module {module} is {}, not running", status.as_str())));
    }
    Ok(index)
}
