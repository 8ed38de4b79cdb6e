//! HTTP: the only module that knows axum and status codes. Each resource
//! owns its routes; handlers parse, call the store or domain, map errors.

mod access;
mod bookings;
mod error;
mod extract;
mod health;
mod idempotency;
pub mod metrics;
mod middleware;
mod monitoring;
mod outbox;
mod payments;
mod server;
mod trips;
mod views;
mod webhook;

pub use error::{current_request_id, ApiError};

use crate::config::{Config, Environment};
use crate::crypto::PayloadCipher;
use crate::domain::{Command, DomainError, Source, TripState};
use crate::projection::BookingView;
use crate::store::{EventStore, StoreError, Submission, SubmitError, Submitted};
use crate::stripe::gateway::{OfflineGateway, PaymentGateway, StripeGateway};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics::Metrics;
use std::sync::Arc;

/// Webhook and API body limit (CONTRACT.md): 1 MiB.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The log position a response reflects.
pub const LEDGER_SEQ: &str = "x-ledger-seq";

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// The event store: every write goes through `submit`, every read
    /// through the projections.
    pub store: Arc<dyn EventStore>,
    /// Configuration, read once at start (secrets redacted in `Debug`).
    pub config: Arc<Config>,
    /// Encrypts raw Stripe bodies before they are stored.
    pub cipher: PayloadCipher,
    /// This process's counters and latencies.
    pub metrics: Arc<Metrics>,
    /// Creates PaymentIntents; `None` in production without
    /// `STRIPE_SECRET_KEY` (the intent route answers 503).
    pub gateway: Option<Arc<dyn PaymentGateway>>,
    /// Permits for requests in flight (`MAX_IN_FLIGHT`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Permits for request body bytes being buffered
    /// (`MAX_BUFFERED_BODY_BYTES`, in KiB).
    pub body_budget: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The gateway follows the configuration: Stripe with a secret key, the
    /// offline development gateway without one (never in production).
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        let gateway: Option<Arc<dyn PaymentGateway>> =
            match (&config.stripe_secret_key, config.environment) {
                (Some(key), _) => Some(Arc::new(StripeGateway::new(
                    &config.stripe_api_base,
                    key.expose(),
                ))),
                (None, Environment::Production) => None,
                (None, _) => Some(Arc::new(OfflineGateway::new(crate::crypto::hmac_sha256(
                    config.jwt_secret.expose().as_bytes(),
                    b"klubz-ledger/offline-gateway/v1",
                )))),
            };
        Self::with_gateway(store, config, gateway)
    }

    pub fn with_gateway(
        store: Arc<dyn EventStore>,
        config: Arc<Config>,
        gateway: Option<Arc<dyn PaymentGateway>>,
    ) -> Self {
        Self {
            metrics: Arc::new(Metrics::with_writer(&store.writer_stats())),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.limits.max_in_flight)),
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_buffered_body_bytes.div_ceil(1024),
            )),
            store,
            cipher: config.encryption_key.payload_cipher(),
            config,
            gateway,
        }
    }
}

/// A command from the API, now.
pub(crate) fn submission(command: Command) -> Submission {
    Submission::new(command, Source::Api, crate::store::now())
}

/// Records a command under the request's `Idempotency-Key` claim; domain
/// refusals and storage errors become API errors.
pub(crate) async fn submit(
    state: &AppState,
    command: Command,
    claim: Option<crate::store::ApiClaim>,
) -> Result<Submitted, ApiError> {
    state
        .store
        .submit(submission(command).with_api_claim(claim))
        .await
        .map_err(submit_error)
}

pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Domain(DomainError::Validation(m)) => ApiError::validation(m),
        SubmitError::Domain(DomainError::NotFound(what)) => ApiError::not_found(what),
        SubmitError::Domain(DomainError::Forbidden(m)) => ApiError::authorization(m),
        SubmitError::Domain(DomainError::Conflict(m)) => ApiError::conflict(m),
        SubmitError::Domain(e @ DomainError::IntentPending { .. }) => {
            ApiError::conflict(e.to_string())
        }
        SubmitError::IdempotencyConflict { .. } | SubmitError::VersionConflict { .. } => {
            ApiError::conflict(e.to_string())
        }
        SubmitError::ClaimLost => ApiError::idempotency_conflict(e.to_string()),
        SubmitError::Store(e) => store_error(e),
    }
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Corrupt(_) | StoreError::WrongKey => {
            tracing::error!(error = %e, "stored data problem");
            ApiError::internal()
        }
        _ => {
            tracing::warn!(error = %e, "storage unavailable");
            ApiError::storage_unavailable()
        }
    }
}

pub(crate) async fn load_trip(state: &AppState, trip_id: &str) -> Result<TripState, ApiError> {
    state
        .store
        .trip(trip_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("trip"))
}

pub(crate) async fn load_booking(
    state: &AppState,
    booking_id: &str,
) -> Result<BookingView, ApiError> {
    state
        .store
        .booking(booking_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("booking"))
}

/// A booking and its trip, read together, with the log position they
/// reflect (404 naming whichever is missing).
pub(crate) async fn load_booking_and_trip(
    state: &AppState,
    booking_id: &str,
) -> Result<(BookingView, TripState, i64), ApiError> {
    let read = state
        .store
        .booking_read(booking_id)
        .await
        .map_err(store_error)?;
    let booking = read.booking.ok_or_else(|| ApiError::not_found("booking"))?;
    let trip = read.trip.ok_or_else(|| ApiError::not_found("trip"))?;
    Ok((booking, trip, read.seq))
}

/// A read's JSON with the log position it reflects.
pub(crate) fn read_response(body: serde_json::Value, seq: i64) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(LEDGER_SEQ, HeaderValue::from(seq));
    response
}

/// `GET /`: what this is and where to go next (public, no secrets).
async fn root() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "service": "klubz-ledger",
        "version": env!("CARGO_PKG_VERSION"),
        "health": "/health",
        "webhook": "/api/payments/webhook",
        "docs": "docs/API.md in the repository: every route, who may call it, request and response shapes, error codes",
    }))
}

/// Routes that exist only in builds with the `test-routes` feature (the
/// test suite's): a handler that panics, to prove a panic is answered 500
/// `INTERNAL_ERROR`, logged once as `unhandled`, and the server goes on.
#[cfg(feature = "test-routes")]
fn test_routes(router: Router<AppState>) -> Router<AppState> {
    async fn panics() -> Json<serde_json::Value> {
        panic!("deliberate panic from the test-routes feature")
    }
    router.route("/__test/panic", get(panics))
}

#[cfg(not(feature = "test-routes"))]
fn test_routes(router: Router<AppState>) -> Router<AppState> {
    router
}

pub fn router(state: AppState) -> Router {
    test_routes(Router::new())
        .route("/", get(root))
        .route("/health", get(health::health))
        .route("/api/payments/webhook", post(webhook::receive))
        .merge(trips::router())
        .merge(bookings::router())
        .merge(payments::router())
        .merge(monitoring::router())
        .merge(outbox::router())
        .fallback(|| async { ApiError::not_found("route") })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(ApiError::internal())
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::bounded,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .with_state(state)
}

pub use server::serve;
