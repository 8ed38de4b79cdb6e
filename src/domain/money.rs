//! Money: integer minor units and lower-case ISO currency codes.
//!
//! Amounts are never floating point. A `Currency` can only be built through
//! [`Currency::parse`], so every value in the domain is already valid.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in minor units (cents). Signed so that arithmetic on differences
/// is natural; validation keeps stored amounts non-negative.
pub type Cents = i64;

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
}
