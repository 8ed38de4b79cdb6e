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
    /// `amount`. `None` for refunds and disputes, whose amounts are their own
    /// (carried in the signal), and when the body had none: an intent or
    /// charge event without it is stored and not applied.
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
    /// `charge.refunded`: the charge's cumulative `amount_refunded`, plus the
    /// refunds the charge lists (older API versions embed them).
    ChargeRefunded {
        amount_refunded_cents: Cents,
        #[serde(default)]
        refunds: Vec<RefundSeen>,
    },
    /// `refund.*` and `charge.refund.updated`: one refund's latest status.
    Refund(RefundSeen),
    /// `charge.dispute.created`.
    DisputeOpened(DisputeSeen),
    /// `charge.dispute.closed`, whatever its status: closed means closed.
    DisputeClosed(DisputeSeen),
    /// Any other type: stored and counted, never applied.
    Unhandled,
}

/// One refund as an event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundSeen {
    pub refund_id: String,
    pub amount_cents: Cents,
    pub state: RefundState,
    /// The refund's currency, checked against the bound one when present.
    #[serde(default)]
    pub currency: Option<Currency>,
}

/// A refund's state. It only moves forward (pending → succeeded →
/// failed/canceled), so a late `pending` cannot resurrect a failed refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// `pending` or `requires_action`: Stripe's `amount_refunded` counts it.
    Pending,
    /// `active` is how payloads recorded by earlier development builds
    /// named a refund that counts.
    #[serde(alias = "active")]
    Succeeded,
    /// `failed` or `canceled`: the money came back to the charge.
    #[serde(alias = "reversed")]
    Failed,
}

impl RefundState {
    /// Counts towards the refunded total.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Succeeded)
    }

    /// Stripe's refund `status` (and `refund.failed`, which is a failure
    /// whatever its body says). Unknown statuses count as pending: money
    /// Stripe has started to give back.
    pub fn from_stripe(status: Option<&str>) -> Self {
        match status {
            Some("succeeded") => Self::Succeeded,
            Some("failed" | "canceled") => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// One dispute as an event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredDispute")]
pub struct DisputeSeen {
    pub dispute_id: String,
    /// Stripe's dispute `status` (`warning_needs_response`, `needs_response`,
    /// `won`, `lost`, `prevented`…); empty when the body had none.
    pub status: String,
    #[serde(default)]
    pub amount_cents: Option<Cents>,
    #[serde(default)]
    pub currency: Option<Currency>,
}

/// A stored dispute payload. Earlier development builds recorded only
/// `dispute_id` and, for a closed dispute, `won`; they are read as the
/// status they stood for.
#[derive(Deserialize)]
struct StoredDispute {
    dispute_id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    won: Option<bool>,
    #[serde(default)]
    amount_cents: Option<Cents>,
    #[serde(default)]
    currency: Option<Currency>,
}

impl From<StoredDispute> for DisputeSeen {
    fn from(d: StoredDispute) -> Self {
        let status = match (d.status, d.won) {
            (Some(status), _) => status,
            (None, Some(true)) => "won".into(),
            (None, Some(false)) => "lost".into(),
            (None, None) => String::new(),
        };
        Self {
            dispute_id: d.dispute_id,
            status,
            amount_cents: d.amount_cents,
            currency: d.currency,
        }
    }
}

impl DisputeSeen {
    /// An inquiry (`warning_*`) withdraws no funds.
    pub fn is_inquiry(&self) -> bool {
        self.status.starts_with("warning_")
    }

    /// Only `lost` is a chargeback; every other closing status (won,
    /// warning_closed, prevented, and any Stripe adds) leaves the money here.
    pub fn is_lost(&self) -> bool {
        self.status == "lost"
    }
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
            Self::Refund(r) if r.state.is_active() => 4,
            Self::Refund(_) => 5,
            Self::DisputeOpened(_) => 6,
            Self::DisputeClosed(_) => 7,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads stored by earlier development builds still decode to what
    /// they meant.
    #[test]
    fn earlier_payload_shapes_still_decode() {
        let refund: PaymentSignal = serde_json::from_str(
            r#"{"signal":"refund","refund_id":"re_1","amount_cents":500,"state":"reversed"}"#,
        )
        .unwrap_or(PaymentSignal::Unhandled);
        assert!(matches!(refund, PaymentSignal::Refund(r) if r.state == RefundState::Failed));
        let lost: PaymentSignal =
            serde_json::from_str(r#"{"signal":"dispute_closed","dispute_id":"du_1","won":false}"#)
                .unwrap_or(PaymentSignal::Unhandled);
        assert!(matches!(lost, PaymentSignal::DisputeClosed(d) if d.is_lost()));
        let charge: PaymentSignal =
            serde_json::from_str(r#"{"signal":"charge_refunded","amount_refunded_cents":200}"#)
                .unwrap_or(PaymentSignal::Unhandled);
        assert!(matches!(charge, PaymentSignal::ChargeRefunded { .. }));
    }
}
