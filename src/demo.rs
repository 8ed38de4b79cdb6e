//! `klubz-ledger demo`: the engine at work in seconds, with no
//! configuration. A fresh embedded database in a new directory (kept, its
//! path printed), a server on a free port, a receiver for side-effect
//! messages, then a realistic day through real HTTP: two trips, bookings
//! accepted and rejected, intents from the offline gateway, and a Stripe
//! day played at the webhook (successes, a failure then a retry, partial
//! and full refunds, a dispute won and one lost, a duplicate, out-of-order
//! deliveries, a webhook before its binding, a forged signature, a metadata
//! mismatch, a superseded intent). It prints every booking's final state,
//! what was refused or not applied and why, the messages delivered, the
//! `verify` result and the `klubz-replay` commands to explore what it left.

use crate::auth::{mint, Role};
use crate::config::{Config, Environment, Secret};
use crate::http::{self, AppState};
use crate::store;
use crate::stripe::gateway::{IntentRequest, OfflineGateway, PaymentGateway};
use crate::stripe::signature;
use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the demo did, for printing and for tests.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The directory it left (the database is `demo.db` in it).
    pub dir: PathBuf,
    pub database_url: String,
    /// (who, trip, booking id, status, payment status, amount, refunded)
    pub bookings: Vec<BookingLine>,
    /// Requests the engine refused: (what, HTTP status, error code).
    pub refused: Vec<(String, u16, String)>,
    /// Stored events that did not move their booking: (who, Stripe event
    /// type, outcome, reason).
    pub not_applied: Vec<(String, String, String, String)>,
    /// Every webhook delivery and what the webhook answered.
    pub deliveries: Vec<(String, String)>,
    /// Side-effect messages the receiver got: (type, booking id).
    pub messages: Vec<(String, String)>,
    pub verify_ok: bool,
    pub verify_summary: String,
}

#[derive(Debug, Clone)]
pub struct BookingLine {
    pub who: String,
    pub trip: String,
    pub booking_id: String,
    pub status: String,
    pub payment_status: String,
    pub amount_cents: i64,
    pub refunded_cents: i64,
}

struct Day {
    http: reqwest::Client,
    base: String,
    jwt: String,
    webhook_secret: String,
    created: i64,
    events: usize,
    refused: Vec<(String, u16, String)>,
    deliveries: Vec<(String, String)>,
}

const ORG: &str = "klubz-demo";

impl Day {
    fn token(&self, sub: &str, role: Role) -> anyhow::Result<String> {
        Ok(mint(
            &self.jwt,
            sub,
            role,
            Some(ORG),
            chrono::Utc::now().timestamp(),
            3600,
        )?)
    }

    async fn call(
        &mut self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        who: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let role = if who == "ops" {
            Role::SuperAdmin
        } else {
            Role::User
        };
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token(who, role)?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{what}: {path}"))?;
        let status = res.status().as_u16();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
            self.refused.push((what.to_string(), status, code));
        }
        Ok((status, v))
    }

    async fn ok(
        &mut self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        who: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.call(what, method, path, who, body).await?;
        if !(200..300).contains(&status) {
            bail!("{what}: {path} answered {status} {v}");
        }
        Ok(v)
    }

    /// A Stripe event for `pi`, signed with `secret` (the engine's, or a
    /// forger's), sent to the webhook. Returns the answer's status and body.
    async fn stripe(
        &mut self,
        what: &str,
        kind: &str,
        object: Value,
        secret: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let at = self.events as i64 * 60;
        self.stripe_at(what, kind, object, secret, at).await
    }

    /// `stripe`, with Stripe's `created` `at` seconds into the day: an
    /// event delivered late keeps the time Stripe created it.
    async fn stripe_at(
        &mut self,
        what: &str,
        kind: &str,
        object: Value,
        secret: Option<&str>,
        at: i64,
    ) -> anyhow::Result<(u16, Value)> {
        self.events += 1;
        let body = json!({
            "id": format!("evt_demo_{:03}", self.events),
            "object": "event",
            "api_version": "2026-04-22.dahlia",
            "created": self.created + at,
            "livemode": false,
            "type": kind,
            "data": {"object": object},
        })
        .to_string();
        self.deliver(what, body, secret).await
    }

    async fn deliver(
        &mut self,
        what: &str,
        body: String,
        secret: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let secret = secret.unwrap_or(&self.webhook_secret).to_string();
        let header = signature::header(&secret, chrono::Utc::now().timestamp(), body.as_bytes());
        let res = self
            .http
            .post(format!("{}/api/payments/webhook", self.base))
            .header("Stripe-Signature", header)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("{what}: webhook"))?;
        let status = res.status().as_u16();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        let answer = if status >= 400 {
            let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
            self.refused.push((what.to_string(), status, code.clone()));
            format!("{status} {code}")
        } else if v["replay"] == json!(true) {
            format!("{status} replay (stored before)")
        } else if v["ignored"] == json!(true) {
            format!(
                "{status} stored, ignored: {}",
                v["reason"].as_str().unwrap_or("?")
            )
        } else {
            format!("{status} applied")
        };
        self.deliveries.push((what.to_string(), answer));
        Ok((status, v))
    }
}

/// A rider's booking on the demo's day.
struct Ride {
    who: &'static str,
    trip: &'static str,
    trip_id: String,
    booking_id: String,
    fare: i64,
}

fn intent(pi: &str, r: &Ride, status: &str) -> Value {
    json!({"id": pi, "object": "payment_intent", "amount": r.fare, "currency": "zar",
        "status": status,
        "metadata": {"bookingId": r.booking_id, "tripId": r.trip_id, "userId": r.who}})
}

fn charge(pi: &str, r: &Ride, refunded: i64) -> Value {
    json!({"id": format!("ch_{pi}"), "object": "charge", "payment_intent": pi,
        "amount": r.fare, "currency": "zar", "amount_refunded": refunded,
        "metadata": {"bookingId": r.booking_id, "tripId": r.trip_id, "userId": r.who}})
}

fn refund(pi: &str, id: &str, amount: i64) -> Value {
    json!({"id": id, "object": "refund", "payment_intent": pi, "amount": amount,
        "currency": "zar", "status": "succeeded"})
}

fn dispute(pi: &str, id: &str, amount: i64, status: &str) -> Value {
    json!({"id": id, "object": "dispute", "payment_intent": pi, "charge": format!("ch_{pi}"),
        "amount": amount, "currency": "zar", "status": status, "reason": "fraudulent"})
}

/// Runs the day; the directory and its database are left for exploring.
pub async fn run(base: &Config) -> anyhow::Result<DemoReport> {
    let dir = tempfile::Builder::new()
        .prefix("klubz-demo-")
        .tempdir()
        .context("a directory for the demo's database")?
        .keep();
    let database_url = format!("sqlite://{}", dir.join("demo.db").display());

    // The receiver of side-effect messages.
    let received: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let inbox = received.clone();
    let receiver = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let inbox = inbox.clone();
            async move {
                if let (Ok(v), Ok(mut list)) =
                    (serde_json::from_slice::<Value>(&body), inbox.lock())
                {
                    list.push(v);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let receiver_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/", receiver_listener.local_addr()?);
    let receiver_task = tokio::spawn(async move {
        let _ = axum::serve(receiver_listener, receiver).await;
    });

    let mut config = base.clone();
    config.database_url = database_url.clone();
    config.environment = Environment::Development;
    config.stripe_secret_key = None; // the offline gateway
    config.stripe_livemode = false;
    config.webhook_secrets = vec![Secret::new(format!(
        "whsec_demo_{}",
        uuid::Uuid::new_v4().simple()
    ))];
    config.notify_url = Some(receiver_url);
    config.notify_schedule = vec![Duration::from_millis(50)];
    let chain_key = config.encryption_key.chain_key();
    let store = store::open(&database_url, chain_key.clone()).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let state = AppState::new(store.clone(), Arc::new(config.clone()));
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(http::serve(listener, state, async move {
        let _ = server_stop.changed().await;
    }));
    let dispatcher = crate::dispatch::for_config(store.clone(), &config)
        .ok_or_else(|| anyhow!("the demo's dispatcher did not start"))?;
    let dispatch_task = tokio::spawn(dispatcher.run(stopped));

    let mut day = Day {
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
        jwt: config.jwt_secret.expose().to_string(),
        webhook_secret: config.webhook_secrets[0].expose().to_string(),
        created: chrono::Utc::now().timestamp() - 12 * 3600,
        events: 0,
        refused: Vec::new(),
        deliveries: Vec::new(),
    };
    let result = play(&mut day, &config).await;
    let rides = match result {
        Ok(rides) => rides,
        Err(e) => {
            let _ = stop.send(true);
            return Err(e);
        }
    };

    // Let the dispatcher deliver everything the day produced.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending = store
            .list_outbox(&crate::store::outbox::OutboxFilter {
                status: Some("pending".into()),
                booking_id: None,
                org_id: None,
                limit: 1,
            })
            .await?;
        if pending.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut bookings = Vec::new();
    let mut not_applied = Vec::new();
    for r in &rides {
        let path = format!("/api/bookings/{}", r.booking_id);
        let b = day
            .ok("read back", reqwest::Method::GET, &path, "ops", None)
            .await?;
        bookings.push(BookingLine {
            who: r.who.to_string(),
            trip: r.trip.to_string(),
            booking_id: r.booking_id.clone(),
            status: b["status"].as_str().unwrap_or("?").to_string(),
            payment_status: b["paymentStatus"].as_str().unwrap_or("?").to_string(),
            amount_cents: b["amountCents"].as_i64().unwrap_or(0),
            refunded_cents: b["amountRefundedCents"].as_i64().unwrap_or(0),
        });
        let timeline = day
            .ok(
                "timeline",
                reqwest::Method::GET,
                &format!("{path}/events"),
                "ops",
                None,
            )
            .await?;
        for e in timeline["events"].as_array().into_iter().flatten() {
            let outcome = e["outcome"].as_str().unwrap_or("");
            if matches!(outcome, "applied" | "noop" | "") {
                continue;
            }
            not_applied.push((
                r.who.to_string(),
                e["stripeEventType"]
                    .as_str()
                    .unwrap_or(e["kind"].as_str().unwrap_or("?"))
                    .to_string(),
                outcome.to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    let messages = received
        .lock()
        .map(|l| {
            l.iter()
                .map(|m| {
                    (
                        m["type"].as_str().unwrap_or("?").to_string(),
                        m["bookingId"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();

    let _ = stop.send(true);
    let _ = server.await;
    let _ = dispatch_task.await;
    receiver_task.abort();
    let report = crate::store::verify::verify(&*store, &chain_key).await?;
    store.close().await;
    Ok(DemoReport {
        dir,
        database_url,
        bookings,
        refused: day.refused,
        deliveries: day.deliveries,
        not_applied,
        messages,
        verify_ok: report.is_ok(),
        verify_summary: format!(
            "{} events in {} streams, chains intact: {}; {} bookings and {} trips equal the fold of their events: {}",
            report.events,
            report.streams,
            report.broken_link.is_none(),
            report.bookings,
            report.trips,
            report.drift.is_empty() && report.messages.is_empty()
        ),
    })
}

/// The day itself.
async fn play(day: &mut Day, config: &Config) -> anyhow::Result<Vec<Ride>> {
    use reqwest::Method;
    let post = Method::POST;
    let departure = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT07:30:00Z")
        .to_string();
    let trip_a = day
        .ok(
            "publish trip A",
            post.clone(),
            "/api/trips",
            "thandi",
            Some(json!({"title": "Stellenbosch to Cape Town CBD", "seats": 3,
                "pricePerSeatCents": 4500, "currency": "zar", "departureTime": departure})),
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let trip_b = day
        .ok(
            "publish trip B",
            post.clone(),
            "/api/trips",
            "pieter",
            Some(json!({"title": "Durbanville to Century City", "seats": 3,
                "pricePerSeatCents": 3800, "currency": "zar", "departureTime": departure})),
        )
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let mut rides = Vec::new();
    for (who, trip, driver) in [
        ("alice", "A", "thandi"),
        ("bob", "A", "thandi"),
        ("carol", "A", "thandi"),
        ("dave", "A", "thandi"),
        ("erin", "B", "pieter"),
        ("frank", "B", "pieter"),
        ("grace", "B", "pieter"),
    ] {
        let (trip_id, fare) = if trip == "A" {
            (trip_a.clone(), 4500)
        } else {
            (trip_b.clone(), 3800)
        };
        let b = day
            .ok(
                &format!("{who} books trip {trip}"),
                post.clone(),
                &format!("/api/trips/{trip_id}/bookings"),
                who,
                Some(json!({"passengers": 1})),
            )
            .await?;
        let booking_id = b["id"].as_str().unwrap_or_default().to_string();
        // Trip A has three seats: the fourth acceptance is refused, and the
        // driver rejects that booking instead.
        let accept = format!("/api/bookings/{booking_id}/accept");
        let (status, _) = day
            .call(
                &format!("{driver} accepts {who}"),
                post.clone(),
                &accept,
                driver,
                None,
            )
            .await?;
        if !(200..300).contains(&status) {
            day.ok(
                &format!("{driver} rejects {who}"),
                post.clone(),
                &format!("/api/bookings/{booking_id}/reject"),
                driver,
                None,
            )
            .await?;
        }
        rides.push(Ride {
            who,
            trip,
            trip_id,
            booking_id,
            fare,
        });
    }
    let pay =
        |r: &Ride| json!({"bookingId": r.booking_id, "amountCents": r.fare, "currency": "zar"});
    let mut pis = std::collections::HashMap::new();
    for r in rides.iter().filter(|r| !matches!(r.who, "dave" | "grace")) {
        let v = day
            .ok(
                &format!("{} pays", r.who),
                post.clone(),
                "/api/payments/intent",
                r.who,
                Some(pay(r)),
            )
            .await?;
        pis.insert(
            r.who,
            v["paymentIntentId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let ride = |who: &str| rides.iter().find(|r| r.who == who);
    let (Some(alice), Some(bob), Some(carol), Some(erin), Some(frank), Some(grace)) = (
        ride("alice"),
        ride("bob"),
        ride("carol"),
        ride("erin"),
        ride("frank"),
        ride("grace"),
    ) else {
        bail!("a rider is missing");
    };
    let pi = |who: &str| pis.get(who).cloned().unwrap_or_default();

    // A tampered amount is refused before Stripe hears of it.
    day.call(
        "erin pays 1 cent",
        post.clone(),
        "/api/payments/intent",
        "erin",
        Some(json!({"bookingId": erin.booking_id, "amountCents": 1, "currency": "zar"})),
    )
    .await?;

    // alice: processing, succeeded, and succeeded again (Stripe retries).
    day.stripe(
        "alice processing",
        "payment_intent.processing",
        intent(&pi("alice"), alice, "processing"),
        None,
    )
    .await?;
    day.events += 1;
    let succeeded = json!({"id": format!("evt_demo_{:03}", day.events), "object": "event",
        "api_version": "2026-04-22.dahlia", "created": day.created + day.events as i64 * 60,
        "livemode": false, "type": "payment_intent.succeeded",
        "data": {"object": intent(&pi("alice"), alice, "succeeded")}})
    .to_string();
    day.deliver("alice succeeded", succeeded.clone(), None)
        .await?;
    day.deliver("alice succeeded (duplicate)", succeeded, None)
        .await?;
    // A forged copy, signed with a secret that is not ours: refused.
    day.stripe(
        "forged payment for alice",
        "payment_intent.succeeded",
        intent(&pi("alice"), alice, "succeeded"),
        Some("whsec_forged_by_someone_else"),
    )
    .await?;

    // bob: the card fails, he retries with a new intent, it succeeds; the
    // first intent's late success is excluded (and asks for a refund);
    // then a partial refund of 15.00.
    let bob_first = pi("bob");
    day.stripe(
        "bob's card fails",
        "payment_intent.payment_failed",
        intent(&bob_first, bob, "requires_payment_method"),
        None,
    )
    .await?;
    let v = day
        .ok(
            "bob pays again",
            post.clone(),
            "/api/payments/intent",
            "bob",
            Some(pay(bob)),
        )
        .await?;
    let bob_second = v["paymentIntentId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    day.stripe(
        "bob succeeded",
        "payment_intent.succeeded",
        intent(&bob_second, bob, "succeeded"),
        None,
    )
    .await?;
    day.stripe(
        "bob's first intent succeeds late",
        "payment_intent.succeeded",
        intent(&bob_first, bob, "succeeded"),
        None,
    )
    .await?;
    day.stripe(
        "bob refunded 15.00",
        "refund.created",
        refund(&bob_second, "re_demo_bob", 1500),
        None,
    )
    .await?;
    day.stripe(
        "bob's charge refunded",
        "charge.refunded",
        charge(&bob_second, bob, 1500),
        None,
    )
    .await?;

    // carol: Stripe created the success, then the full refund an hour
    // later, but delivers the refund first.
    let t = day.events as i64 * 60;
    day.stripe_at(
        "carol's refund (delivered first)",
        "charge.refunded",
        charge(&pi("carol"), carol, 4500),
        None,
        t + 3600,
    )
    .await?;
    day.stripe_at(
        "carol succeeded (delivered late)",
        "payment_intent.succeeded",
        intent(&pi("carol"), carol, "succeeded"),
        None,
        t,
    )
    .await?;

    // erin: a dispute, won. A Stripe event whose metadata names another
    // booking is stored and not applied.
    day.stripe(
        "erin succeeded",
        "payment_intent.succeeded",
        intent(&pi("erin"), erin, "succeeded"),
        None,
    )
    .await?;
    let mut wrong = intent(&pi("erin"), erin, "succeeded");
    wrong["metadata"]["bookingId"] = json!(frank.booking_id);
    day.stripe(
        "erin's intent naming frank's booking",
        "payment_intent.succeeded",
        wrong,
        None,
    )
    .await?;
    day.stripe(
        "erin disputes",
        "charge.dispute.created",
        dispute(&pi("erin"), "dp_demo_erin", 3800, "needs_response"),
        None,
    )
    .await?;
    day.stripe(
        "erin's dispute won",
        "charge.dispute.closed",
        dispute(&pi("erin"), "dp_demo_erin", 3800, "won"),
        None,
    )
    .await?;

    // frank: a dispute, lost: a chargeback.
    day.stripe(
        "frank succeeded",
        "payment_intent.succeeded",
        intent(&pi("frank"), frank, "succeeded"),
        None,
    )
    .await?;
    day.stripe(
        "frank disputes",
        "charge.dispute.created",
        dispute(&pi("frank"), "dp_demo_frank", 3800, "needs_response"),
        None,
    )
    .await?;
    day.stripe(
        "frank's dispute lost",
        "charge.dispute.closed",
        dispute(&pi("frank"), "dp_demo_frank", 3800, "lost"),
        None,
    )
    .await?;

    // grace: Stripe's success arrives before the engine has bound her
    // intent (the offline gateway's ids are deterministic, so the demo
    // knows it in advance); it is kept and judged when the binding lands.
    let gateway = OfflineGateway::new(crate::crypto::hmac_sha256(
        config.jwt_secret.expose().as_bytes(),
        b"klubz-ledger/offline-gateway/v1",
    ));
    let grace_pi = gateway
        .create_intent(&IntentRequest {
            booking_id: grace.booking_id.clone(),
            trip_id: grace.trip_id.clone(),
            user_id: grace.who.to_string(),
            amount_cents: crate::domain::Cents::new(grace.fare)?,
            currency: crate::domain::Currency::parse("zar").map_err(|e| anyhow!("{e}"))?,
            idempotency_key: format!("klubz-intent-{}-1", grace.booking_id),
        })
        .await
        .map_err(|e| anyhow!("{e}"))?
        .payment_intent_id;
    day.stripe(
        "grace succeeded, before her intent is bound",
        "payment_intent.succeeded",
        intent(&grace_pi, grace, "succeeded"),
        None,
    )
    .await?;
    let v = day
        .ok(
            "grace pays",
            post.clone(),
            "/api/payments/intent",
            "grace",
            Some(pay(grace)),
        )
        .await?;
    if v["paymentIntentId"].as_str() != Some(grace_pi.as_str()) {
        bail!("grace's intent is not the one the demo predicted");
    }
    Ok(rides)
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

impl DemoReport {
    pub fn render(&self) -> String {
        let mut out =
            String::from("klubz-ledger demo: one day of two trips, through real HTTP\n\n");
        out.push_str(&format!(
            "{:<7} {:<5} {:<20} {:<10} {:<19} {:>8} {:>9}\n",
            "rider", "trip", "booking", "status", "payment", "fare", "refunded"
        ));
        for b in &self.bookings {
            out.push_str(&format!(
                "{:<7} {:<5} {:<20} {:<10} {:<19} {:>8} {:>9}\n",
                b.who,
                b.trip,
                b.booking_id,
                b.status,
                b.payment_status,
                money(b.amount_cents),
                money(b.refunded_cents)
            ));
        }
        out.push_str(
            "\nStripe's deliveries, in the order they arrived, and the webhook's answers:\n",
        );
        for (what, answer) in &self.deliveries {
            out.push_str(&format!("  {what:<44} {answer}\n"));
        }
        out.push_str("\nRefused (nothing stored, nothing changed):\n");
        for (what, status, code) in &self.refused {
            out.push_str(&format!("  {status} {code:<26} {what}\n"));
        }
        out.push_str("\nStored, not applied to the booking:\n");
        for (who, kind, outcome, reason) in &self.not_applied {
            out.push_str(&format!("  {who:<7} {kind:<28} {outcome:<9} {reason}\n"));
        }
        out.push_str(&format!(
            "\nSide-effect messages delivered to the demo's receiver ({}):\n",
            self.messages.len()
        ));
        for (kind, booking) in &self.messages {
            let who = self
                .bookings
                .iter()
                .find(|b| &b.booking_id == booking)
                .map_or("?", |b| b.who.as_str());
            out.push_str(&format!("  {kind:<24} {who}\n"));
        }
        out.push_str(&format!(
            "\nverify: {} ({})\n",
            if self.verify_ok { "ok" } else { "FAILED" },
            self.verify_summary
        ));
        out.push_str(&format!(
            "\nThe database is kept in {}. Explore it (from this directory, where the\n\
             development secrets file is):\n\
             \x20 DATABASE_URL={url} cargo run --release -p klubz-replay -- verify\n\
             \x20 DATABASE_URL={url} cargo run --release -p klubz-replay -- plan\n\
             \x20 DATABASE_URL={url} cargo run --release -p klubz-replay -- side-effects status\n\
             \x20 DATABASE_URL={url} cargo run --release -p klubz-replay -- audit\n\
             Serve it: DATABASE_URL={url} cargo run --release -- serve\n",
            self.dir.display(),
            url = self.database_url,
        ));
        out
    }
}
