//! Builds (stored as JSON records with their filter columns beside them) and their logs. An append locks the
//! build's row, so concurrent appends (from any instance) number their lines on without gaps.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use techhub_core::model::{
    Build, BuildFilter, BuildId, BuildOutcome, BuildStatus, Job, LogLine, NewLogLine, OutcomeFilter, Page, PageRequest,
};
use techhub_core::storage::{BuildStore, Conflict, StoreError, StoreResult, decisions};

use crate::db::{Db, execute, query, query_one, query_opt};
use crate::rows::{self, big, to_json, word};
use crate::{PostgresStore, jobs};

async fn load<C: GenericClient + Sync>(client: &C, id: BuildId, lock: bool) -> StoreResult<Option<Build>> {
    let sql = if lock {
        "SELECT record FROM builds WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT record FROM builds WHERE id = $1"
    };
    query_opt(client, sql, &[id.as_uuid()]).await?.map(|row| rows::record(&row, 0)).transpose()
}

/// Keeps the build's outcome beside it: written when the build is finished, removed when it is not.
async fn save_outcome<C: GenericClient + Sync>(client: &C, build: &Build) -> StoreResult<()> {
    match BuildOutcome::of(build) {
        Some(outcome) => {
            execute(
                client,
                "INSERT INTO build_outcomes (build_id, project, finished_at, record) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (build_id) DO UPDATE SET project = excluded.project, finished_at = excluded.finished_at, \
                 record = excluded.record",
                &[build.id.as_uuid(), &outcome.project, &outcome.finished_at, &to_json(&outcome)?],
            )
            .await?
        }
        None => execute(client, "DELETE FROM build_outcomes WHERE build_id = $1", &[build.id.as_uuid()]).await?,
    };
    Ok(())
}

#[async_trait]
impl BuildStore for PostgresStore {
    async fn insert_builds(&self, builds: Vec<Build>, follow_up: Vec<Job>) -> StoreResult<Vec<Build>> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        let mut stored = Vec::with_capacity(builds.len());
        for mut build in builds {
            build.version = 1;
            let inserted = execute(
                &transaction,
                "INSERT INTO builds (id, project, status, created_by, version, record) VALUES ($1, $2, $3, $4, 1, $5) \
                 ON CONFLICT DO NOTHING",
                &[
                    build.id.as_uuid(),
                    &build.project,
                    &word(&build.status)?,
                    &build.created_by.map(|user| *user.as_uuid()),
                    &to_json(&build)?,
                ],
            )
            .await?;
            if inserted == 0 {
                return Err(Conflict::Duplicate.into());
            }
            save_outcome(&transaction, &build).await?;
            stored.push(build);
        }
        let queued = jobs::insert_jobs(&transaction, follow_up).await?;
        transaction.commit().await.db()?;
        self.announce(&queued);
        Ok(stored)
    }

    async fn get_build(&self, id: BuildId) -> StoreResult<Option<Build>> {
        load(&self.client().await?, id, false).await
    }

    async fn update_build(&self, mut build: Build, expected_version: u64) -> StoreResult<Build> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        let stored = load(&transaction, build.id, true).await?.ok_or(StoreError::NotFound)?;
        if stored.version != expected_version {
            return Err(Conflict::VersionMismatch.into());
        }
        build.version = expected_version + 1;
        build.created_at = stored.created_at;
        execute(
            &transaction,
            "UPDATE builds SET project = $2, status = $3, created_by = $4, version = $5, record = $6 WHERE id = $1",
            &[
                build.id.as_uuid(),
                &build.project,
                &word(&build.status)?,
                &build.created_by.map(|user| *user.as_uuid()),
                &big(build.version),
                &to_json(&build)?,
            ],
        )
        .await?;
        save_outcome(&transaction, &build).await?;
        transaction.commit().await.db()?;
        Ok(build)
    }

    async fn list_builds(&self, filter: &BuildFilter, page: &PageRequest) -> StoreResult<Page<Build>> {
        let after = decisions::start_after(page)?;
        let status = filter.status.as_ref().map(word).transpose()?;
        let limit = i64::try_from(page.limit + 1).unwrap_or(i64::MAX);
        let found = query(
            &self.client().await?,
            "SELECT record FROM builds WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR project = $2) \
             AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR created_by = $4) ORDER BY id LIMIT $5",
            &[&after, &filter.project, &status, &filter.created_by.map(|user| *user.as_uuid()), &limit],
        )
        .await?;
        let items = rows::all(&found, |row| rows::record::<Build>(row, 0))?;
        Ok(Page::from_overfetch(items, page.limit, |build| build.id.into()))
    }

    async fn append_log(&self, id: BuildId, lines: Vec<NewLogLine>) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        // The build's row lock orders concurrent appends: each numbers on from what the one before committed.
        if load(&transaction, id, true).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let row = query_one(
            &transaction,
            "SELECT COALESCE(max(seq) + 1, 0)::bigint FROM build_logs WHERE build_id = $1",
            &[id.as_uuid()],
        )
        .await?;
        let first = rows::unsigned(rows::get(&row, 0)?);
        let count = lines.len() as u64;
        let seqs: Vec<i64> = (0..count).map(|n| big(first + n)).collect();
        let texts: Vec<String> = lines
            .into_iter()
            .enumerate()
            .map(|(n, line)| to_json(&line.numbered(first + n as u64)))
            .collect::<StoreResult<_>>()?;
        execute(
            &transaction,
            "INSERT INTO build_logs (build_id, seq, line) SELECT $1, seq, line FROM unnest($2::bigint[], $3::text[]) \
             AS lines (seq, line)",
            &[id.as_uuid(), &seqs, &texts],
        )
        .await?;
        transaction.commit().await.db()?;
        Ok(first + count)
    }

    async fn read_log(&self, id: BuildId, offset: u64, limit: usize) -> StoreResult<Vec<LogLine>> {
        let found = query(
            &self.client().await?,
            "SELECT line FROM build_logs WHERE build_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            &[id.as_uuid(), &big(offset), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await?;
        rows::all(&found, |row| rows::record::<LogLine>(row, 0))
    }

    async fn truncate_log(&self, id: BuildId, marker: LogLine, drop: Vec<u64>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        if load(&transaction, id, true).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let drop: Vec<i64> = drop.into_iter().map(big).collect();
        execute(&transaction, "DELETE FROM build_logs WHERE build_id = $1 AND seq = ANY($2)", &[id.as_uuid(), &drop])
            .await?;
        execute(
            &transaction,
            "INSERT INTO build_logs (build_id, seq, line) VALUES ($1, $2, $3) \
             ON CONFLICT (build_id, seq) DO UPDATE SET line = excluded.line",
            &[id.as_uuid(), &big(marker.seq), &to_json(&marker)?],
        )
        .await?;
        transaction.commit().await.db()
    }

    async fn build_counts(&self) -> StoreResult<Vec<(BuildStatus, u64)>> {
        // Grouped over the status index.
        let counted = query(&self.client().await?, "SELECT status, count(*) FROM builds GROUP BY status", &[]).await?;
        let counted: Vec<(String, i64)> =
            counted.iter().map(|row| Ok((rows::get(row, 0)?, rows::get(row, 1)?))).collect::<StoreResult<_>>()?;
        Ok(BuildStatus::ALL
            .iter()
            .filter_map(|status| {
                let (_, count) = counted.iter().find(|(word, _)| word == status.as_str())?;
                Some((*status, rows::unsigned(*count)))
            })
            .filter(|(_, count)| *count > 0)
            .collect())
    }

    async fn build_outcomes(&self, filter: &OutcomeFilter) -> StoreResult<Vec<BuildOutcome>> {
        let found = query(
            &self.client().await?,
            "SELECT record FROM build_outcomes WHERE ($1::text IS NULL OR project = $1) \
             AND ($2::timestamptz IS NULL OR finished_at >= $2) ORDER BY build_id",
            &[&filter.project, &filter.since],
        )
        .await?;
        rows::all(&found, |row| rows::record(row, 0))
    }

    async fn latest_builds(&self) -> StoreResult<Vec<Build>> {
        // One index probe per project on builds_project (project, id), projects found by a skip scan.
        let found = query(
            &self.client().await?,
            "WITH RECURSIVE projects (project) AS ( \
                 (SELECT project FROM builds ORDER BY project LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT project FROM builds WHERE project > projects.project ORDER BY project LIMIT 1) \
                 FROM projects WHERE projects.project IS NOT NULL) \
             SELECT (SELECT record FROM builds WHERE builds.project = projects.project ORDER BY id DESC LIMIT 1) \
             FROM projects WHERE projects.project IS NOT NULL ORDER BY projects.project",
            &[],
        )
        .await?;
        rows::all(&found, |row| rows::record::<Build>(row, 0))
    }
}
