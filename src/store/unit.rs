//! One unit of work: a batch of submissions in one transaction, written once
//! for both backends against the small [`UnitTx`] trait.
//!
//! Steps: lock (PostgreSQL) → find bindings and load the touched bookings
//! and trips → check idempotency keys → decide each command in order, in
//! memory, so later commands see earlier ones → insert all events in one
//! multi-row statement → recompute every touched booking from its events,
//! and the seat count of every touched trip.

use super::chain::{link_hash, sha256_hex, ChainKey, LinkFields, GENESIS};
use super::{
    format_time, ApiClaim, ExpectedVersion, StoredEvent, Submission, SubmitError, Submitted,
};
use crate::domain::fold::{reason, OutcomeKind};
use crate::domain::storable;
use crate::domain::{
    decide, fold_booking, fold_trip, BookingFold, BookingState, BookingStatus, Command, Context,
    Event, EventOutcome, PaymentSignal, Recorded, SideEffect, TripState,
};
use crate::projection::BookingView;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

/// A stored key: enough to answer a duplicate.
#[derive(Debug, Clone)]
pub(crate) struct ExistingKey {
    pub seq: i64,
    pub stream: String,
    pub stream_version: i64,
    pub fingerprint: String,
}

/// An event row ready to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub stream: String,
    pub stream_version: i64,
    pub kind: &'static str,
    pub source: &'static str,
    pub idempotency_key: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub payload: String,
    pub raw_payload: Option<Vec<u8>>,
    pub fingerprint: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An outbox message produced by a fold.
#[derive(Debug, Clone)]
pub(crate) struct OutboxRow {
    pub message_key: String,
    pub kind: &'static str,
    pub booking_id: String,
    pub payload: String,
    pub created_seq: i64,
}

/// An event outcome and the booking it belongs to (`None`: no booking).
pub(crate) type OutcomeRow = (Option<String>, EventOutcome);

/// The histories of several bookings, read in one statement.
#[derive(Debug, Default)]
pub(crate) struct Histories {
    /// booking id → its events (own stream and bound intents' streams),
    /// decoded, by seq. Only what the fold reads is loaded (never the raw
    /// payload or the chain fields).
    pub events: HashMap<String, Vec<Recorded>>,
    /// The outcomes stored so far for those events, by seq.
    pub outcomes: HashMap<i64, EventOutcome>,
}

/// The transaction-scoped operations a backend provides.
#[async_trait]
pub(crate) trait UnitTx: Send {
    /// Takes transaction-scoped locks on the keys, in order (no-op where the
    /// backend has a single writer).
    async fn lock(&mut self, keys: &[String]) -> Result<(), BatchError>;
    async fn existing_keys(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, ExistingKey>, BatchError>;
    /// payment intent id → booking id, for the given intents.
    async fn bindings(&mut self, pis: &[String]) -> Result<HashMap<String, String>, BatchError>;
    async fn trips(&mut self, ids: &[String]) -> Result<HashMap<String, TripState>, BatchError>;
    /// stream → (latest version, latest hash).
    async fn stream_heads(
        &mut self,
        streams: &[String],
    ) -> Result<HashMap<String, (i64, String)>, BatchError>;
    /// Inserts rows in order; returns idempotency key → seq.
    async fn insert_events(&mut self, rows: &[NewRow]) -> Result<HashMap<String, i64>, BatchError>;
    async fn insert_bindings(&mut self, rows: &[(String, String, i64)]) -> Result<(), BatchError>;
    async fn booking_histories(&mut self, ids: &[String]) -> Result<Histories, BatchError>;
    async fn trip_history(&mut self, trip_id: &str) -> Result<Vec<StoredEvent>, BatchError>;
    /// Upserts booking rows, in one statement.
    async fn save_bookings(&mut self, bookings: &[BookingView]) -> Result<(), BatchError>;
    /// Upserts event outcomes, in one statement.
    async fn save_outcomes(&mut self, outcomes: &[OutcomeRow]) -> Result<(), BatchError>;
    async fn save_outbox(&mut self, rows: &[OutboxRow]) -> Result<(), BatchError>;
    /// Upserts the trip row with its seat count recomputed from bookings.
    async fn save_trip(&mut self, trip: &TripState) -> Result<(), BatchError>;
    /// Takes each API key for this transaction if its claim still holds it
    /// and nothing committed under it (row-locked until commit on
    /// PostgreSQL). One answer per claim, in order.
    async fn take_api_claims(&mut self, claims: &[&ApiClaim]) -> Result<Vec<bool>, BatchError>;
    /// Records on each taken key the seq its event got (`None`: the command
    /// wrote nothing, the key stays reusable).
    async fn set_api_claims(
        &mut self,
        settled: &[(&ApiClaim, Option<i64>)],
    ) -> Result<(), BatchError>;
}

/// Per-batch constants.
pub(crate) struct BatchEnv<'a> {
    pub chain_key: &'a ChainKey,
    pub now: DateTime<Utc>,
}

/// Why a batch must be rolled back: a database error, or an inconsistency
/// in stored data.
#[derive(Debug)]
pub(crate) enum BatchError {
    Db(sqlx::Error),
    /// The embedded SQLite writer's own connection (rusqlite).
    Sqlite(rusqlite::Error),
    Corrupt(String),
}

impl From<rusqlite::Error> for BatchError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

pub(crate) type JobResult = Result<Submitted, SubmitError>;

fn decode_all(rows: &[StoredEvent]) -> Result<Vec<Recorded>, BatchError> {
    rows.iter()
        .map(|r| r.recorded().map_err(|e| BatchError::Corrupt(e.to_string())))
        .collect()
}

/// Provisional seqs for decisions made before the insert assigns real ones:
/// above every real seq, in submission order.
const PROVISIONAL_SEQ_BASE: i64 = 1 << 62;

pub(crate) async fn run_batch<T: UnitTx>(
    tx: &mut T,
    subs: &[Submission],
    env: &BatchEnv<'_>,
) -> Result<Vec<JobResult>, BatchError> {
    // 1. Payment-intent and loose Stripe streams: lock, then resolve bindings.
    let pis: Vec<String> = unique(subs.iter().filter_map(|s| s.command.payment_intent_id()));
    let mut level1: Vec<String> = pis.iter().map(|pi| format!("1:payment:{pi}")).collect();
    for s in subs {
        if s.command.payment_intent_id().is_none() && s.command.booking_id().is_none() {
            level1.push(format!("1:stream:{}", s.command.stream()));
        }
    }
    tx.lock(&sorted(level1)).await?;
    let mut bindings = tx.bindings(&pis).await?;

    // 2. Bookings: the commands' own and those the intents bind to.
    // A replay's bookings are locked too, so no concurrent append can
    // commit between its read of the log and its write of the projection.
    let booking_ids: Vec<String> = unique(
        subs.iter()
            .filter_map(|s| s.command.booking_id())
            .chain(bindings.values().map(String::as_str))
            .chain(
                subs.iter()
                    .filter_map(|s| s.rebuild.as_ref())
                    .flat_map(|r| r.bookings.iter().map(String::as_str)),
            ),
    );
    tx.lock(&sorted(
        booking_ids
            .iter()
            .map(|b| format!("2:booking:{b}"))
            .collect(),
    ))
    .await?;
    // Only bookings a command decides on need their state now; those reached
    // through a Stripe event's intent are recomputed after the append.
    let deciding: Vec<String> = unique(subs.iter().filter_map(|s| s.command.booking_id()));
    let mut histories: HashMap<String, Vec<Recorded>> = HashMap::new();
    let mut bookings: HashMap<String, BookingState> = HashMap::new();
    if !deciding.is_empty() {
        let loaded = tx.booking_histories(&deciding).await?;
        for id in &deciding {
            let history = loaded.events.get(id).cloned().unwrap_or_default();
            if let Some(state) = fold_booking(id, &history).state {
                bookings.insert(id.clone(), state);
            }
            histories.insert(id.clone(), history);
        }
    }

    // 3. Trips: the commands' own and those of the loaded bookings.
    let trip_ids: Vec<String> = unique(
        subs.iter()
            .filter_map(|s| s.command.trip_id())
            .chain(bookings.values().map(|b| b.trip_id.as_str()))
            .chain(
                subs.iter()
                    .filter_map(|s| s.rebuild.as_ref())
                    .flat_map(|r| r.trips.iter().map(String::as_str)),
            ),
    );
    tx.lock(&sorted(
        trip_ids.iter().map(|t| format!("3:trip:{t}")).collect(),
    ))
    .await?;
    let mut trips = tx.trips(&trip_ids).await?;

    // 4. Keys and stream heads, read under the locks.
    let keys: Vec<String> = subs.iter().filter_map(key_of).collect();
    let existing = tx.existing_keys(&keys).await?;
    let streams: Vec<String> = unique_owned(subs.iter().map(|s| s.command.stream()));
    let mut heads = tx.stream_heads(&streams).await?;
    // API keys: a command whose request lost its key to a retry writes nothing.
    let claims: Vec<&ApiClaim> = subs.iter().filter_map(|s| s.api_claim.as_ref()).collect();
    let mut taken = if claims.is_empty() {
        Vec::new()
    } else {
        tx.take_api_claims(&claims).await?
    }
    .into_iter();
    let holds: Vec<Option<bool>> = subs
        .iter()
        .map(|s| s.api_claim.as_ref().map(|_| taken.next().unwrap_or(false)))
        .collect();

    // 5. Decide, in order.
    let mut jobs: Vec<Job> = Vec::with_capacity(subs.len());
    let mut rows: Vec<NewRow> = Vec::new();
    let mut batch_keys: HashMap<String, (usize, String)> = HashMap::new();
    let mut new_bindings: Vec<(String, String, String)> = Vec::new(); // pi, booking, key
    let mut touched_bookings: BTreeSet<String> = BTreeSet::new();
    let mut touched_trips: BTreeSet<String> = BTreeSet::new();

    for (i, sub) in subs.iter().enumerate() {
        let stream = sub.command.stream();
        if holds[i] == Some(false) {
            jobs.push(Job::Done(Err(SubmitError::ClaimLost)));
            continue;
        }
        let Some(key) = key_of(sub) else {
            jobs.push(Job::Done(Err(SubmitError::Domain(
                crate::domain::DomainError::Validation(
                    "an idempotency key is required for this command".into(),
                ),
            ))));
            continue;
        };
        let fingerprint = sha256_hex(sub.command.fingerprint_material().as_bytes());

        // Idempotency: stored before, or earlier in this batch.
        if let Some(found) = existing.get(&key) {
            jobs.push(Job::Done(duplicate_or_conflict(&key, &fingerprint, found)));
            continue;
        }
        if let Some((row_index, fp)) = batch_keys.get(&key) {
            // Same request twice in one batch: one row answers both.
            jobs.push(if *fp == fingerprint {
                Job::Duplicate(*row_index)
            } else {
                Job::Done(Err(SubmitError::IdempotencyConflict { key }))
            });
            continue;
        }

        // Optimistic concurrency.
        let head_version = heads.get(&stream).map_or(0, |(v, _)| *v);
        let version_ok = match sub.expected_version {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => head_version == 0,
            ExpectedVersion::Exactly(v) => head_version == v,
        };
        if !version_ok {
            let expected = match sub.expected_version {
                ExpectedVersion::Exactly(v) => v.to_string(),
                _ => "no stream".to_string(),
            };
            jobs.push(Job::Done(Err(SubmitError::VersionConflict {
                stream,
                expected,
                actual: head_version,
            })));
            continue;
        }

        // The decision.
        let booking = sub.command.booking_id().and_then(|b| bookings.get(b));
        let trip_id = sub
            .command
            .trip_id()
            .map(str::to_string)
            .or_else(|| booking.map(|b| b.trip_id.clone()));
        let ctx = Context {
            trip: trip_id.as_deref().and_then(|t| trips.get(t)),
            booking,
        };
        let event = match decide(&sub.command, ctx) {
            Ok(event) => event,
            Err(e) => {
                jobs.push(Job::Done(Err(SubmitError::Domain(e))));
                continue;
            }
        };

        // The row, chained to its stream's head.
        let version = head_version + 1;
        let prev_hash = heads
            .get(&stream)
            .map_or_else(|| GENESIS.to_string(), |(_, h)| h.clone());
        let payload = event.payload_json();
        // Only what both backends can store is committed (400, not a 503
        // that a retry would repeat forever).
        if !storable::time(&sub.occurred_at)
            || !storable::text(&stream)
            || !storable::text(&key)
            || !storable::json_text(&payload)
        {
            jobs.push(Job::Done(Err(SubmitError::Domain(
                crate::domain::DomainError::Validation(
                    "a time outside the years 0000 to 9999, or a NUL character in text".into(),
                ),
            ))));
            continue;
        }
        let occurred = format_time(&sub.occurred_at);
        let recorded = format_time(&env.now);
        let hash = link_hash(
            env.chain_key,
            &LinkFields {
                stream: &stream,
                stream_version: version,
                kind: event.kind(),
                source: sub.source.as_str(),
                idempotency_key: &key,
                occurred_at: &occurred,
                recorded_at: &recorded,
                fingerprint: &fingerprint,
                payload: &payload,
                raw_payload: sub.raw_payload.as_deref(),
                prev_hash: &prev_hash,
            },
        );
        heads.insert(stream.clone(), (version, hash.clone()));
        let row_index = rows.len();
        batch_keys.insert(key.clone(), (row_index, fingerprint.clone()));
        rows.push(NewRow {
            stream,
            stream_version: version,
            kind: event.kind(),
            source: sub.source.as_str(),
            idempotency_key: key.clone(),
            occurred_at: sub.occurred_at,
            recorded_at: env.now,
            payload,
            raw_payload: sub.raw_payload.clone(),
            fingerprint,
            prev_hash,
            hash,
        });
        jobs.push(Job::New(row_index));

        // Keep the in-memory view current for the next commands.
        let provisional = Recorded {
            seq: PROVISIONAL_SEQ_BASE + row_index as i64,
            recorded_at: env.now,
            event: event.clone(),
        };
        match &event {
            Event::TripPublished(p) => {
                if let Some(t) = fold_trip(&[provisional]) {
                    trips.insert(p.trip_id.clone(), t);
                }
                touched_trips.insert(p.trip_id.clone());
            }
            Event::TripCancelled(c) => {
                if let Some(t) = trips.get_mut(&c.trip_id) {
                    t.cancelled = true;
                }
                touched_trips.insert(c.trip_id.clone());
            }
            Event::StripeEventReceived(fact) => {
                if let Some(booking_id) = fact
                    .payment_intent_id
                    .as_ref()
                    .and_then(|pi| bindings.get(pi))
                {
                    touched_bookings.insert(booking_id.clone());
                }
            }
            _ => {
                let Some(booking_id) = sub.command.booking_id().map(str::to_string) else {
                    continue;
                };
                if let Event::PaymentIntentBound(b) = &event {
                    bindings.insert(b.payment_intent_id.clone(), booking_id.clone());
                    new_bindings.push((b.payment_intent_id.clone(), booking_id.clone(), key));
                }
                let history = histories.entry(booking_id.clone()).or_default();
                history.push(provisional);
                let before = bookings.get(&booking_id).map(|b| (b.status, b.passengers));
                if let Some(after) = fold_booking(&booking_id, history).state {
                    adjust_seats(&mut trips, &after, before);
                    touched_trips.insert(after.trip_id.clone());
                    bookings.insert(booking_id.clone(), after);
                }
                touched_bookings.insert(booking_id);
            }
        }
    }

    // An operator's replay recomputes what it names, with its own event.
    for (i, sub) in subs.iter().enumerate() {
        if let (Job::New(_), Some(rebuild)) = (&jobs[i], &sub.rebuild) {
            touched_bookings.extend(rebuild.bookings.iter().cloned());
            touched_trips.extend(rebuild.trips.iter().cloned());
        }
    }

    // 6. Append.
    let seqs = if rows.is_empty() {
        HashMap::new()
    } else {
        tx.insert_events(&rows).await?
    };
    let seq_of = |row_index: usize| -> Result<i64, BatchError> {
        seqs.get(&rows[row_index].idempotency_key)
            .copied()
            .ok_or_else(|| BatchError::Corrupt("inserted row returned no seq".into()))
    };
    if !new_bindings.is_empty() {
        let mut with_seq = Vec::with_capacity(new_bindings.len());
        for (pi, booking, key) in &new_bindings {
            let seq = seqs
                .get(key)
                .copied()
                .ok_or_else(|| BatchError::Corrupt("binding row returned no seq".into()))?;
            with_seq.push((pi.clone(), booking.clone(), seq));
        }
        tx.insert_bindings(&with_seq).await?;
    }
    let mut settled = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        if let (Some(claim), Some(true)) = (&sub.api_claim, holds[i]) {
            let seq = match jobs[i] {
                Job::New(row_index) => Some(seq_of(row_index)?),
                _ => None,
            };
            settled.push((claim, seq));
        }
    }
    if !settled.is_empty() {
        tx.set_api_claims(&settled).await?;
    }

    // 7. Project: every touched booking and trip is recomputed from its
    //    events. Stripe events that bind to no booking (yet) are recorded as
    //    such, and re-judged when a binding for their intent arrives.
    let mut unbound = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        if let (Job::New(row_index), Command::RecordStripeEvent(fact)) = (&jobs[i], &sub.command) {
            let why = if fact.payment_intent_id.is_none() && fact.signal == PaymentSignal::Unhandled
            {
                reason::UNHANDLED_TYPE
            } else {
                reason::UNKNOWN_PAYMENT_INTENT
            };
            unbound.push((seq_of(*row_index)?, why));
        }
    }
    let ids: Vec<String> = touched_bookings.iter().cloned().collect();
    let outcomes = project(tx, &ids, &touched_trips, &unbound).await?.outcomes;

    // 8. Answers.
    let mut answers = Vec::with_capacity(subs.len());
    for job in jobs {
        let (row_index, duplicate) = match job {
            Job::Done(result) => {
                answers.push(result);
                continue;
            }
            Job::New(row_index) => (row_index, false),
            Job::Duplicate(row_index) => (row_index, true),
        };
        let seq = seq_of(row_index)?;
        let row = &rows[row_index];
        let (booking_id, outcome) = match outcomes.get(&seq) {
            Some((b, o)) if !duplicate => (b.clone(), Some(o.clone())),
            _ => (None, None),
        };
        answers.push(Ok(Submitted {
            seq,
            stream: row.stream.clone(),
            stream_version: row.stream_version,
            duplicate,
            booking_id,
            outcome,
        }));
    }
    Ok(answers)
}

/// What projecting a set of bookings produced.
#[derive(Debug, Default)]
pub(crate) struct Projection {
    /// The rebuilt `trip_participants` rows.
    pub bookings: Vec<BookingView>,
    /// Every event's outcome (with its booking), by seq.
    pub outcomes: HashMap<i64, OutcomeRow>,
    /// The outcomes that differ from the stored ones: what must be written.
    pub changed_outcomes: Vec<OutcomeRow>,
    /// The side effects the folds produced (inserted only where absent).
    pub outbox: Vec<OutboxRow>,
}

/// Folds each booking from its loaded history: rows, outcomes and side
/// effects, compared with what is stored. Pure.
pub(crate) fn project_bookings(
    ids: &[String],
    loaded: &Histories,
) -> Result<Projection, BatchError> {
    let mut out = Projection::default();
    for booking_id in ids {
        let history = loaded.events.get(booking_id).map_or(&[][..], Vec::as_slice);
        let BookingFold {
            state,
            outcomes: folded,
            effects,
        } = fold_booking(booking_id, history);
        let Some(state) = state else { continue };
        out.bookings.push(BookingView::from(&state));
        for effect in &effects {
            out.outbox.push(outbox_row(&state, effect));
        }
        for o in folded {
            // Write only what changed: usually the new events' outcomes.
            if loaded.outcomes.get(&o.seq) != Some(&o) {
                out.changed_outcomes
                    .push((Some(booking_id.clone()), o.clone()));
            }
            out.outcomes.insert(o.seq, (Some(booking_id.clone()), o));
        }
    }
    Ok(out)
}

/// The projection step, shared by every write: recomputes the given
/// bookings from their events and writes their rows, changed outcomes and
/// side effects; records `unbound` events (seq, reason) that no booking
/// claimed as excluded; recomputes the given trips' seat counts. Runs in
/// the caller's transaction.
pub(crate) async fn project<T: UnitTx>(
    tx: &mut T,
    bookings: &[String],
    trips: &BTreeSet<String>,
    unbound: &[(i64, &'static str)],
) -> Result<Projection, BatchError> {
    let loaded = if bookings.is_empty() {
        Histories::default()
    } else {
        tx.booking_histories(bookings).await?
    };
    let mut projection = project_bookings(bookings, &loaded)?;
    for (seq, why) in unbound {
        if projection.outcomes.contains_key(seq) {
            continue;
        }
        let outcome = EventOutcome {
            seq: *seq,
            outcome: OutcomeKind::Excluded,
            reason: Some((*why).to_string()),
        };
        projection.outcomes.insert(*seq, (None, outcome.clone()));
        projection.changed_outcomes.push((None, outcome));
    }
    if !projection.bookings.is_empty() {
        tx.save_bookings(&projection.bookings).await?;
    }
    if !projection.changed_outcomes.is_empty() {
        tx.save_outcomes(&projection.changed_outcomes).await?;
    }
    if !projection.outbox.is_empty() {
        tx.save_outbox(&projection.outbox).await?;
    }
    for trip_id in trips {
        let history = decode_all(&tx.trip_history(trip_id).await?)?;
        if let Some(trip) = fold_trip(&history) {
            tx.save_trip(&trip).await?;
        }
    }
    Ok(projection)
}

/// The outbox row of one side effect: CONTRACT.md's message body, under the
/// (booking, type, causing event) key; the insert skips keys already there.
fn outbox_row(booking: &BookingState, effect: &SideEffect) -> OutboxRow {
    OutboxRow {
        message_key: effect.key(&booking.booking_id),
        kind: effect.kind.as_str(),
        booking_id: booking.booking_id.clone(),
        payload: serde_json::json!({
            "type": effect.kind.as_str(),
            "bookingId": booking.booking_id,
            "tripId": booking.trip_id,
            "userId": booking.user_id,
            "paymentIntentId": effect.payment_intent_id,
            "amountCents": effect.amount_cents,
            "currency": effect.currency.as_ref().map(|c| c.as_str()),
            "occurredAt": format_time(&effect.occurred_at),
            "causedBySeq": effect.caused_by_seq,
            "stripeEventId": effect.stripe_event_id,
        })
        .to_string(),
        created_seq: effect.caused_by_seq,
    }
}

/// Where one submission of the batch stands.
enum Job {
    /// Answered without a new row (refused, or a stored duplicate).
    Done(JobResult),
    /// Will be answered by this new row.
    New(usize),
    /// The same request as an earlier job of this batch: answered by its row.
    Duplicate(usize),
}

fn key_of(sub: &Submission) -> Option<String> {
    sub.idempotency_key
        .clone()
        .or_else(|| sub.command.natural_key())
}

fn duplicate_or_conflict(key: &str, fingerprint: &str, found: &ExistingKey) -> JobResult {
    if found.fingerprint == fingerprint {
        Ok(Submitted {
            seq: found.seq,
            stream: found.stream.clone(),
            stream_version: found.stream_version,
            duplicate: true,
            booking_id: None,
            outcome: None,
        })
    } else {
        Err(SubmitError::IdempotencyConflict {
            key: key.to_string(),
        })
    }
}

/// Keeps a trip's in-memory seat count in step with a booking's change.
fn adjust_seats(
    trips: &mut HashMap<String, TripState>,
    after: &BookingState,
    before: Option<(BookingStatus, u32)>,
) {
    let Some(trip) = trips.get_mut(&after.trip_id) else {
        return;
    };
    let was = before.is_some_and(|(s, _)| s == BookingStatus::Accepted);
    let is = after.status == BookingStatus::Accepted;
    match (was, is) {
        (false, true) => trip.seats_accepted += after.passengers,
        (true, false) => trip.seats_accepted = trip.seats_accepted.saturating_sub(after.passengers),
        _ => {}
    }
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = items.collect();
    set.into_iter().map(str::to_string).collect()
}

fn unique_owned(items: impl Iterator<Item = String>) -> Vec<String> {
    let set: BTreeSet<String> = items.collect();
    set.into_iter().collect()
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys.dedup();
    keys
}
