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
    // The first request, refused (409), cannot record its answer over the
    // key now held by the retry.
    keys.idempotency_finish(scope, key, &first, 409, "{}")
        .await
        .unwrap();
    assert!(matches!(
        keys.idempotency_begin(scope, key, fp, hour).await.unwrap(),
        IdempotencyBegin::Committed { .. }
    ));
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

/// Writes `bytes` on a fresh connection and reads until the server closes
/// it or a whole response (by `content-length`) arrived; the test's own
/// bound is generous and only stops a broken server from hanging it.
async fn exchange(app: &TestApp, bytes: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let addr = app.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    read_response(&mut conn).await
}

async fn read_response(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&answer).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if length.is_some_and(|n| body.len() >= n) {
                    return text;
                }
            }
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the server neither answered nor closed the connection")
}

fn envelope_of(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("no JSON body: {answer}"))
}

/// Answers the framework makes itself (a method a route lacks, a path it
/// cannot decode, a URI or headers beyond the limits) carry the error
/// envelope and `x-request-id`.
pub async fn framework_answers_carry_the_envelope(backend: Backend) {
    let app = spawn_app(backend).await;
    let host = app.base.trim_start_matches("http://").to_string();
    let long_uri = format!("/api/trips/1?{}", "a".repeat(9 * 1024));
    let big_header = "x".repeat(40 * 1024);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("DELETE /api/trips HTTP/1.1\r\nhost: {host}\r\n\r\n"),
            "405",
            "METHOD_NOT_ALLOWED",
        ),
        (
            format!("GET /api/trips/%FF%FE HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {}\r\n\r\n",
                token("u1", Role::User, None)),
            "400",
            "VALIDATION_ERROR",
        ),
        (
            format!("GET {long_uri} HTTP/1.1\r\nhost: {host}\r\n\r\n"),
            "414",
            "URI_TOO_LONG",
        ),
        (
            format!("GET /health HTTP/1.1\r\nhost: {host}\r\nx-big: {big_header}\r\n\r\n"),
            "431",
            "HEADERS_TOO_LARGE",
        ),
    ];
    for (request, status, code) in &cases {
        let answer = exchange(&app, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{code}: {answer}"
        );
        assert!(answer.contains("x-request-id: "), "{answer}");
        let body = envelope_of(&answer);
        assert_eq!(body["error"]["code"], *code, "{answer}");
        assert!(body["error"]["requestId"]
            .as_str()
            .is_some_and(|r| !r.is_empty()));
    }
    // Requests hyper cannot parse at all never reach the router; its bare
    // answer is rewritten with the envelope too.
    let huge_header = "y".repeat(600 * 1024);
    for (request, status, code) in [
        (
            format!("GET /health HTTP/1.1\r\nhost: {host}\r\ncontent-length: abc\r\n\r\n"),
            "400",
            "VALIDATION_ERROR",
        ),
        ("GARBAGE\r\n\r\n".to_string(), "400", "VALIDATION_ERROR"),
        (
            format!("GET /health HTTP/1.1\r\nhost: {host}\r\nbad header\r\n\r\n"),
            "400",
            "VALIDATION_ERROR",
        ),
        (
            format!("GET /health HTTP/1.1\r\nhost: {host}\r\nx-huge: {huge_header}\r\n\r\n"),
            "431",
            "HEADERS_TOO_LARGE",
        ),
    ] {
        let answer = exchange(&app, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{code}: {answer}"
        );
        assert!(answer.contains("x-request-id: "), "{answer}");
        assert_eq!(envelope_of(&answer)["error"]["code"], code, "{answer}");
    }
    // 405 keeps its `allow` header.
    let answer = exchange(&app, cases[0].0.as_bytes()).await;
    assert!(answer.to_lowercase().contains("allow: "), "{answer}");
    let (s, _) = app.get("/health").await;
    assert_eq!(s, StatusCode::OK, "still serving");
}

/// `/health` on a new connection: with a 300 ms idle timeout a pooled
/// keep-alive connection may be closed by the server just as it is reused.
async fn health_fresh(app: &TestApp) -> (StatusCode, serde_json::Value) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let res = client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or_default())
}

/// Every wait has an end: a body that trickles gets 408, headers that
/// trickle and idle keep-alive connections are closed.
pub async fn slow_clients_are_timed_out(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(
        backend,
        &[
            ("BODY_READ_TIMEOUT_MS", "300"),
            ("HEADER_READ_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    let host = app.base.trim_start_matches("http://").to_string();
    let driver = token("u-slow", Role::User, None);
    // A body that never completes: 408 with the envelope.
    let partial = format!(
        "POST /api/trips HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {driver}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"title\""
    );
    let answer = exchange(&app, partial.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(envelope_of(&answer)["error"]["code"], "REQUEST_TIMEOUT");
    // Headers that never complete: the connection is closed.
    let answer = exchange(
        &app,
        format!("GET /health HTTP/1.1\r\nhost: {host}\r\n").as_bytes(),
    )
    .await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // An idle keep-alive connection is closed after the header timeout.
    let addr = app.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET /health HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let first = read_response(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let after = read_response(&mut conn).await;
    assert_eq!(after, "", "closed, with nothing more said");
    assert_eq!(app.db.store.head_seq().await.unwrap(), 0);
}

/// Waits, yielding (no sleep), until the server's own counters say so; the
/// bound only keeps a broken server from hanging the test.
async fn until(what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "never: {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// Floods are shed at once: bodies beyond the buffer budget and requests
/// beyond the in-flight cap get 503 `OVERLOADED`, a request without a body
/// reserves nothing, and what the holders held is released when they go.
pub async fn floods_are_shed_and_released(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(
        backend,
        &[
            ("MAX_IN_FLIGHT", "2"),
            ("MAX_BUFFERED_BODY_BYTES", "1048576"),
        ],
    )
    .await;
    let host = app.base.trim_start_matches("http://").to_string();
    let addr = host.clone();
    let driver = token("u-flood", Role::User, None);
    // Webhook bodies of 600 KB announced, never sent: the first holds most
    // of the 1 MiB budget (for as long as it stays), a second is refused.
    let held_body = |n: usize| {
        format!(
            "POST /api/payments/webhook HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
             stripe-signature: t=1,v1={}\r\ncontent-length: {n}\r\n\r\n{{",
            "0".repeat(64)
        )
    };
    let budget = app.state.body_budget.clone();
    let in_flight = app.state.in_flight.clone();
    let full_budget = budget.available_permits();
    let mut holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    holder
        .write_all(held_body(600_000).as_bytes())
        .await
        .unwrap();
    until("the holder reserved its body", || {
        budget.available_permits() < full_budget
    })
    .await;
    let answer = exchange(&app, held_body(600_000).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(envelope_of(&answer)["error"]["code"], "OVERLOADED");
    // A request without a body reserves nothing: it is answered on its
    // merits (here 404), not refused for the budget the holder took.
    let bodiless = format!(
        "POST /api/bookings/999/accept HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {driver}\r\n\r\n"
    );
    let answer = exchange(&app, bodiless.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // A second holder fills the cap of two: anything else is shed at once.
    until("only the holder in flight", || {
        in_flight.available_permits() == 1
    })
    .await;
    let mut second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    second
        .write_all(
            format!(
                "POST /api/trips HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {driver}\r\n\
                 content-type: application/json\r\ncontent-length: 10\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    until("both holders in flight", || {
        in_flight.available_permits() == 0
    })
    .await;
    let (s, shed) = health_fresh(&app).await;
    assert_eq!(
        (s, shed["error"]["code"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("OVERLOADED")),
        "{shed}"
    );
    // The holders go: their slots and their budget come back.
    drop(holder);
    drop(second);
    until("the slots came back", || in_flight.available_permits() == 2).await;
    until("the budget came back", || {
        budget.available_permits() == full_budget
    })
    .await;
    let (s, _) = health_fresh(&app).await;
    assert_eq!(s, StatusCode::OK);
    let body = br#"{"id":"evt_x","type":"x"}"#;
    let request = format!(
        "POST /api/payments/webhook HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         stripe-signature: t=1,v1={}\r\ncontent-length: {}\r\n\r\n{}",
        "0".repeat(64),
        body.len(),
        String::from_utf8_lossy(body)
    );
    let released = exchange(&app, request.as_bytes()).await;
    // Read whole, then refused for its signature: the budget is free.
    assert!(released.starts_with("HTTP/1.1 400"), "{released}");
    assert_eq!(
        envelope_of(&released)["error"]["code"],
        "WEBHOOK_SIGNATURE_INVALID"
    );
    assert_eq!(app.db.store.head_seq().await.unwrap(), 0);
}

/// A request that runs past `REQUEST_TIMEOUT_MS` (here: the database's
/// write lock is held by another process) is answered 503
/// `DEADLINE_EXCEEDED` and its retry with the same key has one effect.
pub async fn a_request_past_its_deadline_gets_503_and_retries_once(backend: Backend) {
    let app = spawn_app_with(backend, &[("REQUEST_TIMEOUT_MS", "300")]).await;
    let driver = token("u-deadline", Role::User, None);
    let body = json!({"title": "Late", "seats": 2, "pricePerSeatCents": 700,
        "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"});
    let key = [("idempotency-key", "deadline-1")];
    // Another process holds the write lock while the request runs.
    use sqlx::Connection;
    let (mut sqlite_lock, mut pg_lock) = (None, None);
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut c)
                .await
                .unwrap();
            sqlite_lock = Some(c);
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut c).await.unwrap();
            sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            pg_lock = Some(c);
        }
    }
    let answer = app
        .call_with(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(body.clone()),
            &key,
        )
        .await;
    if let Some(c) = sqlite_lock.as_mut() {
        sqlx::query("ROLLBACK").execute(c).await.unwrap();
    }
    if let Some(c) = pg_lock.as_mut() {
        sqlx::query("ROLLBACK").execute(c).await.unwrap();
    }
    assert_eq!(answer.0, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], "DEADLINE_EXCEEDED");
    // Either the write was queued before its deadline and commits once the
    // lock is gone (its retries meet the key held, 409, then the answer
    // from the log), or it never got as far as claiming the key (SQLite:
    // the claim itself waits for the lock) and the retry runs it: one trip
    // either way.
    let mut created = None;
    for _ in 0..5000 {
        let (s, b, h) = app
            .call_with(
                Method::POST,
                "/api/trips",
                Some(&driver),
                Some(body.clone()),
                &key,
            )
            .await;
        if s == StatusCode::CREATED {
            created = Some((b, h.get("idempotent-replayed").is_some()));
            break;
        }
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (StatusCode::CONFLICT, json!("IDEMPOTENCY_CONFLICT")),
            "{b}"
        );
    }
    let (created, replayed) = created.expect("the late commit never answered the retry");
    assert_eq!(count_kind(&app.db, "TripPublished").await, 1);
    if backend == Backend::Postgres {
        assert!(replayed, "the queued write committed first: {created}");
    }
    let id = created["id"].as_str().unwrap();
    let (s, trip, _) = app
        .call(
            Method::GET,
            &format!("/api/trips/{id}"),
            Some(&driver),
            None,
        )
        .await;
    assert_eq!((s, trip["title"].clone()), (StatusCode::OK, json!("Late")));
}

/// A corpus of hostile input: each gets its contract error (or, where the
/// input is merely odd but valid, is stored verbatim), changes nothing else,
/// and the server keeps serving.
pub async fn hostile_input_gets_contract_errors_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let host = app.base.trim_start_matches("http://").to_string();
    let driver = token("u-hostile", Role::User, None);
    let head = app.db.store.head_seq().await.unwrap();

    // Webhook signature headers.
    let body = serde_json::to_vec(&event(
        "evt_h",
        "payment_intent.processing",
        1,
        intent("pi_h", 1),
    ))
    .unwrap();
    let many_short = format!("t=1,{}", vec!["v1=0"; 4000].join(","));
    let many_plausible = format!(
        "t={},{}",
        chrono::Utc::now().timestamp(),
        vec![format!("v1={}", "a".repeat(64)); 400].join(",")
    );
    let ten_thousand = format!("t=1,{}", vec!["v1=00"; 10_000].join(","));
    for (header, status, code) in [
        (
            many_short,
            StatusCode::BAD_REQUEST,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        (
            many_plausible,
            StatusCode::BAD_REQUEST,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        (
            ten_thousand,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
        ),
        (
            "t=,v1=".to_string(),
            StatusCode::BAD_REQUEST,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        (
            "v1".to_string(),
            StatusCode::BAD_REQUEST,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
    ] {
        let (s, answer) = app.post_raw(body.clone(), Some(header)).await;
        assert_eq!(
            (s, answer["error"]["code"].clone()),
            (status, json!(code)),
            "{answer}"
        );
    }

    // Signed bodies that are not storable events.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        r#"{{"id":"evt_deep","type":"x","data":{}1{}}}"#,
        r#"{"a":"#.repeat(5000),
        "}".repeat(5000)
    );
    let invalid_utf8 = b"{\"id\":\"evt_\xff\xfe\",\"type\":\"payment_intent.succeeded\"}".to_vec();
    for raw in [deep.into_bytes(), deep_object.into_bytes(), invalid_utf8] {
        let (s, answer) = app.post_raw(raw.clone(), Some(sign(&raw))).await;
        assert_eq!(
            (s, answer["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("VALIDATION_ERROR")),
            "{answer}"
        );
    }
    assert_eq!(
        app.db.store.head_seq().await.unwrap(),
        head,
        "nothing stored"
    );

    // API bodies: overflowing numbers, duplicate keys, nesting, bad UTF-8.
    let bad_bodies: [&[u8]; 7] = [
        br#"{"title":"a","seats":99999999999999999999,"pricePerSeatCents":1,"currency":"zar","departureTime":"2030-01-01T00:00:00Z"}"#,
        br#"{"title":"a","seats":2,"pricePerSeatCents":1e30,"currency":"zar","departureTime":"2030-01-01T00:00:00Z"}"#,
        br#"{"title":"a","title":"b","seats":2,"pricePerSeatCents":1,"currency":"zar","departureTime":"2030-01-01T00:00:00Z"}"#,
        br#"{"title":{"title":{"title":{"title":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}}},"seats":2}"#,
        b"{\"title\":\"\xff\xfe\",\"seats\":2,\"pricePerSeatCents\":1,\"currency\":\"zar\",\"departureTime\":\"2030-01-01T00:00:00Z\"}",
        br#"{"title":"a","seats":2,"pricePerSeatCents":1,"currency":"zar'; DROP TABLE events;--","departureTime":"2030-01-01T00:00:00Z"}"#,
        br#"{"title":"a","seats":-1,"pricePerSeatCents":1,"currency":"zar","departureTime":"2030-01-01T00:00:00Z"}"#,
    ];
    for raw in bad_bodies {
        let res = app
            .client
            .post(format!("{}/api/trips", app.base))
            .bearer_auth(&driver)
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        let status = res.status();
        let answer: serde_json::Value = res.json().await.unwrap_or_default();
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("VALIDATION_ERROR")),
            "{}: {answer}",
            String::from_utf8_lossy(raw)
        );
    }

    // Ids with SQL metacharacters, traversal and NUL: 400, or no route.
    let token = token("u-hostile", Role::User, None);
    for (path, status, code) in [
        ("/api/trips/1'%20OR%20'1'='1", "400", "VALIDATION_ERROR"),
        (
            "/api/trips/1;DROP%20TABLE%20events",
            "400",
            "VALIDATION_ERROR",
        ),
        (
            "/api/trips/..%2F..%2Fetc%2Fpasswd",
            "400",
            "VALIDATION_ERROR",
        ),
        ("/api/bookings/%00", "400", "VALIDATION_ERROR"),
        ("/api/bookings/../../etc/passwd", "404", "NOT_FOUND"),
        (
            "/api/bookings/1/events/../../../../etc/passwd",
            "404",
            "NOT_FOUND",
        ),
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\r\n");
        let answer = exchange(&app, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {answer}"
        );
        assert_eq!(
            envelope_of(&answer)["error"]["code"],
            code,
            "{path}: {answer}"
        );
    }
    // An Idempotency-Key with SQL metacharacters is only a key.
    let sql_key = [("idempotency-key", "k';DROP-TABLE-idempotency_keys;--")];
    let trip = json!({"title": "Robert'); DROP TABLE trips;--", "seats": 2,
        "pricePerSeatCents": 700, "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"});
    let (s, first, _) = app
        .call_with(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(trip.clone()),
            &sql_key,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(
        first["title"], "Robert'); DROP TABLE trips;--",
        "stored verbatim"
    );
    let (s, again, h) = app
        .call_with(
            Method::POST,
            "/api/trips",
            Some(&driver),
            Some(trip),
            &sql_key,
        )
        .await;
    assert_eq!(
        (s, again["id"].clone()),
        (StatusCode::CREATED, first["id"].clone())
    );
    assert!(h.get("idempotent-replayed").is_some());
    // A signed event whose id is SQL: stored verbatim, once.
    let sql_event = event(
        "evt_'; DROP TABLE events;--",
        "payment_intent.processing",
        5,
        intent("pi_x'); DELETE FROM trip_participants;--", 700),
    );
    assert_eq!(app.webhook(&sql_event).await.0, StatusCode::OK);
    assert_eq!(app.webhook(&sql_event).await.1["replay"], true);

    assert_eq!(
        app.db.store.head_seq().await.unwrap(),
        head + 2,
        "the trip and the event"
    );
    let (s, _) = app.get("/health").await;
    assert_eq!(s, StatusCode::OK, "still serving");
    let report = klubz_ledger::store::verify::verify(app.db.store.as_ref(), &chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

on_both_backends!(reliability:
    api_write_whose_response_was_lost_replays_from_the_log,
    a_key_taken_over_refuses_the_late_commit,
    unstorable_input_is_refused_and_changes_nothing,
    framework_answers_carry_the_envelope,
    slow_clients_are_timed_out,
    floods_are_shed_and_released,
    a_request_past_its_deadline_gets_503_and_retries_once,
    hostile_input_gets_contract_errors_and_changes_nothing,
);
