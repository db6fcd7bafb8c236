//! The behaviour suite every storage adapter must pass: one `pub async fn` per rule of the storage contract.
//!
//! An adapter implements [`Harness`] (a fresh, empty store per test, with a guard such as a temporary
//! directory that lives as long as the test) and expands [`conformance_tests!`](crate::conformance_tests) in
//! its `tests/conformance.rs`, which gives one named `#[tokio::test]` per rule, so a failure names the rule
//! broken:
//!
//! ```ignore
//! use std::sync::Arc;
//! use techhub_core::storage::conformance::{Fixture, Harness};
//!
//! struct Memory;
//!
//! #[async_trait::async_trait]
//! impl Harness for Memory {
//!     async fn fresh(&self) -> Fixture {
//!         Fixture::new(Arc::new(techhub_store_memory::MemoryStore::new()))
//!     }
//! }
//!
//! techhub_core::conformance_tests!(Memory);
//! ```
//!
//! The tests run on a multi-threaded runtime (several rules are about concurrent callers), so the adapter's
//! dev-dependencies need `tokio` with the `macros` and `rt-multi-thread` features.

mod audit;
mod batches;
mod builds;
mod builds_run;
pub mod crash;
mod cron;
mod endpoints;
mod fixtures;
mod jobs;
mod model;
mod notifications;
mod rates;
mod runtime;
mod settle_writes;
mod system;
mod tokens;
pub mod two_processes;
mod users;

use std::any::Any;

use async_trait::async_trait;

pub use self::audit::*;
pub use self::batches::*;
pub use self::builds::*;
pub use self::builds_run::*;
pub use self::cron::*;
pub use self::endpoints::*;
pub use self::jobs::*;
pub use self::model::model_based_operations_match_the_reference;
pub use self::notifications::*;
pub use self::rates::*;
pub use self::runtime::*;
pub use self::settle_writes::*;
pub use self::system::*;
pub use self::tokens::*;
pub use self::users::*;
use super::DynStorage;

/// Builds a fresh, empty store for one test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A new empty store, and whatever must live as long as it (a temporary directory).
    async fn fresh(&self) -> Fixture;
}

/// A store under test and its guard.
pub struct Fixture {
    store: DynStorage,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Fixture {
    /// A store that needs no guard.
    pub fn new(store: DynStorage) -> Self {
        Self { store, _guard: Box::new(()) }
    }

    /// A store that lives only as long as `guard` (dropped after the test).
    pub fn with_guard(store: DynStorage, guard: impl Any + Send + Sync) -> Self {
        Self { store, _guard: Box::new(guard) }
    }

    /// The store.
    pub fn store(&self) -> DynStorage {
        self.store.clone()
    }
}

/// Expands to one `#[tokio::test]` per rule of the storage contract, each on a fresh store from `$harness`
/// (an expression whose type implements [`Harness`]), plus the model-based property test.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_tests!($harness;
            users_insert_and_get_round_trip,
            users_email_unique_after_normalisation,
            users_concurrent_inserts_of_one_email_one_wins,
            users_duplicate_id_conflicts,
            users_update_is_versioned,
            users_update_missing_user_is_not_found,
            users_update_email_frees_old_and_refuses_taken,
            users_last_active_admin_is_protected,
            users_delete_ends_sessions_and_frees_email,
            users_delete_keeps_jobs_builds_and_notifications,
            users_delete_checks_expected_version,
            users_cursor_listing_never_skips_or_repeats_during_inserts,
            users_cursor_listing_never_skips_or_repeats_during_deletes,
            users_list_filters_by_role_active_and_substring,
            users_list_rejects_forged_cursor,
            users_counts_follow_every_write,
            users_insert_with_follow_up_jobs_is_atomic,
            users_update_with_follow_up_jobs_is_atomic,
            users_login_failures_count_atomically,
            tokens_consume_is_single_use,
            tokens_concurrent_consumers_exactly_one_wins,
            tokens_expired_are_never_returned,
            tokens_kind_must_match,
            tokens_duplicate_hash_conflicts,
            tokens_rotation_stores_replacement_atomically,
            tokens_revoke_family,
            tokens_revoke_user_tokens_by_kind_sparing_a_family,
            tokens_live_tokens_and_family_liveness,
            tokens_prune_removes_only_expired,
            tokens_get_token_reads_without_consuming,
            tokens_session_user_needs_a_live_session,
            tokens_keep_their_client,
            jobs_enqueue_and_get_round_trip,
            jobs_claim_order_is_priority_then_run_at_then_id,
            jobs_delayed_job_not_claimable_before_run_at,
            jobs_claim_only_from_named_queues,
            jobs_concurrent_claimers_claim_each_job_once,
            jobs_lease_fencing_after_expiry_and_reclaim,
            jobs_same_worker_reclaim_fences_old_attempt,
            jobs_heartbeat_extends_lease,
            jobs_progress_is_recorded,
            jobs_fail_with_attempts_left_requeues_at_backoff,
            jobs_last_attempt_fails_with_error_kept,
            jobs_retry_never_fails_at_once,
            jobs_requeue_expired_rescues_only_expired_leases,
            jobs_release_does_not_charge_an_attempt,
            jobs_cancel_queued_vs_running,
            jobs_unique_key_deduplicates_while_live,
            jobs_enqueue_asks_the_unique_key_before_the_id,
            jobs_unique_key_concurrent_enqueues_store_one,
            jobs_enqueue_many_is_all_or_nothing,
            jobs_counts_by_queue_and_state,
            jobs_artifact_round_trip,
            jobs_prune_by_age_and_state,
            jobs_list_filters_and_cursor,
            jobs_retry_gives_failed_job_fresh_budget,
            jobs_retry_of_cancelled_succeeded_and_key_held,
            jobs_discard_payload_only_when_finished,
            jobs_claim_many_takes_claim_order_across_queues,
            jobs_concurrent_batch_claimers_claim_each_job_once,
            jobs_settle_many_applies_each_settlement,
            jobs_settle_many_fences_each_job_alone,
            jobs_settle_with_payload_discard_leaves_finished_payloads_null,
            jobs_settle_carrying_a_delivery_record_updates_the_notification_with_the_job,
            jobs_settle_refused_for_a_stale_lease_writes_none_of_its_side_writes,
            cron_tick_fires_once_even_after_its_job_finished,
            cron_tick_older_than_the_last_fired_is_refused,
            cron_ticks_of_schedules_are_independent,
            cron_tick_concurrent_callers_store_one_job,
            cron_tick_is_not_recorded_when_its_job_fails,
            jobs_queue_rate_limit_grants_the_burst_then_the_rate,
            jobs_queue_rate_limit_concurrent_takers_share_one_bucket,
            runtime_runs_each_job_once_with_at_most_its_workers_at_once,
            runtime_starts_jobs_in_claim_order,
            runtime_rate_limit_holds_on_the_hub_clock,
            runtime_records_retries_and_failures,
            runtime_cancel_from_another_instance_stops_the_handler,
            runtime_heartbeats_keep_a_long_jobs_lease,
            runtime_shutdown_records_finished_jobs_and_releases_the_rest,
            builds_insert_get_and_versioned_update,
            builds_batch_insert_is_all_or_nothing,
            builds_log_append_and_read_by_offset,
            builds_concurrent_log_appends_have_no_gaps,
            builds_list_filters,
            builds_truncate_log_drops_lines_and_keeps_numbering,
            builds_counts_by_status,
            builds_outcomes_follow_finished_builds,
            builds_latest_per_project,
            builds_run_end_to_end_through_the_service,
            notifications_insert_get_and_versioned_update,
            notifications_list_by_filter_and_counts,
            notifications_keep_html_event_type_and_deliveries,
            notifications_queue_with_job_is_atomic,
            endpoints_insert_get_round_trip_and_duplicate,
            endpoints_update_is_versioned,
            endpoints_list_in_id_order_and_delete,
            system_database_info_names_the_backend_and_keeps_its_version,
            audit_append_reads_back_in_order_and_never_replaces,
            audit_list_filters_and_pages_by_cursor,
            audit_prune_removes_only_older_entries,
        );

        #[test]
        fn model_based_operations_match_the_reference() {
            $crate::storage::conformance::model_based_operations_match_the_reference(&$harness);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:expr; $($rule:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $rule() {
                let fixture = $crate::storage::conformance::Harness::fresh(&$harness).await;
                $crate::storage::conformance::$rule(fixture.store()).await;
            }
        )*
    };
}
