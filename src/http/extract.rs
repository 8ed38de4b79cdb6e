//! Request plumbing shared by the API routes: the authenticated caller, the
//! raw body (1 MiB), JSON bodies whose errors name the field, and ids.

use super::{ApiError, AppState, BODY_LIMIT};
use crate::auth::{self, Caller, TokenError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// Failures are counted by the middleware (`http.error.AUTHENTICATION_ERROR`).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // The scheme is case-insensitive (RFC 9110): `Bearer`, `bearer`, `BEARER`.
        let token = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let result = match token {
            None | Some("") => Err(TokenError::Missing),
            Some(t) => auth::verify(state.config.jwt_secret.expose(), t),
        };
        result.map_err(|e| ApiError::authentication(e.to_string()))
    }
}

/// The request body, at most [`BODY_LIMIT`] bytes (413 beyond), read within
/// `BODY_READ_TIMEOUT_MS` (408), and only while the process-wide budget of
/// buffered body bytes allows (503 `OVERLOADED`). The second field holds
/// that budget until the handler ends: bind it (`RawBody(body, _held)`).
pub struct RawBody(pub Bytes, pub BodyHeld);

/// A share of the body budget, released when dropped.
pub struct BodyHeld(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (bytes, held) = read_body(req, state).await?;
        Ok(RawBody(bytes, held))
    }
}

/// The announced `Content-Length`, refused (413) beyond [`BODY_LIMIT`].
pub(super) fn check_announced_length(req: &Request) -> Result<Option<usize>, ApiError> {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > BODY_LIMIT) {
        return Err(ApiError::payload_too_large(BODY_LIMIT));
    }
    Ok(announced)
}

pub(super) async fn read_body(
    req: Request,
    state: &AppState,
) -> Result<(Bytes, BodyHeld), ApiError> {
    let announced = check_announced_length(&req)?;
    // Reserve what the body can take, so slow senders cannot pin unbounded
    // memory together: its announced length; nothing for a request that
    // has no body (neither a length nor chunks); the whole limit for a
    // chunked one.
    let exact = axum::body::HttpBody::size_hint(req.body()).exact();
    let length = announced
        .or(exact.and_then(|n| usize::try_from(n).ok()))
        .unwrap_or(BODY_LIMIT)
        .min(BODY_LIMIT);
    let kib = u32::try_from(length.div_ceil(1024)).unwrap_or(u32::MAX);
    let permit = state
        .body_budget
        .clone()
        .try_acquire_many_owned(kib)
        .map_err(|_| {
            state.metrics.incr("http.body_budget_exhausted");
            ApiError::overloaded()
        })?;
    let limit = state.config.limits.body_read_timeout;
    match tokio::time::timeout(limit, axum::body::to_bytes(req.into_body(), BODY_LIMIT)).await {
        Err(_) => {
            state.metrics.incr("http.body_read_timeouts");
            Err(ApiError::request_timeout())
        }
        Ok(Err(_)) => Err(ApiError::payload_too_large(BODY_LIMIT)),
        Ok(Ok(bytes)) => Ok((bytes, BodyHeld(permit))),
    }
}

/// Parses a JSON body; the error names the offending field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation("body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::validation("body is not valid JSON")
        } else if path == "." || path.is_empty() {
            ApiError::validation(inner.to_string())
        } else {
            ApiError::validation(format!("{path}: {inner}"))
        }
    })
}

/// Trip and booking ids are numeric strings.
pub fn numeric_id(raw: &str, field: &str) -> Result<String, ApiError> {
    if !raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(raw.to_string())
    } else {
        Err(ApiError::validation(format!(
            "{field} must be a numeric id"
        )))
    }
}

/// A new numeric id: milliseconds since 2024 in the high bits, 22 random
/// bits below, so ids sort roughly by creation and never collide in practice.
pub fn new_id() -> String {
    const EPOCH_MS: i64 = 1_704_067_200_000;
    let ms = (chrono::Utc::now().timestamp_millis() - EPOCH_MS).max(0) as u64;
    let random: u64 = rand::random::<u64>() & ((1 << 22) - 1);
    ((ms << 22) | random).to_string()
}
