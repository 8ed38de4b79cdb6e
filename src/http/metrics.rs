//! In-memory counters and latencies of this process (request counts,
//! webhook outcomes, security signals). Figures that must survive a
//! restart are read from the database instead.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

/// Latencies kept for percentiles.
const LATENCY_WINDOW: usize = 10_000;

pub struct Metrics {
    started: Instant,
    counters: Mutex<BTreeMap<String, u64>>,
    latencies_ms: Mutex<VecDeque<f64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            counters: Mutex::new(BTreeMap::new()),
            latencies_ms: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
        }
    }
}

impl Metrics {
    pub fn incr(&self, name: &str) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(name.to_string()).or_default() += 1;
        }
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
