//! Stripe at the edge: webhook signatures (`signature`), reading Stripe's
//! event JSON into domain facts (`event`), and creating PaymentIntents
//! through its API (`gateway`).

pub mod event;
pub mod events_api;
pub mod gateway;
pub mod signature;

pub use event::{parse_event, ParseError};
