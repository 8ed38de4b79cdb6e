//! The outbox dispatcher against a local receiver that checks signatures,
//! on both backends: pause holds messages and resume delivers each once, in
//! order per booking; a failing receiver is retried with every attempt
//! recorded, then the message fails; two dispatchers on one database
//! deliver each message once; `GET /api/outbox` for admins.

use crate::api::token;
use crate::app::*;
use crate::helpers::*;
use axum::http::HeaderMap;
use klubz_ledger::auth::Role;
use klubz_ledger::config::Secret;
use klubz_ledger::dispatch::{DispatchConfig, Dispatcher};
use klubz_ledger::domain::decide::OperatorKind;
use klubz_ledger::domain::events::OperatorAction;
use klubz_ledger::domain::{Command, Source};
use klubz_ledger::store::{EventStore, OutboxFilter, Submission};
use klubz_ledger::stripe::signature;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NOTIFY_SECRET: &str = "test-notify-secret-0123456789abcdef0123";

/// What the receiver got: (message id, body), in arrival order.
#[derive(Default)]
pub struct Received {
    pub deliveries: Vec<(String, Value)>,
    /// Attempts per message id so far.
    attempts: std::collections::HashMap<String, u32>,
    pub bad_signatures: u32,
}

/// A local HTTP receiver: answers 500 to the first `fail_first` attempts of
/// each message, 200 after; checks `Klubz-Signature` on every request.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Received>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Receiver {
    /// Waits until `n` deliveries arrived (or `limit` passed: the caller's
    /// assertion then fails with what did arrive).
    pub async fn wait_for(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.arrived.notified();
            if self.received.lock().unwrap().deliveries.len() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

pub async fn receiver(fail_first: u32) -> Receiver {
    let received = Arc::new(Mutex::new(Received::default()));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let shared = received.clone();
    let bell = arrived.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let shared = shared.clone();
            let bell = bell.clone();
            async move {
                let id = headers
                    .get("klubz-message-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let sig = headers.get("klubz-signature").and_then(|v| v.to_str().ok());
                let verified = signature::verify(
                    sig,
                    &body,
                    &[NOTIFY_SECRET],
                    chrono::Utc::now().timestamp(),
                    300,
                )
                .is_ok();
                let mut r = shared.lock().unwrap();
                if !verified {
                    r.bad_signatures += 1;
                    return StatusCode::BAD_REQUEST;
                }
                let n = r.attempts.entry(id.clone()).or_insert(0);
                *n += 1;
                if *n <= fail_first {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                r.deliveries.push((id, value));
                bell.notify_waiters();
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        received,
        arrived,
    }
}

fn dispatcher(store: Arc<dyn EventStore>, url: &str, attempts: usize) -> Dispatcher {
    Dispatcher::new(
        store,
        DispatchConfig {
            url: url.into(),
            secret: Secret::new(NOTIFY_SECRET),
            // Retries due at once: the test drives the cycles.
            schedule: vec![Duration::ZERO; attempts],
            timeout: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(50),
            batch: 16,
        },
    )
    .unwrap()
}

async fn operator(db: &TestDb, kind: OperatorKind, n: u32) {
    db.store
        .submit(
            Submission::new(
                Command::RecordOperatorAction(
                    kind,
                    OperatorAction {
                        operator: "test-operator".into(),
                        reason: "test".into(),
                        detail: json!({}),
                    },
                ),
                Source::Operator,
                chrono::Utc::now(),
            )
            .with_key(format!("operator:test:{n}")),
        )
        .await
        .unwrap();
}

/// Runs cycles until one does nothing (at most `max`).
async fn drain(d: &Dispatcher, max: usize) -> usize {
    let mut attempted = 0;
    for _ in 0..max {
        let cycle = d.run_once().await.unwrap();
        if cycle.attempted == 0 {
            break;
        }
        attempted += cycle.attempted;
    }
    attempted
}

pub async fn pause_holds_messages_and_resume_delivers_each_once_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let rx = receiver(0).await;
    let d = dispatcher(db.store.clone(), &rx.url, 3);
    operator(&db, OperatorKind::SideEffectsPaused, 1).await;
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    db.stripe(&event(
        "evt_s",
        "payment_intent.succeeded",
        1,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    // Paused: nothing is claimed, nothing delivered, nothing lost.
    let cycle = d.run_once().await.unwrap();
    assert!(cycle.paused);
    assert_eq!(cycle.attempted, 0);
    assert!(rx.received.lock().unwrap().deliveries.is_empty());
    let pending = db
        .store
        .list_outbox(&OutboxFilter {
            status: Some("pending".into()),
            limit: 100,
            ..OutboxFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");

    operator(&db, OperatorKind::SideEffectsResumed, 2).await;
    assert_eq!(drain(&d, 10).await, 2);
    // Redelivering the webhook and cycling again sends nothing more.
    db.stripe(&event(
        "evt_s",
        "payment_intent.succeeded",
        1,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    assert_eq!(drain(&d, 10).await, 0);
    let sent = db
        .store
        .list_outbox(&OutboxFilter {
            status: Some("sent".into()),
            limit: 100,
            ..OutboxFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(sent.len(), 2);
    let r = rx.received.lock().unwrap();
    assert_eq!(r.bad_signatures, 0);
    let kinds: Vec<&str> = r
        .deliveries
        .iter()
        .map(|(_, b)| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["booking_accepted", "payment_succeeded"]);
    let (id, body) = &r.deliveries[1];
    assert_eq!(body["id"], json!(id));
    for field in [
        "bookingId",
        "tripId",
        "userId",
        "paymentIntentId",
        "amountCents",
        "currency",
        "occurredAt",
        "causedBySeq",
        "stripeEventId",
    ] {
        assert!(body.get(field).is_some(), "{field} missing from {body}");
    }
    assert_eq!(body["amountCents"], 2000);
    assert_eq!(body["stripeEventId"], "evt_s");
}

pub async fn a_failing_receiver_is_retried_then_the_message_fails(backend: Backend) {
    let db = TestDb::new(backend).await;
    let flaky = receiver(2).await;
    let d = dispatcher(db.store.clone(), &flaky.url, 4);
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    db.stripe(&event(
        "evt_s",
        "payment_intent.succeeded",
        1,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    // booking_accepted: 500, 500, 200; payment_succeeded waits behind it
    // (order per booking), then 500, 500, 200.
    assert_eq!(drain(&d, 20).await, 6);
    let kinds: Vec<String> = flaky
        .received
        .lock()
        .unwrap()
        .deliveries
        .iter()
        .map(|(_, b)| b["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["booking_accepted", "payment_succeeded"]);
    let all = db
        .store
        .list_outbox(&OutboxFilter {
            limit: 100,
            ..OutboxFilter::default()
        })
        .await
        .unwrap();
    let keys: Vec<String> = all.iter().map(|m| m.message_key.clone()).collect();
    let attempts = db.store.outbox_attempts(&keys).await.unwrap();
    for m in &all {
        let codes: Vec<Option<i64>> = attempts
            .iter()
            .filter(|a| a.message_key == m.message_key)
            .map(|a| a.status_code)
            .collect();
        assert_eq!(
            codes,
            [Some(500), Some(500), Some(200)],
            "{}",
            m.message_key
        );
        assert_eq!((m.status.as_str(), m.attempts), ("sent", 3));
    }

    // A receiver that never accepts: after the schedule, `failed`.
    let db = TestDb::new(backend).await;
    let down = receiver(u32::MAX).await;
    let d = dispatcher(db.store.clone(), &down.url, 3);
    db.accepted_booking().await;
    assert_eq!(drain(&d, 20).await, 3);
    let failed = db
        .store
        .list_outbox(&OutboxFilter {
            status: Some("failed".into()),
            limit: 100,
            ..OutboxFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 3);

    // Nobody listening: the error is recorded, not the URL.
    let db = TestDb::new(backend).await;
    let d = dispatcher(db.store.clone(), "http://127.0.0.1:9/hook", 1);
    db.accepted_booking().await;
    assert_eq!(drain(&d, 5).await, 1);
    let keys = db.store.outbox_keys("b1").await.unwrap();
    let attempts = db.store.outbox_attempts(&keys).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, None);
    assert_eq!(attempts[0].error.as_deref(), Some("connection failed"));
}

pub async fn two_dispatchers_on_one_database_deliver_each_message_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let rx = receiver(0).await;
    for n in 0..12 {
        let trip = format!("t{n}");
        let booking = format!("b{n}");
        db.publish(&trip, "d1", 4, 1000).await;
        db.request(&booking, &trip, &format!("u{n}"), 2).await;
        db.accept(&booking, "d1").await.unwrap();
        db.submit(Command::CancelBooking {
            booking_id: booking.clone(),
            actor: "d1".into(),
        })
        .await
        .unwrap();
    }
    // Two engines: two stores, two dispatchers, one database.
    let other = db.open_another().await;
    let a = dispatcher(db.store.clone(), &rx.url, 3);
    let b = dispatcher(other, &rx.url, 3);
    let (na, nb) = tokio::join!(drain(&a, 50), drain(&b, 50));
    assert_eq!(na + nb, 24, "{na} + {nb}");
    let r = rx.received.lock().unwrap();
    let mut ids: Vec<&String> = r.deliveries.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 24, "each of the 24 messages once");
    assert_eq!(r.deliveries.len(), 24);
    // Per booking, accepted before cancelled.
    for n in 0..12 {
        let kinds: Vec<&str> = r
            .deliveries
            .iter()
            .filter(|(_, b)| b["bookingId"] == json!(format!("b{n}")))
            .map(|(_, b)| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["booking_accepted", "booking_cancelled"], "b{n}");
    }
}

/// A dispatcher that claimed a message and died (its lease ran out) does
/// not lose it: another claims it and delivers; the dead one's late
/// bookkeeping changes nothing.
pub async fn a_message_claimed_by_a_dead_dispatcher_is_delivered_by_another(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    let now = chrono::Utc::now().timestamp_millis();
    // "dead" claims it with a lease that has already run out.
    let claimed = db
        .store
        .claim_outbox("dead", now, now - 1, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // A live lease is respected.
    let other = db
        .store
        .claim_outbox("other", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(other.len(), 1, "the expired lease is taken over");
    assert!(db
        .store
        .claim_outbox("third", now, now + 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let rx = receiver(0).await;
    // The dead dispatcher's late attempt record does not move the message.
    db.store
        .finish_attempt(
            "dead",
            &klubz_ledger::store::OutboxAttempt {
                message_key: claimed[0].message_key.clone(),
                attempt: 1,
                at_ms: now,
                status_code: Some(200),
                error: None,
                duration_ms: 1,
            },
            klubz_ledger::store::AfterAttempt::Sent,
        )
        .await
        .unwrap();
    let pending = db
        .store
        .list_outbox(&OutboxFilter {
            status: Some("pending".into()),
            limit: 10,
            ..OutboxFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        pending.len(),
        1,
        "still pending: only the lease holder settles it"
    );
    // Once "other"'s lease is gone too, a live dispatcher delivers it.
    db.raw(&["UPDATE outbox SET lease_until_ms = 0"]).await;
    let d = dispatcher(db.store.clone(), &rx.url, 3);
    assert_eq!(drain(&d, 5).await, 1);
    assert_eq!(rx.received.lock().unwrap().deliveries.len(), 1);
}

/// `serve`'s shutdown path: the supervisor stops the dispatcher it runs,
/// waits for it, then closes the store (its writers commit what is queued).
pub async fn the_supervisor_stops_its_tasks_then_closes_the_store(backend: Backend) {
    let db = TestDb::new(backend).await;
    let rx = receiver(0).await;
    let mut supervisor = klubz_ledger::supervisor::Supervisor::new();
    let d = dispatcher(db.store.clone(), &rx.url, 3);
    let signal = supervisor.shutdown_signal();
    supervisor.spawn("outbox dispatcher", d.run(signal));
    assert_eq!(supervisor.running(), ["outbox dispatcher"]);
    db.accepted_booking().await;
    rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(rx.received.lock().unwrap().deliveries.len(), 1);
    supervisor.shutdown(db.store.as_ref()).await;
    assert!(!db.store.writer_alive());
}

pub async fn the_outbox_route_is_for_admins(backend: Backend) {
    let app = spawn_app(backend).await;
    app.db.accepted_booking().await;
    let rx = receiver(1).await;
    let d = dispatcher(app.db.store.clone(), &rx.url, 3);
    drain(&d, 5).await;
    let root = token("root", Role::SuperAdmin, None);
    let (status, list, _) = app
        .call(Method::GET, "/api/outbox", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let messages = list["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{list}");
    let m = &messages[0];
    assert_eq!(m["type"], "booking_accepted");
    assert_eq!(m["status"], "sent");
    assert_eq!(m["attempts"].as_array().unwrap().len(), 2, "{m}");
    assert_eq!(m["attempts"][0]["statusCode"], 500);
    assert_eq!(m["body"]["id"], m["id"]);
    let (_, sent, _) = app
        .call(
            Method::GET,
            "/api/outbox?status=pending&bookingId=b1",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(sent["messages"].as_array().unwrap().len(), 0);
    // An admin sees only its organisation's bookings (b1 has none).
    let admin = token("adm", Role::Admin, Some("org-a"));
    let (status, list, _) = app
        .call(Method::GET, "/api/outbox", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["messages"].as_array().unwrap().len(), 0);
    let user = token("u1", Role::User, None);
    let (status, _, _) = app
        .call(Method::GET, "/api/outbox", Some(&user), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body, _) = app
        .call(Method::GET, "/api/outbox?status=lost", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
}

on_both_backends!(dispatch:
    pause_holds_messages_and_resume_delivers_each_once_in_order,
    a_failing_receiver_is_retried_then_the_message_fails,
    two_dispatchers_on_one_database_deliver_each_message_once,
    the_outbox_route_is_for_admins,
    a_message_claimed_by_a_dead_dispatcher_is_delivered_by_another,
    the_supervisor_stops_its_tasks_then_closes_the_store,
);
