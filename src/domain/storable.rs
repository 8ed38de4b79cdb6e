//! What both backends can store, checked before anything is committed:
//! times in the years 0000–9999 (the RFC 3339 form SQLite keeps; PostgreSQL
//! stores a wider range, but one ledger must read the same on both), and
//! text without NUL (PostgreSQL's `text` cannot hold it). Pure.

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// The first and last storable years.
pub const YEARS: std::ops::RangeInclusive<i32> = 0..=9999;

pub fn time(t: &DateTime<Utc>) -> bool {
    YEARS.contains(&t.year())
}

/// Unix seconds (Stripe's `created`) that are a storable time.
pub fn unix_seconds(secs: i64) -> bool {
    Utc.timestamp_opt(secs, 0)
        .single()
        .is_some_and(|t| time(&t))
}

pub fn text(s: &str) -> bool {
    !s.contains('\0')
}

/// An event payload (JSON text) whose strings and keys hold no NUL. JSON
/// escapes NUL, so the payload itself is storable; the check is for the
/// columns and projections its strings are copied into.
pub fn json_text(payload: &str) -> bool {
    if !payload.contains("\\u0000") {
        return true;
    }
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => text(s),
            serde_json::Value::Array(items) => items.iter().all(walk),
            serde_json::Value::Object(map) => map.iter().all(|(k, v)| text(k) && walk(v)),
            _ => true,
        }
    }
    serde_json::from_str::<serde_json::Value>(payload).is_ok_and(|v| walk(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storable_range() {
        assert!(unix_seconds(0));
        assert!(unix_seconds(253_402_300_799)); // 9999-12-31T23:59:59Z
        assert!(!unix_seconds(253_402_300_800)); // 10000-01-01
        assert!(unix_seconds(-62_167_219_200)); // 0000-01-01
        assert!(!unix_seconds(-62_167_219_201));
        assert!(!unix_seconds(i64::MAX));
        assert!(!unix_seconds(i64::MIN));
        assert!(text("pi_1") && !text("pi_\u{0}1"));
        assert!(
            json_text(r#"{"a":"b\\u0000"}"#),
            "an escaped backslash, then u0000"
        );
        assert!(!json_text(r#"{"a":"b\u0000"}"#));
        assert!(!json_text(r#"{"a\u0000":1}"#));
    }
}
