//! Lenient parsing of a Stripe event body into a [`StripeFact`].
//!
//! Stripe adds fields and types over time and old API versions omit some
//! (2012 bodies have no `object`, no `api_version`, charges without a
//! payment intent). Only `id` and `type` are required; everything else is
//! read if present. The payment signal comes from the event **type** and the
//! fields that type defines, never from `data.object.status` (except for
//! refunds and closed disputes, whose status *is* the field that type defines).

use crate::domain::money::{Cents, Currency};
use crate::domain::payment::{
    DisputeSeen, FactMetadata, PaymentSignal, RefundSeen, RefundState, StripeFact,
};
use crate::domain::storable;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not JSON")]
    NotJson,
    #[error("event has no string `{0}`")]
    Missing(&'static str),
    /// A value no backend can store (a NUL in text, a time outside the
    /// years 0000–9999): refused, never stored altered (threat model).
    #[error("`{0}` holds a value the ledger cannot store")]
    Unstorable(&'static str),
}

/// Parses one event. `expected_livemode` is the engine's `STRIPE_LIVEMODE`,
/// recorded in the fact so the fold can judge it.
pub fn parse_event(body: &[u8], expected_livemode: bool) -> Result<StripeFact, ParseError> {
    let root: Value = serde_json::from_slice(body).map_err(|_| ParseError::NotJson)?;
    let event_id = str_field(&root, "id").ok_or(ParseError::Missing("id"))?;
    let event_type = str_field(&root, "type").ok_or(ParseError::Missing("type"))?;
    if event_id.is_empty() || event_type.is_empty() {
        return Err(ParseError::Missing(if event_id.is_empty() {
            "id"
        } else {
            "type"
        }));
    }
    let object = root.pointer("/data/object").cloned().unwrap_or(Value::Null);
    let object_kind = object_kind(&event_type);

    let object_id = str_field(&object, "id");
    let payment_intent_id = match object_kind {
        ObjectKind::PaymentIntent => object_id.clone(),
        _ => id_or_expanded(object.get("payment_intent")),
    };
    // The amount that must equal the binding: only an intent's or a charge's.
    let amount_cents = match object_kind {
        ObjectKind::PaymentIntent | ObjectKind::Charge => cents_field(&object, "amount"),
        _ => None,
    };
    let metadata = match object_kind {
        ObjectKind::PaymentIntent | ObjectKind::Charge => FactMetadata {
            booking_id: meta(&object, "bookingId"),
            trip_id: meta(&object, "tripId"),
            user_id: meta(&object, "userId"),
        },
        _ => FactMetadata::default(),
    };

    let created = root.get("created").and_then(Value::as_i64).unwrap_or(0);
    if !storable::unix_seconds(created) {
        return Err(ParseError::Unstorable("created"));
    }
    let fact = StripeFact {
        signal: signal(&event_type, &object),
        event_id,
        event_type,
        created,
        livemode: root
            .get("livemode")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        expected_livemode,
        object_id,
        payment_intent_id,
        amount_cents,
        currency: currency_field(&object),
        metadata,
    };
    // Every text the fact carries goes into columns (stream, key, bindings).
    if let Some(field) = unstorable_text(&fact) {
        return Err(ParseError::Unstorable(field));
    }
    Ok(fact)
}

/// The first of the fact's texts that holds a NUL.
fn unstorable_text(f: &StripeFact) -> Option<&'static str> {
    let bad = |s: &Option<String>| s.as_deref().is_some_and(|s| !storable::text(s));
    let signal_texts: Vec<&str> = match &f.signal {
        PaymentSignal::Refund(r) => vec![r.refund_id.as_str()],
        PaymentSignal::ChargeRefunded { refunds, .. } => {
            refunds.iter().map(|r| r.refund_id.as_str()).collect()
        }
        PaymentSignal::DisputeOpened(d) | PaymentSignal::DisputeClosed(d) => {
            vec![d.dispute_id.as_str(), d.status.as_str()]
        }
        _ => Vec::new(),
    };
    if !storable::text(&f.event_id) {
        Some("id")
    } else if !storable::text(&f.event_type) {
        Some("type")
    } else if bad(&f.object_id) {
        Some("data.object.id")
    } else if bad(&f.payment_intent_id) {
        Some("payment_intent")
    } else if bad(&f.metadata.booking_id) || bad(&f.metadata.trip_id) || bad(&f.metadata.user_id) {
        Some("metadata")
    } else if signal_texts.iter().any(|s| !storable::text(s)) {
        Some("data.object")
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    PaymentIntent,
    Charge,
    Refund,
    Dispute,
    Other,
}

/// The object a type carries, decided by the type (old bodies lack `object`).
fn object_kind(event_type: &str) -> ObjectKind {
    if event_type.starts_with("payment_intent.") {
        ObjectKind::PaymentIntent
    } else if event_type.starts_with("charge.dispute.") {
        ObjectKind::Dispute
    } else if event_type.starts_with("charge.refund.") || event_type.starts_with("refund.") {
        ObjectKind::Refund
    } else if event_type.starts_with("charge.") {
        ObjectKind::Charge
    } else {
        ObjectKind::Other
    }
}

fn signal(event_type: &str, object: &Value) -> PaymentSignal {
    match event_type {
        "payment_intent.processing" => PaymentSignal::Processing,
        "payment_intent.requires_action" => PaymentSignal::RequiresAction,
        "payment_intent.succeeded" => PaymentSignal::Succeeded,
        "payment_intent.payment_failed" => PaymentSignal::Failed,
        "payment_intent.canceled" => PaymentSignal::Canceled,
        "charge.refunded" => match cents_field(object, "amount_refunded") {
            Some(amount_refunded_cents) => PaymentSignal::ChargeRefunded {
                amount_refunded_cents,
                refunds: embedded_refunds(object),
            },
            None => PaymentSignal::Unhandled,
        },
        "refund.created" | "refund.updated" | "charge.refund.updated" | "refund.failed" => {
            match refund_seen(object, event_type == "refund.failed") {
                Some(seen) => PaymentSignal::Refund(seen),
                None => PaymentSignal::Unhandled,
            }
        }
        "charge.dispute.created" => match dispute_seen(object) {
            Some(seen) => PaymentSignal::DisputeOpened(seen),
            None => PaymentSignal::Unhandled,
        },
        // Closed means closed, whatever the status (won, lost,
        // warning_closed, prevented, or one Stripe adds later).
        "charge.dispute.closed" => match dispute_seen(object) {
            Some(seen) => PaymentSignal::DisputeClosed(seen),
            None => PaymentSignal::Unhandled,
        },
        _ => PaymentSignal::Unhandled,
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn int_field(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// A non-negative integer amount; a negative or non-integer one is absent.
fn cents_field(v: &Value, key: &str) -> Option<Cents> {
    int_field(v, key).and_then(|a| Cents::new(a).ok())
}

fn currency_field(v: &Value) -> Option<Currency> {
    str_field(v, "currency").and_then(|c| Currency::parse(&c).ok())
}

/// One refund object. `failed_by_type`: `refund.failed` is a failure by its
/// type, whatever the body says.
fn refund_seen(object: &Value, failed_by_type: bool) -> Option<RefundSeen> {
    let refund_id = str_field(object, "id")?;
    let amount_cents = cents_field(object, "amount")?;
    let state = if failed_by_type {
        RefundState::Failed
    } else {
        RefundState::from_stripe(str_field(object, "status").as_deref())
    };
    Some(RefundSeen {
        refund_id,
        amount_cents,
        state,
        currency: currency_field(object),
    })
}

/// The refunds a charge lists: `refunds.data` (a list object) or, in the
/// oldest bodies, a bare array.
fn embedded_refunds(charge: &Value) -> Vec<RefundSeen> {
    let list = match charge.get("refunds") {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Object(o)) => match o.get("data") {
            Some(Value::Array(items)) => items.as_slice(),
            _ => &[],
        },
        _ => &[],
    };
    list.iter().filter_map(|r| refund_seen(r, false)).collect()
}

fn dispute_seen(object: &Value) -> Option<DisputeSeen> {
    Some(DisputeSeen {
        dispute_id: str_field(object, "id")?,
        status: str_field(object, "status").unwrap_or_default(),
        amount_cents: cents_field(object, "amount"),
        currency: currency_field(object),
    })
}

/// Stripe fields like `payment_intent` are an id, or the object when expanded.
fn id_or_expanded(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn meta(object: &Value, key: &str) -> Option<String> {
    match object.get("metadata")?.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stripe-events");
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".json") {
                    out.push((name, std::fs::read(e.path()).unwrap_or_default()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_shared_sample_parses() {
        let samples = samples();
        assert!(samples.len() >= 28, "expected the shared Stripe samples");
        for (name, body) in samples {
            let fact = parse_event(&body, false);
            assert!(fact.is_ok(), "{name}: {fact:?}");
        }
    }

    #[test]
    fn status_comes_from_type_not_object_status() {
        for (name, body) in samples() {
            let Ok(fact) = parse_event(&body, false) else {
                continue;
            };
            let want = match fact.event_type.as_str() {
                "payment_intent.succeeded" => Some(PaymentSignal::Succeeded),
                "payment_intent.canceled" => Some(PaymentSignal::Canceled),
                "payment_intent.processing" => Some(PaymentSignal::Processing),
                "payment_intent.requires_action" => Some(PaymentSignal::RequiresAction),
                "payment_intent.payment_failed" => Some(PaymentSignal::Failed),
                _ => None,
            };
            if let Some(want) = want {
                assert_eq!(fact.signal, want, "{name}");
            }
            if name.contains("unhandled_type") {
                assert_eq!(fact.signal, PaymentSignal::Unhandled, "{name}");
            }
            if fact.event_type == "refund.failed" {
                assert!(
                    matches!(
                        &fact.signal,
                        PaymentSignal::Refund(r) if r.state == RefundState::Failed
                    ),
                    "{name}: refund.failed must reverse whatever the object status says"
                );
            }
        }
    }

    #[test]
    fn charges_bind_through_their_payment_intent() {
        let body = br#"{"id":"evt_1","type":"charge.refunded","created":5,"livemode":true,
            "data":{"object":{"id":"ch_1","payment_intent":{"id":"pi_9"},"amount":500,
            "currency":"ZAR","amount_refunded":200,"metadata":{"bookingId":7}}}}"#;
        let fact = parse_event(body, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fact.payment_intent_id.as_deref(), Some("pi_9"));
        assert_eq!(fact.amount_cents.map(Cents::get), Some(500));
        assert_eq!(fact.currency.as_ref().map(Currency::as_str), Some("zar"));
        assert_eq!(fact.metadata.booking_id.as_deref(), Some("7"));
        assert!(matches!(
            fact.signal,
            PaymentSignal::ChargeRefunded { amount_refunded_cents, .. }
                if amount_refunded_cents.get() == 200
        ));
    }

    #[test]
    fn every_closing_status_closes_and_only_lost_is_a_chargeback() {
        for (status, lost) in [
            ("won", false),
            ("lost", true),
            ("warning_closed", false),
            ("prevented", false),
            ("some_future_status", false),
        ] {
            let body = format!(
                r#"{{"id":"evt_1","type":"charge.dispute.closed","created":5,
                "data":{{"object":{{"id":"du_1","payment_intent":"pi_1","amount":500,
                "currency":"zar","status":"{status}"}}}}}}"#
            );
            let fact = parse_event(body.as_bytes(), false).unwrap_or_else(|e| panic!("{e}"));
            match fact.signal {
                PaymentSignal::DisputeClosed(d) => assert_eq!(d.is_lost(), lost, "{status}"),
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn refund_states_and_embedded_refunds() {
        let body = br#"{"id":"evt_2","type":"charge.refunded","created":5,
            "data":{"object":{"id":"ch_1","payment_intent":"pi_1","amount":500,"currency":"zar",
            "amount_refunded":300,"refunds":{"object":"list","data":[
              {"id":"re_1","amount":100,"status":"succeeded","currency":"zar"},
              {"id":"re_2","amount":200,"status":"pending"}]}}}}"#;
        let fact = parse_event(body, false).unwrap_or_else(|e| panic!("{e}"));
        let PaymentSignal::ChargeRefunded { refunds, .. } = fact.signal else {
            panic!("{:?}", fact.signal)
        };
        let states: Vec<_> = refunds
            .iter()
            .map(|r| (r.refund_id.as_str(), r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("re_1", RefundState::Succeeded),
                ("re_2", RefundState::Pending)
            ]
        );
        let negative = br#"{"id":"evt_3","type":"payment_intent.succeeded","created":5,
            "data":{"object":{"id":"pi_1","amount":-5,"currency":"zar"}}}"#;
        let fact = parse_event(negative, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fact.amount_cents, None, "a negative amount is no amount");
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert_eq!(parse_event(b"not json", false), Err(ParseError::NotJson));
        assert_eq!(
            parse_event(br#"{"type":"x"}"#, false),
            Err(ParseError::Missing("id"))
        );
        assert_eq!(
            parse_event(br#"{"id":"evt"}"#, false),
            Err(ParseError::Missing("type"))
        );
    }
}
