//! The one API error type: a status, a stable machine `code` (CONTRACT.md)
//! and a message, rendered as `{"error":{"code","message","requestId"}}`.
//! Internal details are logged by the middleware, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

tokio::task_local! {
    /// The current request's id, set by the request middleware.
    pub static REQUEST_ID: String;
}

/// The current request's id ("" outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Attached to error responses so the middleware can log the code.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub &'static str);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    pub fn signature_invalid() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "WEBHOOK_SIGNATURE_INVALID",
            "the Stripe-Signature header is missing, malformed, stale or does not match",
        )
    }

    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR", message)
    }

    pub fn authorization(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AUTHORIZATION_ERROR", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    pub fn idempotency_conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT", message)
    }

    pub fn payment_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PAYMENT_UNAVAILABLE",
            message,
        )
    }

    /// Stripe refused the request: a bad gateway from the caller's view.
    pub fn payment_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "PAYMENT_GATEWAY_ERROR", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} not found"),
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("body exceeds {limit} bytes"),
        )
    }

    pub fn storage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "STORAGE_UNAVAILABLE",
            "storage is unavailable; nothing was recorded, retry later",
        )
    }

    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "CONFIGURATION_ERROR",
            message,
        )
    }

    /// More requests in flight than `MAX_IN_FLIGHT`: shed at once.
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "the server is at its limit of requests in flight; nothing was recorded, retry shortly",
        )
    }

    /// The request ran past `REQUEST_TIMEOUT_MS`.
    pub fn deadline_exceeded(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DEADLINE_EXCEEDED",
            format!(
                "the request did not finish within {} ms; a write may still take effect, \
                 retry with the same Idempotency-Key (webhooks: by the same event id)",
                limit.as_millis()
            ),
        )
    }

    /// The client did not send its body within `BODY_READ_TIMEOUT_MS`.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "the request body did not arrive in time",
        )
    }

    /// The envelope for an error answer the HTTP framework produced itself
    /// (no route for the method, a rejected URI or header…): a code for
    /// its status, and its text when it is short and plain.
    pub fn from_framework(status: StatusCode, text: &str) -> Self {
        let code = match status.as_u16() {
            404 => "NOT_FOUND",
            405 => "METHOD_NOT_ALLOWED",
            408 => "REQUEST_TIMEOUT",
            413 => "PAYLOAD_TOO_LARGE",
            414 => "URI_TOO_LONG",
            415 => "UNSUPPORTED_MEDIA_TYPE",
            431 => "HEADERS_TOO_LARGE",
            400..=499 => "VALIDATION_ERROR",
            503 => "SERVICE_UNAVAILABLE",
            _ => "INTERNAL_ERROR",
        };
        let text = text.trim();
        let message = if !text.is_empty() && text.len() <= 200 && !text.contains('\n') {
            text.to_string()
        } else {
            status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_lowercase()
        };
        Self::new(status, code, message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error; it has been logged",
        )
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "code": self.code,
            "message": self.message,
            "requestId": current_request_id(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}
