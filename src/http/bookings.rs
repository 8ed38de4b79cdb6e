//! Bookings: request, accept, reject, cancel, read, timeline.

use super::access::{can_view_booking, can_view_trip, require, require_user};
use super::extract::{new_id, numeric_id, parse_json, RawBody};
use super::idempotency::{self, Written};
use super::{views, ApiError, AppState};
use crate::auth::Caller;
use crate::domain::decide::RequestBooking;
use crate::domain::{BookingStatus, Command};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/trips/{trip_id}/bookings", post(request))
        .route("/api/bookings/{booking_id}", get(show))
        .route("/api/bookings/{booking_id}/events", get(timeline))
        .route("/api/bookings/{booking_id}/accept", post(accept))
        .route("/api/bookings/{booking_id}/reject", post(reject))
        .route("/api/bookings/{booking_id}/cancel", post(cancel))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewBooking {
    passengers: u32,
}

async fn request(
    State(state): State<AppState>,
    caller: Caller,
    Path(trip_id): Path<String>,
    headers: HeaderMap,
    RawBody(body, _held): RawBody,
) -> Response {
    let route = format!("POST /api/trips/{trip_id}/bookings");
    idempotency::write(&state, &caller, &route, &headers, &body, |claim| async {
        let trip_id = numeric_id(&trip_id, "tripId")?;
        let trip = super::load_trip(&state, &trip_id).await?;
        require(can_view_trip(&caller, &trip), "book this trip")?;
        require_user(&caller, "book trips")?;
        let req: NewBooking = parse_json(&body)?;
        let booking_id = new_id();
        let done = super::submit(
            &state,
            Command::RequestBooking(RequestBooking {
                booking_id: booking_id.clone(),
                trip_id: trip_id.clone(),
                user_id: caller.user_id.clone(),
                passengers: req.passengers,
            }),
            claim,
        )
        .await?;
        let booking = super::load_booking(&state, &booking_id).await?;
        Ok(Written::new(
            StatusCode::CREATED,
            views::booking(&booking, &trip),
            done.seq,
        ))
    })
    .await
}

#[derive(Clone, Copy)]
enum Decision {
    Accept,
    Reject,
    Cancel,
}

async fn decide_booking(
    state: AppState,
    caller: Caller,
    booking_id: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
    decision: Decision,
) -> Response {
    let verb = match decision {
        Decision::Accept => "accept",
        Decision::Reject => "reject",
        Decision::Cancel => "cancel",
    };
    let route = format!("POST /api/bookings/{booking_id}/{verb}");
    idempotency::write(&state, &caller, &route, &headers, &body, |claim| async {
        let booking_id = numeric_id(&booking_id, "bookingId")?;
        // No body is needed; one that is sent must be an empty object.
        if !body.iter().all(u8::is_ascii_whitespace) {
            let fields: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
            if let Some(field) = fields.keys().next() {
                return Err(ApiError::validation(format!("unknown field `{field}`")));
            }
        }
        let (booking, trip, _) = super::load_booking_and_trip(&state, &booking_id).await?;
        let (allowed, expected) = match decision {
            Decision::Accept | Decision::Reject => (
                caller.user_id == trip.driver_id,
                &[BookingStatus::Requested][..],
            ),
            Decision::Cancel => (
                caller.user_id == trip.driver_id || caller.user_id == booking.user_id,
                &[BookingStatus::Requested, BookingStatus::Accepted][..],
            ),
        };
        require(allowed, &format!("{verb} this booking"))?;
        if !expected.contains(&booking.status) {
            return Err(ApiError::conflict(format!(
                "booking is {} and cannot be {verb}ed",
                booking.status
            )));
        }
        let actor = caller.user_id.clone();
        let command = match decision {
            Decision::Accept => Command::AcceptBooking {
                booking_id: booking_id.clone(),
                actor,
            },
            Decision::Reject => Command::RejectBooking {
                booking_id: booking_id.clone(),
                actor,
            },
            Decision::Cancel => Command::CancelBooking {
                booking_id: booking_id.clone(),
                actor,
            },
        };
        let done = super::submit(&state, command, claim).await?;
        if done.duplicate {
            // A concurrent request made this decision first.
            return Err(ApiError::conflict(format!("booking was already {verb}ed")));
        }
        let (booking, trip, _) = super::load_booking_and_trip(&state, &booking_id).await?;
        Ok(Written::new(
            StatusCode::OK,
            views::booking(&booking, &trip),
            done.seq,
        ))
    })
    .await
}

async fn accept(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    h: HeaderMap,
    RawBody(b, _held): RawBody,
) -> Response {
    decide_booking(s, c, id, h, b, Decision::Accept).await
}

async fn reject(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    h: HeaderMap,
    RawBody(b, _held): RawBody,
) -> Response {
    decide_booking(s, c, id, h, b, Decision::Reject).await
}

async fn cancel(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    h: HeaderMap,
    RawBody(b, _held): RawBody,
) -> Response {
    decide_booking(s, c, id, h, b, Decision::Cancel).await
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(booking_id): Path<String>,
) -> Result<Response, ApiError> {
    let booking_id = numeric_id(&booking_id, "bookingId")?;
    let (booking, trip, seq) = super::load_booking_and_trip(&state, &booking_id).await?;
    require(
        can_view_booking(&caller, &trip, &booking),
        "see this booking",
    )?;
    Ok(super::read_response(views::booking(&booking, &trip), seq))
}

async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(booking_id): Path<String>,
) -> Result<Response, ApiError> {
    let booking_id = numeric_id(&booking_id, "bookingId")?;
    let (booking, trip, seq) = super::load_booking_and_trip(&state, &booking_id).await?;
    require(
        can_view_booking(&caller, &trip, &booking),
        "see this booking",
    )?;
    let events = state
        .store
        .timeline(&booking_id)
        .await
        .map_err(super::store_error)?;
    let list: Vec<_> = events.iter().map(views::timeline_entry).collect();
    Ok(super::read_response(
        serde_json::json!({"bookingId": booking_id, "events": list}),
        seq,
    ))
}
