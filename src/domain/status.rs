//! Booking and payment statuses: the vocabulary of the projections.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a booking (a `trip_participants` row) stands, independent of payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Requested,
    Accepted,
    Rejected,
    Cancelled,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Requested,
            Self::Accepted,
            Self::Rejected,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// The ten payment statuses of DESIGN.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Unpaid,
    Pending,
    Processing,
    Paid,
    Failed,
    Canceled,
    PartiallyRefunded,
    Refunded,
    Disputed,
    ChargedBack,
}

impl PaymentStatus {
    /// Every status, in the order the transition table lists them.
    pub const ALL: [PaymentStatus; 10] = [
        Self::Unpaid,
        Self::Pending,
        Self::Processing,
        Self::Failed,
        Self::Canceled,
        Self::Paid,
        Self::PartiallyRefunded,
        Self::Refunded,
        Self::Disputed,
        Self::ChargedBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unpaid => "unpaid",
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Disputed => "disputed",
            Self::ChargedBack => "charged_back",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Money has been captured at some point: the statuses that must never go
    /// back to an unpaid-like status (invariant 5, "no downgrade").
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Paid
                | Self::PartiallyRefunded
                | Self::Refunded
                | Self::Disputed
                | Self::ChargedBack
        )
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(
            BookingStatus::parse("accepted"),
            Some(BookingStatus::Accepted)
        );
        assert_eq!(BookingStatus::parse("paid"), None);
    }
}
