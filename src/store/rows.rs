//! Typed rows both backends read into (`sqlx::FromRow`), and their
//! conversion into the domain's types. The one difference between the
//! dialects, how a time is stored (SQLite: RFC 3339 text; PostgreSQL:
//! `TIMESTAMPTZ`), is [`StoredTime`]'s two `Decode` impls; `INTEGER`
//! columns are read as `i32`, `BIGINT` as `i64`, in both.

use super::sql::cents;
use super::StoredEvent;
use crate::domain::fold::OutcomeKind;
use crate::domain::{BookingStatus, Currency, EventOutcome, PaymentStatus, TripState};
use crate::projection::BookingView;
use chrono::{DateTime, Utc};
use sqlx::{Database, Decode, FromRow, Postgres, Sqlite, Type};

/// A time as either backend stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredTime(pub DateTime<Utc>);

impl Type<Sqlite> for StoredTime {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &<Sqlite as Database>::TypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for StoredTime {
    fn decode(value: <Sqlite as Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let raw = <String as Decode<Sqlite>>::decode(value)?;
        let t = DateTime::parse_from_rfc3339(&raw).map_err(|e| format!("bad time {raw:?}: {e}"))?;
        Ok(Self(t.with_timezone(&Utc)))
    }
}

impl Type<Postgres> for StoredTime {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &<Postgres as Database>::TypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for StoredTime {
    fn decode(
        value: <Postgres as Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Self(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

fn decode_err(what: &str, raw: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} {raw:?}").into())
}

fn currency(raw: &str) -> Result<Currency, sqlx::Error> {
    Currency::parse(raw).map_err(|_| decode_err("currency", raw))
}

fn count(raw: i32, column: &str) -> Result<u32, sqlx::Error> {
    u32::try_from(raw).map_err(|_| decode_err(column, &raw.to_string()))
}

/// An `events` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub seq: i64,
    pub stream: String,
    pub stream_version: i64,
    pub kind: String,
    pub source: String,
    pub idempotency_key: String,
    pub occurred_at: StoredTime,
    pub recorded_at: StoredTime,
    pub payload: String,
    pub raw_payload: Option<Vec<u8>>,
    pub fingerprint: String,
    pub prev_hash: String,
    pub hash: String,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = sqlx::Error;
    fn try_from(r: EventRow) -> Result<Self, Self::Error> {
        Ok(Self {
            seq: r.seq,
            stream: r.stream,
            stream_version: r.stream_version,
            kind: r.kind,
            source: r.source,
            idempotency_key: r.idempotency_key,
            occurred_at: r.occurred_at.0,
            recorded_at: r.recorded_at.0,
            payload: r.payload,
            raw_payload: r.raw_payload,
            fingerprint: r.fingerprint,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}

/// What the fold reads of an event, with its stored outcome.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FoldRow {
    pub seq: i64,
    pub stream: String,
    pub kind: String,
    pub recorded_at: StoredTime,
    pub payload: String,
    pub outcome: Option<String>,
    pub reason: Option<String>,
}

/// Decodes a stored event for the fold.
pub(crate) fn recorded(
    seq: i64,
    recorded_at: DateTime<Utc>,
    kind: &str,
    payload: &str,
) -> Result<crate::domain::Recorded, sqlx::Error> {
    let event = crate::domain::Event::from_parts(kind, payload)
        .map_err(|e| sqlx::Error::Decode(format!("seq {seq}: {e}").into()))?;
    Ok(crate::domain::Recorded {
        seq,
        recorded_at,
        event,
    })
}

/// Builds an outcome from its stored columns.
pub(crate) fn outcome_of(
    seq: i64,
    outcome: Option<String>,
    reason: Option<String>,
) -> Result<Option<EventOutcome>, sqlx::Error> {
    OutcomeRow {
        seq,
        outcome,
        reason,
    }
    .into_outcome()
}

/// A `trips` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TripRow {
    pub trip_id: String,
    pub driver_id: String,
    pub org_id: Option<String>,
    pub title: String,
    pub seats: i32,
    pub price_per_seat_cents: i64,
    pub currency: String,
    pub departure_time: StoredTime,
    pub cancelled: bool,
    pub seats_accepted: i32,
    pub version: i64,
    pub last_event_seq: i64,
}

impl TryFrom<TripRow> for TripState {
    type Error = sqlx::Error;
    fn try_from(r: TripRow) -> Result<Self, Self::Error> {
        Ok(Self {
            trip_id: r.trip_id,
            driver_id: r.driver_id,
            org_id: r.org_id,
            title: r.title,
            seats: count(r.seats, "seats")?,
            price_per_seat_cents: cents(r.price_per_seat_cents)?,
            currency: currency(&r.currency)?,
            departure_time: r.departure_time.0,
            cancelled: r.cancelled,
            seats_accepted: count(r.seats_accepted, "seats_accepted")?,
            version: r.version,
            last_event_seq: r.last_event_seq,
        })
    }
}

/// A `trip_participants` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BookingRow {
    pub booking_id: String,
    pub trip_id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub passengers: i32,
    pub status: String,
    pub payment_status: String,
    pub payment_intent_id: Option<String>,
    pub amount_cents: Option<i64>,
    pub currency: Option<String>,
    pub amount_refunded_cents: i64,
    pub attempts: i32,
    pub version: i64,
    pub last_event_seq: i64,
    pub updated_at: StoredTime,
}

impl TryFrom<BookingRow> for BookingView {
    type Error = sqlx::Error;
    fn try_from(r: BookingRow) -> Result<Self, Self::Error> {
        Ok(Self {
            booking_id: r.booking_id,
            trip_id: r.trip_id,
            user_id: r.user_id,
            org_id: r.org_id,
            passengers: count(r.passengers, "passengers")?,
            status: BookingStatus::parse(&r.status)
                .ok_or_else(|| decode_err("status", &r.status))?,
            payment_status: PaymentStatus::parse(&r.payment_status)
                .ok_or_else(|| decode_err("payment status", &r.payment_status))?,
            payment_intent_id: r.payment_intent_id,
            amount_cents: r.amount_cents.map(cents).transpose()?,
            currency: r.currency.as_deref().map(currency).transpose()?,
            amount_refunded_cents: cents(r.amount_refunded_cents)?,
            attempts: count(r.attempts, "attempts")?,
            version: r.version,
            last_event_seq: r.last_event_seq,
            updated_at: r.updated_at.0,
        })
    }
}

/// An event's outcome, `outcome` NULL when none is recorded (a LEFT JOIN).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OutcomeRow {
    seq: i64,
    outcome: Option<String>,
    reason: Option<String>,
}

impl OutcomeRow {
    pub fn into_outcome(self) -> Result<Option<EventOutcome>, sqlx::Error> {
        let Some(outcome) = self.outcome else {
            return Ok(None);
        };
        Ok(Some(EventOutcome {
            seq: self.seq,
            outcome: OutcomeKind::parse(&outcome).ok_or_else(|| decode_err("outcome", &outcome))?,
            reason: self.reason,
        }))
    }
}

/// One timeline entry: an event's identity and times, its payload (for
/// the Stripe fields) and its outcome.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TimelineRow {
    pub seq: i64,
    pub kind: String,
    pub source: String,
    pub stream: String,
    pub occurred_at: StoredTime,
    pub recorded_at: StoredTime,
    pub payload: String,
    pub outcome: Option<String>,
    pub reason: Option<String>,
}

impl TimelineRow {
    pub fn outcome(&self) -> Result<Option<EventOutcome>, sqlx::Error> {
        OutcomeRow {
            seq: self.seq,
            outcome: self.outcome.clone(),
            reason: self.reason.clone(),
        }
        .into_outcome()
    }
}

/// Decodes any row into `T` through its typed row `R`.
fn decode<'r, Row, R, T>(row: &'r Row) -> Result<T, sqlx::Error>
where
    Row: sqlx::Row,
    R: sqlx::FromRow<'r, Row>,
    T: TryFrom<R, Error = sqlx::Error>,
{
    T::try_from(R::from_row(row)?)
}

pub(crate) fn event<'r, Row: sqlx::Row>(row: &'r Row) -> Result<StoredEvent, sqlx::Error>
where
    EventRow: sqlx::FromRow<'r, Row>,
{
    decode::<Row, EventRow, StoredEvent>(row)
}

pub(crate) fn trip<'r, Row: sqlx::Row>(row: &'r Row) -> Result<TripState, sqlx::Error>
where
    TripRow: sqlx::FromRow<'r, Row>,
{
    decode::<Row, TripRow, TripState>(row)
}

pub(crate) fn booking<'r, Row: sqlx::Row>(row: &'r Row) -> Result<BookingView, sqlx::Error>
where
    BookingRow: sqlx::FromRow<'r, Row>,
{
    decode::<Row, BookingRow, BookingView>(row)
}

pub(crate) fn outcome<'r, Row: sqlx::Row>(row: &'r Row) -> Result<Option<EventOutcome>, sqlx::Error>
where
    OutcomeRow: sqlx::FromRow<'r, Row>,
{
    OutcomeRow::from_row(row)?.into_outcome()
}
