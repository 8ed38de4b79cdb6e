//! The transition table of DESIGN.md §3: (payment status, payment input) →
//! new status | no-op | reject. One constant, total by construction (a 2-D
//! array over every status and every input), rendered into
//! `docs/TRANSITIONS.md` by [`render_markdown`].

use super::status::PaymentStatus;
use std::fmt::Write as _;

/// The columns of the table: what an event means for payment state once the
/// fold has classified it (refund amounts resolved into partial / full, a
/// closed dispute into won / lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentInput {
    /// A payment intent bound to the booking (our `PaymentIntentBound`).
    Bound,
    /// A bound intent on which Stripe reports a success: captured money
    /// outranks whatever the booking's other intents said, so it is taken
    /// from every status that is not settled yet (invariant 5).
    BoundSucceeded,
    Processing,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
    /// A refund that leaves part of the bound amount unrefunded.
    RefundPartial,
    /// A refund that brings the refunded total to the bound amount.
    RefundFull,
    /// A refund failed or was canceled, and nothing stays refunded.
    RefundReversedNoneLeft,
    /// A refund failed or was canceled, and some other refund remains.
    RefundReversedSomeLeft,
    DisputeOpened,
    /// Dispute closed `won` / `warning_closed`, nothing refunded.
    DisputeWonNoRefund,
    /// Dispute closed `won` / `warning_closed`, part of it refunded earlier.
    DisputeWonPartRefund,
    DisputeLost,
}

impl PaymentInput {
    pub const ALL: [PaymentInput; 15] = [
        Self::Bound,
        Self::BoundSucceeded,
        Self::Processing,
        Self::RequiresAction,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
        Self::RefundPartial,
        Self::RefundFull,
        Self::RefundReversedNoneLeft,
        Self::RefundReversedSomeLeft,
        Self::DisputeOpened,
        Self::DisputeWonNoRefund,
        Self::DisputeWonPartRefund,
        Self::DisputeLost,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Bound => "bound (new intent)",
            Self::BoundSucceeded => "bound (intent that succeeded)",
            Self::Processing => "processing",
            Self::RequiresAction => "requires_action",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::RefundPartial => "refund (partial)",
            Self::RefundFull => "refund (full)",
            Self::RefundReversedNoneLeft => "refund reversed (none left)",
            Self::RefundReversedSomeLeft => "refund reversed (some left)",
            Self::DisputeOpened => "dispute opened",
            Self::DisputeWonNoRefund => "dispute won (no refund)",
            Self::DisputeWonPartRefund => "dispute won (part refunded)",
            Self::DisputeLost => "dispute lost",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|i| *i == self).unwrap_or(0)
    }
}

/// What the table says for one (status, input) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    To(PaymentStatus),
    Noop,
    Reject,
}

use PaymentStatus::{
    Canceled as Cn, ChargedBack as Cb, Disputed as Di, Failed as Fa, Paid as Pd,
    PartiallyRefunded as Pr, Pending as Pe, Processing as Ps, Refunded as Rf,
};
const NO: Option<PaymentStatus> = None;

/// Rows follow [`PaymentStatus::ALL`], columns [`PaymentInput::ALL`]:
/// bound, bound succeeded, processing, requires_action, succeeded, failed,
/// canceled, refund partial, refund full, reversed none left, reversed some
/// left, dispute opened, won no refund, won part refunded, lost.
/// `None` is a rejection; a cell equal to its row is a no-op.
///
/// Two cells go beyond DESIGN.md's intended shape, both so that no late or
/// reordered event can undo a payment (invariant 5 outranks the shape):
/// `canceled` + succeeded → paid (Stripe never succeeds a canceled intent;
/// if it ever says both, the captured money wins), and the
/// "bound (intent that succeeded)" column.
#[rustfmt::skip]
const TABLE: [[Option<PaymentStatus>; 15]; 10] = [
    // unpaid
    [Some(Pe), Some(Pe), NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO],
    // pending
    [Some(Pe), Some(Pe), Some(Ps), Some(Pe), Some(Pd), Some(Fa), Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO],
    // processing
    [NO, Some(Pe), Some(Ps), Some(Pe), Some(Pd), Some(Fa), Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO],
    // failed
    [Some(Pe), Some(Pe), Some(Ps), Some(Pe), Some(Pd), Some(Fa), Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO],
    // canceled
    [Some(Pe), Some(Pe), NO, NO, Some(Pd), NO, Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO],
    // paid
    [NO, NO, NO, NO, Some(Pd), NO, NO, Some(Pr), Some(Rf), Some(Pd), NO, Some(Di), NO, NO, NO],
    // partially_refunded
    [NO, NO, NO, NO, NO, NO, NO, Some(Pr), Some(Rf), Some(Pd), Some(Pr), Some(Di), NO, NO, NO],
    // refunded
    [NO, NO, NO, NO, NO, NO, NO, NO, Some(Rf), Some(Pd), Some(Pr), NO, NO, NO, NO],
    // disputed
    [NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, Some(Di), Some(Pd), Some(Pr), Some(Cb)],
    // charged_back
    [NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO],
];

fn status_index(status: PaymentStatus) -> usize {
    PaymentStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

/// Looks one pair up. Total: every status and input has a cell.
pub fn transition(from: PaymentStatus, input: PaymentInput) -> Transition {
    match TABLE[status_index(from)][input.index()] {
        None => Transition::Reject,
        Some(to) if to == from => Transition::Noop,
        Some(to) => Transition::To(to),
    }
}

/// The table as a Markdown document. `docs/TRANSITIONS.md` is this text; a
/// test fails when the two differ.
pub fn render_markdown() -> String {
    let mut out = String::new();
    out.push_str("# Payment status transition table\n\n");
    out.push_str(
        "Generated from `src/domain/table.rs` by `render_markdown()`; the test \
         `domain::table::tests::rendered_doc_is_current` fails when this file is stale \
         (regenerate with `UPDATE_DOCS=1 cargo test --lib rendered_doc`).\n\n",
    );
    out.push_str(
        "Rows: the booking's current payment status. Columns: the event, as the fold \
         classifies it. A status is the new status; `no-op` keeps the status (a refund \
         may still change the refunded amount); `—` rejects the event (stored, outcome \
         `rejected`, reason `invalid_transition`, state unchanged). `pending*`: a new \
         intent is bound only when none is current or the current one failed or was \
         canceled; a second intent while one is pending is rejected (`intent_pending`). \
         \"bound (intent that succeeded)\": an intent on which Stripe reports a success \
         takes over from any status that is not settled, and `canceled` + succeeded is \
         `paid`: captured money always wins, so no late or reordered event can undo a \
         payment (invariant 5).\n\n",
    );
    out.push_str("| from |");
    for input in PaymentInput::ALL {
        let _ = write!(out, " {} |", input.label());
    }
    out.push_str("\n|---|");
    for _ in PaymentInput::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for from in PaymentStatus::ALL {
        let _ = write!(out, "| {} |", from.as_str());
        for input in PaymentInput::ALL {
            let cell = match (transition(from, input), input) {
                (Transition::Reject, _) => "—".to_string(),
                (Transition::Noop, PaymentInput::Bound) => "pending*".to_string(),
                (Transition::Noop, _) => "no-op".to_string(),
                (Transition::To(to), PaymentInput::Bound) if from != PaymentStatus::Unpaid => {
                    format!("{to}*")
                }
                (Transition::To(to), _) => to.to_string(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_total_and_dimensions_match() {
        assert_eq!(TABLE.len(), PaymentStatus::ALL.len());
        for row in TABLE {
            assert_eq!(row.len(), PaymentInput::ALL.len());
        }
        // Every pair answers, and an answer's target is a real status.
        for from in PaymentStatus::ALL {
            for input in PaymentInput::ALL {
                if let Transition::To(to) = transition(from, input) {
                    assert_ne!(to, from, "a change must change the status");
                }
            }
        }
    }

    #[test]
    fn no_settled_status_goes_back_to_an_unpaid_like_status() {
        for from in PaymentStatus::ALL.into_iter().filter(|s| s.is_settled()) {
            for input in PaymentInput::ALL {
                if let Transition::To(to) = transition(from, input) {
                    assert!(to.is_settled(), "{from} --{input:?}--> {to} downgrades");
                }
            }
        }
    }

    #[test]
    fn charged_back_is_terminal() {
        for input in PaymentInput::ALL {
            assert_eq!(
                transition(PaymentStatus::ChargedBack, input),
                Transition::Reject
            );
        }
    }

    #[test]
    fn design_cells() {
        use PaymentInput as I;
        use PaymentStatus as S;
        let cases = [
            (S::Unpaid, I::Bound, Transition::To(S::Pending)),
            (S::Pending, I::Succeeded, Transition::To(S::Paid)),
            (S::Processing, I::Processing, Transition::Noop),
            (S::Paid, I::Failed, Transition::Reject),
            (S::Paid, I::Canceled, Transition::Reject),
            (
                S::Paid,
                I::RefundPartial,
                Transition::To(S::PartiallyRefunded),
            ),
            (
                S::Refunded,
                I::RefundReversedSomeLeft,
                Transition::To(S::PartiallyRefunded),
            ),
            (S::Disputed, I::DisputeLost, Transition::To(S::ChargedBack)),
            (S::Disputed, I::DisputeWonNoRefund, Transition::To(S::Paid)),
            (S::Canceled, I::Succeeded, Transition::To(S::Paid)),
            (S::Processing, I::BoundSucceeded, Transition::To(S::Pending)),
            (S::Processing, I::Bound, Transition::Reject),
            (S::Paid, I::BoundSucceeded, Transition::Reject),
        ];
        for (from, input, want) in cases {
            assert_eq!(transition(from, input), want, "{from} + {input:?}");
        }
    }

    #[test]
    fn rendered_doc_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/TRANSITIONS.md");
        let rendered = render_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &rendered).unwrap_or_else(|e| panic!("write {path}: {e}"));
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == rendered,
            "docs/TRANSITIONS.md is stale: run UPDATE_DOCS=1 cargo test --lib rendered_doc"
        );
    }
}
