//! Stripe at the edge: webhook signatures (`signature`) and reading
//! Stripe's event JSON into domain facts (`event`).

pub mod event;
pub mod signature;

pub use event::{parse_event, ParseError};
