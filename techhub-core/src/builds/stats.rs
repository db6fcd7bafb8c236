//! Statistics (overview and per module) and project progress, computed from the store's kept outcomes of
//! finished builds and its latest build per project, never by loading every build.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BuildService;
use crate::actor::Actor;
use crate::model::{BuildFilter, BuildId, BuildOutcome, BuildStatus, ModuleStatus, OutcomeFilter, PageRequest};
use crate::{Result, TechHub};

/// The 50th and 95th percentiles of a set of durations (nearest rank), in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// The median.
    pub p50: Option<u64>,
    /// The 95th percentile.
    pub p95: Option<u64>,
}

impl Percentiles {
    fn of(mut values: Vec<u64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Self { p50: Some(rank(0.5)), p95: Some(rank(0.95)) }
    }
}

/// Builds at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildOverview {
    /// Builds counted: finished ones in the window, and those queued or running now.
    pub total: u64,
    /// Those builds per status.
    pub by_status: BTreeMap<String, u64>,
    /// Succeeded over finished builds, cancelled ones left out (`None` when there is none).
    pub success_rate: Option<f64>,
    /// How long finished builds ran.
    pub duration_ms: Percentiles,
    /// How long finished builds waited to start.
    pub queued_ms: Percentiles,
}

/// One module of one project over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleStats {
    /// The project.
    pub project: String,
    /// The module.
    pub module: String,
    /// Finished builds in which it ran.
    pub runs: u64,
    /// Succeeded over runs, cancelled ones left out (`None` when there is none).
    pub success_rate: Option<f64>,
    /// How long its runs took.
    pub duration_ms: Percentiles,
    /// How it ended in the newest finished build.
    pub last_status: ModuleStatus,
    /// Refs on which it both failed and succeeded.
    pub flaky: u64,
}

/// The latest build of a project and its modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectProgress {
    /// The project.
    pub project: String,
    /// Its newest build.
    pub latest_build_id: BuildId,
    /// That build's status.
    pub status: BuildStatus,
    /// That build's progress.
    pub progress: u8,
    /// Its modules.
    pub modules: Vec<ModuleState>,
}

/// Where a module of a latest build is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleState {
    /// The module.
    pub name: String,
    /// Its status.
    pub status: ModuleStatus,
    /// Its progress.
    pub progress: u8,
    /// Its message.
    pub message: Option<String>,
    /// When it last changed state.
    pub updated_at: Option<DateTime<Utc>>,
}

/// One finished run of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRunSummary {
    /// The build.
    pub build_id: BuildId,
    /// The build's ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// How the module ended.
    pub status: ModuleStatus,
    /// How long it ran.
    pub duration_ms: Option<u64>,
    /// Runs in that build.
    pub attempt: u32,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A module's latest state and its recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleProgressReport {
    /// The project.
    pub project: String,
    /// The module.
    pub module: String,
    /// Its state in the project's newest build that has it.
    pub latest: Option<ModuleState>,
    /// Its runs in finished builds, newest first (at most 20).
    pub recent_runs: Vec<ModuleRunSummary>,
}

fn rate(good: u64, counted: u64) -> Option<f64> {
    (counted > 0).then(|| good as f64 / counted as f64)
}

impl BuildService {
    async fn outcomes(&self, actor: &Actor, filter: &OutcomeFilter) -> Result<Vec<BuildOutcome>> {
        let mut outcomes = self.hub().storage().build_outcomes(filter).await?;
        if !actor.is_privileged() {
            outcomes.retain(|outcome| actor.may_access(outcome.created_by));
        }
        Ok(outcomes)
    }

    /// Builds at a glance: finished ones in the window (`filter`), and the queued and running ones now.
    pub async fn overview(&self, actor: &Actor, filter: &OutcomeFilter) -> Result<BuildOverview> {
        let outcomes = self.outcomes(actor, filter).await?;
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        for outcome in &outcomes {
            *by_status.entry(outcome.status.as_str().to_owned()).or_default() += 1;
        }
        for status in [BuildStatus::Queued, BuildStatus::Running] {
            let list = BuildFilter { project: filter.project.clone(), status: Some(status), created_by: None };
            let mut page = PageRequest::first(crate::model::MAX_PAGE_LIMIT);
            loop {
                let found = self.list(actor, list.clone(), &page).await?;
                let count = found.items.len() as u64;
                if count > 0 {
                    *by_status.entry(status.as_str().to_owned()).or_default() += count;
                }
                match found.next_cursor {
                    Some(cursor) => page = PageRequest::after(cursor, crate::model::MAX_PAGE_LIMIT),
                    None => break,
                }
            }
        }
        let succeeded = outcomes.iter().filter(|outcome| outcome.status == BuildStatus::Succeeded).count() as u64;
        let counted = outcomes.iter().filter(|outcome| outcome.status != BuildStatus::Cancelled).count() as u64;
        Ok(BuildOverview {
            total: by_status.values().sum(),
            by_status,
            success_rate: rate(succeeded, counted),
            duration_ms: Percentiles::of(outcomes.iter().filter_map(|outcome| outcome.duration_ms).collect()),
            queued_ms: Percentiles::of(outcomes.iter().filter_map(|outcome| outcome.queued_ms).collect()),
        })
    }

    /// Per project and module over the window: runs, success rate, durations, last status, flakiness. Sorted
    /// by project, then module.
    pub async fn module_stats(&self, actor: &Actor, filter: &OutcomeFilter) -> Result<Vec<ModuleStats>> {
        #[derive(Default)]
        struct Tally {
            runs: u64,
            succeeded: u64,
            counted: u64,
            durations: Vec<u64>,
            last: Option<(DateTime<Utc>, BuildId, ModuleStatus)>,
            failed_on: HashSet<String>,
            succeeded_on: HashSet<String>,
        }
        let outcomes = self.outcomes(actor, filter).await?;
        let mut tallies: BTreeMap<(String, String), Tally> = BTreeMap::new();
        for outcome in &outcomes {
            for module in &outcome.modules {
                if module.duration_ms.is_none() {
                    continue;
                }
                let tally = tallies.entry((outcome.project.clone(), module.name.clone())).or_default();
                tally.runs += 1;
                tally.durations.extend(module.duration_ms);
                if module.status != ModuleStatus::Cancelled {
                    tally.counted += 1;
                }
                match module.status {
                    ModuleStatus::Succeeded => {
                        tally.succeeded += 1;
                        tally.succeeded_on.insert(outcome.git_ref.clone());
                    }
                    ModuleStatus::Failed | ModuleStatus::TimedOut => {
                        tally.failed_on.insert(outcome.git_ref.clone());
                    }
                    _ => {}
                }
                let key = (outcome.finished_at, outcome.id, module.status);
                if tally.last.is_none_or(|last| (last.0, last.1) < (key.0, key.1)) {
                    tally.last = Some(key);
                }
            }
        }
        Ok(tallies
            .into_iter()
            .map(|((project, module), tally)| ModuleStats {
                project,
                module,
                runs: tally.runs,
                success_rate: rate(tally.succeeded, tally.counted),
                flaky: tally.failed_on.intersection(&tally.succeeded_on).count() as u64,
                last_status: tally.last.map_or(ModuleStatus::Pending, |last| last.2),
                duration_ms: Percentiles::of(tally.durations),
            })
            .collect())
    }

    /// The newest build of every project the actor may see, with its modules' states.
    pub async fn progress(&self, actor: &Actor) -> Result<Vec<ProjectProgress>> {
        let latest = self.hub().storage().latest_builds().await?;
        Ok(latest
            .into_iter()
            .filter(|build| actor.may_access(build.created_by))
            .map(|build| ProjectProgress {
                project: build.project.clone(),
                latest_build_id: build.id,
                status: build.status,
                progress: build.progress,
                modules: build
                    .modules
                    .iter()
                    .map(|module| ModuleState {
                        name: module.name.clone(),
                        status: module.status,
                        progress: module.progress,
                        message: module.message.clone(),
                        updated_at: module.finished_at.or(module.started_at).or(module.ready_at),
                    })
                    .collect(),
            })
            .collect())
    }

    /// Module `name` of `project` (or of the newest project build that has it): its latest state and recent runs.
    pub async fn module_progress(
        &self,
        actor: &Actor,
        project: Option<&str>,
        name: &str,
    ) -> Result<ModuleProgressReport> {
        let progress = self.progress(actor).await?;
        let latest = progress
            .iter()
            .filter(|entry| project.is_none_or(|project| entry.project == project))
            .filter_map(|entry| entry.modules.iter().find(|module| module.name == name).map(|module| (entry, module)))
            .max_by_key(|(entry, _)| entry.latest_build_id);
        let project = match (project, &latest) {
            (Some(project), _) => project.to_owned(),
            (None, Some((entry, _))) => entry.project.clone(),
            (None, None) => return Err(crate::Error::not_found("no build has a module of that name")),
        };
        let filter = OutcomeFilter { project: Some(project.clone()), since: None };
        let mut runs: Vec<ModuleRunSummary> = self
            .outcomes(actor, &filter)
            .await?
            .into_iter()
            .filter_map(|outcome| {
                let module = outcome.modules.iter().find(|module| module.name == name)?;
                Some(ModuleRunSummary {
                    build_id: outcome.id,
                    git_ref: outcome.git_ref.clone(),
                    status: module.status,
                    duration_ms: module.duration_ms,
                    attempt: module.attempt,
                    finished_at: module.finished_at,
                })
            })
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse(run.build_id));
        runs.truncate(20);
        if latest.is_none() && runs.is_empty() {
            return Err(crate::Error::not_found("no build of that project has a module of that name"));
        }
        Ok(ModuleProgressReport {
            project,
            module: name.to_owned(),
            latest: latest.map(|(_, module)| module.clone()),
            recent_runs: runs,
        })
    }

    fn hub(&self) -> &TechHub {
        &self.hub
    }
}

#[cfg(test)]
mod tests {
    use super::Percentiles;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(Percentiles::of(values), Percentiles { p50: Some(50), p95: Some(95) });
        assert_eq!(Percentiles::of(vec![7]), Percentiles { p50: Some(7), p95: Some(7) });
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
    }
}
