//! The `klubz-ledger` binary as an operator runs it.

use crate::app::start_server;
use crate::helpers::admin_url;
use std::path::Path;
use std::process::{Command, Output};

fn ledger(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klubz-ledger"));
    cmd.args(args).current_dir(dir);
    for var in [
        "DATABASE_URL",
        "ENVIRONMENT",
        "JWT_SECRET",
        "ENCRYPTION_KEY",
        "STRIPE_WEBHOOK_SECRET",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run klubz-ledger")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn repo_migrations() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A copy of the real migrations tree that a test may break.
fn copy_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for dialect in ["sqlite", "postgres"] {
        let to = dir.path().join("migrations").join(dialect);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(repo_migrations().join(dialect)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    dir
}

#[test]
fn check_migrations_passes_on_the_real_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = repo_migrations();
    let out = ledger(
        dir.path(),
        &["check-migrations", "--dir", tree.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("migrations ok"));
}

#[test]
fn check_migrations_names_a_gap_a_duplicate_and_a_one_dialect_file() {
    let existing = std::fs::read_dir(repo_migrations().join("sqlite"))
        .unwrap()
        .count();
    let gap = format!("{:04}_late.sql", existing + 2);
    let one_dialect = format!("{:04}_only_here.sql", existing + 1);
    // (case, files to add as (dialect, name), the file the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 3] = [
        ("gap", vec![("sqlite", &gap), ("postgres", &gap)], &gap),
        (
            "duplicate",
            vec![("sqlite", "0002_again.sql"), ("postgres", "0002_again.sql")],
            "0002_again.sql",
        ),
        ("one dialect", vec![("sqlite", &one_dialect)], &one_dialect),
    ];
    for (name, files, named) in cases {
        let tree = copy_tree();
        for (dialect, file) in &files {
            std::fs::write(
                tree.path().join("migrations").join(dialect).join(file),
                "SELECT 1;",
            )
            .unwrap();
        }
        let out = ledger(tree.path(), &["check-migrations"], &[]);
        assert!(!out.status.success(), "{name}: {}", text(&out));
        assert!(text(&out).contains(named), "{name}: {}", text(&out));
    }
}

fn edited_applied_migration_is_refused(database_url: &str) {
    let tree = copy_tree();
    let env = [("DATABASE_URL", database_url)];
    let out = ledger(tree.path(), &["migrate"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let out = ledger(tree.path(), &["check-migrations"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("applied"), "{}", text(&out));

    let dialect = if database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let file = tree
        .path()
        .join("migrations")
        .join(dialect)
        .join("0001_event_log.sql");
    let mut sql = std::fs::read_to_string(&file).unwrap();
    sql.push_str("\n-- an innocent-looking edit\n");
    std::fs::write(&file, sql).unwrap();
    let out = ledger(tree.path(), &["check-migrations"], &env);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0001_event_log.sql") && text(&out).contains("edited"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_migrations_refuses_an_edited_applied_migration_sqlite() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("applied.db").display());
    edited_applied_migration_is_refused(&url);
}

#[tokio::test]
async fn check_migrations_refuses_an_edited_applied_migration_postgres() {
    let url = crate::helpers::create_pg_database().await;
    tokio::task::spawn_blocking(move || edited_applied_migration_is_refused(&url))
        .await
        .unwrap();
}

#[test]
fn smoke_passes_on_embedded_sqlite_with_database_url_unset() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger(dir.path(), &["smoke"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "smoke ok"));
    // Secrets were generated once, private to the owner.
    assert!(dir.path().join("klubz-ledger.secrets").exists());
}

/// `bench` at a tiny size: every step runs and checks itself (loadgen's
/// read-back, the rebuild against the projections), and the report has
/// each figure with its ratio. No figure is judged: speed is not tested.
fn bench_runs_every_step(database_url: Option<&str>, backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &str)> = database_url
        .map(|u| ("DATABASE_URL", u))
        .into_iter()
        .collect();
    let out = ledger(
        dir.path(),
        &[
            "bench",
            "--events",
            "600",
            "--http-events",
            "120",
            "--concurrency",
            "8",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], backend);
    let figures = report["figures"].as_array().unwrap();
    let names: Vec<&str> = figures
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "storage baseline (bare rows)",
            "append+project in process",
            "HTTP ingest (loadgen)",
            "log scan",
            "rebuild (scan + fold every booking)"
        ]
    );
    let count = |i: usize| figures[i]["count"].as_u64().unwrap();
    assert_eq!(count(0), 600);
    assert_eq!(count(1), 600 / 6 * 3, "three webhooks per booking");
    assert_eq!(count(2), 120, "every webhook acknowledged");
    assert_eq!(count(3), count(4), "the rebuild read the whole log");
    assert_eq!(figures[1]["ratioAgainst"], "baseline");
    assert_eq!(figures[4]["ratioAgainst"], "scan");
    assert!(figures[2]["p99Ms"].as_f64().is_some());
}

#[test]
fn bench_runs_every_step_on_sqlite() {
    bench_runs_every_step(None, "sqlite");
}

#[test]
fn bench_runs_every_step_on_postgres() {
    bench_runs_every_step(Some(admin_url().as_str()), "postgres");
}

/// The crash harness at a small size (docs/RELIABILITY.md has the full
/// run): `serve` killed with SIGKILL three times under keyed API writes and
/// webhooks; every acknowledged request exists exactly once afterwards and
/// the ledger verifies, or the command fails.
fn chaos_survives_kills(database_url: Option<&str>, backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &str)> = database_url
        .map(|u| ("DATABASE_URL", u))
        .into_iter()
        .collect();
    let out = ledger(
        dir.path(),
        &[
            "chaos",
            "--kills",
            "3",
            "--bookings",
            "12",
            "--seed",
            "11",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], backend);
    assert_eq!(report["kills"], 3, "{report}");
    assert_eq!(report["apiWrites"], 48);
    assert_eq!(report["webhooks"], 36);
    assert_eq!(report["eventsStored"], 48 + 36);
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[test]
fn chaos_survives_kills_on_sqlite() {
    chaos_survives_kills(None, "sqlite");
}

#[test]
fn chaos_survives_kills_on_postgres() {
    chaos_survives_kills(Some(admin_url().as_str()), "postgres");
}

/// `demo` with no configuration: exits 0, and every state it prints is
/// what the database it leaves says (the projection `GET /api/bookings/:id`
/// answers from), and the day's refusals and exclusions are shown.
#[tokio::test]
async fn demo_runs_and_prints_what_the_database_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger(dir.path(), &["demo"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("\nverify: ok"), "{printed}");
    for reason in [
        "superseded_intent",
        "metadata_mismatch",
        "SIGNATURE",
        "CONFLICT",
    ] {
        assert!(printed.contains(reason), "{reason} missing:\n{printed}");
    }
    let kept = printed
        .lines()
        .find_map(|l| l.strip_prefix("The database is kept in "))
        .and_then(|l| l.split(". Explore").next())
        .expect("the demo names its directory");
    let url = format!("sqlite://{kept}/demo.db");
    let config = klubz_ledger::config::Config::load(|_| None, dir.path()).unwrap();
    let store = klubz_ledger::store::open(&url, config.encryption_key.chain_key())
        .await
        .unwrap();
    let mut states = std::collections::BTreeMap::new();
    let table: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("rider"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 7, "{printed}");
    for line in table {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let b = store.booking(cols[2]).await.unwrap().unwrap();
        assert_eq!(
            (b.status.as_str(), b.payment_status.as_str()),
            (cols[3], cols[4]),
            "{line}"
        );
        states.insert(cols[0].to_string(), cols[4].to_string());
    }
    let want = [
        ("alice", "paid"),
        ("bob", "partially_refunded"),
        ("carol", "refunded"),
        ("dave", "unpaid"),
        ("erin", "paid"),
        ("frank", "charged_back"),
        ("grace", "paid"),
    ];
    for (who, status) in want {
        assert_eq!(
            states.get(who).map(String::as_str),
            Some(status),
            "{printed}"
        );
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(kept);
}

#[test]
fn smoke_passes_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = admin_url();
    let out = ledger(dir.path(), &["smoke"], &[("DATABASE_URL", url.as_str())]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("postgres backend") && text(&out).contains("smoke ok"));
}

#[test]
fn production_without_secrets_refuses_to_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-jwt-secret-that-is-long-enough-to-pass";
    let out = ledger(
        dir.path(),
        &["migrate"],
        &[("ENVIRONMENT", "production"), ("JWT_SECRET", secret)],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ENCRYPTION_KEY"), "{stderr}");
    assert!(!stderr.contains(secret));
    assert!(!dir.path().join("klubz-ledger.secrets").exists());
}

#[test]
fn production_serve_refuses_without_the_stripe_secrets_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        ("ENVIRONMENT", "production"),
        ("JWT_SECRET", "a-jwt-secret-that-is-long-enough-to-pass"),
        (
            "ENCRYPTION_KEY",
            "0101010101010101010101010101010101010101010101010101010101010101",
        ),
        ("BIND_ADDR", "127.0.0.1:0"),
    ];
    let db = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut env = base.to_vec();
    env.push(("DATABASE_URL", db.as_str()));
    let out = ledger(dir.path(), &["serve"], &env);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("STRIPE_WEBHOOK_SECRET"),
        "{}",
        text(&out)
    );
    env.push(("STRIPE_WEBHOOK_SECRET", "whsec_test_prod_0123456789"));
    let out = ledger(dir.path(), &["serve"], &env);
    assert!(!out.status.success());
    assert!(text(&out).contains("STRIPE_SECRET_KEY"), "{}", text(&out));
    assert!(!text(&out).contains("whsec_test_prod"), "never the value");
    assert!(!dir.path().join("p.db").exists(), "refused before opening");
}

/// A database that cannot be opened is named once, with its path or host,
/// and a closed PostgreSQL port fails at once.
#[test]
fn an_unreachable_database_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("x.db");
    let url = format!("sqlite://{}", missing.display());
    let out = ledger(dir.path(), &["migrate"], &[("DATABASE_URL", url.as_str())]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        err.matches(&*missing.display().to_string()).count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("unable to open database file").count(),
        1,
        "{err}"
    );
    let started = std::time::Instant::now();
    let out = ledger(
        dir.path(),
        &["migrate"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/klubz")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("cannot connect to PostgreSQL at 127.0.0.1:1/klubz"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // Not a timing assertion on speed: a refused port must not wait for the
    // pool's 5 s acquire timeout.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{err}"
    );
}

#[test]
fn serve_help_lists_the_configuration_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger(dir.path(), &["serve", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    for needle in [
        "DATABASE_URL",
        "[default: sqlite://klubz-ledger.db]",
        "[default: 127.0.0.1:8787]",
        "STRIPE_WEBHOOK_SECRET",
        "NOTIFY_URL",
    ] {
        assert!(help.contains(needle), "{needle} missing:\n{help}");
    }
}

const CLI_SECRET: &str = "whsec_test_cli_secret_value_42";

fn signed(body: &[u8]) -> String {
    klubz_ledger::stripe::signature::header(CLI_SECRET, chrono::Utc::now().timestamp(), body)
}

#[tokio::test]
async fn serve_logs_follow_the_contract_and_never_leak_secrets_signatures_or_pii() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[("STRIPE_WEBHOOK_SECRET", CLI_SECRET)]).await;
    let client = reqwest::Client::new();
    let email = "leaky.rider@example.com";
    let body = serde_json::to_vec(&serde_json::json!({
        "id": "evt_cli_1", "object": "event", "type": "payment_intent.succeeded",
        "created": 1_790_000_000, "livemode": false,
        "data": {"object": {"id": "pi_cli", "object": "payment_intent", "amount": 100,
            "currency": "zar", "receipt_email": email}}
    }))
    .unwrap();
    let good = signed(&body);
    let url = format!("{}/api/payments/webhook", server.base);
    let ok = client
        .post(&url)
        .header("stripe-signature", &good)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let forged = "t=1790000000,v1=deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
    let bad = client
        .post(&url)
        .header("stripe-signature", forged)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let health = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let lines = server.stop().await;
    let all = lines.join("\n");
    assert!(!all.contains(CLI_SECRET), "the webhook secret was logged");
    let signature_hex = good.split("v1=").nth(1).unwrap();
    assert!(!all.contains(signature_hex), "a signature was logged");
    assert!(
        !all.contains("deadbeefdeadbeef"),
        "a forged signature was logged"
    );
    assert!(!all.contains(email), "payload PII was logged");
    let mut types = std::collections::BTreeSet::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        if let Some(t) = v["type"].as_str() {
            types.insert(t.to_string());
            assert!(
                v["requestId"].is_string() && v["method"].is_string() && v["path"].is_string(),
                "{line}"
            );
        }
    }
    for t in ["request", "response", "handled"] {
        assert!(types.contains(t), "no {t} line in {types:?}");
    }
    let handled: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("\"type\":\"handled\""))
        .collect();
    assert!(handled
        .iter()
        .any(|l| l.contains("WEBHOOK_SIGNATURE_INVALID") && l.contains("\"status\":400")));
}

/// A real `serve` through bad tokens, a valid one, a forged webhook and a
/// deliberate panic (a route only the test build has): the panic is a 500
/// `INTERNAL_ERROR` and one `unhandled` line, the server goes on serving,
/// every stdout line is JSON with its `type`, and no line holds a secret or
/// a bearer token.
#[tokio::test]
#[cfg_attr(
    not(feature = "test-routes"),
    ignore = "needs the test-routes feature (.ci/test enables it)"
)]
async fn a_panic_is_one_500_and_one_unhandled_line_and_nothing_secret_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let notify = "n".repeat(40);
    let server = start_server(
        dir.path(),
        &[
            ("STRIPE_WEBHOOK_SECRET", CLI_SECRET),
            ("NOTIFY_URL", "http://127.0.0.1:9/"),
            ("NOTIFY_SECRET", notify.as_str()),
        ],
    )
    .await;
    let secrets = std::fs::read_to_string(dir.path().join("klubz-ledger.secrets")).unwrap();
    let secret = |name: &str| {
        secrets
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let (jwt, key) = (secret("JWT_SECRET"), secret("ENCRYPTION_KEY"));
    let token = klubz_ledger::auth::mint(
        &jwt,
        "rider-log",
        klubz_ledger::auth::Role::User,
        Some("org-log"),
        chrono::Utc::now().timestamp(),
        600,
    )
    .unwrap();
    let client = reqwest::Client::new();
    let get = |path: &str, bearer: Option<&str>| {
        let mut req = client.get(format!("{}{path}", server.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send()
    };
    assert_eq!(
        get("/api/trips/1", Some("not-a-token"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/api/trips/1", Some(&format!("{token}x")))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/api/trips/1", Some(&token)).await.unwrap().status(),
        404
    );
    let panic = get("/__test/panic", None).await.unwrap();
    assert_eq!(panic.status(), 500);
    let answer: serde_json::Value = panic.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "INTERNAL_ERROR", "{answer}");
    // Still serving.
    assert_eq!(get("/health", None).await.unwrap().status(), 200);
    assert_eq!(get("/", None).await.unwrap().status(), 200);

    let lines = server.stop().await;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["requestId"].is_string() && v["status"].is_number() {
            assert!(
                v["type"].is_string(),
                "an HTTP line without its type: {line}"
            );
        }
    }
    let all = lines.join("\n");
    let listening = lines
        .iter()
        .find(|l| l.contains("klubz-ledger listening"))
        .unwrap();
    assert!(
        listening.contains("SQLite file") && listening.contains("klubz-ledger.db"),
        "serve says which database it opened: {listening}"
    );
    assert!(
        listening.contains("klubz-ledger.secrets"),
        "and where secrets come from: {listening}"
    );
    for (what, value) in [
        ("the JWT secret", jwt.as_str()),
        ("the encryption key", key.as_str()),
        ("the webhook secret", CLI_SECRET),
        ("the notify secret", notify.as_str()),
        ("a bearer token", token.as_str()),
    ] {
        assert!(!all.contains(value), "{what} was logged");
    }
    let unhandled: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("\"type\":\"unhandled\""))
        .collect();
    assert_eq!(unhandled.len(), 1, "{unhandled:?}");
    assert!(unhandled[0].contains("/__test/panic") && unhandled[0].contains("\"status\":500"));
}

#[tokio::test]
async fn two_serve_processes_on_one_postgres_database_store_an_event_once() {
    let url = crate::helpers::create_pg_database().await;
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_WEBHOOK_SECRET", CLI_SECRET),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The same ENCRYPTION_KEY for both (it is checked against the database).
    let key = "1f".repeat(32);
    let env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([
            ("ENCRYPTION_KEY", key.as_str()),
            ("JWT_SECRET", "cli-test-jwt-secret-0123456789abcdef"),
        ])
        .collect();
    let a = start_server(d1.path(), &env).await;
    let b = start_server(d2.path(), &env).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "id": "evt_two_procs", "object": "event", "type": "payment_intent.processing",
        "created": 1_790_000_000, "livemode": false,
        "data": {"object": {"id": "pi_two", "object": "payment_intent", "amount": 100, "currency": "zar"}}
    }))
    .unwrap();
    let sig = signed(&body);
    let client = reqwest::Client::new();
    let posts: Vec<_> = (0..20)
        .map(|i| {
            let base = if i % 2 == 0 { &a.base } else { &b.base };
            client
                .post(format!("{base}/api/payments/webhook"))
                .header("stripe-signature", &sig)
                .body(body.clone())
                .send()
        })
        .collect();
    let mut fresh = 0;
    for r in futures::future::join_all(posts).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        if v.get("replay").is_none() {
            fresh += 1;
        }
    }
    assert_eq!(
        fresh, 1,
        "one process stores it, every other answer is a replay"
    );
    a.stop().await;
    b.stop().await;
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE idempotency_key = 'stripe:evt_two_procs'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

/// Invariant 9 across processes: two `serve` processes with `NOTIFY_URL`
/// on one PostgreSQL database deliver every side-effect message once, in
/// order per booking, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_processes_deliver_each_message_once() {
    let url = crate::helpers::create_pg_database().await;
    let rx = crate::dispatch::receiver(0).await;
    let key = "2e".repeat(32);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_WEBHOOK_SECRET", CLI_SECRET),
        ("ENCRYPTION_KEY", key.as_str()),
        ("JWT_SECRET", "cli-test-jwt-secret-0123456789abcdef"),
        ("NOTIFY_URL", rx.url.as_str()),
        ("NOTIFY_SECRET", crate::dispatch::NOTIFY_SECRET),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_server(d1.path(), &env).await;
    let b = start_server(d2.path(), &env).await;
    // Writes from a third engine on the same database: 15 bookings
    // accepted then cancelled, 30 messages.
    let master = klubz_ledger::crypto::MasterKey::parse_hex(&key).unwrap();
    let store = klubz_ledger::store::open(&url, master.chain_key())
        .await
        .unwrap();
    let db = crate::helpers::TestDb::on(store, &url);
    for n in 0..15 {
        let (trip, booking) = (format!("t{n}"), format!("b{n}"));
        db.publish(&trip, "d1", 4, 1000).await;
        db.request(&booking, &trip, &format!("u{n}"), 1).await;
        db.accept(&booking, "d1").await.unwrap();
        db.submit(klubz_ledger::domain::Command::CancelBooking {
            booking_id: booking,
            actor: "d1".into(),
        })
        .await
        .unwrap();
    }
    rx.wait_for(30, std::time::Duration::from_secs(30)).await;
    let lines_a = a.stop().await;
    let lines_b = b.stop().await;
    let r = rx.received.lock().unwrap();
    let mut ids: Vec<&String> = r.deliveries.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (r.deliveries.len(), ids.len()),
        (30, 30),
        "each message once"
    );
    assert_eq!(r.bad_signatures, 0);
    for n in 0..15 {
        let kinds: Vec<&str> = r
            .deliveries
            .iter()
            .filter(|(_, body)| body["bookingId"] == serde_json::json!(format!("b{n}")))
            .map(|(_, body)| body["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["booking_accepted", "booking_cancelled"], "b{n}");
    }
    for lines in [lines_a, lines_b] {
        assert!(lines
            .iter()
            .any(|l| l.contains("outbox dispatcher started")));
        assert!(
            !lines
                .iter()
                .any(|l| l.contains(crate::dispatch::NOTIFY_SECRET)),
            "the notify secret is never logged"
        );
    }
}

/// Invariant 1: `kill -9` of a serving process under traffic loses no
/// acknowledged event, and what is stored verifies.
async fn kill_9_loses_no_acknowledged_event(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let key_hex = "2a".repeat(32);
    let mut env: Vec<(&str, &str)> = vec![
        ("STRIPE_WEBHOOK_SECRET", CLI_SECRET),
        ("ENCRYPTION_KEY", &key_hex),
        ("JWT_SECRET", "cli-test-jwt-secret-0123456789abcdef"),
    ];
    if let Some(url) = &database_url {
        env.push(("DATABASE_URL", url));
    }
    let server = start_server(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let senders: Vec<_> = (0..8)
        .map(|worker| {
            let (client, base, acked) = (client.clone(), server.base.clone(), acked_tx.clone());
            tokio::spawn(async move {
                for i in 0..100 {
                    let id = format!("evt_kill_{worker}_{i}");
                    let body = serde_json::to_vec(&serde_json::json!({
                        "id": id, "object": "event", "type": "payment_intent.processing",
                        "created": 1_790_000_000 + i, "livemode": false,
                        "data": {"object": {"id": format!("pi_kill_{worker}"), "object": "payment_intent",
                            "amount": 100, "currency": "zar"}}
                    }))
                    .unwrap();
                    let sent = client
                        .post(format!("{base}/api/payments/webhook"))
                        .header("stripe-signature", signed(&body))
                        .body(body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            let _ = acked.send(id);
                        }
                        _ => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    drop(acked_tx);
    // Kill -9 once 50 deliveries were acknowledged, mid-traffic.
    let mut acked = Vec::new();
    let pid = server.child.id().unwrap();
    while let Some(id) = acked_rx.recv().await {
        acked.push(id);
        if acked.len() == 50 {
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        }
    }
    for s in senders {
        let _ = s.await;
    }
    assert!(
        acked.len() >= 50,
        "only {} acknowledged before the kill",
        acked.len()
    );
    assert!(acked.len() < 800, "the kill came after all traffic");
    drop(server);

    let url = database_url
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("klubz-ledger.db").display()));
    let master = klubz_ledger::crypto::MasterKey::parse_hex(&key_hex).unwrap();
    let store = klubz_ledger::store::open(&url, master.chain_key())
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<String> = store
        .read_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.idempotency_key)
        .collect();
    for id in &acked {
        assert!(
            keys.contains(&format!("stripe:{id}")),
            "acknowledged {id} lost after kill -9"
        );
    }
    let report = klubz_ledger::store::verify::verify(store.as_ref(), &master.chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_traffic_loses_no_acknowledged_event_sqlite() {
    kill_9_loses_no_acknowledged_event(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_traffic_loses_no_acknowledged_event_postgres() {
    kill_9_loses_no_acknowledged_event(Some(crate::helpers::create_pg_database().await)).await;
}
