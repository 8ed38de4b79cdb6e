//! Storage faults the engine must heal from on its own (issue 11): an
//! SQLite disk that fills up and is freed, an SQLite file made read-only
//! and writable again, and a private PostgreSQL cluster (never the shared
//! one) that is stopped and started, or hung (SIGSTOP) and resumed. In
//! each: refused writes answer 503, `/health` answers 503, nothing
//! acknowledged is lost, nothing is stored twice, and once the cause goes
//! the same process serves again without a restart.
//!
//! These need root (a tmpfs mount, `runuser postgres`, `setpriv`): CI runs
//! as root. Without it they fail, saying why; they never skip.

use crate::app::*;
use crate::helpers::*;
use klubz_ledger::store::Timeouts;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (these fault tests need root, as CI runs)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed (these fault tests need root, as CI runs): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()));
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `path` until it refuses another byte.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [65_536usize, 4096, 512, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).and_then(|()| f.sync_all()).is_ok() {}
    }
}

async fn health(app: &TestApp) -> (StatusCode, Value) {
    app.get("/health").await
}

fn unbound_event(id: &str) -> Value {
    event(
        id,
        "payment_intent.processing",
        10,
        intent(&format!("pi_{id}"), 700),
    )
}

/// Delivers until answered 200 (a real request each time; the storage
/// came back, the process finds out on its next attempt).
async fn deliver_until_acknowledged(app: &TestApp, body: &Value) -> Value {
    for _ in 0..500 {
        let (status, answer) = app.webhook(body).await;
        if status == StatusCode::OK {
            return answer;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    }
    panic!("never acknowledged after the storage came back: {body}");
}

async fn healthy_again(app: &TestApp) {
    for _ in 0..500 {
        if health(app).await.0 == StatusCode::OK {
            return;
        }
    }
    panic!("/health never came back to 200");
}

async fn assert_stored_once(db: &TestDb, ids: &[String]) {
    let keys: Vec<String> = db
        .store
        .read_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.idempotency_key)
        .collect();
    for id in ids {
        let n = keys
            .iter()
            .filter(|k| **k == format!("stripe:{id}"))
            .count();
        assert_eq!(n, 1, "{id} stored {n} times");
    }
    assert_eq!(keys.len(), ids.len(), "nothing else stored");
    let report = klubz_ledger::store::verify::verify(db.store.as_ref(), &chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_disk_full_then_freed_heals_itself() {
    let fs = Tmpfs::new("3m");
    let url = format!("sqlite://{}", fs.path().join("ledger.db").display());
    let store = klubz_ledger::store::open(&url, chain_key()).await.unwrap();
    let app = serve_on(TestDb::with_store(Backend::Sqlite, &url, store), &[]).await;
    let mut acked = Vec::new();
    let first = "evt_before_full".to_string();
    assert_eq!(app.webhook(&unbound_event(&first)).await.0, StatusCode::OK);
    acked.push(first);

    fill(&fs.path().join("filler"));
    // Deliveries go on until the full disk refuses one (the WAL may
    // still have room for a few).
    let mut refused = None;
    for i in 0..2000 {
        let id = format!("evt_full_{i}");
        let (status, answer) = app.webhook(&unbound_event(&id)).await;
        match status {
            StatusCode::OK => acked.push(id),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(answer["error"]["code"], "STORAGE_UNAVAILABLE", "{answer}");
                refused = Some(id);
                break;
            }
            other => panic!("{other}: {answer}"),
        }
    }
    let refused = refused.expect("a full disk never refused a write");
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["writer"], "failing", "{body}");
    // Still full: still refused, and nothing half-written.
    assert_eq!(
        app.webhook(&unbound_event(&refused)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    std::fs::remove_file(fs.path().join("filler")).unwrap();
    deliver_until_acknowledged(&app, &unbound_event(&refused)).await;
    acked.push(refused);
    healthy_again(&app).await;
    let after = "evt_after_full".to_string();
    assert_eq!(app.webhook(&unbound_event(&after)).await.0, StatusCode::OK);
    acked.push(after);
    assert_stored_once(&app.db, &acked).await;
}

/// A PostgreSQL cluster of the test's own, in a temporary directory, on a
/// free port; stopped for good when dropped.
struct Cluster {
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql (.ci/test installs them)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path()));
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            data,
            bin,
            port,
            _dir: dir,
        };
        cluster.pg_ctl_start();
        cluster
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .args(["-o", &options, "-w", "start"]));
    }

    fn stop(&self) {
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]));
    }

    fn postmaster(&self) -> String {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string()
    }

    /// Every process of the cluster stops (SIGSTOP) or goes on (SIGCONT):
    /// connections stay open and nothing answers, as in a hung host.
    fn signal(&self, sig: &str) {
        let pid = self.postmaster();
        run(Command::new("kill").args([sig, &pid]));
        let _ = Command::new("pkill").args([sig, "-P", &pid]).status();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            self.signal("-CONT");
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .status();
        }
    }
}

async fn on_cluster(cluster: &Cluster) -> TestApp {
    let url = cluster.url();
    let store = klubz_ledger::store::open_with(
        &url,
        chain_key(),
        Timeouts {
            acquire: Duration::from_millis(500),
            statement: Duration::from_secs(2),
        },
    )
    .await
    .unwrap();
    serve_on(
        TestDb::with_store(Backend::Postgres, &url, store),
        &[
            ("DB_ACQUIRE_TIMEOUT_MS", "500"),
            ("REQUEST_TIMEOUT_MS", "3000"),
        ],
    )
    .await
}

/// A PostgreSQL fault and its cure, on a private cluster: while it lasts a
/// delivery and `/health` answer 503 (the database unreachable, or not
/// answering within the acquire timeout); once cured, the delivery that
/// was refused (or that timed out and may have committed once the database
/// went on: its redelivery is then a replay) is stored once, and the same
/// process is healthy again.
async fn postgres_fault_heals(what: &str, fault: fn(&Cluster), cure: fn(&Cluster)) {
    let cluster = Cluster::start();
    let app = on_cluster(&cluster).await;
    let mut acked = vec![format!("evt_before_{what}")];
    assert_eq!(
        app.webhook(&unbound_event(&acked[0])).await.0,
        StatusCode::OK
    );

    fault(&cluster);
    let during = format!("evt_while_{what}");
    let (status, answer) = app.webhook(&unbound_event(&during)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    // The probe does not hang with the database: a 503 saying so.
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        ["unreachable", "unresponsive"].contains(&body["database"].as_str().unwrap_or_default()),
        "{body}"
    );

    cure(&cluster);
    deliver_until_acknowledged(&app, &unbound_event(&during)).await;
    acked.push(during);
    healthy_again(&app).await;
    assert_stored_once(&app.db, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_then_started_heals_itself() {
    postgres_fault_heals("stopped", Cluster::stop, Cluster::pg_ctl_start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hung_then_resumed_heals_itself() {
    postgres_fault_heals("hung", |c| c.signal("-STOP"), |c| c.signal("-CONT")).await;
}

/// Makes the SQLite file and its WAL and shared-memory files read-only, or
/// writable again, for the `nobody` the server runs as.
fn set_writable(db: &Path, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if writable { 0o644 } else { 0o444 };
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

async fn trip_with_key(server: &Server, key: &str) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/api/trips", server.base))
        .bearer_auth(crate::api::token(
            "u-ro-driver",
            klubz_ledger::auth::Role::User,
            Some("org-ro"),
        ))
        .header("idempotency-key", key)
        .json(&serde_json::json!({"title": "Read-only", "seats": 2,
            "pricePerSeatCents": 700, "currency": "zar",
            "departureTime": "2030-01-01T08:00:00Z"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The SQLite file turns read-only under a running engine whose writer has
/// to reopen it (here after another process held the write lock past the
/// busy timeout, which fails a batch and drops the writer's connection).
/// SQLite opens an unwritable file read-only without an error; the writer
/// refuses such a connection, so while it lasts writes answer 503 and
/// `/health` 503, and once the permissions come back the same process
/// writes again, API writes too. File modes do not stop root, so the
/// engine runs as `nobody` here: a real `serve` process. A `serve` started
/// on a read-only file refuses to start, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_read_only_then_writable_heals_itself() {
    const NOBODY: u32 = 65_534;
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("chown")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(dir.path()));
    let db = dir.path().join("ledger.db");
    let url = format!("sqlite://{}", db.display());
    let mut env = test_env(&url);
    env.push(("DB_STATEMENT_TIMEOUT_MS", "300".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start_server_as(Some(NOBODY), dir.path(), &env).await;
    let mut acked = vec!["evt_ro_before".to_string()];
    assert_eq!(
        server.webhook(&unbound_event(&acked[0])).await.0,
        StatusCode::OK
    );

    // Another process holds the write lock: the batch fails after the busy
    // timeout and the writer drops its connection.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let during = "evt_ro_during".to_string();
    let (status, answer) = server.webhook(&unbound_event(&during)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    // The file turns read-only before the writer opens it again.
    set_writable(&db, false);
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    let (status, answer) = server.webhook(&unbound_event(&during)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "STORAGE_UNAVAILABLE", "{answer}");
    let (status, answer) = trip_with_key(&server, "ro-trip").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let (status, body) = server.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["database"].as_str(), body["writer"].as_str()),
        (Some("ok"), Some("failing")),
        "reads work, writes do not: {body}"
    );

    set_writable(&db, true);
    let mut healed = false;
    for _ in 0..500 {
        let (status, answer) = server.webhook(&unbound_event(&during)).await;
        if status == StatusCode::OK {
            healed = true;
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    }
    assert!(healed, "never acknowledged after the file became writable");
    acked.push(during);
    // The first API write after the cure succeeds: a pooled connection
    // opened while the file was read-only fails once, retires the others
    // opened before it, and the statement runs again on a fresh one.
    let (status, trip) = trip_with_key(&server, "ro-trip-after").await;
    assert_eq!(status, StatusCode::CREATED, "{trip}");
    let mut trips_made = 1;
    // The key refused meanwhile: reusable (201), or, when the refusal
    // itself could not be recorded on the read-only file, still claimed
    // until its lease runs out (409) — never a second trip for it.
    let (status, again) = trip_with_key(&server, "ro-trip").await;
    match status {
        StatusCode::CREATED => trips_made += 1,
        StatusCode::CONFLICT => {
            assert_eq!(again["error"]["code"], "IDEMPOTENCY_CONFLICT", "{again}")
        }
        other => panic!("{other}: {again}"),
    }
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    let after = "evt_ro_after".to_string();
    assert_eq!(
        server.webhook(&unbound_event(&after)).await.0,
        StatusCode::OK
    );
    acked.push(after);
    let logs = server.stop().await.join("\n");
    assert!(
        logs.contains("attempt to write a readonly database"),
        "the refusals name the cause in the log"
    );

    // Started on a read-only file: refused at once, saying why.
    set_writable(&db, false);
    let out = serve_command(Some(NOBODY), dir.path(), &env)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("read-only"), "{said}");
    set_writable(&db, true);

    // As root, after the server: each acknowledged event once, the chain
    // intact, and the one trip.
    let store = klubz_ledger::store::open(&url, chain_key()).await.unwrap();
    let db = TestDb::with_store(Backend::Sqlite, &url, store);
    let events = db.store.read_after(0, 100_000).await.unwrap();
    let trips = events.iter().filter(|e| e.kind == "TripPublished").count();
    assert_eq!(trips, trips_made, "one trip per key that was answered 201");
    let webhooks: Vec<String> = events
        .iter()
        .filter(|e| e.idempotency_key.starts_with("stripe:"))
        .map(|e| e.idempotency_key.clone())
        .collect();
    let want: Vec<String> = acked.iter().map(|id| format!("stripe:{id}")).collect();
    assert_eq!(webhooks, want, "each acknowledged event once, in order");
    let report = klubz_ledger::store::verify::verify(db.store.as_ref(), &chain_key())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}
