//! The `job_counts` table (jobs by queue and state), kept by the store's own writes inside their transaction.
//!
//! Triggers kept it before (schema version 7 dropped them): each fired per row, and a statement that fires
//! triggers makes SQLite keep a statement journal, which together cost about a sixth of a job's writes. Now
//! each write collects its changes in a [`CountChanges`], and they are written with one update per queue and
//! state touched, in the same transaction as the jobs they count: the counts stay exact, and a write that
//! fails or is rolled back takes its count changes with it. The hot job writes leave their changes to the
//! writer, which adds up those of its whole batch and writes them once before the commit.

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

    /// Adds `other`'s changes to these.
    pub(crate) fn merge(&mut self, other: Self) {
        for (queue, state, by) in other.changes {
            self.add(&queue, state, by);
        }
    }

    /// Writes the changes into `job_counts`, inside the caller's transaction, and forgets them.
    pub(crate) fn apply(&mut self, connection: &Connection) -> StoreResult<()> {
        for (queue, state, by) in self.changes.drain(..).filter(|(_, _, by)| *by != 0) {
            // The row is there but for a queue's first job in a state: an update, then an insert if it was
            // not (an upsert tries the insert first, which costs more than both).
            let updated = connection
                .prepare_cached("UPDATE job_counts SET count = count + ?3 WHERE queue = ?1 AND state = ?2")
                .sql()?
                .execute(params![queue, state.as_str(), by])
                .sql()?;
            if updated == 0 {
                connection
                    .prepare_cached("INSERT INTO job_counts (queue, state, count) VALUES (?1, ?2, ?3)")
                    .sql()?
                    .execute(params![queue, state.as_str(), by])
                    .sql()?;
            }
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
