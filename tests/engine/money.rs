//! Money correctness over real HTTP, on both backends: refund and dispute
//! histories real Stripe accounts produce, each delivered in order,
//! reversed and shuffled through the signed webhook to a booking of its
//! own, must end where Stripe's own objects say; the webhook's answers, the
//! timeline's Stripe fields and the outbox follow CONTRACT.md.

use crate::api::token;
use crate::app::*;
use crate::helpers::*;
use klubz_ledger::auth::Role;
use klubz_ledger::domain::PaymentStatus;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const AMOUNT: i64 = 2000;

/// What happens before the shuffled part: our own decisions and the events
/// they depended on (a second intent is bound only after the first failed).
enum Step {
    Bind(u32),
    Webhook(Value),
    Cancel,
}

struct Scenario {
    name: &'static str,
    setup: Vec<Step>,
    /// Delivered in order, reversed, then shuffled.
    rest: Vec<Value>,
    want_status: PaymentStatus,
    want_refunded: i64,
    /// The intent the booking ends on (attempt number).
    want_intent: u32,
}

/// Names unique to one delivery, so deliveries never share an event id.
struct Ids {
    run: String,
}

impl Ids {
    fn pi(&self, attempt: u32) -> String {
        format!("pi_{}_{attempt}", self.run)
    }
    fn evt(&self, name: &str) -> String {
        format!("evt_{}_{name}", self.run)
    }
    fn obj(&self, name: &str) -> String {
        format!("{name}_{}", self.run)
    }
}

fn pi_event(ids: &Ids, name: &str, kind: &str, t: i64, attempt: u32) -> Value {
    event(&ids.evt(name), kind, t, intent(&ids.pi(attempt), AMOUNT))
}

fn refund_event(
    ids: &Ids,
    name: &str,
    kind: &str,
    t: i64,
    re: &str,
    amount: i64,
    status: &str,
) -> Value {
    let mut object = refund(&ids.obj(re), &ids.pi(1), amount, status);
    if status == "failed" {
        object["failure_reason"] = json!("charge_for_pending_refund_disputed");
    }
    event(&ids.evt(name), kind, t, object)
}

fn charge_refunded_event(ids: &Ids, name: &str, t: i64, total: i64) -> Value {
    event(
        &ids.evt(name),
        "charge.refunded",
        t,
        charge_refunded(&ids.pi(1), AMOUNT, total),
    )
}

fn dispute_event(ids: &Ids, name: &str, kind: &str, t: i64, status: &str) -> Value {
    event(
        &ids.evt(name),
        kind,
        t,
        json!({"id": ids.obj("du"), "object": "dispute", "payment_intent": ids.pi(1),
               "charge": ids.obj("ch"), "amount": AMOUNT, "currency": "zar", "status": status,
               "reason": "fraudulent"}),
    )
}

fn scenarios(ids: &Ids) -> Vec<Scenario> {
    let paid = || {
        vec![
            Step::Bind(1),
            Step::Webhook(pi_event(ids, "s", "payment_intent.succeeded", 1, 1)),
        ]
    };
    vec![
        Scenario {
            name: "refund during an inquiry, inquiry closed warning_closed",
            setup: paid(),
            rest: vec![
                dispute_event(
                    ids,
                    "d1",
                    "charge.dispute.created",
                    2,
                    "warning_needs_response",
                ),
                refund_event(ids, "r1", "refund.created", 3, "re_1", AMOUNT, "succeeded"),
                charge_refunded_event(ids, "c1", 3, AMOUNT),
                dispute_event(ids, "d2", "charge.dispute.closed", 4, "warning_closed"),
            ],
            want_status: PaymentStatus::Refunded,
            want_refunded: AMOUNT,
            want_intent: 1,
        },
        Scenario {
            name: "pending refund fails because the charge was disputed, dispute won",
            setup: paid(),
            rest: vec![
                refund_event(ids, "r1", "refund.created", 2, "re_1", 500, "pending"),
                charge_refunded_event(ids, "c1", 2, 500),
                dispute_event(ids, "d1", "charge.dispute.created", 3, "needs_response"),
                dispute_event(
                    ids,
                    "d1w",
                    "charge.dispute.funds_withdrawn",
                    3,
                    "needs_response",
                ),
                refund_event(ids, "r2", "refund.failed", 4, "re_1", 500, "failed"),
                dispute_event(ids, "d2", "charge.dispute.funds_reinstated", 6, "won"),
                dispute_event(ids, "d3", "charge.dispute.closed", 6, "won"),
            ],
            want_status: PaymentStatus::Paid,
            want_refunded: 0,
            want_intent: 1,
        },
        Scenario {
            name: "pending full refund, dispute, refund fails, dispute lost",
            setup: paid(),
            rest: vec![
                refund_event(ids, "r1", "refund.created", 2, "re_1", AMOUNT, "pending"),
                charge_refunded_event(ids, "c1", 2, AMOUNT),
                dispute_event(ids, "d1", "charge.dispute.created", 3, "needs_response"),
                refund_event(
                    ids,
                    "r2",
                    "charge.refund.updated",
                    4,
                    "re_1",
                    AMOUNT,
                    "failed",
                ),
                dispute_event(ids, "d2", "charge.dispute.closed", 6, "lost"),
            ],
            want_status: PaymentStatus::ChargedBack,
            want_refunded: 0,
            want_intent: 1,
        },
        Scenario {
            name: "two partial refunds and their cumulative totals in one second",
            setup: paid(),
            rest: vec![
                // The older, smaller total gets the larger id: it sorts last.
                event(
                    &ids.evt("zz_total_500"),
                    "charge.refunded",
                    2,
                    charge_refunded(&ids.pi(1), AMOUNT, 500),
                ),
                event(
                    &ids.evt("aa_total_2000"),
                    "charge.refunded",
                    2,
                    charge_refunded(&ids.pi(1), AMOUNT, AMOUNT),
                ),
                refund_event(ids, "r1", "refund.created", 2, "re_1", 500, "succeeded"),
                refund_event(ids, "r2", "refund.created", 2, "re_2", 1500, "succeeded"),
            ],
            want_status: PaymentStatus::Refunded,
            want_refunded: AMOUNT,
            want_intent: 1,
        },
        Scenario {
            name: "dispute closed prevented",
            setup: paid(),
            rest: vec![
                dispute_event(ids, "d1", "charge.dispute.created", 2, "needs_response"),
                dispute_event(ids, "d2", "charge.dispute.closed", 5, "prevented"),
            ],
            want_status: PaymentStatus::Paid,
            want_refunded: 0,
            want_intent: 1,
        },
        Scenario {
            name: "late success of a superseded intent",
            setup: vec![
                Step::Bind(1),
                Step::Webhook(pi_event(ids, "f1", "payment_intent.payment_failed", 1, 1)),
                Step::Bind(2),
            ],
            rest: vec![
                pi_event(ids, "s2", "payment_intent.succeeded", 2, 2),
                event(
                    &ids.evt("r2"),
                    "refund.created",
                    3,
                    refund(&ids.obj("re_2"), &ids.pi(2), 500, "succeeded"),
                ),
                event(
                    &ids.evt("c2"),
                    "charge.refunded",
                    3,
                    charge_refunded(&ids.pi(2), AMOUNT, 500),
                ),
                pi_event(ids, "s1_late", "payment_intent.succeeded", 4, 1),
            ],
            want_status: PaymentStatus::PartiallyRefunded,
            want_refunded: 500,
            want_intent: 2,
        },
        Scenario {
            name: "cancelled paid booking refunded, then the refund fails",
            setup: {
                let mut s = paid();
                s.push(Step::Cancel);
                s
            },
            rest: vec![
                refund_event(ids, "r1", "refund.created", 5, "re_1", AMOUNT, "succeeded"),
                charge_refunded_event(ids, "c1", 5, AMOUNT),
                refund_event(ids, "r2", "refund.failed", 9, "re_1", AMOUNT, "failed"),
            ],
            want_status: PaymentStatus::Paid,
            want_refunded: 0,
            want_intent: 1,
        },
    ]
}

/// A fresh accepted booking for one delivery: trip and booking ids are
/// numeric, as the API's are.
async fn booking_for(app: &TestApp, n: usize) -> String {
    let trip = format!("{}", 800_000 + n);
    let booking = format!("{}", 900_000 + n);
    app.db.publish(&trip, "d1", 4, AMOUNT / 2).await;
    app.db.request(&booking, &trip, "u1", 2).await;
    app.db.accept(&booking, "d1").await.unwrap();
    booking
}

async fn run_setup(app: &TestApp, booking: &str, ids: &Ids, setup: &[Step]) {
    for step in setup {
        match step {
            Step::Bind(attempt) => {
                app.db
                    .bind(booking, "u1", &ids.pi(*attempt), AMOUNT)
                    .await
                    .unwrap();
            }
            Step::Webhook(body) => {
                let (status, answer) = app.webhook(&rebind(body, booking)).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
            }
            Step::Cancel => {
                app.db
                    .submit(klubz_ledger::domain::Command::CancelBooking {
                        booking_id: booking.into(),
                        actor: "u1".into(),
                    })
                    .await
                    .unwrap();
            }
        }
    }
}

/// The helpers' intents claim `metadata.bookingId = b1`; point it at this
/// delivery's booking.
fn rebind(body: &Value, booking: &str) -> Value {
    let mut body = body.clone();
    if let Some(meta) = body.pointer_mut("/data/object/metadata/bookingId") {
        *meta = json!(booking);
    }
    body
}

pub async fn refund_and_dispute_histories_in_any_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let reader = token("u1", Role::User, None);
    let mut n = 0;
    let mut rng = StdRng::seed_from_u64(7);
    let names: Vec<&str> = scenarios(&Ids { run: "x".into() })
        .iter()
        .map(|s| s.name)
        .collect();
    for (k, name) in names.iter().enumerate() {
        for order in ["in order", "reversed", "shuffled", "shuffled again"] {
            n += 1;
            let ids = Ids {
                run: format!("{k}{n}"),
            };
            let scenario = scenarios(&ids).remove(k);
            let booking = booking_for(&app, n).await;
            run_setup(&app, &booking, &ids, &scenario.setup).await;
            let mut rest = scenario.rest.clone();
            match order {
                "in order" => {}
                "reversed" => rest.reverse(),
                _ => rest.shuffle(&mut rng),
            }
            for body in &rest {
                let (status, answer) = app.webhook(&rebind(body, &booking)).await;
                assert_eq!(status, StatusCode::OK, "{name} {order}: {answer}");
                assert_eq!(answer["received"], true, "{name} {order}");
                if body["id"] == json!(ids.evt("s1_late")) {
                    assert_eq!(
                        answer,
                        json!({"received": true, "ignored": true, "reason": "superseded_intent"}),
                        "{name} {order}"
                    );
                }
            }
            // Redelivering everything changes nothing.
            for body in &rest {
                let (_, answer) = app.webhook(&rebind(body, &booking)).await;
                assert_eq!(answer["replay"], true, "{name} {order}");
            }
            let (status, read, _) = app
                .call(
                    Method::GET,
                    &format!("/api/bookings/{booking}"),
                    Some(&reader),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{read}");
            assert_eq!(
                (
                    read["paymentStatus"].clone(),
                    read["amountRefundedCents"].clone(),
                    read["paymentIntentId"].clone(),
                ),
                (
                    json!(scenario.want_status.as_str()),
                    json!(scenario.want_refunded),
                    json!(ids.pi(scenario.want_intent)),
                ),
                "{name} {order}"
            );
            let (_, timeline, _) = app
                .call(
                    Method::GET,
                    &format!("/api/bookings/{booking}/events"),
                    Some(&reader),
                    None,
                )
                .await;
            let entries = timeline["events"].as_array().unwrap();
            let stripe: Vec<&Value> = entries
                .iter()
                .filter(|e| e["kind"] == "StripeEventReceived")
                .collect();
            let webhooks = scenario
                .setup
                .iter()
                .filter(|s| matches!(s, Step::Webhook(_)))
                .count();
            assert_eq!(
                stripe.len(),
                webhooks + rest.len(),
                "{name} {order}: {timeline}"
            );
            for e in &stripe {
                assert!(
                    e["stripeEventId"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("evt_")),
                    "{e}"
                );
                assert!(e["stripeEventType"].as_str().is_some(), "{e}");
                assert!(
                    e["paymentIntentId"]
                        .as_str()
                        .is_some_and(|pi| pi.starts_with("pi_")),
                    "{e}"
                );
            }
            let outbox = app.db.store.outbox_keys(&booking).await.unwrap();
            let refund_required = outbox
                .iter()
                .filter(|k| k.starts_with(&format!("refund_required:{booking}:")))
                .count();
            match scenario.name {
                "late success of a superseded intent" => {
                    assert_eq!(refund_required, 1, "{name} {order}: {outbox:?}")
                }
                "cancelled paid booking refunded, then the refund fails" => {
                    // In order: one for the cancellation, one when the
                    // refund failed. Learned together, one is enough.
                    let want = if order == "in order" { 2 } else { 1 };
                    assert!(refund_required >= want, "{name} {order}: {outbox:?}")
                }
                _ => assert_eq!(refund_required, 0, "{name} {order}: {outbox:?}"),
            }
        }
    }
    let report = klubz_ledger::store::verify::verify(app.db.store.as_ref(), &chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// An intent or charge event without its amount or currency, and a refund
/// in another currency, are stored and not applied.
pub async fn payment_events_without_amount_or_currency_are_not_applied(backend: Backend) {
    let app = spawn_app(backend).await;
    let booking = booking_for(&app, 1).await;
    let ids = Ids { run: "m".into() };
    app.db
        .bind(&booking, "u1", &ids.pi(1), AMOUNT)
        .await
        .unwrap();
    let mut no_amount = pi_event(&ids, "s_no_amount", "payment_intent.succeeded", 1, 1);
    no_amount["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("amount");
    let mut no_currency = pi_event(&ids, "s_no_currency", "payment_intent.succeeded", 1, 1);
    no_currency["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("currency");
    for body in [no_amount, no_currency] {
        let (status, answer) = app.webhook(&rebind(&body, &booking)).await;
        assert_eq!(
            (status, answer),
            (
                StatusCode::OK,
                json!({"received": true, "ignored": true, "reason": "amount_mismatch"})
            )
        );
    }
    // Amounts that are not integer minor units, and currencies that are not
    // ISO codes, are no amount and no currency.
    let odd: [(&str, Value, Value); 7] = [
        ("string", json!("2000"), json!("zar")),
        (
            "beyond_i64",
            json!(9_223_372_036_854_775_808_u64),
            json!("zar"),
        ),
        ("no_currency_code", json!(2000), json!(7)),
        ("float", json!(2000.0), json!("zar")),
        ("huge", json!(1e30), json!("zar")),
        ("negative", json!(-2000), json!("zar")),
        ("currency", json!(2000), json!("ZZZZ")),
    ];
    for (name, amount, currency) in odd {
        let mut body = pi_event(&ids, &format!("s_{name}"), "payment_intent.succeeded", 1, 1);
        body["data"]["object"]["amount"] = amount;
        body["data"]["object"]["currency"] = currency;
        let (status, answer) = app.webhook(&rebind(&body, &booking)).await;
        assert_eq!(
            (status, answer["reason"].clone()),
            (StatusCode::OK, json!("amount_mismatch")),
            "{name}: {answer}"
        );
    }
    let b = app.db.store.booking(&booking).await.unwrap().unwrap();
    assert_eq!(b.payment_status, PaymentStatus::Pending);
    // Paid properly, then a refund in another currency moves nothing.
    app.webhook(&rebind(
        &pi_event(&ids, "s", "payment_intent.succeeded", 2, 1),
        &booking,
    ))
    .await;
    let mut usd = refund_event(&ids, "r_usd", "refund.created", 3, "re_1", 500, "succeeded");
    usd["data"]["object"]["currency"] = json!("usd");
    let (_, answer) = app.webhook(&usd).await;
    assert_eq!(answer["reason"], "amount_mismatch", "{answer}");
    let b = app.db.store.booking(&booking).await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::Paid, 0)
    );
}

on_both_backends!(money:
    refund_and_dispute_histories_in_any_order,
    payment_events_without_amount_or_currency_are_not_applied,
);
