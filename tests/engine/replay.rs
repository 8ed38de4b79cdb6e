//! `klubz-replay` commands through their library, on both backends: the
//! side-effects switch and the audit trail, and `import` of recovered
//! Stripe events through the engine's idempotent path.

use crate::app::ENCRYPTION_KEY_HEX;
use crate::helpers::*;
use klubz_ledger::crypto::MasterKey;
use klubz_ledger::domain::PaymentStatus;
use klubz_replay::{Operator, SideEffectsAction};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn operator() -> Operator {
    Operator::new(Some("alice"), Some("incident 42: webhooks lost")).unwrap()
}

fn cipher() -> klubz_ledger::crypto::PayloadCipher {
    MasterKey::parse_hex(ENCRYPTION_KEY_HEX)
        .unwrap()
        .payload_cipher()
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap()
}

pub async fn side_effects_switch_is_audited(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store.as_ref();
    assert!(Operator::new(Some("alice"), None).is_err());
    assert!(Operator::new(Some(" "), Some("why")).is_err());
    let mut out = Vec::new();
    klubz_replay::side_effects(store, SideEffectsAction::Pause, None, false, &mut out)
        .await
        .unwrap_err();
    assert!(
        !store.side_effects_paused().await.unwrap(),
        "refused, nothing changed"
    );

    let mut out = Vec::new();
    klubz_replay::side_effects(
        store,
        SideEffectsAction::Pause,
        Some(operator()),
        false,
        &mut out,
    )
    .await
    .unwrap();
    assert!(text(out).starts_with("side effects: paused (recorded at seq"));
    assert!(store.side_effects_paused().await.unwrap());
    // Pausing again changes nothing and records nothing.
    let mut out = Vec::new();
    klubz_replay::side_effects(
        store,
        SideEffectsAction::Pause,
        Some(operator()),
        true,
        &mut out,
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["paused"].clone(), v["changed"].clone()),
        (json!(true), json!(false))
    );

    let bob = Operator::new(Some("bob"), Some("incident 42 resolved")).unwrap();
    let mut out = Vec::new();
    klubz_replay::side_effects(store, SideEffectsAction::Resume, Some(bob), false, &mut out)
        .await
        .unwrap();
    let mut out = Vec::new();
    klubz_replay::side_effects(store, SideEffectsAction::Status, None, false, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out), "side effects: active; 0 messages pending\n");

    let mut out = Vec::new();
    klubz_replay::audit(store, true, &mut out).await.unwrap();
    let records: Value = serde_json::from_slice(&out).unwrap();
    let summary: Vec<(String, String, String)> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().into(),
                r["operator"].as_str().unwrap().into(),
                r["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "SideEffectsResumed".into(),
                "bob".into(),
                "incident 42 resolved".into()
            ),
            (
                "SideEffectsPaused".into(),
                "alice".into(),
                "incident 42: webhooks lost".into()
            ),
        ]
    );
    let report = klubz_ledger::store::verify::verify(store, &chain_key())
        .await
        .unwrap();
    assert!(
        report.is_ok(),
        "the audit trail is part of the chain: {report:?}"
    );
}

pub async fn import_goes_through_the_idempotent_path(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store.as_ref();
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    // One event arrived by webhook before the incident.
    db.stripe(&event(
        "evt_1",
        "payment_intent.processing",
        1,
        intent("pi_1", 2000),
    ))
    .await
    .unwrap();
    // What Stripe's Events API returns: a list, newest first.
    let list = json!({
        "object": "list",
        "has_more": false,
        "data": [
            event("evt_3", "charge.refunded", 3, charge_refunded("pi_1", 2000, 500)),
            event("evt_2", "payment_intent.succeeded", 2, intent("pi_1", 2000)),
            event("evt_1", "payment_intent.processing", 1, intent("pi_1", 2000)),
            event("evt_9", "payment_intent.succeeded", 4, intent("pi_unknown", 2000)),
        ],
    });
    let progress = indicatif::ProgressBar::hidden();
    let mut out = Vec::new();
    let report = klubz_replay::import(
        store,
        &cipher(),
        false,
        "events.json",
        &list.to_string(),
        &operator(),
        false,
        &progress,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.read,
            report.new,
            report.applied,
            report.ignored,
            report.already_stored,
            report.invalid
        ),
        (4, 3, 2, 1, 1, 0)
    );
    assert_eq!(
        text(out),
        "read 4 events: 3 new (2 applied, 1 stored not applied), 1 already stored, 0 invalid\n"
    );
    let b = store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::PartiallyRefunded, 500)
    );
    let timeline = store.timeline("b1").await.unwrap();
    let sources: Vec<&str> = timeline
        .iter()
        .filter(|e| e.kind == "StripeEventReceived")
        .map(|e| e.source.as_str())
        .collect();
    assert_eq!(
        sources,
        ["stripe_webhook", "operator_import", "operator_import"]
    );

    // One event per line, with a broken line; run twice: nothing new.
    let lines = format!(
        "{}\nnot json\n{}\n",
        event("evt_2", "payment_intent.succeeded", 2, intent("pi_1", 2000)),
        event(
            "evt_3",
            "charge.refunded",
            3,
            charge_refunded("pi_1", 2000, 500)
        ),
    );
    let mut out = Vec::new();
    let again = klubz_replay::import(
        store,
        &cipher(),
        false,
        "events.ndjson",
        &lines,
        &operator(),
        true,
        &progress,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        (again.read, again.new, again.already_stored, again.invalid),
        (3, 0, 2, 1)
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["alreadyStored"], 2);
    let mut out = Vec::new();
    klubz_replay::audit(store, false, &mut out).await.unwrap();
    let audit = text(out);
    assert_eq!(audit.matches("OperatorImported").count(), 2, "{audit}");
    assert!(audit.contains("operator=alice"));
    let report = klubz_ledger::store::verify::verify(store, &chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Drift a projection behind the engine's back → `verify` names it →
/// `plan` shows exactly that booking (and the message deleted with it) →
/// `apply` repairs it in one transaction, paused → `verify` passes →
/// `audit` shows who and why; a stale plan is refused, a second plan is
/// empty.
pub async fn drift_is_planned_applied_and_audited(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store.as_ref();
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
    // A second, untouched booking on another trip.
    db.publish("t2", "d1", 3, 500).await;
    db.request("b2", "t2", "u2", 1).await;
    db.raw(&[
        "UPDATE trip_participants SET payment_status = 'unpaid', amount_refunded_cents = 7 WHERE booking_id = 'b1'",
        "DELETE FROM outbox WHERE booking_id = 'b1' AND kind = 'payment_succeeded'",
    ])
    .await;
    let mut out = Vec::new();
    assert!(!klubz_replay::verify(store, &chain_key(), false, &mut out)
        .await
        .unwrap());
    assert!(text(out).contains("DRIFT booking b1"));

    let progress = indicatif::ProgressBar::hidden();
    let plan = klubz_replay::plan::plan(store, &[], &progress)
        .await
        .unwrap();
    let entities: Vec<&str> = plan.changes.iter().map(|c| c.entity.as_str()).collect();
    assert_eq!(entities, ["booking:b1"], "{plan:?}");
    assert_eq!(plan.bookings_checked, 2);
    assert_eq!(plan.changes[0].before["paymentStatus"], "unpaid");
    assert_eq!(plan.changes[0].after["paymentStatus"], "paid");
    let missing: Vec<&str> = plan.missing.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(missing, ["payment_succeeded"]);
    let mut out = Vec::new();
    klubz_replay::plan::write_plan(&plan, false, &mut out).unwrap();
    let shown = text(out);
    assert!(
        shown.contains("  booking:b1: ")
            && shown.contains("paymentStatus: \"unpaid\" → \"paid\"")
            && shown.contains("missing message payment_succeeded:b1:"),
        "{shown}"
    );
    // Narrowed to the other booking: nothing.
    let narrow = klubz_replay::plan::plan(store, &["b2".to_string()], &progress)
        .await
        .unwrap();
    assert!(
        narrow.changes.is_empty() && narrow.missing.is_empty(),
        "{narrow:?}"
    );
    // The file round-trips; an edited one is refused.
    let file = plan.to_json();
    let reread = klubz_replay::plan::Plan::from_json(&file).unwrap();
    assert_eq!(reread, plan);
    let mut edited = file.clone();
    edited["changes"][0]["after"]["paymentStatus"] = json!("refunded");
    assert!(klubz_replay::plan::Plan::from_json(&edited).is_err());

    let mut out = Vec::new();
    let applied = klubz_replay::plan::apply(store, &reread, &operator(), false, &mut out)
        .await
        .unwrap();
    assert!(applied.paused);
    assert!(store.side_effects_paused().await.unwrap());
    let b = store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::Paid, 0)
    );
    let keys = store.outbox_keys("b1").await.unwrap();
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("payment_succeeded:"))
            .count(),
        1,
        "{keys:?}"
    );
    let mut out = Vec::new();
    assert!(
        klubz_replay::verify(store, &chain_key(), false, &mut out)
            .await
            .unwrap(),
        "{}",
        text(out)
    );

    // The same plan again: the log moved (the replay's own record).
    let mut out = Vec::new();
    let refused = klubz_replay::plan::apply(store, &reread, &operator(), false, &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("run plan again"), "{refused}");
    let again = klubz_replay::plan::plan(store, &[], &progress)
        .await
        .unwrap();
    assert!(
        again.changes.is_empty() && again.missing.is_empty(),
        "{again:?}"
    );

    let mut out = Vec::new();
    klubz_replay::audit(store, true, &mut out).await.unwrap();
    let records: Value = serde_json::from_slice(&out).unwrap();
    let replay = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "ReplayApplied")
        .unwrap();
    assert_eq!(replay["operator"], "alice");
    assert_eq!(replay["detail"]["planId"], json!(plan.id));
    assert_eq!(
        replay["detail"]["changes"][0]["before"]["paymentStatus"],
        "unpaid"
    );
}

/// A fake Stripe Events API: checks the secret key and the query, serves
/// `events` (newest first) in pages of two from `starting_after`, keeps
/// every query it received.
async fn fake_events_api(events: Vec<Value>) -> (String, Arc<Mutex<Vec<HashMap<String, String>>>>) {
    let seen: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/v1/events",
        axum::routing::get(
            move |headers: axum::http::HeaderMap,
                  axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| {
                let log = log.clone();
                let events = events.clone();
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if auth != Some("Bearer sk_test_catch_up") {
                        return (
                            axum::http::StatusCode::UNAUTHORIZED,
                            axum::Json(json!({"error": {"message": "Invalid API Key provided"}})),
                        );
                    }
                    log.lock().unwrap().push(q.clone());
                    let gte: i64 = q.get("created[gte]").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let undelivered = q.get("delivery_success").map(String::as_str) == Some("false");
                    let mut list: Vec<&Value> = events
                        .iter()
                        .filter(|e| e["created"].as_i64().unwrap() >= gte)
                        .filter(|e| !undelivered || e["undelivered"] == json!(true))
                        .collect();
                    if let Some(after) = q.get("starting_after") {
                        let at = list.iter().position(|e| e["id"] == json!(after)).unwrap();
                        list.drain(..=at);
                    }
                    let has_more = list.len() > 2;
                    let page: Vec<Value> = list.into_iter().take(2).cloned().collect();
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/events"})),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

/// `catch-up` over several pages of a fake Events API, then again from the
/// checkpoint; only undelivered events unless `all`.
pub async fn catch_up_pages_through_stripe_and_resumes_from_its_checkpoint(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store.as_ref();
    db.accepted_booking().await;
    db.bind("b1", "u1", "pi_1", 2000).await.unwrap();
    let undelivered = |mut e: Value| {
        e["undelivered"] = json!(true);
        e
    };
    // Newest first, as Stripe lists them.
    let events = vec![
        undelivered(event(
            "evt_5",
            "charge.refunded",
            50,
            charge_refunded("pi_1", 2000, 2000),
        )),
        undelivered(event(
            "evt_4",
            "charge.dispute.funds_withdrawn",
            40,
            json!({"id": "du_1", "payment_intent": "pi_1"}),
        )),
        event("evt_3", "payment_intent.created", 30, intent("pi_1", 2000)),
        undelivered(event(
            "evt_2",
            "payment_intent.succeeded",
            20,
            intent("pi_1", 2000),
        )),
        undelivered(event(
            "evt_1",
            "payment_intent.processing",
            10,
            intent("pi_1", 2000),
        )),
    ];
    let (base, seen) = fake_events_api(events).await;
    let api = klubz_ledger::stripe::events_api::EventsApi::new(&base, "sk_test_catch_up").unwrap();
    let since = t(0);
    let now = t(60);
    let progress = indicatif::ProgressBar::hidden();
    let mut out = Vec::new();
    let report = klubz_replay::catch_up(
        store,
        &cipher(),
        false,
        &api,
        Some(since),
        false,
        &operator(),
        now,
        false,
        &progress,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        (report.pages, report.import.read, report.import.new),
        (2, 4, 4)
    );
    assert_eq!(report.checkpoint, since.timestamp() + 50);
    let b = store.booking("b1").await.unwrap().unwrap();
    assert_eq!(
        (b.payment_status, b.amount_refunded_cents.get()),
        (PaymentStatus::Refunded, 2000)
    );
    {
        let queries = seen.lock().unwrap();
        assert_eq!(queries.len(), 2);
        assert!(queries
            .iter()
            .all(|q| q.get("delivery_success").map(String::as_str) == Some("false")));
        assert_eq!(
            queries[0].get("created[gte]"),
            Some(&since.timestamp().to_string())
        );
        assert_eq!(
            queries[1].get("starting_after").map(String::as_str),
            Some("evt_4")
        );
    }
    // Again: from the checkpoint, everything there is already stored.
    let mut out = Vec::new();
    let again = klubz_replay::catch_up(
        store,
        &cipher(),
        false,
        &api,
        None,
        true,
        &operator(),
        now,
        true,
        &progress,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(again.since, report.checkpoint);
    assert_eq!(
        (
            again.import.read,
            again.import.new,
            again.import.already_stored
        ),
        (1, 0, 1)
    );
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last.get("delivery_success"),
        None,
        "--all lists delivered events too"
    );
    // A wrong key is a clear error, and records nothing.
    let wrong = klubz_ledger::stripe::events_api::EventsApi::new(&base, "sk_test_wrong").unwrap();
    let mut out = Vec::new();
    let e = klubz_replay::catch_up(
        store,
        &cipher(),
        false,
        &wrong,
        None,
        false,
        &operator(),
        now,
        false,
        &progress,
        &mut out,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("401") && e.contains("Invalid API Key"), "{e}");
    assert_eq!(
        klubz_replay::catch_up_checkpoint(store).await.unwrap(),
        Some(again.checkpoint)
    );
    // Close to Stripe's retention: a warning.
    let mut out = Vec::new();
    klubz_replay::catch_up(
        store,
        &cipher(),
        false,
        &api,
        Some(now - chrono::Duration::days(29)),
        false,
        &operator(),
        now,
        false,
        &progress,
        &mut out,
    )
    .await
    .unwrap();
    assert!(text(out).starts_with("warning: catching up from 29 days ago"));
}

/// A message no event explains (forged, or its cause deleted) is named.
pub async fn verify_names_messages_without_a_cause(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.accepted_booking().await;
    let mut out = Vec::new();
    assert!(
        klubz_replay::verify(db.store.as_ref(), &chain_key(), false, &mut out)
            .await
            .unwrap()
    );
    db.raw(&["INSERT INTO outbox (message_key, kind, booking_id, payload, created_seq, created_at) \
              VALUES ('refund_required:b1:9999', 'refund_required', 'b1', '{}', 9999, '2030-01-01T00:00:00Z')"])
        .await;
    let mut out = Vec::new();
    assert!(
        !klubz_replay::verify(db.store.as_ref(), &chain_key(), false, &mut out)
            .await
            .unwrap()
    );
    let shown = text(out);
    assert!(
        shown.contains("MESSAGE refund_required:b1:9999: its causing event (seq 9999) is not in booking b1's log"),
        "{shown}"
    );
}

on_both_backends!(replay:
    side_effects_switch_is_audited,
    import_goes_through_the_idempotent_path,
    drift_is_planned_applied_and_audited,
    catch_up_pages_through_stripe_and_resumes_from_its_checkpoint,
    verify_names_messages_without_a_cause,
);
