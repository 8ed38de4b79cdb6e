//! Payment facts: what the fold needs to know of one Stripe event.
//!
//! The Stripe adapter (`crate::stripe`) reads a raw event and produces a
//! [`StripeFact`]; the domain never sees JSON. The fact records the event's
//! *type* as a [`PaymentSignal`] and the fields that type defines (amounts,
//! refund id and status, dispute outcome), never a free-floating
//! `data.object.status`.

use super::money::{Cents, Currency};
use serde::{Deserialize, Serialize};

/// The fields of one authentic Stripe event that decide what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeFact {
    /// Stripe's `evt_…` id: the idempotency key is `stripe:<event_id>`.
    pub event_id: String,
    /// Stripe's `type`, kept verbatim for the timeline and the metrics.
    pub event_type: String,
    /// Stripe's `created` (Unix seconds): the first fold-order key.
    pub created: i64,
    pub livemode: bool,
    /// The `livemode` the engine accepted when the event arrived
    /// (`STRIPE_LIVEMODE`). Kept in the log so the fold stays a function of it.
    pub expected_livemode: bool,
    /// `data.object.id`.
    pub object_id: Option<String>,
    /// The payment intent the object belongs to (the object itself for
    /// `payment_intent.*`, its `payment_intent` field for charges, refunds and
    /// disputes).
    pub payment_intent_id: Option<String>,
    /// Amount that must equal the bound amount: the intent's or the charge's
    /// `amount`. `None` for refunds and disputes, whose amounts are their own.
    pub amount_cents: Option<Cents>,
    pub currency: Option<Currency>,
    /// `metadata.bookingId` / `tripId` / `userId` when present: checked, never
    /// used to find the booking.
    #[serde(default)]
    pub metadata: FactMetadata,
    pub signal: PaymentSignal,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FactMetadata {
    pub booking_id: Option<String>,
    pub trip_id: Option<String>,
    pub user_id: Option<String>,
}

/// What a Stripe event type means for payment state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum PaymentSignal {
    Processing,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
    /// `charge.refunded`: the charge's cumulative `amount_refunded`.
    ChargeRefunded {
        amount_refunded_cents: Cents,
    },
    /// `refund.*` and `charge.refund.updated`: one refund's latest status.
    Refund {
        refund_id: String,
        amount_cents: Cents,
        state: RefundState,
    },
    DisputeOpened {
        dispute_id: String,
    },
    DisputeClosed {
        dispute_id: String,
        won: bool,
    },
    /// Any other type: stored and counted, never applied.
    Unhandled,
}

/// A refund either counts towards the refunded total or has been reversed
/// (Stripe status `failed` or `canceled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// `pending`, `requires_action` or `succeeded`: Stripe's own
    /// `amount_refunded` counts these, so do we.
    Active,
    Reversed,
}

impl PaymentSignal {
    /// The lifecycle rank of DESIGN.md §3, the second fold-order key, so that
    /// events stamped in the same second fold in their natural order.
    pub fn lifecycle_rank(&self) -> u8 {
        match self {
            Self::Processing | Self::RequiresAction => 0,
            Self::Failed => 1,
            Self::Canceled => 2,
            Self::Succeeded => 3,
            Self::ChargeRefunded { .. } => 4,
            Self::Refund {
                state: RefundState::Active,
                ..
            } => 4,
            Self::Refund {
                state: RefundState::Reversed,
                ..
            } => 5,
            Self::DisputeOpened { .. } => 6,
            Self::DisputeClosed { .. } => 7,
            Self::Unhandled => 8,
        }
    }
}

impl StripeFact {
    /// The fold order of one intent's events: (created, lifecycle rank, id).
    pub fn order_key(&self) -> (i64, u8, &str) {
        (self.created, self.signal.lifecycle_rank(), &self.event_id)
    }
}
