//! `klubz-ledger smoke`: on a fresh temporary database of the configured
//! kind, run one booking from publication to a full refund (the booking
//! steps through the library, the Stripe events as signed HTTP webhooks to a
//! server started on a free port), check each step, verify chain and
//! projections.

use crate::config::{Config, Secret};
use crate::domain::decide::{BindPaymentIntent, PublishTrip, RequestBooking};
use crate::domain::{Cents, Command, Currency, PaymentStatus, Source};
use crate::http::{self, AppState};
use crate::store::chain::ChainKey;
use crate::store::migrations::Dialect;
use crate::store::verify::verify;
use crate::store::{self, EventStore, Submission};
use crate::stripe::signature;
use chrono::{Duration, Utc};
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("smoke failed at {step}: {detail}")]
pub struct SmokeError {
    pub step: &'static str,
    pub detail: String,
}

fn fail(step: &'static str) -> impl FnOnce(String) -> SmokeError {
    move |detail| SmokeError { step, detail }
}

/// A temporary database that removes itself.
pub enum TempDatabase {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        admin_url: String,
        name: String,
    },
}

impl TempDatabase {
    /// Creates a fresh database next to the configured one.
    pub async fn create(configured_url: &str) -> Result<Self, SmokeError> {
        match Dialect::of_url(configured_url) {
            Dialect::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| fail("temp database")(e.to_string()))?;
                let url = format!("sqlite://{}", dir.path().join("smoke.db").display());
                Ok(Self::Sqlite { url, _dir: dir })
            }
            Dialect::Postgres => {
                use sqlx::Connection;
                let admin_url = configured_url.to_string();
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| fail("connect to PostgreSQL")(e.to_string()))?;
                let name = format!("klubz_smoke_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| fail("create temp database")(e.to_string()))?;
                let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
                let base = base.to_string();
                let url = format!("{base}/{name}");
                Ok(Self::Postgres {
                    url,
                    admin_url,
                    name,
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }

    pub async fn drop_database(self) {
        if let Self::Postgres {
            admin_url, name, ..
        } = self
        {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

/// Runs the smoke scenario; returns a one-line summary.
pub async fn run(config: &Config) -> Result<String, SmokeError> {
    let db = TempDatabase::create(&config.database_url).await?;
    let result = scenario(db.url(), config).await;
    db.drop_database().await;
    result
}

async fn scenario(url: &str, config: &Config) -> Result<String, SmokeError> {
    let chain_key: ChainKey = config.encryption_key.chain_key();
    let store = store::open(url, chain_key.clone())
        .await
        .map_err(|e| fail("open and migrate")(e.to_string()))?;
    // The server signs with the configured secret, or a throwaway one when
    // none is configured (production without STRIPE_WEBHOOK_SECRET).
    let mut server_config = config.clone();
    server_config.database_url = url.to_string();
    server_config.stripe_livemode = false;
    if server_config.webhook_secrets.is_empty() {
        server_config.webhook_secrets = vec![Secret::new(format!(
            "whsec_smoke_{}",
            uuid::Uuid::new_v4().simple()
        ))];
    }
    let secret = server_config.webhook_secrets[0].clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail("bind a free port")(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| fail("bind a free port")(e.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(store.clone(), Arc::new(server_config));
    let server = tokio::spawn(http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let result = steps(&store, &secret, &format!("http://{addr}"), &chain_key).await;
    let _ = stop.send(());
    let _ = server.await;
    result
}

async fn steps(
    store: &Arc<dyn EventStore>,
    secret: &Secret,
    base: &str,
    chain_key: &ChainKey,
) -> Result<String, SmokeError> {
    let zar = Currency::parse("zar").map_err(fail("currency"))?;
    let now = store::now();
    let submit = |store: Arc<dyn EventStore>, step: &'static str, command: Command| async move {
        store
            .submit(Submission::new(command, Source::Api, store::now()))
            .await
            .map_err(|e| fail(step)(e.to_string()))
    };

    submit(
        store.clone(),
        "publish",
        Command::PublishTrip(PublishTrip {
            trip_id: "smoke-trip".into(),
            driver_id: "smoke-driver".into(),
            org_id: Some("smoke-org".into()),
            title: "Smoke test trip".into(),
            seats: 3,
            price_per_seat_cents: 4500,
            currency: zar.clone(),
            departure_time: now + Duration::days(1),
        }),
    )
    .await?;
    submit(
        store.clone(),
        "request",
        Command::RequestBooking(RequestBooking {
            booking_id: "smoke-booking".into(),
            trip_id: "smoke-trip".into(),
            user_id: "smoke-rider".into(),
            passengers: 2,
        }),
    )
    .await?;
    submit(
        store.clone(),
        "accept",
        Command::AcceptBooking {
            booking_id: "smoke-booking".into(),
            actor: "smoke-driver".into(),
        },
    )
    .await?;
    submit(
        store.clone(),
        "bind intent",
        Command::BindPaymentIntent(BindPaymentIntent {
            booking_id: "smoke-booking".into(),
            actor: "smoke-rider".into(),
            payment_intent_id: "pi_smoke".into(),
            amount_cents: Cents::new(9000).map_err(|e| fail("bind intent")(e.to_string()))?,
            currency: zar,
        }),
    )
    .await?;
    expect_status(store.as_ref(), "bind intent", PaymentStatus::Pending, 0).await?;

    let created = now.timestamp();
    let intent = json!({"id": "pi_smoke", "object": "payment_intent", "amount": 9000,
        "currency": "zar", "metadata": {"bookingId": "smoke-booking"}});
    let charge = |refunded: i64| {
        json!({"id": "ch_smoke", "object": "charge",
        "payment_intent": "pi_smoke", "amount": 9000, "currency": "zar",
        "amount_refunded": refunded})
    };
    let steps = [
        (
            "stripe succeeded",
            "evt_smoke_1",
            "payment_intent.succeeded",
            1,
            intent,
            PaymentStatus::Paid,
            0,
        ),
        (
            "partial refund",
            "evt_smoke_2",
            "charge.refunded",
            2,
            charge(3000),
            PaymentStatus::PartiallyRefunded,
            3000,
        ),
        (
            "full refund",
            "evt_smoke_3",
            "charge.refunded",
            3,
            charge(9000),
            PaymentStatus::Refunded,
            9000,
        ),
    ];
    let client = reqwest::Client::new();
    for (step, id, kind, offset, object, status, refunded) in steps {
        let body = json!({"id": id, "object": "event", "type": kind, "livemode": false,
            "created": created + offset, "data": {"object": object}});
        let raw = serde_json::to_vec(&body).map_err(|e| fail(step)(e.to_string()))?;
        let header = signature::header(secret.expose(), Utc::now().timestamp(), &raw);
        let response = client
            .post(format!("{base}/api/payments/webhook"))
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(raw)
            .send()
            .await
            .map_err(|e| fail(step)(e.to_string()))?;
        let code = response.status();
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|e| fail(step)(e.to_string()))?;
        if !code.is_success() || answer != json!({"received": true}) {
            return Err(fail(step)(format!("webhook answered {code} {answer}")));
        }
        expect_status(store.as_ref(), step, status, refunded).await?;
    }

    let report = verify(store.as_ref(), chain_key)
        .await
        .map_err(|e| fail("verify")(e.to_string()))?;
    if !report.is_ok() {
        return Err(fail("verify")(format!("{report:?}")));
    }
    Ok(format!(
        "{} backend: {} events, {} streams, {} booking, chain and projections verified",
        store.backend(),
        report.events,
        report.streams,
        report.bookings
    ))
}

async fn expect_status(
    store: &dyn EventStore,
    step: &'static str,
    status: PaymentStatus,
    refunded: i64,
) -> Result<(), SmokeError> {
    let booking = store
        .booking("smoke-booking")
        .await
        .map_err(|e| fail(step)(e.to_string()))?
        .ok_or_else(|| fail(step)("booking missing".into()))?;
    if booking.payment_status != status || booking.amount_refunded_cents.get() != refunded {
        return Err(fail(step)(format!(
            "expected {status} with {refunded} refunded, found {} with {}",
            booking.payment_status, booking.amount_refunded_cents
        )));
    }
    Ok(())
}
