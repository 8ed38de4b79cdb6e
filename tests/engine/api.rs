//! The booking and payment API over real HTTP, on both backends: the
//! route × persona authorization matrix, the journey to `paid`, seats under
//! concurrency, idempotency, amount tampering, bad input, monitoring, and
//! the Stripe gateway against a fake Stripe that checks what it receives.

use crate::app::*;
use crate::helpers::*;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use klubz_ledger::auth::{mint, Role};
use klubz_ledger::domain::decide::{PublishTrip, RequestBooking};
use klubz_ledger::domain::{Command, PaymentStatus};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

pub fn token(sub: &str, role: Role, org: Option<&str>) -> String {
    mint(
        JWT_SECRET,
        sub,
        role,
        org,
        chrono::Utc::now().timestamp(),
        3600,
    )
    .unwrap()
}

static IDS: AtomicU64 = AtomicU64::new(1);

/// A fresh numeric id (the API's ids are numeric strings).
fn id() -> String {
    format!(
        "{}{:06}",
        std::process::id(),
        IDS.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestApp {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, HeaderMap) {
        self.call_with(method, path, auth, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, HeaderMap) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = auth {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            convert(headers),
        )
    }
}

fn convert(h: reqwest::header::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h.iter() {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
            axum::http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            out.insert(name, value);
        }
    }
    out
}

/// A trip of `driver` in org-a (3 seats at 4500 zar) and a booking of
/// `rider` for one passenger, requested or accepted.
async fn fixture(app: &TestApp, accepted: bool) -> (String, String) {
    let (trip, booking) = (id(), id());
    app.db
        .submit(Command::PublishTrip(PublishTrip {
            trip_id: trip.clone(),
            driver_id: "u-driver".into(),
            org_id: Some("org-a".into()),
            title: "Matrix trip".into(),
            seats: 3,
            price_per_seat_cents: 4500,
            currency: zar(),
            departure_time: t(86_400),
        }))
        .await
        .unwrap();
    app.db
        .submit(Command::RequestBooking(RequestBooking {
            booking_id: booking.clone(),
            trip_id: trip.clone(),
            user_id: "u-rider".into(),
            passengers: 1,
        }))
        .await
        .unwrap();
    if accepted {
        app.db.accept(&booking, "u-driver").await.unwrap();
    }
    (trip, booking)
}

const PERSONAS: [&str; 10] = [
    "no token",
    "bad token",
    "expired",
    "rider",
    "other rider",
    "driver",
    "other driver",
    "admin same org",
    "admin other org",
    "super_admin",
];

fn persona_token(p: &str) -> Option<String> {
    let now = chrono::Utc::now().timestamp();
    match p {
        "no token" => None,
        "bad token" => Some("not.a.jwt".into()),
        "expired" => Some(
            mint(
                JWT_SECRET,
                "u-rider",
                Role::User,
                Some("org-a"),
                now - 7200,
                3600,
            )
            .unwrap(),
        ),
        "rider" => Some(token("u-rider", Role::User, Some("org-a"))),
        "other rider" => Some(token("u-other", Role::User, Some("org-a"))),
        "driver" => Some(token("u-driver", Role::User, Some("org-a"))),
        "other driver" => Some(token("u-driver-2", Role::User, Some("org-a"))),
        "admin same org" => Some(token("u-admin-a", Role::Admin, Some("org-a"))),
        "admin other org" => Some(token("u-admin-b", Role::Admin, Some("org-b"))),
        _ => Some(token("u-super", Role::SuperAdmin, None)),
    }
}

/// docs/ROUTE_AUTHZ_MATRIX.md, as data: the route, whether its fixture's
/// booking is accepted, and the status for each persona (in PERSONAS order).
fn matrix() -> Vec<(&'static str, bool, [u16; 10])> {
    const A: u16 = 401;
    vec![
        (
            "POST /api/trips",
            false,
            [A, A, A, 201, 201, 201, 201, 403, 403, 403],
        ),
        (
            "GET /api/trips/:trip",
            false,
            [A, A, A, 200, 200, 200, 200, 200, 403, 200],
        ),
        (
            "GET /api/trips/:trip/bookings",
            false,
            [A, A, A, 403, 403, 200, 403, 200, 403, 200],
        ),
        (
            "POST /api/trips/:trip/bookings",
            false,
            [A, A, A, 201, 201, 403, 201, 403, 403, 403],
        ),
        (
            "POST /api/bookings/:booking/accept",
            false,
            [A, A, A, 403, 403, 200, 403, 403, 403, 403],
        ),
        (
            "POST /api/bookings/:booking/reject",
            false,
            [A, A, A, 403, 403, 200, 403, 403, 403, 403],
        ),
        (
            "POST /api/bookings/:booking/cancel",
            false,
            [A, A, A, 200, 403, 200, 403, 403, 403, 403],
        ),
        (
            "GET /api/bookings/:booking",
            false,
            [A, A, A, 200, 403, 200, 403, 200, 403, 200],
        ),
        (
            "GET /api/bookings/:booking/events",
            false,
            [A, A, A, 200, 403, 200, 403, 200, 403, 200],
        ),
        (
            "POST /api/payments/intent",
            true,
            [A, A, A, 200, 403, 403, 403, 403, 403, 403],
        ),
        (
            "GET /api/monitoring/metrics",
            false,
            [A, A, A, 403, 403, 403, 403, 200, 200, 200],
        ),
        (
            "GET /api/monitoring/security",
            false,
            [A, A, A, 403, 403, 403, 403, 200, 200, 200],
        ),
        (
            "GET /api/monitoring/sla",
            false,
            [A, A, A, 200, 200, 200, 200, 200, 200, 200],
        ),
        // Admins of another org get 200 too, with only their org's messages
        // (dispatch::the_outbox_route_is_for_admins).
        (
            "GET /api/outbox",
            false,
            [A, A, A, 403, 403, 403, 403, 200, 200, 200],
        ),
    ]
}

pub async fn route_authz_matrix(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut failures = Vec::new();
    for (route, accepted, expected) in matrix() {
        for (persona, want) in PERSONAS.iter().zip(expected) {
            let (trip, booking) = fixture(&app, accepted).await;
            let (method, path) = route.split_once(' ').unwrap();
            let path = path.replace(":trip", &trip).replace(":booking", &booking);
            let body = match (method, path.as_str()) {
                ("POST", "/api/trips") => {
                    Some(json!({"title": "T", "seats": 2, "pricePerSeatCents": 100,
                    "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"}))
                }
                ("POST", p) if p.ends_with("/bookings") => Some(json!({"passengers": 1})),
                ("POST", "/api/payments/intent") => {
                    Some(json!({"bookingId": booking, "amountCents": 4500, "currency": "zar"}))
                }
                _ => None,
            };
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let token = persona_token(persona);
            let (status, answer, _) = app.call(method, &path, token.as_deref(), body).await;
            if status.as_u16() != want {
                failures.push(format!(
                    "{route} as {persona}: {status} (want {want}) {answer}"
                ));
            } else if want >= 400 {
                let code = if want == 401 {
                    "AUTHENTICATION_ERROR"
                } else {
                    "AUTHORIZATION_ERROR"
                };
                if answer["error"]["code"] != code {
                    failures.push(format!(
                        "{route} as {persona}: code {}",
                        answer["error"]["code"]
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Refused tokens of other kinds: alg none, refresh type, wrong secret.
    let forged = mint(
        "another-secret-0123456789abcdef0123456789",
        "u-super",
        Role::SuperAdmin,
        None,
        chrono::Utc::now().timestamp(),
        60,
    )
    .unwrap();
    let (status, body, _) = app
        .call(Method::GET, "/api/monitoring/sla", Some(&forged), None)
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].clone()),
        (401, json!("AUTHENTICATION_ERROR"))
    );
}

pub async fn journey_to_paid_and_refund_required_on_cancel(backend: Backend) {
    let app = spawn_app(backend).await;
    let driver = token("d-1", Role::User, Some("org-a"));
    let rider = token("r-1", Role::User, Some("org-a"));
    let (status, trip, headers) = app
        .call(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(json!({
        "title": "Cape Town to Stellenbosch", "seats": 3, "pricePerSeatCents": 4500,
        "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{trip}");
    assert!(headers.contains_key("x-ledger-seq"));
    assert_eq!(
        (trip["seatsTotal"].clone(), trip["seatsAccepted"].clone()),
        (json!(3), json!(0))
    );
    let trip_id = trip["id"].as_str().unwrap().to_string();
    let (status, booking, _) = app
        .call(
            Method::POST,
            &format!("/api/trips/{trip_id}/bookings"),
            Some(&rider),
            Some(json!({"passengers": 2})),
        )
        .await;
    assert_eq!(
        (status, booking["status"].clone()),
        (StatusCode::CREATED, json!("requested"))
    );
    let booking_id = booking["id"].as_str().unwrap().to_string();
    let (status, accepted, _) = app
        .call(
            Method::POST,
            &format!("/api/bookings/{booking_id}/accept"),
            Some(&driver),
            None,
        )
        .await;
    assert_eq!(
        (status, accepted["status"].clone()),
        (StatusCode::OK, json!("accepted"))
    );
    let (status, again, _) = app
        .call(
            Method::POST,
            &format!("/api/bookings/{booking_id}/accept"),
            Some(&driver),
            None,
        )
        .await;
    assert_eq!(
        (status, again["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("CONFLICT"))
    );
    let (_, trip_now, _) = app
        .call(
            Method::GET,
            &format!("/api/trips/{trip_id}"),
            Some(&rider),
            None,
        )
        .await;
    assert_eq!(trip_now["seatsAccepted"], 2);

    let intent_body = json!({"bookingId": booking_id, "amountCents": 9000, "currency": "zar"});
    let (status, intent, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(intent_body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{intent}");
    let pi = intent["paymentIntentId"].as_str().unwrap().to_string();
    assert!(pi.starts_with("pi_offline_"));
    assert!(intent["clientSecret"].as_str().unwrap().starts_with(&pi));
    // A pending intent is returned again.
    let (_, again, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(intent_body),
        )
        .await;
    assert_eq!(
        (again["paymentIntentId"].clone(), again["replay"].clone()),
        (json!(pi), json!(true))
    );

    let succeeded = event(
        "evt_journey",
        "payment_intent.succeeded",
        10,
        json!({
        "id": pi, "object": "payment_intent", "amount": 9000, "currency": "zar",
        "metadata": {"bookingId": booking_id, "tripId": trip_id, "userId": "r-1"}}),
    );
    assert_eq!(
        app.webhook(&succeeded).await,
        (StatusCode::OK, json!({"received": true}))
    );
    let (status, read, headers) = app
        .call(
            Method::GET,
            &format!("/api/bookings/{booking_id}"),
            Some(&rider),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["paymentStatus"], "paid");
    assert_eq!(read["paymentIntentId"], json!(pi));
    assert_eq!(read["amountCents"], 9000);
    for field in [
        "id",
        "tripId",
        "userId",
        "orgId",
        "passengers",
        "status",
        "paymentStatus",
        "paymentIntentId",
        "amountCents",
        "currency",
        "amountRefundedCents",
        "version",
        "lastEventSeq",
        "updatedAt",
    ] {
        assert!(read.get(field).is_some(), "missing {field}");
    }
    let seq: i64 = headers["x-ledger-seq"].to_str().unwrap().parse().unwrap();
    assert!(seq >= read["lastEventSeq"].as_i64().unwrap());
    let (_, timeline, _) = app
        .call(
            Method::GET,
            &format!("/api/bookings/{booking_id}/events"),
            Some(&driver),
            None,
        )
        .await;
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{timeline}");
    assert!(
        events.iter().all(|e| e["outcome"] == "applied"),
        "{timeline}"
    );
    assert!(!timeline.to_string().contains("payload"));
    // Cancelling the paid booking asks for a refund, once.
    let (status, _, _) = app
        .call(
            Method::POST,
            &format!("/api/bookings/{booking_id}/cancel"),
            Some(&rider),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys = app.db.store.outbox_keys(&booking_id).await.unwrap();
    let refund_required: Vec<_> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("refund_required:{booking_id}:")))
        .collect();
    assert_eq!(refund_required.len(), 1, "{keys:?}");
    for kind in ["booking_accepted", "payment_succeeded", "booking_cancelled"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{kind}:{booking_id}:"))),
            "{kind} missing from {keys:?}"
        );
    }
}

pub async fn concurrent_accepts_on_the_last_seat(backend: Backend) {
    let app = spawn_app(backend).await;
    let trip = id();
    app.db
        .submit(Command::PublishTrip(PublishTrip {
            trip_id: trip.clone(),
            driver_id: "u-driver".into(),
            org_id: Some("org-a".into()),
            title: "Last seat".into(),
            seats: 2,
            price_per_seat_cents: 100,
            currency: zar(),
            departure_time: t(1000),
        }))
        .await
        .unwrap();
    let first = id();
    app.db
        .submit(Command::RequestBooking(RequestBooking {
            booking_id: first.clone(),
            trip_id: trip.clone(),
            user_id: "u-0".into(),
            passengers: 1,
        }))
        .await
        .unwrap();
    app.db.accept(&first, "u-driver").await.unwrap();
    let mut bookings = Vec::new();
    for i in 1..=8 {
        let b = id();
        app.db
            .submit(Command::RequestBooking(RequestBooking {
                booking_id: b.clone(),
                trip_id: trip.clone(),
                user_id: format!("u-{i}"),
                passengers: 1,
            }))
            .await
            .unwrap();
        bookings.push(b);
    }
    let driver = token("u-driver", Role::User, Some("org-a"));
    let paths: Vec<String> = bookings
        .iter()
        .map(|b| format!("/api/bookings/{b}/accept"))
        .collect();
    let calls: Vec<_> = paths
        .iter()
        .map(|p| app.call(Method::POST, p, Some(&driver), None))
        .collect();
    let results = futures::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    let conflicts = results
        .iter()
        .filter(|(s, b, _)| *s == StatusCode::CONFLICT && b["error"]["code"] == "CONFLICT")
        .count();
    assert_eq!((ok, conflicts), (1, 7), "{results:?}");
    let (_, t, _) = app
        .call(
            Method::GET,
            &format!("/api/trips/{trip}"),
            Some(&driver),
            None,
        )
        .await;
    assert_eq!(
        (t["seatsAccepted"].clone(), t["seatsTotal"].clone()),
        (json!(2), json!(2))
    );
}

pub async fn idempotency_keys_replay_conflict_and_never_double(backend: Backend) {
    let app = spawn_app(backend).await;
    let driver = token("d-idem", Role::User, Some("org-a"));
    let body = json!({"title": "Idempotent", "seats": 2, "pricePerSeatCents": 100, "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"});
    let send = |b: Value, k: &'static [(&'static str, &'static str)], who: String| {
        let app = &app;
        async move {
            let mut req = app
                .client
                .post(format!("{}/api/trips", app.base))
                .header("authorization", format!("Bearer {who}"))
                .json(&b);
            for (n, v) in k {
                req = req.header(*n, *v);
            }
            let res = req.send().await.unwrap();
            let status = res.status();
            let replayed = res
                .headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap().to_string());
            (status, replayed, res.bytes().await.unwrap())
        }
    };
    static KEY: [(&str, &str); 1] = [("idempotency-key", "trip-key-1")];
    let (s1, r1, b1) = send(body.clone(), &KEY, driver.clone()).await;
    assert_eq!((s1, r1), (StatusCode::CREATED, None));
    let (s2, r2, b2) = send(body.clone(), &KEY, driver.clone()).await;
    assert_eq!((s2, r2.as_deref()), (StatusCode::CREATED, Some("true")));
    assert_eq!(b1, b2, "the first response again, byte for byte");
    let mut other = body.clone();
    other["seats"] = json!(3);
    let (s3, _, b3) = send(other, &KEY, driver.clone()).await;
    assert_eq!(s3, StatusCode::CONFLICT);
    assert_eq!(
        serde_json::from_slice::<Value>(&b3).unwrap()["error"]["code"],
        "IDEMPOTENCY_CONFLICT"
    );
    // The key is scoped to the caller: another driver's request is its own.
    let (s4, r4, b4) = send(
        body.clone(),
        &KEY,
        token("d-other", Role::User, Some("org-a")),
    )
    .await;
    assert_eq!((s4, r4), (StatusCode::CREATED, None));
    assert_ne!(b1, b4);
    // Ten concurrent requests with a fresh key: one effect.
    static KEY2: [(&str, &str); 1] = [("idempotency-key", "trip-key-concurrent")];
    let before = app
        .db
        .store
        .stats()
        .await
        .unwrap()
        .events
        .iter()
        .filter(|(k, _, _)| k == "TripPublished")
        .map(|(_, _, n)| n)
        .sum::<i64>();
    let results =
        futures::future::join_all((0..10).map(|_| send(body.clone(), &KEY2, driver.clone()))).await;
    let after = app
        .db
        .store
        .stats()
        .await
        .unwrap()
        .events
        .iter()
        .filter(|(k, _, _)| k == "TripPublished")
        .map(|(_, _, n)| n)
        .sum::<i64>();
    assert_eq!(after - before, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|(s, _, _)| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT));
    let (_, security, _) = app
        .call(
            Method::GET,
            "/api/monitoring/security",
            Some(&token("a", Role::SuperAdmin, None)),
            None,
        )
        .await;
    assert!(security["idempotencyConflicts"].as_u64().unwrap() >= 1);
    let (_, metrics, _) = app
        .call(
            Method::GET,
            "/api/monitoring/metrics",
            Some(&token("a", Role::SuperAdmin, None)),
            None,
        )
        .await;
    assert!(metrics["idempotentReplays"].as_u64().unwrap() >= 1);
}

pub async fn amount_tampering_and_bad_input_are_refused_and_store_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (trip, booking) = fixture(&app, true).await;
    let rider = token("u-rider", Role::User, Some("org-a"));
    let driver = token("u-driver", Role::User, Some("org-a"));
    let head = app.db.store.head_seq().await.unwrap();
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            "/api/payments/intent".into(),
            json!({"bookingId": booking, "amountCents": 1, "currency": "zar"}),
            "amountCents",
        ),
        (
            "POST",
            "/api/payments/intent".into(),
            json!({"bookingId": booking, "amountCents": 4500, "currency": "usd"}),
            "currency",
        ),
        (
            "POST",
            "/api/payments/intent".into(),
            json!({"bookingId": booking, "amountCents": -4500, "currency": "zar"}),
            "amountCents",
        ),
        (
            "POST",
            "/api/payments/intent".into(),
            json!({"bookingId": 5, "amountCents": 4500, "currency": "zar"}),
            "bookingId",
        ),
        (
            "POST",
            "/api/payments/intent".into(),
            json!({"bookingId": "abc", "amountCents": 4500, "currency": "zar"}),
            "bookingId",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": 0, "pricePerSeatCents": 1, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z"}),
            "seats",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": -2, "pricePerSeatCents": 1, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z"}),
            "seats",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": "two", "pricePerSeatCents": 1, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z"}),
            "seats",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": 2, "pricePerSeatCents": 0, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z"}),
            "pricePerSeatCents",
        ),
        (
            "POST",
            "/api/trips".into(),
            // Above the documented ceiling (MAX_PRICE_PER_SEAT_CENTS).
            json!({"title": "x", "seats": 2, "pricePerSeatCents": 1_000_001, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z"}),
            "pricePerSeatCents",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": 2, "pricePerSeatCents": i64::MAX, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z"}),
            "pricePerSeatCents",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x".repeat(201), "seats": 2, "pricePerSeatCents": 1, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z"}),
            "title",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": 2, "pricePerSeatCents": 1, "currency": "zar", "departureTime": "tomorrow"}),
            "departureTime",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": 2, "pricePerSeatCents": 1, "currency": "zar", "departureTime": "2030-01-01T00:00:00Z", "admin": true}),
            "admin",
        ),
        (
            "POST",
            "/api/trips".into(),
            json!({"title": "x", "seats": 2, "pricePerSeatCents": 1, "currency": "zarr", "departureTime": "2030-01-01T00:00:00Z"}),
            "currency",
        ),
        (
            "POST",
            format!("/api/trips/{trip}/bookings"),
            json!({"passengers": 0}),
            "passengers",
        ),
        (
            "POST",
            format!("/api/trips/{trip}/bookings"),
            json!({"passengers": 99}),
            "passengers",
        ),
        (
            "POST",
            "/api/trips/abc/bookings".into(),
            json!({"passengers": 1}),
            "tripId",
        ),
        ("GET", "/api/bookings/12ab".into(), Value::Null, "bookingId"),
    ];
    for (method, path, body, field) in cases {
        let who = if path == "/api/trips" {
            &driver
        } else {
            &rider
        };
        let body = (!body.is_null()).then_some(body);
        let (status, answer, _) = app
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
                Some(who),
                body.clone(),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body:?}: {answer}"
        );
        assert_eq!(answer["error"]["code"], "VALIDATION_ERROR");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{path}: message {message:?} does not name {field}"
        );
    }
    // Not JSON at all.
    let res = app
        .client
        .post(format!("{}/api/trips", app.base))
        .header("authorization", format!("Bearer {driver}"))
        .body("title=x&seats=2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.db.store.head_seq().await.unwrap(),
        head,
        "nothing stored"
    );
    let b = app.db.store.booking(&booking).await.unwrap().unwrap();
    assert_eq!(b.payment_status, PaymentStatus::Unpaid);
}

pub async fn monitoring_reports_what_happened(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, booking) = fixture(&app, true).await;
    let rider = token("u-rider", Role::User, Some("org-a"));
    let _ = app
        .call(
            Method::GET,
            &format!("/api/bookings/{booking}"),
            Some("garbage"),
            None,
        )
        .await;
    let _ = app
        .call(
            Method::GET,
            &format!("/api/bookings/{booking}"),
            Some(&token("x", Role::User, Some("org-a"))),
            None,
        )
        .await;
    let _ = app.post_raw(b"{}".to_vec(), Some("t=1,v1=00".into())).await;
    let _ = app
        .webhook(&event(
            "evt_unbound_mon",
            "payment_intent.succeeded",
            1,
            intent("pi_nobody", 10),
        ))
        .await;
    let _ = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(json!({"bookingId": booking, "amountCents": 1, "currency": "zar"})),
        )
        .await;
    let admin = token("admin", Role::Admin, Some("org-a"));
    let (status, security, _) = app
        .call(Method::GET, "/api/monitoring/security", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(security["signatureFailures"], 1);
    assert_eq!(security["authenticationFailures"], 1);
    assert_eq!(security["authorizationFailures"], 1);
    assert_eq!(security["unboundEvents"], 1);
    assert_eq!(security["amountTampering"], 1);
    let (_, metrics, _) = app
        .call(Method::GET, "/api/monitoring/metrics", Some(&admin), None)
        .await;
    let kinds: Vec<&str> = metrics["eventsByKindSource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "TripPublished",
        "BookingRequested",
        "BookingAccepted",
        "StripeEventReceived",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(
        metrics["webhookOutcomes"]["ignored.unknown_payment_intent"],
        1
    );
    let (_, sla, _) = app
        .call(Method::GET, "/api/monitoring/sla", Some(&rider), None)
        .await;
    assert!(sla["requests"].as_u64().unwrap() >= 6);
    assert!(sla["latencyMs"]["p99"].as_f64().unwrap() >= sla["latencyMs"]["p50"].as_f64().unwrap());
}

/// One request the fake Stripe received: "METHOD path", the Authorization
/// header, the Idempotency-Key, the decoded form.
type SeenRequest = (String, String, String, Vec<(String, String)>);

/// What the fake Stripe received, and how it should answer.
#[derive(Default)]
struct FakeStripe {
    requests: Mutex<Vec<SeenRequest>>,
    /// Answer the next creations with this status (then behave).
    fail_next: Mutex<Vec<u16>>,
    /// Creations to create but never answer (the caller times out).
    hang_next: Mutex<u32>,
    /// Idempotency key → intent id, as Stripe keeps them.
    by_key: Mutex<std::collections::HashMap<String, String>>,
}

async fn fake_create(
    State(fake): State<Arc<FakeStripe>>,
    headers: HeaderMap,
    body: String,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let form: Vec<(String, String)> = url_decode(&body);
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    fake.requests.lock().unwrap().push((
        "POST /v1/payment_intents".into(),
        auth,
        key.clone(),
        form,
    ));
    let id = {
        let mut by_key = fake.by_key.lock().unwrap();
        let n = by_key.len() + 1;
        by_key
            .entry(key)
            .or_insert_with(|| format!("pi_fake_{n}"))
            .clone()
    };
    let hang = {
        let mut h = fake.hang_next.lock().unwrap();
        let hang = *h > 0;
        *h = h.saturating_sub(1);
        hang
    };
    if hang {
        // Created, but the answer never comes: the caller's timeout fires.
        std::future::pending::<()>().await;
    }
    if let Some(status) = fake.fail_next.lock().unwrap().pop() {
        let code = axum::http::StatusCode::from_u16(status).unwrap();
        return (
            code,
            axum::Json(
                json!({"error": {"type": "card_error", "message": "Your card was declined."}}),
            ),
        );
    }
    (
        axum::http::StatusCode::OK,
        axum::Json(
            json!({"id": id, "object": "payment_intent", "client_secret": format!("{id}_secret_fake")}),
        ),
    )
}

async fn fake_retrieve(
    State(fake): State<Arc<FakeStripe>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> axum::Json<Value> {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    fake.requests.lock().unwrap().push((
        format!("GET /v1/payment_intents/{id}"),
        auth,
        String::new(),
        vec![],
    ));
    axum::Json(
        json!({"id": id, "object": "payment_intent", "client_secret": format!("{id}_secret_fake")}),
    )
}

fn url_decode(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                let bytes = s.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' && i + 2 < bytes.len() {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (dec(k), dec(v))
        })
        .collect()
}

async fn start_fake_stripe() -> (String, Arc<FakeStripe>) {
    let fake = Arc::new(FakeStripe::default());
    let app = axum::Router::new()
        .route("/v1/payment_intents", post(fake_create))
        .route("/v1/payment_intents/{id}", get(fake_retrieve))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, fake)
}

pub async fn stripe_gateway_speaks_stripe_and_recovers(backend: Backend) {
    let (stripe_base, fake) = start_fake_stripe().await;
    let app = spawn_app_with(
        backend,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_fake_key_123"),
            ("STRIPE_API_BASE", &stripe_base),
        ],
    )
    .await;
    let (trip, booking) = fixture(&app, true).await;
    let rider = token("u-rider", Role::User, Some("org-a"));
    let body = json!({"bookingId": booking, "amountCents": 4500, "currency": "zar"});

    // Stripe refuses (a 402): 502, nothing bound.
    fake.fail_next.lock().unwrap().push(402);
    let (status, answer, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::BAD_GATEWAY, json!("PAYMENT_GATEWAY_ERROR"))
    );
    // Stripe created the intent but the answer was lost (a 500): 503…
    fake.fail_next.lock().unwrap().push(500);
    let (status, answer, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("PAYMENT_UNAVAILABLE")
        )
    );
    assert_eq!(
        app.db
            .store
            .booking(&booking)
            .await
            .unwrap()
            .unwrap()
            .payment_intent_id,
        None
    );
    // …and the next call gets the same intent (same Stripe idempotency key) and binds it.
    let (status, answer, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["paymentIntentId"], "pi_fake_1");
    assert_eq!(answer["clientSecret"], "pi_fake_1_secret_fake");
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    for (what, auth, key, form) in &requests {
        assert_eq!(what, "POST /v1/payment_intents");
        assert_eq!(auth, "Bearer sk_test_fake_key_123");
        assert_eq!(key, &format!("klubz-intent-{booking}-1"));
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(field("amount").as_deref(), Some("4500"));
        assert_eq!(field("currency").as_deref(), Some("zar"));
        assert_eq!(field("metadata[bookingId]"), Some(booking.clone()));
        assert_eq!(field("metadata[tripId]"), Some(trip.clone()));
        assert_eq!(field("metadata[userId]").as_deref(), Some("u-rider"));
    }
    // A pending intent is returned again, its secret fetched from Stripe.
    let (status, again, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(body),
        )
        .await;
    assert_eq!(
        (
            status,
            again["paymentIntentId"].clone(),
            again["replay"].clone()
        ),
        (StatusCode::OK, json!("pi_fake_1"), json!(true))
    );
    let last = fake.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        (
            "GET /v1/payment_intents/pi_fake_1",
            "Bearer sk_test_fake_key_123"
        )
    );
    assert_eq!(
        app.db
            .store
            .booking(&booking)
            .await
            .unwrap()
            .unwrap()
            .payment_status,
        PaymentStatus::Pending
    );
}

/// A real timeout: Stripe creates the intent but never answers. The call
/// fails with 503 and binds nothing; the next call gets the same intent
/// (same Stripe idempotency key) and binds it.
pub async fn stripe_timeout_is_recovered_by_the_next_call(backend: Backend) {
    let (stripe_base, fake) = start_fake_stripe().await;
    let gateway = klubz_ledger::stripe::gateway::StripeGateway::with_timeout(
        &stripe_base,
        "sk_test_fake_key_123",
        std::time::Duration::from_millis(300),
    );
    let app = serve_with(TestDb::new(backend).await, &[], Some(Arc::new(gateway))).await;
    let (_, booking) = fixture(&app, true).await;
    let rider = token("u-rider", Role::User, Some("org-a"));
    let body = json!({"bookingId": booking, "amountCents": 4500, "currency": "zar"});
    *fake.hang_next.lock().unwrap() = 1;
    let (status, answer, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("PAYMENT_UNAVAILABLE")
        ),
        "{answer}"
    );
    assert_eq!(
        app.db
            .store
            .booking(&booking)
            .await
            .unwrap()
            .unwrap()
            .payment_intent_id,
        None
    );
    let (status, answer, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(body),
        )
        .await;
    assert_eq!(
        (status, answer["paymentIntentId"].clone()),
        (StatusCode::OK, json!("pi_fake_1")),
        "{answer}"
    );
    let keys: Vec<String> = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.2.clone())
        .collect();
    assert_eq!(keys, vec![format!("klubz-intent-{booking}-1"); 2]);
    let b = app.db.store.booking(&booking).await.unwrap().unwrap();
    assert_eq!(
        (b.payment_intent_id.as_deref(), b.payment_status),
        (Some("pi_fake_1"), PaymentStatus::Pending)
    );
}

/// Scrapes the Prometheus exposition; every sample line parsed into
/// `name{labels}` → value (a line that does not parse fails the test).
async fn scrape(app: &TestApp, admin: &str) -> std::collections::BTreeMap<String, f64> {
    let res = reqwest::Client::new()
        .get(format!(
            "{}/api/monitoring/metrics?format=prometheus",
            app.base
        ))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let kind = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("klubz_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

pub async fn prometheus_metrics_parse_and_move_with_their_cause(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, booking) = fixture(&app, true).await;
    let admin = token("admin", Role::Admin, Some("org-a"));
    let before = scrape(&app, &admin).await;
    let forged = r#"klubz_security_total{signal="signature_failures"}"#;
    let (status, _) = app.post_raw(b"{}".to_vec(), Some("t=1,v1=00".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let after = scrape(&app, &admin).await;
    assert_eq!(
        after.get(forged).copied().unwrap_or(0.0) - before.get(forged).copied().unwrap_or(0.0),
        1.0,
        "one forged webhook, one more signature failure"
    );
    // Counters and gauges of the rest of the engine are there.
    for name in [
        "klubz_http_requests_total",
        "klubz_outbox_depth",
        "klubz_outbox_oldest_pending_age_seconds",
        "klubz_side_effects_paused",
        "klubz_writer_queue_depth",
        "klubz_writer_batch_size_count",
        "klubz_writer_commit_seconds_count",
        "klubz_http_request_duration_seconds_count",
    ] {
        assert!(after.contains_key(name), "{name} missing: {after:?}");
    }
    assert!(
        after["klubz_writer_batch_size_count"] >= 1.0,
        "the fixture's writes were batches"
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("klubz_events{") && k.contains("BookingRequested")),
        "{after:?}"
    );
    let _ = booking;
    // JSON stays the default.
    let (status, json_body, _) = app
        .call(Method::GET, "/api/monitoring/metrics", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(json_body["requests"].is_u64(), "{json_body}");
}

/// The bearer scheme is case-insensitive; two `Idempotency-Key` headers
/// are refused (400) and create nothing.
pub async fn bearer_scheme_any_case_and_one_idempotency_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let driver = token("u-driver", Role::User, Some("org-a"));
    let trip = json!({"title": "t", "seats": 2, "pricePerSeatCents": 1000,
        "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"});
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let (status, body, _) = app
            .call_with(
                Method::GET,
                "/api/monitoring/sla",
                None,
                None,
                &[("authorization", format!("{scheme} {driver}").as_str())],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
    }
    let (status, body, _) = app
        .call_with(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(trip),
            &[("idempotency-key", "k-1"), ("idempotency-key", "k-2")],
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("VALIDATION_ERROR")),
        "{body}"
    );
    assert_eq!(app.db.store.head_seq().await.unwrap(), 0, "nothing stored");
}

pub async fn production_without_stripe_key_refuses_intents(backend: Backend) {
    let app = spawn_app_with(backend, &[("ENVIRONMENT", "production")]).await;
    let (_, booking) = fixture(&app, true).await;
    let rider = token("u-rider", Role::User, Some("org-a"));
    let (status, answer, _) = app
        .call(
            Method::POST,
            "/api/payments/intent",
            Some(&rider),
            Some(json!({"bookingId": booking, "amountCents": 4500, "currency": "zar"})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("PAYMENT_UNAVAILABLE")
        )
    );
    // Production without NOTIFY_URL delivers no side effect: up, degraded.
    let (status, health, _) = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reasons"][0]
            .as_str()
            .unwrap()
            .contains("NOTIFY_URL"),
        "{health}"
    );
}

on_both_backends!(api:
    route_authz_matrix,
    journey_to_paid_and_refund_required_on_cancel,
    concurrent_accepts_on_the_last_seat,
    idempotency_keys_replay_conflict_and_never_double,
    amount_tampering_and_bad_input_are_refused_and_store_nothing,
    monitoring_reports_what_happened,
    stripe_gateway_speaks_stripe_and_recovers,
    stripe_timeout_is_recovered_by_the_next_call,
    production_without_stripe_key_refuses_intents,
    prometheus_metrics_parse_and_move_with_their_cause,
    bearer_scheme_any_case_and_one_idempotency_key,
);
