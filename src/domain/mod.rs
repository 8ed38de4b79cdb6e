//! The domain: events, statuses, the transition table, the fold and the
//! command decisions. Pure and total: no I/O, no `async`, no clock, no
//! randomness. Everything else in the crate depends on this module; it
//! depends on nothing in the crate.

pub mod decide;
pub mod effects;
pub mod events;
pub mod fold;
pub mod ledger;
pub mod money;
pub mod payment;
pub mod rebuild;
pub mod status;
pub mod storable;
pub mod table;
pub mod trip;

pub use decide::{decide, Command, Context, DomainError};
pub use effects::{EffectKind, SideEffect};
pub use events::{Event, Recorded, Source};
pub use fold::{fold_booking, BookingFold, BookingState, EventOutcome, OutcomeKind};
pub use money::{Cents, Currency};
pub use payment::{DisputeSeen, PaymentSignal, RefundSeen, RefundState, StripeFact};
pub use status::{BookingStatus, PaymentStatus};
pub use trip::{fold_trip, TripState};
