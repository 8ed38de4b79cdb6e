//! Engine integration tests, one binary:
//! - `store`: the conformance suite, run against SQLite and PostgreSQL
//!   (`sqlite::*`, `postgres::*`);
//! - `cli`: the `klubz-ledger` commands as an operator runs them.
#![allow(clippy::unwrap_used)]

mod cli;
mod helpers;
mod store;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::store::$name(crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::store::$name(crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    idempotent_append_under_50_concurrent_tasks,
    same_key_other_payload_is_a_conflict,
    per_stream_version_conflicts,
    payment_lifecycle_with_partial_and_full_refund,
    late_binding_applies_stored_events,
    mismatched_events_are_stored_with_reasons,
    no_downgrade_after_paid,
    reversed_refund_gives_its_amount_back,
    projection_equals_fold_after_random_histories,
    chain_detects_edited_payload,
    chain_detects_deleted_event,
    chain_detects_swapped_pair,
    no_overbooking_under_concurrent_accepts,
    restart_loses_nothing_committed,
    second_process_shares_the_log,
    read_apis_page_and_stream_in_order,
);
