//! Property tests (one binary):
//! (a) a booking's events, permuted and duplicated, fold to the same state
//!     and the same per-event outcomes as in-order delivery;
//! (b) no delivery order ever moves a settled payment back;
//! (c) the refunded amount never exceeds the bound amount;
//! (d) accepted passengers never exceed a trip's seats;
//! (e) the store records each idempotency key once, whatever the repeats;
//! (f) histories a model of Stripe generates fold to what Stripe's own
//!     objects say, in order and in any delivery (`model/`), and the named
//!     regression cases of `model/regressions.rs`;
//! (g) fuzzing of the parsers that see hostile bytes first (`fuzz/`).
#![allow(clippy::unwrap_used)]

mod fuzz;
mod model;

use chrono::{TimeZone, Utc};
use klubz_ledger::domain::decide::{decide, Command, Context, RequestBooking};
use klubz_ledger::domain::events::{
    BookingDecided, BookingRequested, PaymentIntentBound, TripPublished,
};
use klubz_ledger::domain::payment::{
    DisputeSeen, FactMetadata, PaymentSignal, RefundSeen, RefundState, StripeFact,
};
use klubz_ledger::domain::{
    fold_booking, fold_trip, BookingFold, Cents, Currency, Event, OutcomeKind, Recorded, TripState,
};
use klubz_ledger::projection::BookingView;
use proptest::prelude::*;
use std::collections::BTreeMap;

const BOUND: i64 = 2000;

fn zar() -> Currency {
    Currency::parse("zar").unwrap()
}

fn at(seq: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seq, 0).single().unwrap()
}

fn cents(v: i64) -> Cents {
    Cents::new(v).unwrap()
}

fn dispute(id: u8, status: &str) -> DisputeSeen {
    DisputeSeen {
        dispute_id: format!("du_{id}"),
        status: status.into(),
        amount_cents: Some(cents(BOUND)),
        currency: Some(zar()),
    }
}

fn signal() -> impl Strategy<Value = PaymentSignal> {
    prop_oneof![
        1 => Just(PaymentSignal::Processing),
        1 => Just(PaymentSignal::RequiresAction),
        3 => Just(PaymentSignal::Succeeded),
        1 => Just(PaymentSignal::Failed),
        1 => Just(PaymentSignal::Canceled),
        1 => (0..=BOUND + 500).prop_map(|a| PaymentSignal::ChargeRefunded {
            amount_refunded_cents: cents(a),
            refunds: vec![],
        }),
        1 => (0..3u8, 1..=BOUND, 0..3u8).prop_map(|(id, amount, state)| PaymentSignal::Refund(RefundSeen {
            refund_id: format!("re_{id}"),
            amount_cents: cents(amount),
            state: [RefundState::Pending, RefundState::Succeeded, RefundState::Failed][state as usize],
            currency: Some(zar()),
        })),
        1 => (0..2u8, 0..3u8).prop_map(|(id, status)| PaymentSignal::DisputeOpened(dispute(id, ["warning_needs_response", "needs_response", "under_review"][status as usize]))),
        1 => (0..2u8, 0..4u8).prop_map(|(id, status)| PaymentSignal::DisputeClosed(dispute(id, ["won", "lost", "warning_closed", "prevented"][status as usize]))),
        1 => Just(PaymentSignal::Unhandled),
    ]
}

/// One Stripe fact, sometimes for another intent or with a mismatch.
fn fact(index: usize) -> impl Strategy<Value = StripeFact> {
    (signal(), 0..8i64, 0..3u8, 0..12u8).prop_map(move |(signal, created, pi, flaw)| StripeFact {
        event_id: format!("evt_{index}"),
        event_type: "generated".into(),
        created: 1_800_000_000 + created,
        livemode: flaw == 1,
        expected_livemode: false,
        object_id: Some(format!("obj_{index}")),
        payment_intent_id: Some(["pi_1", "pi_2", "pi_x"][pi as usize].to_string()),
        amount_cents: match signal {
            PaymentSignal::Processing
            | PaymentSignal::RequiresAction
            | PaymentSignal::Succeeded
            | PaymentSignal::Failed
            | PaymentSignal::Canceled
            | PaymentSignal::ChargeRefunded { .. } => {
                Some(cents(if flaw == 2 { 1 } else { BOUND }))
            }
            _ => None,
        },
        currency: Some(zar()),
        metadata: FactMetadata {
            booking_id: (flaw == 3).then(|| "another-booking".to_string()),
            ..FactMetadata::default()
        },
        signal,
    })
}

/// A booking's history in its natural order: request, accept, one or two
/// bindings, and Stripe facts.
fn history() -> impl Strategy<Value = Vec<Event>> {
    (any::<bool>(), prop::collection::vec(0..1usize, 1..16)).prop_flat_map(|(second, slots)| {
        let facts: Vec<_> = (0..slots.len()).map(fact).collect();
        (Just(second), facts).prop_map(|(second, facts)| {
            let mut events = vec![
                Event::BookingRequested(BookingRequested {
                    booking_id: "b1".into(),
                    trip_id: "t1".into(),
                    user_id: "u1".into(),
                    org_id: None,
                    passengers: 2,
                }),
                Event::BookingAccepted(BookingDecided {
                    booking_id: "b1".into(),
                    trip_id: "t1".into(),
                    by_user_id: "d1".into(),
                }),
            ];
            let bindings = if second {
                vec!["pi_1", "pi_2"]
            } else {
                vec!["pi_1"]
            };
            for (i, pi) in bindings.into_iter().enumerate() {
                events.push(Event::PaymentIntentBound(PaymentIntentBound {
                    booking_id: "b1".into(),
                    trip_id: "t1".into(),
                    user_id: "u1".into(),
                    payment_intent_id: pi.into(),
                    amount_cents: cents(BOUND),
                    currency: zar(),
                    attempt: i as u32 + 1,
                }));
            }
            events.extend(facts.into_iter().map(Event::StripeEventReceived));
            events
        })
    })
}

/// Delivery: events get seqs in the order they arrive.
fn deliver(events: &[Event]) -> Vec<Recorded> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| Recorded {
            seq: i as i64 + 1,
            recorded_at: at(i as i64),
            event: e.clone(),
        })
        .collect()
}

/// A stable name for an event, independent of its seq.
fn identity(e: &Event) -> String {
    match e {
        Event::StripeEventReceived(f) => f.event_id.clone(),
        Event::PaymentIntentBound(b) => format!("binding:{}", b.payment_intent_id),
        other => other.kind().to_string(),
    }
}

/// The projection without position fields, outcomes by event identity,
/// and the intents flagged for refund.
type Observable = (
    Option<BookingView>,
    BTreeMap<String, (OutcomeKind, Option<String>)>,
    Vec<String>,
);

/// What must not depend on delivery order: the projection minus its
/// position fields, and each event's outcome (first copy of duplicates).
fn observable(rec: &[Recorded], fold: &BookingFold) -> Observable {
    let view = fold.state.as_ref().map(|s| {
        let mut v = BookingView::from(s);
        v.version = 0;
        v.last_event_seq = 0;
        v.updated_at = at(0);
        v
    });
    let by_seq: BTreeMap<i64, &Recorded> = rec.iter().map(|r| (r.seq, r)).collect();
    let mut outcomes = BTreeMap::new();
    for o in &fold.outcomes {
        if o.reason.as_deref() == Some("duplicate") {
            continue;
        }
        if let Some(r) = by_seq.get(&o.seq) {
            outcomes
                .entry(identity(&r.event))
                .or_insert((o.outcome, o.reason.clone()));
        }
    }
    (view, outcomes, fold.refund_required().into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Any permutation plus duplication folds like in-order delivery.
    #[test]
    fn order_and_duplicates_do_not_matter(
        events in history(),
        shuffle_seed in any::<u64>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let in_order = deliver(&events);
        let reference = observable(&in_order, &fold_booking("b1", &in_order));

        let mut permuted = events.clone();
        for d in &dups {
            permuted.push(d.get(&events).clone());
        }
        // Deterministic shuffle from the seed (Fisher–Yates with an LCG).
        let mut state = shuffle_seed | 1;
        for i in (1..permuted.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = (state >> 33) as usize % (i + 1);
            permuted.swap(i, j);
        }
        let delivered = deliver(&permuted);
        let got = observable(&delivered, &fold_booking("b1", &delivered));
        prop_assert_eq!(got, reference);
    }

    /// (b) Once any delivered prefix is settled, every longer prefix is too;
    /// (c) the refunded amount stays within the bound amount.
    #[test]
    fn settled_never_goes_back_and_refunds_are_capped(events in history(), shuffle_seed in any::<u64>()) {
        // Our own events (request, accept, bindings) are decisions recorded
        // before the Stripe events here; only Stripe's deliveries are shuffled.
        let own = events.iter().take_while(|e| !matches!(e, Event::StripeEventReceived(_))).count();
        let mut order = events.clone();
        let mut state = shuffle_seed | 1;
        for i in (own + 1..order.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = own + (state >> 33) as usize % (i + 1 - own);
            order.swap(i, j);
        }
        let delivered = deliver(&order);
        let mut settled_at: Option<usize> = None;
        for n in 1..=delivered.len() {
            let Some(b) = fold_booking("b1", &delivered[..n]).state else { continue };
            let status = b.payment.status;
            let refunded = b.payment.amount_refunded_cents();
            prop_assert!((0..=BOUND).contains(&refunded.get()), "refunded {refunded}");
            if let Some(first) = settled_at {
                prop_assert!(status.is_settled(), "settled at prefix {first}, {status} at prefix {n}");
            } else if status.is_settled() {
                settled_at = Some(n);
            }
        }
    }

    /// (d) Whatever requests, accepts, rejects and cancels happen, accepted
    /// passengers never exceed the seats.
    #[test]
    fn accepted_passengers_never_exceed_seats(
        seats in 1..8u32,
        ops in prop::collection::vec((0..4u8, 0..10usize, 1..5u32), 1..60),
    ) {
        let trip_events = vec![Recorded {
            seq: 1,
            recorded_at: at(0),
            event: Event::TripPublished(TripPublished {
                trip_id: "t1".into(),
                driver_id: "d1".into(),
                org_id: None,
                title: "t".into(),
                seats,
                price_per_seat_cents: cents(100),
                currency: zar(),
                departure_time: at(100),
            }),
        }];
        let mut trip: TripState = fold_trip(&trip_events).unwrap();
        let mut logs: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
        let mut seq = 1;
        for (op, who, passengers) in ops {
            let booking_id = format!("b{who}");
            let user = format!("u{who}");
            let log = logs.entry(booking_id.clone()).or_default();
            let current = fold_booking(&booking_id, log).state;
            let command = match op {
                0 => Command::RequestBooking(RequestBooking {
                    booking_id: booking_id.clone(),
                    trip_id: "t1".into(),
                    user_id: user,
                    passengers,
                }),
                1 => Command::AcceptBooking { booking_id: booking_id.clone(), actor: "d1".into() },
                2 => Command::RejectBooking { booking_id: booking_id.clone(), actor: "d1".into() },
                _ => Command::CancelBooking { booking_id: booking_id.clone(), actor: user },
            };
            let ctx = Context { trip: Some(&trip), booking: current.as_ref() };
            if let Ok(event) = decide(&command, ctx) {
                seq += 1;
                log.push(Recorded { seq, recorded_at: at(seq), event });
            }
            let states: Vec<_> = logs.iter().filter_map(|(id, l)| fold_booking(id, l).state).collect();
            trip.seats_accepted = klubz_ledger::domain::trip::seats_accepted(&states);
            prop_assert!(trip.seats_accepted <= seats, "{} accepted of {seats}", trip.seats_accepted);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// (f) Any history Stripe can produce, delivered in order or late,
    /// reordered and duplicated, folds to the model's status, refunded
    /// amount and messages, and no delivered prefix ever downgrades.
    #[test]
    fn the_fold_agrees_with_a_model_of_stripe(
        seed in any::<u64>(),
        ops in prop::collection::vec(model::op(), 1..48),
        deliveries in prop::collection::vec(
            (prop::collection::vec(any::<u32>(), 1..64), prop::collection::vec(any::<usize>(), 0..6)),
            3,
        ),
    ) {
        let m = model::Model::run(seed, &ops);
        let delivered: Vec<_> = deliveries
            .iter()
            .map(|(keys, dups)| model::deliver(&m.items, keys, dups))
            .collect();
        model::check(&m, &delivered)?;
    }
}

mod store_idempotency {
    use super::*;
    use klubz_ledger::domain::Source;
    use klubz_ledger::store::chain::ChainKey;
    use klubz_ledger::store::{Submission, SubmitError};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// (e) Submitting a random sequence of Stripe events, with repeats,
        /// concurrently, stores each event id exactly once; a repeat with
        /// another body is refused and changes nothing.
        #[test]
        fn each_key_is_stored_once(picks in prop::collection::vec((0..6usize, any::<bool>()), 1..40)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("p.db").display());
                let store = klubz_ledger::store::open(&url, ChainKey::derive(&[1; 32])).await.unwrap();
                let tasks: Vec<_> = picks.iter().map(|(id, variant)| {
                    let store = store.clone();
                    let fact = StripeFact {
                        event_id: format!("evt_{id}"),
                        event_type: "payment_intent.processing".into(),
                        created: 1_800_000_000,
                        livemode: false,
                        expected_livemode: false,
                        object_id: Some("pi_9".into()),
                        payment_intent_id: Some("pi_9".into()),
                        // The variant changes the body under the same event id.
                        amount_cents: Some(cents(if *variant { 1 } else { 2 })),
                        currency: None,
                        metadata: FactMetadata::default(),
                        signal: PaymentSignal::Processing,
                    };
                    tokio::spawn(async move {
                        store.submit(Submission::new(Command::RecordStripeEvent(fact), Source::StripeWebhook, at(0))).await
                    })
                }).collect();
                let mut stored: BTreeMap<String, i64> = BTreeMap::new();
                for (task, (id, _)) in tasks.into_iter().zip(&picks) {
                    match task.await.unwrap() {
                        Ok(s) => {
                            let seq = *stored.entry(format!("evt_{id}")).or_insert(s.seq);
                            assert_eq!(seq, s.seq, "one seq per key");
                        }
                        Err(SubmitError::IdempotencyConflict { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
                let rows = store.read_stream("payment:pi_9").await.unwrap();
                let distinct: std::collections::BTreeSet<usize> = picks.iter().map(|(id, _)| *id).collect();
                assert_eq!(rows.len(), distinct.len());
            });
        }
    }
}
