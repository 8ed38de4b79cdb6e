//! `POST /api/payments/webhook`: Stripe's deliveries.
//!
//! Order matters: the `Stripe-Signature` header must be present and
//! well-formed, and the announced length within the limit (413), before a
//! byte of the body is read ([`SignedBody`]); then the size limit while
//! reading, the read
//! deadline and the body budget; then the signature over the raw bytes
//! (before any parsing), then lenient parsing, then one durable append (the
//! raw body encrypted) that recomputes the booking it binds to. The answer
//! is sent only after the commit, so a 2xx always means durable.

use super::extract::{read_body, BodyHeld};
use super::{current_request_id, ApiError, AppState};
use crate::domain::Source;
use crate::ingest::{ingest, IngestError, Ingested};
use crate::stripe::signature;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

/// The body of a delivery whose signature header passed the cheap check.
pub struct SignedBody(Bytes, #[allow(dead_code)] BodyHeld);

impl FromRequest<AppState> for SignedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // Cheap checks on the headers first, the announced size included.
        super::extract::check_announced_length(&req)?;
        let header = req
            .headers()
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok());
        if let Err(e) = signature::precheck(header) {
            let m = &state.metrics;
            m.incr("security.signature_failures");
            m.incr(&format!("security.signature_failures.{e:?}"));
            tracing::warn!(requestId = %current_request_id(), reason = %e, "webhook signature header rejected before the body was read");
            return Err(ApiError::signature_invalid());
        }
        let (bytes, held) = read_body(req, state).await?;
        Ok(SignedBody(bytes, held))
    }
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    SignedBody(bytes, _held): SignedBody,
) -> Result<Json<Value>, ApiError> {
    let m = &state.metrics;
    if state.config.webhook_secrets.is_empty() {
        m.incr("webhook.configuration_error");
        return Err(ApiError::configuration(
            "STRIPE_WEBHOOK_SECRET is not configured; webhooks are refused",
        ));
    }
    let secrets: Vec<&str> = state
        .config
        .webhook_secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    let signature_header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = Utc::now().timestamp();
    let tolerance = i64::try_from(state.config.webhook_tolerance_secs).unwrap_or(i64::MAX);
    let verified = signature::verify(signature_header, &bytes, &secrets, now, tolerance)
        .map_err(|e| {
            m.incr("security.signature_failures");
            m.incr(&format!("security.signature_failures.{e:?}"));
            tracing::warn!(requestId = %current_request_id(), reason = %e, "webhook signature rejected");
            ApiError::signature_invalid()
        })?;
    if verified.clock_skew {
        m.incr("webhook.clock_skew");
    }

    let ingested = ingest(
        state.store.as_ref(),
        &state.cipher,
        &bytes,
        state.config.stripe_livemode,
        Source::StripeWebhook,
    )
    .await;
    match ingested {
        Ok((_, Ingested::Replay { .. })) => {
            m.incr("webhook.replay");
            Ok(Json(json!({"received": true, "replay": true})))
        }
        Ok((e, Ingested::Applied { seq })) => {
            m.incr("webhook.applied");
            tracing::info!(requestId = %current_request_id(), eventId = %e.id, eventType = %e.event_type, seq, "webhook applied");
            Ok(Json(json!({"received": true})))
        }
        Ok((e, Ingested::Ignored { seq, reason })) => {
            m.incr(&format!("webhook.ignored.{reason}"));
            tracing::info!(requestId = %current_request_id(), eventId = %e.id, eventType = %e.event_type, seq, reason = %reason, "webhook stored, not applied");
            Ok(Json(
                json!({"received": true, "ignored": true, "reason": reason}),
            ))
        }
        // The id is stored, with a different body: we hold this event
        // already; acknowledge, and count it as a security signal.
        Ok((e, Ingested::ConflictingReplay)) => {
            m.incr("webhook.replay");
            m.incr("security.idempotency_conflicts");
            tracing::warn!(requestId = %current_request_id(), eventId = %e.id, "webhook event id stored before with different content");
            Ok(Json(json!({"received": true, "replay": true})))
        }
        Err(IngestError::NotAnEvent(e)) => {
            m.incr("webhook.invalid_body");
            Err(ApiError::validation(format!(
                "authentic body is not a Stripe event: {e}"
            )))
        }
        Err(IngestError::Store(e)) => {
            m.incr("webhook.storage_unavailable");
            tracing::warn!(requestId = %current_request_id(), error = %e, "webhook not stored: storage unavailable");
            Err(super::store_error(e))
        }
        Err(IngestError::Refused(e)) => {
            tracing::error!(requestId = %current_request_id(), error = %e, "webhook refused by the domain");
            Err(ApiError::internal())
        }
    }
}
