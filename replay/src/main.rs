//! `klubz-replay`: the operators' tool. A thin shell over `klubz_replay`
//! (the library): parse the command line, open the store named by the
//! engine's configuration, run the command, map its result to an exit code.

use clap::{Parser, Subcommand};
use klubz_ledger::config::Config;
use klubz_replay::{Operator, SideEffectsAction};
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
    /// Dry run: rebuild projections from the log, show each booking or trip
    /// whose state would change (before → after) and the side-effect
    /// messages never produced; print the plan id.
    Plan {
        /// Only these bookings (and their trips); repeatable.
        #[arg(long = "booking")]
        bookings: Vec<String>,
        /// Write the plan here, for apply.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Apply a plan: refused if the log moved past it; pauses side effects,
    /// rebuilds in one transaction with an audit record, and leaves side
    /// effects paused unless --resume-side-effects.
    Apply {
        #[arg(long)]
        plan: std::path::PathBuf,
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        resume_side_effects: bool,
    },
    /// Ingest Stripe events recovered from Stripe's Events API (a JSON list
    /// response, or one event per line) through the engine's idempotent
    /// path, marked operator_import; duplicates are skipped; audited.
    Import {
        file: std::path::PathBuf,
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List events from Stripe's Events API (STRIPE_SECRET_KEY,
    /// STRIPE_API_BASE), only those Stripe failed to deliver unless --all,
    /// and ingest them like import; goes on from the last run's checkpoint.
    CatchUp {
        /// RFC 3339 time to start from (default: the checkpoint, else 3 days ago).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Pause, resume or show the delivery of side-effect messages.
    SideEffects {
        #[command(subcommand)]
        action: SideEffectsCmd,
    },
    /// The audit records (operator actions), newest first.
    Audit {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SideEffectsCmd {
    /// Stop every engine's dispatcher (audited; requires --operator and --reason).
    Pause {
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deliver again what waited (audited; requires --operator and --reason).
    Resume {
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Paused or active, and how many messages wait.
    Status {
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
    match run(cli.command, &config).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(false)`: the command ran and found a problem (exit 1).
async fn run(command: Cmd, config: &Config) -> anyhow::Result<bool> {
    let chain_key = config.encryption_key.chain_key();
    // Refuse before touching the database when who and why are missing.
    let operator =
        |o: &Option<String>, r: &Option<String>| Operator::new(o.as_deref(), r.as_deref());
    let needs = match &command {
        Cmd::Apply {
            operator: o,
            reason: r,
            ..
        } => Some(operator(o, r)?),
        Cmd::Import {
            operator: o,
            reason: r,
            ..
        }
        | Cmd::CatchUp {
            operator: o,
            reason: r,
            ..
        } => Some(operator(o, r)?),
        Cmd::SideEffects {
            action:
                SideEffectsCmd::Pause {
                    operator: o,
                    reason: r,
                    ..
                }
                | SideEffectsCmd::Resume {
                    operator: o,
                    reason: r,
                    ..
                },
        } => Some(operator(o, r)?),
        _ => None,
    };
    let store = klubz_ledger::store::open(&config.database_url, chain_key.clone()).await?;
    let store = store.as_ref();
    let mut out = std::io::stdout().lock();
    match command {
        Cmd::Verify { json } => klubz_replay::verify(store, &chain_key, json, &mut out).await,
        Cmd::Plan {
            bookings,
            out: file,
            json,
        } => {
            let progress = klubz_replay::progress_bar(json);
            let plan = klubz_replay::plan::plan(store, &bookings, &progress).await?;
            if let Some(file) = file {
                std::fs::write(&file, plan.to_json().to_string())
                    .map_err(|e| anyhow::anyhow!("write {}: {e}", file.display()))?;
            }
            klubz_replay::plan::write_plan(&plan, json, &mut out)?;
            Ok(true)
        }
        Cmd::Apply {
            plan,
            resume_side_effects,
            ..
        } => {
            let text = std::fs::read_to_string(&plan)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", plan.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a plan: {e}", plan.display()))?;
            let plan = klubz_replay::plan::Plan::from_json(&value)?;
            let operator = needs.ok_or_else(|| anyhow::anyhow!("operator missing"))?;
            klubz_replay::plan::apply(store, &plan, &operator, resume_side_effects, &mut out)
                .await?;
            Ok(true)
        }
        Cmd::Import { file, json, .. } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", file.display()))?;
            let operator = needs.ok_or_else(|| anyhow::anyhow!("operator missing"))?;
            let progress = klubz_replay::progress_bar(json);
            let report = klubz_replay::import(
                store,
                &config.encryption_key.payload_cipher(),
                config.stripe_livemode,
                &file.display().to_string(),
                &text,
                &operator,
                json,
                &progress,
                &mut out,
            )
            .await?;
            Ok(report.invalid == 0)
        }
        Cmd::CatchUp {
            since, all, json, ..
        } => {
            let since = since
                .map(|s| {
                    chrono::DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|e| anyhow::anyhow!("--since {s:?} is not an RFC 3339 time: {e}"))
                })
                .transpose()?;
            let key = config.stripe_secret_key.as_ref().ok_or_else(|| {
                anyhow::anyhow!("STRIPE_SECRET_KEY is not set: catch-up reads Stripe's Events API")
            })?;
            let api = klubz_ledger::stripe::events_api::EventsApi::new(
                &config.stripe_api_base,
                key.expose(),
            )?;
            let operator = needs.ok_or_else(|| anyhow::anyhow!("operator missing"))?;
            let progress = klubz_replay::progress_bar(json);
            let report = klubz_replay::catch_up(
                store,
                &config.encryption_key.payload_cipher(),
                config.stripe_livemode,
                &api,
                since,
                all,
                &operator,
                chrono::Utc::now(),
                json,
                &progress,
                &mut out,
            )
            .await?;
            Ok(report.import.invalid == 0)
        }
        Cmd::SideEffects { action } => {
            let (action, json) = match action {
                SideEffectsCmd::Pause { json, .. } => (SideEffectsAction::Pause, json),
                SideEffectsCmd::Resume { json, .. } => (SideEffectsAction::Resume, json),
                SideEffectsCmd::Status { json } => (SideEffectsAction::Status, json),
            };
            klubz_replay::side_effects(store, action, needs, json, &mut out).await?;
            Ok(true)
        }
        Cmd::Audit { json } => {
            klubz_replay::audit(store, json, &mut out).await?;
            Ok(true)
        }
    }
}
