//! klubz-ledger: the event-sourced payment and booking engine of Klubz.
//!
//! # Layout, in reading order
//!
//! - [`domain`]: the model. Events, statuses, money, the transition table,
//!   the fold and the command decisions. Pure: no I/O, no clock, no
//!   database. Everything below depends on it; it depends on nothing here.
//! - [`stripe`]: Stripe at the edge. Reads Stripe event JSON (any API
//!   version) into domain facts.
//! - [`ingest`]: recording one Stripe event, from the webhook or from an
//!   operator's import and catch-up: one idempotent path.
//! - [`projection`]: the projection rows (bookings, trips) and how a fold
//!   result becomes one.
//! - [`store`]: the event store behind one async trait, on SQLite (embedded
//!   default, group commit through one writer) and PostgreSQL (several
//!   engine processes). Appends, idempotency, the hash chain, projections in
//!   the same transaction, migrations, `verify`. The only module with SQL.
//! - [`dispatch`]: the outbox dispatcher, delivering side-effect messages
//!   to `NOTIFY_URL` with signatures, leases and a retry schedule.
//! - [`supervisor`]: the background tasks of a process and its one
//!   shutdown path.
//! - [`config`]: configuration from the environment; secrets redacted.
//! - [`telemetry`]: log setup.
//! - [`smoke`]: the `smoke` command's end-to-end scenario.
//! - [`loadgen`]: the load generator, which checks what it measured.
//!
//! Errors: the store and domain use `thiserror` enums whose variants say how
//! to handle them (a domain refusal changes nothing; a storage error means
//! "retry later"). Only the binaries use `anyhow`.

pub mod auth;
pub mod bench;
pub mod chaos;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod loadgen;
pub mod projection;
pub mod smoke;
pub mod store;
pub mod stripe;
pub mod supervisor;
pub mod telemetry;
