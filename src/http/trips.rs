//! Trips: `POST /api/trips`, `GET /api/trips/:tripId`,
//! `GET /api/trips/:tripId/bookings`.

use super::access::{can_list_bookings, can_view_trip, require, require_user};
use super::extract::{new_id, numeric_id, parse_json, RawBody};
use super::idempotency::{self, Written};
use super::{views, ApiError, AppState};
use crate::auth::Caller;
use crate::domain::decide::PublishTrip;
use crate::domain::{Command, Currency};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/trips", post(publish))
        .route("/api/trips/{trip_id}", get(show))
        .route("/api/trips/{trip_id}/bookings", get(list_bookings))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewTrip {
    title: String,
    seats: u32,
    price_per_seat_cents: i64,
    currency: String,
    departure_time: DateTime<Utc>,
}

async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body, _held): RawBody,
) -> Response {
    idempotency::write(
        &state,
        &caller,
        "POST /api/trips",
        &headers,
        &body,
        |claim| async {
            require_user(&caller, "publish trips")?;
            let req: NewTrip = parse_json(&body)?;
            let currency = Currency::parse(&req.currency)
                .map_err(|e| ApiError::validation(format!("currency: {e}")))?;
            let trip_id = new_id();
            let done = super::submit(
                &state,
                Command::PublishTrip(PublishTrip {
                    trip_id: trip_id.clone(),
                    driver_id: caller.user_id.clone(),
                    org_id: caller.org_id.clone(),
                    title: req.title,
                    seats: req.seats,
                    price_per_seat_cents: req.price_per_seat_cents,
                    currency,
                    departure_time: req.departure_time,
                }),
                claim,
            )
            .await?;
            let trip = super::load_trip(&state, &trip_id).await?;
            Ok(Written::new(
                StatusCode::CREATED,
                views::trip(&trip),
                done.seq,
            ))
        },
    )
    .await
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(trip_id): Path<String>,
) -> Result<Response, ApiError> {
    let trip_id = numeric_id(&trip_id, "tripId")?;
    let seq = state.store.head_seq().await.map_err(super::store_error)?;
    let trip = super::load_trip(&state, &trip_id).await?;
    require(can_view_trip(&caller, &trip), "see this trip")?;
    Ok(super::read_response(views::trip(&trip), seq))
}

async fn list_bookings(
    State(state): State<AppState>,
    caller: Caller,
    Path(trip_id): Path<String>,
) -> Result<Response, ApiError> {
    let trip_id = numeric_id(&trip_id, "tripId")?;
    let seq = state.store.head_seq().await.map_err(super::store_error)?;
    let trip = super::load_trip(&state, &trip_id).await?;
    require(
        can_list_bookings(&caller, &trip),
        "list this trip's bookings",
    )?;
    let bookings = state
        .store
        .bookings_of_trip(&trip_id)
        .await
        .map_err(super::store_error)?;
    let list: Vec<_> = bookings.iter().map(|b| views::booking(b, &trip)).collect();
    Ok(super::read_response(
        serde_json::json!({"tripId": trip_id, "bookings": list}),
        seq,
    ))
}
