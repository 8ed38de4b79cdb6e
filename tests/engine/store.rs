//! The store conformance tests behind `on_both_backends!`.

use crate::helpers::*;
use futures::StreamExt;
use klubz_ledger::domain::fold::{reason, OutcomeKind};
use klubz_ledger::domain::{BookingStatus, Command, DomainError, PaymentStatus, Source};
use klubz_ledger::store::verify::verify;
use klubz_ledger::store::{ExpectedVersion, Submission, SubmitError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

async fn payment_status(db: &TestDb, booking: &str) -> PaymentStatus {
    db.store
        .booking(booking)
        .await
        .unwrap()
        .unwrap()
        .payment_status
}

async fn assert_verified(db: &TestDb) {
    let report = verify(db.store.as_ref(), &chain_key()).await.unwrap();
    assert!(report.is_ok(), "verify failed: {report:?}");
}

pub async fn idempotent_append_under_50_concurrent_tasks(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    let body = event(
        "evt_dup",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    );
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = db.store.clone();
            let sub = stripe_submission(&body);
            tokio::spawn(async move { store.submit(sub).await })
        })
        .collect();
    let mut fresh = 0;
    let mut seqs = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        seqs.insert(r.seq);
        if !r.duplicate {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one submission stores the event");
    assert_eq!(seqs.len(), 1, "every answer names the same seq");
    let stored = db.store.read_stream("payment:pi_1").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(payment_status(&db, "b1").await, PaymentStatus::Paid);
    assert_verified(&db).await;
}

pub async fn same_key_other_payload_is_a_conflict(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    db.stripe(&event(
        "evt_1",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    // The same event id with a different body: not silently accepted.
    let other = event("evt_1", "payment_intent.canceled", 10, intent("pi_1", 2000));
    let err = db.stripe(&other).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::IdempotencyConflict { ref key } if key == "stripe:evt_1"),
        "{err:?}"
    );
    assert_eq!(db.store.read_stream("payment:pi_1").await.unwrap().len(), 1);
    assert_eq!(payment_status(&db, "b1").await, PaymentStatus::Paid);
}

pub async fn per_stream_version_conflicts(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.publish("t1", "d1", 4, 1000).await;
    db.request("b1", "t1", "u1", 1).await;
    let accept = Submission::new(
        Command::AcceptBooking {
            booking_id: "b1".into(),
            actor: "d1".into(),
        },
        Source::Api,
        t(1),
    );
    // The booking stream is at version 1; expecting 2 must fail…
    let err = db
        .store
        .submit(accept.clone().expect_version(ExpectedVersion::Exactly(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SubmitError::VersionConflict { actual: 1, .. }),
        "{err:?}"
    );
    let err = db
        .store
        .submit(accept.clone().expect_version(ExpectedVersion::NoStream))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SubmitError::VersionConflict { .. }),
        "{err:?}"
    );
    // …and expecting 1 succeeds, at version 2.
    let ok = db
        .store
        .submit(accept.expect_version(ExpectedVersion::Exactly(1)))
        .await
        .unwrap();
    assert_eq!((ok.stream.as_str(), ok.stream_version), ("booking:b1", 2));
    // Two writers racing on the same version: exactly one wins.
    let cancel = |who: &str| {
        Submission::new(
            Command::CancelBooking {
                booking_id: "b1".into(),
                actor: who.into(),
            },
            Source::Api,
            t(2),
        )
        .expect_version(ExpectedVersion::Exactly(2))
        .with_key(format!("cancel-by-{who}"))
    };
    let (a, b) = tokio::join!(db.store.submit(cancel("u1")), db.store.submit(cancel("d1")));
    let wins = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
    assert_eq!(wins, 1, "{a:?} {b:?}");
    assert_eq!(db.store.read_stream("booking:b1").await.unwrap().len(), 3);
    assert_verified(&db).await;
}

pub async fn payment_lifecycle_with_partial_and_full_refund(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    assert_eq!(payment_status(&db, "b1").await, PaymentStatus::Pending);
    db.stripe(&event(
        "evt_p",
        "payment_intent.processing",
        5,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    assert_eq!(payment_status(&db, "b1").await, PaymentStatus::Processing);
    let paid = db
        .stripe(&event(
            "evt_s",
            "payment_intent.succeeded",
            10,
            intent("pi_1", 2000),
        ))
        .await
        .unwrap();
    assert_eq!(paid.outcome.map(|o| o.outcome), Some(OutcomeKind::Applied));
    assert_eq!(paid.booking_id.as_deref(), Some("b1"));
    db.stripe(&event(
        "evt_r1",
        "charge.refunded",
        20,
        charge_refunded("pi_1", 2000, 500),
    ))
    .await
    .unwrap();
    let b = db.store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::PartiallyRefunded, 500)
    );
    db.stripe(&event(
        "evt_r2",
        "charge.refunded",
        30,
        charge_refunded("pi_1", 2000, 2000),
    ))
    .await
    .unwrap();
    let b = db.store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::Refunded, 2000)
    );
    assert_eq!(b.payment_intent_id.as_deref(), Some("pi_1"));
    let timeline = db.store.timeline("b1").await.unwrap();
    assert_eq!(
        timeline.len(),
        7,
        "requested, accepted, bound, 4 stripe events"
    );
    assert!(timeline.iter().all(|e| e.outcome.is_some()));
    assert_verified(&db).await;
}

pub async fn late_binding_applies_stored_events(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    // Stripe is faster than our own binding: the events arrive first.
    let early = db
        .stripe(&event(
            "evt_s",
            "payment_intent.succeeded",
            10,
            intent("pi_1", 2000),
        ))
        .await
        .unwrap();
    let o = early.outcome.unwrap();
    assert_eq!(
        (o.outcome, o.reason.as_deref()),
        (OutcomeKind::Excluded, Some(reason::UNKNOWN_PAYMENT_INTENT))
    );
    assert_eq!(payment_status(&db, "b1").await, PaymentStatus::Unpaid);
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    assert_eq!(payment_status(&db, "b1").await, PaymentStatus::Paid);
    let o = db.store.outcome(early.seq).await.unwrap().unwrap();
    assert_eq!(
        o.outcome,
        OutcomeKind::Applied,
        "re-judged when the binding arrived"
    );
    assert_verified(&db).await;
}

pub async fn mismatched_events_are_stored_with_reasons(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    let mut wrong_meta = intent("pi_1", 2000);
    wrong_meta["metadata"] = json!({"bookingId": "someone-else"});
    let mut wrong_currency = intent("pi_1", 2000);
    wrong_currency["currency"] = json!("usd");
    let mut live = event(
        "evt_live",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    );
    live["livemode"] = json!(true);
    let cases = [
        (
            event("evt_meta", "payment_intent.succeeded", 10, wrong_meta),
            reason::METADATA_MISMATCH,
        ),
        (
            event("evt_amt", "payment_intent.succeeded", 10, intent("pi_1", 1)),
            reason::AMOUNT_MISMATCH,
        ),
        (
            event("evt_cur", "payment_intent.succeeded", 10, wrong_currency),
            reason::AMOUNT_MISMATCH,
        ),
        (live, reason::LIVEMODE_MISMATCH),
        (
            event(
                "evt_other",
                "payment_intent.succeeded",
                10,
                intent("pi_unknown", 2000),
            ),
            reason::UNKNOWN_PAYMENT_INTENT,
        ),
        (
            event(
                "evt_cap",
                "payment_intent.amount_capturable_updated",
                10,
                intent("pi_1", 2000),
            ),
            reason::UNHANDLED_TYPE,
        ),
    ];
    for (body, want) in cases {
        let r = db.stripe(&body).await.unwrap();
        let o = r.outcome.unwrap();
        assert_eq!(
            (o.outcome, o.reason.as_deref()),
            (OutcomeKind::Excluded, Some(want)),
            "{body}"
        );
        assert_eq!(
            payment_status(&db, "b1").await,
            PaymentStatus::Pending,
            "{body}"
        );
    }
    assert_verified(&db).await;
}

pub async fn no_downgrade_after_paid(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    db.stripe(&event(
        "evt_s",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    for (id, kind) in [
        ("evt_f", "payment_intent.payment_failed"),
        ("evt_c", "payment_intent.canceled"),
        ("evt_p", "payment_intent.processing"),
        ("evt_a", "payment_intent.requires_action"),
    ] {
        let r = db
            .stripe(&event(id, kind, 20, intent("pi_1", 2000)))
            .await
            .unwrap();
        let o = r.outcome.unwrap();
        assert_eq!(
            (o.outcome, o.reason.as_deref()),
            (OutcomeKind::Rejected, Some(reason::INVALID_TRANSITION)),
            "{kind}"
        );
        assert_eq!(
            payment_status(&db, "b1").await,
            PaymentStatus::Paid,
            "{kind}"
        );
    }
    // And a new intent cannot be bound to a paid booking.
    let err = db.bind("b1", "u1", "pi_2", 2000).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Domain(DomainError::Conflict(_))),
        "{err:?}"
    );
    assert_verified(&db).await;
}

pub async fn reversed_refund_gives_its_amount_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    db.stripe(&event(
        "evt_s",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    db.stripe(&event(
        "evt_r1",
        "refund.created",
        20,
        refund("re_1", "pi_1", 2000, "pending"),
    ))
    .await
    .unwrap();
    assert_eq!(payment_status(&db, "b1").await, PaymentStatus::Refunded);
    db.stripe(&event(
        "evt_r2",
        "charge.refund.updated",
        30,
        refund("re_1", "pi_1", 2000, "failed"),
    ))
    .await
    .unwrap();
    let b = db.store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::Paid, 0)
    );
    // Refunds beyond the bound amount are capped.
    db.stripe(&event(
        "evt_r3",
        "refund.created",
        40,
        refund("re_2", "pi_1", 1500, "succeeded"),
    ))
    .await
    .unwrap();
    db.stripe(&event(
        "evt_r4",
        "refund.created",
        41,
        refund("re_3", "pi_1", 1500, "succeeded"),
    ))
    .await
    .unwrap();
    let b = db.store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::Refunded, 2000)
    );
    assert_verified(&db).await;
}

/// Random histories over several bookings, delivered in random order with
/// duplicates; afterwards every projection must equal the fold of its log.
pub async fn projection_equals_fold_after_random_histories(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.publish("t1", "d1", 6, 1000).await;
    let kinds = [
        "payment_intent.processing",
        "payment_intent.requires_action",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "charge.dispute.created",
    ];
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let booking = format!("b{seed}");
        let user = format!("u{seed}");
        db.request(&booking, "t1", &user, 1).await;
        let _ = db.accept(&booking, "d1").await;
        let pi = format!("pi_{seed}");
        let mut bodies = Vec::new();
        for i in 0..12 {
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let created = rng.gen_range(0..6);
            let mut object = intent(&pi, 1000);
            object["metadata"] = json!({"bookingId": booking});
            if kind.starts_with("charge.dispute") {
                object = json!({"id": format!("du_{seed}"), "object": "dispute", "payment_intent": pi, "amount": 1000, "currency": "zar", "status": "needs_response"});
            }
            bodies.push(event(&format!("evt_{seed}_{i}"), kind, created, object));
            if rng.gen_bool(0.3) {
                let r = rng.gen_range(0..bodies.len());
                let dup = bodies[r].clone();
                bodies.push(dup);
            }
        }
        bodies.push(event(
            &format!("evt_{seed}_rf"),
            "charge.refunded",
            7,
            charge_refunded(&pi, 1000, rng.gen_range(1..=1000)),
        ));
        bodies.shuffle(&mut rng);
        let bind_at = rng.gen_range(0..=bodies.len());
        for (i, body) in bodies.iter().enumerate() {
            if i == bind_at {
                let _ = db.bind(&booking, &user, &pi, 1000).await;
            }
            db.stripe(body).await.unwrap();
        }
        if bind_at == bodies.len() {
            let _ = db.bind(&booking, &user, &pi, 1000).await;
        }
    }
    assert_verified(&db).await;
}

async fn tampered_verify(db: &TestDb) -> klubz_ledger::store::chain::BrokenLink {
    let report = verify(db.store.as_ref(), &chain_key()).await.unwrap();
    report
        .broken_link
        .expect("verify must find the broken link")
}

async fn booking_stream_seqs(db: &TestDb) -> Vec<i64> {
    db.store
        .read_stream("booking:b1")
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

pub async fn chain_detects_edited_payload(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    assert_verified(&db).await;
    let seqs = booking_stream_seqs(&db).await;
    let mut statements: Vec<String> = db.drop_guard().iter().map(|s| s.to_string()).collect();
    // Lower the bound amount in the binding's payload.
    statements.push(format!(
        "UPDATE events SET payload = replace(payload, '\"amountCents\":2000', '\"amountCents\":20') WHERE seq = {}",
        seqs[2]
    ));
    db.raw(&statements.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let broken = tampered_verify(&db).await;
    assert_eq!(
        (broken.seq, broken.stream.as_str()),
        (seqs[2], "booking:b1"),
        "{broken}"
    );
    assert!(broken.problem.contains("edited"), "{broken}");
}

pub async fn chain_detects_deleted_event(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    let seqs = booking_stream_seqs(&db).await;
    let mut statements: Vec<String> = db.drop_guard().iter().map(|s| s.to_string()).collect();
    statements.push(format!(
        "DELETE FROM event_outcomes WHERE seq = {}",
        seqs[1]
    ));
    statements.push(format!("DELETE FROM events WHERE seq = {}", seqs[1]));
    db.raw(&statements.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let broken = tampered_verify(&db).await;
    assert_eq!(broken.seq, seqs[2], "{broken}");
    assert!(broken.problem.contains("deleted"), "{broken}");
}

pub async fn chain_detects_swapped_pair(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    let seqs = booking_stream_seqs(&db).await;
    let mut statements: Vec<String> = db.drop_guard().iter().map(|s| s.to_string()).collect();
    statements.push(format!(
        "UPDATE events SET stream_version = 100 WHERE seq = {}",
        seqs[1]
    ));
    statements.push(format!(
        "UPDATE events SET stream_version = 2 WHERE seq = {}",
        seqs[2]
    ));
    statements.push(format!(
        "UPDATE events SET stream_version = 3 WHERE seq = {}",
        seqs[1]
    ));
    db.raw(&statements.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let broken = tampered_verify(&db).await;
    assert_eq!(broken.seq, seqs[1], "{broken}");
}

pub async fn no_overbooking_under_concurrent_accepts(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.publish("t1", "d1", 3, 1000).await;
    for i in 0..12 {
        db.request(&format!("b{i:02}"), "t1", &format!("u{i}"), 1)
            .await;
    }
    // Two engine processes accepting at once (one for SQLite: a file has one writer).
    let other = db.open_another().await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                store
                    .submit(Submission::new(
                        Command::AcceptBooking {
                            booking_id: format!("b{i:02}"),
                            actor: "d1".into(),
                        },
                        Source::Api,
                        t(1),
                    ))
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(SubmitError::Domain(DomainError::Conflict(m))) => {
                assert!(m.contains("seats"), "{m}")
            }
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(accepted, 3);
    let trip = db.store.trip("t1").await.unwrap().unwrap();
    assert_eq!(trip.seats_accepted, 3);
    let mut accepted_rows = 0;
    for i in 0..12 {
        let b = db
            .store
            .booking(&format!("b{i:02}"))
            .await
            .unwrap()
            .unwrap();
        if b.status == BookingStatus::Accepted {
            accepted_rows += 1;
        }
    }
    assert_eq!(accepted_rows, 3);
    assert_verified(&db).await;
}

pub async fn restart_loses_nothing_committed(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    // A store of its own that this test drops: the "process" that stops.
    let first = db.open_another().await;
    let acks: Vec<_> = (0..20)
        .map(|i| {
            let store = first.clone();
            let sub = stripe_submission(&event(
                &format!("evt_{i}"),
                "payment_intent.processing",
                i,
                intent("pi_1", 2000),
            ));
            tokio::spawn(async move { store.submit(sub).await })
        })
        .collect();
    let mut acked = Vec::new();
    for a in acks {
        acked.push(a.await.unwrap().unwrap().seq);
    }
    let head = first.head_seq().await.unwrap();
    let before = first.booking("b1").await.unwrap();
    drop(first);
    // Reopen from scratch: everything acknowledged is there.
    let reopened = db.open_another().await;
    assert_eq!(reopened.head_seq().await.unwrap(), head);
    let stored: Vec<i64> = reopened
        .read_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    for seq in acked {
        assert!(stored.contains(&seq), "acknowledged seq {seq} lost");
    }
    assert_eq!(reopened.booking("b1").await.unwrap(), before);
    let report = verify(reopened.as_ref(), &chain_key()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
}

pub async fn second_process_shares_the_log(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    let other = db.open_another().await;
    let body = event(
        "evt_twice",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    );
    let (a, b) = tokio::join!(
        db.store.submit(stripe_submission(&body)),
        other.submit(stripe_submission(&body))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.seq, b.seq);
    assert!(
        a.duplicate != b.duplicate,
        "one stores, one is told it is a duplicate"
    );
    assert_eq!(
        other.booking("b1").await.unwrap().unwrap().payment_status,
        PaymentStatus::Paid
    );
    assert_verified(&db).await;
}

/// `booking_read`, the API's read: the head of the log, the booking and
/// its trip as the single reads give them, a write from another process
/// seen at once, and nothing for an unknown booking.
pub async fn booking_read_is_head_booking_and_trip_together(backend: Backend) {
    let db = TestDb::new(backend).await;
    let none = db.store.booking_read("b1").await.unwrap();
    assert_eq!(none.seq, 0);
    assert!(none.booking.is_none() && none.trip.is_none());
    db.accepted_booking().await;
    let read = db.store.booking_read("b1").await.unwrap();
    assert_eq!(read.seq, db.store.head_seq().await.unwrap());
    assert_eq!(read.booking, db.store.booking("b1").await.unwrap());
    assert_eq!(read.trip, db.store.trip("t1").await.unwrap());
    assert_eq!(read.trip.as_ref().unwrap().seats_accepted, 2);

    let other = db.share().await;
    other.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    let later = db.store.booking_read("b1").await.unwrap();
    assert!(later.seq > read.seq, "the other process's write is seen");
    assert_eq!(
        later.booking.unwrap().payment_intent_id.as_deref(),
        Some("pi_1")
    );
    assert!(db
        .store
        .booking_read("b404")
        .await
        .unwrap()
        .booking
        .is_none());
}

pub async fn read_apis_page_and_stream_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    for i in 0..30 {
        db.stripe(&event(
            &format!("evt_{i:02}"),
            "payment_intent.processing",
            i,
            intent("pi_1", 2000),
        ))
        .await
        .unwrap();
    }
    let head = db.store.head_seq().await.unwrap();
    let streamed: Vec<i64> = db
        .store
        .stream_all(0)
        .map(|e| e.unwrap().seq)
        .collect()
        .await;
    assert_eq!(streamed.len(), 34);
    assert!(streamed.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(streamed.last().copied(), Some(head));
    let page = db.store.read_after(streamed[9], 5).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        streamed[10..15].to_vec()
    );
    let payment = db.store.read_stream("payment:pi_1").await.unwrap();
    assert_eq!(payment.len(), 30);
    assert!(payment
        .iter()
        .enumerate()
        .all(|(i, e)| e.stream_version == i as i64 + 1));
}

/// Outbox keys of one message type.
async fn outbox_of(db: &TestDb, booking: &str, kind: &str) -> Vec<String> {
    let prefix = format!("{kind}:{booking}:");
    let keys = db.store.outbox_keys(booking).await.unwrap();
    keys.into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

/// Side effects follow real transitions, once: a superseded intent that
/// also took money yields one `refund_required` however often its success
/// is redelivered, and never takes the booking over; a cancelled paid
/// booking yields one, and another when its refund fails.
pub async fn side_effects_are_produced_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    db.stripe(&event(
        "evt_f1",
        "payment_intent.payment_failed",
        1,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    db.bind("b1", "u1", "pi_2", 2000).await.unwrap();
    let s2 = db
        .stripe(&event(
            "evt_s2",
            "payment_intent.succeeded",
            2,
            intent("pi_2", 2000),
        ))
        .await
        .unwrap();
    assert!(outbox_of(&db, "b1", "refund_required").await.is_empty());
    assert_eq!(
        outbox_of(&db, "b1", "payment_succeeded").await,
        vec![format!("payment_succeeded:b1:{}", s2.seq)]
    );
    // The first intent succeeds after all (a retried card). Bindings are
    // decisions: the second intent stays current, the first must be refunded.
    let mut s1_seq = None;
    for _ in 0..3 {
        let s1 = db
            .stripe(&event(
                "evt_s1",
                "payment_intent.succeeded",
                3,
                intent("pi_1", 2000),
            ))
            .await
            .unwrap();
        s1_seq.get_or_insert(s1.seq);
        if !s1.duplicate {
            let outcome = s1.outcome.unwrap();
            assert_eq!(outcome.reason.as_deref(), Some("superseded_intent"));
        }
    }
    let b = db.store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.payment_intent_id.as_deref()),
        (PaymentStatus::Paid, Some("pi_2"))
    );
    assert_eq!(
        outbox_of(&db, "b1", "refund_required").await,
        vec![format!("refund_required:b1:{}", s1_seq.unwrap())]
    );
    // Cancelling the paid booking asks for the refund of the paying intent.
    for _ in 0..2 {
        db.submit(Command::CancelBooking {
            booking_id: "b1".into(),
            actor: "u1".into(),
        })
        .await
        .unwrap();
    }
    assert_eq!(outbox_of(&db, "b1", "refund_required").await.len(), 2);
    // The operator refunds it in full; the refund then fails: the money is
    // held again, and that is a new message.
    let refund = |id: &str, status: &str, created: i64| {
        event(
            id,
            "refund.updated",
            created,
            json!({"id": "re_1", "object": "refund", "payment_intent": "pi_2",
                   "amount": 2000, "currency": "zar", "status": status}),
        )
    };
    db.stripe(&refund("evt_r1", "succeeded", 10)).await.unwrap();
    assert_eq!(outbox_of(&db, "b1", "refund_required").await.len(), 2);
    assert_eq!(outbox_of(&db, "b1", "payment_refunded").await.len(), 1);
    let failed = db.stripe(&refund("evt_r2", "failed", 11)).await.unwrap();
    let keys = outbox_of(&db, "b1", "refund_required").await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.contains(&format!("refund_required:b1:{}", failed.seq)));
    // Redelivering everything changes nothing.
    db.stripe(&refund("evt_r1", "succeeded", 10)).await.unwrap();
    db.stripe(&refund("evt_r2", "failed", 11)).await.unwrap();
    assert_eq!(outbox_of(&db, "b1", "refund_required").await.len(), 3);
    let b = db.store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::Paid, 0)
    );
    assert_verified(&db).await;
}

on_both_backends!(store:
    idempotent_append_under_50_concurrent_tasks,
    same_key_other_payload_is_a_conflict,
    per_stream_version_conflicts,
    payment_lifecycle_with_partial_and_full_refund,
    late_binding_applies_stored_events,
    mismatched_events_are_stored_with_reasons,
    no_downgrade_after_paid,
    reversed_refund_gives_its_amount_back,
    projection_equals_fold_after_random_histories,
    chain_detects_edited_payload,
    chain_detects_deleted_event,
    chain_detects_swapped_pair,
    no_overbooking_under_concurrent_accepts,
    restart_loses_nothing_committed,
    second_process_shares_the_log,
    booking_read_is_head_booking_and_trip_together,
    read_apis_page_and_stream_in_order,
    side_effects_are_produced_once,
);
