//! One store call's writes: staged in memory, then committed with the other calls of its round in one sled
//! transaction over only the trees they touched.
//!
//! The writer is the only thread that writes, so a call can run *before* the sled transaction: it reads the
//! trees directly, through a [`Tx`] that first shows its own writes and then those of the earlier calls of its
//! round ([`Pending`]), and buffers its writes. A call that succeeds adds them to the round's; one that fails
//! drops them, leaving no trace and the other calls of its round unaffected. The round then commits the
//! writes it collected in one sled transaction (atomic on disk and to readers), one write per key whatever
//! the number of calls that changed it, over the trees written and no others.
//!
//! Running calls outside the sled transaction matters for cost: sled 0.34 builds a view of every tree a
//! transaction names and looks every written key up again as it is written, so a transaction over every tree
//! that receives every call's writes one by one pays for all of that per call; staged writes pay it once per
//! key and round. It also keeps readers on other threads moving, as sled holds its process-wide lock only for
//! the short commit. Range scans are plain tree reads; a call that scans sees the round's committed state, not
//! the staged writes, so calls that must scan run alone on the writer (see [`writer`](crate::writer)).

use std::cell::RefCell;
use std::collections::BTreeMap;

use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional, TransactionalTree};
use techhub_core::storage::{StoreError, StoreResult};

use crate::engine::{TreeId, Trees, sled_error};

/// The result type of call bodies: `Abort` fails the call; the other errors fail the whole round.
pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Fails the call with `error`.
pub(crate) fn abort(error: impl Into<StoreError>) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error.into())
}

/// `?` for store results inside call bodies.
pub(crate) trait OrAbort<T> {
    fn or_abort(self) -> TxResult<T>;
}

impl<T> OrAbort<T> for StoreResult<T> {
    fn or_abort(self) -> TxResult<T> {
        self.map_err(ConflictableTransactionError::Abort)
    }
}

/// Writes to one tree: key → new value (`None` removes).
type Staged = BTreeMap<IVec, Option<IVec>>;

/// The writes of a round's calls that succeeded, per tree, not yet in sled.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Indexed by [`TreeId`].
    trees: Vec<Staged>,
}

impl Default for Pending {
    fn default() -> Self {
        Self { trees: vec![Staged::new(); TreeId::ALL.len()] }
    }
}

impl Pending {
    fn staged(&self, tree: TreeId, key: &[u8]) -> Option<&Option<IVec>> {
        self.trees[tree as usize].get(key)
    }

    /// Adds a call's writes, which come after those already staged.
    fn absorb(&mut self, writes: Vec<(TreeId, Staged)>) {
        for (tree, mut writes) in writes {
            let staged = &mut self.trees[tree as usize];
            if staged.is_empty() {
                *staged = writes;
            } else {
                staged.append(&mut writes);
            }
        }
    }

    /// Drops every staged write (the round's commit failed, or its calls are discarded).
    pub(crate) fn clear(&mut self) {
        self.trees.iter_mut().for_each(Staged::clear);
    }

    /// Commits every staged write in one sled transaction over the trees written, and empties itself (also when
    /// the commit fails: the writes are then lost and their callers told so).
    pub(crate) fn commit(&mut self, trees: &Trees) -> Result<(), sled::Error> {
        let written: Vec<usize> = (0..self.trees.len()).filter(|&index| !self.trees[index].is_empty()).collect();
        if written.is_empty() {
            return Ok(());
        }
        let handles: Vec<sled::Tree> = written.iter().map(|&index| trees.all()[index].clone()).collect();
        let outcome = handles.as_slice().transaction(|views: &Vec<TransactionalTree>| {
            for (view, &index) in views.iter().zip(&written) {
                for (key, value) in &self.trees[index] {
                    match value {
                        Some(value) => view.insert(key.clone(), value.clone())?,
                        None => view.remove(key.clone())?,
                    };
                }
            }
            Ok::<_, ConflictableTransactionError<()>>(())
        });
        self.clear();
        match outcome {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(error)) => Err(error),
            Err(TransactionError::Abort(())) => {
                Err(sled::Error::ReportableBug("a commit of staged writes aborted".to_owned()))
            }
        }
    }
}

/// A call's savepoint: the trees as the round left them, plus this call's own writes.
pub(crate) struct Tx<'a> {
    trees: &'a Trees,
    pending: &'a Pending,
    /// This call's writes, for the few trees it writes.
    writes: RefCell<Vec<(TreeId, Staged)>>,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(trees: &'a Trees, pending: &'a Pending) -> Self {
        Self { trees, pending, writes: RefCell::new(Vec::new()) }
    }

    /// The view of one tree.
    pub(crate) fn tree(&self, id: TreeId) -> TxTree<'_> {
        TxTree { tx: self, tree: id }
    }

    /// The call's writes, to add to the round's: the call succeeded.
    fn into_writes(self) -> Vec<(TreeId, Staged)> {
        self.writes.into_inner()
    }
}

/// Runs `body` as a call of the round `pending` collects: if it succeeds, its writes join the round's.
pub(crate) fn run_call<T>(
    trees: &Trees,
    pending: &mut Pending,
    body: impl FnOnce(&Tx<'_>) -> TxResult<T>,
) -> TxResult<T> {
    let tx = Tx::new(trees, pending);
    let value = body(&tx)?;
    let writes = tx.into_writes();
    pending.absorb(writes);
    Ok(value)
}

/// One tree as a call sees it.
#[derive(Clone, Copy)]
pub(crate) struct TxTree<'a> {
    tx: &'a Tx<'a>,
    tree: TreeId,
}

impl TxTree<'_> {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> TxResult<Option<IVec>> {
        let key = key.as_ref();
        let writes = self.tx.writes.borrow();
        if let Some(written) =
            writes.iter().find(|(tree, _)| *tree == self.tree).and_then(|(_, writes)| writes.get(key))
        {
            return Ok(written.clone());
        }
        if let Some(staged) = self.tx.pending.staged(self.tree, key) {
            return Ok(staged.clone());
        }
        self.tx.trees[self.tree].get(key).map_err(ConflictableTransactionError::Storage)
    }

    pub(crate) fn insert(&self, key: impl Into<IVec>, value: impl Into<IVec>) -> TxResult<()> {
        self.write(key.into(), Some(value.into()));
        Ok(())
    }

    pub(crate) fn remove(&self, key: impl Into<IVec>) -> TxResult<()> {
        self.write(key.into(), None);
        Ok(())
    }

    fn write(&self, key: IVec, value: Option<IVec>) {
        let mut writes = self.tx.writes.borrow_mut();
        let index = match writes.iter().position(|(tree, _)| *tree == self.tree) {
            Some(index) => index,
            None => {
                writes.push((self.tree, Staged::new()));
                writes.len() - 1
            }
        };
        writes[index].1.insert(key, value);
    }
}

/// Runs `body` as one transaction on its own (the writer's calls that scan first).
pub(crate) fn transaction<R>(trees: &Trees, body: impl FnOnce(&Tx<'_>) -> TxResult<R>) -> StoreResult<R> {
    let mut pending = Pending::default();
    let result = run_call(trees, &mut pending, body).map_err(|error| match error {
        ConflictableTransactionError::Abort(error) => error,
        ConflictableTransactionError::Storage(error) => sled_error(error),
        ConflictableTransactionError::Conflict => {
            StoreError::backend(std::io::Error::other("a store call reported a conflict"))
        }
    })?;
    pending.commit(trees).map_err(sled_error)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_leaves_no_trace_and_later_calls_see_earlier_ones() {
        let db = sled::Config::new().temporary(true).open().expect("opens");
        let trees = Trees::open(&db).expect("trees");
        let mut pending = Pending::default();
        run_call(&trees, &mut pending, |first| {
            first.tree(TreeId::Users).insert(b"a".as_slice(), b"1".as_slice())?;
            assert_eq!(first.tree(TreeId::Users).get(b"a")?.as_deref(), Some(b"1".as_slice()), "reads its writes");
            Ok(())
        })
        .expect("succeeds");
        let failed = run_call(&trees, &mut pending, |failed| {
            failed.tree(TreeId::Users).insert(b"b".as_slice(), b"2".as_slice())?;
            failed.tree(TreeId::Users).remove(b"a".as_slice())?;
            Err::<(), _>(abort(StoreError::NotFound))
        });
        assert!(matches!(failed, Err(ConflictableTransactionError::Abort(StoreError::NotFound))));
        let seen = run_call(&trees, &mut pending, |last| {
            Ok((last.tree(TreeId::Users).get(b"a")?, last.tree(TreeId::Users).get(b"b")?))
        })
        .expect("reads");
        assert_eq!(seen, (Some(IVec::from(b"1".as_slice())), None));
        assert_eq!(trees[TreeId::Users].get(b"a").expect("reads"), None, "nothing reaches sled before the commit");

        pending.commit(&trees).expect("commits");
        assert_eq!(trees[TreeId::Users].get(b"a").expect("reads"), Some(IVec::from(b"1".as_slice())));
        assert_eq!(trees[TreeId::Users].get(b"b").expect("reads"), None);
        assert!(pending.trees.iter().all(Staged::is_empty), "a commit empties the round");
    }

    #[test]
    fn a_round_commits_the_last_write_of_each_key_over_several_trees() {
        let db = sled::Config::new().temporary(true).open().expect("opens");
        let trees = Trees::open(&db).expect("trees");
        trees[TreeId::Jobs].insert(b"gone", b"old".as_slice()).expect("seeds");
        let mut pending = Pending::default();
        for n in 0u8..3 {
            run_call(&trees, &mut pending, |tx| {
                tx.tree(TreeId::JobCounts).insert(b"q".as_slice(), [n].as_slice())?;
                tx.tree(TreeId::Jobs).remove(b"gone".as_slice())?;
                Ok(())
            })
            .expect("succeeds");
        }
        pending.commit(&trees).expect("commits");
        assert_eq!(trees[TreeId::JobCounts].get(b"q").expect("reads"), Some(IVec::from([2u8].as_slice())));
        assert_eq!(trees[TreeId::Jobs].get(b"gone").expect("reads"), None);
    }
}
