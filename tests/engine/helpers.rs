//! Test harness: a fresh database per test (a temporary SQLite file, or a
//! uniquely named PostgreSQL database), typed command helpers and a Stripe
//! event builder. PostgreSQL tests fail when the server is unreachable.

use chrono::{TimeZone, Utc};
use klubz_ledger::domain::decide::{BindPaymentIntent, PublishTrip, RequestBooking};
use klubz_ledger::domain::{Command, Currency, Source};
use klubz_ledger::store::chain::ChainKey;
use klubz_ledger::store::{EventStore, Submission, SubmitError, Submitted};
use klubz_ledger::stripe::parse_event;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the PostgreSQL test databases are created.
pub fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub fn chain_key() -> ChainKey {
    ChainKey::derive(&[7u8; 32])
}

pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub store: Arc<dyn EventStore>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                (url, Some(dir))
            }
            Backend::Postgres => (create_pg_database().await, None),
        };
        let store = klubz_ledger::store::open(&url, chain_key())
            .await
            .unwrap_or_else(|e| panic!("open {backend:?} store: {e}"));
        Self {
            backend,
            url,
            store,
            _dir: dir,
        }
    }

    /// A PostgreSQL store opened elsewhere (another key, another process's
    /// view), with the helpers.
    pub fn on(store: Arc<dyn EventStore>, url: &str) -> TestDb {
        Self {
            backend: Backend::Postgres,
            url: url.to_string(),
            store,
            _dir: None,
        }
    }

    /// A store opened on a database the test placed itself (a tmpfs, a
    /// private cluster).
    pub fn with_store(backend: Backend, url: &str, store: Arc<dyn EventStore>) -> TestDb {
        Self {
            backend,
            url: url.to_string(),
            store,
            _dir: None,
        }
    }

    /// Another handle on the same database with its own store: a second
    /// engine process, as far as the database can tell.
    pub async fn share(&self) -> TestDb {
        TestDb {
            backend: self.backend,
            url: self.url.clone(),
            store: self.open_another().await,
            _dir: None,
        }
    }

    /// A SQLite database whose writer gives up after `busy` when another
    /// connection holds the write lock.
    pub async fn sqlite_with_busy_timeout(busy: std::time::Duration) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = klubz_ledger::store::sqlite::SqliteStore::open_with(
            &url,
            chain_key(),
            klubz_ledger::store::Timeouts {
                statement: busy,
                ..Default::default()
            },
        )
        .await
        .expect("open sqlite");
        Self {
            backend: Backend::Sqlite,
            url,
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }

    /// A second, independent store on the same database (another process,
    /// as far as the database can tell).
    pub async fn open_another(&self) -> Arc<dyn EventStore> {
        klubz_ledger::store::open(&self.url, chain_key())
            .await
            .expect("open second store")
    }

    /// Runs raw SQL statements on the database (tamper tests).
    pub async fn raw(&self, statements: &[&str]) {
        match self.backend {
            Backend::Sqlite => {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                for s in statements {
                    sqlx::query(s)
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                for s in statements {
                    sqlx::query(s)
                        .execute(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
        }
    }

    /// Statements that lift the append-only guard, as an attacker with
    /// database access would.
    pub fn drop_guard(&self) -> &'static [&'static str] {
        match self.backend {
            Backend::Sqlite => &[
                "DROP TRIGGER events_no_update",
                "DROP TRIGGER events_no_delete",
            ],
            Backend::Postgres => &["DROP TRIGGER events_no_update_delete ON events"],
        }
    }

    pub async fn submit(&self, command: Command) -> Result<Submitted, SubmitError> {
        self.store
            .submit(Submission::new(command, Source::Api, t(0)))
            .await
    }

    pub async fn publish(&self, trip: &str, driver: &str, seats: u32, price: i64) {
        self.submit(Command::PublishTrip(PublishTrip {
            trip_id: trip.into(),
            driver_id: driver.into(),
            org_id: Some("org-1".into()),
            title: format!("Trip {trip}"),
            seats,
            price_per_seat_cents: price,
            currency: zar(),
            departure_time: t(86_400),
        }))
        .await
        .unwrap_or_else(|e| panic!("publish {trip}: {e}"));
    }

    pub async fn request(&self, booking: &str, trip: &str, user: &str, passengers: u32) {
        self.submit(Command::RequestBooking(RequestBooking {
            booking_id: booking.into(),
            trip_id: trip.into(),
            user_id: user.into(),
            passengers,
        }))
        .await
        .unwrap_or_else(|e| panic!("request {booking}: {e}"));
    }

    pub async fn accept(&self, booking: &str, driver: &str) -> Result<Submitted, SubmitError> {
        self.submit(Command::AcceptBooking {
            booking_id: booking.into(),
            actor: driver.into(),
        })
        .await
    }

    pub async fn bind(
        &self,
        booking: &str,
        user: &str,
        pi: &str,
        amount: i64,
    ) -> Result<Submitted, SubmitError> {
        self.submit(Command::BindPaymentIntent(BindPaymentIntent {
            booking_id: booking.into(),
            actor: user.into(),
            payment_intent_id: pi.into(),
            amount_cents: klubz_ledger::domain::Cents::new(amount).unwrap(),
            currency: zar(),
        }))
        .await
    }

    /// Records a Stripe event body as the webhook would.
    pub async fn stripe(&self, body: &Value) -> Result<Submitted, SubmitError> {
        self.store.submit(stripe_submission(body)).await
    }

    /// A trip with driver `d1`, 4 seats at 1000, and booking `b1` by `u1`
    /// for 2 passengers, accepted.
    pub async fn accepted_booking(&self) {
        self.publish("t1", "d1", 4, 1000).await;
        self.request("b1", "t1", "u1", 2).await;
        self.accept("b1", "d1").await.expect("accept");
    }
}

pub fn stripe_submission(body: &Value) -> Submission {
    let raw = serde_json::to_vec(body).expect("json");
    let fact = parse_event(&raw, false).expect("parse stripe event");
    let created = Utc
        .timestamp_opt(fact.created, 0)
        .single()
        .unwrap_or_else(Utc::now);
    Submission::new(
        Command::RecordStripeEvent(fact),
        Source::StripeWebhook,
        created,
    )
}

pub fn zar() -> Currency {
    Currency::parse("zar").expect("zar")
}

/// A fixed instant plus `secs`.
pub fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0)
        .single()
        .expect("time")
}

/// A Stripe event body in the shape Stripe sends.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2026-04-22.dahlia",
        "created": 1_790_000_000 + created,
        "livemode": false,
        "pending_webhooks": 1,
        "type": kind,
        "data": { "object": object }
    })
}

pub fn intent(pi: &str, amount: i64) -> Value {
    json!({"id": pi, "object": "payment_intent", "amount": amount, "currency": "zar",
           "status": "requires_payment_method", "metadata": {"bookingId": "b1"}})
}

pub fn charge_refunded(pi: &str, amount: i64, refunded: i64) -> Value {
    json!({"id": format!("ch_{pi}"), "object": "charge", "payment_intent": pi,
           "amount": amount, "currency": "zar", "amount_refunded": refunded})
}

pub fn refund(id: &str, pi: &str, amount: i64, status: &str) -> Value {
    json!({"id": id, "object": "refund", "payment_intent": pi, "amount": amount,
           "currency": "zar", "status": status})
}

pub async fn create_pg_database() -> String {
    use sqlx::Connection;
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for these tests: {e}"));
    let name = format!("klubz_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_string();
    format!("{base}/{name}")
}
