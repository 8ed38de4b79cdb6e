//! `GET /api/outbox`: side-effect messages, newest first, each with its
//! delivery attempts. Admins see their organisation's bookings only;
//! super_admins see all.

use super::access::require;
use super::{ApiError, AppState};
use crate::auth::{Caller, Role};
use crate::store::{OutboxAttempt, OutboxFilter};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/outbox", get(list))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    booking_id: Option<String>,
    limit: Option<i64>,
}

fn time_ms(ms: i64) -> Value {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

fn attempt_view(a: &OutboxAttempt) -> Value {
    json!({
        "attempt": a.attempt,
        "at": time_ms(a.at_ms),
        "statusCode": a.status_code,
        "error": a.error,
        "durationMs": a.duration_ms,
    })
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require(
        matches!(caller.role, Role::Admin | Role::SuperAdmin),
        "read the outbox",
    )?;
    let Query(query) = query.map_err(|e| ApiError::validation(e.body_text()))?;
    if let Some(s) = &query.status {
        if !matches!(s.as_str(), "pending" | "sent" | "failed") {
            return Err(ApiError::validation(
                "status must be pending, sent or failed",
            ));
        }
    }
    let filter = OutboxFilter {
        status: query.status,
        booking_id: query.booking_id,
        // An admin without an organisation administers none.
        org_id: (!caller.is_super_admin()).then(|| caller.org_id.clone().unwrap_or_default()),
        limit: query.limit.unwrap_or(100).clamp(1, 1000),
    };
    let messages = state
        .store
        .list_outbox(&filter)
        .await
        .map_err(super::store_error)?;
    let keys: Vec<String> = messages.iter().map(|m| m.message_key.clone()).collect();
    let attempts = state
        .store
        .outbox_attempts(&keys)
        .await
        .map_err(super::store_error)?;
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            let body: Value =
                serde_json::from_str(&crate::dispatch::message_body(m)).unwrap_or(Value::Null);
            json!({
                "id": m.message_key,
                "type": m.kind,
                "bookingId": m.booking_id,
                "status": m.status,
                "causedBySeq": m.created_seq,
                "attemptCount": m.attempts,
                "nextAttemptAt": (m.status == "pending").then(|| time_ms(m.next_attempt_ms)),
                "sentAt": m.sent_ms.map(time_ms),
                "body": body,
                "attempts": attempts.iter()
                    .filter(|a| a.message_key == m.message_key)
                    .map(attempt_view)
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "messages": list })))
}
