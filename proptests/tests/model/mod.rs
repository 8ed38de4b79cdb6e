//! A reference model of one Stripe charge's life, and the property that the
//! fold agrees with it.
//!
//! The model keeps Stripe's own objects (payment intents, the charge's
//! refunds, its disputes) and changes them only the ways Stripe can: an
//! attempt fails and a new intent is bound, processing, requires_action,
//! success, partial and full refunds (pending, then succeeded, failed or
//! canceled; each announced the ways Stripe does: `refund.created` with the
//! cumulative `charge.refunded` in either order, a legacy `charge.refunded`
//! listing its refunds, the cumulative total alone (an endpoint that takes
//! no `refund.*` types), `refund.updated`,
//! `charge.refund.updated`, `refund.failed`), inquiries and disputes (funds withdrawn and reinstated,
//! pending refunds failing with `charge_for_pending_refund_disputed`, every
//! closing status), a late success of a superseded intent, the booking's
//! cancellation, and unrelated types. Time moves in whole seconds, often not
//! at all, so many events share a `created`.
//!
//! What the booking must say is read off those objects, never off the
//! events: the status from the current intent and its charge, the refunded
//! amount as the sum of refunds not failed or canceled, the messages from
//! the status changes and the money held after a cancellation.

pub mod regressions;

use chrono::{DateTime, TimeZone, Utc};
use klubz_ledger::domain::events::{BookingDecided, BookingRequested, PaymentIntentBound};
use klubz_ledger::domain::payment::{
    DisputeSeen, FactMetadata, PaymentSignal, RefundSeen, RefundState, StripeFact,
};
use klubz_ledger::domain::{
    fold_booking, BookingFold, Cents, Currency, EffectKind, Event, PaymentStatus, Recorded,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

pub const AMOUNT: i64 = 2000;
pub const T0: i64 = 1_800_000_000;

pub fn zar() -> Currency {
    Currency::parse("zar").unwrap()
}

pub fn cents(v: i64) -> Cents {
    Cents::new(v).unwrap()
}

pub fn at(i: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(T0 + i, 0).single().unwrap()
}

/// One step of the world, applied only when Stripe could take it now.
#[derive(Debug, Clone)]
pub enum Op {
    Tick(u8),
    Processing,
    RequiresAction,
    Fail,
    Cancel,
    Succeed,
    /// After a failure or cancellation: the rider pays with a new intent.
    Rebind,
    /// A superseded intent that had failed succeeds after all.
    LateSucceedOld,
    /// `quarters` of what is left to refund (4 = all of it).
    Refund {
        quarters: u8,
        pending: bool,
        style: u8,
    },
    /// A refund pending or succeeded moves on: 0 succeeded, 1 failed, 2 canceled.
    SettleRefund {
        pick: u8,
        to: u8,
        style: u8,
    },
    OpenDispute {
        inquiry: bool,
    },
    ReviewDispute,
    /// 0 won / warning_closed, 1 lost, 2 prevented, 3 a status Stripe adds later.
    CloseDispute {
        outcome: u8,
    },
    CancelBooking,
    Noise,
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3u8).prop_map(Op::Tick),
        1 => Just(Op::Processing),
        1 => Just(Op::RequiresAction),
        2 => Just(Op::Fail),
        1 => Just(Op::Cancel),
        3 => Just(Op::Succeed),
        2 => Just(Op::Rebind),
        1 => Just(Op::LateSucceedOld),
        4 => (1..=4u8, any::<bool>(), 0..4u8).prop_map(|(quarters, pending, style)| Op::Refund { quarters, pending, style }),
        3 => (any::<u8>(), 0..3u8, 0..3u8).prop_map(|(pick, to, style)| Op::SettleRefund { pick, to, style }),
        2 => any::<bool>().prop_map(|inquiry| Op::OpenDispute { inquiry }),
        1 => Just(Op::ReviewDispute),
        2 => (0..4u8).prop_map(|outcome| Op::CloseDispute { outcome }),
        1 => Just(Op::CancelBooking),
        1 => Just(Op::Noise),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PiStatus {
    /// `requires_payment_method` / `requires_confirmation`, never tried.
    Created,
    Processing,
    RequiresAction,
    /// `requires_payment_method` after a decline.
    Failed,
    Canceled,
    Succeeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RStatus {
    Pending,
    Succeeded,
    Failed,
    Canceled,
}

impl RStatus {
    fn counts(self) -> bool {
        matches!(self, Self::Pending | Self::Succeeded)
    }
    fn stripe(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone)]
struct Refund {
    id: String,
    amount: i64,
    status: RStatus,
}

#[derive(Debug, Clone)]
struct Dispute {
    id: String,
    status: String,
}

impl Dispute {
    fn open(&self) -> bool {
        matches!(
            self.status.as_str(),
            "warning_needs_response" | "warning_under_review" | "needs_response" | "under_review"
        )
    }
    fn inquiry(&self) -> bool {
        self.status.starts_with("warning_")
    }
}

#[derive(Debug, Clone)]
struct Intent {
    pi: String,
    status: PiStatus,
    refunds: Vec<Refund>,
    disputes: Vec<Dispute>,
}

/// A message the booking must produce, by its cause.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    Stripe(String),
    Cancellation,
}

/// One event of the history, in the order it happened.
#[derive(Debug, Clone)]
pub enum Item {
    Own(Event),
    Stripe(StripeFact),
}

/// The world and what it implies so far.
#[derive(Debug, Clone)]
pub struct Model {
    clock: i64,
    /// Lifecycle rank of the last applied-type event this second.
    last_rank: Option<u8>,
    ids: u64,
    counter: u32,
    intents: Vec<Intent>,
    pub cancelled: bool,
    pub items: Vec<Item>,
    /// (kind, cause) of every message the booking must produce, except
    /// `payment_refunded` (see [`Model::ever_refunded`]).
    pub effects: BTreeSet<(EffectKind, Cause)>,
    /// Some refund counted at some point: at least one `payment_refunded`.
    pub ever_refunded: bool,
    held: bool,
    status: PaymentStatus,
}

impl Model {
    pub fn new(seed: u64) -> Self {
        let mut m = Self {
            clock: T0,
            last_rank: None,
            ids: seed | 1,
            counter: 0,
            intents: Vec::new(),
            cancelled: false,
            items: vec![
                Item::Own(Event::BookingRequested(BookingRequested {
                    booking_id: "b1".into(),
                    trip_id: "t1".into(),
                    user_id: "u1".into(),
                    org_id: None,
                    passengers: 2,
                })),
                Item::Own(Event::BookingAccepted(decided())),
            ],
            effects: BTreeSet::new(),
            ever_refunded: false,
            held: false,
            status: PaymentStatus::Unpaid,
        };
        m.bind();
        m
    }

    /// Builds a history from a list of operations.
    pub fn run(seed: u64, ops: &[Op]) -> Self {
        let mut m = Self::new(seed);
        for op in ops {
            m.apply(op);
        }
        m
    }

    /// Random-looking, unique event ids, so same-second events are not
    /// ordered by id the way they happened.
    fn next_id(&mut self, prefix: &str) -> String {
        self.ids = self
            .ids
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.counter += 1;
        format!("{prefix}_{:08x}{:04}", self.ids >> 40, self.counter)
    }

    fn current(&self) -> &Intent {
        &self.intents[self.intents.len() - 1]
    }

    fn current_mut(&mut self) -> &mut Intent {
        let last = self.intents.len() - 1;
        &mut self.intents[last]
    }

    fn bind(&mut self) {
        let pi = format!("pi_{}", self.intents.len() + 1);
        self.intents.push(Intent {
            pi: pi.clone(),
            status: PiStatus::Created,
            refunds: Vec::new(),
            disputes: Vec::new(),
        });
        self.items
            .push(Item::Own(Event::PaymentIntentBound(PaymentIntentBound {
                booking_id: "b1".into(),
                trip_id: "t1".into(),
                user_id: "u1".into(),
                payment_intent_id: pi.clone(),
                amount_cents: cents(AMOUNT),
                currency: zar(),
                attempt: self.intents.len() as u32,
            })));
        self.status = PaymentStatus::Pending;
        self.emit_for(
            &pi,
            "payment_intent.created",
            PaymentSignal::Unhandled,
            true,
        );
    }

    /// What is left to refund on the current charge.
    fn refundable(&self) -> i64 {
        let c = self.current();
        AMOUNT
            - c.refunds
                .iter()
                .filter(|r| r.status.counts())
                .map(|r| r.amount)
                .sum::<i64>()
    }

    fn refunded(&self) -> i64 {
        (AMOUNT - self.refundable()).clamp(0, AMOUNT)
    }

    /// The booking's payment status, read off Stripe's objects.
    pub fn expected_status(&self) -> PaymentStatus {
        let c = self.current();
        match c.status {
            PiStatus::Created | PiStatus::RequiresAction => PaymentStatus::Pending,
            PiStatus::Processing => PaymentStatus::Processing,
            PiStatus::Failed => PaymentStatus::Failed,
            PiStatus::Canceled => PaymentStatus::Canceled,
            PiStatus::Succeeded => {
                if c.disputes.iter().any(|d| d.status == "lost") {
                    PaymentStatus::ChargedBack
                } else if c.disputes.iter().any(Dispute::open) {
                    PaymentStatus::Disputed
                } else {
                    match self.refunded() {
                        0 => PaymentStatus::Paid,
                        AMOUNT => PaymentStatus::Refunded,
                        _ => PaymentStatus::PartiallyRefunded,
                    }
                }
            }
        }
    }

    pub fn expected_refunded(&self) -> i64 {
        if self.current().status == PiStatus::Succeeded {
            self.refunded()
        } else {
            0
        }
    }

    pub fn current_pi(&self) -> String {
        self.current().pi.clone()
    }

    pub fn held_now(&self) -> bool {
        let c = self.current();
        c.status == PiStatus::Succeeded
            && !c.disputes.iter().any(|d| d.status == "lost")
            && self.refunded() < AMOUNT
    }

    fn rank(signal: &PaymentSignal) -> Option<u8> {
        Some(match signal {
            PaymentSignal::Processing | PaymentSignal::RequiresAction => 0,
            PaymentSignal::Failed => 1,
            PaymentSignal::Canceled => 2,
            PaymentSignal::Succeeded => 3,
            PaymentSignal::ChargeRefunded { .. } => 4,
            PaymentSignal::Refund(r) if r.state != RefundState::Failed => 4,
            PaymentSignal::Refund(_) => 5,
            PaymentSignal::DisputeOpened(_) => 6,
            PaymentSignal::DisputeClosed(_) => 7,
            PaymentSignal::Unhandled => return None,
        })
    }

    /// Records a Stripe event for the current intent, then what it implies.
    fn emit(&mut self, event_type: &str, signal: PaymentSignal, with_amount: bool) -> String {
        let pi = self.current_pi();
        let drives = signal != PaymentSignal::Unhandled;
        let id = self.emit_for(&pi, event_type, signal, with_amount);
        // Types that drive nothing cannot be what changed the booking.
        if drives {
            self.observe(Cause::Stripe(id.clone()));
        }
        id
    }

    fn emit_for(
        &mut self,
        pi: &str,
        event_type: &str,
        signal: PaymentSignal,
        with_amount: bool,
    ) -> String {
        // Stripe stamps seconds; within one second a later step of a
        // charge's life has a later lifecycle rank (a retry, a second
        // decline, a refund after a failed one, take a second of their own).
        if let Some(rank) = Self::rank(&signal) {
            if self
                .last_rank
                .is_some_and(|last| rank < last || (rank <= 3 && rank == last))
            {
                self.tick(1);
            }
            self.last_rank = Some(self.last_rank.map_or(rank, |l| l.max(rank)));
        }
        let id = self.next_id("evt");
        self.items.push(Item::Stripe(StripeFact {
            event_id: id.clone(),
            event_type: event_type.into(),
            created: self.clock,
            livemode: false,
            expected_livemode: false,
            object_id: Some(pi.to_string()),
            payment_intent_id: Some(pi.to_string()),
            amount_cents: with_amount.then(|| cents(AMOUNT)),
            currency: Some(zar()),
            metadata: FactMetadata {
                booking_id: with_amount.then(|| "b1".to_string()),
                ..FactMetadata::default()
            },
            signal,
        }));
        id
    }

    fn tick(&mut self, seconds: i64) {
        if seconds > 0 {
            self.clock += seconds;
            self.last_rank = None;
        }
    }

    /// What the booking must now say, and the messages that follow.
    fn observe(&mut self, cause: Cause) {
        let status = self.expected_status();
        let before = self.status;
        if status != before {
            use PaymentStatus as S;
            let mut add = |kind| {
                self.effects.insert((kind, cause.clone()));
            };
            if status == S::Paid && !before.is_settled() {
                add(EffectKind::PaymentSucceeded);
            }
            if status == S::Failed {
                add(EffectKind::PaymentFailed);
            }
            if status == S::Disputed {
                add(EffectKind::DisputeOpened);
            }
            if before == S::Disputed || status == S::ChargedBack {
                add(EffectKind::DisputeClosed);
            }
        }
        self.status = status;
        if self.expected_refunded() > 0 {
            self.ever_refunded = true;
        }
        let held = self.held_now();
        if self.cancelled && held && !self.held {
            self.effects.insert((EffectKind::RefundRequired, cause));
        }
        self.held = held;
    }

    fn dispute_seen(&self, d: &Dispute) -> DisputeSeen {
        DisputeSeen {
            dispute_id: d.id.clone(),
            status: d.status.clone(),
            amount_cents: Some(cents(AMOUNT)),
            currency: Some(zar()),
        }
    }

    fn refund_signal(r: &Refund, failed_by_type: bool) -> PaymentSignal {
        PaymentSignal::Refund(RefundSeen {
            refund_id: r.id.clone(),
            amount_cents: cents(r.amount),
            state: if failed_by_type {
                RefundState::Failed
            } else {
                RefundState::from_stripe(Some(r.status.stripe()))
            },
            currency: Some(zar()),
        })
    }

    fn charge_refunded(&self, embed: bool) -> PaymentSignal {
        let c = self.current();
        PaymentSignal::ChargeRefunded {
            amount_refunded_cents: cents(self.refunded()),
            refunds: if embed {
                c.refunds
                    .iter()
                    .map(|r| match Self::refund_signal(r, false) {
                        PaymentSignal::Refund(seen) => seen,
                        _ => unreachable!(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub fn apply(&mut self, op: &Op) {
        let status = self.current().status;
        let captured = status == PiStatus::Succeeded;
        let open = self.current().disputes.iter().position(Dispute::open);
        let lost = self.current().disputes.iter().any(|d| d.status == "lost");
        // An intent not yet succeeded or canceled may still fail or succeed.
        let can_settle = !matches!(status, PiStatus::Succeeded | PiStatus::Canceled);
        match op {
            Op::Tick(s) => self.tick(i64::from(*s)),
            Op::Processing
                if matches!(
                    status,
                    PiStatus::Created | PiStatus::RequiresAction | PiStatus::Failed
                ) =>
            {
                self.current_mut().status = PiStatus::Processing;
                self.emit("payment_intent.processing", PaymentSignal::Processing, true);
            }
            Op::RequiresAction if matches!(status, PiStatus::Created | PiStatus::Failed) => {
                self.current_mut().status = PiStatus::RequiresAction;
                self.emit(
                    "payment_intent.requires_action",
                    PaymentSignal::RequiresAction,
                    true,
                );
            }
            Op::Fail if can_settle => {
                self.current_mut().status = PiStatus::Failed;
                self.emit("charge.failed", PaymentSignal::Unhandled, true);
                self.emit("payment_intent.payment_failed", PaymentSignal::Failed, true);
            }
            Op::Cancel
                if matches!(
                    status,
                    PiStatus::Created | PiStatus::RequiresAction | PiStatus::Failed
                ) =>
            {
                self.current_mut().status = PiStatus::Canceled;
                self.emit("payment_intent.canceled", PaymentSignal::Canceled, true);
            }
            Op::Succeed if can_settle => {
                self.current_mut().status = PiStatus::Succeeded;
                self.emit("payment_intent.succeeded", PaymentSignal::Succeeded, true);
                self.emit("charge.succeeded", PaymentSignal::Unhandled, true);
            }
            Op::Rebind
                if !self.cancelled && matches!(status, PiStatus::Failed | PiStatus::Canceled) =>
            {
                self.tick(1);
                self.bind();
            }
            Op::LateSucceedOld => {
                let last = self.intents.len() - 1;
                let Some(old) = self.intents[..last]
                    .iter()
                    .position(|i| i.status == PiStatus::Failed)
                else {
                    return;
                };
                self.intents[old].status = PiStatus::Succeeded;
                let pi = self.intents[old].pi.clone();
                let id = self.emit_for(
                    &pi,
                    "payment_intent.succeeded",
                    PaymentSignal::Succeeded,
                    true,
                );
                self.effects
                    .insert((EffectKind::RefundRequired, Cause::Stripe(id)));
            }
            Op::Refund {
                quarters,
                pending,
                style,
            } if captured && !lost && self.refundable() > 0 => {
                // No refund of a charge under a real dispute (Stripe refuses);
                // an inquiry may be resolved by one.
                if open.is_some_and(|i| !self.current().disputes[i].inquiry()) {
                    return;
                }
                let left = self.refundable();
                let amount = (left * i64::from(*quarters) / 4).max(1);
                let refund = Refund {
                    id: self.next_id("re"),
                    amount,
                    status: if *pending {
                        RStatus::Pending
                    } else {
                        RStatus::Succeeded
                    },
                };
                self.current_mut().refunds.push(refund.clone());
                let created = Self::refund_signal(&refund, false);
                match style {
                    0 => {
                        self.emit("refund.created", created, false);
                        let cr = self.charge_refunded(false);
                        self.emit("charge.refunded", cr, true);
                    }
                    1 => {
                        let cr = self.charge_refunded(false);
                        self.emit("charge.refunded", cr, true);
                        self.emit("refund.created", created, false);
                    }
                    2 => {
                        let cr = self.charge_refunded(true);
                        self.emit("charge.refunded", cr, true);
                    }
                    _ => {
                        // Only the charge's cumulative total tells of it.
                        let cr = self.charge_refunded(false);
                        self.emit("charge.refunded", cr, true);
                    }
                }
            }
            Op::SettleRefund { pick, to, style } => {
                let c = self.current();
                let candidates: Vec<usize> = (0..c.refunds.len())
                    .filter(|i| {
                        let r = &c.refunds[*i];
                        match to {
                            0 | 2 => r.status == RStatus::Pending,
                            _ => r.status.counts(),
                        }
                    })
                    .collect();
                if candidates.is_empty() {
                    return;
                }
                let i = candidates[*pick as usize % candidates.len()];
                let next = match to {
                    0 => RStatus::Succeeded,
                    1 => RStatus::Failed,
                    _ => RStatus::Canceled,
                };
                self.current_mut().refunds[i].status = next;
                let r = self.current().refunds[i].clone();
                match (next, style) {
                    (RStatus::Failed, 0) => {
                        self.emit("refund.failed", Self::refund_signal(&r, true), false)
                    }
                    (_, 1) => self.emit(
                        "charge.refund.updated",
                        Self::refund_signal(&r, false),
                        false,
                    ),
                    _ => self.emit("refund.updated", Self::refund_signal(&r, false), false),
                };
            }
            Op::OpenDispute { inquiry } if captured && open.is_none() && !lost => {
                if !inquiry && self.refundable() == 0 {
                    return;
                }
                let d = Dispute {
                    id: self.next_id("du"),
                    status: if *inquiry {
                        "warning_needs_response".into()
                    } else {
                        "needs_response".into()
                    },
                };
                self.current_mut().disputes.push(d.clone());
                let seen = self.dispute_seen(&d);
                self.emit(
                    "charge.dispute.created",
                    PaymentSignal::DisputeOpened(seen),
                    false,
                );
                if !inquiry {
                    self.emit(
                        "charge.dispute.funds_withdrawn",
                        PaymentSignal::Unhandled,
                        false,
                    );
                    // A refund still pending fails: charge_for_pending_refund_disputed.
                    let pending: Vec<usize> = (0..self.current().refunds.len())
                        .filter(|i| self.current().refunds[*i].status == RStatus::Pending)
                        .collect();
                    for i in pending {
                        self.current_mut().refunds[i].status = RStatus::Failed;
                        let r = self.current().refunds[i].clone();
                        self.emit("refund.failed", Self::refund_signal(&r, true), false);
                    }
                }
            }
            Op::ReviewDispute => {
                let Some(i) = open else { return };
                let d = &mut self.current_mut().disputes[i];
                d.status = if d.inquiry() {
                    "warning_under_review".into()
                } else {
                    "under_review".into()
                };
                self.emit("charge.dispute.updated", PaymentSignal::Unhandled, false);
            }
            Op::CloseDispute { outcome } => {
                let Some(i) = open else { return };
                let inquiry = self.current().disputes[i].inquiry();
                let status = match (outcome, inquiry) {
                    (0, true) => "warning_closed",
                    (0, false) => "won",
                    (1, true) => "warning_closed",
                    (1, false) => "lost",
                    (2, _) => "prevented",
                    _ => "some_status_stripe_adds_later",
                };
                self.current_mut().disputes[i].status = status.into();
                let d = self.current().disputes[i].clone();
                if status == "won" {
                    self.emit(
                        "charge.dispute.funds_reinstated",
                        PaymentSignal::Unhandled,
                        false,
                    );
                }
                let seen = self.dispute_seen(&d);
                self.emit(
                    "charge.dispute.closed",
                    PaymentSignal::DisputeClosed(seen),
                    false,
                );
            }
            Op::CancelBooking if !self.cancelled => {
                self.cancelled = true;
                self.tick(1);
                self.items
                    .push(Item::Own(Event::BookingCancelled(decided())));
                self.effects
                    .insert((EffectKind::BookingCancelled, Cause::Cancellation));
                // Held money at the cancellation must go back.
                self.held = false;
                self.observe(Cause::Cancellation);
                self.tick(1);
            }
            Op::Noise => {
                self.emit(
                    "checkout.session.completed",
                    PaymentSignal::Unhandled,
                    false,
                );
            }
            _ => {}
        }
    }
}

fn decided() -> BookingDecided {
    BookingDecided {
        booking_id: "b1".into(),
        trip_id: "t1".into(),
        by_user_id: "u1".into(),
    }
}

/// A delivery: our own events in the order we decided them; each Stripe
/// event at any point after the decision it followed (late, reordered),
/// some twice. `keys` drive the placement.
pub fn deliver(items: &[Item], keys: &[u32], dups: &[usize]) -> Vec<Recorded> {
    // Each Stripe item's window of slots (slot k = after k of our events):
    // from the decision it followed to the decision that needed it (a new
    // intent is bound only once the failure or cancellation of the last one
    // was known).
    let mut own: Vec<&Item> = Vec::new();
    let mut stripe: Vec<(usize, usize, u32, &Item)> = Vec::new();
    let mut last_end: std::collections::HashMap<String, usize> = Default::default();
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::Own(Event::PaymentIntentBound(b)) if b.attempt > 1 => {
                let previous = format!("pi_{}", b.attempt - 1);
                if let Some(j) = last_end.get(&previous) {
                    stripe[*j].1 = own.len();
                }
                own.push(item);
            }
            Item::Own(_) => own.push(item),
            Item::Stripe(f) => {
                let key = keys.get(i % keys.len().max(1)).copied().unwrap_or(0);
                if matches!(f.signal, PaymentSignal::Failed | PaymentSignal::Canceled) {
                    if let Some(pi) = &f.payment_intent_id {
                        last_end.insert(pi.clone(), stripe.len());
                    }
                }
                stripe.push((own.len(), usize::MAX, key, item));
            }
        }
    }
    for d in dups {
        if !stripe.is_empty() {
            // A duplicate is a redelivery: any time after the first.
            let (release, _, key, item) = stripe[d % stripe.len()];
            stripe.push((
                release,
                usize::MAX,
                key.wrapping_mul(31).wrapping_add(7),
                item,
            ));
        }
    }
    let mut placed: Vec<(usize, u32, &Item)> = stripe
        .into_iter()
        .map(|(release, deadline, key, item)| {
            let last = deadline.min(own.len());
            (release + (key as usize % (last + 1 - release)), key, item)
        })
        .collect();
    placed.sort_by_key(|(slot, key, _)| (*slot, *key));
    let mut order: Vec<&Item> = Vec::new();
    let mut next = placed.into_iter().peekable();
    for k in 0..=own.len() {
        while let Some((_, _, item)) = next.next_if(|(slot, _, _)| *slot == k) {
            order.push(item);
        }
        if let Some(o) = own.get(k) {
            order.push(o);
        }
    }
    order
        .into_iter()
        .enumerate()
        .map(|(i, item)| Recorded {
            seq: i as i64 + 1,
            recorded_at: at(i as i64),
            event: match item {
                Item::Own(e) => e.clone(),
                Item::Stripe(f) => Event::StripeEventReceived(f.clone()),
            },
        })
        .collect()
}

/// In the order things happened, each once.
pub fn in_order(items: &[Item]) -> Vec<Recorded> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| Recorded {
            seq: i as i64 + 1,
            recorded_at: at(i as i64),
            event: match item {
                Item::Own(e) => e.clone(),
                Item::Stripe(f) => Event::StripeEventReceived(f.clone()),
            },
        })
        .collect()
}

/// The fold's messages by (kind, cause), `payment_refunded` left out, and
/// whether there was one.
pub fn effects_of(fold: &BookingFold) -> (BTreeSet<(EffectKind, Cause)>, bool) {
    let mut set = BTreeSet::new();
    let mut refunded = false;
    for e in &fold.effects {
        match e.kind {
            EffectKind::PaymentRefunded => refunded = true,
            EffectKind::BookingAccepted => {}
            _ => {
                let cause = match &e.stripe_event_id {
                    Some(id) => Cause::Stripe(id.clone()),
                    None => Cause::Cancellation,
                };
                set.insert((e.kind, cause));
            }
        }
    }
    (set, refunded)
}

/// Messages whose cause does not depend on when we learned of it: all but
/// the `refund_required` of a cancellation (keyed by the later of the
/// cancellation and the event we learned the money from) and the failures
/// of superseded intents (messages of the time they were current, so only
/// those delivered before the next binding).
pub fn order_free(
    set: &BTreeSet<(EffectKind, Cause)>,
    current_pi_events: &BTreeSet<String>,
) -> BTreeSet<(EffectKind, Cause)> {
    set.iter()
        .filter(|(kind, cause)| match kind {
            EffectKind::RefundRequired => {
                matches!(cause, Cause::Stripe(id) if !current_pi_events.contains(id))
            }
            EffectKind::PaymentFailed => {
                matches!(cause, Cause::Stripe(id) if current_pi_events.contains(id))
            }
            _ => true,
        })
        .cloned()
        .collect()
}

pub fn current_pi_events(model: &Model) -> BTreeSet<String> {
    let pi = model.current_pi();
    model
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Stripe(f) if f.payment_intent_id.as_deref() == Some(pi.as_str()) => {
                Some(f.event_id.clone())
            }
            _ => None,
        })
        .collect()
}

pub fn cancellation_refunds(
    set: &BTreeSet<(EffectKind, Cause)>,
    current: &BTreeSet<String>,
) -> usize {
    set.iter()
        .filter(|(kind, cause)| {
            *kind == EffectKind::RefundRequired
                && match cause {
                    Cause::Cancellation => true,
                    Cause::Stripe(id) => current.contains(id),
                }
        })
        .count()
}

/// Checks one history against the model: in order exactly, and in every
/// given delivery (each prefix never downgrading).
pub fn check(model: &Model, deliveries: &[Vec<Recorded>]) -> Result<(), TestCaseError> {
    let want_status = model.expected_status();
    let want_refunded = model.expected_refunded();
    let current = current_pi_events(model);

    let natural = in_order(&model.items);
    let fold = fold_booking("b1", &natural);
    let b = fold.state.as_ref().unwrap();
    prop_assert_eq!(
        (b.payment.status, b.payment.amount_refunded_cents().get()),
        (want_status, want_refunded),
        "in order"
    );
    let (got, refunded) = effects_of(&fold);
    // In order, every message is the model's; only which of several events
    // stamped in one second made a cancelled booking hold money again may
    // differ (their order within the second is by id), not how often.
    let without_cancellation = |set: &BTreeSet<(EffectKind, Cause)>| -> BTreeSet<_> {
        set.iter()
            .filter(|(kind, cause)| {
                *kind != EffectKind::RefundRequired
                    || matches!(cause, Cause::Stripe(id) if !current.contains(id))
            })
            .cloned()
            .collect()
    };
    prop_assert_eq!(
        without_cancellation(&got),
        without_cancellation(&model.effects),
        "messages, in order"
    );
    prop_assert_eq!(
        cancellation_refunds(&got, &current),
        cancellation_refunds(&model.effects, &current),
        "refund_required after the cancellation, in order"
    );
    prop_assert_eq!(refunded, model.ever_refunded, "payment_refunded, in order");

    for (n, delivered) in deliveries.iter().enumerate() {
        let fold = fold_booking("b1", delivered);
        let b = fold.state.as_ref().unwrap();
        prop_assert_eq!(
            (
                b.payment.status,
                b.payment.amount_refunded_cents().get(),
                b.payment
                    .intent
                    .as_ref()
                    .map(|i| i.payment_intent_id.clone()),
            ),
            (want_status, want_refunded, Some(model.current_pi())),
            "delivery {}",
            n
        );
        let (got, refunded) = effects_of(&fold);
        prop_assert_eq!(
            order_free(&got, &current),
            order_free(&model.effects, &current),
            "messages, delivery {}",
            n
        );
        prop_assert_eq!(
            refunded,
            model.ever_refunded,
            "payment_refunded, delivery {}",
            n
        );
        // Money a cancelled booking holds at the end was asked back.
        if model.cancelled && model.held_now() {
            prop_assert!(
                cancellation_refunds(&got, &current) > 0,
                "refund_required missing"
            );
        }
        // No prefix downgrades, and refunds stay within the amount. Each
        // time the log shows a cancelled booking holding money again, a
        // `refund_required` caused since then exists: nobody is left untold.
        let mut settled = false;
        let mut told_after = 0i64;
        for k in 1..=delivered.len() {
            let prefix = fold_booking("b1", &delivered[..k]);
            let Some(b) = prefix.state.as_ref() else {
                continue;
            };
            let s = b.payment.status;
            prop_assert!(
                !settled || s.is_settled(),
                "prefix {} of delivery {}: {}",
                k,
                n,
                s
            );
            settled |= s.is_settled();
            prop_assert!(b.payment.amount_refunded_cents().get() <= AMOUNT);
            let cancelled = b.status == klubz_ledger::domain::BookingStatus::Cancelled;
            if cancelled && b.payment.held_cents().get() > 0 {
                prop_assert!(
                    prefix
                        .effects
                        .iter()
                        .any(|e| e.kind == EffectKind::RefundRequired
                            && e.payment_intent_id.as_deref() == Some(model.current_pi().as_str())
                            && e.caused_by_seq > told_after),
                    "prefix {} of delivery {}: holds {} untold",
                    k,
                    n,
                    b.payment.held_cents()
                );
            } else {
                told_after = k as i64;
            }
        }
    }
    Ok(())
}
