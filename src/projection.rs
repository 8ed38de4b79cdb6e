//! Projection rows: the shapes the store keeps for bookings and trips, and
//! how a fold result becomes one. `verify` compares stored rows with these.

use crate::domain::fold::BookingState;
use crate::domain::{BookingStatus, Cents, Currency, PaymentStatus};
use chrono::{DateTime, Utc};

/// One `trip_participants` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingView {
    pub booking_id: String,
    pub trip_id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub passengers: u32,
    pub status: BookingStatus,
    pub payment_status: PaymentStatus,
    pub payment_intent_id: Option<String>,
    pub amount_cents: Option<Cents>,
    pub currency: Option<Currency>,
    pub amount_refunded_cents: Cents,
    pub attempts: u32,
    pub version: i64,
    pub last_event_seq: i64,
    pub updated_at: DateTime<Utc>,
}

impl From<&BookingState> for BookingView {
    fn from(b: &BookingState) -> Self {
        let intent = b.payment.intent.as_ref();
        Self {
            booking_id: b.booking_id.clone(),
            trip_id: b.trip_id.clone(),
            user_id: b.user_id.clone(),
            org_id: b.org_id.clone(),
            passengers: b.passengers,
            status: b.status,
            payment_status: b.payment.status,
            payment_intent_id: intent.map(|i| i.payment_intent_id.clone()),
            amount_cents: intent.map(|i| i.amount_cents),
            currency: intent.map(|i| i.currency.clone()),
            amount_refunded_cents: b.payment.amount_refunded_cents(),
            attempts: b.attempts,
            version: b.version,
            last_event_seq: b.last_event_seq,
            updated_at: b.updated_at,
        }
    }
}
