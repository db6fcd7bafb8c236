//! Builds (JSON records, with an index by project) and their logs: lines keyed by build and `seq`, and each
//! log's length, so an append numbers its lines on in the same transaction that stores them. Counts per status
//! and the outcomes of finished builds are kept in the transactions that store the builds.

use async_trait::async_trait;
use sled::IVec;
use std::ops::Bound;

use techhub_core::model::{
    Build, BuildFilter, BuildId, BuildOutcome, BuildStatus, Job, LogLine, NewLogLine, OutcomeFilter, Page, PageRequest,
};
use techhub_core::storage::{BuildStore, Conflict, StoreError, StoreResult};

use crate::SledStore;
use crate::codec::corrupt;
use crate::engine::{Sled, TreeId, counter};
use crate::job_index::{JobTx, NewJob};
use crate::keys;
use crate::paging::{page_of, trailing_id};
use crate::rows::{from_json, to_json};
use crate::tx::{OrAbort, Tx, TxResult, TxTree, abort};

fn project_key(build: &Build) -> StoreResult<Vec<u8>> {
    keys::project_build(&build.project, build.id.as_uuid())
        .ok_or_else(|| StoreError::InvalidInput("the project name is longer than 65,535 bytes".to_owned()))
}

/// The counter key of a status: its position in [`BuildStatus::ALL`], so key order is declaration order.
fn count_key(status: BuildStatus) -> [u8; 1] {
    [BuildStatus::ALL.iter().position(|known| *known == status).unwrap_or_default() as u8]
}

/// The build rows, their project index, counts and outcomes as one call sees them.
struct BuildTx<'a> {
    rows: TxTree<'a>,
    by_project: TxTree<'a>,
    counts: TxTree<'a>,
    outcomes: TxTree<'a>,
}

impl<'a> BuildTx<'a> {
    fn new(tx: &'a Tx<'a>) -> Self {
        Self {
            rows: tx.tree(TreeId::Builds),
            by_project: tx.tree(TreeId::BuildsByProject),
            counts: tx.tree(TreeId::BuildCounts),
            outcomes: tx.tree(TreeId::BuildOutcomes),
        }
    }

    fn shift(&self, status: BuildStatus, up: bool) -> TxResult<()> {
        let key = count_key(status);
        let count = counter(self.counts.get(key)?.as_deref()).or_abort()?;
        let count = if up { count + 1 } else { count.saturating_sub(1) };
        if count == 0 {
            self.counts.remove(key.as_slice())
        } else {
            self.counts.insert(key.as_slice(), count.to_be_bytes().as_slice())
        }
    }

    fn load(&self, id: BuildId) -> TxResult<Option<Build>> {
        let Some(row) = self.rows.get(id.as_bytes())? else { return Ok(None) };
        Ok(Some(from_json(&row).or_abort()?))
    }

    /// Writes `build` in place of `stored` (if any), moving its project index entry if the project changed.
    fn save(&self, stored: Option<&Build>, build: &Build) -> TxResult<()> {
        self.rows.insert(build.id.as_bytes().as_slice(), to_json(build).or_abort()?)?;
        if stored.is_none_or(|stored| stored.status != build.status) {
            if let Some(stored) = stored {
                self.shift(stored.status, false)?;
            }
            self.shift(build.status, true)?;
        }
        match BuildOutcome::of(build) {
            Some(outcome) => self.outcomes.insert(build.id.as_bytes().as_slice(), to_json(&outcome).or_abort()?)?,
            None => self.outcomes.remove(build.id.as_bytes().as_slice())?,
        }
        if stored.is_none_or(|stored| stored.project != build.project) {
            if let Some(stored) = stored {
                self.by_project.remove(project_key(stored).or_abort()?)?;
            }
            self.by_project.insert(project_key(build).or_abort()?, IVec::default())?;
        }
        Ok(())
    }
}

impl SledStore {
    fn load_build(&self, id: BuildId) -> StoreResult<Option<Build>> {
        self.trees[TreeId::Builds].get(id.as_bytes()).sled()?.map(|row| from_json(&row)).transpose()
    }
}

#[async_trait]
impl BuildStore for SledStore {
    async fn insert_builds(&self, builds: Vec<Build>, follow_up: Vec<Job>) -> StoreResult<Vec<Build>> {
        let builds: Vec<Build> = builds.into_iter().map(|build| Build { version: 1, ..build }).collect();
        for build in &builds {
            project_key(build)?;
        }
        let follow_up = NewJob::prepare_all(&follow_up)?;
        self.writer
            .write(move |tx| {
                let stored = BuildTx::new(tx);
                for build in &builds {
                    // Also catches an id repeated within the batch: a call reads its own writes.
                    if stored.load(build.id)?.is_some() {
                        return Err(abort(Conflict::Duplicate));
                    }
                    stored.save(None, build)?;
                }
                JobTx::new(tx).insert(&follow_up)?;
                Ok(builds.clone())
            })
            .await
    }

    async fn get_build(&self, id: BuildId) -> StoreResult<Option<Build>> {
        self.load_build(id)
    }

    async fn update_build(&self, build: Build, expected_version: u64) -> StoreResult<Build> {
        project_key(&build)?;
        self.writer
            .write(move |tx| {
                let builds = BuildTx::new(tx);
                let stored = builds.load(build.id)?.ok_or_else(|| abort(StoreError::NotFound))?;
                if stored.version != expected_version {
                    return Err(abort(Conflict::VersionMismatch));
                }
                let next = Build { version: expected_version + 1, created_at: stored.created_at, ..build.clone() };
                builds.save(Some(&stored), &next)?;
                Ok(next)
            })
            .await
    }

    async fn list_builds(&self, filter: &BuildFilter, page: &PageRequest) -> StoreResult<Page<Build>> {
        let keep = |build: &Build| filter.matches(build);
        let id_of = |build: &Build| build.id.into();
        match filter.project.as_deref().map(keys::project_prefix) {
            // One project's builds come from its index.
            Some(Some(prefix)) => {
                let load = |key: &IVec, _: &IVec| self.load_build(BuildId::from_uuid(trailing_id(key)?));
                page_of(&self.trees[TreeId::BuildsByProject], &prefix, page, load, keep, id_of)
            }
            Some(None) => Ok(Page { items: Vec::new(), next_cursor: None }),
            None => page_of(&self.trees[TreeId::Builds], &[], page, |_, row| from_json(row).map(Some), keep, id_of),
        }
    }

    async fn append_log(&self, id: BuildId, lines: Vec<NewLogLine>) -> StoreResult<u64> {
        self.writer
            .write(move |tx| {
                let (builds, lengths, logs) =
                    (tx.tree(TreeId::Builds), tx.tree(TreeId::BuildLogLengths), tx.tree(TreeId::BuildLogs));
                if builds.get(id.as_bytes())?.is_none() {
                    return Err(abort(StoreError::NotFound));
                }
                let start = counter(lengths.get(id.as_bytes())?.as_deref()).or_abort()?;
                let mut seq = start;
                for line in &lines {
                    let line = LogLine {
                        seq,
                        at: line.at,
                        module: line.module.clone(),
                        stream: line.stream,
                        text: line.text.clone(),
                    };
                    logs.insert(keys::log_line(id.as_uuid(), seq), to_json(&line).or_abort()?)?;
                    seq += 1;
                }
                if seq != start {
                    lengths.insert(id.as_bytes().as_slice(), seq.to_be_bytes().as_slice())?;
                }
                Ok(seq)
            })
            .await
    }

    async fn read_log(&self, id: BuildId, offset: u64, limit: usize) -> StoreResult<Vec<LogLine>> {
        let start = keys::log_line(id.as_uuid(), offset);
        let end = keys::log_line(id.as_uuid(), u64::MAX);
        self.trees[TreeId::BuildLogs]
            .range(start..=end)
            .take(limit)
            .map(|entry| from_json::<LogLine>(&entry.sled()?.1))
            .collect()
    }

    async fn truncate_log(&self, id: BuildId, marker: LogLine, drop: Vec<u64>) -> StoreResult<()> {
        let row = to_json(&marker)?;
        self.writer
            .write(move |tx| {
                let (builds, logs) = (tx.tree(TreeId::Builds), tx.tree(TreeId::BuildLogs));
                if builds.get(id.as_bytes())?.is_none() {
                    return Err(abort(StoreError::NotFound));
                }
                for seq in &drop {
                    logs.remove(keys::log_line(id.as_uuid(), *seq))?;
                }
                logs.insert(keys::log_line(id.as_uuid(), marker.seq), row.as_slice())?;
                Ok(())
            })
            .await
    }

    async fn build_counts(&self) -> StoreResult<Vec<(BuildStatus, u64)>> {
        self.trees[TreeId::BuildCounts]
            .iter()
            .map(|entry| {
                let (key, count) = entry.sled()?;
                let [status] = key.as_ref() else { return Err(corrupt("a build counter key")) };
                let status =
                    *BuildStatus::ALL.get(usize::from(*status)).ok_or_else(|| corrupt("unknown build status"))?;
                Ok((status, counter(Some(&count))?))
            })
            .collect()
    }

    async fn build_outcomes(&self, filter: &OutcomeFilter) -> StoreResult<Vec<BuildOutcome>> {
        let mut outcomes = Vec::new();
        for entry in self.trees[TreeId::BuildOutcomes].iter() {
            let outcome: BuildOutcome = from_json(&entry.sled()?.1)?;
            if filter.matches(&outcome) {
                outcomes.push(outcome);
            }
        }
        Ok(outcomes)
    }

    async fn latest_builds(&self) -> StoreResult<Vec<Build>> {
        let index = &self.trees[TreeId::BuildsByProject];
        let mut latest = Vec::new();
        let mut from: Bound<Vec<u8>> = Bound::Unbounded;
        // One seek per project: the last key under a project's prefix holds its newest build (ids grow with time),
        // and the next project starts after the largest key that prefix can have.
        while let Some(entry) = index.range::<Vec<u8>, _>((from.clone(), Bound::Unbounded)).next() {
            let (key, _) = entry.sled()?;
            let prefix_len = key.len().checked_sub(keys::ID).ok_or_else(|| corrupt("a short project index key"))?;
            let prefix = &key[..prefix_len];
            let Some(last) = index.scan_prefix(prefix).next_back() else { break };
            let (last, _) = last.sled()?;
            let project = String::from_utf8(prefix.get(2..).unwrap_or_default().to_vec())
                .map_err(|_| corrupt("a project name is not UTF-8"))?;
            latest.push((project, BuildId::from_uuid(trailing_id(&last)?)));
            let mut end = prefix.to_vec();
            end.extend_from_slice(&[0xff; keys::ID]);
            from = Bound::Excluded(end);
        }
        latest.sort();
        let mut builds = Vec::with_capacity(latest.len());
        for (_, id) in latest {
            if let Some(build) = self.load_build(id)? {
                builds.push(build);
            }
        }
        Ok(builds)
    }
}
