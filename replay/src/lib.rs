//! `klubz-replay`'s commands, as functions of a store and an output, so they
//! are tested without spawning processes (`main.rs` is a thin clap shell).
//!
//! Every command that changes anything requires an operator and a reason
//! and leaves an audit record: an event on the `operator:ledger` stream,
//! hash-chained like every other (so `verify` also vouches for the audit
//! trail). `audit` lists them.

use anyhow::{bail, Context};
use chrono::Utc;
use klubz_ledger::crypto::PayloadCipher;
use klubz_ledger::domain::decide::OperatorKind;
use klubz_ledger::domain::events::{stream, OperatorAction};
use klubz_ledger::domain::{Command, Event, Source};
use klubz_ledger::ingest::{ingest, Ingested};
use klubz_ledger::store::chain::ChainKey;
use klubz_ledger::store::verify::verify as verify_ledger;
use klubz_ledger::store::{EventStore, Rebuild, Submission};
use serde_json::{json, Value};
use std::io::Write;

/// Who did it and why: required by every command that changes anything.
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub reason: String,
}

impl Operator {
    /// Refuses a missing or blank operator or reason.
    pub fn new(name: Option<&str>, reason: Option<&str>) -> anyhow::Result<Self> {
        let name = name.map(str::trim).unwrap_or_default();
        let reason = reason.map(str::trim).unwrap_or_default();
        if name.is_empty() || reason.is_empty() {
            bail!("--operator and --reason are both required: the audit record says who did this and why");
        }
        Ok(Self {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    }
}

pub mod plan;

/// Appends an audit record (an operator event).
async fn record(
    store: &dyn EventStore,
    kind: OperatorKind,
    operator: &Operator,
    detail: Value,
) -> anyhow::Result<i64> {
    record_with(store, kind, operator, detail, None).await
}

/// Appends an audit record; `rebuild` recomputes those projections in the
/// same transaction (a replay).
pub(crate) async fn record_with(
    store: &dyn EventStore,
    kind: OperatorKind,
    operator: &Operator,
    detail: Value,
    rebuild: Option<Rebuild>,
) -> anyhow::Result<i64> {
    let action = OperatorAction {
        operator: operator.name.clone(),
        reason: operator.reason.clone(),
        detail,
    };
    let mut submission = Submission::new(
        Command::RecordOperatorAction(kind, action),
        Source::Operator,
        Utc::now(),
    )
    .with_key(format!("operator:{}", uuid::Uuid::new_v4()));
    if let Some(rebuild) = rebuild {
        submission = submission.with_rebuild(rebuild);
    }
    let done = store
        .submit(submission)
        .await
        .context("record the audit event")?;
    Ok(done.seq)
}

/// `verify`: exit status `Ok(true)` when every chain is intact and every
/// projection equals the fold of its events.
pub async fn verify(
    store: &dyn EventStore,
    key: &ChainKey,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    // The walk over a large log takes a while: say so on a terminal.
    let spinner = progress_bar(json_out);
    spinner.set_message("verifying hash chains and projections");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = verify_ledger(store, key).await;
    spinner.finish_and_clear();
    let report = report?;
    if json_out {
        let value = json!({
            "ok": report.is_ok(),
            "events": report.events,
            "streams": report.streams,
            "bookings": report.bookings,
            "trips": report.trips,
            "brokenLink": report.broken_link.as_ref().map(|b| json!({
                "seq": b.seq, "stream": b.stream, "streamVersion": b.stream_version, "problem": b.problem,
            })),
            "drift": report.drift.iter().map(|d| json!({
                "entity": d.entity, "stored": d.stored, "folded": d.folded,
            })).collect::<Vec<_>>(),
            "messages": report.messages.iter().map(|m| json!({
                "key": m.key, "problem": m.problem,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "checked {} events in {} streams, {} bookings, {} trips",
            report.events, report.streams, report.bookings, report.trips
        )?;
        if let Some(b) = &report.broken_link {
            writeln!(out, "BROKEN CHAIN: {b}")?;
        }
        for d in &report.drift {
            writeln!(
                out,
                "DRIFT {}: stored {} but the log folds to {}",
                d.entity, d.stored, d.folded
            )?;
        }
        for m in &report.messages {
            writeln!(out, "MESSAGE {}: {}", m.key, m.problem)?;
        }
        if report.is_ok() {
            writeln!(out, "verify ok")?;
        }
    }
    Ok(report.is_ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideEffectsAction {
    Pause,
    Resume,
    Status,
}

/// `side-effects pause|resume|status`. Pausing or resuming takes effect in
/// every engine process sharing the database within a dispatcher poll.
pub async fn side_effects(
    store: &dyn EventStore,
    action: SideEffectsAction,
    operator: Option<Operator>,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let paused = store.side_effects_paused().await?;
    let changed = match action {
        SideEffectsAction::Status => None,
        SideEffectsAction::Pause | SideEffectsAction::Resume => {
            let Some(operator) = operator else {
                bail!("--operator and --reason are both required: the audit record says who did this and why");
            };
            let pause = action == SideEffectsAction::Pause;
            if pause == paused {
                None
            } else {
                let kind = if pause {
                    OperatorKind::SideEffectsPaused
                } else {
                    OperatorKind::SideEffectsResumed
                };
                Some(record(store, kind, &operator, json!({})).await?)
            }
        }
    };
    let now_paused = store.side_effects_paused().await?;
    let pending = store
        .list_outbox(&klubz_ledger::store::OutboxFilter {
            status: Some("pending".into()),
            limit: 1000,
            ..Default::default()
        })
        .await?
        .len();
    if json_out {
        writeln!(
            out,
            "{}",
            json!({"paused": now_paused, "changed": changed.is_some(), "auditSeq": changed, "pendingMessages": pending})
        )?;
    } else {
        let state = if now_paused { "paused" } else { "active" };
        let what = match (action, changed) {
            (SideEffectsAction::Status, _) => String::new(),
            (_, Some(seq)) => format!(" (recorded at seq {seq})"),
            (_, None) => " (unchanged: already so)".into(),
        };
        let more = if pending >= 1000 { "+" } else { "" };
        let noun = if pending == 1 { "message" } else { "messages" };
        writeln!(
            out,
            "side effects: {state}{what}; {pending}{more} {noun} pending"
        )?;
    }
    Ok(())
}

/// `audit`: the audit records, newest first.
pub async fn audit(
    store: &dyn EventStore,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut events = store.read_stream(stream::OPERATOR).await?;
    events.reverse();
    let mut list = Vec::new();
    for stored in &events {
        let action = match stored.recorded()?.event {
            Event::ReplayApplied(a)
            | Event::SideEffectsPaused(a)
            | Event::SideEffectsResumed(a)
            | Event::OperatorImported(a) => a,
            _ => continue,
        };
        let at = stored
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if json_out {
            list.push(json!({
                "seq": stored.seq, "at": at, "kind": stored.kind,
                "operator": action.operator, "reason": action.reason, "detail": action.detail,
            }));
        } else {
            writeln!(
                out,
                "{at}  seq {}  {}  operator={}  reason={:?}  {}",
                stored.seq, stored.kind, action.operator, action.reason, action.detail
            )?;
        }
    }
    if json_out {
        writeln!(out, "{}", Value::Array(list))?;
    } else if events.is_empty() {
        writeln!(out, "no audit records")?;
    }
    Ok(())
}

/// What `import` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub read: usize,
    /// Stored for the first time (applied or not).
    pub new: usize,
    pub applied: usize,
    pub ignored: usize,
    /// Already stored (the same event id).
    pub already_stored: usize,
    /// Lines or list items that are not Stripe events.
    pub invalid: usize,
    pub audit_seq: Option<i64>,
}

/// The events of an import file: a Stripe Events API list response
/// (`{"object":"list","data":[…]}`), a JSON array, or one event per line.
pub fn events_of(text: &str) -> Vec<Result<Value, String>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
            return match value {
                Value::Array(items) => items.into_iter().map(Ok).collect(),
                Value::Object(ref o) if o.get("object") == Some(&json!("list")) => o
                    .get("data")
                    .and_then(Value::as_array)
                    .map(|items| items.iter().cloned().map(Ok).collect())
                    .unwrap_or_default(),
                other => vec![Ok(other)],
            };
        }
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("not JSON: {e}")))
        .collect()
}

/// Feeds Stripe events through the engine's own idempotent path, marked
/// `operator_import`; duplicates are counted, not stored again.
pub async fn ingest_events(
    store: &dyn EventStore,
    cipher: &PayloadCipher,
    livemode: bool,
    events: Vec<Result<Value, String>>,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<ImportReport> {
    let mut report = ImportReport::default();
    progress.set_length(events.len() as u64);
    for item in events {
        report.read += 1;
        progress.inc(1);
        let Ok(value) = item else {
            report.invalid += 1;
            continue;
        };
        let body = serde_json::to_vec(&value)?;
        match ingest(store, cipher, &body, livemode, Source::OperatorImport).await {
            Ok((_, Ingested::Applied { .. })) => {
                report.new += 1;
                report.applied += 1;
            }
            Ok((_, Ingested::Ignored { .. })) => {
                report.new += 1;
                report.ignored += 1;
            }
            Ok((_, Ingested::Replay { .. } | Ingested::ConflictingReplay)) => {
                report.already_stored += 1;
            }
            Err(klubz_ledger::ingest::IngestError::NotAnEvent(_)) => report.invalid += 1,
            Err(e) => return Err(e.into()),
        }
    }
    progress.finish_and_clear();
    Ok(report)
}

/// `import FILE`: audited ingestion of recovered Stripe events.
#[allow(clippy::too_many_arguments)]
pub async fn import(
    store: &dyn EventStore,
    cipher: &PayloadCipher,
    livemode: bool,
    file_name: &str,
    text: &str,
    operator: &Operator,
    json_out: bool,
    progress: &indicatif::ProgressBar,
    out: &mut impl Write,
) -> anyhow::Result<ImportReport> {
    let mut report = ingest_events(store, cipher, livemode, events_of(text), progress).await?;
    report.audit_seq = Some(
        record(
            store,
            OperatorKind::Imported,
            operator,
            json!({
                "command": "import", "file": file_name, "read": report.read, "new": report.new,
                "applied": report.applied, "ignored": report.ignored,
                "alreadyStored": report.already_stored, "invalid": report.invalid,
            }),
        )
        .await?,
    );
    write_import(&report, json_out, out)?;
    Ok(report)
}

fn write_import(report: &ImportReport, json_out: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json_out {
        writeln!(
            out,
            "{}",
            json!({
                "read": report.read, "new": report.new, "applied": report.applied,
                "ignored": report.ignored, "alreadyStored": report.already_stored,
                "invalid": report.invalid, "auditSeq": report.audit_seq,
            })
        )?;
    } else {
        writeln!(
            out,
            "read {} events: {} new ({} applied, {} stored not applied), {} already stored, {} invalid",
            report.read,
            report.new,
            report.applied,
            report.ignored,
            report.already_stored,
            report.invalid
        )?;
    }
    Ok(())
}

/// A progress bar on a terminal; hidden otherwise or for `--json`.
pub fn progress_bar(json_out: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if json_out || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    }
}

/// What `catch-up` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpReport {
    pub since: i64,
    pub pages: usize,
    pub import: ImportReport,
    /// Where the next run starts (`created` of the newest event seen).
    pub checkpoint: i64,
}

/// The checkpoint of the last completed catch-up, from its audit record.
pub async fn catch_up_checkpoint(store: &dyn EventStore) -> anyhow::Result<Option<i64>> {
    let events = store.read_stream(stream::OPERATOR).await?;
    for stored in events.iter().rev() {
        if let Event::OperatorImported(a) = stored.recorded()?.event {
            if a.detail["command"] == "catch-up" {
                return Ok(a.detail["checkpoint"].as_i64());
            }
        }
    }
    Ok(None)
}

/// `catch-up`: lists events from Stripe's Events API (only those Stripe
/// failed to deliver, unless `all`), from `since`, else from the last
/// run's checkpoint, else from three days ago (Stripe retries deliveries
/// for three days), and ingests them like `import`. The audit record keeps
/// the checkpoint; a run that fails midway records none, and the next one
/// starts again from the last (ingesting is idempotent).
#[allow(clippy::too_many_arguments)]
pub async fn catch_up(
    store: &dyn EventStore,
    cipher: &PayloadCipher,
    livemode: bool,
    api: &klubz_ledger::stripe::events_api::EventsApi,
    since: Option<chrono::DateTime<Utc>>,
    all: bool,
    operator: &Operator,
    now: chrono::DateTime<Utc>,
    json_out: bool,
    progress: &indicatif::ProgressBar,
    out: &mut impl Write,
) -> anyhow::Result<CatchUpReport> {
    use klubz_ledger::stripe::events_api::{Query, RETENTION_DAYS};
    let since = match since {
        Some(t) => t.timestamp(),
        None => match catch_up_checkpoint(store).await? {
            Some(checkpoint) => checkpoint,
            None => (now - chrono::Duration::days(3)).timestamp(),
        },
    };
    let age_days = (now.timestamp() - since) / 86_400;
    if age_days >= RETENTION_DAYS - 3 && !json_out {
        writeln!(
            out,
            "warning: catching up from {age_days} days ago; Stripe keeps events {RETENTION_DAYS} days, older ones cannot be recovered"
        )?;
    }
    let mut report = CatchUpReport {
        since,
        checkpoint: since,
        ..CatchUpReport::default()
    };
    let mut starting_after: Option<String> = None;
    loop {
        let page = api
            .list(&Query {
                created_gte: since,
                undelivered_only: !all,
                starting_after: starting_after.clone(),
                limit: 100,
            })
            .await?;
        report.pages += 1;
        starting_after = page
            .events
            .last()
            .and_then(|e| e.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        for e in &page.events {
            if let Some(created) = e.get("created").and_then(Value::as_i64) {
                report.checkpoint = report.checkpoint.max(created);
            }
        }
        let got = ingest_events(
            store,
            cipher,
            livemode,
            page.events.into_iter().map(Ok).collect(),
            progress,
        )
        .await?;
        let r = &mut report.import;
        r.read += got.read;
        r.new += got.new;
        r.applied += got.applied;
        r.ignored += got.ignored;
        r.already_stored += got.already_stored;
        r.invalid += got.invalid;
        if !page.has_more || starting_after.is_none() {
            break;
        }
    }
    let r = &report.import;
    report.import.audit_seq = Some(
        record(
            store,
            OperatorKind::Imported,
            operator,
            json!({
                "command": "catch-up", "since": since, "all": all, "pages": report.pages,
                "read": r.read, "new": r.new, "applied": r.applied, "ignored": r.ignored,
                "alreadyStored": r.already_stored, "invalid": r.invalid,
                "checkpoint": report.checkpoint,
            }),
        )
        .await?,
    );
    if !json_out {
        let from = chrono::DateTime::from_timestamp(since, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| since.to_string());
        let noun = if report.pages == 1 { "page" } else { "pages" };
        write!(out, "{} {noun} from Stripe since {from}: ", report.pages)?;
    }
    write_import(&report.import, json_out, out)?;
    Ok(report)
}
