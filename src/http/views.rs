//! JSON shapes of the API (CONTRACT.md: camelCase, integer minor units,
//! RFC 3339 UTC times, string ids).

use crate::domain::money::fare;
use crate::domain::TripState;
use crate::projection::BookingView;
use crate::store::TimelineEntry;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn trip(t: &TripState) -> Value {
    json!({
        "id": t.trip_id,
        "driverId": t.driver_id,
        "orgId": t.org_id,
        "title": t.title,
        "seatsTotal": t.seats,
        "seatsAccepted": t.seats_accepted,
        "seatsAvailable": t.seats.saturating_sub(t.seats_accepted),
        "pricePerSeatCents": t.price_per_seat_cents,
        "currency": t.currency.as_str(),
        "departureTime": time(&t.departure_time),
        "status": if t.cancelled { "cancelled" } else { "published" },
        "version": t.version,
        "lastEventSeq": t.last_event_seq,
    })
}

/// The projected booking. Before an intent is bound, `amountCents` and
/// `currency` are what the booking costs (fare × passengers).
pub fn booking(b: &BookingView, t: &TripState) -> Value {
    // A fare that overflows cannot have been accepted; 0 says "unknown".
    let owed = fare(t.price_per_seat_cents, b.passengers).unwrap_or_default();
    json!({
        "id": b.booking_id,
        "tripId": b.trip_id,
        "userId": b.user_id,
        "orgId": b.org_id,
        "passengers": b.passengers,
        "status": b.status.as_str(),
        "paymentStatus": b.payment_status.as_str(),
        "paymentIntentId": b.payment_intent_id,
        "amountCents": b.amount_cents.unwrap_or(owed),
        "currency": b.currency.as_ref().unwrap_or(&t.currency).as_str(),
        "amountRefundedCents": b.amount_refunded_cents,
        "version": b.version,
        "lastEventSeq": b.last_event_seq,
        "updatedAt": time(&b.updated_at),
    })
}

pub fn timeline_entry(e: &TimelineEntry) -> Value {
    let mut entry = json!({
        "seq": e.seq,
        "kind": e.kind,
        "source": e.source,
        "stream": e.stream,
        "occurredAt": time(&e.occurred_at),
        "recordedAt": time(&e.recorded_at),
        "outcome": e.outcome.as_ref().map(|o| o.outcome.as_str()),
        "reason": e.outcome.as_ref().and_then(|o| o.reason.clone()),
    });
    if let Some(s) = &e.stripe {
        entry["stripeEventId"] = json!(s.event_id);
        entry["stripeEventType"] = json!(s.event_type);
        entry["paymentIntentId"] = json!(s.payment_intent_id);
    }
    entry
}
