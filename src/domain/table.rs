//! The transition table of DESIGN.md §3: (payment status, payment input) →
//! new status | no-op | reject. One constant, total by construction (a 2-D
//! array over every status and every input), rendered into
//! `docs/TRANSITIONS.md` by [`render_markdown`].

use super::status::PaymentStatus;
use std::fmt::Write as _;

/// The columns of the table: what an event means for payment state once the
/// fold has recorded its money fact in the ledger and classified it (a
/// refund by the refunded total it leaves, a dispute by where all the
/// booking's disputes stand afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentInput {
    /// A payment intent bound to the booking (our `PaymentIntentBound`).
    /// Decisions consult this column; the fold takes every binding as the
    /// decision it was.
    Bound,
    Processing,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
    /// A refund fact after which part of the captured amount is refunded.
    RefundPartial,
    /// A refund fact after which all of it is refunded.
    RefundFull,
    /// A refund failed or was canceled, and nothing stays refunded.
    RefundReversedNoneLeft,
    /// A refund failed or was canceled, and some other refund remains.
    RefundReversedSomeLeft,
    /// A dispute fact after which a dispute (or inquiry) is open.
    DisputeOpened,
    /// Every dispute closed without a loss (won, warning_closed, prevented,
    /// any other status but lost), nothing refunded.
    DisputeWonNoRefund,
    /// Every dispute closed without a loss, part of the money refunded.
    DisputeWonPartRefund,
    /// Every dispute closed without a loss, all of it refunded (a refund
    /// may resolve an inquiry).
    DisputeWonFullRefund,
    DisputeLost,
}

impl PaymentInput {
    pub const ALL: [PaymentInput; 15] = [
        Self::Bound,
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
        Self::DisputeWonFullRefund,
        Self::DisputeLost,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Bound => "bound (new intent)",
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
            Self::DisputeWonFullRefund => "dispute won (all refunded)",
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
/// bound, processing, requires_action, succeeded, failed, canceled,
/// refund partial, refund full, reversed none left, reversed some left,
/// dispute opened, won no refund, won part refunded, won all refunded, lost.
/// `None` is a rejection (the status stays; the money fact is still in the
/// ledger); a cell equal to its row is a no-op.
///
/// Cells beyond DESIGN.md's intended shape, each so that the status always
/// says what the ledger holds (invariant 5 and "money facts are never
/// dropped"): `canceled` + succeeded → paid (captured money wins); a
/// refunded charge can still be disputed; every settled, undisputed row
/// reads refunds by the total they leave; a dispute closed without a loss
/// goes back to what the refunds say, and one closed lost is a chargeback
/// even when its opening was never delivered.
#[rustfmt::skip]
const TABLE: [[Option<PaymentStatus>; 15]; 10] = [
    // unpaid
    [Some(Pe), NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO],
    // pending
    [Some(Pe), Some(Ps), Some(Pe), Some(Pd), Some(Fa), Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO, NO],
    // processing
    [NO, Some(Ps), Some(Pe), Some(Pd), Some(Fa), Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO, NO],
    // failed
    [Some(Pe), Some(Ps), Some(Pe), Some(Pd), Some(Fa), Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO, NO],
    // canceled
    [Some(Pe), NO, NO, Some(Pd), NO, Some(Cn), NO, NO, NO, NO, NO, NO, NO, NO, NO],
    // paid
    [NO, NO, NO, Some(Pd), NO, NO, Some(Pr), Some(Rf), Some(Pd), Some(Pr), Some(Di), Some(Pd), Some(Pr), Some(Rf), Some(Cb)],
    // partially_refunded
    [NO, NO, NO, NO, NO, NO, Some(Pr), Some(Rf), Some(Pd), Some(Pr), Some(Di), Some(Pd), Some(Pr), Some(Rf), Some(Cb)],
    // refunded
    [NO, NO, NO, NO, NO, NO, Some(Pr), Some(Rf), Some(Pd), Some(Pr), Some(Di), Some(Pd), Some(Pr), Some(Rf), Some(Cb)],
    // disputed
    [NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, Some(Di), Some(Pd), Some(Pr), Some(Rf), Some(Cb)],
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

/// How the status follows from the ledger: the part of `docs/TRANSITIONS.md`
/// below the table.
const LEDGER_DOC: &str = "
## How the status follows from the ledger

Every authentic event bound to the booking's current intent records its money fact in
the booking's ledger (`src/domain/ledger.rs`) before the table is consulted, whatever
the cell says:

- **captured**: Stripe reported `payment_intent.succeeded` for the intent.
- **refunds**, by refund id, each with its latest state. A state only moves forward
  (pending/requires_action → succeeded → failed/canceled), so a late `refund.created`
  cannot bring a failed refund back. The refunds a `charge.refunded` body lists count as
  observations of those refunds too.
- **the charge's cumulative `amount_refunded`**: the latest `charge.refunded` by
  Stripe's `created`, and within one second the highest (a high-water mark), so a
  smaller, older total folded last cannot lower it. Each failure time of a refund is
  kept too.
- **disputes**, by dispute id, each with its latest phase: open (an inquiry,
  `warning_needs_response`/`warning_under_review`, or a dispute, `needs_response`/
  `under_review`), then closed. `charge.dispute.closed` always closes, whatever its
  status; only `lost` is a chargeback (`won`, `warning_closed`, `prevented` and any
  status Stripe adds leave the money here).

From the ledger, with *captured amount* = the bound amount of the current intent:

- **refunded** = the larger of (the sum of refunds pending or succeeded) and (the
  charge's cumulative figure less the refunds that failed or were canceled at or after
  it: Stripe lowers `amount_refunded` when a refund fails), never more than the
  captured amount. Each source may miss a refund the other saw; a failed refund gives
  its amount back in both.
- Before capture, the status is the intent's lifecycle through the table (pending,
  processing, failed, canceled).
- After capture: a lost dispute → `charged_back`; else an open dispute or inquiry →
  `disputed`; else refunded = 0 → `paid`, 0 < refunded < captured →
  `partially_refunded`, refunded = captured → `refunded`.

The money columns are read off the ledger after the event: a refund fact by the
refunded total it leaves (and whether the total went down), a dispute fact by where all
the booking's disputes stand. That is why the settled rows agree with the rules above
whatever order the facts arrive in, and why a rejected cell only keeps the status: a
refund during an open inquiry is recorded, and when the inquiry closes `warning_closed`
the booking is `refunded`.

Events of an earlier (superseded) intent never reach the ledger; events that fail a
guard (livemode, metadata, amount or currency — an intent or charge event without its
amount or currency fails it too, as does a refund or dispute in another currency or
for more than the bound amount) never reach it either.

## Side effects

Each message is keyed by (booking, type, causing event) and written with the
transition that caused it; a duplicate, a replay or a rebuild folds the same transition
and finds the key already written.

- `payment_succeeded`, `payment_failed`, `dispute_opened`, `dispute_closed`: the
  status moved into paid (from an unsettled status), into failed, into disputed, out
  of disputed (or straight to charged_back). A superseded intent's failures keep the
  messages of the time it was current (its events logged before the next binding).
- `payment_refunded`: the refunded total went up, whatever the status cell said (a
  refund during an inquiry is money back); `amountCents` is the new total.
- `refund_required`: a superseded intent succeeded (keyed by that event); or a
  cancelled booking holds captured money that is not refunded or charged back —
  decided by what the log held when the cancellation was recorded, then once more each
  time a later event makes it hold money again (a refund that failed after the
  cancellation's refund). `amountCents` is the amount held.
";

/// A new payment intent may be bound from this status (the "bound" column;
/// `pending` answers with the pending intent instead).
pub fn accepts_new_intent(status: PaymentStatus) -> bool {
    status != PaymentStatus::Pending
        && transition(status, PaymentInput::Bound) != Transition::Reject
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
         classifies it after recording its money fact in the ledger. A status is the new \
         status; `no-op` keeps the status (a refund may still change the refunded \
         amount); `—` means the status does not change: the event is stored, and its money \
         fact is still recorded in the ledger (outcome `rejected`, reason \
         `invalid_transition`, when nothing visible changed). `pending*`: a new intent is \
         bound only when none is current or the current one failed or was canceled; while \
         one is pending the intent endpoint returns it. The fold does not re-judge a \
         binding: the latest binding is the current intent, and the events of every \
         earlier intent are `excluded` / `superseded_intent` (one that succeeded produces \
         `refund_required`).\n\n",
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
    out.push_str(LEDGER_DOC);
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
            (S::Processing, I::Bound, Transition::Reject),
            (S::Paid, I::Bound, Transition::Reject),
            (S::Disputed, I::RefundFull, Transition::Reject),
            (
                S::Disputed,
                I::DisputeWonFullRefund,
                Transition::To(S::Refunded),
            ),
            (S::Refunded, I::DisputeOpened, Transition::To(S::Disputed)),
            (S::Paid, I::DisputeLost, Transition::To(S::ChargedBack)),
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
