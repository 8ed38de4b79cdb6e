//! `klubz-replay apply`, killed with SIGKILL at different moments, leaves
//! every projection all-old or all-new, never a mix, on SQLite and
//! PostgreSQL (the rebuild runs in the transaction of its audit event).
//! Spawns the real binary; PostgreSQL at TEST_POSTGRES_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres) must be reachable.
#![allow(clippy::unwrap_used)]

use klubz_ledger::crypto::MasterKey;
use klubz_ledger::domain::decide::{PublishTrip, RequestBooking};
use klubz_ledger::domain::{Command, Currency, Source};
use klubz_ledger::store::{EventStore, Submission};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const BOOKINGS: usize = 40;

async fn submit(store: &Arc<dyn EventStore>, command: Command) {
    store
        .submit(Submission::new(command, Source::Api, chrono::Utc::now()))
        .await
        .unwrap();
}

async fn seed(store: &Arc<dyn EventStore>) {
    submit(
        store,
        Command::PublishTrip(PublishTrip {
            trip_id: "t1".into(),
            driver_id: "d1".into(),
            org_id: None,
            title: "Kill test".into(),
            seats: 64,
            price_per_seat_cents: 1000,
            currency: Currency::parse("zar").unwrap(),
            departure_time: chrono::Utc::now(),
        }),
    )
    .await;
    for n in 0..BOOKINGS {
        submit(
            store,
            Command::RequestBooking(RequestBooking {
                booking_id: format!("b{n}"),
                trip_id: "t1".into(),
                user_id: format!("u{n}"),
                passengers: 1,
            }),
        )
        .await;
    }
}

async fn exec(url: &str, sql: &str) -> u64 {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected()
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
    }
}

async fn killed_midway_leaves_all_old_or_all_new(url: &str, dir: &std::path::Path) {
    let master = MasterKey::parse_hex(KEY).unwrap();
    let store = klubz_ledger::store::open(url, master.chain_key())
        .await
        .unwrap();
    seed(&store).await;
    let mut outcomes = Vec::new();
    for (trial, delay_ms) in [0u64, 2, 5, 10, 20, 40, 80, 160, 400]
        .into_iter()
        .enumerate()
    {
        // Drift every booking behind the engine's back.
        exec(url, "UPDATE trip_participants SET status = 'cancelled'").await;
        let progress = indicatif::ProgressBar::hidden();
        let plan = klubz_replay::plan::plan(store.as_ref(), &[], &progress)
            .await
            .unwrap();
        assert_eq!(plan.changes.len(), BOOKINGS, "every booking");
        let file = dir.join(format!("plan-{trial}.json"));
        std::fs::write(&file, plan.to_json().to_string()).unwrap();
        let replays_before = count(
            url,
            "SELECT count(*) FROM events WHERE kind = 'ReplayApplied'",
        )
        .await;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_klubz-replay"))
            .arg("apply")
            .arg("--plan")
            .arg(&file)
            .args(["--operator", "kill-test", "--reason", "SIGKILL midway"])
            .current_dir(dir)
            .env("DATABASE_URL", url)
            .env("ENCRYPTION_KEY", KEY)
            .env("JWT_SECRET", "kill-test-jwt-secret-0123456789abcdef")
            .env("STRIPE_WEBHOOK_SECRET", "whsec_test_kill")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.start_kill(); // SIGKILL
        let _ = child.wait().await;
        let drifted = count(
            url,
            "SELECT count(*) FROM trip_participants WHERE status = 'cancelled'",
        )
        .await;
        let replays = count(
            url,
            "SELECT count(*) FROM events WHERE kind = 'ReplayApplied'",
        )
        .await;
        let applied = replays > replays_before;
        assert!(
            (applied && drifted == 0) || (!applied && drifted == BOOKINGS as i64),
            "trial {trial} (kill after {delay_ms} ms): replay recorded {applied}, {drifted} of {BOOKINGS} still drifted"
        );
        outcomes.push(applied);
    }
    eprintln!("{url}: applied per trial {outcomes:?}");
    // Both ends were reached: killed before the commit, and after it.
    assert!(outcomes.contains(&false), "{outcomes:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_midway_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kill.db").display());
    killed_midway_leaves_all_old_or_all_new(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_midway_postgres() {
    let admin = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
    let name = format!("klubz_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    let dir = tempfile::tempdir().unwrap();
    killed_midway_leaves_all_old_or_all_new(&url, dir.path()).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}
