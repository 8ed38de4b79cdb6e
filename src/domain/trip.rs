//! Trips: the fold of a trip stream and seat accounting.

use super::events::{Event, Recorded};
use super::fold::BookingState;
use super::money::{Cents, Currency};
use super::status::BookingStatus;
use chrono::{DateTime, Utc};

/// The projected trip. `seats_accepted` is derived from its bookings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripState {
    pub trip_id: String,
    pub driver_id: String,
    pub org_id: Option<String>,
    pub title: String,
    pub seats: u32,
    pub price_per_seat_cents: Cents,
    pub currency: Currency,
    pub departure_time: DateTime<Utc>,
    pub cancelled: bool,
    pub seats_accepted: u32,
    pub version: i64,
    pub last_event_seq: i64,
}

/// Folds a trip stream; `None` when it holds no `TripPublished`.
pub fn fold_trip(events: &[Recorded]) -> Option<TripState> {
    let mut sorted: Vec<&Recorded> = events.iter().collect();
    sorted.sort_by_key(|r| r.seq);
    sorted.dedup_by_key(|r| r.seq);
    let mut trip: Option<TripState> = None;
    for rec in sorted {
        match (&rec.event, trip.as_mut()) {
            (Event::TripPublished(p), None) => {
                trip = Some(TripState {
                    trip_id: p.trip_id.clone(),
                    driver_id: p.driver_id.clone(),
                    org_id: p.org_id.clone(),
                    title: p.title.clone(),
                    seats: p.seats,
                    price_per_seat_cents: p.price_per_seat_cents,
                    currency: p.currency.clone(),
                    departure_time: p.departure_time,
                    cancelled: false,
                    seats_accepted: 0,
                    version: 1,
                    last_event_seq: rec.seq,
                })
            }
            (Event::TripCancelled(c), Some(t)) if c.trip_id == t.trip_id => {
                t.cancelled = true;
                t.version += 1;
                t.last_event_seq = rec.seq;
            }
            _ => {}
        }
    }
    trip
}

/// Seats taken on a trip: the passengers of its accepted bookings.
pub fn seats_accepted<'a>(bookings: impl IntoIterator<Item = &'a BookingState>) -> u32 {
    bookings
        .into_iter()
        .filter(|b| b.status == BookingStatus::Accepted)
        .map(|b| b.passengers)
        .sum()
}
