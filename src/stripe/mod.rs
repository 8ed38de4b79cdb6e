//! Stripe at the edge: reading Stripe's event JSON into domain facts.
//! (Signature verification and the HTTP gateway join this module with the
//! webhook and payment-intent work.)

pub mod event;

pub use event::{parse_event, ParseError};
