//! Fuzzing, proptest-driven (cargo-fuzz needs a nightly toolchain this
//! machine and CI do not have): the parsers that see hostile bytes first,
//! fed arbitrary and grammar-shaped input. Each target asserts more than
//! "no panic": the cheap signature check never admits what verification
//! refuses; a parsed Stripe event holds only storable text and round-trips
//! through the log's encoding; a verified token's claims are storable; an
//! API body never gets a 5xx or an answer without the error envelope.
//! Failing inputs are kept by proptest in `proptest-regressions/` and
//! replayed first on every run. `docs/RELIABILITY.md` gives the command for
//! a longer run (`PROPTEST_CASES`).

use klubz_ledger::auth::{self, Role};
use klubz_ledger::domain::{storable, Event};
use klubz_ledger::stripe::{parse_event, signature};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        "(pi|ch|re|du|evt)_[a-zA-Z0-9\\x00']{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("amount".to_string()),
                    Just("currency".to_string()),
                    Just("payment_intent".to_string()),
                    Just("metadata".to_string()),
                    Just("status".to_string()),
                    Just("refunds".to_string()),
                    Just("amount_refunded".to_string()),
                    Just("data".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("payment_intent.succeeded".to_string()),
        Just("payment_intent.processing".to_string()),
        Just("payment_intent.payment_failed".to_string()),
        Just("charge.refunded".to_string()),
        Just("refund.created".to_string()),
        Just("refund.failed".to_string()),
        Just("charge.dispute.created".to_string()),
        Just("charge.dispute.closed".to_string()),
        ".{0,20}",
    ]
}

fn header_item() -> impl Strategy<Value = String> {
    prop_oneof![
        "t=[0-9]{0,12}",
        "t=-?[0-9 ]{0,4}",
        "v1=[0-9a-f]{0,66}",
        "v1=[0-9A-Fa-f]{64}",
        "v0=[a-z0-9]{0,8}",
        "(t|v1)",
        "[=, a-z0-9]{0,6}",
        ".{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn signature_parsing_never_panics_and_the_cheap_check_agrees(
        items in prop::collection::vec(header_item(), 0..10),
        raw in ".{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..64),
        use_raw in any::<bool>(),
    ) {
        let header = if use_raw { raw } else { items.join(",") };
        let secrets = ["whsec_test_fuzz_secret"];
        let verdict = signature::verify(Some(&header), &body, &secrets, 1_800_000_000, 300);
        if let Err(early) = signature::precheck(Some(&header)) {
            prop_assert_eq!(verdict, Err(early), "the cheap check refused what verify judged otherwise");
        }
    }

    #[test]
    fn a_signed_body_always_verifies(
        body in prop::collection::vec(any::<u8>(), 0..256),
        t in 1_600_000_000i64..1_900_000_000,
    ) {
        let header = signature::header("whsec_test_fuzz_secret", t, &body);
        prop_assert!(signature::precheck(Some(&header)).is_ok());
        prop_assert!(signature::verify(Some(&header), &body, &["whsec_test_fuzz_secret"], t, 300).is_ok());
    }

    #[test]
    fn the_event_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_event(&bytes, false);
    }

    #[test]
    fn a_parsed_event_is_storable_and_round_trips(
        id in prop_oneof![Just("evt_1".to_string()), ".{0,12}"],
        kind in event_type(),
        created in prop_oneof![any::<i64>().prop_map(|n| json!(n)), any_json()],
        object in any_json(),
        extra in any_json(),
    ) {
        let body = json!({"id": id, "type": kind, "created": created,
            "livemode": false, "data": {"object": object}, "extra": extra});
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(fact) = parse_event(&bytes, false) {
            prop_assert!(storable::unix_seconds(fact.created));
            for text in [Some(&fact.event_id), Some(&fact.event_type), fact.object_id.as_ref(),
                         fact.payment_intent_id.as_ref()].into_iter().flatten() {
                prop_assert!(storable::text(text), "{:?}", text);
            }
            let event = Event::StripeEventReceived(fact);
            let payload = event.payload_json();
            prop_assert!(storable::json_text(&payload));
            let back = Event::from_parts(event.kind(), &payload).unwrap();
            prop_assert_eq!(back, event);
        }
    }

    #[test]
    fn any_token_string_is_refused_without_a_panic(token in ".{0,200}") {
        prop_assert!(auth::verify("fuzz-jwt-secret-0123456789abcdef0123", &token).is_err());
    }

    #[test]
    fn a_verified_token_has_storable_claims(
        sub in ".{0,140}",
        org in prop::option::of(".{0,140}"),
        ttl in -10i64..800_000,
    ) {
        let secret = "fuzz-jwt-secret-0123456789abcdef0123";
        let now = chrono::Utc::now().timestamp();
        let token = auth::mint(secret, &sub, Role::User, org.as_deref(), now, ttl).unwrap();
        if let Ok(caller) = auth::verify(secret, &token) {
            prop_assert!(!caller.user_id.is_empty() && caller.user_id.len() <= 128);
            prop_assert!(!caller.user_id.chars().any(char::is_control));
            prop_assert!(caller.org_id.iter().all(|o| !o.chars().any(char::is_control)));
            prop_assert!(ttl > 0 && ttl <= auth::MAX_TOKEN_LIFETIME_SECS);
        }
    }
}

/// The API's body parsers through the real router on a real (SQLite)
/// store: any body, any route, never a 5xx, never an error without the
/// envelope.
mod api_bodies {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use klubz_ledger::config::Config;
    use klubz_ledger::http::{router, AppState};
    use std::sync::Arc;
    use tower::ServiceExt;

    struct Fixture {
        rt: tokio::runtime::Runtime,
        app: axum::Router,
        token: String,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
        let jwt = "fuzz-jwt-secret-0123456789abcdef0123".to_string();
        let vars = [
            ("DATABASE_URL", url.clone()),
            ("JWT_SECRET", jwt.clone()),
            ("ENCRYPTION_KEY", "3c".repeat(32)),
            (
                "STRIPE_WEBHOOK_SECRET",
                "whsec_test_fuzz_secret".to_string(),
            ),
            (
                "NOTIFY_SECRET",
                "fuzz-notify-secret-0123456789abcdef".to_string(),
            ),
        ];
        let config = Config::load(
            |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
            dir.path(),
        )
        .unwrap();
        let store = rt
            .block_on(klubz_ledger::store::open(
                &url,
                config.encryption_key.chain_key(),
            ))
            .unwrap();
        let app = router(AppState::new(store, Arc::new(config)));
        let now = chrono::Utc::now().timestamp();
        let token = auth::mint(&jwt, "fuzz-user", Role::User, None, now, 3600).unwrap();
        // The fixture works: a well-formed trip is created, so refusals
        // below are the bodies' doing, not the token's.
        let valid = Request::post("/api/trips")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"title": "Fuzz", "seats": 2, "pricePerSeatCents": 100,
                    "currency": "zar", "departureTime": "2030-01-01T08:00:00Z"})
                .to_string(),
            ))
            .unwrap();
        let status = rt.block_on(app.clone().oneshot(valid)).unwrap().status();
        assert_eq!(status.as_u16(), 201);
        Fixture {
            rt,
            app,
            token,
            _dir: dir,
        }
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            (
                ".{0,20}",
                any_json(),
                any_json(),
                prop_oneof![Just(json!("zar")), any_json()],
                prop_oneof![
                    Just(json!("2030-01-01T08:00:00Z")),
                    ".{0,30}".prop_map(Value::String),
                    any_json()
                ],
            )
                .prop_map(|(title, seats, price, currency, departure)| {
                    serde_json::to_vec(&json!({"title": title, "seats": seats,
                        "pricePerSeatCents": price, "currency": currency,
                        "departureTime": departure}))
                    .unwrap()
                }),
            (any_json(), any_json(), any_json()).prop_map(|(b, a, c)| {
                serde_json::to_vec(&json!({"bookingId": b, "amountCents": a, "currency": c}))
                    .unwrap()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn api_bodies_never_get_a_5xx_or_an_answer_without_the_envelope(
            route in prop_oneof![
                Just("/api/trips"),
                Just("/api/trips/1/bookings"),
                Just("/api/bookings/1/accept"),
                Just("/api/bookings/1/cancel"),
                Just("/api/payments/intent"),
            ],
            body in body_strategy(),
            key in prop::option::of("[ -~]{0,20}"),
        ) {
            thread_local! {
                static FIXTURE: Fixture = fixture();
            }
            let (status, answer) = FIXTURE.with(|f| {
                let mut req = Request::post(route)
                    .header("authorization", format!("Bearer {}", f.token))
                    .header("content-type", "application/json");
                if let Some(k) = &key {
                    req = req.header("idempotency-key", k.as_str());
                }
                let req = req.body(Body::from(body.clone())).unwrap();
                f.rt.block_on(async {
                    let res = f.app.clone().oneshot(req).await.unwrap();
                    let status = res.status();
                    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
                    (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
                })
            });
            prop_assert!(status.as_u16() < 500, "{} {}: {}", status, route, answer);
            if status.as_u16() >= 400 {
                prop_assert!(answer["error"]["code"].is_string(), "{}", answer);
            }
        }
    }
}
