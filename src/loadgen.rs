//! `klubz-ledger loadgen`: a load generator that checks what it measured.
//!
//! Against a running engine (same secrets as the engine: it mints tokens
//! and signs webhooks like Stripe), it creates bookings through the API,
//! then sends each booking's Stripe events as signed webhooks from
//! `concurrency` keep-alive connections (optionally shuffled, optionally
//! with duplicates), recording every answer's latency in an HDR histogram.
//! A 503 is retried, as Stripe would. At the end it reads every booking
//! back and compares it with what its events imply: a run that lost or
//! misapplied an event fails, whatever its speed.

use crate::auth::{mint, Role};
use crate::stripe::signature;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub bookings: usize,
    /// Webhooks in all (spread over the bookings, at most
    /// [`SCRIPT_LEN`] each).
    pub events: usize,
    pub concurrency: usize,
    /// Percent of the events sent a second time.
    pub duplicates: u8,
    pub shuffle: bool,
    pub jwt_secret: String,
    pub webhook_secret: String,
    pub seed: u64,
    /// Test knob (not on the command line): never send this event, to
    /// prove that the read-back check notices.
    pub drop_event: Option<usize>,
}

/// The events of one booking, in the order they happen.
pub const SCRIPT_LEN: usize = 5;
const FARE: i64 = 1000;
const PARTIAL_REFUND: i64 = 400;

/// What a run measured and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub bookings: usize,
    pub setup_seconds: f64,
    pub setup_requests: usize,
    pub sent: usize,
    pub acked: usize,
    pub replays: usize,
    pub retried_503: usize,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Non-2xx answers that were final, by status.
    pub failures: BTreeMap<u16, usize>,
    /// The read-back: `GET /api/bookings/:id` once per booking, at the
    /// run's concurrency.
    pub reads: usize,
    pub read_seconds: f64,
    /// Bookings whose state differs from what their events imply.
    pub mismatches: Vec<String>,
}

impl Report {
    pub fn events_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.acked as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && self.failures.is_empty() && self.acked == self.sent
    }

    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "bookings": self.bookings,
            "setupSeconds": self.setup_seconds,
            "setupRequestsPerSecond": per_second(self.setup_requests, self.setup_seconds),
            "sent": self.sent,
            "acked": self.acked,
            "replays": self.replays,
            "retried503": self.retried_503,
            "seconds": self.seconds,
            "eventsPerSecond": self.events_per_second(),
            "latencyMs": {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms, "max": self.max_ms},
            "readsPerSecond": per_second(self.reads, self.read_seconds),
            "failures": self.failures.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "mismatches": self.mismatches,
        })
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "setup: {} bookings through the API in {:.2} s ({:.0} requests/s)\n\
             ingest: {} webhooks, {} acknowledged ({} replays, {} retried after 503) in {:.2} s: {:.0} events/s\n\
             latency ms: p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2}\n\
             read back: {} bookings in {:.2} s ({:.0} reads/s)\n",
            self.bookings,
            self.setup_seconds,
            per_second(self.setup_requests, self.setup_seconds),
            self.sent,
            self.acked,
            self.replays,
            self.retried_503,
            self.seconds,
            self.events_per_second(),
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.max_ms,
            self.reads,
            self.read_seconds,
            per_second(self.reads, self.read_seconds)
        );
        for (status, n) in &self.failures {
            out.push_str(&format!("FAILED: {n} answers {status}\n"));
        }
        for m in &self.mismatches {
            out.push_str(&format!("MISMATCH {m}\n"));
        }
        out.push_str(if self.ok() {
            "read back: every booking matches its events\n"
        } else {
            "loadgen FAILED\n"
        });
        out
    }
}

fn per_second(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// One booking created for the run.
#[derive(Debug, Clone)]
struct Booked {
    trip_id: String,
    booking_id: String,
    rider: String,
    payment_intent_id: String,
}

/// The i-th event of a booking's script: processing, succeeded, an
/// unhandled `charge.succeeded`, a partial refund (`refund.created`) and
/// its cumulative `charge.refunded`.
fn script_event(b: &Booked, i: usize, n: usize, created: i64) -> Value {
    let pi = &b.payment_intent_id;
    let meta = json!({"bookingId": b.booking_id, "tripId": b.trip_id, "userId": b.rider});
    let intent = json!({"id": pi, "object": "payment_intent", "amount": FARE, "currency": "zar",
        "status": "requires_payment_method", "metadata": meta,
        "description": "loadgen payment, padded like a real body ".repeat(8)});
    let (kind, t, object) = match i {
        0 => ("payment_intent.processing", created, intent),
        1 => ("payment_intent.succeeded", created + 1, intent),
        2 => (
            "charge.succeeded",
            created + 1,
            json!({"id": format!("ch_{pi}"), "object": "charge", "payment_intent": pi,
                   "amount": FARE, "currency": "zar", "metadata": meta}),
        ),
        3 => (
            "refund.created",
            created + 2,
            json!({"id": format!("re_{pi}"), "object": "refund", "payment_intent": pi,
                   "amount": PARTIAL_REFUND, "currency": "zar", "status": "succeeded"}),
        ),
        _ => (
            "charge.refunded",
            created + 2,
            json!({"id": format!("ch_{pi}"), "object": "charge", "payment_intent": pi,
                   "amount": FARE, "currency": "zar", "amount_refunded": PARTIAL_REFUND}),
        ),
    };
    json!({
        "id": format!("evt_lg_{n}_{}_{i}", b.booking_id),
        "object": "event",
        "api_version": "2026-04-22.dahlia",
        "created": t,
        "livemode": false,
        "type": kind,
        "data": {"object": object},
    })
}

/// The `i`-th webhook body of a booking's script, for callers that drive
/// the store without HTTP (`bench`): the same bodies `loadgen` sends.
pub(crate) fn script_body(
    booking_id: &str,
    trip_id: &str,
    rider: &str,
    payment_intent_id: &str,
    i: usize,
    run: usize,
    created: i64,
) -> Vec<u8> {
    let b = Booked {
        trip_id: trip_id.to_string(),
        booking_id: booking_id.to_string(),
        rider: rider.to_string(),
        payment_intent_id: payment_intent_id.to_string(),
    };
    script_event(&b, i, run, created).to_string().into_bytes()
}

/// What a booking must say after the first `k` events of its script.
fn expected(k: usize) -> (&'static str, i64) {
    match k {
        0 => ("pending", 0),
        1 => ("processing", 0),
        2 | 3 => ("paid", 0),
        _ => ("partially_refunded", PARTIAL_REFUND),
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!("{path}: {status} {v}"))
        }
    }
}

fn token(secret: &str, sub: &str) -> Result<String, String> {
    mint(
        secret,
        sub,
        Role::User,
        Some("loadgen"),
        chrono::Utc::now().timestamp(),
        3600,
    )
    .map_err(|e| e.to_string())
}

async fn book(client: &Client, secret: &str, n: usize, run: u64) -> Result<Booked, String> {
    let driver = token(secret, &format!("lg-driver-{run}-{n}"))?;
    let rider_id = format!("lg-rider-{run}-{n}");
    let rider = token(secret, &rider_id)?;
    let post = reqwest::Method::POST;
    let trip = client
        .send(
            post.clone(),
            "/api/trips",
            &driver,
            Some(json!({
            "title": format!("loadgen trip {n}"), "seats": 4, "pricePerSeatCents": FARE,
            "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"})),
        )
        .await?;
    let trip_id = trip["id"].as_str().unwrap_or_default().to_string();
    let booking = client
        .send(
            post.clone(),
            &format!("/api/trips/{trip_id}/bookings"),
            &rider,
            Some(json!({"passengers": 1})),
        )
        .await?;
    let booking_id = booking["id"].as_str().unwrap_or_default().to_string();
    client
        .send(
            post.clone(),
            &format!("/api/bookings/{booking_id}/accept"),
            &driver,
            None,
        )
        .await?;
    let intent = client
        .send(
            post,
            "/api/payments/intent",
            &rider,
            Some(json!({
            "bookingId": booking_id, "amountCents": FARE, "currency": "zar"})),
        )
        .await?;
    Ok(Booked {
        trip_id,
        booking_id,
        rider: rider_id,
        payment_intent_id: intent["paymentIntentId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Runs `jobs` through `concurrency` tasks.
async fn pool<T: Send + 'static, R: Send + 'static, F, Fut>(
    jobs: Vec<T>,
    concurrency: usize,
    work: F,
) -> Vec<R>
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send,
{
    let queue = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>()));
    queue.lock().map(|mut q| q.reverse()).ok();
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((i, job)) = next else { break };
                out.push((i, work(job).await));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(part) = t.await {
            all.extend(part);
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// What one webhook delivery ended as.
struct Delivery {
    status: u16,
    replay: bool,
    retried: usize,
    micros: u64,
}

pub async fn run(opts: Options) -> Result<Report, String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let client = Arc::new(Client {
        http,
        base: opts.url.trim_end_matches('/').to_string(),
    });
    let run_id = opts.seed;
    let mut report = Report {
        bookings: opts.bookings,
        ..Report::default()
    };

    // 1. Bookings through the API.
    let started = Instant::now();
    let secret = opts.jwt_secret.clone();
    let c = client.clone();
    let booked: Vec<Result<Booked, String>> =
        pool((0..opts.bookings).collect(), opts.concurrency, move |n| {
            let c = c.clone();
            let secret = secret.clone();
            async move { book(&c, &secret, n, run_id).await }
        })
        .await;
    report.setup_seconds = started.elapsed().as_secs_f64();
    report.setup_requests = opts.bookings * 4;
    let booked: Vec<Booked> = booked.into_iter().collect::<Result<_, _>>()?;

    // 2. The events: each booking's script prefix, then shuffled and
    //    duplicated on request.
    let per_booking = if opts.bookings == 0 {
        0
    } else {
        opts.events.div_ceil(opts.bookings).min(SCRIPT_LEN)
    };
    let created = chrono::Utc::now().timestamp() - 60;
    let mut events: Vec<(usize, usize, Value)> = Vec::new();
    for (b, booking) in booked.iter().enumerate() {
        for i in 0..per_booking {
            events.push((b, i, script_event(booking, i, run_id as usize, created)));
        }
    }
    let mut rng = Lcg(opts.seed | 1);
    if opts.shuffle {
        for i in (1..events.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            events.swap(i, j);
        }
    }
    if let Some(d) = opts.drop_event {
        if d < events.len() {
            events.remove(d);
        }
    }
    let duplicates = events.len() * usize::from(opts.duplicates.min(100)) / 100;
    for k in 0..duplicates {
        let pick = (rng.next() as usize + k) % events.len().max(1);
        let copy = events[pick].clone();
        let at = (rng.next() as usize) % (events.len() + 1);
        events.insert(at, copy);
    }
    report.sent = events.len();

    // 3. Deliver.
    let secret = opts.webhook_secret.clone();
    let c = client.clone();
    let started = Instant::now();
    let bodies: Vec<Vec<u8>> = events
        .iter()
        .map(|(_, _, v)| serde_json::to_vec(v).unwrap_or_default())
        .collect();
    let results: Vec<Delivery> = pool(bodies, opts.concurrency, move |body| {
        let c = c.clone();
        let secret = secret.clone();
        async move { deliver(&c, &secret, body).await }
    })
    .await;
    report.seconds = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for r in &results {
        let _ = hist.record(r.micros.max(1));
        report.retried_503 += r.retried;
        if (200..300).contains(&r.status) {
            report.acked += 1;
            if r.replay {
                report.replays += 1;
            }
        } else {
            *report.failures.entry(r.status).or_default() += 1;
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    report.p50_ms = ms(0.50);
    report.p95_ms = ms(0.95);
    report.p99_ms = ms(0.99);
    report.max_ms = hist.max() as f64 / 1000.0;

    // 4. Read back.
    // Every booking must say what its whole script implies: an event the
    // engine lost (or, with the test knob, that was never sent) shows here.
    // Timed: the reads/s figure. Tokens are minted before the clock starts,
    // so the figure is the server's, not this client's signing.
    let (want_status, want_refunded) = expected(per_booking);
    let reads: Vec<(Booked, String)> = booked
        .into_iter()
        .map(|b| token(&opts.jwt_secret, &b.rider).map(|t| (b, t)))
        .collect::<Result<_, _>>()?;
    report.reads = reads.len();
    let c = client.clone();
    let started = Instant::now();
    let read: Vec<Option<String>> = pool(reads, opts.concurrency, move |(b, rider)| {
        let c = c.clone();
        async move {
            match c
                .send(reqwest::Method::GET, &format!("/api/bookings/{}", b.booking_id), &rider, None)
                .await
            {
                Ok(v) if v["paymentStatus"] == want_status
                    && v["amountRefundedCents"] == json!(want_refunded) => None,
                Ok(v) => Some(format!(
                    "booking {}: {} with {} refunded, its events imply {want_status} with {want_refunded}",
                    b.booking_id, v["paymentStatus"], v["amountRefundedCents"]
                )),
                Err(e) => Some(e),
            }
        }
    })
    .await;
    report.read_seconds = started.elapsed().as_secs_f64();
    report.mismatches = read.into_iter().flatten().collect();
    Ok(report)
}

async fn deliver(client: &Client, secret: &str, body: Vec<u8>) -> Delivery {
    let url = format!("{}/api/payments/webhook", client.base);
    let mut retried = 0;
    loop {
        let started = Instant::now();
        let sig = signature::header(secret, chrono::Utc::now().timestamp(), &body);
        let answer = client
            .http
            .post(&url)
            .header("stripe-signature", sig)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let micros = started.elapsed().as_micros() as u64;
        match answer {
            Ok(res) if res.status().as_u16() == 503 && retried < 5 => {
                retried += 1;
                tokio::time::sleep(Duration::from_millis(50 * retried as u64)).await;
            }
            Ok(res) => {
                let status = res.status().as_u16();
                let v: Value = res.json().await.unwrap_or(Value::Null);
                return Delivery {
                    status,
                    replay: v["replay"] == json!(true),
                    retried,
                    micros,
                };
            }
            Err(_) if retried < 5 => {
                retried += 1;
                tokio::time::sleep(Duration::from_millis(50 * retried as u64)).await;
            }
            Err(_) => {
                return Delivery {
                    status: 0,
                    replay: false,
                    retried,
                    micros,
                }
            }
        }
    }
}

/// A small deterministic generator for shuffling (the run is reproducible
/// from its seed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }
}
