//! `GET /health`: is the engine up and its database reachable.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn health(State(state): State<AppState>) -> Response {
    let checks = async {
        state.store.ping().await?;
        let seq = state.store.head_seq().await?;
        let paused = state.store.side_effects_paused().await?;
        Ok::<_, crate::store::StoreError>((seq, paused))
    };
    // A dead writer cannot commit anything: not healthy, whatever the
    // database says.
    if !state.store.writer_alive() {
        tracing::warn!("health: the store's writer has stopped");
        let error = ApiError::storage_unavailable();
        let mut body = error.body();
        body["status"] = json!("unavailable");
        body["database"] = json!("ok");
        body["writer"] = json!("stopped");
        body["version"] = json!(env!("CARGO_PKG_VERSION"));
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        response
            .extensions_mut()
            .insert(super::error::ErrorCode(error.code));
        return response;
    }
    match checks.await {
        Ok((seq, paused)) => {
            // Up, but part of the job is off: still 200 (it serves what it
            // can), `degraded` with every reason.
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
        Err(e) => {
            tracing::warn!(error = %e, "health: database unreachable");
            let error = ApiError::storage_unavailable();
            let mut body = error.body();
            body["status"] = json!("unavailable");
            body["database"] = json!("unreachable");
            body["version"] = json!(env!("CARGO_PKG_VERSION"));
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            response
                .extensions_mut()
                .insert(super::error::ErrorCode(error.code));
            response
        }
    }
}
