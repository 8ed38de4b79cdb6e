//! Micro paths of one webhook, with Criterion: `cargo bench --bench micro`.
//!
//! - `signature/verify`: the `Stripe-Signature` check of a 1.7 KB body;
//! - `parse/stripe_event`: a Stripe body into the fact the fold reads;
//! - `fold/typical_booking`: the fold of a booking's usual history
//!   (request, accept, bind, then processing, succeeded, an unhandled
//!   charge event and a partial refund);
//! - `payload/decode`: a stored event's payload back into the domain event
//!   (what every history read pays per event).

use chrono::{TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use klubz_ledger::domain::events::{BookingDecided, BookingRequested, PaymentIntentBound};
use klubz_ledger::domain::{fold_booking, Cents, Currency, Event, Recorded};
use klubz_ledger::stripe::{parse_event, signature};
use serde_json::json;

const SECRET: &str = "whsec_test_bench_0123456789";
const NOW: i64 = 1_800_000_000;

fn body(kind: &str, object: serde_json::Value, n: usize) -> Vec<u8> {
    json!({
        "id": format!("evt_bench_{n}"), "object": "event", "api_version": "2026-04-22.dahlia",
        "created": NOW + n as i64, "livemode": false, "type": kind,
        "data": {"object": object},
    })
    .to_string()
    .into_bytes()
}

fn intent(status: &str) -> serde_json::Value {
    json!({"id": "pi_bench", "object": "payment_intent", "amount": 1000, "currency": "zar",
        "status": status,
        "metadata": {"bookingId": "b1", "tripId": "t1", "userId": "u1"},
        "description": "a payment, padded like a real body ".repeat(40)})
}

fn history() -> Vec<Recorded> {
    let zar = Currency::parse("zar").unwrap_or_else(|e| panic!("{e}"));
    let mut events = vec![
        Event::BookingRequested(BookingRequested {
            booking_id: "b1".into(),
            trip_id: "t1".into(),
            user_id: "u1".into(),
            org_id: None,
            passengers: 1,
        }),
        Event::BookingAccepted(BookingDecided {
            booking_id: "b1".into(),
            trip_id: "t1".into(),
            by_user_id: "d1".into(),
        }),
        Event::PaymentIntentBound(PaymentIntentBound {
            booking_id: "b1".into(),
            trip_id: "t1".into(),
            user_id: "u1".into(),
            payment_intent_id: "pi_bench".into(),
            amount_cents: Cents::new(1000).unwrap_or_default(),
            currency: zar,
            attempt: 1,
        }),
    ];
    let stripe = [
        body("payment_intent.processing", intent("processing"), 1),
        body("payment_intent.succeeded", intent("succeeded"), 2),
        body(
            "charge.succeeded",
            json!({"id": "ch_bench", "object": "charge", "payment_intent": "pi_bench",
                   "amount": 1000, "currency": "zar"}),
            3,
        ),
        body(
            "refund.created",
            json!({"id": "re_bench", "object": "refund", "payment_intent": "pi_bench",
                   "amount": 400, "currency": "zar", "status": "succeeded"}),
            4,
        ),
    ];
    for b in &stripe {
        events.push(Event::StripeEventReceived(
            parse_event(b, false).unwrap_or_else(|e| panic!("{e}")),
        ));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Recorded {
            seq: i as i64 + 1,
            recorded_at: Utc
                .timestamp_opt(NOW + i as i64, 0)
                .single()
                .unwrap_or_default(),
            event,
        })
        .collect()
}

fn micro(c: &mut Criterion) {
    let webhook = body("payment_intent.succeeded", intent("succeeded"), 2);
    let header = signature::header(SECRET, NOW, &webhook);
    c.bench_function("signature/verify", |b| {
        b.iter(|| {
            signature::verify(
                Some(black_box(&header)),
                black_box(&webhook),
                &[SECRET],
                NOW,
                300,
            )
        })
    });
    c.bench_function("parse/stripe_event", |b| {
        b.iter(|| parse_event(black_box(&webhook), false))
    });
    let history = history();
    c.bench_function("fold/typical_booking", |b| {
        b.iter(|| fold_booking(black_box("b1"), black_box(&history)))
    });
    let stored = &history[4].event;
    let (kind, payload) = (stored.kind(), stored.payload_json());
    c.bench_function("payload/decode", |b| {
        b.iter(|| Event::from_parts(black_box(kind), black_box(&payload)))
    });
}

criterion_group!(benches, micro);
criterion_main!(benches);
