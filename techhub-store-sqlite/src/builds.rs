//! Builds (stored as JSON records with their filter columns beside them) and their logs.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use techhub_core::model::{
    Build, BuildFilter, BuildId, BuildOutcome, BuildStatus, Job, LogLine, NewLogLine, OutcomeFilter, Page, PageRequest,
};
use techhub_core::storage::{BuildStore, Conflict, StoreError, StoreResult, decisions};

use crate::CachedStatements;
use crate::rows::{micros, to_json};
use crate::{Sql, SqliteStore, jobs, rows};

fn status_word(status: BuildStatus) -> StoreResult<String> {
    Ok(to_json(&status)?.trim_matches('"').to_owned())
}

fn load(connection: &Connection, id: BuildId) -> StoreResult<Option<Build>> {
    connection
        .cached_row("SELECT record FROM builds WHERE id = ?1", [id.as_bytes()], |row| rows::from_json(row, 0))
        .optional()
        .sql()
}

/// Log lines inserted by one statement when a batch is large enough.
const LOG_ROWS_PER_INSERT: usize = 128;

/// `INSERT INTO build_logs ... VALUES (?1, ?2, ?3), (?1, ?4, ?5), ...` for [`LOG_ROWS_PER_INSERT`] rows.
fn multi_row_insert() -> String {
    let values: Vec<String> =
        (0..LOG_ROWS_PER_INSERT).map(|n| format!("(?1, ?{}, ?{})", 2 + 2 * n, 3 + 2 * n)).collect();
    format!("INSERT INTO build_logs (build_id, seq, line) VALUES {}", values.join(", "))
}

/// Keeps the build's outcome beside it: written when the build is finished, removed when it is not.
fn save_outcome(connection: &Connection, build: &Build) -> StoreResult<()> {
    match BuildOutcome::of(build) {
        Some(outcome) => connection
            .cached_execute(
                "INSERT OR REPLACE INTO build_outcomes (build_id, project, finished_at, record) VALUES (?1, ?2, ?3, ?4)",
                params![build.id.as_bytes(), outcome.project, micros(outcome.finished_at), to_json(&outcome)?],
            )
            .sql()?,
        None => connection.cached_execute("DELETE FROM build_outcomes WHERE build_id = ?1", [build.id.as_bytes()]).sql()?,
    };
    Ok(())
}

#[async_trait]
impl BuildStore for SqliteStore {
    async fn insert_builds(&self, builds: Vec<Build>, follow_up: Vec<Job>) -> StoreResult<Vec<Build>> {
        self.engine
            .write(move |connection| {
                let mut stored = Vec::with_capacity(builds.len());
                for mut build in builds {
                    if load(connection, build.id)?.is_some() {
                        return Err(Conflict::Duplicate.into());
                    }
                    build.version = 1;
                    connection
                        .cached_execute(
                            "INSERT INTO builds (id, project, status, created_by, version, record) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                            params![
                                build.id.as_bytes(),
                                build.project,
                                status_word(build.status)?,
                                build.created_by.map(|user| user.as_bytes().to_vec()),
                                to_json(&build)?,
                            ],
                        )
                        .sql()?;
                    save_outcome(connection, &build)?;
                    stored.push(build);
                }
                jobs::insert_jobs(connection, follow_up)?;
                Ok(stored)
            })
            .await
    }

    async fn get_build(&self, id: BuildId) -> StoreResult<Option<Build>> {
        self.engine.read(move |connection| load(connection, id)).await
    }

    async fn update_build(&self, mut build: Build, expected_version: u64) -> StoreResult<Build> {
        self.engine
            .write(move |connection| {
                let stored = load(connection, build.id)?.ok_or(StoreError::NotFound)?;
                if stored.version != expected_version {
                    return Err(Conflict::VersionMismatch.into());
                }
                build.version = expected_version + 1;
                build.created_at = stored.created_at;
                connection
                    .cached_execute(
                        "UPDATE builds SET project = ?2, status = ?3, created_by = ?4, version = ?5, record = ?6 WHERE id = ?1",
                        params![
                            build.id.as_bytes(),
                            build.project,
                            status_word(build.status)?,
                            build.created_by.map(|user| user.as_bytes().to_vec()),
                            i64::try_from(build.version).unwrap_or(i64::MAX),
                            to_json(&build)?,
                        ],
                    )
                    .sql()?;
                save_outcome(connection, &build)?;
                Ok(build)
            })
            .await
    }

    async fn list_builds(&self, filter: &BuildFilter, page: &PageRequest) -> StoreResult<Page<Build>> {
        let after = decisions::start_after(page)?;
        let filter = filter.clone();
        let limit = page.limit;
        self.engine
            .read(move |connection| {
                let status = filter.status.map(status_word).transpose()?;
                let mut statement = connection
                    .prepare_cached(
                        "SELECT record FROM builds WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR project = ?2) \
                         AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR created_by = ?4) ORDER BY id LIMIT ?5",
                    )
                    .sql()?;
                let items = statement
                    .query_map(
                        params![
                            after.map(|id| id.as_bytes().to_vec()),
                            filter.project,
                            status,
                            filter.created_by.map(|user| user.as_bytes().to_vec()),
                            i64::try_from(limit + 1).unwrap_or(i64::MAX),
                        ],
                        |row| rows::from_json::<Build>(row, 0),
                    )
                    .sql()?
                    .collect::<rusqlite::Result<Vec<Build>>>()
                    .sql()?;
                Ok(Page::from_overfetch(items, limit, |build| build.id.into()))
            })
            .await
    }

    async fn append_log(&self, id: BuildId, lines: Vec<NewLogLine>) -> StoreResult<u64> {
        self.engine
            .write(move |connection| {
                if load(connection, id)?.is_none() {
                    return Err(StoreError::NotFound);
                }
                let mut next: u64 = connection
                    .cached_row(
                        "SELECT COALESCE(MAX(seq) + 1, 0) FROM build_logs WHERE build_id = ?1",
                        [id.as_bytes()],
                        |row| row.get::<_, i64>(0),
                    )
                    .sql()?
                    .try_into()
                    .unwrap_or_default();
                let first = next;
                let rows: Vec<String> = lines
                    .into_iter()
                    .enumerate()
                    .map(|(n, line)| to_json(&line.numbered(first + n as u64)))
                    .collect::<StoreResult<_>>()?;
                // Many rows per statement: one step per chunk instead of one per line.
                let whole_chunks = rows.len() / LOG_ROWS_PER_INSERT;
                let mut rows = rows.into_iter();
                if whole_chunks > 0 {
                    let mut insert = connection.prepare_cached(&multi_row_insert()).sql()?;
                    for _ in 0..whole_chunks {
                        let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(1 + 2 * LOG_ROWS_PER_INSERT);
                        values.push(id.as_bytes().to_vec().into());
                        for row in rows.by_ref().take(LOG_ROWS_PER_INSERT) {
                            values.push(i64::try_from(next).unwrap_or(i64::MAX).into());
                            values.push(row.into());
                            next += 1;
                        }
                        insert.execute(rusqlite::params_from_iter(values)).sql()?;
                    }
                }
                let mut insert = connection
                    .prepare_cached("INSERT INTO build_logs (build_id, seq, line) VALUES (?1, ?2, ?3)")
                    .sql()?;
                for row in rows {
                    insert.execute(params![id.as_bytes(), i64::try_from(next).unwrap_or(i64::MAX), row]).sql()?;
                    next += 1;
                }
                Ok(next)
            })
            .await
    }

    async fn read_log(&self, id: BuildId, offset: u64, limit: usize) -> StoreResult<Vec<LogLine>> {
        self.engine
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT line FROM build_logs WHERE build_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                    )
                    .sql()?;
                let lines = statement
                    .query_map(
                        params![
                            id.as_bytes(),
                            i64::try_from(offset).unwrap_or(i64::MAX),
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        |row| rows::from_json::<LogLine>(row, 0),
                    )
                    .sql()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .sql()?;
                Ok(lines)
            })
            .await
    }

    async fn truncate_log(&self, id: BuildId, marker: LogLine, drop: Vec<u64>) -> StoreResult<()> {
        self.engine
            .write(move |connection| {
                if load(connection, id)?.is_none() {
                    return Err(StoreError::NotFound);
                }
                let mut delete =
                    connection.prepare_cached("DELETE FROM build_logs WHERE build_id = ?1 AND seq = ?2").sql()?;
                for seq in drop {
                    delete.execute(params![id.as_bytes(), i64::try_from(seq).unwrap_or(i64::MAX)]).sql()?;
                }
                connection
                    .cached_execute(
                        "INSERT OR REPLACE INTO build_logs (build_id, seq, line) VALUES (?1, ?2, ?3)",
                        params![id.as_bytes(), i64::try_from(marker.seq).unwrap_or(i64::MAX), to_json(&marker)?],
                    )
                    .sql()?;
                Ok(())
            })
            .await
    }

    async fn build_counts(&self) -> StoreResult<Vec<(BuildStatus, u64)>> {
        let counted = self
            .engine
            .read(move |connection| {
                let mut statement =
                    connection.prepare_cached("SELECT status, COUNT(*) FROM builds GROUP BY status").sql()?;
                let rows = statement
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
                    .sql()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .sql()?;
                Ok(rows)
            })
            .await?;
        Ok(BuildStatus::ALL
            .iter()
            .filter_map(|status| {
                let (_, count) = counted.iter().find(|(word, _)| word == status.as_str())?;
                Some((*status, u64::try_from(*count).unwrap_or_default()))
            })
            .filter(|(_, count)| *count > 0)
            .collect())
    }

    async fn build_outcomes(&self, filter: &OutcomeFilter) -> StoreResult<Vec<BuildOutcome>> {
        let filter = filter.clone();
        self.engine
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT record FROM build_outcomes WHERE (?1 IS NULL OR project = ?1) \
                         AND (?2 IS NULL OR finished_at >= ?2) ORDER BY build_id",
                    )
                    .sql()?;
                let outcomes = statement
                    .query_map(params![filter.project, filter.since.map(micros)], |row| rows::from_json(row, 0))
                    .sql()?
                    .collect::<rusqlite::Result<Vec<BuildOutcome>>>()
                    .sql()?;
                Ok(outcomes)
            })
            .await
    }

    async fn latest_builds(&self) -> StoreResult<Vec<Build>> {
        self.engine
            .read(move |connection| {
                // One index seek per project on builds_project (project, id).
                let mut statement = connection
                    .prepare_cached(
                        "SELECT (SELECT record FROM builds AS newest WHERE newest.project = projects.project \
                         ORDER BY id DESC LIMIT 1) FROM (SELECT DISTINCT project FROM builds) AS projects \
                         ORDER BY projects.project",
                    )
                    .sql()?;
                let builds = statement
                    .query_map([], |row| rows::from_json::<Build>(row, 0))
                    .sql()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .sql()?;
                Ok(builds)
            })
            .await
    }
}
