//! Builds: a map by id, and each build's log as a vector (the position is the `seq`).

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use techhub_core::model::{Build, BuildFilter, BuildId, Job, LogLine, NewLogLine, Page, PageRequest};
use techhub_core::storage::{BuildStore, Conflict, StoreError, StoreResult};

use crate::{MemoryStore, paging, read, write};

#[derive(Debug, Default)]
pub(crate) struct BuildTables {
    by_id: BTreeMap<BuildId, Build>,
    logs: HashMap<BuildId, Vec<LogLine>>,
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
                tables.by_id.insert(build.id, build.clone());
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
        let stored = tables.by_id.get_mut(&build.id).ok_or(StoreError::NotFound)?;
        if stored.version != expected_version {
            return Err(Conflict::VersionMismatch.into());
        }
        build.version = expected_version + 1;
        build.created_at = stored.created_at;
        *stored = build.clone();
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
            let seq = log.len() as u64;
            log.push(LogLine { seq, at: line.at, module: line.module, stream: line.stream, text: line.text });
        }
        Ok(log.len() as u64)
    }

    async fn read_log(&self, id: BuildId, offset: u64, limit: usize) -> StoreResult<Vec<LogLine>> {
        let tables = read(&self.builds);
        let log = tables.logs.get(&id).map(Vec::as_slice).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        Ok(log[start..].iter().take(limit).cloned().collect())
    }
}
