//! Builds: a map by id, each build's log as an ordered map by `seq` (with its length, so dropped lines never
//! renumber it), and the outcomes of finished builds for statistics.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use techhub_core::model::{
    Build, BuildFilter, BuildId, BuildOutcome, BuildStatus, Job, LogLine, NewLogLine, OutcomeFilter, Page, PageRequest,
};
use techhub_core::storage::{BuildStore, Conflict, StoreError, StoreResult};

use crate::{MemoryStore, paging, read, write};

#[derive(Debug, Default)]
struct Log {
    lines: BTreeMap<u64, LogLine>,
    length: u64,
}

#[derive(Debug, Default)]
pub(crate) struct BuildTables {
    by_id: BTreeMap<BuildId, Build>,
    logs: HashMap<BuildId, Log>,
    outcomes: BTreeMap<BuildId, BuildOutcome>,
}

impl BuildTables {
    fn store(&mut self, build: Build) {
        match BuildOutcome::of(&build) {
            Some(outcome) => self.outcomes.insert(build.id, outcome),
            None => self.outcomes.remove(&build.id),
        };
        self.by_id.insert(build.id, build);
    }
}

#[async_trait]
impl BuildStore for MemoryStore {
    async fn insert_builds(&self, builds: Vec<Build>, follow_up: Vec<Job>) -> StoreResult<Vec<Build>> {
        let mut tables = write(&self.builds);
        let mut ids = HashSet::with_capacity(builds.len());
        if builds.iter().any(|build| !ids.insert(build.id) || tables.by_id.contains_key(&build.id)) {
            return Err(Conflict::Duplicate.into());
        }
        let mut jobs = self.jobs.lock_index();
        jobs.check_new(&self.jobs, &follow_up)?;
        let stored: Vec<Build> = builds
            .into_iter()
            .map(|mut build| {
                build.version = 1;
                tables.store(build.clone());
                build
            })
            .collect();
        jobs.insert_checked(&self.jobs, follow_up);
        Ok(stored)
    }

    async fn get_build(&self, id: BuildId) -> StoreResult<Option<Build>> {
        Ok(read(&self.builds).by_id.get(&id).cloned())
    }

    async fn update_build(&self, mut build: Build, expected_version: u64) -> StoreResult<Build> {
        let mut tables = write(&self.builds);
        let stored = tables.by_id.get(&build.id).ok_or(StoreError::NotFound)?;
        if stored.version != expected_version {
            return Err(Conflict::VersionMismatch.into());
        }
        build.version = expected_version + 1;
        build.created_at = stored.created_at;
        tables.store(build.clone());
        Ok(build)
    }

    async fn list_builds(&self, filter: &BuildFilter, page: &PageRequest) -> StoreResult<Page<Build>> {
        paging::page_of(&read(&self.builds).by_id, page, |build| filter.matches(build), |build| build.id.into())
    }

    async fn append_log(&self, id: BuildId, lines: Vec<NewLogLine>) -> StoreResult<u64> {
        let mut tables = write(&self.builds);
        if !tables.by_id.contains_key(&id) {
            return Err(StoreError::NotFound);
        }
        let log = tables.logs.entry(id).or_default();
        for line in lines {
            log.lines.insert(log.length, line.numbered(log.length));
            log.length += 1;
        }
        Ok(log.length)
    }

    async fn read_log(&self, id: BuildId, offset: u64, limit: usize) -> StoreResult<Vec<LogLine>> {
        let tables = read(&self.builds);
        let Some(log) = tables.logs.get(&id) else { return Ok(Vec::new()) };
        Ok(log.lines.range(offset..).take(limit).map(|(_, line)| line.clone()).collect())
    }

    async fn truncate_log(&self, id: BuildId, marker: LogLine, drop: Vec<u64>) -> StoreResult<()> {
        let mut tables = write(&self.builds);
        if !tables.by_id.contains_key(&id) {
            return Err(StoreError::NotFound);
        }
        let log = tables.logs.entry(id).or_default();
        for seq in drop {
            log.lines.remove(&seq);
        }
        log.lines.insert(marker.seq, marker);
        Ok(())
    }

    async fn build_counts(&self) -> StoreResult<Vec<(BuildStatus, u64)>> {
        let tables = read(&self.builds);
        let mut counts = BTreeMap::new();
        for build in tables.by_id.values() {
            *counts.entry(build.status).or_insert(0_u64) += 1;
        }
        Ok(counts.into_iter().collect())
    }

    async fn build_outcomes(&self, filter: &OutcomeFilter) -> StoreResult<Vec<BuildOutcome>> {
        Ok(read(&self.builds).outcomes.values().filter(|outcome| filter.matches(outcome)).cloned().collect())
    }

    async fn latest_builds(&self) -> StoreResult<Vec<Build>> {
        let tables = read(&self.builds);
        let mut latest: BTreeMap<&str, &Build> = BTreeMap::new();
        // Ids grow with time (UUID v7), so the last build seen per project is its newest.
        for build in tables.by_id.values() {
            latest.insert(&build.project, build);
        }
        Ok(latest.into_values().cloned().collect())
    }
}
