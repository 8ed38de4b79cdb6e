//! The fold: a booking's projection as a pure function of its events.
//!
//! Input: every event of the booking's own stream plus the payment streams of
//! the intents bound to it, in any order, possibly duplicated. Output: the
//! booking state, one outcome per event, and the side effects its
//! transitions produce.
//!
//! Order (DESIGN.md §3): lifecycle events by (rank, seq); bindings by
//! (attempt, seq), the latest being the current intent; the current intent's
//! Stripe events by (created, lifecycle rank, event id). Duplicate Stripe
//! event ids count once. Every sort key is intrinsic to the events, so
//! delivery order cannot matter; each event's money fact goes into the
//! ledger (`ledger.rs`), whose merges commute, before the table moves the
//! status.

use super::effects::{EffectKind, SideEffect};
use super::events::{BookingRequested, Event, PaymentIntentBound, Recorded};
use super::ledger::{DisputeSummary, MoneyLedger, RefundLevel};
use super::money::{Cents, Currency};
use super::payment::{PaymentSignal, StripeFact};
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

/// Payment state of one booking: the status and the money ledger of the
/// current intent it is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentState {
    pub status: PaymentStatus,
    pub intent: Option<CurrentIntent>,
    pub ledger: MoneyLedger,
}

impl Default for PaymentState {
    fn default() -> Self {
        Self {
            status: PaymentStatus::Unpaid,
            intent: None,
            ledger: MoneyLedger::default(),
        }
    }
}

impl PaymentState {
    fn bound_amount(&self) -> Cents {
        self.intent.as_ref().map_or(Cents::ZERO, |i| i.amount_cents)
    }

    /// Refunded total of the current intent, never more than its amount.
    pub fn amount_refunded_cents(&self) -> Cents {
        self.ledger.refunded(self.bound_amount())
    }

    /// Captured money not refunded and not charged back.
    pub fn held_cents(&self) -> Cents {
        self.ledger.held(self.bound_amount())
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
    /// How many bindings the booking has had.
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
    /// The messages the booking's transitions produce, in fold order.
    pub effects: Vec<SideEffect>,
}

impl BookingFold {
    /// The payment intents with a `refund_required` message.
    pub fn refund_required(&self) -> BTreeSet<String> {
        self.effects
            .iter()
            .filter(|e| e.kind == EffectKind::RefundRequired)
            .filter_map(|e| e.payment_intent_id.clone())
            .collect()
    }
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

    fn is_applied(&self, seq: i64) -> bool {
        self.0
            .get(&seq)
            .is_some_and(|o| o.outcome == OutcomeKind::Applied)
    }
}

type Facts<'a> = Vec<(&'a Recorded, &'a StripeFact)>;

/// Folds one booking's history. `booking_id` selects the booking; events of
/// other bookings in the input are ignored.
pub fn fold_booking(booking_id: &str, events: &[Recorded]) -> BookingFold {
    let mut outcomes = Outcomes(BTreeMap::new());
    let mut effects: Vec<SideEffect> = Vec::new();
    let mut lifecycle: Vec<&Recorded> = Vec::new();
    let mut bindings: Vec<(&Recorded, &PaymentIntentBound)> = Vec::new();
    let mut facts: HashMap<&str, Facts<'_>> = HashMap::new();
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
    let mut cancelled_by: Option<&Recorded> = None;
    for rec in &lifecycle {
        let kind = match &rec.event {
            Event::BookingAccepted(_) => EffectKind::BookingAccepted,
            Event::BookingRejected(_) => EffectKind::BookingRejected,
            Event::BookingCancelled(_) => EffectKind::BookingCancelled,
            _ => continue,
        };
        if outcomes.is_applied(rec.seq) {
            if kind == EffectKind::BookingCancelled {
                cancelled_by = Some(rec);
            }
            effects.push(SideEffect {
                kind,
                caused_by_seq: rec.seq,
                stripe_event_id: None,
                payment_intent_id: None,
                amount_cents: None,
                currency: None,
                occurred_at: rec.recorded_at,
            });
        }
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
            effects: Vec::new(),
        };
    };

    // Bindings are decisions, validated when they were made: the fold takes
    // each one as it is, and the latest is the current intent.
    bindings.sort_by_key(|(r, b)| (b.attempt, r.seq));
    let mut distinct: Vec<(&Recorded, &PaymentIntentBound)> = Vec::new();
    for (rec, binding) in &bindings {
        booking.attempts = booking.attempts.max(binding.attempt);
        if distinct
            .iter()
            .any(|(_, b)| b.payment_intent_id == binding.payment_intent_id)
        {
            outcomes.set(rec.seq, OutcomeKind::Noop, Some(reason::DUPLICATE));
        } else {
            outcomes.set(rec.seq, OutcomeKind::Applied, None);
            distinct.push((rec, binding));
        }
    }
    let refs = booking_refs(&booking);
    if let Some((_, current)) = distinct.last() {
        let list = facts
            .get(current.payment_intent_id.as_str())
            .cloned()
            .unwrap_or_default();
        fold_current_intent(
            &mut booking,
            current,
            list,
            cancelled_by,
            &mut outcomes,
            &mut effects,
        );
    }

    // Events of earlier intents: stored, never applied; captured money on one
    // of them must go back.
    for (k, (_, binding)) in distinct.iter().enumerate().rev().skip(1) {
        let pi = binding.payment_intent_id.as_str();
        let mut list = facts.get(pi).cloned().unwrap_or_default();
        sort_facts(&mut list);
        let mut seen_ids = HashSet::new();
        for &(frec, fact) in &list {
            if !seen_ids.insert(fact.event_id.as_str()) {
                outcomes.set(frec.seq, OutcomeKind::Noop, Some(reason::DUPLICATE));
                continue;
            }
            let guard = check_guards(&refs, (binding.amount_cents, &binding.currency), fact);
            let why = guard.err().unwrap_or(reason::SUPERSEDED_INTENT);
            if why == reason::SUPERSEDED_INTENT && fact.signal == PaymentSignal::Succeeded {
                effects.push(intent_effect(
                    EffectKind::RefundRequired,
                    binding,
                    frec,
                    fact,
                    binding.amount_cents,
                ));
            }
            outcomes.set(frec.seq, OutcomeKind::Excluded, Some(why));
        }
        // While it was current (the events logged before the next binding)
        // its failures were real transitions: the same messages again, so a
        // rebuild finds them already written.
        let next_binding = distinct[k + 1].0.seq;
        let era: Facts<'_> = list
            .iter()
            .copied()
            .filter(|(r, _)| r.seq < next_binding)
            .collect();
        run_intent(&refs, binding, &era, |step| {
            if step.after.0 == PaymentStatus::Failed && step.before.0 != PaymentStatus::Failed {
                effects.push(intent_effect(
                    EffectKind::PaymentFailed,
                    binding,
                    step.rec,
                    step.fact,
                    binding.amount_cents,
                ));
            }
        });
    }
    // Facts that name an intent this booking never bound.
    for (pi, list) in &facts {
        if !distinct.iter().any(|(_, b)| b.payment_intent_id == *pi) {
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

    booking.version = seen_seqs.len() as i64;
    if let Some((seq, at)) = seen_seqs.last_key_value() {
        booking.last_event_seq = *seq;
        booking.updated_at = *at;
    }
    BookingFold {
        state: Some(booking),
        outcomes: outcomes.0.into_values().collect(),
        effects,
    }
}

/// Fold order of one intent's events (DESIGN.md §3), then seq so that the
/// first copy of a duplicate is the one that counts.
fn sort_facts(list: &mut Facts<'_>) {
    list.sort_by(|a, b| {
        a.1.order_key()
            .cmp(&b.1.order_key())
            .then(a.0.seq.cmp(&b.0.seq))
    });
}

fn stripe_time(fact: &StripeFact, rec: &Recorded) -> DateTime<Utc> {
    DateTime::from_timestamp(fact.created, 0).unwrap_or(rec.recorded_at)
}

/// A message caused by a Stripe event of `binding`'s intent.
fn intent_effect(
    kind: EffectKind,
    binding: &PaymentIntentBound,
    rec: &Recorded,
    fact: &StripeFact,
    amount: Cents,
) -> SideEffect {
    SideEffect {
        kind,
        caused_by_seq: rec.seq,
        stripe_event_id: Some(fact.event_id.clone()),
        payment_intent_id: Some(binding.payment_intent_id.clone()),
        amount_cents: Some(amount),
        currency: Some(binding.currency.clone()),
        occurred_at: stripe_time(fact, rec),
    }
}

/// What one of an intent's events did, as [`run_intent`] reports it.
struct Step<'a> {
    rec: &'a Recorded,
    fact: &'a StripeFact,
    outcome: (OutcomeKind, Option<&'static str>),
    /// (status, refunded) before and after; equal when not applied.
    before: (PaymentStatus, Cents),
    after: (PaymentStatus, Cents),
}

/// Folds an intent's Stripe events from a fresh binding: each authentic,
/// matching one records its money fact in the ledger, then the table moves
/// the status. Reports every event to `sink`, in fold order.
fn run_intent<'a>(
    refs: &BookingRefs,
    binding: &PaymentIntentBound,
    list: &[(&'a Recorded, &'a StripeFact)],
    mut sink: impl FnMut(Step<'a>),
) -> PaymentState {
    let terms = (binding.amount_cents, &binding.currency);
    let mut pay = PaymentState {
        status: PaymentStatus::Pending,
        intent: Some(CurrentIntent {
            payment_intent_id: binding.payment_intent_id.clone(),
            amount_cents: binding.amount_cents,
            currency: binding.currency.clone(),
            attempt: binding.attempt,
        }),
        ledger: MoneyLedger::default(),
    };
    let mut seen_ids = HashSet::new();
    for &(rec, fact) in list {
        let before = (pay.status, pay.amount_refunded_cents());
        // An event that does not apply leaves the state as it was.
        let step = |outcome| Step {
            rec,
            fact,
            outcome,
            before,
            after: before,
        };
        if !seen_ids.insert(fact.event_id.as_str()) {
            sink(step((OutcomeKind::Noop, Some(reason::DUPLICATE))));
            continue;
        }
        if let Err(why) = check_guards(refs, terms, fact) {
            sink(step((OutcomeKind::Excluded, Some(why))));
            continue;
        }
        if fact.signal == PaymentSignal::Unhandled {
            sink(step((OutcomeKind::Excluded, Some(reason::UNHANDLED_TYPE))));
            continue;
        }
        // Money facts are never dropped: the ledger first, the table second.
        pay.ledger.record(&fact.signal, fact.created);
        let after_refunded = pay.amount_refunded_cents();
        let Some(input) = classify(
            &fact.signal,
            &pay.ledger,
            binding.amount_cents,
            before.1,
            after_refunded,
        ) else {
            sink(step((OutcomeKind::Excluded, Some(reason::UNHANDLED_TYPE))));
            continue;
        };
        let cell = transition(before.0, input);
        if let Transition::To(to) = cell {
            pay.status = to;
        }
        let outcome = if pay.status != before.0 || after_refunded != before.1 {
            (OutcomeKind::Applied, None)
        } else if cell == Transition::Reject {
            (OutcomeKind::Rejected, Some(reason::INVALID_TRANSITION))
        } else {
            (OutcomeKind::Noop, None)
        };
        sink(Step {
            rec,
            fact,
            outcome,
            before,
            after: (pay.status, after_refunded),
        });
    }
    pay
}

/// Folds the current intent into the booking: outcomes, and the side
/// effects of its real transitions.
fn fold_current_intent(
    booking: &mut BookingState,
    binding: &PaymentIntentBound,
    mut list: Facts<'_>,
    cancelled_by: Option<&Recorded>,
    outcomes: &mut Outcomes,
    effects: &mut Vec<SideEffect>,
) {
    let refs = booking_refs(booking);
    sort_facts(&mut list);
    let effect = |kind: EffectKind, step: &Step<'_>, amount: Cents| {
        intent_effect(kind, binding, step.rec, step.fact, amount)
    };
    booking.payment = run_intent(&refs, binding, &list, |step| {
        outcomes.set(step.rec.seq, step.outcome.0, step.outcome.1);
        let ((from, refunded_before), (to, refunded_after)) = (step.before, step.after);
        let bound = binding.amount_cents;
        if to != from {
            use PaymentStatus as S;
            if to == S::Paid && !from.is_settled() {
                effects.push(effect(EffectKind::PaymentSucceeded, &step, bound));
            }
            if to == S::Failed {
                effects.push(effect(EffectKind::PaymentFailed, &step, bound));
            }
            if to == S::Disputed {
                effects.push(effect(EffectKind::DisputeOpened, &step, bound));
            }
            if from == S::Disputed || to == S::ChargedBack {
                effects.push(effect(EffectKind::DisputeClosed, &step, bound));
            }
        }
        if refunded_after > refunded_before {
            effects.push(effect(EffectKind::PaymentRefunded, &step, refunded_after));
        }
    });
    // A cancelled booking must give back the money it holds. What we knew
    // decides, in log order: held when the cancellation was recorded, then
    // held again after a later event (a refund that failed after the
    // cancellation's refund, a late success): one message each time.
    if let Some(cancel) = cancelled_by {
        let held_upto = |seq: i64| {
            let known: Facts<'_> = list.iter().copied().filter(|(r, _)| r.seq <= seq).collect();
            run_intent(&refs, binding, &known, |_| {}).held_cents()
        };
        let mut later: Vec<(&Recorded, &StripeFact)> = list
            .iter()
            .copied()
            .filter(|(r, _)| r.seq > cancel.seq)
            .collect();
        later.sort_by_key(|(r, _)| r.seq);
        let mut held = held_upto(cancel.seq);
        if held > Cents::ZERO {
            effects.push(SideEffect {
                kind: EffectKind::RefundRequired,
                caused_by_seq: cancel.seq,
                stripe_event_id: None,
                payment_intent_id: Some(binding.payment_intent_id.clone()),
                amount_cents: Some(held),
                currency: Some(binding.currency.clone()),
                occurred_at: cancel.recorded_at,
            });
        }
        for (rec, fact) in later {
            let now = held_upto(rec.seq);
            if held == Cents::ZERO && now > Cents::ZERO {
                effects.push(intent_effect(
                    EffectKind::RefundRequired,
                    binding,
                    rec,
                    fact,
                    now,
                ));
            }
            held = now;
        }
    }
}

/// The table column of one recorded fact, read off the ledger after it.
/// `None` for types that drive nothing.
fn classify(
    signal: &PaymentSignal,
    ledger: &MoneyLedger,
    captured_amount: Cents,
    refunded_before: Cents,
    refunded_after: Cents,
) -> Option<PaymentInput> {
    Some(match signal {
        PaymentSignal::Processing => PaymentInput::Processing,
        PaymentSignal::RequiresAction => PaymentInput::RequiresAction,
        PaymentSignal::Succeeded => PaymentInput::Succeeded,
        PaymentSignal::Failed => PaymentInput::Failed,
        PaymentSignal::Canceled => PaymentInput::Canceled,
        PaymentSignal::ChargeRefunded { .. } | PaymentSignal::Refund(_) => {
            let level = ledger.refund_level(captured_amount);
            match level {
                RefundLevel::None => PaymentInput::RefundReversedNoneLeft,
                RefundLevel::Partial if refunded_after < refunded_before => {
                    PaymentInput::RefundReversedSomeLeft
                }
                RefundLevel::Partial => PaymentInput::RefundPartial,
                RefundLevel::Full => PaymentInput::RefundFull,
            }
        }
        PaymentSignal::DisputeOpened(_) | PaymentSignal::DisputeClosed(_) => {
            match ledger.disputes() {
                DisputeSummary::Lost => PaymentInput::DisputeLost,
                DisputeSummary::Open => PaymentInput::DisputeOpened,
                DisputeSummary::Clear => match ledger.refund_level(captured_amount) {
                    RefundLevel::None => PaymentInput::DisputeWonNoRefund,
                    RefundLevel::Partial => PaymentInput::DisputeWonPartRefund,
                    RefundLevel::Full => PaymentInput::DisputeWonFullRefund,
                },
            }
        }
        PaymentSignal::Unhandled => return None,
    })
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

/// Invariant 6: an authentic event moves a booking only if it matches our
/// own binding (`bound`: the amount and currency the intent was bound
/// with). Returns the reason it may not. An intent or charge event must
/// carry its amount and currency; a refund or dispute its currency, and an
/// amount no larger than the bound one.
fn check_guards(
    refs: &BookingRefs,
    bound: (Cents, &Currency),
    fact: &StripeFact,
) -> Result<(), &'static str> {
    let (bound_amount, bound_currency) = bound;
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
    let same_currency = |c: &Option<Currency>| c.as_ref() == Some(bound_currency);
    let money_ok = match &fact.signal {
        PaymentSignal::Unhandled => true,
        PaymentSignal::Refund(r) => same_currency(&r.currency) && r.amount_cents <= bound_amount,
        PaymentSignal::DisputeOpened(d) | PaymentSignal::DisputeClosed(d) => {
            same_currency(&d.currency) && d.amount_cents.is_none_or(|a| a <= bound_amount)
        }
        PaymentSignal::ChargeRefunded { refunds, .. } => {
            same_currency(&fact.currency)
                && fact.amount_cents == Some(bound_amount)
                && refunds
                    .iter()
                    .all(|r| r.currency.is_none() || same_currency(&r.currency))
        }
        _ => same_currency(&fact.currency) && fact.amount_cents == Some(bound_amount),
    };
    if money_ok {
        Ok(())
    } else {
        Err(reason::AMOUNT_MISMATCH)
    }
}
