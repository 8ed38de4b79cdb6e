//! SQLite: the embedded default. WAL, `synchronous=FULL`, one writer task
//! owning one connection (group commit through [`Writer`]), readers on a
//! separate pool that never wait for the writer.

use super::chain::ChainKey;
use super::migrations::{migrator, Dialect};
use super::sql::{booking_history_sql, EVENT_COLUMNS};
use super::unit::{
    run_batch, BatchEnv, BatchError, ExistingKey, Histories, JobResult, NewRow, OutboxRow,
    OutcomeRow, UnitTx,
};
use super::writer::{BatchRunner, Writer};
use super::{
    now, IdempotencyBegin, LedgerStats, StoreError, StoredEvent, StripeRef, Submission,
    SubmitError, Submitted, TimelineEntry,
};
use crate::domain::{Currency, EventOutcome, TripState};
use crate::projection::BookingView;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

pub struct SqliteStore {
    /// Readers: several connections; WAL lets them read while the writer writes.
    pub(super) pool: SqlitePool,
    /// The single writer's queue.
    writer: Writer,
}

/// The writer's side: its one connection and the chain key.
struct SqliteRunner {
    conn: Mutex<SqliteConnection>,
    chain_key: ChainKey,
}

/// How long a writer waits for another process's write lock before the
/// submission fails (and the caller answers 503).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
        Self::open_with(url, chain_key, BUSY_TIMEOUT).await
    }

    /// `open` with another busy timeout (tests of a locked database).
    pub async fn open_with(
        url: &str,
        chain_key: ChainKey,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let opts = options(url, busy_timeout)?;
        let mut conn = SqliteConnection::connect_with(&opts).await?;
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
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let runner = Arc::new(SqliteRunner {
            conn: Mutex::new(conn),
            chain_key,
        });
        Ok(Self {
            pool,
            writer: Writer::spawn(runner, 1),
        })
    }

    /// Applies pending migrations and returns.
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let mut conn = SqliteConnection::connect_with(&options(url, BUSY_TIMEOUT)?).await?;
        migrator(Dialect::Sqlite).run(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    /// The reader pool, for tests that inspect or tamper with rows.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl BatchRunner for SqliteRunner {
    async fn run(&self, subs: &[Submission]) -> Result<Vec<JobResult>, StoreError> {
        let mut conn = self.conn.lock().await;
        // IMMEDIATE: take the write lock up front, so another process writing
        // the same file makes us wait (busy_timeout) instead of failing late.
        let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut unit = SqliteUnit { tx };
        let env = BatchEnv {
            chain_key: &self.chain_key,
            now: now(),
        };
        match run_batch(&mut unit, subs, &env).await {
            Ok(results) => {
                unit.tx.commit().await?;
                Ok(results)
            }
            Err(e) => {
                let _ = unit.tx.rollback().await;
                Err(batch_error(e))
            }
        }
    }
}

pub(crate) fn batch_error(e: BatchError) -> StoreError {
    match e {
        BatchError::Db(e) => StoreError::from(e),
        BatchError::Corrupt(m) => StoreError::Corrupt(m),
    }
}

struct SqliteUnit<'c> {
    tx: Transaction<'c, Sqlite>,
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// A time as SQLite stores it.
fn db_time(t: DateTime<Utc>) -> String {
    super::format_time(&t)
}

#[async_trait]
impl UnitTx for SqliteUnit<'_> {
    async fn lock(&mut self, _keys: &[String]) -> Result<(), sqlx::Error> {
        // The single writer holds the database's write lock already.
        Ok(())
    }

    async fn existing_keys(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, ExistingKey>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT idempotency_key, seq, stream, stream_version, fingerprint FROM events \
             WHERE idempotency_key IN (SELECT value FROM json_each($1))",
        )
        .bind(json_list(keys))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("idempotency_key")?,
                    ExistingKey {
                        seq: r.try_get("seq")?,
                        stream: r.try_get("stream")?,
                        stream_version: r.try_get("stream_version")?,
                        fingerprint: r.try_get("fingerprint")?,
                    },
                ))
            })
            .collect()
    }

    async fn bindings(&mut self, pis: &[String]) -> Result<HashMap<String, String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT payment_intent_id, booking_id FROM payment_bindings \
             WHERE payment_intent_id IN (SELECT value FROM json_each($1))",
        )
        .bind(json_list(pis))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("payment_intent_id")?, r.try_get("booking_id")?)))
            .collect()
    }

    async fn trips(&mut self, ids: &[String]) -> Result<HashMap<String, TripState>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT * FROM trips WHERE trip_id IN (SELECT value FROM json_each($1))")
                .bind(json_list(ids))
                .fetch_all(&mut *self.tx)
                .await?;
        rows.iter()
            .map(|r| super::rows::trip(r).map(|t| (t.trip_id.clone(), t)))
            .collect()
    }

    async fn stream_heads(
        &mut self,
        streams: &[String],
    ) -> Result<HashMap<String, (i64, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT e.stream, e.stream_version, e.hash FROM events e \
             JOIN (SELECT stream, MAX(stream_version) AS v FROM events \
                   WHERE stream IN (SELECT value FROM json_each($1)) GROUP BY stream) h \
             ON e.stream = h.stream AND e.stream_version = h.v",
        )
        .bind(json_list(streams))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("stream")?,
                    (r.try_get("stream_version")?, r.try_get("hash")?),
                ))
            })
            .collect()
    }

    async fn insert_events(
        &mut self,
        rows: &[NewRow],
    ) -> Result<HashMap<String, i64>, sqlx::Error> {
        // One multi-row statement per batch: sqlx pays ≈ 50 µs per statement
        // on SQLite, so per-row statements would cap throughput.
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "stream": r.stream,
                    "v": r.stream_version,
                    "kind": r.kind,
                    "source": r.source,
                    "key": r.idempotency_key,
                    "occurred": super::format_time(&r.occurred_at),
                    "recorded": super::format_time(&r.recorded_at),
                    "payload": r.payload,
                    "raw": r.raw_payload.as_ref().map(hex::encode),
                    "fp": r.fingerprint,
                    "prev": r.prev_hash,
                    "hash": r.hash,
                })
            })
            .collect();
        let inserted = sqlx::query(
            "INSERT INTO events (stream, stream_version, kind, source, idempotency_key, \
                occurred_at, recorded_at, payload, raw_payload, fingerprint, prev_hash, hash) \
             SELECT j.value->>'stream', j.value->>'v', j.value->>'kind', j.value->>'source', \
                j.value->>'key', j.value->>'occurred', j.value->>'recorded', j.value->>'payload', \
                unhex(j.value->>'raw'), j.value->>'fp', j.value->>'prev', j.value->>'hash' \
             FROM json_each($1) AS j ORDER BY j.key \
             RETURNING seq, idempotency_key",
        )
        .bind(serde_json::Value::Array(list).to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        inserted
            .iter()
            .map(|r| Ok((r.try_get("idempotency_key")?, r.try_get("seq")?)))
            .collect()
    }

    async fn insert_bindings(&mut self, rows: &[(String, String, i64)]) -> Result<(), sqlx::Error> {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(pi, b, seq)| serde_json::json!({"pi": pi, "b": b, "seq": seq}))
            .collect();
        sqlx::query(
            "INSERT INTO payment_bindings (payment_intent_id, booking_id, seq) \
             SELECT j.value->>'pi', j.value->>'b', j.value->>'seq' FROM json_each($1) AS j",
        )
        .bind(serde_json::Value::Array(list).to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn booking_histories(&mut self, ids: &[String]) -> Result<Histories, sqlx::Error> {
        // One row for the whole batch (a JSON array): sqlx hands rows over
        // from its SQLite thread one by one, so hundreds of history rows
        // per batch cost hundreds of thread wake-ups.
        let all: Option<String> = sqlx::query_scalar(
            "WITH wanted(booking_id) AS (SELECT value FROM json_each($1)), \
             streams(owner, stream) AS ( \
                SELECT booking_id, 'booking:' || booking_id FROM wanted \
                UNION ALL \
                SELECT pb.booking_id, 'payment:' || pb.payment_intent_id \
                FROM payment_bindings pb JOIN wanted w ON w.booking_id = pb.booking_id) \
             SELECT json_group_array(json_array(s.owner, e.seq, e.kind, e.recorded_at, \
                e.payload, o.outcome, o.reason)) \
             FROM streams s JOIN events e ON e.stream = s.stream \
             LEFT JOIN event_outcomes o ON o.seq = e.seq",
        )
        .bind(json_list(ids))
        .fetch_one(&mut *self.tx)
        .await?;
        type Item = (
            String,
            i64,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
        );
        let items: Vec<Item> = serde_json::from_str(all.as_deref().unwrap_or("[]"))
            .map_err(|e| sqlx::Error::Decode(format!("booking histories: {e}").into()))?;
        let mut out = Histories::default();
        for (owner, seq, kind, recorded_at, payload, outcome, reason) in items {
            let at = chrono::DateTime::parse_from_rfc3339(&recorded_at)
                .map_err(|e| sqlx::Error::Decode(format!("bad time {recorded_at:?}: {e}").into()))?
                .with_timezone(&chrono::Utc);
            if let Some(o) = super::rows::outcome_of(seq, outcome, reason)? {
                out.outcomes.insert(o.seq, o);
            }
            out.events
                .entry(owner)
                .or_default()
                .push(super::rows::recorded(seq, at, &kind, &payload)?);
        }
        for list in out.events.values_mut() {
            list.sort_by_key(|r| r.seq);
        }
        Ok(out)
    }

    async fn trip_history(&mut self, trip_id: &str) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 ORDER BY stream_version"
        ))
        .bind(crate::domain::events::stream::trip(trip_id))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(super::rows::event).collect()
    }

    async fn save_bookings(&mut self, bookings: &[BookingView]) -> Result<(), sqlx::Error> {
        let list: Vec<serde_json::Value> = bookings
            .iter()
            .map(|v| {
                serde_json::json!({
                    "id": v.booking_id, "trip": v.trip_id, "user": v.user_id, "org": v.org_id,
                    "passengers": v.passengers, "status": v.status.as_str(),
                    "payment": v.payment_status.as_str(), "pi": v.payment_intent_id,
                    "amount": v.amount_cents, "currency": v.currency.as_ref().map(Currency::as_str),
                    "refunded": v.amount_refunded_cents, "attempts": v.attempts,
                    "version": v.version, "last": v.last_event_seq,
                    "updated": super::format_time(&v.updated_at),
                })
            })
            .collect();
        sqlx::query(
            "INSERT INTO trip_participants (booking_id, trip_id, user_id, org_id, passengers, \
                status, payment_status, payment_intent_id, amount_cents, currency, \
                amount_refunded_cents, attempts, version, last_event_seq, updated_at) \
             SELECT j.value->>'id', j.value->>'trip', j.value->>'user', j.value->>'org', \
                j.value->>'passengers', j.value->>'status', j.value->>'payment', j.value->>'pi', \
                j.value->>'amount', j.value->>'currency', j.value->>'refunded', \
                j.value->>'attempts', j.value->>'version', j.value->>'last', j.value->>'updated' \
             FROM json_each($1) AS j WHERE true \
             ON CONFLICT (booking_id) DO UPDATE SET status = excluded.status, \
                payment_status = excluded.payment_status, \
                payment_intent_id = excluded.payment_intent_id, \
                amount_cents = excluded.amount_cents, currency = excluded.currency, \
                amount_refunded_cents = excluded.amount_refunded_cents, \
                attempts = excluded.attempts, version = excluded.version, \
                last_event_seq = excluded.last_event_seq, updated_at = excluded.updated_at",
        )
        .bind(serde_json::Value::Array(list).to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn save_outcomes(&mut self, outcomes: &[OutcomeRow]) -> Result<(), sqlx::Error> {
        let list: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(booking, o)| {
                serde_json::json!({
                    "seq": o.seq,
                    "booking": booking,
                    "outcome": o.outcome.as_str(),
                    "reason": o.reason,
                })
            })
            .collect();
        sqlx::query(
            "INSERT INTO event_outcomes (seq, booking_id, outcome, reason) \
             SELECT j.value->>'seq', j.value->>'booking', j.value->>'outcome', j.value->>'reason' \
             FROM json_each($1) AS j WHERE true \
             ON CONFLICT (seq) DO UPDATE SET booking_id = excluded.booking_id, \
             outcome = excluded.outcome, reason = excluded.reason",
        )
        .bind(serde_json::Value::Array(list).to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn save_outbox(&mut self, rows: &[OutboxRow]) -> Result<(), sqlx::Error> {
        let now = super::format_time(&now());
        for r in rows {
            sqlx::query(
                "INSERT INTO outbox (message_key, kind, booking_id, payload, created_seq, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_key) DO NOTHING",
            )
            .bind(&r.message_key)
            .bind(r.kind)
            .bind(&r.booking_id)
            .bind(&r.payload)
            .bind(r.created_seq)
            .bind(&now)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn save_trip(&mut self, t: &TripState) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO trips (trip_id, driver_id, org_id, title, seats, price_per_seat_cents, \
                currency, departure_time, cancelled, seats_accepted, version, last_event_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                (SELECT COALESCE(SUM(passengers), 0) FROM trip_participants \
                 WHERE trip_id = $1 AND status = 'accepted'), $10, $11) \
             ON CONFLICT (trip_id) DO UPDATE SET cancelled = excluded.cancelled, \
                seats_accepted = excluded.seats_accepted, version = excluded.version, \
                last_event_seq = excluded.last_event_seq",
        )
        .bind(&t.trip_id)
        .bind(&t.driver_id)
        .bind(&t.org_id)
        .bind(&t.title)
        .bind(i64::from(t.seats))
        .bind(t.price_per_seat_cents.get())
        .bind(t.currency.as_str())
        .bind(super::format_time(&t.departure_time))
        .bind(t.cancelled)
        .bind(t.version)
        .bind(t.last_event_seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

const PAGE: i64 = 500;

impl_event_store!(SqliteStore, "sqlite", PAGE);
