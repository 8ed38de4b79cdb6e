//! klubz-ledger: the event-sourced payment and booking engine of Klubz.
pub mod config;
pub mod domain;
pub mod projection;
pub mod store;
pub mod stripe;
