//! Configuration from the environment (CONTRACT.md "Configuration").
//!
//! Production fails closed: a missing or invalid value stops the process
//! with one line naming the variable, never its value. Elsewhere, missing
//! secrets are generated once and kept in `klubz-ledger.secrets` (mode 0600)
//! in the working directory, with a warning naming the file.

pub use crate::crypto::MasterKey;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SECRETS_FILE: &str = "klubz-ledger.secrets";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://klubz-ledger.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Staging,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A secret string. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub bind_addr: SocketAddr,
    pub environment: Environment,
    pub jwt_secret: Secret,
    pub encryption_key: MasterKey,
    /// One or more, for rotation. Empty only in production when
    /// `STRIPE_WEBHOOK_SECRET` is unset: the webhook then answers 500.
    pub webhook_secrets: Vec<Secret>,
    pub stripe_secret_key: Option<Secret>,
    pub stripe_api_base: String,
    pub stripe_livemode: bool,
    pub webhook_tolerance_secs: u64,
    pub log_format: LogFormat,
    /// Where side-effect messages are delivered; unset: they wait in the
    /// outbox.
    pub notify_url: Option<String>,
    /// Signs delivered messages (`Klubz-Signature`).
    pub notify_secret: Secret,
    /// The dispatcher's retry schedule (`dispatch::SCHEDULE`; tests shorten it).
    pub notify_schedule: Vec<std::time::Duration>,
    /// Secrets generated into the secrets file by this load (to warn about).
    pub generated: Vec<&'static str>,
    pub secrets_file: Option<PathBuf>,
    pub limits: Limits,
}

/// Timeouts and caps of the HTTP server and the database pools: every
/// wait has an end and every resource a bound (docs/CONFIGURATION.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `REQUEST_TIMEOUT_MS`: a request's deadline, headers to response.
    pub request_timeout: Duration,
    /// `HEADER_READ_TIMEOUT_MS`: a request's headers must arrive within it
    /// (also how long an idle keep-alive connection is kept).
    pub header_read_timeout: Duration,
    /// `BODY_READ_TIMEOUT_MS`: a request's body must arrive within it.
    pub body_read_timeout: Duration,
    /// `MAX_CONNECTIONS`: open client connections; more wait to be accepted.
    pub max_connections: usize,
    /// `MAX_IN_FLIGHT`: requests being handled; more get 503 at once.
    pub max_in_flight: usize,
    /// `MAX_BUFFERED_BODY_BYTES`: request body bytes held in memory by all
    /// requests together; a body that would exceed it gets 503.
    pub max_buffered_body_bytes: usize,
    /// `DB_ACQUIRE_TIMEOUT_MS`: waiting for a pooled database connection.
    pub db_acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: one statement (PostgreSQL
    /// `statement_timeout`, SQLite's busy wait).
    pub db_statement_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            // Also the keep-alive idle timeout: long enough for clients and
            // balancers that keep connections open (docs/CONFIGURATION.md).
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            // Peak memory follows these (measured in docs/RELIABILITY.md):
            // generous for an engine behind a load balancer, small enough
            // that a flood cannot pin much.
            max_connections: 1024,
            max_in_flight: 512,
            max_buffered_body_bytes: 16 * 1024 * 1024,
            db_acquire_timeout: Duration::from_millis(1000),
            db_statement_timeout: Duration::from_secs(5),
        }
    }
}

impl Limits {
    fn load(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let millis = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=3_600_000).contains(n))
                    .map(Duration::from_millis)
                    .ok_or_else(|| err(name, "must be milliseconds, 1 to 3600000")),
            }
        };
        let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| err(name, "must be an integer, 1 to 1000000")),
            }
        };
        Ok(Self {
            request_timeout: millis("REQUEST_TIMEOUT_MS", d.request_timeout)?,
            header_read_timeout: millis("HEADER_READ_TIMEOUT_MS", d.header_read_timeout)?,
            body_read_timeout: millis("BODY_READ_TIMEOUT_MS", d.body_read_timeout)?,
            max_connections: count("MAX_CONNECTIONS", d.max_connections)?,
            max_in_flight: count("MAX_IN_FLIGHT", d.max_in_flight)?,
            max_buffered_body_bytes: match get("MAX_BUFFERED_BODY_BYTES") {
                None => d.max_buffered_body_bytes,
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1024 * 1024..=1 << 40).contains(n))
                    .ok_or_else(|| {
                        err("MAX_BUFFERED_BODY_BYTES", "must be bytes, at least 1048576")
                    })?,
            },
            db_acquire_timeout: millis("DB_ACQUIRE_TIMEOUT_MS", d.db_acquire_timeout)?,
            db_statement_timeout: millis("DB_STATEMENT_TIMEOUT_MS", d.db_statement_timeout)?,
        })
    }
}

/// Names the variable and the problem, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn err(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Config {
    /// Reads the process environment; secrets file in the current directory.
    pub fn from_env() -> Result<Self, ConfigError> {
        let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::load(|k| std::env::var(k).ok(), &dir)
    }

    /// Reads configuration through `var` (testable without touching the
    /// process environment); `dir` is where the secrets file lives.
    pub fn load(var: impl Fn(&str) -> Option<String>, dir: &Path) -> Result<Self, ConfigError> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let environment = match get("ENVIRONMENT").as_deref() {
            None | Some("development") => Environment::Development,
            Some("staging") => Environment::Staging,
            Some("production") => Environment::Production,
            Some(_) => {
                return Err(err(
                    "ENVIRONMENT",
                    "must be development, staging or production",
                ))
            }
        };
        let production = environment == Environment::Production;

        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err(
                "DATABASE_URL",
                "must start with sqlite:// or postgres://",
            ));
        }
        let bind_addr = get("BIND_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8787".into())
            .parse()
            .map_err(|_| err("BIND_ADDR", "must be an address such as 127.0.0.1:8787"))?;

        // Secrets: the environment first; else (not production) the file.
        let secrets_path = dir.join(SECRETS_FILE);
        let mut file = if production {
            BTreeMap::new()
        } else {
            read_secrets(&secrets_path)?
        };
        let mut generated = Vec::new();
        let mut secret =
            |name: &'static str, make: fn() -> String| -> Result<String, ConfigError> {
                if let Some(v) = get(name) {
                    return Ok(v);
                }
                if production {
                    return Err(err(name, "required in production"));
                }
                if let Some(v) = file.get(name) {
                    return Ok(v.clone());
                }
                let v = make();
                file.insert(name.to_string(), v.clone());
                generated.push(name);
                Ok(v)
            };
        let jwt_secret = secret("JWT_SECRET", || hex::encode(random_bytes()))?;
        let encryption_hex = secret("ENCRYPTION_KEY", || hex::encode(random_bytes()))?;
        // Production: no generated webhook secret. Commands that need none
        // (migrate, klubz-replay) run without it; `serve` refuses to start
        // (`check_serve`), and the webhook route would fail closed (500
        // CONFIGURATION_ERROR) should a server run without one anyway.
        let webhook_raw = if production {
            get("STRIPE_WEBHOOK_SECRET").unwrap_or_default()
        } else {
            secret("STRIPE_WEBHOOK_SECRET", || {
                format!("whsec_{}", hex::encode(random_bytes()))
            })?
        };
        let notify_url = get("NOTIFY_URL");
        if let Some(url) = &notify_url {
            if reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .is_none()
            {
                return Err(err("NOTIFY_URL", "must be an http(s) URL"));
            }
        }
        // Production needs it only when messages are delivered.
        let notify_secret = if production && notify_url.is_none() {
            get("NOTIFY_SECRET").unwrap_or_default()
        } else {
            secret("NOTIFY_SECRET", || hex::encode(random_bytes()))?
        };
        if notify_url.is_some() && notify_secret.len() < 32 {
            return Err(err("NOTIFY_SECRET", "must be at least 32 bytes"));
        }
        if !generated.is_empty() {
            write_secrets(&secrets_path, &file)?;
        }

        if jwt_secret.len() < 32 {
            return Err(err("JWT_SECRET", "must be at least 32 bytes"));
        }
        let encryption_key = MasterKey::parse_hex(&encryption_hex)
            .ok_or_else(|| err("ENCRYPTION_KEY", "must be 64 hex characters (32 bytes)"))?;
        let webhook_secrets: Vec<Secret> = webhook_raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        if (webhook_secrets.is_empty() && !production)
            || webhook_secrets
                .iter()
                .any(|s| !s.expose().starts_with("whsec_"))
        {
            return Err(err(
                "STRIPE_WEBHOOK_SECRET",
                "must be one or more whsec_… values, comma-separated",
            ));
        }

        let stripe_livemode = match get("STRIPE_LIVEMODE").as_deref() {
            None => production,
            Some("true") => true,
            Some("false") => false,
            Some(_) => return Err(err("STRIPE_LIVEMODE", "must be true or false")),
        };
        let webhook_tolerance_secs = match get("WEBHOOK_TOLERANCE_SECS") {
            None => 300,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| err("WEBHOOK_TOLERANCE_SECS", "must be a positive integer"))?,
        };
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(_) => return Err(err("LOG_FORMAT", "must be json or pretty")),
        };
        let stripe_api_base =
            get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
        if !(stripe_api_base.starts_with("https://") || stripe_api_base.starts_with("http://")) {
            return Err(err("STRIPE_API_BASE", "must be an http(s) URL"));
        }

        Ok(Self {
            database_url,
            bind_addr,
            environment,
            jwt_secret: Secret::new(jwt_secret),
            encryption_key,
            webhook_secrets,
            stripe_secret_key: get("STRIPE_SECRET_KEY").map(Secret::new),
            stripe_api_base,
            stripe_livemode,
            webhook_tolerance_secs,
            log_format,
            notify_url,
            notify_secret: Secret::new(notify_secret),
            notify_schedule: crate::dispatch::SCHEDULE.to_vec(),
            secrets_file: (!production).then_some(secrets_path),
            generated,
            limits: Limits::load(&get)?,
        })
    }
}

impl Config {
    /// When a pending `Idempotency-Key` whose event never committed may be
    /// taken over by a retry: after the request deadline, when its first
    /// request has certainly ended (a late commit under its claim is
    /// refused in any case).
    pub fn key_abandoned_after(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.limits.request_timeout + Duration::from_secs(5))
            .unwrap_or(chrono::Duration::minutes(5))
    }

    /// What `serve` needs beyond what every command needs: in production,
    /// the secrets without which it cannot do its job (verify webhooks,
    /// create payment intents). Elsewhere a throwaway webhook secret and the
    /// offline gateway stand in, labelled as such.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        if self.environment != Environment::Production {
            return Ok(());
        }
        if self.webhook_secrets.is_empty() {
            return Err(err(
                "STRIPE_WEBHOOK_SECRET",
                "required in production to serve: without it no webhook can be verified",
            ));
        }
        if self.stripe_secret_key.is_none() {
            return Err(err(
                "STRIPE_SECRET_KEY",
                "required in production to serve: without it no payment intent can be created",
            ));
        }
        Ok(())
    }

    /// Parts of the engine's job that are off, each with its reason:
    /// `/health` answers `degraded` with them.
    pub fn degraded_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.environment == Environment::Production && self.notify_url.is_none() {
            reasons.push(
                "NOTIFY_URL is not set: side-effect messages are kept in the outbox, not delivered"
                    .to_string(),
            );
        }
        reasons
    }
}

fn random_bytes() -> [u8; 32] {
    rand::random()
}

fn read_secrets(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(err(
                "JWT_SECRET",
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn write_secrets(path: &Path, values: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    use std::io::Write as _;
    let mut text =
        String::from("# Development secrets generated by klubz-ledger. Never commit this file.\n");
    for (k, v) in values {
        text.push_str(&format!("{k}={v}\n"));
    }
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| {
        err(
            "JWT_SECRET",
            format!("cannot write {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], dir: &Path) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(|k| map.get(k).cloned(), dir)
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn development_generates_secrets_once_with_mode_0600() {
        let dir = tmp();
        let first = load(&[], dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first.generated,
            vec![
                "JWT_SECRET",
                "ENCRYPTION_KEY",
                "STRIPE_WEBHOOK_SECRET",
                "NOTIFY_SECRET"
            ]
        );
        let second = load(&[], dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(second.generated.is_empty());
        assert_eq!(first.jwt_secret, second.jwt_secret);
        assert_eq!(
            first.encryption_key.chain_key().check_value(),
            second.encryption_key.chain_key().check_value()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRETS_FILE))
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
        assert_eq!(first.database_url, DEFAULT_DATABASE_URL);
        assert!(!first.stripe_livemode);
    }

    #[test]
    fn production_requires_secrets_and_names_only_the_variable() {
        let dir = tmp();
        let e = load(&[("ENVIRONMENT", "production")], dir.path()).err();
        assert_eq!(e.map(|e| e.variable), Some("JWT_SECRET"));
        assert!(!dir.path().join(SECRETS_FILE).exists());

        let secret_value = "short-but-secret-value";
        let e = load(
            &[("ENVIRONMENT", "production"), ("JWT_SECRET", secret_value)],
            dir.path(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("JWT_SECRET") || e.contains("ENCRYPTION_KEY"),
            "{e}"
        );
        assert!(!e.contains(secret_value));
    }

    #[test]
    fn production_accepts_a_complete_configuration() {
        let dir = tmp();
        let cfg = load(
            &[
                ("ENVIRONMENT", "production"),
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("ENCRYPTION_KEY", &"ab".repeat(32)),
                ("STRIPE_WEBHOOK_SECRET", "whsec_test_one, whsec_test_two"),
            ],
            dir.path(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.webhook_secrets.len(), 2);
        let without_webhook = load(
            &[
                ("ENVIRONMENT", "production"),
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("ENCRYPTION_KEY", &"ab".repeat(32)),
            ],
            dir.path(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(without_webhook.webhook_secrets.is_empty());
        // Delivering messages in production needs their signing secret.
        let e = load(
            &[
                ("ENVIRONMENT", "production"),
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("ENCRYPTION_KEY", &"ab".repeat(32)),
                ("NOTIFY_URL", "https://hooks.example.com/klubz"),
            ],
            dir.path(),
        )
        .err();
        assert_eq!(e.map(|e| e.variable), Some("NOTIFY_SECRET"));
        assert!(cfg.stripe_livemode);
        assert!(format!("{cfg:?}").contains("<redacted>"));
        assert!(!format!("{cfg:?}").contains("whsec_test_one"));
    }

    #[test]
    fn invalid_values_are_named() {
        let dir = tmp();
        for (var, value) in [
            ("ENCRYPTION_KEY", "not-hex"),
            ("STRIPE_WEBHOOK_SECRET", "sk_wrong"),
            ("WEBHOOK_TOLERANCE_SECS", "-5"),
            ("DATABASE_URL", "mysql://x"),
            ("LOG_FORMAT", "xml"),
            ("NOTIFY_URL", "ftp://hooks.example.com"),
        ] {
            let e = load(&[(var, value)], dir.path()).err();
            assert_eq!(e.map(|e| e.variable), Some(var));
        }
    }
}
