//! Every build and module transition in one place: events on the bus (derived from what a write changed),
//! and metrics.

use serde_json::json;

use crate::TechHub;
use crate::events::EventKind;
use crate::model::{Build, BuildId, BuildStatus, LogLine, Module, ModuleStatus, UserId};

/// Metric names, so dashboards and tests agree.
pub mod names {
    /// Counter: finished builds, by `status`.
    pub const FINISHED: &str = "techhub_builds_finished_total";
    /// Histogram: seconds a module run took, by `status`.
    pub const MODULE_SECONDS: &str = "techhub_build_module_seconds";
    /// Gauge: builds waiting in `queued`.
    pub const QUEUED: &str = "techhub_builds_queued";
    /// Counter: log lines written.
    pub const LOG_LINES: &str = "techhub_build_log_lines_total";
}

fn build_kind(status: BuildStatus) -> EventKind {
    match status {
        BuildStatus::Queued => EventKind::BuildQueued,
        BuildStatus::Running => EventKind::BuildStarted,
        BuildStatus::Succeeded => EventKind::BuildSucceeded,
        BuildStatus::Failed => EventKind::BuildFailed,
        BuildStatus::Cancelled => EventKind::BuildCancelled,
        BuildStatus::TimedOut => EventKind::BuildTimedOut,
    }
}

fn module_kind(status: ModuleStatus) -> EventKind {
    match status {
        ModuleStatus::Pending => EventKind::ModulePending,
        ModuleStatus::Running => EventKind::ModuleStarted,
        ModuleStatus::Succeeded => EventKind::ModuleSucceeded,
        ModuleStatus::Failed => EventKind::ModuleFailed,
        ModuleStatus::Skipped => EventKind::ModuleSkipped,
        ModuleStatus::Cancelled => EventKind::ModuleCancelled,
        ModuleStatus::TimedOut => EventKind::ModuleTimedOut,
    }
}

fn module_event(hub: &TechHub, build: &Build, module: &Module, kind: EventKind) {
    hub.events().publish(
        hub.now(),
        kind,
        build.id,
        build.created_by,
        json!({
            "build_id": build.id,
            "module": module.name,
            "status": module.status,
            "progress": module.progress,
            "message": module.message,
            "attempt": module.attempt,
            "exit_code": module.exit_code,
        }),
    );
}

fn build_event(hub: &TechHub, build: &Build, kind: EventKind) {
    hub.events().publish(
        hub.now(),
        kind,
        build.id,
        build.created_by,
        json!({
            "build_id": build.id,
            "project": build.project,
            "ref": build.git_ref,
            "status": build.status,
            "progress": build.progress,
        }),
    );
}

/// Publishes what changed from `before` (`None`: the build is new) to `after`: module events first (in
/// declaration order), then the build's, so a client sees a build finish after its last module did.
pub(crate) fn announce(hub: &TechHub, before: Option<&Build>, after: &Build) {
    for module in &after.modules {
        let old = before.and_then(|before| before.module(&module.name));
        match old {
            Some(old) if old.status == module.status && old.attempt == module.attempt => {
                if old.progress != module.progress || old.message != module.message {
                    module_event(hub, after, module, EventKind::ModuleProgress);
                }
            }
            None if module.status == ModuleStatus::Pending => {}
            _ => {
                module_event(hub, after, module, module_kind(module.status));
                if module.status.is_finished()
                    && let Some(duration) = module.duration_ms()
                {
                    metrics::histogram!(names::MODULE_SECONDS, "status" => module.status.as_str())
                        .record(duration as f64 / 1000.0);
                }
            }
        }
    }
    match before {
        Some(old) if old.status == after.status => {
            if old.progress != after.progress {
                build_event(hub, after, EventKind::BuildProgress);
            }
        }
        _ => {
            build_event(hub, after, build_kind(after.status));
            if after.status.is_finished() {
                tracing::info!(build_id = %after.id, project = %after.project, status = after.status.as_str(), "build finished");
                metrics::counter!(names::FINISHED, "status" => after.status.as_str()).increment(1);
            }
            let was_queued = before.is_some_and(|old| old.status == BuildStatus::Queued);
            let is_queued = after.status == BuildStatus::Queued;
            if was_queued != is_queued {
                metrics::gauge!(names::QUEUED).increment(if is_queued { 1.0 } else { -1.0 });
            }
        }
    }
}

/// Publishes a batch of log lines as one `build.log` event.
pub(crate) fn log_event(hub: &TechHub, id: BuildId, owner: Option<UserId>, lines: &[LogLine]) {
    // Nobody listening: skip turning a large batch into JSON for nothing.
    if lines.is_empty() || hub.events().subscriber_count() == 0 {
        return;
    }
    hub.events().publish(hub.now(), EventKind::BuildLog, id, owner, json!({ "build_id": id, "lines": lines }));
}
