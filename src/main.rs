//! The `klubz-ledger` command line: a thin shell over the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use klubz_ledger::config::{Config, Environment};
use klubz_ledger::store::migrations::{check_applied, check_tree, Dialect};
use klubz_ledger::store::postgres::PgStore;
use klubz_ledger::store::sqlite::SqliteStore;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, configured (`.cargo/config.toml`) to give freed memory back
/// to the OS within about a second: with the system allocator a flood's
/// memory stayed resident and crept up flood after flood
/// (docs/RELIABILITY.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The event-sourced payment and booking engine of Klubz.
///
/// Configuration comes from the environment (DATABASE_URL, ENVIRONMENT,
/// JWT_SECRET, ENCRYPTION_KEY, STRIPE_WEBHOOK_SECRET, …); see README.md.
#[derive(Parser)]
#[command(name = "klubz-ledger", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// `serve --help`: the configuration it reads (docs/CONFIGURATION.md has
/// every detail).
const SERVE_ENV: &str = "Configuration (environment variables; docs/CONFIGURATION.md):
  DATABASE_URL            sqlite://PATH or postgres://USER@HOST:PORT/DB [default: sqlite://klubz-ledger.db]
  BIND_ADDR               [default: 127.0.0.1:8787]
  ENVIRONMENT             development | staging | production [default: development]
  JWT_SECRET              >= 32 bytes; required in production (else generated into klubz-ledger.secrets)
  ENCRYPTION_KEY          64 hex characters; required in production (else generated)
  STRIPE_WEBHOOK_SECRET   whsec_..., comma-separated for rotation; required in production (else generated)
  STRIPE_SECRET_KEY       required in production; unset elsewhere: the offline development gateway
  STRIPE_API_BASE         [default: https://api.stripe.com]
  STRIPE_LIVEMODE         true | false [default: true in production, else false]
  WEBHOOK_TOLERANCE_SECS  [default: 300]
  NOTIFY_URL              where side-effect messages are POSTed; unset: they wait in the outbox
  NOTIFY_SECRET           signs them; >= 32 bytes, required with NOTIFY_URL in production
  LOG_FORMAT              json | pretty [default: json]
  RUST_LOG                log filter [default: info]
Limits (docs/CONFIGURATION.md#limits):
  REQUEST_TIMEOUT_MS      a request's deadline, then 503 DEADLINE_EXCEEDED [default: 10000]
  HEADER_READ_TIMEOUT_MS  request headers must arrive within it; idle keep-alive closes [default: 30000]
  BODY_READ_TIMEOUT_MS    the body must arrive within it, else 408 [default: 10000]
  MAX_CONNECTIONS         open connections; more wait in the backlog [default: 1024]
  MAX_IN_FLIGHT           requests being handled; more get 503 OVERLOADED [default: 512]
  MAX_BUFFERED_BODY_BYTES body bytes held by all requests together [default: 16777216]
  DB_ACQUIRE_TIMEOUT_MS   wait for a pooled database connection [default: 1000]
  DB_STATEMENT_TIMEOUT_MS one statement (PostgreSQL statement_timeout, SQLite busy wait) [default: 5000]";

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP server on BIND_ADDR (migrates first).
    #[command(after_help = SERVE_ENV)]
    Serve,
    /// Print a valid Stripe-Signature header for FILE's bytes, signed now
    /// with the configured webhook secret (which is never printed).
    SignWebhook {
        /// The exact body that will be sent.
        file: PathBuf,
    },
    /// Apply pending migrations to DATABASE_URL.
    Migrate,
    /// Check migration numbering in the tree (contiguous, no duplicates, the
    /// same numbers in both dialects) and that no applied migration was edited.
    CheckMigrations {
        /// The migrations directory (with sqlite/ and postgres/ inside).
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
    /// Print a bearer token signed with the configured JWT_SECRET.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// user | admin | super_admin
        #[arg(long)]
        role: String,
        /// The organisation (`orgId`).
        #[arg(long)]
        org: Option<String>,
        /// Lifetime: 90s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Run one booking from publication to full refund on a fresh temporary
    /// database of the configured kind, verify, and print `smoke ok`.
    Smoke,
    /// Load a running engine: create bookings through the API, send signed
    /// webhooks bound to them, report acknowledged events/s and latency,
    /// then read every booking back; exit 1 if any differs from its events.
    Loadgen {
        /// The engine's base URL.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        bookings: usize,
        /// Webhooks in all (at most 5 per booking).
        #[arg(long, default_value_t = 3000)]
        events: usize,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Percent of the events sent twice.
        #[arg(long, default_value_t = 0)]
        duplicates: u8,
        #[arg(long)]
        shuffle: bool,
        #[arg(long)]
        json: bool,
    },
    /// See the engine work: a fresh embedded database in a new directory
    /// (kept), a server on a free port, and a realistic day through real
    /// HTTP; prints every booking, what was refused and why, the side-effect
    /// messages delivered and the verify result.
    Demo,
    /// Measure, in one run on fresh temporary databases of the configured
    /// kind: the storage baseline, append+project in process, HTTP ingest
    /// (loadgen against a server it starts) and a rebuild of every
    /// projection against a plain scan of the log; print them with ratios.
    Bench {
        /// Events in the in-process log (and bare rows of the baseline);
        /// the rebuild reads that log.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Webhooks sent over HTTP (three per booking).
        #[arg(long, default_value_t = 60_000)]
        http_events: usize,
        /// Producers: tasks in process, keep-alive connections over HTTP.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
    /// The crash harness (docs/RELIABILITY.md): on a fresh temporary
    /// database of the configured kind, run `serve` as a child process,
    /// drive it with keyed API writes and signed webhooks while killing it
    /// with SIGKILL at seeded random moments, then check that every
    /// acknowledged event and write exists exactly once, the projections
    /// equal the fold, the chains verify and no message exists twice.
    /// Exits 1 on any problem.
    Chaos {
        /// Seeds the kill moments, the delivery order and the resends.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `kill -9`s of the server.
        #[arg(long, default_value_t = 25)]
        kills: usize,
        /// Bookings: four API writes and three webhooks each.
        #[arg(long, default_value_t = 300)]
        bookings: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Percent of acknowledged webhooks sent again at the end.
        #[arg(long, default_value_t = 10)]
        resend_pct: u32,
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            // One line naming the variable, never its value.
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let level = if matches!(cli.command, Cmd::Serve) {
        "info"
    } else {
        "warn"
    };
    klubz_ledger::telemetry::init(config.log_format, level, matches!(cli.command, Cmd::Serve));
    if !config.generated.is_empty() {
        if let Some(file) = &config.secrets_file {
            tracing::warn!(
                file = %file.display(),
                generated = ?config.generated,
                "development secrets generated and kept in this file; set them in the environment for production"
            );
        }
    }
    let result = match cli.command {
        Cmd::Serve => serve(config).await,
        Cmd::SignWebhook { file } => sign_webhook(&config, &file),
        Cmd::Token {
            sub,
            role,
            org,
            ttl,
        } => token(&config, &sub, &role, org.as_deref(), &ttl),
        Cmd::Migrate => migrate(&config).await,
        Cmd::CheckMigrations { dir } => check_migrations(&config, &dir).await,
        Cmd::Smoke => smoke(&config).await,
        Cmd::Demo => match klubz_ledger::demo::run(&config).await {
            Ok(report) => {
                print!("{}", report.render());
                if report.verify_ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("demo: verify failed"))
                }
            }
            Err(e) => Err(e.context("demo")),
        },
        Cmd::Chaos {
            seed,
            kills,
            bookings,
            concurrency,
            resend_pct,
            json,
        } => {
            let options = klubz_ledger::chaos::Options {
                seed,
                kills,
                bookings,
                concurrency,
                resend_pct,
                server_bin: None,
            };
            match klubz_ledger::chaos::run(&config, &options).await {
                Ok(report) => {
                    if json {
                        println!("{}", report.to_json());
                    } else {
                        print!("{}", report.render());
                    }
                    if report.problems.is_empty() {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!("chaos: {} problems", report.problems.len()))
                    }
                }
                Err(e) => Err(e.context("chaos")),
            }
        }
        Cmd::Bench {
            events,
            http_events,
            concurrency,
            json,
        } => {
            let options = klubz_ledger::bench::Options {
                events,
                http_events,
                concurrency,
            };
            match klubz_ledger::bench::run(&config, &options).await {
                Ok(report) if json => {
                    println!("{}", report.to_json());
                    Ok(())
                }
                Ok(report) => {
                    print!("{}", report.render());
                    Ok(())
                }
                Err(e) => Err(e.context("bench")),
            }
        }
        Cmd::Loadgen {
            url,
            bookings,
            events,
            concurrency,
            duplicates,
            shuffle,
            json,
        } => {
            loadgen(
                klubz_ledger::loadgen::Options {
                    url,
                    bookings,
                    events,
                    concurrency,
                    duplicates,
                    shuffle,
                    jwt_secret: config.jwt_secret.expose().to_string(),
                    webhook_secret: config
                        .webhook_secrets
                        .first()
                        .map(|s| s.expose().to_string())
                        .unwrap_or_default(),
                    seed: rand::random::<u32>().into(),
                    drop_event: None,
                },
                json,
            )
            .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // One line naming the variable, never its value.
    config.check_serve()?;
    for reason in config.degraded_reasons() {
        tracing::warn!(reason = %reason, "degraded: part of the engine's job is off");
    }
    let chain_key = config.encryption_key.chain_key();
    let store = klubz_ledger::store::open_with(
        &config.database_url,
        chain_key,
        klubz_ledger::store::Timeouts::from_limits(&config.limits),
    )
    .await
    .context("open the database")?;
    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("bind {}", config.bind_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        address = %addr,
        backend = store.backend(),
        database = %klubz_ledger::store::describe_url(&config.database_url),
        secrets = %match &config.secrets_file {
            Some(file) if config.environment != Environment::Production =>
                format!("environment, else the development file {}", file.display()),
            _ => "environment".to_string(),
        },
        environment = ?config.environment,
        livemode = config.stripe_livemode,
        "klubz-ledger listening"
    );
    // Background work stops when the server does: the dispatcher finishes
    // the delivery in hand (its attempt is recorded), then the writers
    // commit what is queued.
    let mut supervisor = klubz_ledger::supervisor::Supervisor::new();
    match klubz_ledger::dispatch::for_config(store.clone(), &config) {
        Some(dispatcher) => {
            let signal = supervisor.shutdown_signal();
            supervisor.spawn("outbox dispatcher", dispatcher.run(signal));
        }
        None => tracing::info!("NOTIFY_URL unset: side-effect messages wait in the outbox"),
    }
    let state = klubz_ledger::http::AppState::new(store.clone(), std::sync::Arc::new(config));
    // Production without a key never gets this far (`check_serve`).
    if state.gateway.as_ref().map(|g| g.name()) == Some("offline") {
        tracing::warn!(
            "OFFLINE PAYMENT GATEWAY (development): no STRIPE_SECRET_KEY, PaymentIntents are minted locally as pi_offline_… and no money moves"
        );
    }
    klubz_ledger::http::serve(listener, state, shutdown_signal()).await?;
    supervisor.shutdown(store.as_ref()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn loadgen(options: klubz_ledger::loadgen::Options, json: bool) -> anyhow::Result<()> {
    let report = klubz_ledger::loadgen::run(options)
        .await
        .map_err(|e| anyhow::anyhow!("loadgen: {e}"))?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render());
    }
    if report.ok() {
        Ok(())
    } else {
        anyhow::bail!("loadgen: the engine's state does not match the events it acknowledged")
    }
}

/// Ctrl-C or SIGTERM: stop accepting, finish requests in flight.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn token(
    config: &Config,
    sub: &str,
    role: &str,
    org: Option<&str>,
    ttl: &str,
) -> anyhow::Result<()> {
    let role = klubz_ledger::auth::Role::parse(role)
        .context("--role must be user, admin or super_admin")?;
    let ttl =
        klubz_ledger::auth::parse_ttl(ttl).context("--ttl must look like 90s, 15m, 1h or 2d")?;
    anyhow::ensure!(
        ttl <= klubz_ledger::auth::MAX_TOKEN_LIFETIME_SECS,
        "--ttl must be at most 7d (the longest a token may live)"
    );
    anyhow::ensure!(
        !sub.is_empty() && sub.len() <= 128,
        "--sub must be 1 to 128 characters"
    );
    let now = chrono::Utc::now().timestamp();
    let token = klubz_ledger::auth::mint(config.jwt_secret.expose(), sub, role, org, now, ttl)?;
    println!("{token}");
    Ok(())
}

fn sign_webhook(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let body = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let secret = config
        .webhook_secrets
        .first()
        .context("STRIPE_WEBHOOK_SECRET is not configured")?;
    let now = chrono::Utc::now().timestamp();
    println!(
        "{}",
        klubz_ledger::stripe::signature::header(secret.expose(), now, &body)
    );
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    match Dialect::of_url(&config.database_url) {
        Dialect::Sqlite => SqliteStore::migrate(&config.database_url).await,
        Dialect::Postgres => PgStore::migrate(&config.database_url).await,
    }
    .context("migrate")?;
    println!("migrations applied ({})", redact_url(&config.database_url));
    Ok(())
}

async fn check_migrations(config: &Config, dir: &std::path::Path) -> anyhow::Result<()> {
    let files = match check_tree(dir) {
        Ok(files) => files,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            anyhow::bail!(
                "{} migration problem(s) in {}",
                problems.len(),
                dir.display()
            );
        }
    };
    let dialect = Dialect::of_url(&config.database_url);
    let applied = applied_migrations(&config.database_url, dialect).await?;
    let problems = match &applied {
        Some(applied) => check_applied(applied, &files[dialect.dir_name()]),
        None => Vec::new(),
    };
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        anyhow::bail!("{} applied migration(s) edited or missing", problems.len());
    }
    let per_dialect = files.values().map(Vec::len).max().unwrap_or(0);
    match applied {
        Some(applied) => println!(
            "migrations ok: {per_dialect} per dialect; {} applied to {} unchanged",
            applied.len(),
            redact_url(&config.database_url)
        ),
        None => println!(
            "migrations ok: {per_dialect} per dialect; no database at {} to compare",
            redact_url(&config.database_url)
        ),
    }
    Ok(())
}

/// (version, checksum) of applied migrations, or `None` when the database
/// does not exist yet (nothing applied can have been edited).
async fn applied_migrations(
    url: &str,
    dialect: Dialect,
) -> anyhow::Result<Option<Vec<(i64, Vec<u8>)>>> {
    use sqlx::Connection;
    const SQL: &str =
        "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version";
    let rows: Vec<(i64, Vec<u8>)> = match dialect {
        Dialect::Sqlite => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() || path == ":memory:" || !std::path::Path::new(path).exists() {
                return Ok(None);
            }
            let mut conn = sqlx::SqliteConnection::connect(url)
                .await
                .context("open database")?;
            let exists: Option<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_optional(&mut conn)
            .await?;
            if exists.is_none() {
                return Ok(None);
            }
            sqlx::query_as(SQL).fetch_all(&mut conn).await?
        }
        Dialect::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .context("connect to database")?;
            let exists: Option<String> =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                    .fetch_one(&mut conn)
                    .await?;
            if exists.is_none() {
                return Ok(None);
            }
            sqlx::query_as(SQL).fetch_all(&mut conn).await?
        }
    };
    Ok(Some(rows))
}

async fn smoke(config: &Config) -> anyhow::Result<()> {
    if config.environment == Environment::Production {
        tracing::warn!("smoke runs on a temporary database, never on the configured one");
    }
    let summary = klubz_ledger::smoke::run(config).await?;
    println!("{summary}");
    println!("smoke ok");
    Ok(())
}

/// The URL without credentials, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
