//! The event store: one async trait, two real backends (SQLite, PostgreSQL).
//!
//! Every write is a [`Submission`]: a domain command. The store, in one
//! transaction, checks the idempotency key, loads what the decision needs,
//! calls the pure [`decide`](crate::domain::decide), appends the event with
//! its stream version and hash-chain link, and recomputes the projections
//! the event touches. Submissions are committed in groups by writer tasks
//! ([`writer`]), so durability costs one fsync per batch, not per event.
//!
//! Only this module writes SQL.

pub mod chain;
#[macro_use]
mod event_store_impl;
pub mod migrations;
pub mod outbox;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;
mod sqlite_reader;
pub(crate) mod sqlite_writer;
mod unit;
pub mod verify;
mod writer;

pub use outbox::{AfterAttempt, OutboxAttempt, OutboxFilter, OutboxMessage, OutboxStore};

use crate::domain::{Command, DomainError, EventOutcome, Recorded, Source, TripState};
use crate::projection::BookingView;
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::BoxStream;
use std::sync::Arc;

/// The expected version of the target stream, for optimistic concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (the decision is made under lock).
    #[default]
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's latest version must be exactly this.
    Exactly(i64),
}

/// One command to record.
#[derive(Debug, Clone)]
pub struct Submission {
    pub command: Command,
    pub source: Source,
    /// When the fact happened: Stripe's `created` for Stripe events, else now.
    pub occurred_at: DateTime<Utc>,
    pub expected_version: ExpectedVersion,
    /// Overrides the command's natural key (operator records need one).
    pub idempotency_key: Option<String>,
    /// The raw Stripe body, already encrypted.
    pub raw_payload: Option<Vec<u8>>,
    /// Projections to recompute from the log in the same transaction as
    /// this event (an operator's replay): all or nothing with it.
    pub rebuild: Option<Rebuild>,
    /// The API `Idempotency-Key` this command runs under: its seq is
    /// recorded on the key in the same transaction as the event, so a
    /// crash between the commit and the stored response still replays.
    pub api_claim: Option<ApiClaim>,
}

/// A request's hold on an `Idempotency-Key` row: `claim` is the token its
/// [`IdempotencyKeys::idempotency_begin`] wrote. The event commits only
/// while the row still carries that token and no seq (a retry that took
/// over an abandoned key has replaced the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClaim {
    pub scope: String,
    pub key: String,
    pub claim: String,
}

/// Bookings and trips whose projections a submission rebuilds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuild {
    pub bookings: Vec<String>,
    pub trips: Vec<String>,
}

impl Submission {
    pub fn new(command: Command, source: Source, occurred_at: DateTime<Utc>) -> Self {
        Self {
            command,
            source,
            occurred_at: occurred_at.trunc_subsecs(6),
            expected_version: ExpectedVersion::Any,
            idempotency_key: None,
            raw_payload: None,
            rebuild: None,
            api_claim: None,
        }
    }

    pub fn with_api_claim(mut self, claim: Option<ApiClaim>) -> Self {
        self.api_claim = claim;
        self
    }

    pub fn with_rebuild(mut self, rebuild: Rebuild) -> Self {
        self.rebuild = Some(rebuild);
        self
    }

    pub fn expect_version(mut self, expected: ExpectedVersion) -> Self {
        self.expected_version = expected;
        self
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn with_raw_payload(mut self, raw: Vec<u8>) -> Self {
        self.raw_payload = Some(raw);
        self
    }
}

/// What happened to a submission that was recorded (or had been already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub seq: i64,
    pub stream: String,
    pub stream_version: i64,
    /// `true` when the key was already stored: nothing new was written.
    pub duplicate: bool,
    /// The booking the event belongs to, when it binds to one.
    pub booking_id: Option<String>,
    /// What the event did (absent for duplicates and events no projection
    /// tracks, such as trip and operator events).
    pub outcome: Option<EventOutcome>,
}

/// Why a submission was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The domain refused the command; nothing was stored.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The key was used before for a different request.
    #[error("idempotency key {key:?} was used for a different request")]
    IdempotencyConflict { key: String },
    /// The `Idempotency-Key` this command ran under was taken over by a
    /// retry (its first request was presumed dead): nothing was stored.
    #[error("the Idempotency-Key was taken over by a retry of this request")]
    ClaimLost,
    /// Optimistic concurrency: the stream moved.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    VersionConflict {
        stream: String,
        expected: String,
        actual: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The storage itself failed. Handling: answer 503 so the caller retries;
/// nothing acknowledged was lost.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    // No `#[source]` on these: their message is in ours already, and a
    // source would print it a second (and third) time in an error chain.
    #[error("database error: {0}")]
    Backend(sqlx::Error),
    /// The embedded SQLite writer's connection.
    #[error("database error: {0}")]
    Embedded(rusqlite::Error),
    #[error("migration error: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database was written under another `ENCRYPTION_KEY`.
    #[error(
        "ENCRYPTION_KEY does not match the key this database was created with; refusing to open it"
    )]
    WrongKey,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Backend(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Embedded(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

pub use writer::WriterStats;

/// An event row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub stream: String,
    pub stream_version: i64,
    pub kind: String,
    pub source: String,
    pub idempotency_key: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub payload: String,
    pub raw_payload: Option<Vec<u8>>,
    pub fingerprint: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredEvent {
    /// Decodes the payload into a domain event.
    pub fn recorded(&self) -> Result<Recorded, StoreError> {
        let event = crate::domain::Event::from_parts(&self.kind, &self.payload)
            .map_err(|e| StoreError::Corrupt(format!("seq {}: {e}", self.seq)))?;
        Ok(Recorded {
            seq: self.seq,
            recorded_at: self.recorded_at,
            event,
        })
    }
}

/// One entry of a booking's timeline: an event and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub seq: i64,
    pub kind: String,
    pub source: String,
    pub stream: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub outcome: Option<EventOutcome>,
    /// For Stripe events: what matches the entry with Stripe's dashboard.
    pub stripe: Option<StripeRef>,
}

/// A Stripe event's identity on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeRef {
    pub event_id: String,
    pub event_type: String,
    pub payment_intent_id: Option<String>,
}

impl StripeRef {
    /// Read from a stored event's kind and payload; `None` for our own kinds.
    pub fn from_stored(kind: &str, payload: &str) -> Result<Option<Self>, StoreError> {
        if kind != "StripeEventReceived" {
            return Ok(None);
        }
        match crate::domain::Event::from_parts(kind, payload) {
            Ok(crate::domain::Event::StripeEventReceived(f)) => Ok(Some(Self {
                event_id: f.event_id,
                event_type: f.event_type,
                payment_intent_id: f.payment_intent_id,
            })),
            Ok(_) => Ok(None),
            Err(e) => Err(StoreError::Corrupt(e.to_string())),
        }
    }
}

/// Where an `Idempotency-Key` stands when a request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// New: this request runs (holding `claim`) and records its response.
    Owned { claim: String },
    /// The first request's event committed (at `seq`) but its response was
    /// never recorded (the process died in between): answer from the log.
    Committed { fingerprint: String, seq: i64 },
    /// A request with this key finished: its fingerprint and response.
    Completed {
        fingerprint: String,
        status: u16,
        body: String,
    },
    /// A request with this key is still running.
    InFlight { fingerprint: String },
}

/// How long keys are kept. A pending key counts as abandoned after the
/// `abandon_after` its caller passes (the request deadline and a margin):
/// no request of any process runs that long.
pub const IDEMPOTENCY_RETENTION: chrono::Duration = chrono::Duration::hours(48);

/// Counts read from the database, for monitoring (they survive restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// (kind, source, count)
    pub events: Vec<(String, String, i64)>,
    /// (outcome, reason, count)
    pub outcomes: Vec<(String, Option<String>, i64)>,
    /// Stripe events that bind to no booking.
    pub unbound_events: i64,
    /// (kind, status, count)
    pub outbox: Vec<(String, String, i64)>,
    /// When the oldest undelivered message was written.
    pub oldest_pending_outbox: Option<DateTime<Utc>>,
}

/// The storage behind the engine, one trait per job; a new capability adds
/// methods to the trait it belongs to. `Arc<dyn EventStore>` (all of them)
/// is what HTTP, the commands and the replay tool hold; the methods of
/// every part are callable on it.
pub trait EventStore:
    EventLog + ReadModels + IdempotencyKeys + outbox::OutboxStore + OperatorState
{
}

impl<T> EventStore for T where
    T: EventLog + ReadModels + IdempotencyKeys + outbox::OutboxStore + OperatorState + ?Sized
{
}

/// The append-only log: recording commands and reading events back.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Which backend this is (`sqlite` | `postgres`).
    fn backend(&self) -> &'static str;

    /// Records one command. Returns only after the transaction committed.
    async fn submit(&self, submission: Submission) -> Result<Submitted, SubmitError>;

    /// Every writer task runs (false after one died, or after `close`).
    fn writer_alive(&self) -> bool;

    /// The writer's latest batch failed less than `within` ago and none
    /// has committed since (a full disk, a read-only file, a lost database).
    fn writer_failing(&self, within: std::time::Duration) -> bool;

    /// The writer's queue and batches, for monitoring.
    fn writer_stats(&self) -> WriterStats;

    /// Stops taking submissions, commits what is queued and waits for the
    /// writer tasks to end (`serve` on shutdown).
    async fn close(&self);

    /// Cheap liveness check of the database.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The highest seq in the log (0 when empty).
    async fn head_seq(&self) -> Result<i64, StoreError>;

    /// A stream's events in version order.
    async fn read_stream(&self, stream: &str) -> Result<Vec<StoredEvent>, StoreError>;

    /// Up to `limit` events with `seq > after`, in seq order.
    async fn read_after(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError>;

    /// Every event with `seq > after`, in seq order, fetched page by page so
    /// the log is never loaded whole.
    fn stream_all(&self, after: i64) -> BoxStream<'_, Result<StoredEvent, StoreError>>;

    /// Every event of a booking's history: its own stream and the payment
    /// streams of the intents bound to it.
    async fn booking_history(&self, booking_id: &str) -> Result<Vec<StoredEvent>, StoreError>;

    /// Ids of the streams named `<prefix><id>` in the log (`booking:`,
    /// `trip:`) with `id > after`, ordered, at most `limit`: what exists in
    /// the log, whether or not a projection row does.
    async fn logged_ids(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;
}

/// The projections (bookings, trips, outcomes) and counts for monitoring.
#[async_trait]
pub trait ReadModels: Send + Sync {
    async fn booking(&self, booking_id: &str) -> Result<Option<BookingView>, StoreError>;

    /// The log's head, the booking and its trip, read together: what an
    /// API read answers. On SQLite one snapshot (the projections are
    /// exactly as of `seq`); on PostgreSQL the head is read first, so the
    /// projections are at least as new as it.
    async fn booking_read(&self, booking_id: &str) -> Result<BookingRead, StoreError>;

    async fn trip(&self, trip_id: &str) -> Result<Option<TripState>, StoreError>;

    /// The booking's events with their outcomes, in seq order.
    async fn timeline(&self, booking_id: &str) -> Result<Vec<TimelineEntry>, StoreError>;

    /// The outcome recorded for one event.
    async fn outcome(&self, seq: i64) -> Result<Option<EventOutcome>, StoreError>;

    /// Booking ids with `id > after`, ordered, at most `limit`.
    async fn booking_ids(&self, after: &str, limit: i64) -> Result<Vec<String>, StoreError>;

    /// Trip ids with `id > after`, ordered, at most `limit`.
    async fn trip_ids(&self, after: &str, limit: i64) -> Result<Vec<String>, StoreError>;

    /// A trip's bookings, by booking id.
    async fn bookings_of_trip(&self, trip_id: &str) -> Result<Vec<BookingView>, StoreError>;

    /// Counts for monitoring.
    async fn stats(&self) -> Result<LedgerStats, StoreError>;
}

/// [`ReadModels::booking_read`]'s answer.
#[derive(Debug, Clone)]
pub struct BookingRead {
    pub seq: i64,
    pub booking: Option<BookingView>,
    /// The booking's trip (`None` with no booking, or a trip not found).
    pub trip: Option<TripState>,
}

/// `Idempotency-Key` records of the HTTP API.
#[async_trait]
pub trait IdempotencyKeys: Send + Sync {
    /// Claims `key` in `scope` for a request with `fingerprint`, or reports
    /// what an earlier request with that key did. A pending key older than
    /// `abandon_after` whose event never committed is claimed anew.
    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        abandon_after: chrono::Duration,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Records the response of the request that owns the key (`claim`);
    /// nothing if a retry has taken the key over.
    async fn idempotency_finish(
        &self,
        scope: &str,
        key: &str,
        claim: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError>;

    /// Records the response of a key whose event committed at `seq` but
    /// whose response was never recorded (answered from the log).
    async fn idempotency_settle(
        &self,
        scope: &str,
        key: &str,
        seq: i64,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError>;

    /// Releases a key whose request failed without an answer worth keeping
    /// and committed nothing, if `claim` still holds it.
    async fn idempotency_abandon(
        &self,
        scope: &str,
        key: &str,
        claim: &str,
    ) -> Result<(), StoreError>;
}

/// What operators set for every engine process: the side-effects pause.
#[async_trait]
pub trait OperatorState: Send + Sync {
    /// Whether operators paused side effects: the latest pause or resume
    /// event of the operator stream decides.
    async fn side_effects_paused(&self) -> Result<bool, StoreError>;
}

/// Opens the store named by a `DATABASE_URL`, migrating it first.
/// Where a database URL points, for logs and errors: the SQLite file's
/// path, or PostgreSQL's user, host, port and database (never a password).
pub fn describe_url(database_url: &str) -> String {
    use std::str::FromStr;
    if database_url.starts_with("sqlite:") {
        match sqlx::sqlite::SqliteConnectOptions::from_str(database_url) {
            Ok(o) => format!("SQLite file {}", o.get_filename().display()),
            Err(_) => "SQLite (unparsable URL)".into(),
        }
    } else {
        match sqlx::postgres::PgConnectOptions::from_str(database_url) {
            Ok(o) => format!(
                "PostgreSQL {}@{}:{}/{}",
                o.get_username(),
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or_default()
            ),
            Err(_) => "PostgreSQL (unparsable URL)".into(),
        }
    }
}

/// How long the store waits: for a pooled connection, and for one
/// statement (PostgreSQL's `statement_timeout`; SQLite's busy wait for
/// another process's lock). Every wait ends, so a hung database answers
/// 503 instead of holding requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub acquire: std::time::Duration,
    pub statement: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            acquire: std::time::Duration::from_secs(5),
            statement: std::time::Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// What `serve` uses: the configured limits.
    pub fn from_limits(limits: &crate::config::Limits) -> Self {
        Self {
            acquire: limits.db_acquire_timeout,
            statement: limits.db_statement_timeout,
        }
    }
}

/// Opens with the default timeouts (commands; `serve` passes its own).
pub async fn open(
    database_url: &str,
    chain_key: chain::ChainKey,
) -> Result<Arc<dyn EventStore>, StoreError> {
    open_with(database_url, chain_key, Timeouts::default()).await
}

pub async fn open_with(
    database_url: &str,
    chain_key: chain::ChainKey,
    timeouts: Timeouts,
) -> Result<Arc<dyn EventStore>, StoreError> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let options = postgres::Options {
            timeouts,
            ..postgres::Options::default()
        };
        Ok(Arc::new(
            postgres::PgStore::open(database_url, chain_key, options).await?,
        ))
    } else if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open_with(database_url, chain_key, timeouts).await?,
        ))
    } else {
        Err(StoreError::Unavailable(
            "DATABASE_URL must start with sqlite:// or postgres://".to_string(),
        ))
    }
}

/// The result of statements run on `conn`. After an error the connection
/// is closed rather than returned to the pool: its state is unknown (one
/// opened while the file was read-only stays read-only; one cut off by a
/// restart is dead), and the pool opens a fresh one.
async fn recycle_on_error<DB: sqlx::Database, T>(
    conn: sqlx::pool::PoolConnection<DB>,
    result: Result<T, sqlx::Error>,
) -> Result<T, StoreError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            let _ = conn.close().await;
            Err(e.into())
        }
    }
}

/// Runs `op` on a pooled connection ([`recycle_on_error`] after an error).
/// When the error says the connection itself is stale (`stale`: on SQLite,
/// one that could only read, though the file may be writable by now),
/// `op` runs once more, on a fresh connection: nothing was written, and a
/// request should not fail because of a connection the pool kept.
pub(crate) async fn on_pooled<DB, T, F, Fut>(
    pool: &sqlx::Pool<DB>,
    stale: impl Fn(&sqlx::Error) -> bool,
    mut op: F,
) -> Result<T, StoreError>
where
    DB: sqlx::Database,
    F: FnMut(sqlx::pool::PoolConnection<DB>) -> Fut,
    Fut: std::future::Future<Output = (sqlx::pool::PoolConnection<DB>, Result<T, sqlx::Error>)>,
{
    let mut retried = false;
    loop {
        let (conn, result) = op(pool.acquire().await?).await;
        match result {
            Err(e) if !retried && stale(&e) => {
                retried = true;
                let _ = conn.close().await;
            }
            result => return recycle_on_error(conn, result).await,
        }
    }
}

/// Compares the key-check value stored at first open with ours.
pub(crate) fn check_key(stored: Option<String>, ours: &str) -> Result<(), StoreError> {
    match stored {
        Some(v) if v != ours => Err(StoreError::WrongKey),
        _ => Ok(()),
    }
}

/// SQL both backends use to remember the key-check value.
pub(crate) const KEY_CHECK_SELECT: &str = "SELECT value FROM ledger_meta WHERE key = 'key_check'";
pub(crate) const KEY_CHECK_INSERT: &str =
    "INSERT INTO ledger_meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING";

/// Now, at the precision both backends store (microseconds), so a time
/// read back equals the time written and hashed.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// RFC 3339 with microseconds: how times are hashed and stored as text.
pub fn format_time(t: &DateTime<Utc>) -> String {
    use chrono::Datelike;
    if (0..=9999).contains(&t.year()) {
        // The same text, without parsing a format string on every call (it
        // was 7 % of the writer's instructions).
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// `stream_all` for any store: pages of `read_after`, so memory holds one
/// page at a time.
pub(crate) fn paged_stream<S: EventStore + ?Sized>(
    store: &S,
    after: i64,
    page: i64,
) -> BoxStream<'_, Result<StoredEvent, StoreError>> {
    use futures::StreamExt;
    futures::stream::unfold(Some(after), move |cursor| async move {
        let after = cursor?;
        match store.read_after(after, page).await {
            Ok(rows) if rows.is_empty() => None,
            Ok(rows) => {
                let next = rows.last().map(|r| r.seq);
                let items: Vec<Result<StoredEvent, StoreError>> =
                    rows.into_iter().map(Ok).collect();
                Some((futures::stream::iter(items), next))
            }
            Err(e) => Some((futures::stream::iter(vec![Err(e)]), None)),
        }
    })
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::format_time;
    use chrono::{TimeZone, Utc};

    #[test]
    fn format_time_is_the_stored_format() {
        for (secs, nanos) in [
            (0_i64, 0_u32),
            (1_800_000_000, 123_456_789),
            (1_800_000_000, 999_999_999),
            (253_402_300_799, 1_000),
            (-62_167_219_200, 5),
        ] {
            let t = Utc.timestamp_opt(secs, nanos).single().unwrap_or_default();
            assert_eq!(
                format_time(&t),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "{secs}.{nanos}"
            );
        }
    }
}
