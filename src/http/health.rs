//! `GET /health`: is the engine up, its database reachable, and its writer
//! able to commit. Every check has a deadline (`DB_ACQUIRE_TIMEOUT_MS`
//! plus a margin), so a hung database is a quick 503, not a hung probe.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;

/// How long a failed batch keeps the writer unhealthy without a newer
/// batch to say otherwise.
const WRITER_FAILURE_WINDOW: Duration = Duration::from_secs(30);

fn unavailable(database: &str, writer: &str) -> Response {
    let error = ApiError::storage_unavailable();
    let mut body = error.body();
    body["status"] = json!("unavailable");
    body["database"] = json!(database);
    body["writer"] = json!(writer);
    body["version"] = json!(env!("CARGO_PKG_VERSION"));
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response
        .extensions_mut()
        .insert(super::error::ErrorCode(error.code));
    response
}

pub async fn health(State(state): State<AppState>) -> Response {
    // A dead writer cannot commit anything: not healthy, whatever the
    // database says.
    if !state.store.writer_alive() {
        tracing::warn!("health: the store's writer has stopped");
        return unavailable("ok", "stopped");
    }
    let checks = async {
        state.store.ping().await?;
        let seq = state.store.head_seq().await?;
        let paused = state.store.side_effects_paused().await?;
        Ok::<_, crate::store::StoreError>((seq, paused))
    };
    let deadline = state.config.limits.db_acquire_timeout + Duration::from_millis(500);
    let (seq, paused) = match tokio::time::timeout(deadline, checks).await {
        Err(_) => {
            tracing::warn!(
                deadlineMs = deadline.as_millis() as u64,
                "health: the database did not answer in time"
            );
            return unavailable("unresponsive", "unknown");
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database unreachable");
            return unavailable("unreachable", "unknown");
        }
        Ok(Ok(v)) => v,
    };
    // Reads work, but the latest write failed (disk full, read-only file):
    // what Stripe sends now would get 503.
    if state.store.writer_failing(WRITER_FAILURE_WINDOW) {
        tracing::warn!("health: the writer's latest batch failed");
        return unavailable("ok", "failing");
    }
    // Up, but part of the job is off: still 200 (it serves what it can),
    // `degraded` with every reason.
    let mut reasons = state.config.degraded_reasons();
    if paused {
        reasons.push(
            "side effects are paused by an operator (klubz-replay side-effects resume --operator NAME --reason TEXT)"
                .to_string(),
        );
    }
    Json(json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "database": "ok",
        "writer": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "eventLogSeq": seq,
        "sideEffectsPaused": paused,
    }))
    .into_response()
}
