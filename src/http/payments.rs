//! `POST /api/payments/intent`: start paying for an accepted booking.
//!
//! Checks before any call to Stripe (so a tampered amount stores nothing
//! and creates nothing): the caller is the rider, the booking is accepted,
//! the amount is fare × passengers in the trip's currency. A pending intent
//! is returned again (`"replay": true`). Otherwise the gateway creates one
//! with an idempotency key of (booking, attempt), and the binding is
//! recorded; a timeout or failure on either side is recovered by the next
//! call, which gets the same intent from Stripe and binds it.

use super::access::require;
use super::extract::{numeric_id, parse_json, RawBody};
use super::idempotency::{self, Written};
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::domain::decide::BindPaymentIntent;
use crate::domain::events::PaymentIntentBound;
use crate::domain::money::fare;
use crate::domain::table::accepts_new_intent;
use crate::domain::{BookingStatus, Cents, Command, Currency, DomainError, PaymentStatus};
use crate::store::SubmitError;
use crate::stripe::gateway::{GatewayError, IntentRequest};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/payments/intent", post(intent))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IntentBody {
    booking_id: String,
    amount_cents: i64,
    currency: String,
}

pub(super) fn gateway_error(e: GatewayError) -> ApiError {
    tracing::warn!(error = %e, "payment gateway");
    match e {
        GatewayError::Refused(m) => ApiError::payment_gateway(m),
        GatewayError::Unavailable(m) => ApiError::payment_unavailable(m),
    }
}

async fn intent(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body, _held): RawBody,
) -> Response {
    idempotency::write(
        &state,
        &caller,
        "POST /api/payments/intent",
        &headers,
        &body,
        |claim| async {
            let req: IntentBody = parse_json(&body)?;
            let booking_id = numeric_id(&req.booking_id, "bookingId")?;
            if req.amount_cents <= 0 {
                return Err(ApiError::validation(
                    "amountCents must be a positive integer",
                ));
            }
            let currency = Currency::parse(&req.currency)
                .map_err(|e| ApiError::validation(format!("currency: {e}")))?;
            let (booking, trip, _) = super::load_booking_and_trip(&state, &booking_id).await?;
            require(caller.user_id == booking.user_id, "pay for this booking")?;
            if booking.status != BookingStatus::Accepted {
                return Err(ApiError::conflict(format!(
                    "booking is {}, only an accepted booking can be paid",
                    booking.status
                )));
            }
            let expected = fare(trip.price_per_seat_cents, booking.passengers)
                .map_err(|e| ApiError::validation(format!("fare: {e}")))?;
            if req.amount_cents != expected.get() {
                state.metrics.incr("security.amount_tampering");
                return Err(ApiError::validation(format!(
                    "amountCents must equal the fare times passengers ({expected})"
                )));
            }
            if currency != trip.currency {
                return Err(ApiError::validation(format!(
                    "currency must be the trip's ({})",
                    trip.currency
                )));
            }
            let Some(gateway) = state.gateway.clone() else {
                return Err(ApiError::payment_unavailable(
                    "payments are not configured (STRIPE_SECRET_KEY)",
                ));
            };
            let answer = |pi: &str, secret: String, replay: bool| {
                intent_body(&booking_id, pi, &secret, expected, &trip.currency, replay)
            };
            if matches!(
                booking.payment_status,
                PaymentStatus::Pending | PaymentStatus::Processing
            ) {
                if let Some(pi) = &booking.payment_intent_id {
                    let secret = gateway.client_secret(pi).await.map_err(gateway_error)?;
                    return Ok(Written::new(
                        StatusCode::OK,
                        answer(pi, secret, true),
                        booking.last_event_seq,
                    ));
                }
            }
            if !accepts_new_intent(booking.payment_status) {
                return Err(ApiError::conflict(format!(
                    "payment is {}, nothing to pay",
                    booking.payment_status
                )));
            }
            let attempt = booking.attempts + 1;
            let created = gateway
                .create_intent(&IntentRequest {
                    booking_id: booking_id.clone(),
                    trip_id: trip.trip_id.clone(),
                    user_id: booking.user_id.clone(),
                    amount_cents: expected,
                    currency: trip.currency.clone(),
                    idempotency_key: format!("klubz-intent-{booking_id}-{attempt}"),
                })
                .await
                .map_err(gateway_error)?;
            let bind = Command::BindPaymentIntent(BindPaymentIntent {
                booking_id: booking_id.clone(),
                actor: caller.user_id.clone(),
                payment_intent_id: created.payment_intent_id.clone(),
                amount_cents: expected,
                currency: trip.currency.clone(),
            });
            match state
                .store
                .submit(super::submission(bind).with_api_claim(claim))
                .await
            {
                Ok(done) => Ok(Written::new(
                    StatusCode::OK,
                    answer(
                        &created.payment_intent_id,
                        created.client_secret,
                        done.duplicate,
                    ),
                    done.seq,
                )),
                // Another request bound an intent first: return that one.
                Err(SubmitError::Domain(DomainError::IntentPending { payment_intent_id })) => {
                    let secret = gateway
                        .client_secret(&payment_intent_id)
                        .await
                        .map_err(gateway_error)?;
                    Ok(Written::new(
                        StatusCode::OK,
                        answer(&payment_intent_id, secret, true),
                        booking.last_event_seq,
                    ))
                }
                Err(e) => Err(super::submit_error(e)),
            }
        },
    )
    .await
}

/// The intent route's answer.
fn intent_body(
    booking_id: &str,
    payment_intent_id: &str,
    client_secret: &str,
    amount: Cents,
    currency: &Currency,
    replay: bool,
) -> serde_json::Value {
    let mut body = json!({
        "bookingId": booking_id,
        "paymentIntentId": payment_intent_id,
        "clientSecret": client_secret,
        "amountCents": amount,
        "currency": currency.as_str(),
    });
    if replay {
        body["replay"] = json!(true);
    }
    body
}

/// The answer for a binding read back from the log.
pub(super) fn intent_answer(
    bound: &PaymentIntentBound,
    client_secret: String,
    replay: bool,
) -> serde_json::Value {
    intent_body(
        &bound.booking_id,
        &bound.payment_intent_id,
        &client_secret,
        bound.amount_cents,
        &bound.currency,
        replay,
    )
}
