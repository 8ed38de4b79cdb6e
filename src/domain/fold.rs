//! The fold: a booking's projection as a pure function of its events.
//!
//! Input: every event of the booking's own stream plus the payment streams of
//! the intents bound to it, in any order, possibly duplicated. Output: the
//! booking state, one outcome per event, and the intents that need a refund.
//!
//! Order (DESIGN.md §3): lifecycle events by (rank, seq); bindings by
//! (attempt, seq); each accepted binding's Stripe events by (created,
//! lifecycle rank, event id). Duplicate Stripe event ids count once. Every
//! sort key is intrinsic to the events, so delivery order cannot matter.

use super::events::{BookingRequested, Event, PaymentIntentBound, Recorded};
use super::money::{Cents, Currency};
use super::payment::{PaymentSignal, RefundState, StripeFact};
use super::status::{BookingStatus, PaymentStatus};
use super::table::{transition, PaymentInput, Transition};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Why an event did not (fully) apply. The webhook answers with these names.
pub mod reason {
    pub const UNKNOWN_PAYMENT_INTENT: &str = "unknown_payment_intent";
    pub const METADATA_MISMATCH: &str = "metadata_mismatch";
    pub const AMOUNT_MISMATCH: &str = "amount_mismatch";
    pub const LIVEMODE_MISMATCH: &str = "livemode_mismatch";
    pub const INVALID_TRANSITION: &str = "invalid_transition";
    pub const SUPERSEDED_INTENT: &str = "superseded_intent";
    pub const UNHANDLED_TYPE: &str = "unhandled_type";
    pub const DUPLICATE: &str = "duplicate";
    pub const INTENT_PENDING: &str = "intent_pending";
    pub const UNKNOWN_BOOKING: &str = "unknown_booking";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The event changed the booking.
    Applied,
    /// Valid, but the booking was already in that state.
    Noop,
    /// Bound to the booking, but the transition table refuses it.
    Rejected,
    /// Not allowed to move this booking at all (unbound, mismatched,
    /// superseded, unhandled type).
    Excluded,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Noop => "noop",
            Self::Rejected => "rejected",
            Self::Excluded => "excluded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Applied, Self::Noop, Self::Rejected, Self::Excluded]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventOutcome {
    pub seq: i64,
    pub outcome: OutcomeKind,
    pub reason: Option<String>,
}

/// The payment intent currently paying for a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentIntent {
    pub payment_intent_id: String,
    pub amount_cents: Cents,
    pub currency: Currency,
    pub attempt: u32,
}

/// Payment state of one booking, including the refund ledger the status
/// is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentState {
    pub status: PaymentStatus,
    pub intent: Option<CurrentIntent>,
    /// Latest known state of each refund id of the current intent.
    refunds: BTreeMap<String, (Cents, RefundState)>,
    /// The charge's cumulative `amount_refunded` from `charge.refunded`,
    /// lowered when a refund is reversed afterwards.
    charge_refunded_cents: Cents,
}

impl Default for PaymentState {
    fn default() -> Self {
        Self {
            status: PaymentStatus::Unpaid,
            intent: None,
            refunds: BTreeMap::new(),
            charge_refunded_cents: 0,
        }
    }
}

impl PaymentState {
    /// Refunded total: the larger of the per-refund sum and the charge's own
    /// figure, never more than the bound amount.
    pub fn amount_refunded_cents(&self) -> Cents {
        let bound = self.intent.as_ref().map_or(0, |i| i.amount_cents);
        let active: Cents = self
            .refunds
            .values()
            .filter(|(_, s)| *s == RefundState::Active)
            .map(|(a, _)| *a)
            .sum();
        active.max(self.charge_refunded_cents).clamp(0, bound)
    }
}

/// The projected booking (`trip_participants` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingState {
    pub booking_id: String,
    pub trip_id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub passengers: u32,
    pub status: BookingStatus,
    pub payment: PaymentState,
    /// How many bindings the booking has had (accepted or not).
    pub attempts: u32,
    /// Number of distinct events in the booking's history.
    pub version: i64,
    pub last_event_seq: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookingFold {
    /// `None` when the history has no `BookingRequested`.
    pub state: Option<BookingState>,
    /// One outcome per distinct event seq, sorted by seq.
    pub outcomes: Vec<EventOutcome>,
    /// Intents that took money the booking must give back: a superseded
    /// intent that succeeded, or the current one of a cancelled paid booking.
    pub refund_required: BTreeSet<String>,
}

fn lifecycle_rank(event: &Event) -> u8 {
    match event {
        Event::BookingRequested(_) => 0,
        Event::BookingAccepted(_) | Event::BookingRejected(_) => 1,
        _ => 2,
    }
}

struct Outcomes(BTreeMap<i64, EventOutcome>);

impl Outcomes {
    fn set(&mut self, seq: i64, outcome: OutcomeKind, reason: Option<&str>) {
        self.0.insert(
            seq,
            EventOutcome {
                seq,
                outcome,
                reason: reason.map(str::to_string),
            },
        );
    }
}

/// Folds one booking's history. `booking_id` selects the booking; events of
/// other bookings in the input are ignored.
pub fn fold_booking(booking_id: &str, events: &[Recorded]) -> BookingFold {
    let mut outcomes = Outcomes(BTreeMap::new());
    let mut lifecycle: Vec<&Recorded> = Vec::new();
    let mut bindings: Vec<(&Recorded, &PaymentIntentBound)> = Vec::new();
    let mut facts: HashMap<&str, Vec<(&Recorded, &StripeFact)>> = HashMap::new();
    let mut unbound_facts: Vec<&Recorded> = Vec::new();

    for rec in events {
        match &rec.event {
            Event::BookingRequested(e) if e.booking_id == booking_id => lifecycle.push(rec),
            Event::BookingAccepted(e) | Event::BookingRejected(e) | Event::BookingCancelled(e)
                if e.booking_id == booking_id =>
            {
                lifecycle.push(rec)
            }
            Event::PaymentIntentBound(b) if b.booking_id == booking_id => bindings.push((rec, b)),
            Event::StripeEventReceived(f) => match &f.payment_intent_id {
                Some(pi) => facts.entry(pi.as_str()).or_default().push((rec, f)),
                None => unbound_facts.push(rec),
            },
            _ => {}
        }
    }

    // Lifecycle.
    lifecycle.sort_by_key(|r| (lifecycle_rank(&r.event), r.seq));
    let mut state: Option<BookingState> = None;
    for rec in &lifecycle {
        fold_lifecycle(&mut state, rec, &mut outcomes);
    }

    // Distinct events and the latest seq, for version / lastEventSeq.
    let mut seen_seqs: BTreeMap<i64, DateTime<Utc>> = BTreeMap::new();
    for rec in events {
        let relevant = match &rec.event {
            Event::StripeEventReceived(f) => f
                .payment_intent_id
                .as_deref()
                .is_some_and(|pi| bindings.iter().any(|(_, b)| b.payment_intent_id == pi)),
            Event::BookingRequested(_)
            | Event::BookingAccepted(_)
            | Event::BookingRejected(_)
            | Event::BookingCancelled(_)
            | Event::PaymentIntentBound(_) => true,
            _ => false,
        };
        if relevant {
            seen_seqs.insert(rec.seq, rec.recorded_at);
        }
    }

    let Some(mut booking) = state else {
        // Without a request there is no booking to move.
        for rec in events {
            if !outcomes.0.contains_key(&rec.seq) {
                outcomes.set(
                    rec.seq,
                    OutcomeKind::Excluded,
                    Some(reason::UNKNOWN_BOOKING),
                );
            }
        }
        return BookingFold {
            state: None,
            outcomes: outcomes.0.into_values().collect(),
            refund_required: BTreeSet::new(),
        };
    };

    let mut refund_required = BTreeSet::new();
    bindings.sort_by_key(|(r, b)| (b.attempt, r.seq));
    let mut bound_pis: BTreeSet<&str> = BTreeSet::new();
    let mut current_pis: HashSet<&str> = HashSet::new();
    for (rec, binding) in &bindings {
        booking.attempts = booking.attempts.max(binding.attempt);
        let pi = binding.payment_intent_id.as_str();
        if !bound_pis.insert(pi) {
            outcomes.set(rec.seq, OutcomeKind::Noop, Some(reason::DUPLICATE));
            continue;
        }
        // Did Stripe report a success on this intent that passes the guards?
        let refs = booking_refs(&booking);
        let captured = facts.get(pi).is_some_and(|list| {
            list.iter().any(|(_, f)| {
                f.signal == PaymentSignal::Succeeded
                    && check_guards(&refs, bound_terms(&bindings, pi), f).is_ok()
            })
        });
        let pay = &mut booking.payment;
        let pending_elsewhere = pay.status == PaymentStatus::Pending
            && pay
                .intent
                .as_ref()
                .is_some_and(|i| i.payment_intent_id != pi);
        let input = if captured {
            PaymentInput::BoundSucceeded
        } else {
            PaymentInput::Bound
        };
        let verdict = if pending_elsewhere && !captured {
            Err(reason::INTENT_PENDING)
        } else {
            match transition(pay.status, input) {
                Transition::Reject => Err(reason::INVALID_TRANSITION),
                Transition::To(_) | Transition::Noop => Ok(()),
            }
        };
        match verdict {
            Err(why) => outcomes.set(rec.seq, OutcomeKind::Rejected, Some(why)),
            Ok(()) => {
                *pay = PaymentState {
                    status: PaymentStatus::Pending,
                    intent: Some(CurrentIntent {
                        payment_intent_id: binding.payment_intent_id.clone(),
                        amount_cents: binding.amount_cents,
                        currency: binding.currency.clone(),
                        attempt: binding.attempt,
                    }),
                    ..PaymentState::default()
                };
                outcomes.set(rec.seq, OutcomeKind::Applied, None);
                current_pis.insert(pi);
                let mut intent_facts = facts.get(pi).cloned().unwrap_or_default();
                intent_facts.sort_by(|a, b| {
                    a.1.order_key()
                        .cmp(&b.1.order_key())
                        .then(a.0.seq.cmp(&b.0.seq))
                });
                let mut seen_ids = HashSet::new();
                for (frec, fact) in intent_facts {
                    if !seen_ids.insert(fact.event_id.as_str()) {
                        outcomes.set(frec.seq, OutcomeKind::Noop, Some(reason::DUPLICATE));
                        continue;
                    }
                    let (kind, why) =
                        apply_fact(&booking_refs(&booking), &mut booking.payment, fact);
                    outcomes.set(frec.seq, kind, why);
                }
            }
        }
    }

    // Events of intents bound to this booking that never became current.
    for pi in bound_pis.iter().filter(|pi| !current_pis.contains(*pi)) {
        let mut seen_ids = HashSet::new();
        for (frec, fact) in facts.get(pi).cloned().unwrap_or_default() {
            if !seen_ids.insert(fact.event_id.as_str()) {
                outcomes.set(frec.seq, OutcomeKind::Noop, Some(reason::DUPLICATE));
                continue;
            }
            let guard = check_guards(&booking_refs(&booking), bound_terms(&bindings, pi), fact);
            let why = guard.err().unwrap_or(reason::SUPERSEDED_INTENT);
            if why == reason::SUPERSEDED_INTENT && fact.signal == PaymentSignal::Succeeded {
                refund_required.insert((*pi).to_string());
            }
            outcomes.set(frec.seq, OutcomeKind::Excluded, Some(why));
        }
    }
    // Facts that name an intent this booking never bound.
    for (pi, list) in &facts {
        if !bound_pis.contains(pi) {
            for (frec, _) in list {
                outcomes.set(
                    frec.seq,
                    OutcomeKind::Excluded,
                    Some(reason::UNKNOWN_PAYMENT_INTENT),
                );
            }
        }
    }
    for frec in unbound_facts {
        outcomes.set(
            frec.seq,
            OutcomeKind::Excluded,
            Some(reason::UNKNOWN_PAYMENT_INTENT),
        );
    }

    if booking.status == BookingStatus::Cancelled
        && matches!(
            booking.payment.status,
            PaymentStatus::Paid | PaymentStatus::PartiallyRefunded
        )
    {
        if let Some(intent) = &booking.payment.intent {
            refund_required.insert(intent.payment_intent_id.clone());
        }
    }

    booking.version = seen_seqs.len() as i64;
    if let Some((seq, at)) = seen_seqs.last_key_value() {
        booking.last_event_seq = *seq;
        booking.updated_at = *at;
    }
    BookingFold {
        state: Some(booking),
        outcomes: outcomes.0.into_values().collect(),
        refund_required,
    }
}

fn fold_lifecycle(state: &mut Option<BookingState>, rec: &Recorded, outcomes: &mut Outcomes) {
    let (next, requested): (BookingStatus, Option<&BookingRequested>) = match &rec.event {
        Event::BookingRequested(r) => (BookingStatus::Requested, Some(r)),
        Event::BookingAccepted(_) => (BookingStatus::Accepted, None),
        Event::BookingRejected(_) => (BookingStatus::Rejected, None),
        _ => (BookingStatus::Cancelled, None),
    };
    match (state.as_mut(), requested) {
        (None, Some(r)) => {
            *state = Some(BookingState {
                booking_id: r.booking_id.clone(),
                trip_id: r.trip_id.clone(),
                user_id: r.user_id.clone(),
                org_id: r.org_id.clone(),
                passengers: r.passengers,
                status: BookingStatus::Requested,
                payment: PaymentState::default(),
                attempts: 0,
                version: 0,
                last_event_seq: rec.seq,
                updated_at: rec.recorded_at,
            });
            outcomes.set(rec.seq, OutcomeKind::Applied, None);
        }
        (None, None) => outcomes.set(
            rec.seq,
            OutcomeKind::Rejected,
            Some(reason::UNKNOWN_BOOKING),
        ),
        (Some(_), Some(_)) => outcomes.set(rec.seq, OutcomeKind::Noop, Some(reason::DUPLICATE)),
        (Some(b), None) => {
            let allowed = matches!(
                (b.status, next),
                (BookingStatus::Requested, BookingStatus::Accepted)
                    | (BookingStatus::Requested, BookingStatus::Rejected)
                    | (BookingStatus::Requested, BookingStatus::Cancelled)
                    | (BookingStatus::Accepted, BookingStatus::Cancelled)
            );
            if allowed {
                b.status = next;
                outcomes.set(rec.seq, OutcomeKind::Applied, None);
            } else if b.status == next {
                outcomes.set(rec.seq, OutcomeKind::Noop, None);
            } else {
                outcomes.set(
                    rec.seq,
                    OutcomeKind::Rejected,
                    Some(reason::INVALID_TRANSITION),
                );
            }
        }
    }
}

/// What a fact's metadata is checked against.
struct BookingRefs {
    booking_id: String,
    trip_id: String,
    user_id: String,
}

fn booking_refs(b: &BookingState) -> BookingRefs {
    BookingRefs {
        booking_id: b.booking_id.clone(),
        trip_id: b.trip_id.clone(),
        user_id: b.user_id.clone(),
    }
}

/// The amount and currency a payment intent was bound with.
fn bound_terms<'a>(
    bindings: &'a [(&Recorded, &PaymentIntentBound)],
    pi: &str,
) -> Option<(Cents, &'a Currency)> {
    bindings
        .iter()
        .find(|(_, b)| b.payment_intent_id == pi)
        .map(|(_, b)| (b.amount_cents, &b.currency))
}

/// Invariant 6: an authentic event moves a booking only if it matches our
/// own binding. Returns the reason it may not.
fn check_guards(
    refs: &BookingRefs,
    bound: Option<(Cents, &Currency)>,
    fact: &StripeFact,
) -> Result<(), &'static str> {
    let Some((bound_amount, bound_currency)) = bound else {
        return Err(reason::UNKNOWN_PAYMENT_INTENT);
    };
    if fact.livemode != fact.expected_livemode {
        return Err(reason::LIVEMODE_MISMATCH);
    }
    let m = &fact.metadata;
    let mismatched =
        |claimed: &Option<String>, ours: &str| claimed.as_deref().is_some_and(|c| c != ours);
    if mismatched(&m.booking_id, &refs.booking_id)
        || mismatched(&m.trip_id, &refs.trip_id)
        || mismatched(&m.user_id, &refs.user_id)
    {
        return Err(reason::METADATA_MISMATCH);
    }
    if fact.currency.as_ref().is_some_and(|c| c != bound_currency)
        || fact.amount_cents.is_some_and(|a| a != bound_amount)
    {
        return Err(reason::AMOUNT_MISMATCH);
    }
    Ok(())
}

/// Applies one fact of the current intent. The payment state changes only
/// when the outcome is `Applied` or `Noop`.
fn apply_fact(
    refs: &BookingRefs,
    pay: &mut PaymentState,
    fact: &StripeFact,
) -> (OutcomeKind, Option<&'static str>) {
    let Some(intent) = pay.intent.clone() else {
        return (OutcomeKind::Excluded, Some(reason::UNKNOWN_PAYMENT_INTENT));
    };
    if let Err(why) = check_guards(refs, Some((intent.amount_cents, &intent.currency)), fact) {
        return (OutcomeKind::Excluded, Some(why));
    }

    let before_total = pay.amount_refunded_cents();
    let mut next = pay.clone();
    let input = match &fact.signal {
        PaymentSignal::Processing => PaymentInput::Processing,
        PaymentSignal::RequiresAction => PaymentInput::RequiresAction,
        PaymentSignal::Succeeded => PaymentInput::Succeeded,
        PaymentSignal::Failed => PaymentInput::Failed,
        PaymentSignal::Canceled => PaymentInput::Canceled,
        PaymentSignal::ChargeRefunded {
            amount_refunded_cents,
        } => {
            next.charge_refunded_cents = (*amount_refunded_cents).max(0);
            refund_input(
                before_total,
                next.amount_refunded_cents(),
                intent.amount_cents,
                false,
            )
        }
        PaymentSignal::Refund {
            refund_id,
            amount_cents,
            state,
        } => {
            let amount = (*amount_cents).max(0);
            let was_reversed = matches!(
                next.refunds.get(refund_id),
                Some((_, RefundState::Reversed))
            );
            if *state == RefundState::Reversed && !was_reversed {
                next.charge_refunded_cents = (next.charge_refunded_cents - amount).max(0);
            }
            if was_reversed && *state == RefundState::Active {
                // A failed or canceled refund does not come back to life.
                return (OutcomeKind::Rejected, Some(reason::INVALID_TRANSITION));
            }
            next.refunds.insert(refund_id.clone(), (amount, *state));
            refund_input(
                before_total,
                next.amount_refunded_cents(),
                intent.amount_cents,
                *state == RefundState::Reversed,
            )
        }
        PaymentSignal::DisputeOpened { .. } => PaymentInput::DisputeOpened,
        PaymentSignal::DisputeClosed { won: false, .. } => PaymentInput::DisputeLost,
        PaymentSignal::DisputeClosed { won: true, .. } => {
            if before_total == 0 {
                PaymentInput::DisputeWonNoRefund
            } else {
                PaymentInput::DisputeWonPartRefund
            }
        }
        PaymentSignal::Unhandled => return (OutcomeKind::Excluded, Some(reason::UNHANDLED_TYPE)),
    };
    match transition(pay.status, input) {
        Transition::Reject => (OutcomeKind::Rejected, Some(reason::INVALID_TRANSITION)),
        Transition::Noop | Transition::To(_) => {
            if let Transition::To(to) = transition(pay.status, input) {
                next.status = to;
            }
            let changed = next.status != pay.status || next.amount_refunded_cents() != before_total;
            *pay = next;
            if changed {
                (OutcomeKind::Applied, None)
            } else {
                (OutcomeKind::Noop, None)
            }
        }
    }
}

/// Classifies a refund-ledger change into a table column.
fn refund_input(before: Cents, after: Cents, bound: Cents, reversal: bool) -> PaymentInput {
    if reversal || after < before {
        if after == 0 {
            PaymentInput::RefundReversedNoneLeft
        } else {
            PaymentInput::RefundReversedSomeLeft
        }
    } else if after >= bound && bound > 0 {
        PaymentInput::RefundFull
    } else if after > 0 {
        PaymentInput::RefundPartial
    } else {
        PaymentInput::RefundReversedNoneLeft
    }
}
