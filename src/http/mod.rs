//! HTTP: the only module that knows axum and status codes. Each resource
//! owns its routes; handlers parse, call the store or domain, map errors.

mod error;
mod health;
pub mod metrics;
mod middleware;
mod webhook;

pub use error::{current_request_id, ApiError};

use crate::config::Config;
use crate::crypto::PayloadCipher;
use crate::store::EventStore;
use axum::routing::{get, post};
use axum::Router;
use metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Webhook and API body limit (CONTRACT.md): 1 MiB.
pub const BODY_LIMIT: usize = 1024 * 1024;

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
}

impl AppState {
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        Self {
            store,
            cipher: config.encryption_key.payload_cipher(),
            config,
            metrics: Arc::new(Metrics::default()),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/api/payments/webhook", post(webhook::receive))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(ApiError::internal())
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .with_state(state)
}

/// Serves on an already bound listener until `shutdown` completes, then
/// finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
