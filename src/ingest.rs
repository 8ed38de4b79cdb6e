//! Recording one Stripe event, whatever brought it: the webhook (after its
//! signature was verified), `klubz-replay import` and `catch-up` (events
//! read back from Stripe's Events API). One path, so the three cannot drift
//! apart: lenient parsing, the raw body encrypted, one idempotent append
//! keyed `stripe:<evt_id>` that recomputes the booking it binds to.

use crate::crypto::PayloadCipher;
use crate::domain::{Command, OutcomeKind, Source};
use crate::store::{EventStore, StoreError, Submission, SubmitError};
use crate::stripe::{parse_event, ParseError};
use chrono::{TimeZone, Utc};

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// New, and it moved its booking (or was a valid no-op).
    Applied { seq: i64 },
    /// New, stored, not applied, for this reason (CONTRACT.md's reasons).
    Ignored { seq: i64, reason: String },
    /// Stored before under the same event id.
    Replay { seq: i64 },
    /// Stored before under the same event id with other content: we hold
    /// it already; a security signal.
    ConflictingReplay,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("not a Stripe event: {0}")]
    NotAnEvent(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain refused to record it (a bug: Stripe events are always
    /// recorded).
    #[error("refused: {0}")]
    Refused(SubmitError),
}

/// The event's id and type, for logs and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub id: String,
    pub event_type: String,
}

/// Records the raw body of one Stripe event. `livemode` is the engine's
/// `STRIPE_LIVEMODE`. Returns once the append is committed.
pub async fn ingest(
    store: &dyn EventStore,
    cipher: &PayloadCipher,
    body: &[u8],
    livemode: bool,
    source: Source,
) -> Result<(EventRef, Ingested), IngestError> {
    let fact = parse_event(body, livemode)?;
    let event = EventRef {
        id: fact.event_id.clone(),
        event_type: fact.event_type.clone(),
    };
    let occurred = Utc
        .timestamp_opt(fact.created, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let submission = Submission::new(Command::RecordStripeEvent(fact), source, occurred)
        .with_raw_payload(cipher.encrypt(body));
    let ingested = match store.submit(submission).await {
        Ok(done) if done.duplicate => Ingested::Replay { seq: done.seq },
        Ok(done) => match done.outcome.map(|o| (o.outcome, o.reason)) {
            Some((OutcomeKind::Applied | OutcomeKind::Noop, _)) | None => {
                Ingested::Applied { seq: done.seq }
            }
            Some((_, reason)) => Ingested::Ignored {
                seq: done.seq,
                reason: reason.unwrap_or_else(|| "invalid_transition".into()),
            },
        },
        Err(SubmitError::IdempotencyConflict { .. }) => Ingested::ConflictingReplay,
        Err(SubmitError::Store(e)) => return Err(IngestError::Store(e)),
        Err(e) => return Err(IngestError::Refused(e)),
    };
    Ok((event, ingested))
}
