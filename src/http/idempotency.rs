//! `Idempotency-Key` on write routes (CONTRACT.md): scoped to the caller and
//! the route (method and path), stored durably with the request fingerprint
//! and the response. Same key and body: the first response again, byte for
//! byte, with `idempotent-replayed: true`. Same key, other body: 409
//! `IDEMPOTENCY_CONFLICT`. A key whose first request is still running: 409
//! too, so two concurrent requests never have two effects.

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::store::IdempotencyBegin;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::future::Future;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";

/// A write handler's answer: status, JSON body, and the log position of
/// the event it wrote (sent as `x-ledger-seq`).
pub struct Written {
    pub status: StatusCode,
    pub body: Value,
    pub seq: i64,
}

impl Written {
    pub fn new(status: StatusCode, body: Value, seq: i64) -> Self {
        Self { status, body, seq }
    }
}

pub type WriteResult = Result<Written, ApiError>;

fn render(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The response parts: status, body bytes, error code, log position.
type Parts = (StatusCode, String, Option<&'static str>, Option<i64>);

fn serialize(result: WriteResult) -> Parts {
    match result {
        Ok(w) => (w.status, w.body.to_string(), None, Some(w.seq)),
        Err(e) => (e.status, e.body().to_string(), Some(e.code), None),
    }
}

fn respond((status, body, code, seq): Parts) -> Response {
    let mut response = render(status, body);
    if let Some(code) = code {
        response
            .extensions_mut()
            .insert(super::error::ErrorCode(code));
    }
    if let Some(seq) = seq {
        response
            .headers_mut()
            .insert(super::LEDGER_SEQ, HeaderValue::from(seq));
    }
    response
}

/// Runs `handler` once per (caller, route, key).
pub async fn write<F, Fut>(
    state: &AppState,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
    handler: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = WriteResult>,
{
    // Two keys are ambiguous: which request would a retry repeat?
    if headers.get_all(HEADER).iter().nth(1).is_some() {
        return ApiError::validation("send one Idempotency-Key header, not several")
            .into_response();
    }
    let Some(raw_key) = headers.get(HEADER) else {
        return respond(serialize(handler().await));
    };
    let key = match raw_key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => k,
        _ => {
            return ApiError::validation("Idempotency-Key must be 1 to 255 printable characters")
                .into_response()
        }
    };
    let scope = format!("{}|{route}", caller.user_id);
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let fingerprint = hex::encode(hasher.finalize());

    match state
        .store
        .idempotency_begin(&scope, key, &fingerprint)
        .await
    {
        Err(e) => {
            tracing::warn!(error = %e, "idempotency store unavailable");
            ApiError::storage_unavailable().into_response()
        }
        Ok(IdempotencyBegin::Completed {
            fingerprint: first,
            status,
            body,
        }) if first == fingerprint => {
            state.metrics.incr("idempotency.replays");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = render(status, body);
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            response
        }
        Ok(IdempotencyBegin::InFlight { fingerprint: first }) if first == fingerprint => {
            state.metrics.incr("security.idempotency_conflicts");
            ApiError::idempotency_conflict(
                "a request with this Idempotency-Key is still in progress; retry later",
            )
            .into_response()
        }
        Ok(IdempotencyBegin::Completed { .. } | IdempotencyBegin::InFlight { .. }) => {
            state.metrics.incr("security.idempotency_conflicts");
            ApiError::idempotency_conflict("this Idempotency-Key was used with a different request")
                .into_response()
        }
        Ok(IdempotencyBegin::Owned) => {
            let parts = serialize(handler().await);
            let (status, body) = (parts.0, &parts.1);
            let kept = if status.is_server_error() {
                // Nothing worth replaying: let a retry run again.
                state.store.idempotency_abandon(&scope, key).await
            } else {
                state
                    .store
                    .idempotency_finish(&scope, key, status.as_u16(), body)
                    .await
            };
            if let Err(e) = kept {
                tracing::warn!(error = %e, "idempotency response not recorded");
            }
            respond(parts)
        }
    }
}
