//! `POST /api/payments/webhook` over real HTTP, on both backends: the
//! CONTRACT.md table, the threat model, ordering, durability, encryption.

use crate::app::*;
use crate::helpers::*;
use klubz_ledger::domain::fold::OutcomeKind;
use klubz_ledger::domain::PaymentStatus;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

async fn paid_status(app: &TestApp, booking: &str) -> PaymentStatus {
    app.db
        .store
        .booking(booking)
        .await
        .unwrap()
        .unwrap()
        .payment_status
}

/// The booking of `helpers::accepted_booking` with `pi_1` bound for 2000.
async fn bound(app: &TestApp) {
    app.db.accepted_booking().await;
    app.db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
}

fn received() -> Value {
    json!({"received": true})
}

fn ignored(reason: &str) -> Value {
    json!({"received": true, "ignored": true, "reason": reason})
}

pub async fn same_event_20_times_concurrently_is_stored_once(backend: Backend) {
    let app = spawn_app(backend).await;
    bound(&app).await;
    let body = serde_json::to_vec(&event(
        "evt_x20",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    ))
    .unwrap();
    let sig = sign(&body);
    let posts: Vec<_> = (0..20)
        .map(|_| app.post_raw(body.clone(), Some(sig.clone())))
        .collect();
    let answers = futures::future::join_all(posts).await;
    let fresh = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::OK && *b == received())
        .count();
    let replays = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::OK && *b == json!({"received": true, "replay": true}))
        .count();
    assert_eq!((fresh, replays), (1, 19), "{answers:?}");
    assert_eq!(
        app.db
            .store
            .read_stream("payment:pi_1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(paid_status(&app, "b1").await, PaymentStatus::Paid);
    let applied = app
        .db
        .store
        .timeline("b1")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "StripeEventReceived")
        .count();
    assert_eq!(applied, 1);
}

pub async fn two_servers_on_one_database_store_an_event_once(backend: Backend) {
    let first = spawn_app(backend).await;
    bound(&first).await;
    let second = serve_on(first.db.share().await, &[]).await;
    let body = serde_json::to_vec(&event(
        "evt_two",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    ))
    .unwrap();
    let sig = sign(&body);
    let posts: Vec<_> = (0..20)
        .map(|i| {
            let app = if i % 2 == 0 { &first } else { &second };
            app.post_raw(body.clone(), Some(sig.clone()))
        })
        .collect();
    let answers = futures::future::join_all(posts).await;
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(_, b)| *b == received()).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        first
            .db
            .store
            .read_stream("payment:pi_1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(paid_status(&second, "b1").await, PaymentStatus::Paid);
}

/// One booking's history: our binding and six Stripe events.
fn history_items(k: usize) -> Vec<(&'static str, Option<Value>)> {
    let pi = format!("pi_ord_{k}");
    let booking = format!("b_ord_{k}");
    let mut object = intent(&pi, 1000);
    object["metadata"] = json!({"bookingId": booking});
    let dispute = json!({"id": format!("du_{k}"), "object": "dispute", "payment_intent": pi,
        "amount": 1000, "currency": "zar", "status": "needs_response"});
    vec![
        ("bind", None),
        (
            "processing",
            Some(event(
                &format!("evt_{k}_p"),
                "payment_intent.processing",
                1,
                object.clone(),
            )),
        ),
        (
            "failed",
            Some(event(
                &format!("evt_{k}_f"),
                "payment_intent.payment_failed",
                2,
                object.clone(),
            )),
        ),
        (
            "succeeded",
            Some(event(
                &format!("evt_{k}_s"),
                "payment_intent.succeeded",
                3,
                object,
            )),
        ),
        (
            "refund",
            Some(event(
                &format!("evt_{k}_r"),
                "refund.created",
                4,
                refund(&format!("re_{k}"), &pi, 400, "succeeded"),
            )),
        ),
        (
            "dispute",
            Some(event(
                &format!("evt_{k}_d"),
                "charge.dispute.created",
                5,
                dispute,
            )),
        ),
    ]
}

/// Delivers one permutation for booking `k`; returns the projection and
/// each item's outcome.
async fn deliver(
    app: &TestApp,
    k: usize,
    order: &[usize],
) -> (Value, BTreeMap<&'static str, (OutcomeKind, Option<String>)>) {
    let trip = format!("t_ord_{k}");
    let booking = format!("b_ord_{k}");
    let user = format!("u_ord_{k}");
    app.db.publish(&trip, "d1", 4, 1000).await;
    app.db.request(&booking, &trip, &user, 1).await;
    app.db.accept(&booking, "d1").await.unwrap();
    let items = history_items(k);
    let mut seqs: BTreeMap<&'static str, i64> = BTreeMap::new();
    for &i in order {
        let (name, body) = &items[i];
        let seq = match body {
            None => {
                app.db
                    .bind(&booking, &user, &format!("pi_ord_{k}"), 1000)
                    .await
                    .unwrap()
                    .seq
            }
            Some(body) => {
                let (status, answer) = app.webhook(body).await;
                assert_eq!(status, StatusCode::OK, "{name}: {answer}");
                let id = body["id"].as_str().unwrap();
                app.db
                    .store
                    .read_stream(&format!("payment:pi_ord_{k}"))
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|e| e.idempotency_key == format!("stripe:{id}"))
                    .unwrap()
                    .seq
            }
        };
        seqs.insert(name, seq);
    }
    let b = app.db.store.booking(&booking).await.unwrap().unwrap();
    let state = json!({
        "status": b.payment_status.as_str(),
        "refunded": b.amount_refunded_cents,
        "intent": b.payment_intent_id,
    });
    let mut outcomes = BTreeMap::new();
    for (name, seq) in seqs {
        let o = app.db.store.outcome(seq).await.unwrap().unwrap();
        outcomes.insert(name, (o.outcome, o.reason));
    }
    (state, outcomes)
}

pub async fn every_delivery_order_gives_the_same_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let natural: Vec<usize> = (0..6).collect();
    let (reference, reference_outcomes) = deliver(&app, 0, &natural).await;
    assert_eq!(
        reference,
        json!({"status": "disputed", "refunded": 400, "intent": "pi_ord_0"})
    );
    // The reversed order, and a deterministic sample of the other 718.
    let mut orders: Vec<Vec<usize>> = vec![natural.iter().rev().copied().collect()];
    let mut all = Vec::new();
    permutations(&mut natural.clone(), 0, &mut all);
    orders.extend(all.into_iter().step_by(19));
    for (k, order) in orders.iter().enumerate() {
        let (state, outcomes) = deliver(&app, k + 1, order).await;
        let expected =
            json!({"status": "disputed", "refunded": 400, "intent": format!("pi_ord_{}", k + 1)});
        assert_eq!(state, expected, "order {order:?}");
        assert_eq!(outcomes, reference_outcomes, "order {order:?}");
    }
}

fn permutations(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
    if k == items.len() {
        out.push(items.clone());
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, out);
        items.swap(k, i);
    }
}

pub async fn a_webhook_before_its_binding_applies_when_the_binding_arrives(backend: Backend) {
    let app = spawn_app(backend).await;
    app.db.accepted_booking().await;
    let (status, answer) = app
        .webhook(&event(
            "evt_early",
            "payment_intent.succeeded",
            10,
            intent("pi_1", 2000),
        ))
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, ignored("unknown_payment_intent"))
    );
    assert_eq!(paid_status(&app, "b1").await, PaymentStatus::Unpaid);
    app.db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    assert_eq!(paid_status(&app, "b1").await, PaymentStatus::Paid);
}

pub async fn threat_model_cases_leave_the_booking_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    bound(&app).await;
    let paid = event(
        "evt_paid",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    );
    let raw = serde_json::to_vec(&paid).unwrap();
    let now = chrono::Utc::now().timestamp();

    // T1 forged: wrong secret, no header, stale timestamp — 400, nothing stored.
    let forged = klubz_ledger::stripe::signature::header("whsec_test_attacker", now, &raw);
    let stale = klubz_ledger::stripe::signature::header(WEBHOOK_SECRET, now - 301, &raw);
    for sig in [Some(forged), None, Some(stale), Some("garbage".to_string())] {
        let (status, body) = app.post_raw(raw.clone(), sig).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "WEBHOOK_SIGNATURE_INVALID");
        assert!(!body["error"]["requestId"].as_str().unwrap().is_empty());
    }
    assert!(app
        .db
        .store
        .read_stream("payment:pi_1")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(app.state.metrics.get("security.signature_failures"), 4);

    assert_eq!(app.webhook(&paid).await, (StatusCode::OK, received()));
    // T2 replay of a valid event, freshly signed.
    assert_eq!(
        app.webhook(&paid).await,
        (StatusCode::OK, json!({"received": true, "replay": true}))
    );

    let mut other_booking = intent("pi_1", 2000);
    other_booking["metadata"] = json!({"bookingId": "b-someone-else"});
    let mut usd = intent("pi_1", 2000);
    usd["currency"] = json!("usd");
    let cases = [
        (
            event(
                "evt_unknown",
                "payment_intent.succeeded",
                11,
                intent("pi_nobody", 2000),
            ),
            "unknown_payment_intent",
        ),
        (
            event("evt_meta", "payment_intent.succeeded", 11, other_booking),
            "metadata_mismatch",
        ),
        (
            event(
                "evt_amount",
                "payment_intent.succeeded",
                11,
                intent("pi_1", 1),
            ),
            "amount_mismatch",
        ),
        (
            event("evt_currency", "payment_intent.succeeded", 11, usd),
            "amount_mismatch",
        ),
        (
            event(
                "evt_fail_late",
                "payment_intent.payment_failed",
                12,
                intent("pi_1", 2000),
            ),
            "invalid_transition",
        ),
        (
            event(
                "evt_cancel_late",
                "payment_intent.canceled",
                13,
                intent("pi_1", 2000),
            ),
            "invalid_transition",
        ),
    ];
    for (body, reason) in &cases {
        assert_eq!(
            app.webhook(body).await,
            (StatusCode::OK, ignored(reason)),
            "{body}"
        );
        assert_eq!(
            paid_status(&app, "b1").await,
            PaymentStatus::Paid,
            "{reason}"
        );
    }
    // Each is visible in the booking's timeline with its reason.
    let timeline = app.db.store.timeline("b1").await.unwrap();
    let reasons: Vec<Option<String>> = timeline
        .iter()
        .filter_map(|e| e.outcome.clone())
        .map(|o| o.reason)
        .collect();
    for reason in ["metadata_mismatch", "amount_mismatch", "invalid_transition"] {
        assert!(
            reasons.iter().any(|r| r.as_deref() == Some(reason)),
            "{reason} missing: {reasons:?}"
        );
    }
    let unknown = app.db.store.read_stream("payment:pi_nobody").await.unwrap();
    let o = app.db.store.outcome(unknown[0].seq).await.unwrap().unwrap();
    assert_eq!(o.reason.as_deref(), Some("unknown_payment_intent"));
}

pub async fn test_mode_event_in_live_mode_is_not_applied(backend: Backend) {
    let app = spawn_app_with(backend, &[("STRIPE_LIVEMODE", "true")]).await;
    bound(&app).await;
    let test_mode = event(
        "evt_testmode",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    );
    assert_eq!(
        app.webhook(&test_mode).await,
        (StatusCode::OK, ignored("livemode_mismatch"))
    );
    assert_eq!(paid_status(&app, "b1").await, PaymentStatus::Pending);
    let mut live = event(
        "evt_live",
        "payment_intent.succeeded",
        11,
        intent("pi_1", 2000),
    );
    live["livemode"] = json!(true);
    assert_eq!(app.webhook(&live).await, (StatusCode::OK, received()));
    assert_eq!(paid_status(&app, "b1").await, PaymentStatus::Paid);
}

/// Every real payload of `tests/stripe-events` (real Stripe bodies, sources
/// and licences in its SOURCES.md), as received and rewritten to bind to a
/// test booking, is taken without error.
pub async fn real_stripe_payloads_are_ingested(backend: Backend) {
    let app = spawn_app(backend).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stripe-events");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 28);
    let mut applied = 0;
    for (k, path) in files.iter().enumerate() {
        let original: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // As received: authentic, so always acknowledged.
        let mut as_received = original.clone();
        as_received["id"] = json!(format!("{}_orig_{k}", original["id"].as_str().unwrap()));
        let (status, answer) = app.webhook(&as_received).await;
        assert_eq!(status, StatusCode::OK, "{name}: {answer}");
        assert_eq!(answer["received"], true, "{name}");

        // Rewritten to bind to a fresh booking.
        let (trip, booking, user, pi) = (
            format!("t_real_{k}"),
            format!("b_real_{k}"),
            format!("u_real_{k}"),
            format!("pi_real_{k}"),
        );
        app.db.publish(&trip, "d1", 2, 1000).await;
        app.db.request(&booking, &trip, &user, 2).await;
        app.db.accept(&booking, "d1").await.unwrap();
        app.db.bind(&booking, &user, &pi, 2000).await.unwrap();
        let mut bound_copy = original.clone();
        bound_copy["id"] = json!(format!("{}_bound_{k}", original["id"].as_str().unwrap()));
        bound_copy["livemode"] = json!(false);
        let kind = original["type"].as_str().unwrap().to_string();
        if let Some(object) = bound_copy
            .pointer_mut("/data/object")
            .and_then(Value::as_object_mut)
        {
            if kind.starts_with("payment_intent.") {
                object.insert("id".into(), json!(pi));
            } else {
                object.insert("payment_intent".into(), json!(pi));
            }
            if kind.starts_with("payment_intent.")
                || (kind.starts_with("charge.")
                    && !kind.contains("dispute")
                    && !kind.contains("refund."))
            {
                object.insert("amount".into(), json!(2000));
            }
            object.insert("currency".into(), json!("zar"));
            object.insert("metadata".into(), json!({}));
        }
        let (status, answer) = app.webhook(&bound_copy).await;
        assert_eq!(status, StatusCode::OK, "{name}: {answer}");
        assert_eq!(answer["received"], true, "{name}");
        if answer == received() {
            applied += 1;
        }
        if kind == "payment_intent.succeeded" {
            assert_eq!(
                paid_status(&app, &booking).await,
                PaymentStatus::Paid,
                "{name}"
            );
        }
    }
    assert!(applied >= 5, "only {applied} rewritten payloads applied");
    let report = klubz_ledger::store::verify::verify(app.db.store.as_ref(), &chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

pub async fn storage_outage_answers_503_then_redelivery_applies_once(backend: Backend) {
    let db = match backend {
        Backend::Sqlite => {
            TestDb::sqlite_with_busy_timeout(std::time::Duration::from_millis(200)).await
        }
        Backend::Postgres => TestDb::new(backend).await,
    };
    let app = serve_on(db, &[]).await;
    bound(&app).await;
    let body = event(
        "evt_outage",
        "payment_intent.succeeded",
        10,
        intent("pi_1", 2000),
    );

    let answer = match backend {
        Backend::Sqlite => {
            // Another process holds the write lock.
            use sqlx::Connection;
            let mut locker = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut locker)
                .await
                .unwrap();
            let answer = app.webhook(&body).await;
            sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
            answer
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let name = app.db.url.rsplit('/').next().unwrap().to_string();
            let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
            sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
                .execute(&mut admin)
                .await
                .unwrap();
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&name)
            .execute(&mut admin)
            .await
            .unwrap();
            let answer = app.webhook(&body).await;
            let (health, health_body) = app.get("/health").await;
            sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
                .execute(&mut admin)
                .await
                .unwrap();
            assert_eq!(health, StatusCode::SERVICE_UNAVAILABLE, "{health_body}");
            assert_eq!(health_body["database"], "unreachable");
            answer
        }
    };
    assert_eq!(answer.0, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.1["error"]["code"], "STORAGE_UNAVAILABLE");
    assert_eq!(paid_status(&app, "b1").await, PaymentStatus::Pending);
    // Stripe redelivers once the database is back: applied exactly once.
    assert_eq!(app.webhook(&body).await, (StatusCode::OK, received()));
    assert_eq!(
        app.webhook(&body).await,
        (StatusCode::OK, json!({"received": true, "replay": true}))
    );
    assert_eq!(paid_status(&app, "b1").await, PaymentStatus::Paid);
    assert_eq!(
        app.db
            .store
            .read_stream("payment:pi_1")
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn raw_bodies_are_encrypted_at_rest(backend: Backend) {
    let app = spawn_app(backend).await;
    bound(&app).await;
    let email = "rider.private@example.com";
    let mut object = intent("pi_1", 2000);
    object["receipt_email"] = json!(email);
    object["shipping"] =
        json!({"name": "Thandi Private", "address": {"line1": "12 Secret Street"}});
    let body = event("evt_pii", "payment_intent.succeeded", 10, object);
    assert_eq!(app.webhook(&body).await, (StatusCode::OK, received()));
    let stored = app.db.store.read_stream("payment:pi_1").await.unwrap();
    let raw = stored[0].raw_payload.clone().expect("raw payload stored");
    assert!(!stored[0].payload.contains(email));
    // Decrypts to exactly what Stripe sent…
    let plain = app.state.cipher.decrypt(&raw).unwrap();
    assert_eq!(plain, serde_json::to_vec(&body).unwrap());
    // …and nothing readable is in the database.
    match backend {
        Backend::Sqlite => {
            let path = app.db.url.trim_start_matches("sqlite://").to_string();
            for file in [path.clone(), format!("{path}-wal")] {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(
                    !bytes.windows(email.len()).any(|w| w == email.as_bytes()),
                    "{file} holds the email"
                );
                assert!(
                    !bytes.windows(13).any(|w| w == b"Secret Street"),
                    "{file} holds the address"
                );
            }
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
            let hits: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE position(convert_to($1, 'UTF8') in coalesce(raw_payload, ''::bytea)) > 0 OR payload LIKE '%' || $1 || '%'",
            )
            .bind(email)
            .fetch_one(&mut c)
            .await
            .unwrap();
            assert_eq!(hits, 0);
        }
    }
    // A wrong ENCRYPTION_KEY fails loudly instead of returning garbage.
    let wrong = klubz_ledger::crypto::MasterKey::from_bytes([8; 32]);
    let err = klubz_ledger::store::open(&app.db.url, wrong.chain_key())
        .await
        .err()
        .expect("wrong key refused");
    assert!(
        matches!(err, klubz_ledger::store::StoreError::WrongKey),
        "{err:?}"
    );
    assert!(wrong.payload_cipher().decrypt(&raw).is_err());
}

pub async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    bound(&app).await;
    let head = app.db.store.head_seq().await.unwrap();
    // 413 before reading the body: only the headers are sent, announcing
    // one byte over 1 MiB, and the answer comes without the body.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /api/payments/webhook HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             stripe-signature: t=1,v1=00\r\ncontent-length: {}\r\n\r\n",
            1024 * 1024 + 1
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        // A server that waited for the body would never answer: fail, not hang.
        let read_answer = async {
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while !answer.ends_with(b"}}") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
            answer
        };
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), read_answer)
            .await
            .expect("no answer without the body");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    }
    for raw in [
        &b"not json"[..],
        br#"{"type":"payment_intent.succeeded"}"#,
        br#"{"id":"evt_no_type"}"#,
        b"[]",
    ] {
        let (status, body) = app.post_raw(raw.to_vec(), Some(sign(raw))).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    }
    assert_eq!(
        app.db.store.head_seq().await.unwrap(),
        head,
        "nothing stored"
    );
    // The caller's request id comes back in the header and the error body.
    let res = app
        .client
        .post(format!("{}/api/payments/webhook", app.base))
        .header("x-request-id", "req-abc-123")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-abc-123");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["requestId"], "req-abc-123");
}

pub async fn production_without_webhook_secret_answers_500(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("ENVIRONMENT", "production"), ("STRIPE_WEBHOOK_SECRET", "")],
    )
    .await;
    let head = app.db.store.head_seq().await.unwrap();
    let (status, body) = app
        .webhook(&event(
            "evt_cfg",
            "payment_intent.succeeded",
            1,
            intent("pi_1", 2000),
        ))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "CONFIGURATION_ERROR");
    assert_eq!(app.db.store.head_seq().await.unwrap(), head);
}

pub async fn health_reports_the_log_position(backend: Backend) {
    let app = spawn_app(backend).await;
    bound(&app).await;
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert_eq!(
        body["eventLogSeq"],
        json!(app.db.store.head_seq().await.unwrap())
    );
    assert_eq!(body["sideEffectsPaused"], false);
}

/// A store whose writer stopped cannot commit: `/health` says so (503)
/// and a webhook gets 503, so Stripe retries.
pub async fn a_stopped_writer_makes_health_503(backend: Backend) {
    let app = spawn_app(backend).await;
    bound(&app).await;
    let (status, health) = app.get("/health").await;
    assert_eq!(
        (status, health["writer"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    app.db.store.close().await;
    assert!(!app.db.store.writer_alive());
    let (status, health) = app.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["writer"], "stopped");
    assert_eq!(health["error"]["code"], "STORAGE_UNAVAILABLE");
    let (status, answer) = app
        .webhook(&event(
            "evt_late",
            "payment_intent.succeeded",
            5,
            intent("pi_1", 2000),
        ))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "STORAGE_UNAVAILABLE");
}

on_both_backends!(webhook:
    same_event_20_times_concurrently_is_stored_once,
    two_servers_on_one_database_store_an_event_once,
    every_delivery_order_gives_the_same_state,
    a_webhook_before_its_binding_applies_when_the_binding_arrives,
    threat_model_cases_leave_the_booking_unchanged,
    test_mode_event_in_live_mode_is_not_applied,
    real_stripe_payloads_are_ingested,
    storage_outage_answers_503_then_redelivery_applies_once,
    raw_bodies_are_encrypted_at_rest,
    bad_input_is_refused_and_changes_nothing,
    production_without_webhook_secret_answers_500,
    health_reports_the_log_position,
    a_stopped_writer_makes_health_503,
);
