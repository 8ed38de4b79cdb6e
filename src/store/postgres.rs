//! PostgreSQL: for production and for several engine processes on one
//! database. Writer tasks commit batches concurrently; transaction-scoped
//! advisory locks, taken in a global order (intent → booking → trip),
//! serialise work on the same booking, intent or trip across processes;
//! unique constraints (idempotency key, stream version) back them up, and a
//! batch that hits one (or a deadlock) is retried whole.

use super::chain::ChainKey;
use super::migrations::{migrator, Dialect};
use super::sql::{booking_history_sql, EVENT_COLUMNS};
use super::sqlite::batch_error;
use super::unit::{
    run_batch, BatchEnv, BatchError, ExistingKey, Histories, JobResult, NewRow, OutboxRow,
    OutcomeRow, UnitTx,
};
use super::writer::{BatchRunner, Writer};
use super::{
    now, ApiClaim, IdempotencyBegin, LedgerStats, StoreError, StoredEvent, StripeRef, Submission,
    SubmitError, Submitted, TimelineEntry,
};
use crate::domain::{Cents, EventOutcome, TripState};
use crate::projection::BookingView;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Tuning.
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent writer tasks (each commits its own batches).
    pub writers: usize,
    pub max_connections: u32,
    pub timeouts: super::Timeouts,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            // Measured with `bench` (2 cores): 1 writer 3.7k events/s in
            // process, 2 and 4 about 6k, 8 fewer (more round trips wait).
            writers: 4,
            max_connections: 16,
            timeouts: super::Timeouts::default(),
        }
    }
}

pub struct PgStore {
    pub(super) pool: PgPool,
    writer: Writer,
}

struct PgRunner {
    pool: PgPool,
    chain_key: ChainKey,
}

/// Attempts per batch before giving up on conflicts.
const MAX_ATTEMPTS: usize = 50;

impl PgStore {
    pub async fn open(
        url: &str,
        chain_key: ChainKey,
        options: Options,
    ) -> Result<Self, StoreError> {
        let pool = Self::connect(url, options.max_connections, options.timeouts).await?;
        migrator(Dialect::Postgres).run(&pool).await?;
        let ours = chain_key.check_value();
        sqlx::query(super::KEY_CHECK_INSERT)
            .bind(&ours)
            .execute(&pool)
            .await?;
        let stored: Option<String> = sqlx::query_scalar(super::KEY_CHECK_SELECT)
            .fetch_optional(&pool)
            .await?;
        super::check_key(stored, &ours)?;
        let runner = Arc::new(PgRunner {
            pool: pool.clone(),
            chain_key,
        });
        Ok(Self {
            pool,
            writer: Writer::spawn(runner, options.writers),
        })
    }

    async fn connect(
        url: &str,
        max_connections: u32,
        timeouts: super::Timeouts,
    ) -> Result<PgPool, StoreError> {
        // Custom plans for every statement: a generic plan chosen while a
        // table was small (a sequential scan) stays cached for the
        // connection's life and makes every step's cost grow with the log.
        // No JIT: compiling a plan costs more than these short statements.
        let statement_ms = timeouts.statement.as_millis().to_string();
        let opts = PgConnectOptions::from_str(url)?.options([
            ("plan_cache_mode", "force_custom_plan"),
            ("jit", "off"),
            ("statement_timeout", statement_ms.as_str()),
        ]);
        let place = format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or_default()
        );
        // One plain connection first: a refused or unknown host fails at
        // once with its own message, instead of the pool retrying it in
        // silence until its acquire timeout.
        {
            use sqlx::Connection;
            let probe = sqlx::PgConnection::connect_with(&opts).await.map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {place}: {e}"))
            })?;
            let _ = probe.close().await;
        }
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(timeouts.acquire)
            // Connections are replaced now and then, so one left in an odd
            // state by an error does not live for ever.
            .max_lifetime(Duration::from_secs(600))
            .connect_with(opts)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {place}: {e}"))
            })
    }

    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let pool = Self::connect(url, 2, super::Timeouts::default()).await?;
        migrator(Dialect::Postgres).run(&pool).await?;
        pool.close().await;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Conflicts another transaction caused: retry the batch.
fn retryable(e: &BatchError) -> bool {
    match e {
        BatchError::Db(sqlx::Error::Database(db)) => matches!(
            db.code().as_deref(),
            Some("23505") | Some("40P01") | Some("40001")
        ),
        _ => false,
    }
}

#[async_trait]
impl BatchRunner for PgRunner {
    async fn run(&self, subs: &[Submission]) -> Result<Vec<JobResult>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = self.pool.begin().await?;
            let mut unit = PgUnit { tx };
            let env = BatchEnv {
                chain_key: &self.chain_key,
                now: now(),
            };
            match run_batch(&mut unit, subs, &env).await {
                Ok(results) => match unit.tx.commit().await {
                    Ok(()) => return Ok(results),
                    Err(e) => {
                        let e = BatchError::Db(e);
                        if attempt < MAX_ATTEMPTS && retryable(&e) {
                            continue;
                        }
                        return Err(batch_error(e));
                    }
                },
                Err(e) => {
                    let _ = unit.tx.rollback().await;
                    if attempt < MAX_ATTEMPTS && retryable(&e) {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    return Err(batch_error(e));
                }
            }
        }
    }
}

struct PgUnit {
    tx: Transaction<'static, Postgres>,
}

/// A time as PostgreSQL binds it.
fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t
}

#[async_trait]
impl UnitTx for PgUnit {
    async fn lock(&mut self, keys: &[String]) -> Result<(), BatchError> {
        if keys.is_empty() {
            return Ok(());
        }
        // Keys arrive sorted; the ordered subquery takes them in that order,
        // so two transactions never wait on each other in a cycle.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) \
             FROM (SELECT k FROM UNNEST($1::text[]) AS k ORDER BY k) AS ordered",
        )
        .bind(keys)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn existing_keys(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, ExistingKey>, BatchError> {
        let rows = sqlx::query(
            "SELECT idempotency_key, seq, stream, stream_version, fingerprint FROM events \
             WHERE idempotency_key = ANY($1)",
        )
        .bind(keys)
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

    async fn bindings(&mut self, pis: &[String]) -> Result<HashMap<String, String>, BatchError> {
        let rows = sqlx::query(
            "SELECT payment_intent_id, booking_id FROM payment_bindings \
             WHERE payment_intent_id = ANY($1)",
        )
        .bind(pis)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("payment_intent_id")?, r.try_get("booking_id")?)))
            .collect()
    }

    async fn trips(&mut self, ids: &[String]) -> Result<HashMap<String, TripState>, BatchError> {
        let rows = sqlx::query("SELECT * FROM trips WHERE trip_id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| Ok(super::rows::trip(r).map(|t| (t.trip_id.clone(), t))?))
            .collect()
    }

    async fn stream_heads(
        &mut self,
        streams: &[String],
    ) -> Result<HashMap<String, (i64, String)>, BatchError> {
        let rows = sqlx::query(
            // The head of each stream straight from the (stream,
            // stream_version) index, not a sort of every event of the streams.
            "SELECT s.stream, h.stream_version, h.hash FROM unnest($1::text[]) AS s(stream) \
             CROSS JOIN LATERAL (SELECT stream_version, hash FROM events \
                WHERE events.stream = s.stream ORDER BY stream_version DESC LIMIT 1) h",
        )
        .bind(streams)
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

    async fn insert_events(&mut self, rows: &[NewRow]) -> Result<HashMap<String, i64>, BatchError> {
        // One multi-row (UNNEST) statement per batch.
        let inserted = sqlx::query(
            "INSERT INTO events (stream, stream_version, kind, source, idempotency_key, \
                occurred_at, recorded_at, payload, raw_payload, fingerprint, prev_hash, hash) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                $6::timestamptz[], $7::timestamptz[], $8::text[], $9::bytea[], $10::text[], \
                $11::text[], $12::text[]) \
             RETURNING seq, idempotency_key",
        )
        .bind(rows.iter().map(|r| r.stream.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.stream_version).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.source).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.idempotency_key.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.payload.clone()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.raw_payload.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.fingerprint.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.prev_hash.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.hash.clone()).collect::<Vec<_>>())
        .fetch_all(&mut *self.tx)
        .await?;
        inserted
            .iter()
            .map(|r| Ok((r.try_get("idempotency_key")?, r.try_get("seq")?)))
            .collect()
    }

    async fn insert_bindings(&mut self, rows: &[(String, String, i64)]) -> Result<(), BatchError> {
        sqlx::query(
            "INSERT INTO payment_bindings (payment_intent_id, booking_id, seq) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
        )
        .bind(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn take_api_claims(&mut self, claims: &[&ApiClaim]) -> Result<Vec<bool>, BatchError> {
        let mut out = Vec::with_capacity(claims.len());
        for c in claims {
            let done = sqlx::query(super::sql::API_CLAIM_TAKE)
                .bind(&c.scope)
                .bind(&c.key)
                .bind(&c.claim)
                .execute(&mut *self.tx)
                .await?;
            out.push(done.rows_affected() == 1);
        }
        Ok(out)
    }

    async fn set_api_claims(
        &mut self,
        settled: &[(&ApiClaim, Option<i64>)],
    ) -> Result<(), BatchError> {
        for (c, seq) in settled {
            sqlx::query(super::sql::API_CLAIM_SET)
                .bind(seq)
                .bind(&c.scope)
                .bind(&c.key)
                .bind(&c.claim)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    async fn booking_histories(&mut self, ids: &[String]) -> Result<Histories, BatchError> {
        // Streams first, then events by `stream = ANY(…)`: this uses the
        // (stream, stream_version) index, where a join from a CTE led the
        // planner to scan the whole log.
        let bound = sqlx::query(
            "SELECT booking_id, payment_intent_id FROM payment_bindings WHERE booking_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut owner: HashMap<String, String> = ids
            .iter()
            .map(|id| (crate::domain::events::stream::booking(id), id.clone()))
            .collect();
        for row in &bound {
            let pi: String = row.try_get("payment_intent_id")?;
            owner.insert(
                crate::domain::events::stream::payment(&pi),
                row.try_get("booking_id")?,
            );
        }
        let streams: Vec<&String> = owner.keys().collect();
        // One index range per stream (unnest + LATERAL), whatever the
        // planner estimates for `stream = ANY(…)`: with a misestimate it
        // chose a parallel scan of the whole log for sixty streams.
        let rows: Vec<super::rows::FoldRow> = sqlx::query_as(
            "SELECT e.seq, e.stream, e.kind, e.recorded_at, e.payload, o.outcome, o.reason \
             FROM unnest($1::text[]) AS s(stream) \
             CROSS JOIN LATERAL (SELECT seq, stream, kind, recorded_at, payload FROM events \
                WHERE events.stream = s.stream ORDER BY stream_version) e \
             LEFT JOIN LATERAL (SELECT outcome, reason FROM event_outcomes \
                WHERE event_outcomes.seq = e.seq LIMIT 1) o ON true \
             ORDER BY e.seq",
        )
        .bind(streams)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut out = Histories::default();
        for row in rows {
            if let Some(o) = super::rows::outcome_of(row.seq, row.outcome, row.reason)? {
                out.outcomes.insert(o.seq, o);
            }
            if let Some(booking) = owner.get(&row.stream) {
                let r = super::rows::recorded(row.seq, row.recorded_at.0, &row.kind, &row.payload)?;
                out.events.entry(booking.clone()).or_default().push(r);
            }
        }
        Ok(out)
    }

    async fn trip_history(&mut self, trip_id: &str) -> Result<Vec<StoredEvent>, BatchError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 ORDER BY stream_version"
        ))
        .bind(crate::domain::events::stream::trip(trip_id))
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .iter()
            .map(super::rows::event)
            .collect::<Result<_, _>>()?)
    }

    async fn save_bookings(&mut self, bookings: &[BookingView]) -> Result<(), BatchError> {
        let col =
            |f: fn(&BookingView) -> Option<String>| bookings.iter().map(f).collect::<Vec<_>>();
        let num = |f: fn(&BookingView) -> Option<i64>| bookings.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO trip_participants (booking_id, trip_id, user_id, org_id, passengers, \
                status, payment_status, payment_intent_id, amount_cents, currency, \
                amount_refunded_cents, attempts, version, last_event_seq, updated_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], \
                $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bigint[], \
                $12::int[], $13::bigint[], $14::bigint[], $15::timestamptz[]) \
             ON CONFLICT (booking_id) DO UPDATE SET status = excluded.status, \
                payment_status = excluded.payment_status, \
                payment_intent_id = excluded.payment_intent_id, \
                amount_cents = excluded.amount_cents, currency = excluded.currency, \
                amount_refunded_cents = excluded.amount_refunded_cents, \
                attempts = excluded.attempts, version = excluded.version, \
                last_event_seq = excluded.last_event_seq, updated_at = excluded.updated_at",
        )
        .bind(col(|v| Some(v.booking_id.clone())))
        .bind(col(|v| Some(v.trip_id.clone())))
        .bind(col(|v| Some(v.user_id.clone())))
        .bind(col(|v| v.org_id.clone()))
        .bind(
            bookings
                .iter()
                .map(|v| v.passengers as i32)
                .collect::<Vec<_>>(),
        )
        .bind(col(|v| Some(v.status.as_str().to_string())))
        .bind(col(|v| Some(v.payment_status.as_str().to_string())))
        .bind(col(|v| v.payment_intent_id.clone()))
        .bind(num(|v| v.amount_cents.map(Cents::get)))
        .bind(col(|v| v.currency.as_ref().map(|c| c.as_str().to_string())))
        .bind(num(|v| Some(v.amount_refunded_cents.get())))
        .bind(
            bookings
                .iter()
                .map(|v| v.attempts as i32)
                .collect::<Vec<_>>(),
        )
        .bind(num(|v| Some(v.version)))
        .bind(num(|v| Some(v.last_event_seq)))
        .bind(bookings.iter().map(|v| v.updated_at).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn save_outcomes(&mut self, outcomes: &[OutcomeRow]) -> Result<(), BatchError> {
        sqlx::query(
            "INSERT INTO event_outcomes (seq, booking_id, outcome, reason) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) \
             ON CONFLICT (seq) DO UPDATE SET booking_id = excluded.booking_id, \
             outcome = excluded.outcome, reason = excluded.reason",
        )
        .bind(outcomes.iter().map(|(_, o)| o.seq).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>())
        .bind(
            outcomes
                .iter()
                .map(|(_, o)| o.outcome.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            outcomes
                .iter()
                .map(|(_, o)| o.reason.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn save_outbox(&mut self, rows: &[OutboxRow]) -> Result<(), BatchError> {
        // One statement for the batch's messages (a round trip per message
        // was the batch's longest step).
        sqlx::query(
            "INSERT INTO outbox (message_key, kind, booking_id, payload, created_seq, created_at) \
             SELECT k, kd, b, p, s, $6 \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
                AS u(k, kd, b, p, s) \
             ON CONFLICT (message_key) DO NOTHING",
        )
        .bind(
            rows.iter()
                .map(|r| r.message_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.booking_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.created_seq).collect::<Vec<_>>())
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn save_trip(&mut self, t: &TripState) -> Result<(), BatchError> {
        sqlx::query(
            "INSERT INTO trips (trip_id, driver_id, org_id, title, seats, price_per_seat_cents, \
                currency, departure_time, cancelled, seats_accepted, version, last_event_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                (SELECT COALESCE(SUM(passengers), 0)::int FROM trip_participants \
                 WHERE trip_id = $1 AND status = 'accepted'), $10, $11) \
             ON CONFLICT (trip_id) DO UPDATE SET cancelled = excluded.cancelled, \
                seats_accepted = excluded.seats_accepted, version = excluded.version, \
                last_event_seq = excluded.last_event_seq",
        )
        .bind(&t.trip_id)
        .bind(&t.driver_id)
        .bind(&t.org_id)
        .bind(&t.title)
        .bind(t.seats as i32)
        .bind(t.price_per_seat_cents.get())
        .bind(t.currency.as_str())
        .bind(t.departure_time)
        .bind(t.cancelled)
        .bind(t.version)
        .bind(t.last_event_seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

const PAGE: i64 = 1000;

impl PgStore {
    async fn point_head_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn point_booking(&self, booking_id: &str) -> Result<Option<BookingView>, StoreError> {
        let row = sqlx::query("SELECT * FROM trip_participants WHERE booking_id = $1")
            .bind(booking_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(super::rows::booking).transpose()?)
    }

    async fn point_booking_read(&self, booking_id: &str) -> Result<super::BookingRead, StoreError> {
        let seq = self.point_head_seq().await?;
        let booking = self.point_booking(booking_id).await?;
        let trip = match &booking {
            Some(b) => self.point_trip(&b.trip_id).await?,
            None => None,
        };
        Ok(super::BookingRead { seq, booking, trip })
    }

    async fn point_trip(&self, trip_id: &str) -> Result<Option<TripState>, StoreError> {
        let row = sqlx::query("SELECT * FROM trips WHERE trip_id = $1")
            .bind(trip_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(super::rows::trip).transpose()?)
    }

    /// No PostgreSQL error makes a pooled connection worth retrying on a
    /// fresh one ([`super::on_pooled`]); a failed one is closed.
    fn stale(&self, _: &sqlx::Error) -> bool {
        false
    }
}

impl_event_store!(PgStore, "postgres", PAGE);
