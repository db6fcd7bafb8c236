//! The database: one sled tree per aggregate plus index trees, the error mapping, and the transaction helper.
//!
//! Every change that touches several trees runs in one sled transaction, so an index never disagrees with its
//! rows, not even after a crash. A transaction body sees the trees only through the views it is given: sled
//! 0.34 runs transactions under a process-wide lock, and a plain tree read inside a body would wait for that
//! lock forever. Bodies are also free of side effects, as sled may run one again. Range scans are not
//! available inside a transaction, so operations that need one scan first, then check inside the transaction
//! that what they read is still so (see `jobs::claim` and `tokens`).

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional, TransactionalTree};
use sled::{Db, Tree};
use techhub_core::storage::{StoreError, StoreResult};

use crate::codec::corrupt;

/// The result type of transaction bodies: a store error aborts the transaction.
pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Aborts a transaction with `error`.
pub(crate) fn abort(error: impl Into<StoreError>) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error.into())
}

/// `?` for store results inside transaction bodies.
pub(crate) trait OrAbort<T> {
    fn or_abort(self) -> TxResult<T>;
}

impl<T> OrAbort<T> for StoreResult<T> {
    fn or_abort(self) -> TxResult<T> {
        self.map_err(ConflictableTransactionError::Abort)
    }
}

/// Maps a sled error: I/O trouble may pass (a full disk, a database locked by another process), corruption is
/// reported as such, anything else is a backend failure.
pub(crate) fn sled_error(error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(_) => StoreError::unavailable(error),
        sled::Error::Corruption { .. } => StoreError::corrupt(error),
        _ => StoreError::backend(error),
    }
}

/// `?` for sled results outside transactions.
pub(crate) trait Sled<T> {
    fn sled(self) -> StoreResult<T>;
}

impl<T> Sled<T> for sled::Result<T> {
    fn sled(self) -> StoreResult<T> {
        self.map_err(sled_error)
    }
}

/// Runs `body` as one transaction over `trees`; the body gets their views in the same order.
pub(crate) fn transaction<R>(trees: &[&Tree], body: impl Fn(&[TransactionalTree]) -> TxResult<R>) -> StoreResult<R> {
    trees.transaction(|views: &Vec<TransactionalTree>| body(views)).map_err(|error| match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => sled_error(error),
    })
}

/// A transaction body was given fewer views than it names: a bug in this crate, reported rather than panicked.
pub(crate) fn missing_views() -> ConflictableTransactionError<StoreError> {
    abort(StoreError::backend(std::io::Error::other("a transaction was opened over the wrong trees")))
}

/// The trees of the job aggregate, which several aggregates' writes include (follow-up jobs).
#[derive(Debug, Clone)]
pub(crate) struct JobTrees {
    /// Job id → job row.
    pub(crate) rows: Tree,
    /// Job id → artifact.
    pub(crate) artifacts: Tree,
    /// Due queued jobs in claim order (see [`QueueKeys`](crate::keys::QueueKeys)).
    pub(crate) ready: Tree,
    /// Queued jobs not yet due, by queue and `run_at`.
    pub(crate) delayed: Tree,
    /// Running jobs by lease end.
    pub(crate) leases: Tree,
    /// Finished jobs by state and end, for pruning.
    pub(crate) finished: Tree,
    /// Unique key → the live (queued or running) job holding it.
    pub(crate) unique: Tree,
    /// Creator · job id, for listing a user's jobs.
    pub(crate) by_creator: Tree,
    /// Queue name → jobs per state.
    pub(crate) counts: Tree,
}

impl JobTrees {
    /// The trees in the order [`JobTx::new`](crate::job_index::JobTx::new) expects their views.
    pub(crate) fn all(&self) -> [&Tree; 9] {
        [
            &self.rows,
            &self.artifacts,
            &self.ready,
            &self.delayed,
            &self.leases,
            &self.finished,
            &self.unique,
            &self.by_creator,
            &self.counts,
        ]
    }
}

/// The token trees; user deletion includes them.
#[derive(Debug, Clone)]
pub(crate) struct TokenTrees {
    /// Token hash → token row.
    pub(crate) rows: Tree,
    /// User id · hash.
    pub(crate) by_user: Tree,
    /// Family id · hash.
    pub(crate) by_family: Tree,
    /// Expiry · hash, for pruning.
    pub(crate) by_expiry: Tree,
    /// User or family → how many tokens were ever added to it: lets a revocation that scanned outside its
    /// transaction check inside it that no token joined meanwhile.
    pub(crate) generations: Tree,
}

impl TokenTrees {
    /// The trees in the order [`TokenTx::new`](crate::tokens::TokenTx::new) expects their views.
    pub(crate) fn all(&self) -> [&Tree; 5] {
        [&self.rows, &self.by_user, &self.by_family, &self.by_expiry, &self.generations]
    }
}

/// Every tree of the store.
#[derive(Debug, Clone)]
pub(crate) struct Trees {
    /// User id → user row.
    pub(crate) users: Tree,
    /// Normalised email → user id.
    pub(crate) emails: Tree,
    /// Counters over users (active admins).
    pub(crate) user_counts: Tree,
    pub(crate) tokens: TokenTrees,
    pub(crate) jobs: JobTrees,
    /// Build id → build (JSON).
    pub(crate) builds: Tree,
    /// Project · build id.
    pub(crate) builds_by_project: Tree,
    /// Build id · seq → log line (JSON).
    pub(crate) build_logs: Tree,
    /// Build id → number of log lines.
    pub(crate) build_log_lengths: Tree,
    /// Notification id → notification (JSON).
    pub(crate) notifications: Tree,
    /// Channel · status → count.
    pub(crate) notification_counts: Tree,
}

/// The layout this code writes, kept in the `meta` tree.
const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &[u8] = b"format";

impl Trees {
    /// Opens every tree of `db`, after checking (or, in a new database, recording) the layout version.
    pub(crate) fn open(db: &Db) -> StoreResult<Self> {
        check_format(db)?;
        let tree = |name: &str| db.open_tree(name).sled();
        Ok(Self {
            users: tree("users")?,
            emails: tree("users_by_email")?,
            user_counts: tree("user_counts")?,
            tokens: TokenTrees {
                rows: tree("tokens")?,
                by_user: tree("tokens_by_user")?,
                by_family: tree("tokens_by_family")?,
                by_expiry: tree("tokens_by_expiry")?,
                generations: tree("token_generations")?,
            },
            jobs: JobTrees {
                rows: tree("jobs")?,
                artifacts: tree("job_artifacts")?,
                ready: tree("jobs_ready")?,
                delayed: tree("jobs_delayed")?,
                leases: tree("jobs_by_lease")?,
                finished: tree("jobs_finished")?,
                unique: tree("jobs_by_unique_key")?,
                by_creator: tree("jobs_by_creator")?,
                counts: tree("job_counts")?,
            },
            builds: tree("builds")?,
            builds_by_project: tree("builds_by_project")?,
            build_logs: tree("build_logs")?,
            build_log_lengths: tree("build_log_lengths")?,
            notifications: tree("notifications")?,
            notification_counts: tree("notification_counts")?,
        })
    }
}

/// A database written by a newer layout is refused: this code would misread it.
fn check_format(db: &Db) -> StoreResult<()> {
    let meta = db.open_tree("meta").sled()?;
    match meta.get(FORMAT_KEY).sled()? {
        None => {
            meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes()).sled()?;
            Ok(())
        }
        Some(stored) => {
            let stored: [u8; 4] = stored.as_ref().try_into().map_err(|_| corrupt("unreadable format version"))?;
            let version = u32::from_be_bytes(stored);
            if version > FORMAT_VERSION {
                return Err(StoreError::corrupt(std::io::Error::other(format!(
                    "the database has layout version {version}, newer than this TechHub understands ({FORMAT_VERSION}); upgrade TechHub"
                ))));
            }
            Ok(())
        }
    }
}

/// Reads a big-endian `u64` counter value (absent is zero).
pub(crate) fn counter(value: Option<&[u8]>) -> StoreResult<u64> {
    value
        .map(|bytes| bytes.try_into().map(u64::from_be_bytes).map_err(|_| corrupt("a counter is not 8 bytes")))
        .transpose()
        .map(Option::unwrap_or_default)
}
