//! The money ledger of a booking's current payment intent.
//!
//! Every authentic event bound to the current intent records its money fact
//! here, whatever the transition table says of the status: that the intent
//! was captured, each refund by id with its latest state, the charge's
//! cumulative `amount_refunded`, each dispute by id with its latest state.
//! Every merge is commutative and idempotent (a refund's state only moves
//! forward, the cumulative figure is the latest one Stripe stamped and the
//! highest within a second, a closed dispute stays closed), so the same
//! facts in any order give the same ledger. The
//! status columns of the table are read off this ledger
//! (`docs/TRANSITIONS.md`, "How the status follows from the ledger").

use super::money::Cents;
use super::payment::{DisputeSeen, PaymentSignal, RefundSeen, RefundState};
use std::collections::BTreeMap;

/// A dispute's latest known state. Closed is terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisputePhase {
    Open { inquiry: bool },
    Closed { lost: bool },
}

impl DisputePhase {
    fn rank(&self) -> u8 {
        match self {
            Self::Open { inquiry: true } => 0,
            Self::Open { inquiry: false } => 1,
            Self::Closed { lost: false } => 2,
            Self::Closed { lost: true } => 3,
        }
    }
}

/// How much of the captured amount has gone back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundLevel {
    None,
    Partial,
    Full,
}

/// Where the booking's disputes stand, all of them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeSummary {
    /// No dispute, or every one closed without a loss.
    Clear,
    /// At least one open (an inquiry counts: the outcome is not known yet).
    Open,
    /// A dispute was lost: the money was charged back.
    Lost,
}

/// One refund: its amount, latest state, and when Stripe first reported it
/// failed or canceled (the earliest such `created`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefundEntry {
    amount: Cents,
    state: RefundState,
    failed_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyLedger {
    /// Stripe reported the intent succeeded (money captured).
    pub captured: bool,
    /// refund id → what we know of it.
    refunds: BTreeMap<String, RefundEntry>,
    /// The charge's cumulative `amount_refunded`: from the latest
    /// `charge.refunded` (by Stripe's `created`), the highest of those
    /// stamped in that second. An older, smaller total never lowers it.
    charge_refunded: Option<(i64, Cents)>,
    /// dispute id → latest phase.
    disputes: BTreeMap<String, DisputePhase>,
}

impl MoneyLedger {
    /// Records the money fact of one authentic event of the current intent,
    /// stamped `created` by Stripe.
    pub fn record(&mut self, signal: &PaymentSignal, created: i64) {
        match signal {
            PaymentSignal::Succeeded => self.captured = true,
            PaymentSignal::ChargeRefunded {
                amount_refunded_cents,
                refunds,
            } => {
                let seen = (created, *amount_refunded_cents);
                if self.charge_refunded.is_none_or(|known| seen > known) {
                    self.charge_refunded = Some(seen);
                }
                for r in refunds {
                    self.record_refund(r, created);
                }
            }
            PaymentSignal::Refund(r) => self.record_refund(r, created),
            PaymentSignal::DisputeOpened(d) | PaymentSignal::DisputeClosed(d) => {
                let phase = phase_of(signal, d);
                let entry = self
                    .disputes
                    .entry(d.dispute_id.clone())
                    .or_insert_with(|| phase.clone());
                if phase.rank() > entry.rank() {
                    *entry = phase;
                }
            }
            PaymentSignal::Processing
            | PaymentSignal::RequiresAction
            | PaymentSignal::Failed
            | PaymentSignal::Canceled
            | PaymentSignal::Unhandled => {}
        }
    }

    fn record_refund(&mut self, r: &RefundSeen, created: i64) {
        let entry = self
            .refunds
            .entry(r.refund_id.clone())
            .or_insert(RefundEntry {
                amount: r.amount_cents,
                state: r.state,
                failed_at: None,
            });
        // Forward only; a refund's amount never changes, the larger wins so
        // the merge stays order-independent even if a body disagrees.
        entry.amount = entry.amount.max(r.amount_cents);
        entry.state = entry.state.max(r.state);
        if !r.state.is_active() {
            entry.failed_at = Some(entry.failed_at.map_or(created, |t| t.min(created)));
        }
    }

    /// The refunded total, at most `captured_amount`. The per-refund sum of
    /// refunds still pending or succeeded, or the charge's own cumulative
    /// figure less the refunds that failed at or after it (Stripe lowers
    /// `amount_refunded` when a refund fails), whichever is larger: each
    /// source may have missed a refund the other saw.
    pub fn refunded(&self, captured_amount: Cents) -> Cents {
        let active = Cents::sum(
            self.refunds
                .values()
                .filter(|r| r.state.is_active())
                .map(|r| r.amount),
        );
        let by_charge = match self.charge_refunded {
            None => Cents::ZERO,
            Some((at, total)) => {
                let failed_since = Cents::sum(
                    self.refunds
                        .values()
                        .filter(|r| r.failed_at.is_some_and(|t| t >= at))
                        .map(|r| r.amount),
                );
                total.saturating_sub(failed_since)
            }
        };
        active.max(by_charge).min(captured_amount)
    }

    pub fn refund_level(&self, captured_amount: Cents) -> RefundLevel {
        let refunded = self.refunded(captured_amount);
        if refunded == Cents::ZERO {
            RefundLevel::None
        } else if refunded >= captured_amount {
            RefundLevel::Full
        } else {
            RefundLevel::Partial
        }
    }

    pub fn disputes(&self) -> DisputeSummary {
        if self
            .disputes
            .values()
            .any(|p| *p == DisputePhase::Closed { lost: true })
        {
            DisputeSummary::Lost
        } else if self
            .disputes
            .values()
            .any(|p| matches!(p, DisputePhase::Open { .. }))
        {
            DisputeSummary::Open
        } else {
            DisputeSummary::Clear
        }
    }

    /// Money the booking holds: captured, not charged back, not refunded.
    pub fn held(&self, captured_amount: Cents) -> Cents {
        if !self.captured || self.disputes() == DisputeSummary::Lost {
            Cents::ZERO
        } else {
            captured_amount.saturating_sub(self.refunded(captured_amount))
        }
    }
}

fn phase_of(signal: &PaymentSignal, d: &DisputeSeen) -> DisputePhase {
    match signal {
        PaymentSignal::DisputeClosed(_) => DisputePhase::Closed { lost: d.is_lost() },
        _ => DisputePhase::Open {
            inquiry: d.is_inquiry(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: i64) -> Cents {
        Cents::new(v).unwrap_or_default()
    }

    fn refund(id: &str, amount: i64, state: RefundState) -> PaymentSignal {
        PaymentSignal::Refund(RefundSeen {
            refund_id: id.into(),
            amount_cents: c(amount),
            state,
            currency: None,
        })
    }

    fn charge_refunded(total: i64) -> PaymentSignal {
        PaymentSignal::ChargeRefunded {
            amount_refunded_cents: c(total),
            refunds: vec![],
        }
    }

    #[test]
    fn a_failed_refund_does_not_come_back_and_gives_its_amount_back() {
        let facts = [
            refund("re_1", 1000, RefundState::Pending),
            charge_refunded(1000),
            refund("re_1", 1000, RefundState::Failed),
        ];
        // Every order gives the same ledger.
        let orders: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            let mut l = MoneyLedger::default();
            for i in order {
                l.record(&facts[i], i as i64);
            }
            assert_eq!(l.refunded(c(1000)), Cents::ZERO, "{order:?}");
        }
    }

    #[test]
    fn cumulative_totals_in_one_second_are_a_high_water_mark() {
        let mut l = MoneyLedger::default();
        l.record(&charge_refunded(800), 7);
        l.record(&charge_refunded(300), 7);
        assert_eq!(l.refunded(c(1000)), c(800));
        assert_eq!(l.refund_level(c(1000)), RefundLevel::Partial);
        l.record(&charge_refunded(5000), 7);
        assert_eq!(
            l.refunded(c(1000)),
            c(1000),
            "capped at the captured amount"
        );
    }

    #[test]
    fn a_later_total_after_a_failed_refund_is_believed() {
        // re_1 500 refunded (total 500), re_1 fails (Stripe lowers the
        // total), re_2 300 refunded (total 300): only totals were seen of re_2.
        let mut l = MoneyLedger::default();
        let facts = [
            (charge_refunded(500), 1),
            (refund("re_1", 500, RefundState::Failed), 2),
            (charge_refunded(300), 3),
        ];
        for (f, t) in facts.iter().rev() {
            l.record(f, *t);
        }
        assert_eq!(l.refunded(c(1000)), c(300));
    }

    #[test]
    fn closed_disputes_stay_closed_and_only_lost_charges_back() {
        let open = |status: &str| {
            PaymentSignal::DisputeOpened(DisputeSeen {
                dispute_id: "du_1".into(),
                status: status.into(),
                amount_cents: None,
                currency: None,
            })
        };
        let closed = |status: &str| {
            PaymentSignal::DisputeClosed(DisputeSeen {
                dispute_id: "du_1".into(),
                status: status.into(),
                amount_cents: None,
                currency: None,
            })
        };
        let mut l = MoneyLedger::default();
        l.record(&closed("prevented"), 2);
        l.record(&open("needs_response"), 1);
        assert_eq!(l.disputes(), DisputeSummary::Clear);
        let mut l = MoneyLedger::default();
        l.record(&open("warning_needs_response"), 1);
        assert_eq!(l.disputes(), DisputeSummary::Open);
        l.record(&closed("lost"), 2);
        assert_eq!(l.disputes(), DisputeSummary::Lost);
    }
}
