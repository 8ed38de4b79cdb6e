//! `klubz-replay`: the operators' tool. This version has `verify`; `plan`,
//! `apply`, `import`, `side-effects` and `audit` (CONTRACT.md) arrive with
//! the replay issue.

use clap::{Parser, Subcommand};
use klubz_ledger::config::Config;
use klubz_ledger::store::verify::verify;
use std::process::ExitCode;

/// Audited recovery for klubz-ledger (same configuration variables as the engine).
#[derive(Parser)]
#[command(name = "klubz-replay", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check that every hash chain is intact and every projection equals the
    /// fold of its events; exit 1 with a report otherwise.
    Verify {
        /// Machine-readable output.
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
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Cmd::Verify { json } => match run_verify(&config, json).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

async fn run_verify(config: &Config, json: bool) -> anyhow::Result<bool> {
    let chain_key = config.encryption_key.chain_key();
    let store = klubz_ledger::store::open(&config.database_url, chain_key.clone()).await?;
    let report = verify(store.as_ref(), &chain_key).await?;
    if json {
        let value = serde_json::json!({
            "ok": report.is_ok(),
            "events": report.events,
            "streams": report.streams,
            "bookings": report.bookings,
            "trips": report.trips,
            "brokenLink": report.broken_link.as_ref().map(|b| serde_json::json!({
                "seq": b.seq, "stream": b.stream, "streamVersion": b.stream_version, "problem": b.problem,
            })),
            "drift": report.drift.iter().map(|d| serde_json::json!({
                "entity": d.entity, "stored": d.stored, "folded": d.folded,
            })).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        println!(
            "checked {} events in {} streams, {} bookings, {} trips",
            report.events, report.streams, report.bookings, report.trips
        );
        if let Some(b) = &report.broken_link {
            println!("BROKEN CHAIN: {b}");
        }
        for d in &report.drift {
            println!(
                "DRIFT {}: stored {} but the log folds to {}",
                d.entity, d.stored, d.folded
            );
        }
        if report.is_ok() {
            println!("verify ok");
        }
    }
    Ok(report.is_ok())
}
