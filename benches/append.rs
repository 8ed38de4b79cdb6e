//! Append throughput of the event store, both backends.
//!
//! `cargo bench --bench append` (PostgreSQL at TEST_POSTGRES_URL, default
//! postgres://postgres@127.0.0.1:5432/postgres). For each backend and
//! concurrency it submits Stripe events from that many tasks and reports
//! committed events per second. Concurrency 1 is one transaction (one fsync)
//! per event; higher concurrency lets the writer group commits.
//! Two workloads: `raw` events for unbound intents (append + outcome row),
//! and `booked` events bound to bookings (append + booking recomputed).

use chrono::Utc;
use klubz_ledger::domain::decide::{BindPaymentIntent, PublishTrip, RequestBooking};
use klubz_ledger::domain::payment::{FactMetadata, PaymentSignal, StripeFact};
use klubz_ledger::domain::{Cents, Command, Currency, Source};
use klubz_ledger::store::chain::ChainKey;
use klubz_ledger::store::{EventStore, Submission};
use std::sync::Arc;
use std::time::Instant;

fn fact(i: usize, pi: &str) -> StripeFact {
    StripeFact {
        event_id: format!("evt_bench_{i}"),
        event_type: "payment_intent.processing".into(),
        created: 1_800_000_000 + i as i64,
        livemode: false,
        expected_livemode: false,
        object_id: Some(pi.into()),
        payment_intent_id: Some(pi.into()),
        amount_cents: Cents::new(1000).ok(),
        currency: Currency::parse("zar").ok(),
        metadata: FactMetadata::default(),
        signal: PaymentSignal::Processing,
    }
}

async fn submit(store: &Arc<dyn EventStore>, command: Command) {
    if let Err(e) = store
        .submit(Submission::new(command, Source::Api, Utc::now()))
        .await
    {
        panic!("setup: {e}");
    }
}

/// Bookings b0..bn, 50 per trip, each with a bound intent pi_b{i}.
async fn setup_bookings(store: &Arc<dyn EventStore>, n: usize) {
    let zar = Currency::parse("zar").unwrap_or_else(|e| panic!("{e}"));
    for t in 0..n.div_ceil(50) {
        submit(
            store,
            Command::PublishTrip(PublishTrip {
                trip_id: format!("t{t}"),
                driver_id: "d".into(),
                org_id: None,
                title: "bench".into(),
                seats: 50,
                price_per_seat_cents: 1000,
                currency: zar.clone(),
                departure_time: Utc::now(),
            }),
        )
        .await;
    }
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let zar = zar.clone();
            tokio::spawn(async move {
                submit(
                    &store,
                    Command::RequestBooking(RequestBooking {
                        booking_id: format!("b{i}"),
                        trip_id: format!("t{}", i / 50),
                        user_id: format!("u{i}"),
                        passengers: 1,
                    }),
                )
                .await;
                submit(
                    &store,
                    Command::AcceptBooking {
                        booking_id: format!("b{i}"),
                        actor: "d".into(),
                    },
                )
                .await;
                submit(
                    &store,
                    Command::BindPaymentIntent(BindPaymentIntent {
                        booking_id: format!("b{i}"),
                        actor: format!("u{i}"),
                        payment_intent_id: format!("pi_b{i}"),
                        amount_cents: Cents::new(1000).unwrap_or_default(),
                        currency: zar,
                    }),
                )
                .await;
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            panic!("{e}");
        }
    }
}

async fn run(
    store: Arc<dyn EventStore>,
    total: usize,
    concurrency: usize,
    booked: Option<usize>,
) -> f64 {
    let start = Instant::now();
    let per_task = total / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for k in 0..per_task {
                    let i = t * per_task + k;
                    let pi = match booked {
                        Some(n) => format!("pi_b{}", i % n),
                        None => format!("pi_raw_{}", i % 1000),
                    };
                    let sub = Submission::new(
                        Command::RecordStripeEvent(fact(i, &pi)),
                        Source::StripeWebhook,
                        Utc::now(),
                    );
                    if let Err(e) = store.submit(sub).await {
                        panic!("submit: {e}");
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            panic!("{e}");
        }
    }
    (per_task * concurrency) as f64 / start.elapsed().as_secs_f64()
}

async fn fresh(backend: &str) -> (Arc<dyn EventStore>, Option<tempfile::TempDir>) {
    let key = ChainKey::derive(&[3; 32]);
    if backend == "sqlite" {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        (
            klubz_ledger::store::open(&url, key)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            Some(dir),
        )
    } else {
        use sqlx::Connection;
        let admin = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let name = format!("klubz_bench_{}", uuid::Uuid::new_v4().simple());
        let _ = sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await;
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_string();
        let url = format!("{base}/{name}");
        (
            klubz_ledger::store::open(&url, key)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            None,
        )
    }
}

/// Drops the bench's PostgreSQL databases (from this run or an earlier one).
async fn drop_bench_databases() {
    use sqlx::Connection;
    let admin = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'klubz_bench_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for name in names {
        let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

#[tokio::main]
async fn main() {
    drop_bench_databases().await;
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    println!("backend   workload  concurrency  events/s");
    for backend in ["sqlite", "postgres"] {
        // booked: 2000 bookings, about 10 Stripe events each (a realistic history).
        for (workload, bookings) in [("raw", None), ("booked", Some(2000))] {
            for concurrency in [1, 16, 256] {
                let (store, _dir) = fresh(backend).await;
                if let Some(n) = bookings {
                    setup_bookings(&store, n).await;
                }
                // Concurrency 1 pays one fsync per event: fewer events keep it short.
                let n = if concurrency == 1 { total / 10 } else { total };
                let rate = run(store, n, concurrency, bookings).await;
                println!("{backend:<9} {workload:<9} {concurrency:>11}  {rate:>8.0}");
            }
        }
    }
    drop_bench_databases().await;
}
