//! A real server on a random port against a fresh database, and a client
//! that signs its webhooks like Stripe.

use crate::helpers::{Backend, TestDb};
use klubz_ledger::config::Config;
use klubz_ledger::http::{self, AppState};
use klubz_ledger::stripe::signature;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub const WEBHOOK_SECRET: &str = "whsec_test_api_primary_secret";
/// `helpers::chain_key()` is derived from this master key.
pub const ENCRYPTION_KEY_HEX: &str =
    "0707070707070707070707070707070707070707070707070707070707070707";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _config_dir: tempfile::TempDir,
}

/// The configuration a test server runs with; `overrides` replace or add
/// variables (an empty value removes one).
pub fn test_config(db_url: &str, overrides: &[(&str, &str)]) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", db_url),
        ("JWT_SECRET", crate::api::JWT_SECRET),
        ("ENCRYPTION_KEY", ENCRYPTION_KEY_HEX),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = Config::load(|k| vars.get(k).cloned(), dir.path()).unwrap();
    (config, dir)
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let db = TestDb::new(backend).await;
    serve_on(db, overrides).await
}

/// Serves an existing database (a second "process" on the same database).
pub async fn serve_on(db: TestDb, overrides: &[(&str, &str)]) -> TestApp {
    serve_with(db, overrides, None).await
}

/// Serves with a given payment gateway instead of the configured one.
pub async fn serve_with(
    db: TestDb,
    overrides: &[(&str, &str)],
    gateway: Option<Arc<dyn klubz_ledger::stripe::gateway::PaymentGateway>>,
) -> TestApp {
    let (config, dir) = test_config(&db.url, overrides);
    let config = Arc::new(config);
    let state = match gateway {
        Some(g) => AppState::with_gateway(db.store.clone(), config, Some(g)),
        None => AppState::new(db.store.clone(), config),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        db,
        state,
        stop: Some(stop),
        _config_dir: dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn sign(body: &[u8]) -> String {
    signature::header(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), body)
}

impl TestApp {
    /// Posts raw bytes with the given signature header (or none).
    pub async fn post_raw(&self, body: Vec<u8>, signature: Option<String>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(format!("{}/api/payments/webhook", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Posts a Stripe event, signed with the configured secret.
    pub async fn webhook(&self, event: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let sig = sign(&body);
        self.post_raw(body, Some(sig)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }
}

/// A `klubz-ledger serve` child process (the real binary) and its captured
/// stdout.
pub struct Server {
    pub child: tokio::process::Child,
    pub base: String,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts `klubz-ledger serve` in `dir` with `env` on a free port.
pub async fn start_server(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    start_server_as(None, dir, env).await
}

/// `klubz-ledger serve` in `dir` with `env`, on a free port, JSON logs; as
/// the given user (a uid of the machine's, `setpriv`) if one is given.
pub fn serve_command(
    uid: Option<u32>,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Command {
    let exe = env!("CARGO_BIN_EXE_klubz-ledger");
    let mut cmd = match uid {
        None => std::process::Command::new(exe),
        Some(uid) => {
            let mut c = std::process::Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--", exe]);
            c
        }
    };
    cmd.arg("serve")
        .current_dir(dir)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied());
    cmd
}

/// `start_server`, the process running as the given user (a uid of the
/// machine's, `setpriv`) instead of this test's: root ignores file modes.
pub async fn start_server_as(
    uid: Option<u32>,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Server {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::from(serve_command(uid, dir, env));
    cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut addr_tx = Some(addr_tx);
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if line.contains("klubz-ledger listening") {
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                if let (Some(tx), Some(a)) = (addr_tx.take(), v["address"].as_str()) {
                    let _ = tx.send(a.to_string());
                }
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = addr_rx.await.expect("server printed its address");
    Server {
        child,
        base: format!("http://{addr}"),
        lines,
    }
}

impl Server {
    /// Stops the server (SIGTERM, graceful) and returns everything it logged.
    pub async fn stop(mut self) -> Vec<String> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.child.wait().await;
        self.lines.lock().unwrap().clone()
    }

    /// Posts a Stripe event signed with [`WEBHOOK_SECRET`] (the server must
    /// run with [`test_env`]).
    pub async fn webhook(&self, event: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let res = reqwest::Client::new()
            .post(format!("{}/api/payments/webhook", self.base))
            .header("content-type", "application/json")
            .header("stripe-signature", sign(&body))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }
}

/// The environment of [`test_config`] for a `serve` process.
pub fn test_env(db_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db_url.to_string()),
        ("JWT_SECRET", crate::api::JWT_SECRET.to_string()),
        ("ENCRYPTION_KEY", ENCRYPTION_KEY_HEX.to_string()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
    ]
}
