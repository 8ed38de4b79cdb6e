//! Every projection from one pass over the log: events are pushed in seq
//! order, each kept under its stream; at the end every booking is folded
//! from its own stream and the streams of the intents bound to it (the
//! bindings are facts of the booking streams), and every trip from its
//! stream with its seat count from the folded bookings. The same folds the
//! engine runs per batch, so the result must equal the stored projections.

use super::events::{Event, Recorded};
use super::fold::{fold_booking, BookingState};
use super::trip::{fold_trip, seats_accepted, TripState};
use std::collections::{BTreeMap, HashMap};

/// The log, grouped by what it projects to.
#[derive(Debug, Default)]
pub struct Rebuild {
    bookings: HashMap<String, Vec<Recorded>>,
    payments: HashMap<String, Vec<Recorded>>,
    trips: HashMap<String, Vec<Recorded>>,
    /// payment intent → booking, from `PaymentIntentBound`.
    bound: HashMap<String, String>,
    events: u64,
}

/// What the log projects to.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub bookings: BTreeMap<String, BookingState>,
    pub trips: BTreeMap<String, TripState>,
    /// Events pushed.
    pub events: u64,
}

impl Rebuild {
    /// One event of `stream`; events must come in seq order.
    pub fn push(&mut self, stream_name: &str, recorded: Recorded) {
        self.events += 1;
        if let Some(id) = stream_name.strip_prefix("booking:") {
            if let Event::PaymentIntentBound(b) = &recorded.event {
                self.bound
                    .insert(b.payment_intent_id.clone(), id.to_string());
            }
            self.bookings
                .entry(id.to_string())
                .or_default()
                .push(recorded);
        } else if let Some(pi) = stream_name.strip_prefix("payment:") {
            self.payments
                .entry(pi.to_string())
                .or_default()
                .push(recorded);
        } else if let Some(id) = stream_name.strip_prefix("trip:") {
            self.trips.entry(id.to_string()).or_default().push(recorded);
        }
        // Loose Stripe objects and the operator stream project to nothing.
    }

    /// Folds everything pushed.
    pub fn finish(mut self) -> Rebuilt {
        for (pi, events) in std::mem::take(&mut self.payments) {
            if let Some(history) = self
                .bound
                .get(&pi)
                .and_then(|booking| self.bookings.get_mut(booking))
            {
                history.extend(events);
            }
        }
        let mut out = Rebuilt {
            events: self.events,
            ..Rebuilt::default()
        };
        for (id, mut history) in self.bookings {
            history.sort_by_key(|r| r.seq);
            if let Some(state) = fold_booking(&id, &history).state {
                out.bookings.insert(id, state);
            }
        }
        let mut by_trip: HashMap<&str, Vec<&BookingState>> = HashMap::new();
        for b in out.bookings.values() {
            by_trip.entry(b.trip_id.as_str()).or_default().push(b);
        }
        for (id, history) in self.trips {
            if let Some(mut trip) = fold_trip(&history) {
                trip.seats_accepted =
                    seats_accepted(by_trip.get(id.as_str()).into_iter().flatten().copied());
                out.trips.insert(id, trip);
            }
        }
        out
    }
}
