-- The append-only event log: every fact the engine knows, once.
--
-- seq            global order; AUTOINCREMENT so a seq is never reused.
-- stream         trip:<id> | booking:<id> | payment:<pi> | stripe:<object> | operator:ledger
-- stream_version 1, 2, 3… per stream; UNIQUE (stream, stream_version) is the
--                optimistic concurrency control.
-- idempotency_key UNIQUE: stripe:<evt_id>, or the natural key of our own facts.
-- fingerprint    sha256 of the request that produced the event: a reused key
--                with another fingerprint is a conflict, not a duplicate.
-- prev_hash/hash keyed HMAC chain per stream (tamper evidence).
-- raw_payload    the raw Stripe body, AES-256-GCM encrypted (NULL for our own events).
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    stream          TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL UNIQUE,
    occurred_at     TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    raw_payload     BLOB,
    fingerprint     TEXT    NOT NULL,
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL,
    UNIQUE (stream, stream_version)
);

-- Append-only: the engine never updates or deletes an event. The hash chain
-- still catches anyone who drops these triggers and edits the file.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
