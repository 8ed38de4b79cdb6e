//! Side effects: the messages a booking's real transitions produce.
//!
//! The fold lists them; the store writes each one to the outbox under its
//! [`SideEffect::key`], (booking, type, causing event), with "insert if
//! absent", so a duplicate delivery, a replay or a rebuild that folds the
//! same transition again never produces a second message, and a new causing
//! event (a refund that failed after the cancellation's refund) produces a
//! new one.

use super::money::{Cents, Currency};
use chrono::{DateTime, Utc};

/// The message types of CONTRACT.md "Side effects (the outbox)".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EffectKind {
    BookingAccepted,
    BookingRejected,
    BookingCancelled,
    PaymentSucceeded,
    PaymentFailed,
    /// The refunded total went up; `amount_cents` is the new total.
    PaymentRefunded,
    DisputeOpened,
    DisputeClosed,
    /// Money we hold and must give back: a cancelled booking still holding
    /// captured money, or a superseded intent that succeeded.
    RefundRequired,
}

impl EffectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BookingAccepted => "booking_accepted",
            Self::BookingRejected => "booking_rejected",
            Self::BookingCancelled => "booking_cancelled",
            Self::PaymentSucceeded => "payment_succeeded",
            Self::PaymentFailed => "payment_failed",
            Self::PaymentRefunded => "payment_refunded",
            Self::DisputeOpened => "dispute_opened",
            Self::DisputeClosed => "dispute_closed",
            Self::RefundRequired => "refund_required",
        }
    }
}

/// One message a fold produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideEffect {
    pub kind: EffectKind,
    /// The log position of the event that caused it.
    pub caused_by_seq: i64,
    /// Stripe's `evt_…` when a Stripe event caused it.
    pub stripe_event_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub amount_cents: Option<Cents>,
    pub currency: Option<Currency>,
    /// Stripe's `created` for Stripe events, else when we recorded it.
    pub occurred_at: DateTime<Utc>,
}

impl SideEffect {
    /// The outbox key: unique by (booking, type, causing event).
    pub fn key(&self, booking_id: &str) -> String {
        format!("{}:{booking_id}:{}", self.kind.as_str(), self.caused_by_seq)
    }
}
