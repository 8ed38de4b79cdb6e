//! SQLite point reads (a booking, a trip, the log's head) on rusqlite
//! connections of their own, run on tokio's blocking pool.
//!
//! Why: through sqlx each statement crossed threads several times (the
//! command to sqlx's worker thread, each row back, then done), and an API
//! read is three statements: a profile of `GET /api/bookings/:id` at 64
//! connections spent more time in futex wake-ups and the scheduler than in
//! SQLite. Here a read is one hand-off to a blocking thread and one back,
//! whatever its statements. Each read is one transaction (implicit, or
//! explicit for `booking_read`'s three statements), so it sees every commit
//! before it began, from this process or another. Readers never write
//! (`query_only`); the other reads stay on sqlx's pool.

use super::rows::BookingRow;
use super::sqlite_writer::{time_column, trip_row, TRIP_SELECT};
use super::{BookingRead, StoreError};
use crate::domain::TripState;
use crate::projection::BookingView;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections, each kept open between reads. A read waits (async) for one
/// rather than opening another: opening costs more than a read (the
/// schema is parsed), and a profile under write load showed reads beyond
/// a fixed set of idle connections reopening all the time.
const CONNECTIONS: usize = 4;

const HEAD_SELECT: &str = "SELECT MAX(seq) FROM events";

const BOOKING_SELECT: &str = "SELECT booking_id, trip_id, user_id, org_id, passengers, status, \
        payment_status, payment_intent_id, amount_cents, currency, amount_refunded_cents, \
        attempts, version, last_event_seq, updated_at \
     FROM trip_participants WHERE booking_id = ?1";

#[derive(Clone)]
pub(crate) struct PointReader {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    busy_timeout: Duration,
    /// How long a read waits for a connection (`DB_ACQUIRE_TIMEOUT_MS`, as
    /// for the sqlx pool): reads stuck on a hung disk make the next ones
    /// a quick 503, not a wait until the request's deadline.
    acquire_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// One per connection: held from before a read is handed to the
    /// blocking pool until its connection is back in `idle`.
    permits: Arc<tokio::sync::Semaphore>,
}

impl PointReader {
    pub fn new(path: PathBuf, busy_timeout: Duration, acquire_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                busy_timeout,
                acquire_timeout,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(CONNECTIONS)),
            }),
        }
    }

    /// Runs `read` on an idle connection (or a new one) on the blocking
    /// pool. A connection whose read failed is closed, not kept: its state
    /// is unknown.
    async fn run<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let waited = tokio::time::timeout(
            self.inner.acquire_timeout,
            self.inner.permits.clone().acquire_owned(),
        )
        .await;
        let permit = match waited {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => {
                return Err(StoreError::Unavailable(
                    "the SQLite readers are closed".into(),
                ))
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no SQLite reader connection free within {} ms",
                    self.inner.acquire_timeout.as_millis()
                )))
            }
        };
        tokio::task::spawn_blocking(move || {
            // Held until the connection is back in `idle`, however the read
            // ends.
            let _permit = permit;
            let idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match idle {
                Some(c) => c,
                None => inner.open()?,
            };
            let result = read(&conn)?;
            inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            Ok(result)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("an SQLite read did not finish: {e}")))?
    }

    pub async fn booking(&self, booking_id: &str) -> Result<Option<BookingView>, StoreError> {
        let id = booking_id.to_string();
        let row = self
            .run(move |c| {
                c.prepare_cached(BOOKING_SELECT)?
                    .query_row([id], booking_row)
                    .optional()
            })
            .await?;
        Ok(row.map(BookingView::try_from).transpose()?)
    }

    /// The head, the booking and its trip in one read transaction (one
    /// snapshot) and one hand-off.
    pub async fn booking_read(&self, booking_id: &str) -> Result<BookingRead, StoreError> {
        let id = booking_id.to_string();
        let (seq, booking, trip) = self
            .run(move |c| {
                c.execute_batch("BEGIN")?;
                let read = (|| {
                    let seq: Option<i64> =
                        c.prepare_cached(HEAD_SELECT)?.query_row([], |r| r.get(0))?;
                    let booking = c
                        .prepare_cached(BOOKING_SELECT)?
                        .query_row([id], booking_row)
                        .optional()?;
                    let trip = match &booking {
                        Some(b) => c
                            .prepare_cached(TRIP_SELECT)?
                            .query_row([&b.trip_id], trip_row)
                            .optional()?,
                        None => None,
                    };
                    Ok((seq.unwrap_or(0), booking, trip))
                })();
                // A read transaction: nothing to keep, nothing to undo.
                c.execute_batch("COMMIT")?;
                read
            })
            .await?;
        Ok(BookingRead {
            seq,
            booking: booking.map(BookingView::try_from).transpose()?,
            trip: trip.map(TripState::try_from).transpose()?,
        })
    }

    pub async fn trip(&self, trip_id: &str) -> Result<Option<TripState>, StoreError> {
        let id = trip_id.to_string();
        let row = self
            .run(move |c| {
                c.prepare_cached(TRIP_SELECT)?
                    .query_row([id], trip_row)
                    .optional()
            })
            .await?;
        Ok(row.map(TripState::try_from).transpose()?)
    }

    pub async fn head_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = self
            .run(|c| c.prepare_cached(HEAD_SELECT)?.query_row([], |r| r.get(0)))
            .await?;
        Ok(seq.unwrap_or(0))
    }
}

impl Inner {
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }
}

fn booking_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BookingRow> {
    Ok(BookingRow {
        booking_id: r.get(0)?,
        trip_id: r.get(1)?,
        user_id: r.get(2)?,
        org_id: r.get(3)?,
        passengers: r.get(4)?,
        status: r.get(5)?,
        payment_status: r.get(6)?,
        payment_intent_id: r.get(7)?,
        amount_cents: r.get(8)?,
        currency: r.get(9)?,
        amount_refunded_cents: r.get(10)?,
        attempts: r.get(11)?,
        version: r.get(12)?,
        last_event_seq: r.get(13)?,
        updated_at: time_column(r, 14)?,
    })
}
