-- Idempotency-Key of the API's write routes, scoped per caller and route.
-- state 'pending' while the first request runs, 'done' with its response
-- (status and body, replayed byte for byte). Kept at least 24 h (rows are
-- purged after 48 h); a 'pending' row older than 5 minutes is abandoned.
CREATE TABLE idempotency_keys (
    scope       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    status      INTEGER,
    body        TEXT,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
