//! `loadgen` against a real server on both backends, at a tiny size: it
//! works, and its read-back check catches an event that never arrived.

use crate::app::*;
use crate::helpers::*;
use klubz_ledger::loadgen::{run, Options};

fn options(app: &TestApp, drop_event: Option<usize>, shuffle: bool) -> Options {
    Options {
        url: app.base.clone(),
        bookings: 12,
        events: 60,
        concurrency: 8,
        duplicates: 20,
        shuffle,
        jwt_secret: "test-jwt-secret-0123456789abcdef0123456789".into(),
        webhook_secret: WEBHOOK_SECRET.into(),
        seed: 42,
        drop_event,
    }
}

pub async fn loadgen_runs_and_every_booking_matches(backend: Backend) {
    let app = spawn_app(backend).await;
    let report = run(options(&app, None, true)).await.unwrap();
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.sent, 60 + 12);
    assert_eq!(report.acked, report.sent);
    assert!(
        report.replays >= 12,
        "duplicates answer as replays: {}",
        report.render()
    );
    assert!(report.events_per_second() > 0.0);
    let text = report.render();
    assert!(
        text.contains("read back: every booking matches its events"),
        "{text}"
    );
}

pub async fn loadgen_catches_a_lost_event(backend: Backend) {
    let app = spawn_app(backend).await;
    // Unshuffled, event 1 is the first booking's payment_intent.succeeded.
    let mut opts = options(&app, Some(1), false);
    opts.duplicates = 0;
    let report = run(opts).await.unwrap();
    assert!(!report.ok());
    assert_eq!(report.mismatches.len(), 1, "{}", report.render());
    assert!(
        report.mismatches[0].contains("its events imply partially_refunded"),
        "{}",
        report.render()
    );
    assert!(report.render().ends_with("loadgen FAILED\n"));
}

on_both_backends!(loadgen:
    loadgen_runs_and_every_booking_matches,
    loadgen_catches_a_lost_event,
);
