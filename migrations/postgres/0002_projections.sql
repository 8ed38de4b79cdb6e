-- Projections: pure functions of the log, rebuilt at will, updated in the
-- same transaction as the append that changes them.

-- Trips; seats_accepted = passengers of the trip's accepted bookings.
CREATE TABLE trips (
    trip_id              TEXT        PRIMARY KEY,
    driver_id            TEXT        NOT NULL,
    org_id               TEXT,
    title                TEXT        NOT NULL,
    seats                INTEGER     NOT NULL CHECK (seats > 0),
    price_per_seat_cents BIGINT      NOT NULL,
    currency             TEXT        NOT NULL,
    departure_time       TIMESTAMPTZ NOT NULL,
    cancelled            BOOLEAN     NOT NULL DEFAULT FALSE,
    seats_accepted       INTEGER     NOT NULL DEFAULT 0 CHECK (seats_accepted <= seats),
    version              BIGINT      NOT NULL,
    last_event_seq       BIGINT      NOT NULL
);

-- Bookings and their payment state.
CREATE TABLE trip_participants (
    booking_id            TEXT        PRIMARY KEY,
    trip_id               TEXT        NOT NULL REFERENCES trips (trip_id),
    user_id               TEXT        NOT NULL,
    org_id                TEXT,
    passengers            INTEGER     NOT NULL CHECK (passengers > 0),
    status                TEXT        NOT NULL,
    payment_status        TEXT        NOT NULL,
    payment_intent_id     TEXT,
    amount_cents          BIGINT,
    currency              TEXT,
    amount_refunded_cents BIGINT      NOT NULL DEFAULT 0,
    attempts              INTEGER     NOT NULL DEFAULT 0,
    version               BIGINT      NOT NULL,
    last_event_seq        BIGINT      NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX trip_participants_by_trip ON trip_participants (trip_id);

-- Which booking each payment intent we bound belongs to: the only way a
-- Stripe event finds a booking (never its metadata).
CREATE TABLE payment_bindings (
    payment_intent_id TEXT   PRIMARY KEY,
    booking_id        TEXT   NOT NULL,
    seq               BIGINT NOT NULL
);
CREATE INDEX payment_bindings_by_booking ON payment_bindings (booking_id);

-- What each event did: applied | noop | rejected | excluded, with a reason.
-- booking_id is NULL for events that bind to no booking (yet).
CREATE TABLE event_outcomes (
    seq        BIGINT PRIMARY KEY REFERENCES events (seq),
    booking_id TEXT,
    outcome    TEXT NOT NULL,
    reason     TEXT
);
CREATE INDEX event_outcomes_by_booking ON event_outcomes (booking_id);

-- Side effects produced by real transitions, keyed so they exist once.
CREATE TABLE outbox (
    message_key TEXT        PRIMARY KEY,
    kind        TEXT        NOT NULL,
    booking_id  TEXT        NOT NULL,
    payload     TEXT        NOT NULL,
    created_seq BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    sent_at     TIMESTAMPTZ
);
