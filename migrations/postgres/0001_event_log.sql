-- The append-only event log: every fact the engine knows, once.
--
-- seq            global order (identity; gaps are possible after rollbacks, and
--                under concurrent writers commit order may differ from seq order).
-- stream         trip:<id> | booking:<id> | payment:<pi> | stripe:<object> | operator:ledger
--                (the distribution key on Citus / CockroachDB / YugabyteDB).
-- stream_version 1, 2, 3… per stream; UNIQUE (stream, stream_version) is the
--                optimistic concurrency control (SQLSTATE 23505 → retry).
-- idempotency_key UNIQUE: stripe:<evt_id>, or the natural key of our own facts.
-- fingerprint    sha256 of the request that produced the event.
-- prev_hash/hash keyed HMAC chain per stream (tamper evidence).
-- payload        TEXT, not JSONB: the exact bytes the hash covers.
-- raw_payload    the raw Stripe body, AES-256-GCM encrypted (NULL for our own events).
CREATE TABLE events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream          TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL,
    kind            TEXT        NOT NULL,
    source          TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL UNIQUE,
    occurred_at     TIMESTAMPTZ NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    payload         TEXT        NOT NULL,
    raw_payload     BYTEA,
    fingerprint     TEXT        NOT NULL,
    prev_hash       TEXT        NOT NULL,
    hash            TEXT        NOT NULL,
    UNIQUE (stream, stream_version)
);

-- Append-only: the engine never updates or deletes an event.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
