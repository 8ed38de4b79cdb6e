//! Stripe's Events API (`GET /v1/events`), for recovering events whose
//! webhook deliveries were lost. Stripe lists events newest first, 100 at
//! most per page, and keeps them 30 days; `starting_after` pages towards
//! older ones.

use serde_json::Value;
use std::time::Duration;

/// Stripe keeps events this long; older ones cannot be listed.
pub const RETENTION_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum EventsApiError {
    #[error("Stripe's Events API could not be reached: {0}")]
    Unreachable(String),
    #[error("Stripe's Events API answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("Stripe's Events API answered something that is not an event list")]
    NotAList,
}

/// One page: events newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub events: Vec<Value>,
    pub has_more: bool,
}

/// What to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `created[gte]`, Unix seconds.
    pub created_gte: i64,
    /// Only events Stripe failed to deliver (`delivery_success=false`).
    pub undelivered_only: bool,
    pub starting_after: Option<String>,
    pub limit: u32,
}

pub struct EventsApi {
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

impl EventsApi {
    pub fn new(base: &str, secret_key: &str) -> Result<Self, EventsApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| EventsApiError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
        })
    }

    pub async fn list(&self, query: &Query) -> Result<Page, EventsApiError> {
        let mut params: Vec<(&str, String)> = vec![
            ("limit", query.limit.clamp(1, 100).to_string()),
            ("created[gte]", query.created_gte.to_string()),
        ];
        if query.undelivered_only {
            params.push(("delivery_success", "false".into()));
        }
        if let Some(after) = &query.starting_after {
            params.push(("starting_after", after.clone()));
        }
        let response = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(&self.secret_key)
            .query(&params)
            .send()
            .await
            .map_err(|e| {
                EventsApiError::Unreachable(if e.is_timeout() {
                    "timeout".into()
                } else {
                    "connection failed".into()
                })
            })?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|_| EventsApiError::NotAList)?;
        if !status.is_success() {
            return Err(EventsApiError::Refused {
                status: status.as_u16(),
                message: body
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_string(),
            });
        }
        let events = body
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or(EventsApiError::NotAList)?;
        Ok(Page {
            events,
            has_more: body
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}
