//! `klubz-ledger chaos`: the crash harness (docs/RELIABILITY.md).
//!
//! On a fresh temporary database of the configured kind it runs the real
//! `klubz-ledger serve` binary as a child process and drives it the way a
//! bad day would: keyed API writes (trip, booking, acceptance, payment
//! intent) and signed Stripe webhooks in a shuffled order, concurrently,
//! while it `kill -9`s the server at seeded random moments and starts it
//! again. Every request is retried until it is answered (a webhook is
//! redelivered until acknowledged, an API write retried with its key); at
//! the end some acknowledged ones are sent again. Then, with the server
//! stopped, it checks against the database:
//!
//! - every acknowledged webhook is stored, once; every API write happened
//!   exactly once (one event per write, whatever the retries and kills);
//! - every booking says what its events imply (`paid`), every projection
//!   equals the fold and the hash chains verify (`klubz-replay verify`'s
//!   check), and no side-effect message exists twice;
//! - replays of acknowledged requests were answered as replays.
//!
//! Any problem makes the run fail: a harness that loses an event must not
//! print a success.

use crate::auth::{mint, Role};
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::smoke::TempDatabase;
use crate::store::verify::verify;
use crate::stripe::signature;
use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub kills: usize,
    pub bookings: usize,
    pub concurrency: usize,
    /// Percent of acknowledged requests sent again at the end.
    pub resend_pct: u32,
    /// The `serve` binary (default: this executable).
    pub server_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub backend: &'static str,
    pub seed: u64,
    pub kills: usize,
    pub bookings: usize,
    pub api_writes: usize,
    pub api_attempts: usize,
    /// API retries answered with `idempotent-replayed` (from a stored
    /// response or from the log).
    pub api_replayed: usize,
    pub webhooks: usize,
    pub webhook_attempts: usize,
    pub webhook_replays: usize,
    pub resent: usize,
    pub events_stored: i64,
    pub outbox_messages: usize,
    pub seconds: f64,
    pub problems: Vec<String>,
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = format!(
            "chaos on {} (seed {}): {} kill -9 of serve in {:.1} s\n\
             api writes:  {} acknowledged, {} attempts, {} answered as replays\n\
             webhooks:    {} acknowledged, {} attempts (redeliveries included), {} answered as replays\n\
             resent:      {} acknowledged requests (API writes and webhooks) sent again\n\
             stored:      {} events, {} side-effect messages, {} bookings\n",
            self.backend,
            self.seed,
            self.kills,
            self.seconds,
            self.api_writes,
            self.api_attempts,
            self.api_replayed,
            self.webhooks,
            self.webhook_attempts,
            self.webhook_replays,
            self.resent,
            self.events_stored,
            self.outbox_messages,
            self.bookings,
        );
        if self.problems.is_empty() {
            out.push_str(
                "checks:      every acknowledged event and API write exists exactly once, \
                 projections equal the fold, the chains verify, no message twice: ok\n",
            );
        } else {
            out.push_str(&format!("PROBLEMS ({}):\n", self.problems.len()));
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "backend": self.backend, "seed": self.seed, "kills": self.kills,
            "bookings": self.bookings, "apiWrites": self.api_writes,
            "apiAttempts": self.api_attempts, "apiReplayed": self.api_replayed,
            "webhooks": self.webhooks, "webhookAttempts": self.webhook_attempts,
            "webhookReplays": self.webhook_replays, "resent": self.resent,
            "eventsStored": self.events_stored, "outboxMessages": self.outbox_messages,
            "seconds": self.seconds, "problems": self.problems,
        })
    }
}

const FARE: i64 = 1000;
const WEBHOOK_SECRET: &str = "whsec_test_chaos_harness_secret";

/// The child `serve` process, restarted on the same port.
struct Server {
    exe: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    base: String,
    child: Option<tokio::process::Child>,
    /// Bumped after each (re)start: a client that lost its connection waits
    /// for the next generation instead of spinning.
    generation: watch::Sender<u64>,
}

impl Server {
    async fn start(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("serve")
            .current_dir(self.dir.path())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        self.child = Some(cmd.spawn().context("start serve")?);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!(
                        "serve exited at start ({status}); see {}",
                        self.dir.path().join("serve.log").display()
                    );
                }
            }
            let up = http
                .get(format!("{}/health", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if up {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("serve did not become healthy within 60 s");
            }
            // Polling a starting process: there is nothing to wait on but
            // its port.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: no shutdown hook, no flush, no goodbye.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// What the clients share.
struct Shared {
    http: reqwest::Client,
    base: String,
    generation: watch::Receiver<u64>,
    /// Acknowledged requests so far: the killer's clock.
    acked: AtomicUsize,
    progressed: tokio::sync::Notify,
    api_attempts: AtomicUsize,
    api_replayed: AtomicUsize,
    webhook_attempts: AtomicUsize,
    webhook_replays: AtomicUsize,
}

impl Shared {
    fn ack(&self) {
        self.acked.fetch_add(1, Ordering::SeqCst);
        self.progressed.notify_waiters();
    }

    /// Sends until the server gives an answer that is not a transient
    /// refusal (connection lost, 503): the answer and whether it was a
    /// replay (`idempotent-replayed`).
    async fn until_answered(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
        attempts: &AtomicUsize,
    ) -> (StatusCode, Value, bool) {
        loop {
            let generation = *self.generation.borrow();
            attempts.fetch_add(1, Ordering::Relaxed);
            match build(&self.http, &self.base)
                .timeout(Duration::from_secs(30))
                .send()
                .await
            {
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let _ = r.bytes().await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(r) => {
                    let status = r.status();
                    let replayed = r.headers().contains_key("idempotent-replayed");
                    match r.bytes().await {
                        Ok(bytes) => {
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            return (status, body, replayed);
                        }
                        // Killed while the answer was on its way.
                        Err(_) => self.wait_past(generation).await,
                    }
                }
                Err(_) => self.wait_past(generation).await,
            }
        }
    }

    /// Waits for a server newer than `generation` (or a short while, for
    /// a connection lost without a kill).
    async fn wait_past(&self, generation: u64) {
        let mut rx = self.generation.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|g| *g > generation)).await;
    }
}

/// One booking's path through the API, as the harness recorded it.
#[derive(Debug, Clone, Default)]
struct Booked {
    trip_id: String,
    booking_id: String,
    rider: String,
    payment_intent_id: String,
}

/// An acknowledged API write, kept to send again at the end.
#[derive(Debug, Clone)]
struct ApiWrite {
    token: String,
    path: String,
    key: String,
    body: Option<Value>,
    expect: StatusCode,
    /// The answer's field that names what the write made, and its value.
    field: &'static str,
    made: String,
}

/// A keyed API write: retried with its key until it succeeds. A key still
/// held by a killed request (409 "still in progress") is retried until its
/// deadline has passed and a retry may take it over.
async fn keyed(
    shared: &Shared,
    token: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
    expect: StatusCode,
    problems: &Mutex<Vec<String>>,
) -> Value {
    loop {
        let (status, answer, replayed) = shared
            .until_answered(
                |http, base| {
                    let mut req = http
                        .post(format!("{base}{path}"))
                        .bearer_auth(token)
                        .header("idempotency-key", key);
                    if let Some(b) = &body {
                        req = req.json(b);
                    }
                    req
                },
                &shared.api_attempts,
            )
            .await;
        if status == expect {
            if replayed {
                shared.api_replayed.fetch_add(1, Ordering::Relaxed);
            }
            shared.ack();
            return answer;
        }
        let in_progress = status == StatusCode::CONFLICT
            && answer["error"]["code"] == "IDEMPOTENCY_CONFLICT"
            && answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("still in progress"));
        if !in_progress {
            problems.lock().await.push(format!(
                "POST {path} (key {key}) answered {status} {answer}, expected {expect}"
            ));
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one keyed write (token, path, key) until it succeeds, and keeps
/// it, with what it made (the answer's `field`), to send again at the end.
async fn send_write(
    shared: &Shared,
    writes: &mut Vec<ApiWrite>,
    (token, path, key): (&str, String, String),
    body: Option<Value>,
    (expect, field): (StatusCode, &'static str),
    problems: &Mutex<Vec<String>>,
) -> Value {
    let answer = keyed(shared, token, &path, &key, body.clone(), expect, problems).await;
    writes.push(ApiWrite {
        token: token.to_string(),
        path,
        key,
        body,
        expect,
        field,
        made: text(&answer, field),
    });
    answer
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

async fn book(
    shared: &Shared,
    jwt: &str,
    seed: u64,
    n: usize,
    problems: &Mutex<Vec<String>>,
) -> anyhow::Result<(Booked, Vec<ApiWrite>)> {
    let now = chrono::Utc::now().timestamp();
    let driver = mint(
        jwt,
        &format!("chaos-driver-{n}"),
        Role::User,
        None,
        now,
        86_400,
    )?;
    let rider_id = format!("chaos-rider-{n}");
    let rider = mint(jwt, &rider_id, Role::User, None, now, 86_400)?;
    let k = |what: &str| format!("chaos-{seed}-{what}-{n}");
    let ok = StatusCode::OK;
    let created = StatusCode::CREATED;
    let mut writes = Vec::new();
    let trip = send_write(
        shared,
        &mut writes,
        (driver.as_str(), "/api/trips".into(), k("trip")),
        Some(json!({"title": format!("chaos trip {n}"), "seats": 2,
            "pricePerSeatCents": FARE, "currency": "zar",
            "departureTime": "2030-01-01T08:00:00Z"})),
        (created, "id"),
        problems,
    )
    .await;
    let trip_id = text(&trip, "id");
    let path = format!("/api/trips/{trip_id}/bookings");
    let booking = send_write(
        shared,
        &mut writes,
        (rider.as_str(), path, k("booking")),
        Some(json!({"passengers": 1})),
        (created, "id"),
        problems,
    )
    .await;
    let booking_id = text(&booking, "id");
    let path = format!("/api/bookings/{booking_id}/accept");
    let target = (driver.as_str(), path, k("accept"));
    send_write(shared, &mut writes, target, None, (ok, "id"), problems).await;
    let intent = send_write(
        shared,
        &mut writes,
        (rider.as_str(), "/api/payments/intent".into(), k("intent")),
        Some(json!({"bookingId": booking_id, "amountCents": FARE, "currency": "zar"})),
        (ok, "paymentIntentId"),
        problems,
    )
    .await;
    let payment_intent_id = text(&intent, "paymentIntentId");
    Ok((
        Booked {
            trip_id,
            booking_id,
            rider: rider_id,
            payment_intent_id,
        },
        writes,
    ))
}

/// The three webhooks of a booking: processing, succeeded, and a type the
/// engine does not handle.
fn webhooks(b: &Booked, created: i64) -> Vec<(String, Vec<u8>)> {
    (0..3)
        .map(|i| {
            let body = crate::loadgen::script_body(
                &b.booking_id,
                &b.trip_id,
                &b.rider,
                &b.payment_intent_id,
                i,
                0,
                created,
            );
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .map(|v| text(&v, "id"))
                .unwrap_or_default();
            (id, body)
        })
        .collect()
}

async fn deliver(shared: &Shared, body: &[u8]) -> (StatusCode, Value) {
    let (status, answer, _) = shared
        .until_answered(
            |http, base| {
                let t = chrono::Utc::now().timestamp();
                http.post(format!("{base}/api/payments/webhook"))
                    .header("content-type", "application/json")
                    .header(
                        "stripe-signature",
                        signature::header(WEBHOOK_SECRET, t, body),
                    )
                    .body(body.to_vec())
            },
            &shared.webhook_attempts,
        )
        .await;
    (status, answer)
}

/// Runs `items` through `concurrency` tasks.
async fn each<T, F, Fut>(items: Vec<T>, concurrency: usize, work: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(Mutex::new(items.into_iter()));
    let work = Arc::new(work);
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (queue, work) = (queue.clone(), work.clone());
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().await.next();
                    match next {
                        Some(item) => work(item).await,
                        None => break,
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

pub async fn run(config: &Config, opts: &Options) -> anyhow::Result<Report> {
    let db = TempDatabase::create(&config.database_url).await?;
    let result = scenario(db.url(), opts).await;
    db.drop_database().await;
    result
}

async fn scenario(url: &str, opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let backend = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let key_hex = hex::encode(rng.gen::<[u8; 32]>());
    let jwt = format!("chaos-jwt-{}", hex::encode(rng.gen::<[u8; 24]>()));
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", url.to_string()),
        ("BIND_ADDR", format!("127.0.0.1:{port}")),
        ("ENVIRONMENT", "development".into()),
        ("JWT_SECRET", jwt.clone()),
        ("ENCRYPTION_KEY", key_hex.clone()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        (
            "NOTIFY_SECRET",
            "chaos-notify-secret-0123456789abcdef".into(),
        ),
        ("REQUEST_TIMEOUT_MS", "1000".into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let exe = match &opts.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("this executable")?,
    };
    let (generation, generation_rx) = watch::channel(0u64);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let mut server = Server {
        exe,
        env,
        dir: tempfile::tempdir()?,
        base: base.clone(),
        child: None,
        generation,
    };
    server.start(&http).await?;

    let shared = Arc::new(Shared {
        http,
        base,
        generation: generation_rx,
        acked: AtomicUsize::new(0),
        progressed: tokio::sync::Notify::new(),
        api_attempts: AtomicUsize::new(0),
        api_replayed: AtomicUsize::new(0),
        webhook_attempts: AtomicUsize::new(0),
        webhook_replays: AtomicUsize::new(0),
    });
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));

    // The kill points: seeded, spread over every request to be acknowledged.
    let total = opts.bookings * 7;
    let mut points: BTreeSet<usize> = BTreeSet::new();
    while points.len() < opts.kills.min(total.saturating_sub(1)) {
        points.insert(rng.gen_range(1..total));
    }
    let (done_tx, mut done_rx) = watch::channel(false);
    let killer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            for point in points {
                loop {
                    let notified = shared.progressed.notified();
                    if shared.acked.load(Ordering::SeqCst) >= point || *done_rx.borrow() {
                        break;
                    }
                    tokio::select! {
                        () = notified => {}
                        _ = done_rx.changed() => {}
                    }
                }
                if *done_rx.borrow() {
                    break;
                }
                server.kill().await;
                kills += 1;
                if let Err(e) = server.start(&shared.http).await {
                    return (server, kills, Some(e));
                }
            }
            (server, kills, None)
        })
    };

    // The API: every booking's four keyed writes.
    let booked = Arc::new(Mutex::new(BTreeMap::<usize, (Booked, Vec<ApiWrite>)>::new()));
    {
        let (shared, problems, booked) = (shared.clone(), problems.clone(), booked.clone());
        let (jwt, seed) = (jwt.clone(), opts.seed);
        each((0..opts.bookings).collect(), opts.concurrency, move |n| {
            let (shared, problems, booked, jwt) = (
                shared.clone(),
                problems.clone(),
                booked.clone(),
                jwt.clone(),
            );
            async move {
                match book(&shared, &jwt, seed, n, &problems).await {
                    Ok(b) => {
                        booked.lock().await.insert(n, b);
                    }
                    Err(e) => problems.lock().await.push(format!("booking {n}: {e}")),
                }
            }
        })
        .await;
    }
    let (booked, api_writes): (Vec<Booked>, Vec<Vec<ApiWrite>>) =
        booked.lock().await.values().cloned().unzip();
    let api_writes: Vec<ApiWrite> = api_writes.into_iter().flatten().collect();

    // The webhooks, shuffled, each redelivered until acknowledged.
    let created = chrono::Utc::now().timestamp() - 3600;
    let mut deliveries: Vec<(String, Vec<u8>)> =
        booked.iter().flat_map(|b| webhooks(b, created)).collect();
    deliveries.shuffle(&mut rng);
    let acked_events = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    {
        let (shared, problems, acked_events) =
            (shared.clone(), problems.clone(), acked_events.clone());
        each(deliveries, opts.concurrency, move |(id, body)| {
            let (shared, problems, acked_events) =
                (shared.clone(), problems.clone(), acked_events.clone());
            async move {
                let (status, answer) = deliver(&shared, &body).await;
                if status == StatusCode::OK {
                    if answer["replay"] == json!(true) {
                        shared.webhook_replays.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.ack();
                    acked_events.lock().await.push((id, body));
                } else {
                    problems
                        .lock()
                        .await
                        .push(format!("webhook {id} answered {status} {answer}"));
                }
            }
        })
        .await;
    }
    let _ = done_tx.send(true);
    let (mut server, kills, start_error) = killer.await.context("the killer task")?;
    if let Some(e) = start_error {
        return Err(e.context("restart after kill -9"));
    }

    // Some acknowledged API writes again, with their keys: each must be
    // answered as a replay naming what the first one made.
    let mut resent = 0;
    for w in &api_writes {
        if rng.gen_range(0..100) >= opts.resend_pct {
            continue;
        }
        resent += 1;
        let (status, answer, replayed) = shared
            .until_answered(
                |http, base| {
                    let mut req = http
                        .post(format!("{base}{}", w.path))
                        .bearer_auth(&w.token)
                        .header("idempotency-key", &w.key);
                    if let Some(b) = &w.body {
                        req = req.json(b);
                    }
                    req
                },
                &shared.api_attempts,
            )
            .await;
        if status != w.expect || !replayed || text(&answer, w.field) != w.made {
            problems.lock().await.push(format!(
                "acknowledged POST {} (key {}) sent again answered {status} (replayed: {replayed}) {answer}, \
                 not a replay of {}",
                w.path, w.key, w.made
            ));
        }
    }
    // Some acknowledged webhooks again: each must be a replay.
    let acked_events: Vec<(String, Vec<u8>)> = acked_events.lock().await.clone();
    for (id, body) in &acked_events {
        if rng.gen_range(0..100) >= opts.resend_pct {
            continue;
        }
        resent += 1;
        let (status, answer) = deliver(&shared, body).await;
        if status != StatusCode::OK || answer["replay"] != json!(true) {
            problems.lock().await.push(format!(
                "acknowledged webhook {id} sent again answered {status} {answer}, not a replay"
            ));
        }
    }
    server.kill().await;

    // The checks, against the database.
    let master = MasterKey::parse_hex(&key_hex).context("the harness key")?;
    let store = crate::store::open(url, master.chain_key()).await?;
    let mut report = Report {
        backend,
        seed: opts.seed,
        kills,
        bookings: booked.len(),
        api_writes: booked.len() * 4,
        api_attempts: shared.api_attempts.load(Ordering::Relaxed),
        api_replayed: shared.api_replayed.load(Ordering::Relaxed),
        webhooks: acked_events.len(),
        webhook_attempts: shared.webhook_attempts.load(Ordering::Relaxed),
        webhook_replays: shared.webhook_replays.load(Ordering::Relaxed),
        resent,
        ..Report::default()
    };
    let mut problems = std::mem::take(&mut *problems.lock().await);
    let stats = store.stats().await?;
    let count = |kind: &str| -> i64 {
        stats
            .events
            .iter()
            .filter(|(k, _, _)| k == kind)
            .map(|(_, _, n)| n)
            .sum()
    };
    let n = booked.len() as i64;
    for kind in [
        "TripPublished",
        "BookingRequested",
        "BookingAccepted",
        "PaymentIntentBound",
    ] {
        if count(kind) != n {
            problems.push(format!(
                "{} {kind} events for {n} acknowledged API writes (each must happen exactly once)",
                count(kind)
            ));
        }
    }
    if count("StripeEventReceived") != acked_events.len() as i64 {
        problems.push(format!(
            "{} Stripe events stored for {} acknowledged",
            count("StripeEventReceived"),
            acked_events.len()
        ));
    }
    let mut stored_keys = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = store.read_after(after, 5000).await?;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        report.events_stored += page.len() as i64;
        for e in page {
            if !stored_keys.insert(e.idempotency_key.clone()) {
                problems.push(format!("key {} stored twice", e.idempotency_key));
            }
        }
        after = last;
    }
    for (id, _) in &acked_events {
        if !stored_keys.contains(&format!("stripe:{id}")) {
            problems.push(format!("acknowledged webhook {id} is not stored"));
        }
    }
    for b in &booked {
        match store.booking(&b.booking_id).await? {
            Some(v)
                if v.payment_status.to_string() == "paid" && v.status.to_string() == "accepted" => {
            }
            other => problems.push(format!(
                "booking {} should be accepted and paid: {other:?}",
                b.booking_id
            )),
        }
        let messages = store
            .list_outbox(&crate::store::OutboxFilter {
                booking_id: Some(b.booking_id.clone()),
                limit: 100,
                ..Default::default()
            })
            .await?;
        report.outbox_messages += messages.len();
        for kind in ["booking_accepted", "payment_succeeded"] {
            let k = messages.iter().filter(|m| m.kind == kind).count();
            if k != 1 {
                problems.push(format!(
                    "booking {}: {k} {kind} messages, expected exactly one",
                    b.booking_id
                ));
            }
        }
    }
    let verified = verify(store.as_ref(), &master.chain_key()).await?;
    if !verified.is_ok() {
        problems.push(format!("verify failed: {verified:?}"));
    }
    store.close().await;
    report.problems = problems;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
