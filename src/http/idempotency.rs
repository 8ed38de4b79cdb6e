//! `Idempotency-Key` on write routes (CONTRACT.md): scoped to the caller and
//! the route (method and path), stored durably with the request fingerprint
//! and the response. Same key and body: the first response again, byte for
//! byte, with `idempotent-replayed: true`. Same key, other body: 409
//! `IDEMPOTENCY_CONFLICT`. A key whose first request is still running: 409
//! too, so two concurrent requests never have two effects.
//!
//! Across crashes: the request's claim on the key travels with its command,
//! and the store records the event's seq on the key in the same
//! transaction as the event. Killed after that commit and before the
//! response was stored, a retry is answered from the log (the entity the
//! event made, as it is now). Killed before it, the key is taken over once
//! the request deadline has passed, and a late commit under the old claim
//! is refused, so the write happens at most once either way.

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::domain::Event;
use crate::store::{ApiClaim, IdempotencyBegin};
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

/// Runs `handler` once per (caller, route, key). The handler gets the claim
/// to pass to the store with its command (`None` without a key).
pub async fn write<F, Fut>(
    state: &AppState,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
    handler: F,
) -> Response
where
    F: FnOnce(Option<ApiClaim>) -> Fut,
    Fut: Future<Output = WriteResult>,
{
    // Two keys are ambiguous: which request would a retry repeat?
    if headers.get_all(HEADER).iter().nth(1).is_some() {
        return ApiError::validation("send one Idempotency-Key header, not several")
            .into_response();
    }
    let Some(raw_key) = headers.get(HEADER) else {
        return respond(serialize(handler(None).await));
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
        .idempotency_begin(
            &scope,
            key,
            &fingerprint,
            state.config.key_abandoned_after(),
        )
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
            replayed(render(status, body))
        }
        Ok(IdempotencyBegin::Committed {
            fingerprint: first,
            seq,
        }) if first == fingerprint => {
            state.metrics.incr("idempotency.replays");
            let parts = serialize(from_log(state, seq).await);
            if parts.2.is_some() {
                // Not answerable now (storage, gateway): the retry tries again.
                return respond(parts);
            }
            if let Err(e) = state
                .store
                .idempotency_settle(&scope, key, seq, parts.0.as_u16(), &parts.1)
                .await
            {
                tracing::warn!(error = %e, "idempotency response not recorded");
            }
            replayed(respond(parts))
        }
        Ok(IdempotencyBegin::InFlight { fingerprint: first }) if first == fingerprint => {
            state.metrics.incr("security.idempotency_conflicts");
            ApiError::idempotency_conflict(
                "a request with this Idempotency-Key is still in progress; retry later",
            )
            .into_response()
        }
        Ok(
            IdempotencyBegin::Completed { .. }
            | IdempotencyBegin::Committed { .. }
            | IdempotencyBegin::InFlight { .. },
        ) => {
            state.metrics.incr("security.idempotency_conflicts");
            ApiError::idempotency_conflict("this Idempotency-Key was used with a different request")
                .into_response()
        }
        Ok(IdempotencyBegin::Owned { claim }) => {
            let hold = ApiClaim {
                scope: scope.clone(),
                key: key.to_string(),
                claim: claim.clone(),
            };
            let parts = serialize(handler(Some(hold)).await);
            let (status, body) = (parts.0, &parts.1);
            let kept = if status.is_server_error() {
                // Nothing worth replaying: let a retry run again (unless an
                // event committed, which the key then answers from the log).
                state.store.idempotency_abandon(&scope, key, &claim).await
            } else {
                state
                    .store
                    .idempotency_finish(&scope, key, &claim, status.as_u16(), body)
                    .await
            };
            if let Err(e) = kept {
                tracing::warn!(error = %e, "idempotency response not recorded");
            }
            respond(parts)
        }
    }
}

fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The answer to a write whose event committed at `seq` but whose response
/// was lost: what that event made, as it stands now.
async fn from_log(state: &AppState, seq: i64) -> WriteResult {
    let stored = state
        .store
        .read_after(seq - 1, 1)
        .await
        .map_err(super::store_error)?
        .into_iter()
        .find(|e| e.seq == seq)
        .ok_or_else(|| {
            tracing::error!(seq, "an idempotency key names an event the log lacks");
            ApiError::internal()
        })?;
    let event = stored.recorded().map_err(super::store_error)?.event;
    let booking = |id: String, status: StatusCode| async move {
        let (booking, trip, _) = super::load_booking_and_trip(state, &id).await?;
        Ok(Written::new(
            status,
            super::views::booking(&booking, &trip),
            seq,
        ))
    };
    match event {
        Event::TripPublished(p) => {
            let trip = super::load_trip(state, &p.trip_id).await?;
            Ok(Written::new(
                StatusCode::CREATED,
                super::views::trip(&trip),
                seq,
            ))
        }
        Event::BookingRequested(r) => booking(r.booking_id, StatusCode::CREATED).await,
        Event::BookingAccepted(d) | Event::BookingRejected(d) | Event::BookingCancelled(d) => {
            booking(d.booking_id, StatusCode::OK).await
        }
        Event::PaymentIntentBound(b) => {
            let Some(gateway) = state.gateway.clone() else {
                return Err(ApiError::payment_unavailable(
                    "payments are not configured (STRIPE_SECRET_KEY)",
                ));
            };
            let secret = gateway
                .client_secret(&b.payment_intent_id)
                .await
                .map_err(super::payments::gateway_error)?;
            Ok(Written::new(
                StatusCode::OK,
                super::payments::intent_answer(&b, secret, false),
                seq,
            ))
        }
        other => {
            tracing::error!(
                seq,
                kind = other.kind(),
                "an idempotency key names a non-API event"
            );
            Err(ApiError::internal())
        }
    }
}
