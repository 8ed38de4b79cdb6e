//! SQL text both backends share (SQLite accepts PostgreSQL's `$N`
//! placeholders, so identical statements are written once).

/// A stored amount: never negative (the domain never writes one).
pub(crate) fn cents(raw: i64) -> Result<crate::domain::Cents, sqlx::Error> {
    crate::domain::Cents::new(raw).map_err(|e| sqlx::Error::Decode(e.to_string().into()))
}

/// Every column of `events`, in `StoredEvent` order.
pub(crate) const EVENT_COLUMNS: &str = "seq, stream, stream_version, kind, source, \
    idempotency_key, occurred_at, recorded_at, payload, raw_payload, fingerprint, prev_hash, hash";

/// A booking's history: its own stream and the payment streams of the
/// intents bound to it. `$1` = `booking:<id>`, `$2` = the booking id.
pub(crate) fn booking_history_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 \
         UNION ALL \
         SELECT {EVENT_COLUMNS} FROM events WHERE stream IN \
            (SELECT 'payment:' || payment_intent_id FROM payment_bindings WHERE booking_id = $2) \
         ORDER BY seq"
    )
}

/// The latest pause/resume event of the operator stream.
pub(crate) const LAST_PAUSE_OR_RESUME: &str = "SELECT kind FROM events \
    WHERE stream = 'operator:ledger' AND kind IN ('SideEffectsPaused', 'SideEffectsResumed') \
    ORDER BY stream_version DESC LIMIT 1";

pub(crate) const STATS_EVENTS: &str =
    "SELECT kind, source, count(*) AS n FROM events GROUP BY kind, source ORDER BY kind, source";
pub(crate) const STATS_OUTCOMES: &str =
    "SELECT outcome, reason, count(*) AS n FROM event_outcomes \
    GROUP BY outcome, reason ORDER BY outcome, reason";
pub(crate) const STATS_UNBOUND: &str =
    "SELECT count(*) FROM event_outcomes WHERE booking_id IS NULL AND outcome = 'excluded'";
pub(crate) const STATS_OUTBOX: &str = "SELECT kind, status, count(*) AS n \
    FROM outbox GROUP BY kind, status ORDER BY kind, status";
pub(crate) const STATS_OUTBOX_OLDEST: &str =
    "SELECT MIN(created_at) FROM outbox WHERE status = 'pending'";
pub(crate) const BOOKINGS_OF_TRIP: &str =
    "SELECT * FROM trip_participants WHERE trip_id = $1 ORDER BY booking_id";
pub(crate) const IDEMPOTENCY_PURGE: &str = "DELETE FROM idempotency_keys \
    WHERE created_at < $1 OR (state = 'pending' AND seq IS NULL AND created_at < $2)";
pub(crate) const IDEMPOTENCY_CLAIM: &str = "INSERT INTO idempotency_keys \
    (scope, key, fingerprint, state, created_at, claim) \
    VALUES ($1, $2, $3, 'pending', $4, $5) ON CONFLICT (scope, key) DO NOTHING";
pub(crate) const IDEMPOTENCY_READ: &str = "SELECT fingerprint, state, status, body, seq \
    FROM idempotency_keys WHERE scope = $1 AND key = $2";
/// Only while the request still holds the key: one whose key a retry took
/// over must not overwrite the new owner's answer.
pub(crate) const IDEMPOTENCY_FINISH: &str = "UPDATE idempotency_keys \
    SET state = 'done', status = $3, body = $4 \
    WHERE scope = $1 AND key = $2 AND claim = $5 AND state = 'pending'";
pub(crate) const IDEMPOTENCY_SETTLE: &str = "UPDATE idempotency_keys \
    SET state = 'done', status = $4, body = $5 \
    WHERE scope = $1 AND key = $2 AND seq = $3 AND state = 'pending'";
pub(crate) const IDEMPOTENCY_ABANDON: &str = "DELETE FROM idempotency_keys \
    WHERE scope = $1 AND key = $2 AND claim = $3 AND state = 'pending' AND seq IS NULL";
/// Inside a write transaction: the claim still holds the key and nothing
/// committed under it. `seq = 0` marks it taken until the real seq is set
/// (never visible outside the transaction).
pub(crate) const API_CLAIM_TAKE: &str = "UPDATE idempotency_keys SET seq = 0 \
    WHERE scope = $1 AND key = $2 AND claim = $3 AND state = 'pending' AND seq IS NULL";
pub(crate) const API_CLAIM_SET: &str =
    "UPDATE idempotency_keys SET seq = $1 WHERE scope = $2 AND key = $3 AND claim = $4";
