//! Per-request plumbing: the request id (the caller's `x-request-id`, or a
//! new one) on every response and in every error body, and the log lines of
//! the contract: `request`, `response`, and `handled` (an error answered on
//! purpose: 4xx, 503) or `unhandled` (500: a bug). Never a body, a token or
//! a signature.
//!
//! Also the bounds every request runs under ([`bounded`]): URI and header
//! sizes, the cap on requests in flight (503 `OVERLOADED` beyond it, at
//! once), and the request deadline (503 `DEADLINE_EXCEEDED`). An error the
//! framework answered itself (405, a rejected path…) gets the envelope too.

use super::error::{ErrorCode, REQUEST_ID};
use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
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

    let mut response = REQUEST_ID
        .scope(request_id.clone(), async move {
            let response = next.run(req).await;
            if response.status().as_u16() >= 400
                && response.extensions().get::<ErrorCode>().is_none()
            {
                envelope(response).await
            } else {
                response
            }
        })
        .await;

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

/// The error envelope for an answer the framework made (its headers, such
/// as `allow` on a 405, are kept).
async fn envelope(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let error = ApiError::from_framework(parts.status, &String::from_utf8_lossy(&text));
    let mut fresh = error.into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

/// The longest request target accepted (414 beyond).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) accepted (431 beyond).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Sizes, the in-flight cap and the deadline.
pub async fn bounded(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the request target exceeds {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!("the request headers exceed {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.incr("http.overloaded");
        return ApiError::overloaded().into_response();
    };
    let limit = state.config.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.incr("http.deadline_exceeded");
            ApiError::deadline_exceeded(limit).into_response()
        }
    }
}
