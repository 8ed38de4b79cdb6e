//! The SQLite writer: one thread owning one connection, committing one
//! batch per transaction.
//!
//! Why a thread of its own: sqlx runs each SQLite connection on a worker
//! thread and hands every statement, and every row of every result, across a
//! channel. A batch is a dozen statements and a few hundred rows, so a
//! batch through sqlx cost hundreds of thread wake-ups, and the writer,
//! which is serial by design (SQLite has one writer), spent most of its
//! time waiting for them while the CPU idled. Here the whole batch (reads,
//! decisions, folds, writes, commit) runs on this thread, with prepared
//! statements kept across batches and blobs bound as blobs: one hand-off in,
//! one out. Readers stay on sqlx's pool ([`super::sqlite`]).
//!
//! Healing: a batch that fails for a database reason rolls back and the
//! connection is dropped and reopened before the next batch, so a state
//! SQLite leaves behind after an I/O error, a full disk or a file that was
//! read-only cannot poison later writes.

use super::chain::ChainKey;
use super::rows::{EventRow, StoredTime, TripRow};
use super::unit::{
    run_batch, BatchEnv, BatchError, ExistingKey, Histories, JobResult, NewRow, OutboxRow,
    OutcomeRow, UnitTx,
};
use super::writer::BatchRunner;
use super::{format_time, now, ApiClaim, StoreError, StoredEvent, Submission};
use crate::domain::{Currency, TripState};
use crate::projection::BookingView;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Pages SQLite keeps in memory for the writer (negative: KiB). The default
/// (2 MiB) is smaller than the indexes a batch touches, so every batch read
/// its pages back through the kernel.
pub(crate) const CACHE_KIB: i64 = 64 * 1024;

/// How the writer opens its connection (again, after a failure).
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub path: PathBuf,
    pub busy_timeout: Duration,
}

/// The SQLite file could not be opened: said once, with its path.
pub(crate) fn cannot_open(path: &std::path::Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!(
        "cannot open the SQLite database {}: {e}",
        path.display()
    ))
}

/// The SQLite file (or its directory, or its file system) is not writable.
pub(crate) fn read_only(path: &std::path::Path) -> StoreError {
    StoreError::Unavailable(format!(
        "the SQLite database {} is read-only: the engine's user must be able to write the file, \
         its -wal and -shm files and its directory, on a file system mounted read-write",
        path.display()
    ))
}

impl WriterConfig {
    /// Opens the writer's connection, refusing one SQLite could only open
    /// read-only: it falls back to read-only without an error when the file
    /// is not writable, and such a connection would fail every batch even
    /// after the permissions come back. Refused, the next batch tries again.
    pub fn open(&self) -> Result<Connection, StoreError> {
        let conn = self.try_open().map_err(|e| cannot_open(&self.path, e))?;
        match conn.is_readonly(rusqlite::DatabaseName::Main) {
            Ok(false) => Ok(conn),
            Ok(true) => Err(read_only(&self.path)),
            Err(e) => Err(cannot_open(&self.path, e)),
        }
    }

    fn try_open(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        // WAL, and FULL: a commit is on disk before it returns (invariant 1).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        // Checkpoints run on their own thread (below); the writer checkpoints
        // itself only if that thread falls far behind.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }
}

/// WAL pages after which the writer checkpoints in line: a backstop for
/// when readers keep the checkpointer from finishing (the WAL file can then
/// grow to about 200 MiB; SQLite reuses it from the start afterwards).
/// Measured with loadgen, 4 runs each: this 6.6–7.3k events/s; a 4 000-page
/// backstop 5.3–6.4k; SQLite's default in-line checkpoints 5.2–6.6k.
const WRITER_CHECKPOINT_PAGES: i64 = 50_000;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Copies committed WAL frames into the database file off the writer's
/// thread. A checkpoint writes and fsyncs the database file; in line, it
/// stalled every few batches (SQLite's default checkpoints every 1 000
/// pages, and one batch dirties hundreds). `PASSIVE` never blocks the
/// writer or the readers. Ends when `stop`'s sender is dropped.
fn checkpointer(config: WriterConfig, stop: mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if conn.is_none() {
            conn = config.open().ok();
        }
        if let Some(c) = &conn {
            if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "SQLite checkpoint failed; retrying with a new connection");
                conn = None;
            }
        }
    }
}

struct Batch {
    subs: Vec<Submission>,
    reply: oneshot::Sender<Result<Vec<JobResult>, StoreError>>,
}

/// The tokio side: sends each batch to the thread and waits for its answer.
pub(crate) struct SqliteWriter {
    batches: mpsc::Sender<Batch>,
    /// Dropped with the writer: stops the checkpointer.
    _checkpoints: mpsc::Sender<()>,
}

impl SqliteWriter {
    /// Starts the thread with an open connection.
    pub fn start(
        config: WriterConfig,
        conn: Connection,
        chain_key: ChainKey,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let (stop, stopped) = mpsc::channel::<()>();
        let checkpoint_config = config.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(checkpoint_config, stopped))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the SQLite checkpointer: {e}"))
            })?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_thread(config, Some(conn), chain_key, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self {
            batches: tx,
            _checkpoints: stop,
        })
    }
}

#[async_trait]
impl BatchRunner for SqliteWriter {
    async fn run(&self, subs: &[Submission]) -> Result<Vec<JobResult>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let batch = Batch {
            subs: subs.to_vec(),
            reply,
        };
        if self.batches.send(batch).is_err() {
            return Err(StoreError::Unavailable(
                "the SQLite writer thread has stopped".into(),
            ));
        }
        answer.await.map_err(|_| {
            StoreError::Unavailable("the SQLite writer thread stopped mid-batch".into())
        })?
    }
}

fn writer_thread(
    config: WriterConfig,
    mut conn: Option<Connection>,
    chain_key: ChainKey,
    batches: mpsc::Receiver<Batch>,
) {
    // Ends when the store (the only sender) is dropped.
    while let Ok(batch) = batches.recv() {
        let result = run_on(&config, &mut conn, &batch.subs, &chain_key);
        let _ = batch.reply.send(result);
    }
}

/// Commits one batch on the connection, opening it first if a failure
/// dropped it.
fn run_on(
    config: &WriterConfig,
    conn: &mut Option<Connection>,
    subs: &[Submission],
    chain_key: &ChainKey,
) -> Result<Vec<JobResult>, StoreError> {
    if conn.is_none() {
        *conn = Some(config.open()?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(StoreError::Unavailable("no SQLite connection".into()));
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        commit_batch(c, subs, chain_key)
    }))
    .unwrap_or_else(|_| Err(BatchError::Corrupt("the batch panicked".into())));
    if outcome.is_err() {
        // Whatever state the connection is in, the next batch gets a fresh
        // one.
        if let Some(c) = conn.take() {
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
        }
    }
    outcome.map_err(super::sqlite::batch_error)
}

fn commit_batch(
    conn: &mut Connection,
    subs: &[Submission],
    chain_key: &ChainKey,
) -> Result<Vec<JobResult>, BatchError> {
    // IMMEDIATE: take the write lock up front, so another process (or the
    // reader pool's own writes) makes us wait (busy_timeout) instead of
    // failing late.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let env = BatchEnv {
        chain_key,
        now: now(),
    };
    let mut unit = Unit { conn: &mut *conn };
    // Every method of `Unit` completes without waiting: polling the batch
    // once on this thread runs it to the end.
    match futures::executor::block_on(run_batch(&mut unit, subs, &env)) {
        Ok(results) => {
            conn.execute_batch("COMMIT")?;
            Ok(results)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

struct Unit<'c> {
    conn: &'c mut Connection,
}

fn time(raw: &str) -> Result<DateTime<Utc>, BatchError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| BatchError::Corrupt(format!("bad time {raw:?}: {e}")))
}

/// A trip by id, in [`trip_row`]'s columns.
pub(crate) const TRIP_SELECT: &str =
    "SELECT trip_id, driver_id, org_id, title, seats, price_per_seat_cents, currency, \
        departure_time, cancelled, seats_accepted, version, last_event_seq \
     FROM trips WHERE trip_id = ?1";

pub(crate) fn trip_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TripRow> {
    Ok(TripRow {
        trip_id: r.get(0)?,
        driver_id: r.get(1)?,
        org_id: r.get(2)?,
        title: r.get(3)?,
        seats: r.get(4)?,
        price_per_seat_cents: r.get(5)?,
        currency: r.get(6)?,
        departure_time: time_column(r, 7)?,
        cancelled: r.get(8)?,
        seats_accepted: r.get(9)?,
        version: r.get(10)?,
        last_event_seq: r.get(11)?,
    })
}

/// A stored time column (RFC 3339 text).
pub(crate) fn time_column(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<StoredTime> {
    let raw: String = r.get(i)?;
    DateTime::parse_from_rfc3339(&raw)
        .map(|t| StoredTime(t.with_timezone(&Utc)))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn decoded<T>(r: Result<T, sqlx::Error>) -> Result<T, BatchError> {
    r.map_err(|e| BatchError::Corrupt(e.to_string()))
}

#[async_trait]
impl UnitTx for Unit<'_> {
    async fn lock(&mut self, _keys: &[String]) -> Result<(), BatchError> {
        // The single writer holds the database's write lock already.
        Ok(())
    }

    async fn existing_keys(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, ExistingKey>, BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, stream, stream_version, fingerprint FROM events \
             WHERE idempotency_key = ?1",
        )?;
        let mut out = HashMap::new();
        for key in keys {
            let found = stmt
                .query_row([key], |r| {
                    Ok(ExistingKey {
                        seq: r.get(0)?,
                        stream: r.get(1)?,
                        stream_version: r.get(2)?,
                        fingerprint: r.get(3)?,
                    })
                })
                .optional()?;
            if let Some(found) = found {
                out.insert(key.clone(), found);
            }
        }
        Ok(out)
    }

    async fn bindings(&mut self, pis: &[String]) -> Result<HashMap<String, String>, BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT booking_id FROM payment_bindings WHERE payment_intent_id = ?1",
        )?;
        let mut out = HashMap::new();
        for pi in pis {
            if let Some(booking) = stmt.query_row([pi], |r| r.get(0)).optional()? {
                out.insert(pi.clone(), booking);
            }
        }
        Ok(out)
    }

    async fn trips(&mut self, ids: &[String]) -> Result<HashMap<String, TripState>, BatchError> {
        let mut stmt = self.conn.prepare_cached(TRIP_SELECT)?;
        let mut out = HashMap::new();
        for id in ids {
            let row = stmt.query_row([id], trip_row).optional()?;
            if let Some(row) = row {
                out.insert(id.clone(), decoded(TripState::try_from(row))?);
            }
        }
        Ok(out)
    }

    async fn stream_heads(
        &mut self,
        streams: &[String],
    ) -> Result<HashMap<String, (i64, String)>, BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT stream_version, hash FROM events WHERE stream = ?1 \
             ORDER BY stream_version DESC LIMIT 1",
        )?;
        let mut out = HashMap::new();
        for stream in streams {
            if let Some(head) = stmt
                .query_row([stream], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
            {
                out.insert(stream.clone(), head);
            }
        }
        Ok(out)
    }

    async fn insert_events(&mut self, rows: &[NewRow]) -> Result<HashMap<String, i64>, BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO events (stream, stream_version, kind, source, idempotency_key, \
                occurred_at, recorded_at, payload, raw_payload, fingerprint, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING seq",
        )?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let seq: i64 = stmt.query_row(
                params![
                    r.stream,
                    r.stream_version,
                    r.kind,
                    r.source,
                    r.idempotency_key,
                    format_time(&r.occurred_at),
                    format_time(&r.recorded_at),
                    r.payload,
                    r.raw_payload.as_deref(),
                    r.fingerprint,
                    r.prev_hash,
                    r.hash,
                ],
                |row| row.get(0),
            )?;
            out.insert(r.idempotency_key.clone(), seq);
        }
        Ok(out)
    }

    async fn insert_bindings(&mut self, rows: &[(String, String, i64)]) -> Result<(), BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO payment_bindings (payment_intent_id, booking_id, seq) VALUES (?1, ?2, ?3)",
        )?;
        for (pi, booking, seq) in rows {
            stmt.execute(params![pi, booking, seq])?;
        }
        Ok(())
    }

    async fn take_api_claims(&mut self, claims: &[&ApiClaim]) -> Result<Vec<bool>, BatchError> {
        // `$N` in order of appearance: SQLite binds them by position.
        let mut stmt = self.conn.prepare_cached(super::sql::API_CLAIM_TAKE)?;
        let mut out = Vec::with_capacity(claims.len());
        for c in claims {
            out.push(stmt.execute(params![c.scope, c.key, c.claim])? == 1);
        }
        Ok(out)
    }

    async fn set_api_claims(
        &mut self,
        settled: &[(&ApiClaim, Option<i64>)],
    ) -> Result<(), BatchError> {
        let mut stmt = self.conn.prepare_cached(super::sql::API_CLAIM_SET)?;
        for (c, seq) in settled {
            stmt.execute(params![seq, c.scope, c.key, c.claim])?;
        }
        Ok(())
    }

    async fn booking_histories(&mut self, ids: &[String]) -> Result<Histories, BatchError> {
        // Only what the fold reads: never the raw payload or chain fields.
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.seq, e.kind, e.recorded_at, e.payload, o.outcome, o.reason \
             FROM events e LEFT JOIN event_outcomes o ON o.seq = e.seq \
             WHERE e.stream = 'booking:' || ?1 \
             UNION ALL \
             SELECT e.seq, e.kind, e.recorded_at, e.payload, o.outcome, o.reason \
             FROM payment_bindings pb \
             JOIN events e ON e.stream = 'payment:' || pb.payment_intent_id \
             LEFT JOIN event_outcomes o ON o.seq = e.seq \
             WHERE pb.booking_id = ?1",
        )?;
        let mut out = Histories::default();
        for id in ids {
            let mut rows = stmt.query([id])?;
            let mut list = Vec::new();
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let kind: String = r.get(1)?;
                let recorded_at: String = r.get(2)?;
                let payload: String = r.get(3)?;
                if let Some(o) = decoded(super::rows::outcome_of(seq, r.get(4)?, r.get(5)?))? {
                    out.outcomes.insert(o.seq, o);
                }
                list.push(decoded(super::rows::recorded(
                    seq,
                    time(&recorded_at)?,
                    &kind,
                    &payload,
                ))?);
            }
            list.sort_by_key(|r| r.seq);
            out.events.insert(id.clone(), list);
        }
        Ok(out)
    }

    async fn trip_history(&mut self, trip_id: &str) -> Result<Vec<StoredEvent>, BatchError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM events WHERE stream = ?1 ORDER BY stream_version",
            super::sql::EVENT_COLUMNS
        ))?;
        let mut rows = stmt.query([crate::domain::events::stream::trip(trip_id)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let row = EventRow {
                seq: r.get(0)?,
                stream: r.get(1)?,
                stream_version: r.get(2)?,
                kind: r.get(3)?,
                source: r.get(4)?,
                idempotency_key: r.get(5)?,
                occurred_at: time_column(r, 6)?,
                recorded_at: time_column(r, 7)?,
                payload: r.get(8)?,
                raw_payload: r.get(9)?,
                fingerprint: r.get(10)?,
                prev_hash: r.get(11)?,
                hash: r.get(12)?,
            };
            out.push(decoded(StoredEvent::try_from(row))?);
        }
        Ok(out)
    }

    async fn save_bookings(&mut self, bookings: &[BookingView]) -> Result<(), BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO trip_participants (booking_id, trip_id, user_id, org_id, passengers, \
                status, payment_status, payment_intent_id, amount_cents, currency, \
                amount_refunded_cents, attempts, version, last_event_seq, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (booking_id) DO UPDATE SET status = excluded.status, \
                payment_status = excluded.payment_status, \
                payment_intent_id = excluded.payment_intent_id, \
                amount_cents = excluded.amount_cents, currency = excluded.currency, \
                amount_refunded_cents = excluded.amount_refunded_cents, \
                attempts = excluded.attempts, version = excluded.version, \
                last_event_seq = excluded.last_event_seq, updated_at = excluded.updated_at",
        )?;
        for v in bookings {
            stmt.execute(params![
                v.booking_id,
                v.trip_id,
                v.user_id,
                v.org_id,
                v.passengers,
                v.status.as_str(),
                v.payment_status.as_str(),
                v.payment_intent_id,
                v.amount_cents.map(|c| c.get()),
                v.currency.as_ref().map(Currency::as_str),
                v.amount_refunded_cents.get(),
                v.attempts,
                v.version,
                v.last_event_seq,
                format_time(&v.updated_at),
            ])?;
        }
        Ok(())
    }

    async fn save_outcomes(&mut self, outcomes: &[OutcomeRow]) -> Result<(), BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO event_outcomes (seq, booking_id, outcome, reason) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (seq) DO UPDATE SET booking_id = excluded.booking_id, \
             outcome = excluded.outcome, reason = excluded.reason",
        )?;
        for (booking, o) in outcomes {
            stmt.execute(params![o.seq, booking, o.outcome.as_str(), o.reason])?;
        }
        Ok(())
    }

    async fn save_outbox(&mut self, rows: &[OutboxRow]) -> Result<(), BatchError> {
        let now = format_time(&now());
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO outbox (message_key, kind, booking_id, payload, created_seq, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (message_key) DO NOTHING",
        )?;
        for r in rows {
            stmt.execute(params![
                r.message_key,
                r.kind,
                r.booking_id,
                r.payload,
                r.created_seq,
                now
            ])?;
        }
        Ok(())
    }

    async fn save_trip(&mut self, t: &TripState) -> Result<(), BatchError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO trips (trip_id, driver_id, org_id, title, seats, price_per_seat_cents, \
                currency, departure_time, cancelled, seats_accepted, version, last_event_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                (SELECT COALESCE(SUM(passengers), 0) FROM trip_participants \
                 WHERE trip_id = ?1 AND status = 'accepted'), ?10, ?11) \
             ON CONFLICT (trip_id) DO UPDATE SET cancelled = excluded.cancelled, \
                seats_accepted = excluded.seats_accepted, version = excluded.version, \
                last_event_seq = excluded.last_event_seq",
        )?;
        stmt.execute(params![
            t.trip_id,
            t.driver_id,
            t.org_id,
            t.title,
            t.seats,
            t.price_per_seat_cents.get(),
            t.currency.as_str(),
            format_time(&t.departure_time),
            t.cancelled,
            t.version,
            t.last_event_seq,
        ])?;
        Ok(())
    }
}
