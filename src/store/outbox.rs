//! The outbox: side-effect messages waiting for, or past, delivery.
//!
//! Messages are written by the projection step (`unit::project`) in the
//! transaction of the event that caused them. This trait is the delivery
//! side: a dispatcher claims due messages with a lease, delivers them and
//! records every attempt. Claims are atomic (PostgreSQL: `FOR UPDATE SKIP
//! LOCKED`; SQLite: one writer), so several engine processes deliver each
//! message once; a process killed mid-delivery lets its lease run out and
//! the message is retried. Only the head of each booking's queue (oldest
//! causing event first) is claimable, so delivery is in order per booking.

use super::StoreError;
use async_trait::async_trait;

/// One message, as the dispatcher and `GET /api/outbox` see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxMessage {
    pub message_key: String,
    pub kind: String,
    pub booking_id: String,
    /// CONTRACT.md's message body, without `id` (the key is the id).
    pub payload: String,
    pub created_seq: i64,
    /// `pending` | `sent` | `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub sent_ms: Option<i64>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxAttempt {
    pub message_key: String,
    pub attempt: i64,
    pub at_ms: i64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<i64>,
    /// What went wrong without an answer (timeout, refused connection).
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Sent,
    /// Try again, not before this time (Unix ms).
    RetryAt(i64),
    /// The schedule is used up.
    Failed,
}

impl AfterAttempt {
    fn status(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::RetryAt(_) => "pending",
            Self::Failed => "failed",
        }
    }
}

/// Which messages `GET /api/outbox` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxFilter {
    pub status: Option<String>,
    pub booking_id: Option<String>,
    /// Only bookings of this organisation (an admin's own).
    pub org_id: Option<String>,
    pub limit: i64,
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` due messages for `owner` until `lease_until_ms`:
    /// pending, due at `now_ms`, not leased, each the head of its booking's
    /// queue. Oldest causing event first.
    async fn claim_outbox(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Records an attempt and its consequence. The message's state changes
    /// only while `owner` still holds its lease.
    async fn finish_attempt(
        &self,
        owner: &str,
        attempt: &OutboxAttempt,
        after: AfterAttempt,
    ) -> Result<(), StoreError>;

    /// Messages, newest first.
    async fn list_outbox(&self, filter: &OutboxFilter) -> Result<Vec<OutboxMessage>, StoreError>;

    /// The attempts of the given messages, oldest first.
    async fn outbox_attempts(&self, keys: &[String]) -> Result<Vec<OutboxAttempt>, StoreError>;

    /// Message keys for a booking (side effects produced so far).
    async fn outbox_keys(&self, booking_id: &str) -> Result<Vec<String>, StoreError>;
}

/// The columns of [`OutboxMessage`].
const MESSAGE_COLUMNS: &str =
    "message_key, kind, booking_id, payload, created_seq, status, attempts, next_attempt_ms, sent_ms";

/// Due, unleased heads of their booking's queue. `$1` = now (ms), `$2` =
/// limit. `suffix` locks the chosen rows where the backend can.
fn claimable_sql(suffix: &str) -> String {
    format!(
        "SELECT o.message_key FROM outbox o \
         WHERE o.status = 'pending' AND o.next_attempt_ms <= $1 AND o.lease_until_ms <= $1 \
           AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.booking_id = o.booking_id \
               AND p.status = 'pending' \
               AND (p.created_seq < o.created_seq \
                    OR (p.created_seq = o.created_seq AND p.message_key < o.message_key))) \
         ORDER BY o.created_seq, o.message_key LIMIT $2 {suffix}"
    )
}

/// `$1` now, `$2` limit, `$3` owner, `$4` lease until.
fn claim_sql(lock_suffix: &str) -> String {
    format!(
        "UPDATE outbox SET lease_owner = $3, lease_until_ms = $4 \
         WHERE message_key IN ({}) RETURNING {MESSAGE_COLUMNS}",
        claimable_sql(lock_suffix)
    )
}

const INSERT_ATTEMPT: &str = "INSERT INTO outbox_attempts \
    (message_key, attempt, at_ms, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (message_key, attempt) DO NOTHING";

/// `$1` key, `$2` owner, `$3` status, `$4` next attempt, `$5` sent at,
/// `$6` attempts made.
const FINISH_ATTEMPT: &str = "UPDATE outbox SET status = $3, attempts = $6, \
    next_attempt_ms = $4, sent_ms = COALESCE($5, sent_ms), lease_until_ms = 0, lease_owner = NULL \
    WHERE message_key = $1 AND lease_owner = $2";

/// The listing statement; placeholders are numbered in the order the
/// present filters are bound (status, booking, organisation, limit).
fn list_sql(filter: &OutboxFilter) -> String {
    let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM outbox o WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if filter.status.is_some() {
        sql.push_str(&format!(" AND o.status = {}", next()));
    }
    if filter.booking_id.is_some() {
        sql.push_str(&format!(" AND o.booking_id = {}", next()));
    }
    if filter.org_id.is_some() {
        sql.push_str(&format!(
            " AND o.booking_id IN (SELECT booking_id FROM trip_participants WHERE org_id = {})",
            next()
        ));
    }
    sql.push_str(&format!(
        " ORDER BY o.created_seq DESC, o.message_key DESC LIMIT {}",
        next()
    ));
    sql
}

fn attempts_sql(keys: usize) -> String {
    let marks: Vec<String> = (1..=keys).map(|i| format!("${i}")).collect();
    format!(
        "SELECT message_key, attempt, at_ms, status_code, error, duration_ms FROM outbox_attempts \
         WHERE message_key IN ({}) ORDER BY message_key, attempt",
        marks.join(", ")
    )
}

/// The outbox over one backend's pool: the same statements, the claim's
/// row lock where the backend has one.
macro_rules! outbox_for {
    ($store:ty, $db:ty, $lock:expr) => {
        #[async_trait]
        impl OutboxStore for $store {
            async fn claim_outbox(
                &self,
                owner: &str,
                now_ms: i64,
                lease_until_ms: i64,
                limit: i64,
            ) -> Result<Vec<OutboxMessage>, StoreError> {
                let mut rows: Vec<OutboxMessage> = sqlx::query_as(&claim_sql($lock))
                    .bind(now_ms)
                    .bind(limit)
                    .bind(owner)
                    .bind(lease_until_ms)
                    .fetch_all(&self.pool)
                    .await?;
                rows.sort_by(|a, b| {
                    (a.created_seq, &a.message_key).cmp(&(b.created_seq, &b.message_key))
                });
                Ok(rows)
            }

            async fn finish_attempt(
                &self,
                owner: &str,
                attempt: &OutboxAttempt,
                after: AfterAttempt,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(INSERT_ATTEMPT)
                    .bind(&attempt.message_key)
                    .bind(attempt.attempt)
                    .bind(attempt.at_ms)
                    .bind(attempt.status_code)
                    .bind(&attempt.error)
                    .bind(attempt.duration_ms)
                    .execute(&mut *tx)
                    .await?;
                let next = match after {
                    AfterAttempt::RetryAt(at) => at,
                    _ => 0,
                };
                let sent = (after == AfterAttempt::Sent).then_some(attempt.at_ms);
                sqlx::query(FINISH_ATTEMPT)
                    .bind(&attempt.message_key)
                    .bind(owner)
                    .bind(after.status())
                    .bind(next)
                    .bind(sent)
                    .bind(attempt.attempt)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_outbox(
                &self,
                filter: &OutboxFilter,
            ) -> Result<Vec<OutboxMessage>, StoreError> {
                let sql = list_sql(filter);
                let mut query = sqlx::query_as::<$db, OutboxMessage>(&sql);
                for value in [&filter.status, &filter.booking_id, &filter.org_id]
                    .into_iter()
                    .flatten()
                {
                    query = query.bind(value.clone());
                }
                let rows = query
                    .bind(filter.limit.clamp(1, 1000))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows)
            }

            async fn outbox_attempts(
                &self,
                keys: &[String],
            ) -> Result<Vec<OutboxAttempt>, StoreError> {
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = attempts_sql(keys.len());
                let mut query = sqlx::query_as::<$db, OutboxAttempt>(&sql);
                for k in keys {
                    query = query.bind(k);
                }
                Ok(query.fetch_all(&self.pool).await?)
            }

            async fn outbox_keys(&self, booking_id: &str) -> Result<Vec<String>, StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT message_key FROM outbox WHERE booking_id = $1 ORDER BY message_key",
                )
                .bind(booking_id)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

outbox_for!(super::sqlite::SqliteStore, sqlx::Sqlite, "");
outbox_for!(
    super::postgres::PgStore,
    sqlx::Postgres,
    "FOR UPDATE SKIP LOCKED"
);
