//! The `klubz-ledger` command line: a thin shell over the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use klubz_ledger::config::{Config, Environment};
use klubz_ledger::store::migrations::{check_applied, check_tree, Dialect};
use klubz_ledger::store::postgres::PgStore;
use klubz_ledger::store::sqlite::SqliteStore;
use std::path::PathBuf;
use std::process::ExitCode;

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

#[derive(Subcommand)]
enum Cmd {
    /// Apply pending migrations to DATABASE_URL.
    Migrate,
    /// Check migration numbering in the tree (contiguous, no duplicates, the
    /// same numbers in both dialects) and that no applied migration was edited.
    CheckMigrations {
        /// The migrations directory (with sqlite/ and postgres/ inside).
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
    /// Run one booking from publication to full refund on a fresh temporary
    /// database of the configured kind, verify, and print `smoke ok`.
    Smoke,
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
    klubz_ledger::telemetry::init(config.log_format, "warn");
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
        Cmd::Migrate => migrate(&config).await,
        Cmd::CheckMigrations { dir } => check_migrations(&config, &dir).await,
        Cmd::Smoke => smoke(&config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
    let summary =
        klubz_ledger::smoke::run(&config.database_url, config.encryption_key.chain_key()).await?;
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
