//! Creating PaymentIntents: the [`PaymentGateway`] trait, Stripe's real REST
//! API over HTTP ([`StripeGateway`]) and a development stand-in
//! ([`OfflineGateway`], refused in production, announced at start).
//!
//! Every creation carries an idempotency key derived from (booking,
//! attempt): a retried call after a timeout gets the same intent back from
//! Stripe, so a later call can always recover a binding.

use crate::domain::{Cents, Currency};
use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRequest {
    pub booking_id: String,
    pub trip_id: String,
    pub user_id: String,
    pub amount_cents: Cents,
    pub currency: Currency,
    /// Sent as Stripe's `Idempotency-Key`.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedIntent {
    pub payment_intent_id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Stripe refused the request (4xx): answered 502.
    #[error("payment provider refused the request: {0}")]
    Refused(String),
    /// Timeout, network error or Stripe 5xx: answered 503, safe to retry.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// `stripe` or `offline`.
    fn name(&self) -> &'static str;
    async fn create_intent(&self, request: &IntentRequest) -> Result<CreatedIntent, GatewayError>;
    /// The client secret of an intent created earlier (returned again while
    /// it is pending).
    async fn client_secret(&self, payment_intent_id: &str) -> Result<String, GatewayError>;
}

/// Stripe's API: form-encoded `POST /v1/payment_intents`, the secret key as
/// bearer token.
pub struct StripeGateway {
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

/// How long one call to Stripe may take before it counts as unavailable.
pub const STRIPE_TIMEOUT: Duration = Duration::from_secs(15);

impl StripeGateway {
    pub fn new(base: &str, secret_key: &str) -> Self {
        Self::with_timeout(base, secret_key, STRIPE_TIMEOUT)
    }

    pub fn with_timeout(base: &str, secret_key: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
        }
    }

    async fn read(
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<serde_json::Value, GatewayError> {
        let response = response.map_err(|e| GatewayError::Unavailable(without_url(e)))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| {
            GatewayError::Unavailable(format!("unreadable answer: {}", without_url(e)))
        })?;
        if status.is_success() {
            return Ok(body);
        }
        // Stripe's error message, never the request (which holds no secret,
        // but the key travels in a header we do not echo either).
        let message = body
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message")
            .to_string();
        if status.is_server_error() || status.as_u16() == 429 {
            Err(GatewayError::Unavailable(format!(
                "Stripe answered {status}: {message}"
            )))
        } else {
            Err(GatewayError::Refused(format!(
                "Stripe answered {status}: {message}"
            )))
        }
    }
}

/// A short reason for a transport error, without the URL.
fn without_url(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.without_url().to_string()
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_intent(&self, r: &IntentRequest) -> Result<CreatedIntent, GatewayError> {
        let amount = r.amount_cents.to_string();
        let form = [
            ("amount", amount.as_str()),
            ("currency", r.currency.as_str()),
            ("metadata[bookingId]", r.booking_id.as_str()),
            ("metadata[tripId]", r.trip_id.as_str()),
            ("metadata[userId]", r.user_id.as_str()),
            ("automatic_payment_methods[enabled]", "true"),
        ];
        let response = self
            .http
            .post(format!("{}/v1/payment_intents", self.base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", &r.idempotency_key)
            .form(&form)
            .send()
            .await;
        let body = Self::read(response).await?;
        let field = |name: &str| {
            body.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| GatewayError::Unavailable(format!("Stripe's answer has no {name}")))
        };
        Ok(CreatedIntent {
            payment_intent_id: field("id")?,
            client_secret: field("client_secret")?,
        })
    }

    async fn client_secret(&self, payment_intent_id: &str) -> Result<String, GatewayError> {
        if !payment_intent_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(GatewayError::Refused("malformed payment intent id".into()));
        }
        let response = self
            .http
            .get(format!(
                "{}/v1/payment_intents/{payment_intent_id}",
                self.base
            ))
            .bearer_auth(&self.secret_key)
            .send()
            .await;
        let body = Self::read(response).await?;
        body.get("client_secret")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| GatewayError::Unavailable("Stripe's answer has no client_secret".into()))
    }
}

/// Development only: mints `pi_offline_…` ids without any network, the same
/// id again for the same idempotency key (as Stripe would).
pub struct OfflineGateway {
    key: [u8; 32],
}

impl OfflineGateway {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, label: &str) -> String {
        hex::encode(&crate::crypto::hmac_sha256(&self.key, label.as_bytes())[..12])
    }
}

#[async_trait]
impl PaymentGateway for OfflineGateway {
    fn name(&self) -> &'static str {
        "offline"
    }

    async fn create_intent(&self, r: &IntentRequest) -> Result<CreatedIntent, GatewayError> {
        let payment_intent_id = format!("pi_offline_{}", self.mac(&r.idempotency_key));
        let client_secret = self.client_secret(&payment_intent_id).await?;
        Ok(CreatedIntent {
            payment_intent_id,
            client_secret,
        })
    }

    async fn client_secret(&self, payment_intent_id: &str) -> Result<String, GatewayError> {
        Ok(format!(
            "{payment_intent_id}_secret_{}",
            self.mac(&format!("secret:{payment_intent_id}"))
        ))
    }
}
