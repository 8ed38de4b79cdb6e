//! Commands and the pure decision of what event each one records.
//!
//! `decide(&Command, &Context) -> Result<Event, DomainError>`: the store
//! loads the context (the trip and booking a command touches) inside its
//! transaction, calls this, and appends the event. Rules that need no
//! storage (seat limits, amounts, who may do what) live here.

use super::events::{
    stream, BookingDecided, BookingRequested, Event, OperatorAction, PaymentIntentBound,
    TripCancelled, TripPublished,
};
use super::fold::BookingState;
use super::money::{self, Cents, Currency};
use super::payment::StripeFact;
use super::status::{BookingStatus, PaymentStatus};
use super::storable;
use super::table::accepts_new_intent;
use super::trip::TripState;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;

/// Longest accepted title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Upper bound on seats of one trip: a carpool, not a train. Also the
/// ceiling on passengers of one booking (a booking fits in its trip).
pub const MAX_SEATS: u32 = 64;
pub use super::money::MAX_PRICE_PER_SEAT_CENTS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishTrip {
    pub trip_id: String,
    pub driver_id: String,
    pub org_id: Option<String>,
    pub title: String,
    pub seats: u32,
    /// As requested; checked against [`MAX_PRICE_PER_SEAT_CENTS`] here.
    pub price_per_seat_cents: i64,
    pub currency: Currency,
    pub departure_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestBooking {
    pub booking_id: String,
    pub trip_id: String,
    pub user_id: String,
    pub passengers: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindPaymentIntent {
    pub booking_id: String,
    pub actor: String,
    pub payment_intent_id: String,
    pub amount_cents: Cents,
    pub currency: Currency,
}

/// Operator records appended by the replay tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OperatorKind {
    ReplayApplied,
    SideEffectsPaused,
    SideEffectsResumed,
    Imported,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    PublishTrip(PublishTrip),
    CancelTrip { trip_id: String, actor: String },
    RequestBooking(RequestBooking),
    AcceptBooking { booking_id: String, actor: String },
    RejectBooking { booking_id: String, actor: String },
    CancelBooking { booking_id: String, actor: String },
    BindPaymentIntent(BindPaymentIntent),
    RecordStripeEvent(StripeFact),
    RecordOperatorAction(OperatorKind, OperatorAction),
}

impl Command {
    /// The stream the decided event is appended to.
    pub fn stream(&self) -> String {
        match self {
            Self::PublishTrip(c) => stream::trip(&c.trip_id),
            Self::CancelTrip { trip_id, .. } => stream::trip(trip_id),
            Self::RequestBooking(c) => stream::booking(&c.booking_id),
            Self::AcceptBooking { booking_id, .. }
            | Self::RejectBooking { booking_id, .. }
            | Self::CancelBooking { booking_id, .. } => stream::booking(booking_id),
            Self::BindPaymentIntent(c) => stream::booking(&c.booking_id),
            Self::RecordStripeEvent(f) => match (&f.payment_intent_id, &f.object_id) {
                (Some(pi), _) => stream::payment(pi),
                (None, Some(obj)) => stream::stripe_object(obj),
                (None, None) => stream::stripe_object(&f.event_id),
            },
            Self::RecordOperatorAction(..) => stream::OPERATOR.to_string(),
        }
    }

    /// The natural idempotency key: a fact that can happen once has a key
    /// that says so, so a retried command can never record it twice.
    /// Operator records have none; their caller supplies one.
    pub fn natural_key(&self) -> Option<String> {
        match self {
            Self::PublishTrip(c) => Some(format!("trip:{}:published", c.trip_id)),
            Self::CancelTrip { trip_id, .. } => Some(format!("trip:{trip_id}:cancelled")),
            Self::RequestBooking(c) => Some(format!("booking:{}:requested", c.booking_id)),
            Self::AcceptBooking { booking_id, .. } => {
                Some(format!("booking:{booking_id}:accepted"))
            }
            Self::RejectBooking { booking_id, .. } => {
                Some(format!("booking:{booking_id}:rejected"))
            }
            Self::CancelBooking { booking_id, .. } => {
                Some(format!("booking:{booking_id}:cancelled"))
            }
            Self::BindPaymentIntent(c) => Some(format!("binding:{}", c.payment_intent_id)),
            Self::RecordStripeEvent(f) => Some(format!("stripe:{}", f.event_id)),
            Self::RecordOperatorAction(..) => None,
        }
    }

    /// sha256 of the command's canonical JSON: the same request always has
    /// the same fingerprint, another request under the same key does not.
    pub fn fingerprint_material(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The trip whose state the decision needs, if known without a lookup.
    pub fn trip_id(&self) -> Option<&str> {
        match self {
            Self::PublishTrip(c) => Some(&c.trip_id),
            Self::CancelTrip { trip_id, .. } => Some(trip_id),
            Self::RequestBooking(c) => Some(&c.trip_id),
            _ => None,
        }
    }

    /// The booking whose state the decision needs.
    pub fn booking_id(&self) -> Option<&str> {
        match self {
            Self::RequestBooking(c) => Some(&c.booking_id),
            Self::AcceptBooking { booking_id, .. }
            | Self::RejectBooking { booking_id, .. }
            | Self::CancelBooking { booking_id, .. } => Some(booking_id),
            Self::BindPaymentIntent(c) => Some(&c.booking_id),
            _ => None,
        }
    }

    /// The payment intent the command concerns.
    pub fn payment_intent_id(&self) -> Option<&str> {
        match self {
            Self::BindPaymentIntent(c) => Some(&c.payment_intent_id),
            Self::RecordStripeEvent(f) => f.payment_intent_id.as_deref(),
            _ => None,
        }
    }
}

/// A command the domain refuses. Nothing is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Bad input: the message names the field.
    #[error("{0}")]
    Validation(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// The request is valid but the state does not allow it now.
    #[error("{0}")]
    Conflict(String),
    /// The booking already has a pending intent: the caller gets it back.
    #[error("booking already has a pending payment intent {payment_intent_id}")]
    IntentPending { payment_intent_id: String },
}

/// What a decision may look at: the projections of the trip and the
/// booking the command touches, as of this transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub trip: Option<&'a TripState>,
    pub booking: Option<&'a BookingState>,
}

pub fn decide(command: &Command, ctx: Context<'_>) -> Result<Event, DomainError> {
    match command {
        Command::PublishTrip(c) => publish_trip(c),
        Command::CancelTrip { trip_id, actor } => {
            let trip = ctx.trip.ok_or(DomainError::NotFound("trip"))?;
            if trip.driver_id != *actor {
                return Err(DomainError::Forbidden(
                    "only the driver may cancel the trip".into(),
                ));
            }
            if trip.cancelled {
                return Err(DomainError::Conflict("trip is already cancelled".into()));
            }
            Ok(Event::TripCancelled(TripCancelled {
                trip_id: trip_id.clone(),
                by_user_id: actor.clone(),
            }))
        }
        Command::RequestBooking(c) => request_booking(c, ctx),
        Command::AcceptBooking { booking_id, actor } => {
            let (trip, booking) = trip_and_booking(ctx)?;
            driver_only(trip, actor, "accept")?;
            requested_only(booking, "accepted")?;
            if trip.cancelled {
                return Err(DomainError::Conflict("trip is cancelled".into()));
            }
            let free = trip.seats.saturating_sub(trip.seats_accepted);
            if booking.passengers > free {
                return Err(DomainError::Conflict(format!(
                    "not enough seats: {} requested, {free} free",
                    booking.passengers
                )));
            }
            Ok(Event::BookingAccepted(decided(booking_id, trip, actor)))
        }
        Command::RejectBooking { booking_id, actor } => {
            let (trip, booking) = trip_and_booking(ctx)?;
            driver_only(trip, actor, "reject")?;
            requested_only(booking, "rejected")?;
            Ok(Event::BookingRejected(decided(booking_id, trip, actor)))
        }
        Command::CancelBooking { booking_id, actor } => {
            let (trip, booking) = trip_and_booking(ctx)?;
            if *actor != booking.user_id && *actor != trip.driver_id {
                return Err(DomainError::Forbidden(
                    "only the rider or the driver may cancel a booking".into(),
                ));
            }
            if !matches!(
                booking.status,
                BookingStatus::Requested | BookingStatus::Accepted
            ) {
                return Err(DomainError::Conflict(format!(
                    "booking is {} and cannot be cancelled",
                    booking.status
                )));
            }
            Ok(Event::BookingCancelled(decided(booking_id, trip, actor)))
        }
        Command::BindPaymentIntent(c) => bind_intent(c, ctx),
        Command::RecordStripeEvent(fact) => Ok(Event::StripeEventReceived(fact.clone())),
        Command::RecordOperatorAction(kind, action) => Ok(match kind {
            OperatorKind::ReplayApplied => Event::ReplayApplied(action.clone()),
            OperatorKind::SideEffectsPaused => Event::SideEffectsPaused(action.clone()),
            OperatorKind::SideEffectsResumed => Event::SideEffectsResumed(action.clone()),
            OperatorKind::Imported => Event::OperatorImported(action.clone()),
        }),
    }
}

fn publish_trip(c: &PublishTrip) -> Result<Event, DomainError> {
    let title = c.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(DomainError::Validation(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    if !storable::text(title) {
        return Err(DomainError::Validation(
            "title must not contain NUL characters".into(),
        ));
    }
    if !storable::time(&c.departure_time) {
        return Err(DomainError::Validation(
            "departureTime must be in the years 0000 to 9999".into(),
        ));
    }
    if c.seats == 0 || c.seats > MAX_SEATS {
        return Err(DomainError::Validation(format!(
            "seats must be between 1 and {MAX_SEATS}"
        )));
    }
    let price_per_seat_cents = money::price_per_seat(c.price_per_seat_cents)
        .map_err(|e| DomainError::Validation(e.to_string()))?;
    Ok(Event::TripPublished(TripPublished {
        trip_id: c.trip_id.clone(),
        driver_id: c.driver_id.clone(),
        org_id: c.org_id.clone(),
        title: title.to_string(),
        seats: c.seats,
        price_per_seat_cents,
        currency: c.currency.clone(),
        // Stored times keep microseconds: what is decided is what is stored,
        // so the fold of the log equals the projection (verify).
        departure_time: c.departure_time.trunc_subsecs(6),
    }))
}

fn request_booking(c: &RequestBooking, ctx: Context<'_>) -> Result<Event, DomainError> {
    let trip = ctx.trip.ok_or(DomainError::NotFound("trip"))?;
    if ctx.booking.is_some() {
        return Err(DomainError::Conflict("booking id already exists".into()));
    }
    if trip.driver_id == c.user_id {
        return Err(DomainError::Forbidden(
            "a driver cannot book their own trip".into(),
        ));
    }
    if trip.cancelled {
        return Err(DomainError::Conflict("trip is cancelled".into()));
    }
    if c.passengers == 0 || c.passengers > trip.seats {
        return Err(DomainError::Validation(format!(
            "passengers must be between 1 and the trip's {} seats",
            trip.seats
        )));
    }
    Ok(Event::BookingRequested(BookingRequested {
        booking_id: c.booking_id.clone(),
        trip_id: c.trip_id.clone(),
        user_id: c.user_id.clone(),
        org_id: trip.org_id.clone(),
        passengers: c.passengers,
    }))
}

fn bind_intent(c: &BindPaymentIntent, ctx: Context<'_>) -> Result<Event, DomainError> {
    let (trip, booking) = trip_and_booking(ctx)?;
    if booking.user_id != c.actor {
        return Err(DomainError::Forbidden(
            "only the rider may pay for a booking".into(),
        ));
    }
    if booking.status != BookingStatus::Accepted {
        return Err(DomainError::Conflict(format!(
            "booking is {}, only an accepted booking can be paid",
            booking.status
        )));
    }
    let expected = money::fare(trip.price_per_seat_cents, booking.passengers)
        .map_err(|e| DomainError::Validation(format!("fare: {e}")))?;
    if c.amount_cents != expected {
        return Err(DomainError::Validation(format!(
            "amountCents must equal the fare times passengers ({expected})"
        )));
    }
    if c.currency != trip.currency {
        return Err(DomainError::Validation(format!(
            "currency must be the trip's ({})",
            trip.currency
        )));
    }
    let pay = &booking.payment;
    if matches!(
        pay.status,
        PaymentStatus::Pending | PaymentStatus::Processing
    ) {
        if let Some(intent) = &pay.intent {
            return Err(DomainError::IntentPending {
                payment_intent_id: intent.payment_intent_id.clone(),
            });
        }
    }
    if !accepts_new_intent(pay.status) {
        return Err(DomainError::Conflict(format!(
            "payment is {}, no new payment intent can be bound",
            pay.status
        )));
    }
    Ok(Event::PaymentIntentBound(PaymentIntentBound {
        booking_id: c.booking_id.clone(),
        trip_id: booking.trip_id.clone(),
        user_id: booking.user_id.clone(),
        payment_intent_id: c.payment_intent_id.clone(),
        amount_cents: c.amount_cents,
        currency: c.currency.clone(),
        attempt: booking.attempts + 1,
    }))
}

fn trip_and_booking<'a>(
    ctx: Context<'a>,
) -> Result<(&'a TripState, &'a BookingState), DomainError> {
    let booking = ctx.booking.ok_or(DomainError::NotFound("booking"))?;
    let trip = ctx.trip.ok_or(DomainError::NotFound("trip"))?;
    Ok((trip, booking))
}

fn driver_only(trip: &TripState, actor: &str, verb: &str) -> Result<(), DomainError> {
    if trip.driver_id == actor {
        Ok(())
    } else {
        Err(DomainError::Forbidden(format!(
            "only the trip's driver may {verb} a booking"
        )))
    }
}

fn requested_only(booking: &BookingState, target: &str) -> Result<(), DomainError> {
    if booking.status == BookingStatus::Requested {
        Ok(())
    } else {
        Err(DomainError::Conflict(format!(
            "booking is {} and cannot be {target}",
            booking.status
        )))
    }
}

fn decided(booking_id: &str, trip: &TripState, actor: &str) -> BookingDecided {
    BookingDecided {
        booking_id: booking_id.to_string(),
        trip_id: trip.trip_id.clone(),
        by_user_id: actor.to_string(),
    }
}
