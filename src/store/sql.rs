//! SQL text both backends share (SQLite accepts PostgreSQL's `$N`
//! placeholders, so identical statements are written once).

/// Every column of `events`, in `StoredEvent` order.
pub(crate) const EVENT_COLUMNS: &str = "seq, stream, stream_version, kind, source, \
    idempotency_key, occurred_at, recorded_at, payload, raw_payload, fingerprint, prev_hash, hash";

/// The event columns qualified with a table alias.
pub(crate) fn prefixed_columns(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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
