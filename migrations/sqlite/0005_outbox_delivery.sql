-- Delivery state of side-effect messages (the outbox dispatcher).
--
-- status           pending | sent | failed (every attempt of the schedule
--                  used up); only pending messages are delivered.
-- attempts         delivery attempts made so far.
-- next_attempt_ms  not before this time (Unix milliseconds): the backoff.
-- lease_until_ms   a dispatcher that claimed the message owns it until then;
--                  a process killed mid-delivery lets the lease run out and
--                  another one retries (at least once, never lost).
-- lease_owner      which dispatcher holds the lease.
-- sent_ms          when a delivery was acknowledged (2xx).
ALTER TABLE outbox ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN sent_ms BIGINT;
UPDATE outbox SET status = 'sent' WHERE sent_at IS NOT NULL;

-- What the dispatcher looks for: due pending messages, oldest cause first,
-- and the head of each booking's queue (delivery is in order per booking).
CREATE INDEX outbox_pending ON outbox (status, booking_id, created_seq);

-- Every delivery attempt: when, what came back, how long it took.
CREATE TABLE outbox_attempts (
    message_key TEXT    NOT NULL REFERENCES outbox (message_key),
    attempt     BIGINT  NOT NULL,
    at_ms       BIGINT  NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT  NOT NULL,
    PRIMARY KEY (message_key, attempt)
);
