//! Monitoring: `/api/monitoring/metrics` and `/security` (admin,
//! super_admin), `/sla` (any authenticated caller). Counts that must survive
//! a restart (events, outcomes, unbound events, outbox) come from the
//! database; request counters and latencies are this process's.

use super::access::require;
use super::{ApiError, AppState};
use crate::auth::{Caller, Role};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/monitoring/metrics", get(metrics))
        .route("/api/monitoring/security", get(security))
        .route("/api/monitoring/sla", get(sla))
}

fn admin(c: &Caller) -> Result<(), ApiError> {
    require(
        matches!(c.role, Role::Admin | Role::SuperAdmin),
        "read monitoring",
    )
}

fn counters(state: &AppState, prefix: &str) -> Value {
    let map: Map<String, Value> = state
        .metrics
        .with_prefix(prefix)
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches(prefix).to_string(), json!(v)))
        .collect();
    Value::Object(map)
}

fn latency(state: &AppState) -> Value {
    let (p50, p95, p99) = state.metrics.percentiles();
    json!({"p50": p50, "p95": p95, "p99": p99})
}

/// `?format=prometheus`, or `Accept: text/plain` / OpenMetrics: the
/// Prometheus text exposition; otherwise JSON.
#[derive(Debug, serde::Deserialize)]
struct MetricsQuery {
    format: Option<String>,
}

async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<MetricsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let stats = state.store.stats().await.map_err(super::store_error)?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if query.format.as_deref() == Some("prometheus")
        || accept.contains("text/plain")
        || accept.contains("application/openmetrics-text")
    {
        let paused = state
            .store
            .side_effects_paused()
            .await
            .map_err(super::store_error)?;
        let oldest = stats
            .oldest_pending_outbox
            .map(|t| (crate::store::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        let text = state
            .metrics
            .prometheus(&stats, paused, oldest, &state.store.writer_stats());
        return Ok((
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response());
    }
    Ok(Json(json!({
        "eventsByKindSource": stats.events.iter()
            .map(|(k, s, n)| json!({"kind": k, "source": s, "count": n})).collect::<Vec<_>>(),
        "webhookOutcomes": counters(&state, "webhook."),
        "projectionOutcomes": stats.outcomes.iter()
            .map(|(o, r, n)| json!({"outcome": o, "reason": r, "count": n})).collect::<Vec<_>>(),
        "idempotentReplays": state.metrics.get("idempotency.replays"),
        "outbox": stats.outbox.iter()
            .map(|(k, status, n)| json!({"kind": k, "status": status, "count": n})).collect::<Vec<_>>(),
        "outboxDepth": stats.outbox.iter().filter(|(_, s, _)| s == "pending").map(|(_, _, n)| n).sum::<i64>(),
        "outboxFailed": stats.outbox.iter().filter(|(_, s, _)| s == "failed").map(|(_, _, n)| n).sum::<i64>(),
        "requests": state.metrics.get("http.requests"),
        "latencyMs": latency(&state),
    }))
    .into_response())
}

async fn security(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let stats = state.store.stats().await.map_err(super::store_error)?;
    let by_reason = |reason: &str| -> i64 {
        stats
            .outcomes
            .iter()
            .filter(|(_, r, _)| r.as_deref() == Some(reason))
            .map(|(_, _, n)| n)
            .sum()
    };
    let m = &state.metrics;
    Ok(Json(json!({
        "signatureFailures": m.get("security.signature_failures"),
        "authenticationFailures": m.get("http.error.AUTHENTICATION_ERROR"),
        "authorizationFailures": m.get("http.error.AUTHORIZATION_ERROR"),
        "metadataMismatches": by_reason("metadata_mismatch"),
        "amountMismatches": by_reason("amount_mismatch"),
        "livemodeMismatches": by_reason("livemode_mismatch"),
        "amountTampering": m.get("security.amount_tampering"),
        "unboundEvents": stats.unbound_events,
        "idempotencyConflicts": m.get("security.idempotency_conflicts"),
        "clockSkewedWebhooks": m.get("webhook.clock_skew"),
    })))
}

async fn sla(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let m = &state.metrics;
    let requests = m.get("http.requests");
    let server_errors = m.get("http.server_errors");
    let rate = |n: u64| {
        if requests == 0 {
            0.0
        } else {
            n as f64 / requests as f64
        }
    };
    Json(json!({
        "uptimeSecs": m.uptime_secs(),
        "requests": requests,
        "errors": server_errors,
        "errorRate": rate(server_errors),
        "clientErrorRate": rate(m.get("http.errors").saturating_sub(server_errors)),
        "latencyMs": latency(&state),
    }))
}
