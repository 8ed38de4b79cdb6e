//! In-memory counters and latencies of this process (request counts,
//! webhook outcomes, security signals), kept twice: by name for the JSON
//! monitoring routes, and as Prometheus metrics (`prometheus-client`)
//! that move when their cause happens. Figures that must survive a restart
//! (events, outcomes, the outbox) are read from the database at scrape
//! time, as gauges.

use crate::store::{LedgerStats, WriterStats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Instant;

type Labels = Vec<(String, String)>;

/// The Prometheus side: registered once, encoded on each scrape.
struct Prom {
    registry: Registry,
    requests: Counter,
    errors: Family<Labels, Counter>,
    duration: Histogram,
    webhook: Family<Labels, Counter>,
    security: Family<Labels, Counter>,
    signature_failures: Family<Labels, Counter>,
    replays: Counter,
    events: Family<Labels, Gauge>,
    outcomes: Family<Labels, Gauge>,
    outbox: Family<Labels, Gauge>,
    outbox_depth: Gauge,
    outbox_oldest: Gauge<f64, AtomicU64>,
    paused: Gauge,
    writer_queued: Gauge,
    unbound: Gauge,
}

impl Default for Prom {
    fn default() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("klubz");
        let p = Self {
            registry: Registry::default(),
            requests: Counter::default(),
            errors: Family::default(),
            // 0.1 ms … about 6.5 s.
            duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            webhook: Family::default(),
            security: Family::default(),
            signature_failures: Family::default(),
            replays: Counter::default(),
            events: Family::default(),
            outcomes: Family::default(),
            outbox: Family::default(),
            outbox_depth: Gauge::default(),
            outbox_oldest: Gauge::default(),
            paused: Gauge::default(),
            writer_queued: Gauge::default(),
            unbound: Gauge::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests answered",
            p.requests.clone(),
        );
        r.register(
            "http_errors",
            "HTTP error answers by error code",
            p.errors.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            p.duration.clone(),
        );
        r.register(
            "webhook",
            "Stripe webhook answers by outcome (and reason when ignored)",
            p.webhook.clone(),
        );
        r.register(
            "security",
            "Security signals: signature failures, amount tampering, idempotency conflicts",
            p.security.clone(),
        );
        r.register(
            "webhook_signature_failures",
            "Webhook signature failures by why",
            p.signature_failures.clone(),
        );
        r.register(
            "idempotent_replays",
            "Requests answered from a stored Idempotency-Key response",
            p.replays.clone(),
        );
        r.register(
            "events",
            "Events in the log by kind and source (read from the database)",
            p.events.clone(),
        );
        r.register(
            "event_outcomes",
            "Event outcomes by outcome and reason (read from the database)",
            p.outcomes.clone(),
        );
        r.register(
            "outbox_messages",
            "Side-effect messages by kind and status (read from the database)",
            p.outbox.clone(),
        );
        r.register(
            "outbox_depth",
            "Side-effect messages not yet delivered",
            p.outbox_depth.clone(),
        );
        r.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered side-effect message (0 when none)",
            p.outbox_oldest.clone(),
        );
        r.register(
            "side_effects_paused",
            "1 while an operator has paused side effects",
            p.paused.clone(),
        );
        r.register(
            "writer_queue_depth",
            "Submissions waiting for the writer",
            p.writer_queued.clone(),
        );
        r.register(
            "unbound_events",
            "Stripe events that bind to no booking",
            p.unbound.clone(),
        );
        Self {
            registry: root,
            ..p
        }
    }
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

/// Latencies kept for percentiles.
const LATENCY_WINDOW: usize = 10_000;

pub struct Metrics {
    started: Instant,
    counters: Mutex<BTreeMap<String, u64>>,
    latencies_ms: Mutex<VecDeque<f64>>,
    /// Registered once at construction; its metrics synchronise themselves.
    prom: Prom,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            counters: Mutex::new(BTreeMap::new()),
            latencies_ms: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
            prom: Prom::default(),
        }
    }
}

impl Metrics {
    /// With the writer's histograms (batch size, commit time) registered.
    pub fn with_writer(writer: &WriterStats) -> Self {
        let mut m = Self::default();
        {
            let r = m.prom.registry.sub_registry_with_prefix("klubz");
            r.register(
                "writer_batch_size",
                "Submissions committed per transaction",
                writer.batch_size.clone(),
            );
            r.register(
                "writer_commit_seconds",
                "Time to commit one batch",
                writer.commit_seconds.clone(),
            );
        }
        m
    }

    pub fn incr(&self, name: &str) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(name.to_string()).or_default() += 1;
        }
        let p = &self.prom;
        match name.split_once('.') {
            Some(("http", "requests")) => {
                p.requests.inc();
            }
            Some(("http", rest)) => {
                if let Some(code) = rest.strip_prefix("error.") {
                    p.errors.get_or_create(&label("code", code)).inc();
                }
            }
            Some(("webhook", rest)) => {
                let labels = match rest.split_once('.') {
                    Some((outcome, reason)) => vec![
                        ("outcome".to_string(), outcome.to_string()),
                        ("reason".to_string(), reason.to_string()),
                    ],
                    None => label("outcome", rest),
                };
                p.webhook.get_or_create(&labels).inc();
            }
            Some(("security", rest)) => match rest.split_once('.') {
                Some(("signature_failures", why)) => {
                    p.signature_failures.get_or_create(&label("why", why)).inc();
                }
                _ => {
                    p.security.get_or_create(&label("signal", rest)).inc();
                }
            },
            Some(("idempotency", "replays")) => {
                p.replays.inc();
            }
            _ => {}
        }
    }

    /// The Prometheus text exposition (OpenMetrics), with the database's
    /// figures and the writer's queue set as of now.
    pub fn prometheus(
        &self,
        stats: &LedgerStats,
        paused: bool,
        oldest_pending_age_secs: Option<f64>,
        writer: &WriterStats,
    ) -> String {
        let mut out = String::new();
        let p = &self.prom;
        for (kind, source, n) in &stats.events {
            let labels = vec![
                ("kind".to_string(), kind.clone()),
                ("source".to_string(), source.clone()),
            ];
            p.events.get_or_create(&labels).set(*n);
        }
        for (outcome, reason, n) in &stats.outcomes {
            let labels = vec![
                ("outcome".to_string(), outcome.clone()),
                ("reason".to_string(), reason.clone().unwrap_or_default()),
            ];
            p.outcomes.get_or_create(&labels).set(*n);
        }
        let mut depth = 0;
        for (kind, status, n) in &stats.outbox {
            let labels = vec![
                ("kind".to_string(), kind.clone()),
                ("status".to_string(), status.clone()),
            ];
            p.outbox.get_or_create(&labels).set(*n);
            if status == "pending" {
                depth += n;
            }
        }
        p.outbox_depth.set(depth);
        p.outbox_oldest.set(oldest_pending_age_secs.unwrap_or(0.0));
        p.paused.set(i64::from(paused));
        p.writer_queued
            .set(i64::try_from(writer.queued).unwrap_or(i64::MAX));
        p.unbound.set(stats.unbound_events);
        if encode(&mut out, &p.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Counters whose names start with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> BTreeMap<String, u64> {
        self.counters
            .lock()
            .map(|c| {
                c.range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn record_latency(&self, ms: f64) {
        self.prom.duration.observe(ms / 1000.0);
        if let Ok(mut l) = self.latencies_ms.lock() {
            if l.len() == LATENCY_WINDOW {
                l.pop_front();
            }
            l.push_back(ms);
        }
    }

    /// p50, p95, p99 of the recent latencies, in milliseconds.
    pub fn percentiles(&self) -> (f64, f64, f64) {
        let mut v: Vec<f64> = self
            .latencies_ms
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        if v.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (at(0.50), at(0.95), at(0.99))
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
