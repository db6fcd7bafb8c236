//! The `job_counts` table (jobs by queue and state), kept by the store's own writes inside their transaction.
//!
//! Triggers kept it before (schema version 7 dropped them): each fired per row, and a statement that fires
//! triggers makes SQLite keep a statement journal, which together cost about a sixth of a job's writes. Now
//! each write collects its changes in a [`CountChanges`] and applies them with one upsert per queue and
//! state it touched, in the same transaction as the jobs it changed: the counts stay exact, and a write that
//! fails or is rolled back takes its count changes with it.

use rusqlite::{Connection, params};
use techhub_core::model::JobState;
use techhub_core::storage::StoreResult;

use crate::Sql;

/// Count changes by queue and state, collected during one write.
#[derive(Debug, Default)]
pub(crate) struct CountChanges {
    /// Few entries (one or two queues, a few states per write): a list beats a map.
    changes: Vec<(String, JobState, i64)>,
}

impl CountChanges {
    /// `by` more (or fewer, when negative) jobs of `queue` in `state`.
    pub(crate) fn add(&mut self, queue: &str, state: JobState, by: i64) {
        match self.changes.iter_mut().find(|(known, known_state, _)| *known_state == state && known == queue) {
            Some((_, _, count)) => *count += by,
            None => self.changes.push((queue.to_owned(), state, by)),
        }
    }

    /// A job of `queue` moved from state `from` to `to` (nothing when they are the same).
    pub(crate) fn moved(&mut self, queue: &str, from: JobState, to: JobState) {
        if from != to {
            self.add(queue, from, -1);
            self.add(queue, to, 1);
        }
    }

    /// Writes the changes into `job_counts`, inside the caller's transaction.
    pub(crate) fn apply(self, connection: &Connection) -> StoreResult<()> {
        for (queue, state, by) in self.changes.into_iter().filter(|(_, _, by)| *by != 0) {
            connection
                .prepare_cached(
                    "INSERT INTO job_counts (queue, state, count) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (queue, state) DO UPDATE SET count = count + excluded.count",
                )
                .sql()?
                .execute(params![queue, state.as_str(), by])
                .sql()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use techhub_core::model::JobState;

    use super::CountChanges;

    #[test]
    fn changes_to_one_queue_and_state_add_up() {
        let mut changes = CountChanges::default();
        changes.add("mail", JobState::Queued, 3);
        changes.moved("mail", JobState::Queued, JobState::Running);
        changes.moved("mail", JobState::Running, JobState::Running);
        changes.add("video", JobState::Queued, 1);
        assert_eq!(
            changes.changes,
            vec![
                ("mail".to_owned(), JobState::Queued, 2),
                ("mail".to_owned(), JobState::Running, 1),
                ("video".to_owned(), JobState::Queued, 1),
            ]
        );
    }
}
