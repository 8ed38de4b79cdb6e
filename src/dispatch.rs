//! The outbox dispatcher: delivers side-effect messages to `NOTIFY_URL`.
//!
//! Every engine process with `NOTIFY_URL` runs one. A cycle: unless side
//! effects are paused (a flag in the log, read every cycle, so every
//! process stops within a poll interval), claim due messages with a lease
//! (`store::outbox`), POST each as JSON with `Klubz-Message-Id` and
//! `Klubz-Signature` (Stripe's `t=…,v1=…` scheme under `NOTIFY_SECRET`),
//! and record the attempt. A 2xx marks it sent; anything else, or no
//! answer within the timeout, schedules the next attempt on a capped
//! backoff with jitter, and after the last one the message is `failed`.
//! Delivery is at least once, with the message key as its stable id.

use crate::config::{Config, Secret};
use crate::store::{AfterAttempt, EventStore, OutboxAttempt, OutboxMessage};
use crate::stripe::signature;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// When to try again after each failed attempt, like Svix's schedule: the
/// first attempt at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// How one dispatcher delivers.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub url: String,
    pub secret: Secret,
    /// Delay before attempt n+1 (index n); its length is the number of
    /// attempts a message gets.
    pub schedule: Vec<Duration>,
    /// Per attempt.
    pub timeout: Duration,
    /// How long a claimed message stays ours; a crashed process's claims
    /// expire after this.
    pub lease: Duration,
    /// How often an idle or paused dispatcher looks again.
    pub poll: Duration,
    pub batch: i64,
}

impl DispatchConfig {
    /// From the engine's configuration; `None` without `NOTIFY_URL`.
    pub fn from_config(config: &Config) -> Option<Self> {
        let url = config.notify_url.clone()?;
        Some(Self {
            url,
            secret: config.notify_secret.clone(),
            schedule: config.notify_schedule.clone(),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            batch: 16,
        })
    }
}

/// One dispatcher: its identity (for leases) and HTTP client.
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    config: DispatchConfig,
    owner: String,
    client: reqwest::Client,
}

/// What one cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cycle {
    pub paused: bool,
    pub attempted: usize,
    pub sent: usize,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Dispatcher {
    pub fn new(store: Arc<dyn EventStore>, config: DispatchConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            store,
            config,
            owner: format!("dispatcher-{}", uuid::Uuid::new_v4()),
            client,
        })
    }

    /// One claim-and-deliver cycle.
    pub async fn run_once(&self) -> Result<Cycle, crate::store::StoreError> {
        if self.store.side_effects_paused().await? {
            return Ok(Cycle {
                paused: true,
                ..Cycle::default()
            });
        }
        let now = now_ms();
        let lease_until = now + self.config.lease.as_millis() as i64;
        let claimed = self
            .store
            .claim_outbox(&self.owner, now, lease_until, self.config.batch)
            .await?;
        let mut cycle = Cycle::default();
        for message in claimed {
            // A pause takes effect between messages too; what is left of
            // the claim waits for its lease to run out.
            if cycle.attempted > 0 && self.store.side_effects_paused().await? {
                cycle.paused = true;
                break;
            }
            let (attempt, after) = self.deliver(&message).await;
            cycle.attempted += 1;
            if after == AfterAttempt::Sent {
                cycle.sent += 1;
            }
            self.store
                .finish_attempt(&self.owner, &attempt, after)
                .await?;
        }
        Ok(cycle)
    }

    /// Cycles until `shutdown` turns true, waiting `poll` when there is
    /// nothing to do. Storage errors are logged and retried.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(url = %redact_url(&self.config.url), "outbox dispatcher started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let idle = match self.run_once().await {
                Ok(cycle) => cycle.paused || cycle.attempted == 0,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox dispatcher: storage error");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!("outbox dispatcher stopped");
    }

    async fn deliver(&self, message: &OutboxMessage) -> (OutboxAttempt, AfterAttempt) {
        let number = message.attempts + 1;
        let body = message_body(message);
        let started = Instant::now();
        let at_ms = now_ms();
        let t = at_ms / 1000;
        let result = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("Klubz-Message-Id", &message.message_key)
            .header(
                "Klubz-Signature",
                signature::header(self.config.secret.expose(), t, body.as_bytes()),
            )
            .body(body)
            .send()
            .await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let (status_code, error) = match &result {
            Ok(response) => (Some(i64::from(response.status().as_u16())), None),
            Err(e) => (None, Some(describe(e))),
        };
        let ok = result.as_ref().is_ok_and(|r| r.status().is_success());
        let after = if ok {
            AfterAttempt::Sent
        } else {
            match self.config.schedule.get(number as usize) {
                Some(delay) => AfterAttempt::RetryAt(now_ms() + jittered(*delay)),
                None => AfterAttempt::Failed,
            }
        };
        if !ok {
            tracing::warn!(
                message = %message.message_key,
                attempt = number,
                status = ?status_code,
                error = error.as_deref().unwrap_or(""),
                "outbox delivery failed"
            );
        }
        (
            OutboxAttempt {
                message_key: message.message_key.clone(),
                attempt: number,
                at_ms,
                status_code,
                error,
                duration_ms,
            },
            after,
        )
    }
}

/// CONTRACT.md's body: the stored payload with the message key as `id`.
pub fn message_body(message: &OutboxMessage) -> String {
    let mut body: serde_json::Value =
        serde_json::from_str(&message.payload).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = body.as_object_mut() {
        object.insert("id".into(), message.message_key.clone().into());
        object
            .entry("type")
            .or_insert_with(|| message.kind.clone().into());
        object
            .entry("bookingId")
            .or_insert_with(|| message.booking_id.clone().into());
    }
    body.to_string()
}

/// ±10 %, so retries of many messages do not arrive together.
fn jittered(delay: Duration) -> i64 {
    let ms = delay.as_millis() as i64;
    if ms == 0 {
        return 0;
    }
    let spread = (ms / 10).max(1);
    ms + rand::random::<i64>().rem_euclid(2 * spread + 1) - spread
}

/// No URL, headers or bodies in the attempt record: the kind of failure.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

/// Scheme, host and port only: a URL may carry a token in its path.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid>".into(),
    }
}

/// The dispatcher of `config` when `NOTIFY_URL` is set, for the
/// supervisor to run.
pub fn for_config(store: Arc<dyn EventStore>, config: &Config) -> Option<Dispatcher> {
    let dispatch = DispatchConfig::from_config(config)?;
    match Dispatcher::new(store, dispatch) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(error = %e, "outbox dispatcher cannot start");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth() {
        for _ in 0..200 {
            let j = jittered(Duration::from_secs(300));
            assert!((270_000..=330_000).contains(&j), "{j}");
        }
        assert_eq!(jittered(Duration::ZERO), 0);
    }

    #[test]
    fn urls_are_logged_without_path_or_credentials() {
        assert_eq!(
            redact_url("https://user:pw@hooks.example.com:8443/secret-token?x=1"),
            "https://hooks.example.com:8443"
        );
    }

    #[test]
    fn the_body_carries_the_key_as_id() {
        let m = OutboxMessage {
            message_key: "payment_succeeded:7:12".into(),
            kind: "payment_succeeded".into(),
            booking_id: "7".into(),
            payload: r#"{"type":"payment_succeeded","bookingId":"7","amountCents":900}"#.into(),
            created_seq: 12,
            status: "pending".into(),
            attempts: 0,
            next_attempt_ms: 0,
            sent_ms: None,
        };
        let body: serde_json::Value = serde_json::from_str(&message_body(&m)).unwrap_or_default();
        assert_eq!(body["id"], "payment_succeeded:7:12");
        assert_eq!(body["amountCents"], 900);
    }
}
