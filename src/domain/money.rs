//! Money: integer minor units and lower-case ISO currency codes.
//!
//! Amounts are never floating point and never negative: a [`Cents`] can only
//! be built through [`Cents::new`] (or arithmetic that checks), so every
//! amount in the domain is already valid. The fare of a booking is computed
//! in one place, [`fare`], under documented ceilings.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The highest price per seat a trip may ask, in minor units: 10 000.00 of
/// the currency. With [`crate::domain::decide::MAX_SEATS`] passengers the
/// largest fare is 64 000 000, below Stripe's per-charge ceiling of
/// 99 999 999 minor units, so every fare we compute is one Stripe can charge.
pub const MAX_PRICE_PER_SEAT_CENTS: i64 = 1_000_000;

/// An amount in minor units (cents). Never negative; arithmetic is checked.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Cents(i64);

/// An amount that cannot be a [`Cents`]: negative, or arithmetic that
/// overflowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative, got {0}")]
    Negative(i64),
    #[error("amount overflows")]
    Overflow,
    #[error("{field} must be between {min} and {max}, got {got}")]
    OutOfRange {
        field: &'static str,
        min: i64,
        max: i64,
        got: i64,
    },
}

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub fn new(minor_units: i64) -> Result<Self, MoneyError> {
        if minor_units < 0 {
            Err(MoneyError::Negative(minor_units))
        } else {
            Ok(Self(minor_units))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    /// `self - other`, or `None` when that would be negative.
    pub fn checked_sub(self, other: Cents) -> Option<Cents> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Cents)
    }

    /// `self - other`, floored at zero.
    pub fn saturating_sub(self, other: Cents) -> Cents {
        Cents(self.0.saturating_sub(other.0).max(0))
    }

    pub fn checked_mul(self, factor: u32) -> Option<Cents> {
        self.0.checked_mul(i64::from(factor)).map(Cents)
    }

    /// Sums amounts, saturating at `i64::MAX` (a sum of Stripe amounts never
    /// gets there; saturation keeps a forged body from wrapping around).
    pub fn sum(items: impl IntoIterator<Item = Cents>) -> Cents {
        Cents(
            items
                .into_iter()
                .fold(0i64, |acc, c| acc.saturating_add(c.0)),
        )
    }
}

impl TryFrom<i64> for Cents {
    type Error = MoneyError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Cents> for i64 {
    fn from(value: Cents) -> Self {
        value.0
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Checks a price per seat against the ceiling.
pub fn price_per_seat(minor_units: i64) -> Result<Cents, MoneyError> {
    if !(1..=MAX_PRICE_PER_SEAT_CENTS).contains(&minor_units) {
        return Err(MoneyError::OutOfRange {
            field: "pricePerSeatCents",
            min: 1,
            max: MAX_PRICE_PER_SEAT_CENTS,
            got: minor_units,
        });
    }
    Cents::new(minor_units)
}

/// What a booking costs: price per seat × passengers. The one place a fare
/// is computed (decisions, the intent endpoint and the booking view use it).
pub fn fare(price_per_seat: Cents, passengers: u32) -> Result<Cents, MoneyError> {
    price_per_seat
        .checked_mul(passengers)
        .ok_or(MoneyError::Overflow)
}

/// A lower-case three-letter ISO 4217 code such as `zar` or `usd`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Accepts exactly three ASCII letters; upper case is folded to lower case
    /// because Stripe and some clients disagree on case.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(format!(
                "currency must be a three-letter ISO code, got {raw:?}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        assert_eq!(Currency::parse("ZAR").map(|c| c.0), Ok("zar".to_string()));
    }

    #[test]
    fn rejects_bad_codes() {
        for bad in ["", "za", "zarr", "z4r", "€€€"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cents_are_never_negative() {
        assert_eq!(Cents::new(-1), Err(MoneyError::Negative(-1)));
        assert!(serde_json::from_str::<Cents>("-5").is_err());
        assert_eq!(serde_json::from_str::<Cents>("5").ok(), Some(Cents(5)));
        assert_eq!(Cents(3).checked_sub(Cents(5)), None);
        assert_eq!(Cents(3).saturating_sub(Cents(5)), Cents::ZERO);
        assert_eq!(Cents(i64::MAX).checked_add(Cents(1)), None);
    }

    #[test]
    fn fares_are_checked_and_capped() {
        let price = price_per_seat(1500).unwrap_or_default();
        assert_eq!(fare(price, 3), Ok(Cents(4500)));
        assert!(price_per_seat(0).is_err());
        assert!(price_per_seat(MAX_PRICE_PER_SEAT_CENTS + 1).is_err());
        assert_eq!(fare(Cents(i64::MAX), 2), Err(MoneyError::Overflow));
        let max = price_per_seat(MAX_PRICE_PER_SEAT_CENTS).unwrap_or_default();
        assert!(fare(max, crate::domain::decide::MAX_SEATS).is_ok_and(|f| f.get() < 99_999_999));
    }
}
