//! SQLite: the embedded default. WAL, `synchronous=FULL`, one writer thread
//! owning one connection ([`super::sqlite_writer`]; group commit through
//! [`Writer`]), readers on a separate sqlx pool that never wait for the
//! writer.

use super::chain::ChainKey;
use super::migrations::{migrator, Dialect};
use super::sql::{booking_history_sql, EVENT_COLUMNS};
use super::sqlite_reader::PointReader;
use super::sqlite_writer::{SqliteWriter, WriterConfig};
use super::unit::BatchError;
use super::writer::Writer;
use super::{
    now, IdempotencyBegin, LedgerStats, StoreError, StoredEvent, StripeRef, Submission,
    SubmitError, Submitted, TimelineEntry,
};
use crate::domain::{EventOutcome, TripState};
use crate::projection::BookingView;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct SqliteStore {
    /// Readers: several connections; WAL lets them read while the writer writes.
    pub(super) pool: SqlitePool,
    read_only_seen: ReadOnlySeen,
    /// The hot point reads, off sqlx.
    points: PointReader,
    /// The single writer's queue.
    writer: Writer,
}

/// How long `migrate` waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn options(url: &str, busy_timeout: Duration) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk before it returns (invariant 1).
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .foreign_keys(true))
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database.
    pub async fn open(url: &str, chain_key: ChainKey) -> Result<Self, StoreError> {
        Self::open_with(url, chain_key, super::Timeouts::default()).await
    }

    /// `open` with other timeouts (`serve`'s limits; tests of a locked
    /// database). The statement timeout is the busy wait for another
    /// process's lock.
    pub async fn open_with(
        url: &str,
        chain_key: ChainKey,
        timeouts: super::Timeouts,
    ) -> Result<Self, StoreError> {
        let busy_timeout = timeouts.statement;
        let opts = options(url, busy_timeout)?;
        // The writer's connection first: it says plainly when the file is
        // read-only (sqlx would fail later, on a migration's write).
        let config = WriterConfig {
            path: opts.get_filename().to_path_buf(),
            busy_timeout,
        };
        let writer_conn = config.open()?;
        let mut conn = SqliteConnection::connect_with(&opts)
            .await
            .map_err(|e| open_error(&opts, e))?;
        migrator(Dialect::Sqlite).run(&mut conn).await?;
        let ours = chain_key.check_value();
        sqlx::query(super::KEY_CHECK_INSERT)
            .bind(&ours)
            .execute(&mut conn)
            .await?;
        let stored: Option<String> = sqlx::query_scalar(super::KEY_CHECK_SELECT)
            .fetch_optional(&mut conn)
            .await?;
        super::check_key(stored, &ours)?;
        let read_only_seen = ReadOnlySeen::default();
        let seen = read_only_seen.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeouts.acquire)
            // No ping on each acquire: the file is local, a ping proves
            // nothing a query would not, and each one was two thread
            // hand-offs (a read did three).
            .test_before_acquire(false)
            .before_acquire(move |_, meta| {
                let fresh = !seen.predates(meta.age);
                Box::pin(async move { Ok(fresh) })
            })
            // Connections are replaced now and then: one opened while the
            // file was read-only does not stay read-only for ever.
            .max_lifetime(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await?;
        // Migrated and checked through sqlx; the writer thread has its own
        // connection to the same file.
        conn.close().await?;
        let points = PointReader::new(config.path.clone(), busy_timeout, timeouts.acquire);
        let runner = Arc::new(SqliteWriter::start(config, writer_conn, chain_key)?);
        Ok(Self {
            pool,
            read_only_seen,
            points,
            writer: Writer::spawn(runner, 1),
        })
    }

    /// Applies pending migrations and returns.
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let opts = options(url, BUSY_TIMEOUT)?;
        let mut conn = SqliteConnection::connect_with(&opts)
            .await
            .map_err(|e| open_error(&opts, e))?;
        migrator(Dialect::Sqlite).run(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    async fn point_head_seq(&self) -> Result<i64, StoreError> {
        self.points.head_seq().await
    }

    async fn point_booking(&self, booking_id: &str) -> Result<Option<BookingView>, StoreError> {
        self.points.booking(booking_id).await
    }

    async fn point_booking_read(&self, booking_id: &str) -> Result<super::BookingRead, StoreError> {
        self.points.booking_read(booking_id).await
    }

    async fn point_trip(&self, trip_id: &str) -> Result<Option<TripState>, StoreError> {
        self.points.trip(trip_id).await
    }

    /// A connection that could only read is stale ([`super::on_pooled`]):
    /// it and every connection opened before it are replaced.
    fn stale(&self, e: &sqlx::Error) -> bool {
        self.read_only_seen.note(e)
    }

    /// The reader pool, for tests that inspect or tamper with rows.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// When a pooled connection last failed because it could only read.
/// SQLite opens a file it may not write read-only, without an error, and
/// the connection stays so after the permissions come back; so after such
/// a failure every connection opened before it is replaced on its next
/// acquire, and the pool writes again as soon as the file is writable
/// (instead of failing once per stale connection).
#[derive(Clone, Default)]
struct ReadOnlySeen(Arc<std::sync::Mutex<Option<Instant>>>);

impl ReadOnlySeen {
    /// Notes `e` if it says the connection could only read.
    fn note(&self, e: &sqlx::Error) -> bool {
        let read_only = is_read_only(e);
        if read_only {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        read_only
    }

    /// A connection `age` old was opened before the latest such failure.
    fn predates(&self, age: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| age >= at.elapsed())
    }
}

/// SQLITE_READONLY, or one of its extended codes.
fn is_read_only(e: &sqlx::Error) -> bool {
    const SQLITE_READONLY: i32 = 8;
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == SQLITE_READONLY),
        _ => false,
    }
}

fn open_error(opts: &SqliteConnectOptions, e: sqlx::Error) -> StoreError {
    super::sqlite_writer::cannot_open(opts.get_filename(), e)
}

/// A time as SQLite stores it.
fn db_time(t: DateTime<Utc>) -> String {
    super::format_time(&t)
}

pub(crate) fn batch_error(e: BatchError) -> StoreError {
    match e {
        BatchError::Db(e) => StoreError::from(e),
        BatchError::Sqlite(e) => StoreError::from(e),
        BatchError::Corrupt(m) => StoreError::Corrupt(m),
    }
}

const PAGE: i64 = 500;

impl_event_store!(SqliteStore, "sqlite", PAGE);
