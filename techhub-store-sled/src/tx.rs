//! One store call inside a sled transaction: a savepoint over the transaction's views of every tree.
//!
//! The writer runs many calls in one sled transaction (see [`writer`](crate::writer)). Each call reads through
//! a [`Tx`], which sees the transaction's state plus the call's own writes, and buffers those writes; they
//! reach the transaction only if the call succeeds, so a call that fails (a conflict) leaves no trace and the
//! others in its batch are unaffected.
//!
//! A call body sees the trees only through its `Tx`: sled 0.34 runs transactions under a process-wide lock,
//! and a plain tree read from inside one would wait for that lock forever. Bodies are also free of side
//! effects, as sled may run a transaction again. Range scans do not exist inside sled transactions; calls that
//! need one scan before their transaction on the writer thread, the only thread that writes.

use std::cell::RefCell;
use std::collections::BTreeMap;

use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional, TransactionalTree};
use techhub_core::storage::{StoreError, StoreResult};

use crate::engine::{TreeId, Trees, sled_error};

/// The result type of call bodies: `Abort` fails the call; the other errors fail the whole transaction.
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

/// A call's savepoint within a transaction over every tree.
pub(crate) struct Tx<'a> {
    views: &'a [TransactionalTree],
    /// This call's writes per tree (`None` removes), not yet in the transaction.
    writes: RefCell<Vec<BTreeMap<IVec, Option<IVec>>>>,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(views: &'a [TransactionalTree]) -> Self {
        Self { views, writes: RefCell::new(vec![BTreeMap::new(); views.len()]) }
    }

    /// The view of one tree.
    pub(crate) fn tree(&self, id: TreeId) -> TxTree<'_> {
        TxTree { tx: self, tree: id as usize }
    }

    /// Hands the call's writes to the transaction: the call succeeded.
    pub(crate) fn merge(self) -> TxResult<()> {
        for (view, writes) in self.views.iter().zip(self.writes.into_inner()) {
            for (key, value) in writes {
                match value {
                    Some(value) => view.insert(key, value)?,
                    None => view.remove(key)?,
                };
            }
        }
        Ok(())
    }

    fn view(&self, tree: usize) -> TxResult<&TransactionalTree> {
        self.views.get(tree).ok_or_else(|| {
            abort(StoreError::backend(std::io::Error::other("a transaction was opened over the wrong trees")))
        })
    }
}

/// One tree as a call sees it.
#[derive(Clone, Copy)]
pub(crate) struct TxTree<'a> {
    tx: &'a Tx<'a>,
    tree: usize,
}

impl TxTree<'_> {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> TxResult<Option<IVec>> {
        let key = key.as_ref();
        if let Some(written) = self.tx.writes.borrow().get(self.tree).and_then(|writes| writes.get(key)) {
            return Ok(written.clone());
        }
        Ok(self.tx.view(self.tree)?.get(key)?)
    }

    pub(crate) fn insert(&self, key: impl Into<IVec>, value: impl Into<IVec>) -> TxResult<()> {
        self.write(key.into(), Some(value.into()))
    }

    pub(crate) fn remove(&self, key: impl Into<IVec>) -> TxResult<()> {
        self.write(key.into(), None)
    }

    fn write(&self, key: IVec, value: Option<IVec>) -> TxResult<()> {
        let mut writes = self.tx.writes.borrow_mut();
        let tree = writes.get_mut(self.tree).ok_or_else(|| {
            abort(StoreError::backend(std::io::Error::other("a transaction was opened over the wrong trees")))
        })?;
        tree.insert(key, value);
        Ok(())
    }
}

/// Runs `body` as one transaction over every tree, on its own (the writer's calls that scan first).
pub(crate) fn transaction<R>(trees: &Trees, body: impl Fn(&Tx<'_>) -> TxResult<R>) -> StoreResult<R> {
    trees
        .all()
        .transaction(|views: &Vec<TransactionalTree>| {
            let tx = Tx::new(views);
            let result = body(&tx)?;
            tx.merge()?;
            Ok(result)
        })
        .map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => sled_error(error),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_leaves_no_trace_and_later_calls_see_earlier_ones() {
        let db = sled::Config::new().temporary(true).open().expect("opens");
        let trees = Trees::open(&db).expect("trees");
        let outcomes = trees
            .all()
            .transaction(|views: &Vec<TransactionalTree>| {
                let first = Tx::new(views);
                first.tree(TreeId::Users).insert(b"a".as_slice(), b"1".as_slice())?;
                assert_eq!(first.tree(TreeId::Users).get(b"a")?.as_deref(), Some(b"1".as_slice()), "reads its writes");
                first.merge()?;

                let failed = Tx::new(views);
                failed.tree(TreeId::Users).insert(b"b".as_slice(), b"2".as_slice())?;
                failed.tree(TreeId::Users).remove(b"a".as_slice())?;
                drop(failed);

                let last = Tx::new(views);
                let seen = (last.tree(TreeId::Users).get(b"a")?, last.tree(TreeId::Users).get(b"b")?);
                Ok::<_, ConflictableTransactionError<StoreError>>(seen)
            })
            .expect("commits");
        assert_eq!(outcomes, (Some(IVec::from(b"1".as_slice())), None));
        assert_eq!(trees[TreeId::Users].get(b"a").expect("reads"), Some(IVec::from(b"1".as_slice())));
        assert_eq!(trees[TreeId::Users].get(b"b").expect("reads"), None);
    }
}
