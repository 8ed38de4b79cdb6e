//! Reliability under fire (issue 11): API writes exactly once across a
//! crash at any point, storable input only, bounded resources, hostile
//! input answered with the contract's errors.

use crate::api::token;
use crate::app::*;
use crate::helpers::*;
use klubz_ledger::auth::Role;
use klubz_ledger::domain::decide::PublishTrip;
use klubz_ledger::domain::Command;
use klubz_ledger::store::{ApiClaim, IdempotencyBegin, Submission, SubmitError};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn count_kind(db: &TestDb, kind: &str) -> i64 {
    db.store
        .stats()
        .await
        .unwrap()
        .events
        .iter()
        .filter(|(k, _, _)| k == kind)
        .map(|(_, _, n)| n)
        .sum()
}

/// What a process killed after its event committed and before it stored
/// the response leaves behind: the key pending, with the event's seq.
async fn lose_responses(db: &TestDb) {
    db.raw(&["UPDATE idempotency_keys SET state = 'pending', status = NULL, body = NULL"])
        .await;
}

/// Killed between the commit and the stored response, a retried API write
/// is answered from the log: the same entity, `idempotent-replayed`, and
/// no second event; later retries get that answer byte for byte.
pub async fn api_write_whose_response_was_lost_replays_from_the_log(backend: Backend) {
    let app = spawn_app(backend).await;
    let driver = token("u-crash-driver", Role::User, Some("org-a"));
    let rider = token("u-crash-rider", Role::User, Some("org-a"));
    let trip_body = json!({"title": "Crash", "seats": 2, "pricePerSeatCents": 700,
        "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"});
    let key = [("idempotency-key", "crash-trip")];
    let (s, first, h) = app
        .call_with(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(trip_body.clone()),
            &key,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert!(h.get("idempotent-replayed").is_none());
    lose_responses(&app.db).await;

    let (s, again, h) = app
        .call_with(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(trip_body.clone()),
            &key,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(
        h.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again["id"], first["id"], "the same trip, read from the log");
    assert_eq!(again, first);
    assert_eq!(count_kind(&app.db, "TripPublished").await, 1);
    let (_, third, _) = app
        .call_with(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(trip_body),
            &key,
        )
        .await;
    assert_eq!(third, again, "settled: the same answer from then on");

    // A booking request and its acceptance, each losing its response.
    let trip = first["id"].as_str().unwrap().to_string();
    let path = format!("/api/trips/{trip}/bookings");
    let bkey = [("idempotency-key", "crash-booking")];
    let (s, booking, _) = app
        .call_with(
            Method::POST,
            &path,
            Some(&rider),
            Some(json!({"passengers": 1})),
            &bkey,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booking}");
    let booking_id = booking["id"].as_str().unwrap().to_string();
    let accept = format!("/api/bookings/{booking_id}/accept");
    let akey = [("idempotency-key", "crash-accept")];
    let (s, accepted, _) = app
        .call_with(Method::POST, &accept, Some(&driver), None, &akey)
        .await;
    assert_eq!(s, StatusCode::OK, "{accepted}");
    lose_responses(&app.db).await;
    let (s, again, h) = app
        .call_with(
            Method::POST,
            &path,
            Some(&rider),
            Some(json!({"passengers": 1})),
            &bkey,
        )
        .await;
    assert_eq!(
        (s, again["id"].clone()),
        (StatusCode::CREATED, json!(booking_id))
    );
    assert!(h.get("idempotent-replayed").is_some());
    let (s, again, h) = app
        .call_with(Method::POST, &accept, Some(&driver), None, &akey)
        .await;
    assert_eq!(
        (s, again["status"].clone()),
        (StatusCode::OK, json!("accepted")),
        "the acceptance replays, not 409: {again}"
    );
    assert!(h.get("idempotent-replayed").is_some());
    assert_eq!(count_kind(&app.db, "BookingRequested").await, 1);
    assert_eq!(count_kind(&app.db, "BookingAccepted").await, 1);
}

fn publish(trip: &str) -> Command {
    Command::PublishTrip(PublishTrip {
        trip_id: trip.into(),
        driver_id: "d1".into(),
        org_id: None,
        title: "Claimed".into(),
        seats: 2,
        price_per_seat_cents: 100,
        currency: zar(),
        departure_time: t(86_400),
    })
}

fn owned(begin: IdempotencyBegin) -> String {
    match begin {
        IdempotencyBegin::Owned { claim } => claim,
        other => panic!("expected to own the key, got {other:?}"),
    }
}

/// Killed before its event committed, a request's key is taken over once
/// it counts as abandoned; the first request's late commit is refused, so
/// the write happens once. A command refused by the domain leaves its key
/// reusable.
pub async fn a_key_taken_over_refuses_the_late_commit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let keys = db.store.clone();
    let (scope, key, fp) = ("u1|POST /api/trips", "k-late", "fp-1");
    let hour = chrono::Duration::hours(1);
    let first = owned(keys.idempotency_begin(scope, key, fp, hour).await.unwrap());
    assert!(matches!(
        keys.idempotency_begin(scope, key, fp, hour).await.unwrap(),
        IdempotencyBegin::InFlight { .. }
    ));
    // Abandoned (here: any pending key older than one second from now).
    let past = chrono::Duration::seconds(-1);
    let second = owned(keys.idempotency_begin(scope, key, fp, past).await.unwrap());
    assert_ne!(first, second);
    let claim = |c: &str| ApiClaim {
        scope: scope.into(),
        key: key.into(),
        claim: c.into(),
    };
    let late = db
        .store
        .submit(
            Submission::new(publish("701"), klubz_ledger::domain::Source::Api, t(0))
                .with_api_claim(Some(claim(&first))),
        )
        .await;
    assert!(matches!(late, Err(SubmitError::ClaimLost)), "{late:?}");
    assert_eq!(count_kind(&db, "TripPublished").await, 0);
    let done = db
        .store
        .submit(
            Submission::new(publish("702"), klubz_ledger::domain::Source::Api, t(0))
                .with_api_claim(Some(claim(&second))),
        )
        .await
        .unwrap();
    // Committed with its seq: never purged as abandoned, answered from the log.
    assert_eq!(
        keys.idempotency_begin(scope, key, fp, past).await.unwrap(),
        IdempotencyBegin::Committed {
            fingerprint: fp.into(),
            seq: done.seq
        }
    );
    // One event per key: a second command under the same claim is refused.
    let twice = db
        .store
        .submit(
            Submission::new(publish("703"), klubz_ledger::domain::Source::Api, t(0))
                .with_api_claim(Some(claim(&second))),
        )
        .await;
    assert!(matches!(twice, Err(SubmitError::ClaimLost)), "{twice:?}");
    // Abandoning does not release a key whose event committed.
    keys.idempotency_abandon(scope, key, &second).await.unwrap();
    keys.idempotency_settle(scope, key, done.seq, 201, "{}")
        .await
        .unwrap();
    assert!(matches!(
        keys.idempotency_begin(scope, key, fp, past).await.unwrap(),
        IdempotencyBegin::Completed { status: 201, .. }
    ));
    assert_eq!(count_kind(&db, "TripPublished").await, 1);

    // Refused by the domain: nothing committed, the key stays reusable.
    let other = "k-refused";
    let c = owned(
        keys.idempotency_begin(scope, other, fp, hour)
            .await
            .unwrap(),
    );
    let refused = db
        .store
        .submit(
            Submission::new(
                Command::AcceptBooking {
                    booking_id: "999".into(),
                    actor: "d1".into(),
                },
                klubz_ledger::domain::Source::Api,
                t(0),
            )
            .with_api_claim(Some(ApiClaim {
                scope: scope.into(),
                key: other.into(),
                claim: c.clone(),
            })),
        )
        .await;
    assert!(
        matches!(refused, Err(SubmitError::Domain(_))),
        "{refused:?}"
    );
    keys.idempotency_abandon(scope, other, &c).await.unwrap();
    owned(
        keys.idempotency_begin(scope, other, fp, hour)
            .await
            .unwrap(),
    );
}

/// Input no backend can store is refused with 400 (401 for a token)
/// before anything is committed, and a retry changes nothing either.
pub async fn unstorable_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let driver = token("u-store-driver", Role::User, Some("org-a"));
    let trip = |title: &str, departure: &str| {
        json!({"title": title, "seats": 2, "pricePerSeatCents": 700,
            "currency": "zar", "departureTime": departure})
    };
    let cases = [
        (trip("Far", "+10000-01-01T00:00:00Z"), "departureTime"),
        (trip("Ancient", "-0001-12-31T00:00:00Z"), "departureTime"),
        (trip("Nul\u{0}title", "2030-01-01T08:00:00Z"), "title"),
    ];
    for (body, field) in &cases {
        for _ in 0..2 {
            let (s, answer, h) = app
                .call(
                    Method::POST,
                    "/api/trips",
                    Some(&driver),
                    Some(body.clone()),
                )
                .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {answer}");
            assert_eq!(answer["error"]["code"], "VALIDATION_ERROR");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{message}");
            assert!(h.get("x-request-id").is_some());
        }
    }
    // A NUL in a token claim: not a valid token.
    let nul_sub = token("u\u{0}1", Role::User, Some("org-a"));
    let nul_org = token("u-ok", Role::User, Some("org\u{0}a"));
    for t in [nul_sub, nul_org] {
        let (s, answer, _) = app
            .call(
                Method::POST,
                "/api/trips",
                Some(&t),
                Some(trip("Fine", "2030-01-01T08:00:00Z")),
            )
            .await;
        assert_eq!(
            (s, answer["error"]["code"].clone()),
            (StatusCode::UNAUTHORIZED, json!("AUTHENTICATION_ERROR"))
        );
    }
    // Signed Stripe events the ledger cannot store: 400, so Stripe stops
    // redelivering an event it would get 503 for forever.
    let far = event(
        "evt_far",
        "payment_intent.succeeded",
        0,
        intent("pi_far", 700),
    );
    let mut far = far;
    far["created"] = json!(253_402_300_800_i64);
    let nul_pi = event(
        "evt_nul",
        "payment_intent.succeeded",
        10,
        intent("pi_\u{0}x", 700),
    );
    let nul_id = event(
        "evt_\u{0}id",
        "payment_intent.succeeded",
        10,
        intent("pi_ok", 700),
    );
    for (body, field) in [(far, "created"), (nul_pi, "data.object.id"), (nul_id, "id")] {
        for _ in 0..2 {
            let (s, answer) = app.webhook(&body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{answer}");
            assert_eq!(answer["error"]["code"], "VALIDATION_ERROR");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(&format!("`{field}`")), "{message}");
        }
    }
    assert_eq!(
        app.db.store.head_seq().await.unwrap(),
        0,
        "nothing was stored"
    );
    let report = klubz_ledger::store::verify::verify(app.db.store.as_ref(), &chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

on_both_backends!(reliability:
    api_write_whose_response_was_lost_replays_from_the_log,
    a_key_taken_over_refuses_the_late_commit,
    unstorable_input_is_refused_and_changes_nothing,
);
