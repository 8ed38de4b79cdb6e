//! Per-request plumbing: the request id (the caller's `x-request-id`, or a
//! new one) on every response and in every error body, and the log lines of
//! the contract: `request`, `response`, and `handled` (an error answered on
//! purpose: 4xx, 503) or `unhandled` (500: a bug). Never a body, a token or
//! a signature.

use super::error::{ErrorCode, REQUEST_ID};
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Accepts a caller's id only if it is short and printable.
fn caller_request_id(req: &Request) -> Option<String> {
    let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| v.to_string())
}

pub async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = caller_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    tracing::info!(r#type = "request", requestId = %request_id, method = %method, path = %path);

    let mut response = REQUEST_ID.scope(request_id.clone(), next.run(req)).await;

    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status();
    state.metrics.record_latency(duration_ms);
    state.metrics.incr("http.requests");
    if status.is_client_error() || status.is_server_error() {
        state.metrics.incr("http.errors");
    }
    if status.is_server_error() {
        state.metrics.incr("http.server_errors");
    }
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    if let Some(code) = code {
        state.metrics.incr(&format!("http.error.{code}"));
        if status == StatusCode::INTERNAL_SERVER_ERROR && code != "CONFIGURATION_ERROR" {
            tracing::error!(r#type = "unhandled", requestId = %request_id, method = %method,
                path = %path, status = status.as_u16(), code = code, durationMs = duration_ms);
        } else {
            tracing::warn!(r#type = "handled", requestId = %request_id, method = %method,
                path = %path, status = status.as_u16(), code = code, durationMs = duration_ms);
        }
    }
    tracing::info!(r#type = "response", requestId = %request_id, method = %method, path = %path,
        status = status.as_u16(), durationMs = duration_ms);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}
