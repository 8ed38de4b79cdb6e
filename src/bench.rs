//! `klubz-ledger bench`: where the engine stands against its storage, in one
//! run, on fresh temporary databases of the configured kind.
//!
//! 1. **Storage baseline**: bare rows of an event's size (an idempotency key
//!    under a unique index, a 600-byte payload, an 1 800-byte blob like an
//!    encrypted webhook body) with the engine's durability (SQLite WAL with
//!    `synchronous=FULL` and the writer's page cache; PostgreSQL's default
//!    synchronous commit), 64 rows
//!    per commit, by the plainest fast method: prepared inserts on one
//!    rusqlite connection; on PostgreSQL `UNNEST` inserts from four
//!    connections so commits overlap.
//! 2. **Append + project in process**: bookings set up through the store,
//!    then the webhook bodies `loadgen` sends, each through the engine's own
//!    ingest (parse, encrypt, append, project) from 64 tasks.
//! 3. **HTTP ingest**: `loadgen` against a server started on a free port,
//!    on its own fresh database; its read-back check must pass.
//! 4. **Rebuild**: every projection recomputed from the log of step 2 in one
//!    pass ([`crate::domain::rebuild`]), against a plain scan of the same
//!    log; the rebuilt bookings and trips must equal the stored ones.
//!
//! Every figure is a rate over wall time; ratios are against the baseline
//! (steps 2, 3) and the scan (step 4) measured in the same run.

use crate::config::{Config, Secret};
use crate::domain::decide::{BindPaymentIntent, PublishTrip, RequestBooking};
use crate::domain::rebuild::Rebuild;
use crate::domain::{Cents, Command, Currency, Source};
use crate::http::{self, AppState};
use crate::projection::BookingView;
use crate::smoke::TempDatabase;
use crate::store::migrations::Dialect;
use crate::store::{self, EventStore, Submission};
use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// How much to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events in the in-process log (step 2; step 4 rebuilds it) and bare
    /// rows of the baseline (step 1).
    pub events: usize,
    /// Webhooks sent over HTTP (step 3), three per booking.
    pub http_events: usize,
    /// Producers: tasks in process, connections over HTTP.
    pub concurrency: usize,
}

/// Events of one booking in the in-process log: request, accept, bind, and
/// three webhooks (a trip per 50 bookings adds its own).
const EVENTS_PER_BOOKING: usize = 6;
const WEBHOOKS_PER_BOOKING: usize = 3;
const BOOKINGS_PER_TRIP: usize = 50;
const FARE: i64 = 1000;
/// Rows per commit in the baseline: what 64 producers give a group commit.
const BASELINE_BATCH: usize = 64;
const BASELINE_PG_CONNECTIONS: usize = 4;
/// Events handed from the rebuild's reader to its folder at a time.
const REBUILD_PAGE: usize = 1000;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: &'static str,
    pub count: u64,
    pub seconds: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// What the ratio is against, and the ratio.
    pub ratio: Option<(&'static str, f64)>,
}

impl Figure {
    fn new(name: &'static str, count: u64, seconds: f64) -> Self {
        Self {
            name,
            count,
            seconds,
            p50_ms: None,
            p99_ms: None,
            ratio: None,
        }
    }

    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.count as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn against(mut self, name: &'static str, base: &Figure) -> Self {
        let b = base.per_second();
        if b > 0.0 {
            self.ratio = Some((name, self.per_second() / b));
        }
        self
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub backend: &'static str,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "backend": self.backend,
            "figures": self.figures.iter().map(|f| json!({
                "name": f.name,
                "count": f.count,
                "seconds": f.seconds,
                "perSecond": f.per_second(),
                "p50Ms": f.p50_ms,
                "p99Ms": f.p99_ms,
                "ratioAgainst": f.ratio.map(|(n, _)| n),
                "ratio": f.ratio.map(|(_, r)| r),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "klubz-ledger bench ({}):\n{:<34} {:>9} {:>8} {:>12} {:>16} {}\n",
            self.backend, "figure", "count", "seconds", "per second", "latency p50/p99", "ratio"
        );
        for f in &self.figures {
            let latency = match (f.p50_ms, f.p99_ms) {
                (Some(a), Some(b)) => format!("{a:.1}/{b:.1} ms"),
                _ => String::new(),
            };
            let ratio = f
                .ratio
                .map(|(n, r)| format!("{r:.2} of {n}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<34} {:>9} {:>8.2} {:>12.0} {:>16} {}\n",
                f.name,
                f.count,
                f.seconds,
                f.per_second(),
                latency,
                ratio
            ));
        }
        out
    }
}

/// Runs the four steps; fails if any step's result is wrong (a lost or
/// misapplied event, a rebuild that differs from the projections).
pub async fn run(config: &Config, opts: &Options) -> anyhow::Result<Report> {
    let backend = match Dialect::of_url(&config.database_url) {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    };
    let mut figures = Vec::new();

    let db = TempDatabase::create(&config.database_url).await?;
    let baseline = baseline(db.url(), opts.events.max(BASELINE_BATCH)).await;
    db.drop_database().await;
    let baseline = baseline?;
    figures.push(baseline.clone());

    let db = TempDatabase::create(&config.database_url).await?;
    let in_process = in_process(db.url(), config, opts).await;
    let (append, scan, rebuild) = match in_process {
        Ok(figs) => figs,
        Err(e) => {
            db.drop_database().await;
            return Err(e);
        }
    };
    db.drop_database().await;
    figures.push(append.against("baseline", &baseline));

    let db = TempDatabase::create(&config.database_url).await?;
    let ingest = http_ingest(db.url(), config, opts).await;
    db.drop_database().await;
    figures.push(ingest?.against("baseline", &baseline));

    figures.push(scan.clone());
    figures.push(rebuild.against("scan", &scan));
    Ok(Report { backend, figures })
}

/// Step 1.
async fn baseline(url: &str, rows: usize) -> anyhow::Result<Figure> {
    let payload = "p".repeat(600);
    let blob = vec![7u8; 1800];
    match Dialect::of_url(url) {
        Dialect::Sqlite => {
            let path = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
                .context("the SQLite URL")?
                .get_filename()
                .to_path_buf();
            tokio::task::spawn_blocking(move || -> anyhow::Result<Figure> {
                let conn = rusqlite::Connection::open(&path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "FULL")?;
                // The page cache the engine's writer has: a smaller one makes
                // the baseline read its own index back from the kernel.
                conn.pragma_update(None, "cache_size", -crate::store::sqlite_writer::CACHE_KIB)?;
                conn.execute_batch(
                    "CREATE TABLE bare (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, \
                     payload TEXT NOT NULL, raw BLOB NOT NULL)",
                )?;
                let start = Instant::now();
                let mut done = 0;
                while done < rows {
                    conn.execute_batch("BEGIN")?;
                    {
                        let mut stmt = conn.prepare_cached(
                            "INSERT INTO bare (key, payload, raw) VALUES (?1, ?2, ?3)",
                        )?;
                        for i in done..(done + BASELINE_BATCH).min(rows) {
                            stmt.execute(rusqlite::params![
                                format!("stripe:evt_{:016x}", scramble(i)),
                                payload,
                                blob
                            ])?;
                        }
                    }
                    conn.execute_batch("COMMIT")?;
                    done = (done + BASELINE_BATCH).min(rows);
                }
                Ok(Figure::new(
                    "storage baseline (bare rows)",
                    rows as u64,
                    start.elapsed().as_secs_f64(),
                ))
            })
            .await?
        }
        Dialect::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(BASELINE_PG_CONNECTIONS as u32)
                .connect(url)
                .await?;
            sqlx::query(
                "CREATE TABLE bare (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                 key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, raw BYTEA NOT NULL)",
            )
            .execute(&pool)
            .await?;
            let start = Instant::now();
            let batches: Vec<usize> = (0..rows).step_by(BASELINE_BATCH).collect();
            let per = batches.len().div_ceil(BASELINE_PG_CONNECTIONS);
            let mut tasks = Vec::new();
            for part in batches.chunks(per.max(1)) {
                let (pool, part, payload, blob) =
                    (pool.clone(), part.to_vec(), payload.clone(), blob.clone());
                tasks.push(tokio::spawn(async move {
                    for first in part {
                        let range = first..(first + BASELINE_BATCH).min(rows);
                        let keys: Vec<String> = range
                            .clone()
                            .map(|i| format!("stripe:evt_{:016x}", scramble(i)))
                            .collect();
                        let payloads = vec![payload.clone(); keys.len()];
                        let blobs = vec![blob.clone(); keys.len()];
                        sqlx::query(
                            "INSERT INTO bare (key, payload, raw) \
                             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])",
                        )
                        .bind(keys)
                        .bind(payloads)
                        .bind(blobs)
                        .execute(&pool)
                        .await?;
                    }
                    Ok::<(), sqlx::Error>(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            let seconds = start.elapsed().as_secs_f64();
            pool.close().await;
            Ok(Figure::new(
                "storage baseline (bare rows)",
                rows as u64,
                seconds,
            ))
        }
    }
}

/// Spreads keys over the index as random ids would (cheap, deterministic).
fn scramble(i: usize) -> u64 {
    (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
}

async fn submit(store: &Arc<dyn EventStore>, command: Command) -> anyhow::Result<()> {
    store
        .submit(Submission::new(command, Source::Api, store::now()))
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("setup: {e}"))
}

/// Steps 2 and 4 (on the log step 2 leaves).
async fn in_process(
    url: &str,
    config: &Config,
    opts: &Options,
) -> anyhow::Result<(Figure, Figure, Figure)> {
    let store = store::open(url, config.encryption_key.chain_key()).await?;
    let cipher = config.encryption_key.payload_cipher();
    let bookings = (opts.events / EVENTS_PER_BOOKING).max(1);
    let zar = Currency::parse("zar").map_err(|e| anyhow::anyhow!("{e}"))?;
    let departure = store::now() + chrono::Duration::days(30);
    for t in 0..bookings.div_ceil(BOOKINGS_PER_TRIP) {
        submit(
            &store,
            Command::PublishTrip(PublishTrip {
                trip_id: format!("bt{t}"),
                driver_id: format!("bd{t}"),
                org_id: None,
                title: "bench".into(),
                seats: BOOKINGS_PER_TRIP as u32,
                price_per_seat_cents: FARE,
                currency: zar.clone(),
                departure_time: departure,
            }),
        )
        .await?;
    }
    let setup = |i: usize| {
        let (store, zar) = (store.clone(), zar.clone());
        async move {
            let (b, t) = (format!("bb{i}"), i / BOOKINGS_PER_TRIP);
            submit(
                &store,
                Command::RequestBooking(RequestBooking {
                    booking_id: b.clone(),
                    trip_id: format!("bt{t}"),
                    user_id: format!("bu{i}"),
                    passengers: 1,
                }),
            )
            .await?;
            submit(
                &store,
                Command::AcceptBooking {
                    booking_id: b.clone(),
                    actor: format!("bd{t}"),
                },
            )
            .await?;
            submit(
                &store,
                Command::BindPaymentIntent(BindPaymentIntent {
                    booking_id: b,
                    actor: format!("bu{i}"),
                    payment_intent_id: format!("pi_bench_{i}"),
                    amount_cents: Cents::new(FARE).map_err(|e| anyhow::anyhow!("{e}"))?,
                    currency: zar,
                }),
            )
            .await
        }
    };
    spread(bookings, opts.concurrency, setup).await?;

    // The timed part: every webhook body through the engine's ingest.
    let created = store::now().timestamp();
    let start = Instant::now();
    let work = |i: usize| {
        let (store, cipher) = (store.clone(), cipher.clone());
        async move {
            let booking = i / WEBHOOKS_PER_BOOKING;
            let body = crate::loadgen::script_body(
                &format!("bb{booking}"),
                &format!("bt{}", booking / BOOKINGS_PER_TRIP),
                &format!("bu{booking}"),
                &format!("pi_bench_{booking}"),
                i % WEBHOOKS_PER_BOOKING,
                0,
                created,
            );
            crate::ingest::ingest(&*store, &cipher, &body, false, Source::StripeWebhook)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("ingest: {e}"))
        }
    };
    let webhooks = bookings * WEBHOOKS_PER_BOOKING;
    spread(webhooks, opts.concurrency, work).await?;
    let append = Figure::new(
        "append+project in process",
        webhooks as u64,
        start.elapsed().as_secs_f64(),
    );

    // Step 4: a plain scan, then the rebuild, over the same log.
    let start = Instant::now();
    let mut scanned = 0u64;
    let mut events = store.stream_all(0);
    while let Some(e) = events.next().await {
        e?;
        scanned += 1;
    }
    drop(events);
    let scan = Figure::new("log scan", scanned, start.elapsed().as_secs_f64());

    // The rebuild reads on one task and decodes and folds on another, so
    // the two cores share the work as they would in an operator's replay.
    let start = Instant::now();
    let (pages, mut received) = tokio::sync::mpsc::channel::<Vec<store::StoredEvent>>(8);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut events = store.stream_all(0);
            let mut page = Vec::with_capacity(REBUILD_PAGE);
            while let Some(e) = events.next().await {
                page.push(e?);
                if page.len() == REBUILD_PAGE
                    && pages.send(std::mem::take(&mut page)).await.is_err()
                {
                    break;
                }
            }
            if !page.is_empty() {
                let _ = pages.send(page).await;
            }
            Ok::<(), store::StoreError>(())
        })
    };
    let mut rebuild = Rebuild::default();
    while let Some(page) = received.recv().await {
        for e in page {
            let recorded = e.recorded()?;
            rebuild.push(&e.stream, recorded);
        }
    }
    reader.await??;
    let rebuilt = rebuild.finish();
    let rebuild = Figure::new(
        "rebuild (scan + fold every booking)",
        rebuilt.events,
        start.elapsed().as_secs_f64(),
    );

    // The rebuild is only a figure if it is right.
    if rebuilt.bookings.len() != bookings {
        bail!(
            "rebuild: {} bookings from the log, {bookings} created",
            rebuilt.bookings.len()
        );
    }
    for (id, state) in &rebuilt.bookings {
        let stored = store.booking(id).await?;
        if stored.as_ref() != Some(&BookingView::from(state)) {
            bail!("rebuild: booking {id} differs from its projection");
        }
    }
    for (id, trip) in &rebuilt.trips {
        let stored = store.trip(id).await?;
        if stored.as_ref().map(|t| t.seats_accepted) != Some(trip.seats_accepted) {
            bail!("rebuild: trip {id}'s seat count differs from its projection");
        }
    }
    store.close().await;
    Ok((append, scan, rebuild))
}

/// Runs `work(0..n)` over `concurrency` tasks; the first error wins.
async fn spread<F, Fut>(n: usize, concurrency: usize, work: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    // Each item a task of its own, so the producers' work (parsing,
    // encryption) runs on every core, as HTTP handlers' would.
    let mut running = futures::stream::iter((0..n).map(|i| tokio::spawn(work(i))))
        .buffer_unordered(concurrency.max(1));
    while let Some(done) = running.next().await {
        done??;
    }
    Ok(())
}

/// Step 3.
async fn http_ingest(url: &str, config: &Config, opts: &Options) -> anyhow::Result<Figure> {
    let store = store::open(url, config.encryption_key.chain_key()).await?;
    let mut server_config = config.clone();
    server_config.database_url = url.to_string();
    server_config.stripe_livemode = false;
    server_config.stripe_secret_key = None;
    server_config.notify_url = None;
    if server_config.webhook_secrets.is_empty() {
        server_config.webhook_secrets = vec![Secret::new(format!(
            "whsec_bench_{}",
            uuid::Uuid::new_v4().simple()
        ))];
    }
    let webhook_secret = server_config.webhook_secrets[0].expose().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(store.clone(), Arc::new(server_config));
    let server = tokio::spawn(http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let bookings = opts.http_events.div_ceil(WEBHOOKS_PER_BOOKING).max(1);
    let report = crate::loadgen::run(crate::loadgen::Options {
        url: format!("http://{addr}"),
        bookings,
        events: bookings * WEBHOOKS_PER_BOOKING,
        concurrency: opts.concurrency,
        duplicates: 0,
        shuffle: true,
        jwt_secret: config.jwt_secret.expose().to_string(),
        webhook_secret,
        seed: 1,
        drop_event: None,
    })
    .await
    .map_err(|e| anyhow::anyhow!("loadgen: {e}"));
    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
    let report = report?;
    if !report.ok() {
        bail!(
            "loadgen: the engine's state does not match the events it acknowledged: {:?} {:?}",
            report.failures,
            report.mismatches
        );
    }
    let mut figure = Figure::new("HTTP ingest (loadgen)", report.acked as u64, report.seconds);
    figure.p50_ms = Some(report.p50_ms);
    figure.p99_ms = Some(report.p99_ms);
    Ok(figure)
}
