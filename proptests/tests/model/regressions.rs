//! The defects of issue 7 as named cases: each history is folded in order,
//! reversed and in every rotation of its Stripe events, and must give what
//! Stripe's objects say.

use super::{at, cents, zar, AMOUNT, T0};
use klubz_ledger::domain::events::{BookingDecided, BookingRequested, PaymentIntentBound};
use klubz_ledger::domain::fold::reason;
use klubz_ledger::domain::payment::{
    DisputeSeen, FactMetadata, PaymentSignal, RefundSeen, RefundState, StripeFact,
};
use klubz_ledger::domain::{
    fold_booking, BookingFold, EffectKind, Event, OutcomeKind, PaymentStatus, Recorded,
};

fn fact(id: &str, event_type: &str, created: i64, pi: &str, signal: PaymentSignal) -> StripeFact {
    let whole = matches!(
        signal,
        PaymentSignal::Processing
            | PaymentSignal::RequiresAction
            | PaymentSignal::Succeeded
            | PaymentSignal::Failed
            | PaymentSignal::Canceled
            | PaymentSignal::ChargeRefunded { .. }
    );
    StripeFact {
        event_id: id.into(),
        event_type: event_type.into(),
        created: T0 + created,
        livemode: false,
        expected_livemode: false,
        object_id: Some(pi.into()),
        payment_intent_id: Some(pi.into()),
        amount_cents: whole.then(|| cents(AMOUNT)),
        currency: Some(zar()),
        metadata: FactMetadata::default(),
        signal,
    }
}

fn succeeded(id: &str, t: i64, pi: &str) -> StripeFact {
    fact(
        id,
        "payment_intent.succeeded",
        t,
        pi,
        PaymentSignal::Succeeded,
    )
}

fn failed(id: &str, t: i64, pi: &str) -> StripeFact {
    fact(
        id,
        "payment_intent.payment_failed",
        t,
        pi,
        PaymentSignal::Failed,
    )
}

fn refund(id: &str, t: i64, re: &str, amount: i64, state: RefundState) -> StripeFact {
    let event_type = match state {
        RefundState::Failed => "refund.failed",
        RefundState::Pending => "refund.created",
        RefundState::Succeeded => "refund.updated",
    };
    fact(
        id,
        event_type,
        t,
        "pi_1",
        PaymentSignal::Refund(RefundSeen {
            refund_id: re.into(),
            amount_cents: cents(amount),
            state,
            currency: Some(zar()),
        }),
    )
}

fn refund_on(pi: &str, id: &str, t: i64, re: &str, amount: i64) -> StripeFact {
    let mut f = refund(id, t, re, amount, RefundState::Succeeded);
    f.payment_intent_id = Some(pi.into());
    f
}

fn charge_refunded(id: &str, t: i64, total: i64) -> StripeFact {
    fact(
        id,
        "charge.refunded",
        t,
        "pi_1",
        PaymentSignal::ChargeRefunded {
            amount_refunded_cents: cents(total),
            refunds: vec![],
        },
    )
}

fn dispute(id: &str, t: i64, status: &str, closed: bool) -> StripeFact {
    let seen = DisputeSeen {
        dispute_id: "du_1".into(),
        status: status.into(),
        amount_cents: Some(cents(AMOUNT)),
        currency: Some(zar()),
    };
    if closed {
        fact(
            id,
            "charge.dispute.closed",
            t,
            "pi_1",
            PaymentSignal::DisputeClosed(seen),
        )
    } else {
        fact(
            id,
            "charge.dispute.created",
            t,
            "pi_1",
            PaymentSignal::DisputeOpened(seen),
        )
    }
}

fn own(intents: &[&str]) -> Vec<Event> {
    let decided = BookingDecided {
        booking_id: "b1".into(),
        trip_id: "t1".into(),
        by_user_id: "d1".into(),
    };
    let mut events = vec![
        Event::BookingRequested(BookingRequested {
            booking_id: "b1".into(),
            trip_id: "t1".into(),
            user_id: "u1".into(),
            org_id: None,
            passengers: 2,
        }),
        Event::BookingAccepted(decided),
    ];
    for (i, pi) in intents.iter().enumerate() {
        events.push(Event::PaymentIntentBound(PaymentIntentBound {
            booking_id: "b1".into(),
            trip_id: "t1".into(),
            user_id: "u1".into(),
            payment_intent_id: (*pi).into(),
            amount_cents: cents(AMOUNT),
            currency: zar(),
            attempt: i as u32 + 1,
        }));
    }
    events
}

fn record(events: Vec<Event>) -> Vec<Recorded> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Recorded {
            seq: i as i64 + 1,
            recorded_at: at(i as i64),
            event,
        })
        .collect()
}

/// Our decisions first, then the Stripe events in `order`.
fn delivered(intents: &[&str], facts: &[StripeFact], order: &[usize]) -> Vec<Recorded> {
    let mut events = own(intents);
    events.extend(
        order
            .iter()
            .map(|i| Event::StripeEventReceived(facts[*i].clone())),
    );
    record(events)
}

/// Folds `facts` in order, reversed and in every rotation, and checks the
/// final status, refunded amount and current intent each time.
fn check_all_orders(
    intents: &[&str],
    facts: &[StripeFact],
    want: (PaymentStatus, i64),
) -> BookingFold {
    let n = facts.len();
    let mut orders: Vec<Vec<usize>> = vec![(0..n).collect(), (0..n).rev().collect()];
    for r in 1..n {
        orders.push((0..n).map(|i| (i + r) % n).collect());
        orders.push((0..n).rev().map(|i| (i + r) % n).collect());
    }
    let current = intents.last().copied();
    let mut first = None;
    for order in orders {
        let fold = fold_booking("b1", &delivered(intents, facts, &order));
        let b = fold.state.as_ref().unwrap();
        assert_eq!(
            (
                b.payment.status,
                b.payment.amount_refunded_cents().get(),
                b.payment
                    .intent
                    .as_ref()
                    .map(|i| i.payment_intent_id.as_str()),
            ),
            (want.0, want.1, current),
            "order {order:?}"
        );
        first.get_or_insert(fold);
    }
    first.unwrap()
}

#[test]
fn a_refund_during_an_inquiry_is_kept_when_the_inquiry_closes() {
    let facts = [
        succeeded("evt_s", 1, "pi_1"),
        dispute("evt_d1", 2, "warning_needs_response", false),
        refund("evt_r1", 3, "re_1", AMOUNT, RefundState::Succeeded),
        charge_refunded("evt_c1", 3, AMOUNT),
        dispute("evt_d2", 4, "warning_closed", true),
    ];
    check_all_orders(&["pi_1"], &facts, (PaymentStatus::Refunded, AMOUNT));
    // The same within one second: the refund folds before the inquiry.
    let same_second = [
        succeeded("evt_s", 1, "pi_1"),
        dispute("evt_d1", 2, "warning_needs_response", false),
        refund("evt_r1", 2, "re_1", AMOUNT, RefundState::Succeeded),
        charge_refunded("evt_c1", 2, AMOUNT),
    ];
    check_all_orders(&["pi_1"], &same_second, (PaymentStatus::Disputed, AMOUNT));
}

#[test]
fn a_pending_refund_that_fails_when_the_charge_is_disputed_gives_its_amount_back() {
    let facts = [
        succeeded("evt_s", 1, "pi_1"),
        refund("evt_r1", 2, "re_1", 500, RefundState::Pending),
        charge_refunded("evt_c1", 2, 500),
        dispute("evt_d1", 3, "needs_response", false),
        // failure_reason: charge_for_pending_refund_disputed
        refund("evt_r2", 4, "re_1", 500, RefundState::Failed),
        dispute("evt_d2", 6, "won", true),
    ];
    check_all_orders(&["pi_1"], &facts, (PaymentStatus::Paid, 0));
}

#[test]
fn a_full_pending_refund_failing_under_a_lost_dispute_is_a_chargeback() {
    let facts = [
        succeeded("evt_s", 1, "pi_1"),
        refund("evt_r1", 2, "re_1", AMOUNT, RefundState::Pending),
        charge_refunded("evt_c1", 2, AMOUNT),
        dispute("evt_d1", 3, "needs_response", false),
        refund("evt_r2", 4, "re_1", AMOUNT, RefundState::Failed),
        dispute("evt_d2", 6, "lost", true),
    ];
    check_all_orders(&["pi_1"], &facts, (PaymentStatus::ChargedBack, 0));
}

#[test]
fn cumulative_totals_in_one_second_never_lower_the_refunded_amount() {
    // The smaller, older total has the larger id: it folds last.
    let facts = [
        succeeded("evt_s", 1, "pi_1"),
        charge_refunded("evt_zz_older", 2, 500),
        charge_refunded("evt_aa_newer", 2, AMOUNT),
    ];
    check_all_orders(&["pi_1"], &facts, (PaymentStatus::Refunded, AMOUNT));
}

#[test]
fn every_closing_status_closes_a_dispute() {
    for status in ["prevented", "won", "warning_closed", "a_status_stripe_adds"] {
        let facts = [
            succeeded("evt_s", 1, "pi_1"),
            dispute("evt_d1", 2, "needs_response", false),
            dispute("evt_d2", 3, status, true),
        ];
        check_all_orders(&["pi_1"], &facts, (PaymentStatus::Paid, 0));
    }
}

#[test]
fn a_late_success_of_a_superseded_intent_never_takes_the_booking_over() {
    let facts = [
        failed("evt_f1", 1, "pi_1"),
        succeeded("evt_s2", 2, "pi_2"),
        refund_on("pi_2", "evt_r2", 3, "re_2", 500),
        succeeded("evt_s1_late", 4, "pi_1"),
    ];
    let fold = check_all_orders(
        &["pi_1", "pi_2"],
        &facts,
        (PaymentStatus::PartiallyRefunded, 500),
    );
    assert_eq!(
        fold.refund_required().into_iter().collect::<Vec<_>>(),
        ["pi_1"]
    );
    let late = fold
        .outcomes
        .iter()
        .find(|o| o.seq == 4 + 4)
        .map(|o| (o.outcome, o.reason.as_deref()));
    assert_eq!(
        late,
        Some((OutcomeKind::Excluded, Some(reason::SUPERSEDED_INTENT)))
    );
}

#[test]
fn a_refund_that_fails_after_a_cancellation_asks_for_the_refund_again() {
    let mut events = own(&["pi_1"]);
    events.push(Event::StripeEventReceived(succeeded("evt_s", 1, "pi_1")));
    events.push(Event::BookingCancelled(BookingDecided {
        booking_id: "b1".into(),
        trip_id: "t1".into(),
        by_user_id: "u1".into(),
    }));
    events.push(Event::StripeEventReceived(refund(
        "evt_r1",
        5,
        "re_1",
        AMOUNT,
        RefundState::Succeeded,
    )));
    events.push(Event::StripeEventReceived(refund(
        "evt_r2",
        9,
        "re_1",
        AMOUNT,
        RefundState::Failed,
    )));
    let fold = fold_booking("b1", &record(events));
    let keys: Vec<String> = fold
        .effects
        .iter()
        .filter(|e| e.kind == EffectKind::RefundRequired)
        .map(|e| e.key("b1"))
        .collect();
    // One for the cancellation (seq 5), one for the failed refund (seq 7).
    assert_eq!(keys, ["refund_required:b1:5", "refund_required:b1:7"]);
    let b = fold.state.unwrap();
    assert_eq!(
        (b.payment.status, b.payment.held_cents().get()),
        (PaymentStatus::Paid, AMOUNT)
    );
}

#[test]
fn a_refunded_booking_cancelled_afterwards_asks_for_nothing() {
    let mut events = own(&["pi_1"]);
    events.push(Event::StripeEventReceived(succeeded("evt_s", 1, "pi_1")));
    events.push(Event::StripeEventReceived(refund(
        "evt_r1",
        2,
        "re_1",
        AMOUNT,
        RefundState::Succeeded,
    )));
    events.push(Event::BookingCancelled(BookingDecided {
        booking_id: "b1".into(),
        trip_id: "t1".into(),
        by_user_id: "u1".into(),
    }));
    let fold = fold_booking("b1", &record(events));
    assert!(fold.refund_required().is_empty(), "{:?}", fold.effects);
}

#[test]
fn an_intent_event_without_amount_or_currency_is_not_applied() {
    for strip_currency in [false, true] {
        let mut s = succeeded("evt_s", 1, "pi_1");
        if strip_currency {
            s.currency = None;
        } else {
            s.amount_cents = None;
        }
        let fold = check_all_orders(&["pi_1"], &[s], (PaymentStatus::Pending, 0));
        let o = fold.outcomes.last().unwrap();
        assert_eq!(
            (o.outcome, o.reason.as_deref()),
            (OutcomeKind::Excluded, Some(reason::AMOUNT_MISMATCH))
        );
    }
}

#[test]
fn a_failed_refund_is_not_resurrected_by_its_late_creation() {
    let facts = [
        succeeded("evt_s", 1, "pi_1"),
        refund("evt_r1", 2, "re_1", 700, RefundState::Pending),
        refund("evt_r2", 3, "re_1", 700, RefundState::Failed),
        refund("evt_r3", 4, "re_2", 300, RefundState::Succeeded),
    ];
    check_all_orders(&["pi_1"], &facts, (PaymentStatus::PartiallyRefunded, 300));
}
