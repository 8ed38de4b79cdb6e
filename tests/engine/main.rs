//! Engine integration tests, one binary:
//! - `store`: the conformance suite, run against SQLite and PostgreSQL
//!   (`sqlite::*`, `postgres::*`);
//! - `webhook`, `api`, `money`: the HTTP server on a random port against a fresh
//!   database of each backend, driven over real HTTP;
//! - `cli`: the `klubz-ledger` commands and real `serve` processes.
#![allow(clippy::unwrap_used)]

/// Generates `sqlite::<test>` and `postgres::<test>` for each listed
/// function of `$module`, each taking the backend.
macro_rules! on_both_backends {
    ($module:ident: $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::$module::$name(crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::$module::$name(crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

mod api;
mod app;
mod cli;
mod dispatch;
mod faults;
mod helpers;
mod loadgen;
mod money;
mod reliability;
mod replay;
mod store;
mod webhook;
