//! The database: one sled tree per aggregate plus index trees, and the mapping of sled's errors.

use std::ops::Index;

use sled::{Db, Tree};
use techhub_core::storage::{StoreError, StoreResult};

use crate::codec::corrupt;

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

macro_rules! trees {
    ($($(#[$doc:meta])* $id:ident = $name:literal,)+) => {
        /// Names a tree of the store.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum TreeId {
            $($(#[$doc])* $id,)+
        }

        impl TreeId {
            /// Every tree, in the order of [`Trees`] (and of a batch transaction's views).
            pub(crate) const ALL: &[TreeId] = &[$(TreeId::$id,)+];

            /// The tree's name on disk.
            const fn name(self) -> &'static str {
                match self {
                    $(TreeId::$id => $name,)+
                }
            }
        }
    };
}

trees! {
    /// User id → user row.
    Users = "users",
    /// Normalised email → user id.
    Emails = "users_by_email",
    /// Counters over users (active admins).
    UserCounts = "user_counts",
    /// Token hash → token row.
    Tokens = "tokens",
    /// User id · hash.
    TokensByUser = "tokens_by_user",
    /// Family id · hash.
    TokensByFamily = "tokens_by_family",
    /// Expiry · hash, for pruning.
    TokensByExpiry = "tokens_by_expiry",
    /// Job id → job row.
    Jobs = "jobs",
    /// Job id → artifact.
    JobArtifacts = "job_artifacts",
    /// Due queued jobs in claim order (see [`QueueKeys`](crate::keys::QueueKeys)).
    JobsReady = "jobs_ready",
    /// Queued jobs not yet due, by queue and `run_at`.
    JobsDelayed = "jobs_delayed",
    /// Running jobs by lease end.
    JobsByLease = "jobs_by_lease",
    /// Finished jobs by state and end, for pruning.
    JobsFinished = "jobs_finished",
    /// Unique key → the live (queued or running) job holding it.
    JobsByUniqueKey = "jobs_by_unique_key",
    /// Creator · job id, for listing a user's jobs.
    JobsByCreator = "jobs_by_creator",
    /// Queue name → jobs per state.
    JobCounts = "job_counts",
    /// Build id → build (JSON).
    Builds = "builds",
    /// Project · build id.
    BuildsByProject = "builds_by_project",
    /// Build id · seq → log line (JSON).
    BuildLogs = "build_logs",
    /// Build id → number of log lines.
    BuildLogLengths = "build_log_lengths",
    /// Status (its position in `BuildStatus::ALL`) → number of builds.
    BuildCounts = "build_counts",
    /// Build id → the outcome of a finished build (JSON), for statistics.
    BuildOutcomes = "build_outcomes",
    /// Notification id → notification (JSON).
    Notifications = "notifications",
    /// Channel · status → count.
    NotificationCounts = "notification_counts",
    /// Audit entry id → entry (JSON).
    Audit = "audit",
    /// Endpoint id → notification endpoint (JSON).
    Endpoints = "endpoints",
    /// Cron schedule name → its last fired tick (microseconds since the epoch, big-endian).
    CronTicks = "cron_ticks",
}

/// Every tree of the store, indexed by [`TreeId`].
#[derive(Debug, Clone)]
pub(crate) struct Trees(Vec<Tree>);

impl Index<TreeId> for Trees {
    type Output = Tree;

    fn index(&self, id: TreeId) -> &Tree {
        &self.0[id as usize]
    }
}

/// The layout this code writes, kept in the `meta` tree.
pub(crate) const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &[u8] = b"format";

impl Trees {
    /// Opens every tree of `db`, after checking (or, in a new database, recording) the layout version.
    pub(crate) fn open(db: &Db) -> StoreResult<Self> {
        check_format(db)?;
        TreeId::ALL.iter().map(|id| db.open_tree(id.name()).sled()).collect::<StoreResult<_>>().map(Self)
    }

    /// Every tree in [`TreeId::ALL`] order.
    pub(crate) fn all(&self) -> &[Tree] {
        &self.0
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
                    "the database has layout version {version}, newer than this TechHub understands \
                     ({FORMAT_VERSION}); upgrade TechHub"
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
