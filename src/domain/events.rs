//! The facts of the log: every event kind, its stream and its idempotency key.
//!
//! Events are named in the past tense. Each kind serialises to a stable
//! `kind` name plus a JSON payload; [`Event::from_parts`] reverses that, so the
//! store never needs to know the variants.

use super::money::{Cents, Currency};
use super::payment::StripeFact;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Stream names (DESIGN.md §2).
pub mod stream {
    pub fn trip(id: &str) -> String {
        format!("trip:{id}")
    }
    pub fn booking(id: &str) -> String {
        format!("booking:{id}")
    }
    pub fn payment(payment_intent_id: &str) -> String {
        format!("payment:{payment_intent_id}")
    }
    pub fn stripe_object(object_id: &str) -> String {
        format!("stripe:{object_id}")
    }
    /// Operator actions that concern the whole ledger (replays, pauses).
    pub const OPERATOR: &str = "operator:ledger";
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Api,
    StripeWebhook,
    OperatorImport,
    Operator,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::StripeWebhook => "stripe_webhook",
            Self::OperatorImport => "operator_import",
            Self::Operator => "operator",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Api,
            Self::StripeWebhook,
            Self::OperatorImport,
            Self::Operator,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TripPublished {
    pub trip_id: String,
    pub driver_id: String,
    pub org_id: Option<String>,
    pub title: String,
    pub seats: u32,
    pub price_per_seat_cents: Cents,
    pub currency: Currency,
    pub departure_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TripCancelled {
    pub trip_id: String,
    pub by_user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingRequested {
    pub booking_id: String,
    pub trip_id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub passengers: u32,
}

/// Accepted, rejected and cancelled share one shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingDecided {
    pub booking_id: String,
    pub trip_id: String,
    pub by_user_id: String,
}

/// The booking intent: which payment intent pays for which booking, and how
/// much. Stripe events bind to a booking only through one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentIntentBound {
    pub booking_id: String,
    pub trip_id: String,
    pub user_id: String,
    pub payment_intent_id: String,
    pub amount_cents: Cents,
    pub currency: Currency,
    /// 1 for the booking's first intent, 2 for the next… An intrinsic order,
    /// so folding bindings does not depend on arrival order.
    pub attempt: u32,
}

/// Operator records (filled by the replay tool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorAction {
    pub operator: String,
    pub reason: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TripPublished(TripPublished),
    TripCancelled(TripCancelled),
    BookingRequested(BookingRequested),
    BookingAccepted(BookingDecided),
    BookingRejected(BookingDecided),
    BookingCancelled(BookingDecided),
    PaymentIntentBound(PaymentIntentBound),
    StripeEventReceived(StripeFact),
    ReplayApplied(OperatorAction),
    SideEffectsPaused(OperatorAction),
    SideEffectsResumed(OperatorAction),
    /// Stripe events recovered by an operator (`import`, `catch-up`) were
    /// ingested; the detail says what and how many.
    OperatorImported(OperatorAction),
}

/// A stored event could not be read back as a known kind.
#[derive(Debug, thiserror::Error)]
#[error("event kind {kind:?} has an unreadable payload: {message}")]
pub struct DecodeError {
    pub kind: String,
    pub message: String,
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TripPublished(_) => "TripPublished",
            Self::TripCancelled(_) => "TripCancelled",
            Self::BookingRequested(_) => "BookingRequested",
            Self::BookingAccepted(_) => "BookingAccepted",
            Self::BookingRejected(_) => "BookingRejected",
            Self::BookingCancelled(_) => "BookingCancelled",
            Self::PaymentIntentBound(_) => "PaymentIntentBound",
            Self::StripeEventReceived(_) => "StripeEventReceived",
            Self::ReplayApplied(_) => "ReplayApplied",
            Self::SideEffectsPaused(_) => "SideEffectsPaused",
            Self::SideEffectsResumed(_) => "SideEffectsResumed",
            Self::OperatorImported(_) => "OperatorImported",
        }
    }

    /// The payload as stored: compact JSON with a stable field order.
    pub fn payload_json(&self) -> String {
        let value = match self {
            Self::TripPublished(e) => serde_json::to_string(e),
            Self::TripCancelled(e) => serde_json::to_string(e),
            Self::BookingRequested(e) => serde_json::to_string(e),
            Self::BookingAccepted(e) | Self::BookingRejected(e) | Self::BookingCancelled(e) => {
                serde_json::to_string(e)
            }
            Self::PaymentIntentBound(e) => serde_json::to_string(e),
            Self::StripeEventReceived(e) => serde_json::to_string(e),
            Self::ReplayApplied(e)
            | Self::SideEffectsPaused(e)
            | Self::SideEffectsResumed(e)
            | Self::OperatorImported(e) => serde_json::to_string(e),
        };
        // Serialising these plain structs cannot fail (no maps with non-string
        // keys, no custom serialisers that error).
        value.unwrap_or_default()
    }

    pub fn from_parts(kind: &str, payload: &str) -> Result<Self, DecodeError> {
        fn de<T: serde::de::DeserializeOwned>(kind: &str, payload: &str) -> Result<T, DecodeError> {
            serde_json::from_str(payload).map_err(|e| DecodeError {
                kind: kind.to_string(),
                message: e.to_string(),
            })
        }
        Ok(match kind {
            "TripPublished" => Self::TripPublished(de(kind, payload)?),
            "TripCancelled" => Self::TripCancelled(de(kind, payload)?),
            "BookingRequested" => Self::BookingRequested(de(kind, payload)?),
            "BookingAccepted" => Self::BookingAccepted(de(kind, payload)?),
            "BookingRejected" => Self::BookingRejected(de(kind, payload)?),
            "BookingCancelled" => Self::BookingCancelled(de(kind, payload)?),
            "PaymentIntentBound" => Self::PaymentIntentBound(de(kind, payload)?),
            "StripeEventReceived" => Self::StripeEventReceived(de(kind, payload)?),
            "ReplayApplied" => Self::ReplayApplied(de(kind, payload)?),
            "SideEffectsPaused" => Self::SideEffectsPaused(de(kind, payload)?),
            "SideEffectsResumed" => Self::SideEffectsResumed(de(kind, payload)?),
            "OperatorImported" => Self::OperatorImported(de(kind, payload)?),
            other => {
                return Err(DecodeError {
                    kind: other.to_string(),
                    message: "unknown kind".to_string(),
                })
            }
        })
    }
}

/// An event as the log holds it: its global position and when it was
/// recorded. Times arrive as data; the domain never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub seq: i64,
    pub recorded_at: DateTime<Utc>,
    pub event: Event,
}
