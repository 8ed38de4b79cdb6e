//! `plan` and `apply`: rebuild projections from the log, audited.
//!
//! `plan` is a dry run: every booking and trip the log holds is folded
//! again (one at a time, paging through the log's streams, never the whole
//! log in memory) and compared with its stored projection; so are the
//! side-effect messages the rebuilt states imply. The plan's id is a hash
//! of the log head it was made at and the changes it found.
//!
//! `apply` refuses a plan whose log head has moved, pauses side effects,
//! then appends one `ReplayApplied` event that carries the audit record
//! (operator, reason, plan id, every change before and after) and, in the
//! same transaction, recomputes the plan's projections through the
//! engine's one projection step: all or nothing. Messages the plan found
//! missing are produced then, once (while paused, so nothing goes out
//! until an operator resumes).

use crate::{record_with, Operator};
use anyhow::{bail, Context};
use klubz_ledger::domain::decide::OperatorKind;
use klubz_ledger::domain::events::stream;
use klubz_ledger::domain::trip::seats_accepted;
use klubz_ledger::domain::{fold_booking, fold_trip, BookingState, TripState};
use klubz_ledger::projection::BookingView;
use klubz_ledger::store::chain::sha256_hex;
use klubz_ledger::store::{EventStore, Rebuild, StoreError};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::Write;

/// One projection whose rebuilt state differs from the stored one.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `booking:<id>` or `trip:<id>`.
    pub entity: String,
    pub before: Value,
    pub after: Value,
}

/// A message the rebuilt state implies that was never written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingMessage {
    pub key: String,
    pub booking_id: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: String,
    pub head_seq: i64,
    pub changes: Vec<Change>,
    pub missing: Vec<MissingMessage>,
    /// How many bookings and trips were looked at.
    pub bookings_checked: u64,
    pub trips_checked: u64,
}

impl Plan {
    pub fn to_json(&self) -> Value {
        json!({
            "planId": self.id,
            "headSeq": self.head_seq,
            "bookingsChecked": self.bookings_checked,
            "tripsChecked": self.trips_checked,
            "changes": self.changes.iter().map(|c| json!({
                "entity": c.entity, "before": c.before, "after": c.after,
            })).collect::<Vec<_>>(),
            "missingMessages": self.missing.iter().map(|m| json!({
                "key": m.key, "bookingId": m.booking_id, "type": m.kind,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(v: &Value) -> anyhow::Result<Self> {
        let str_of = |v: &Value, k: &str| -> anyhow::Result<String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("the plan has no {k}"))
        };
        let list = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let plan = Self {
            id: str_of(v, "planId")?,
            head_seq: v
                .get("headSeq")
                .and_then(Value::as_i64)
                .context("the plan has no headSeq")?,
            changes: list("changes")
                .iter()
                .map(|c| {
                    Ok(Change {
                        entity: str_of(c, "entity")?,
                        before: c.get("before").cloned().unwrap_or(Value::Null),
                        after: c.get("after").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            missing: list("missingMessages")
                .iter()
                .map(|m| {
                    Ok(MissingMessage {
                        key: str_of(m, "key")?,
                        booking_id: str_of(m, "bookingId")?,
                        kind: str_of(m, "type")?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            bookings_checked: v
                .get("bookingsChecked")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            trips_checked: v.get("tripsChecked").and_then(Value::as_u64).unwrap_or(0),
        };
        if plan_id(plan.head_seq, &plan.changes, &plan.missing) != plan.id {
            bail!("the plan file was edited: its id does not match its content");
        }
        Ok(plan)
    }

    /// The projections `apply` recomputes: every booking and trip changed,
    /// and the bookings with missing messages.
    fn rebuild(&self) -> Rebuild {
        let mut rebuild = Rebuild::default();
        for c in &self.changes {
            if let Some(id) = c.entity.strip_prefix("booking:") {
                rebuild.bookings.push(id.to_string());
            } else if let Some(id) = c.entity.strip_prefix("trip:") {
                rebuild.trips.push(id.to_string());
            }
        }
        for m in &self.missing {
            rebuild.bookings.push(m.booking_id.clone());
        }
        rebuild.bookings.sort();
        rebuild.bookings.dedup();
        rebuild.trips.sort();
        rebuild.trips.dedup();
        rebuild
    }
}

fn plan_id(head: i64, changes: &[Change], missing: &[MissingMessage]) -> String {
    let material = json!({
        "headSeq": head,
        "changes": changes.iter().map(|c| json!([c.entity, c.before, c.after])).collect::<Vec<_>>(),
        "missing": missing.iter().map(|m| m.key.clone()).collect::<Vec<_>>(),
    });
    sha256_hex(material.to_string().as_bytes())[..16].to_string()
}

fn booking_json(b: &BookingView) -> Value {
    json!({
        "status": b.status.as_str(),
        "paymentStatus": b.payment_status.as_str(),
        "paymentIntentId": b.payment_intent_id,
        "amountCents": b.amount_cents,
        "currency": b.currency.as_ref().map(|c| c.as_str()),
        "amountRefundedCents": b.amount_refunded_cents,
        "passengers": b.passengers,
        "attempts": b.attempts,
        "version": b.version,
        "lastEventSeq": b.last_event_seq,
        "updatedAt": b.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

fn trip_json(t: &TripState) -> Value {
    json!({
        "title": t.title,
        "driverId": t.driver_id,
        "pricePerSeatCents": t.price_per_seat_cents,
        "currency": t.currency.as_str(),
        "departureTime": t.departure_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "cancelled": t.cancelled,
        "seats": t.seats,
        "seatsAccepted": t.seats_accepted,
        "version": t.version,
        "lastEventSeq": t.last_event_seq,
    })
}

/// The fields that differ, as `name: before → after`.
pub fn describe(change: &Change) -> String {
    let (Some(before), Some(after)) = (change.before.as_object(), change.after.as_object()) else {
        return match (change.before.is_null(), change.after.is_null()) {
            (true, _) => "missing projection → rebuilt from the log".into(),
            (_, true) => "projection without events in the log (left alone: investigate)".into(),
            _ => "changed".into(),
        };
    };
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {} → {v}", before.get(k).unwrap_or(&Value::Null)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Folds one booking from its log; `None` when the log holds no request.
async fn fold_one(
    store: &dyn EventStore,
    id: &str,
) -> Result<Option<(BookingState, Vec<String>)>, StoreError> {
    let stored = store.booking_history(id).await?;
    let history = stored
        .iter()
        .map(|e| e.recorded())
        .collect::<Result<Vec<_>, _>>()?;
    let fold = fold_booking(id, &history);
    let keys = fold.effects.iter().map(|e| e.key(id)).collect();
    Ok(fold.state.map(|s| (s, keys)))
}

async fn seats_of_trip(store: &dyn EventStore, trip_id: &str) -> Result<u32, StoreError> {
    let mut states = Vec::new();
    for b in store.bookings_of_trip(trip_id).await? {
        if let Some((s, _)) = fold_one(store, &b.booking_id).await? {
            states.push(s);
        }
    }
    Ok(seats_accepted(&states))
}

/// `plan`: the dry run. `only` narrows it to the given bookings (their
/// trips are checked too).
pub async fn plan(
    store: &dyn EventStore,
    only: &[String],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Plan> {
    let head_seq = store.head_seq().await?;
    let mut changes = Vec::new();
    let mut missing = Vec::new();
    let mut seats: HashMap<String, u32> = HashMap::new();
    let mut trips_of_bookings: Vec<String> = Vec::new();
    let mut checked = 0u64;

    let mut ids: Vec<String> = only.to_vec();
    // Ids only (one string per booking): to find projection rows the log
    // does not explain without folding every booking twice.
    let mut logged: HashSet<String> = HashSet::new();
    let mut after = String::new();
    loop {
        if only.is_empty() {
            ids = store.logged_ids("booking:", &after, 500).await?;
        }
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in ids.drain(..) {
            logged.insert(id.clone());
            let folded = fold_one(store, &id).await?;
            checked += 1;
            progress.inc(1);
            let stored = store.booking(&id).await?;
            let after_view = folded.as_ref().map(|(s, _)| BookingView::from(s));
            if let Some((state, keys)) = &folded {
                if state.status == klubz_ledger::domain::BookingStatus::Accepted {
                    *seats.entry(state.trip_id.clone()).or_default() += state.passengers;
                }
                trips_of_bookings.push(state.trip_id.clone());
                let written = store.outbox_keys(&id).await?;
                for key in keys {
                    if !written.contains(key) {
                        missing.push(MissingMessage {
                            key: key.clone(),
                            booking_id: id.clone(),
                            kind: key.split(':').next().unwrap_or_default().to_string(),
                        });
                    }
                }
            }
            if stored != after_view {
                changes.push(Change {
                    entity: format!("booking:{id}"),
                    before: stored.as_ref().map(booking_json).unwrap_or(Value::Null),
                    after: after_view.as_ref().map(booking_json).unwrap_or(Value::Null),
                });
            }
        }
        if !only.is_empty() {
            break;
        }
        after = last;
    }
    // Projection rows the log does not explain.
    if only.is_empty() {
        let mut after = String::new();
        loop {
            let rows = store.booking_ids(&after, 500).await?;
            let Some(last) = rows.last().cloned() else {
                break;
            };
            for id in rows {
                if !logged.contains(&id) {
                    let stored = store.booking(&id).await?;
                    changes.push(Change {
                        entity: format!("booking:{id}"),
                        before: stored.as_ref().map(booking_json).unwrap_or(Value::Null),
                        after: Value::Null,
                    });
                }
            }
            after = last;
        }
    }

    // Trips: the stream's fold, seats from the rebuilt bookings.
    let mut trip_ids: Vec<String> = Vec::new();
    if only.is_empty() {
        let mut after = String::new();
        loop {
            let page = store.logged_ids("trip:", &after, 500).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            trip_ids.extend(page);
            after = last;
        }
    } else {
        trip_ids = trips_of_bookings;
        trip_ids.sort();
        trip_ids.dedup();
    }
    let mut trips_checked = 0u64;
    for id in trip_ids {
        trips_checked += 1;
        let history = store
            .read_stream(&stream::trip(&id))
            .await?
            .iter()
            .map(|e| e.recorded())
            .collect::<Result<Vec<_>, _>>()?;
        let rebuilt = match fold_trip(&history) {
            None => None,
            Some(mut t) => {
                t.seats_accepted = if only.is_empty() {
                    seats.get(&id).copied().unwrap_or(0)
                } else {
                    // Narrowed: the seats of every booking of the trip.
                    seats_of_trip(store, &id).await?
                };
                Some(t)
            }
        };
        let stored = store.trip(&id).await?;
        if stored != rebuilt {
            changes.push(Change {
                entity: format!("trip:{id}"),
                before: stored.as_ref().map(trip_json).unwrap_or(Value::Null),
                after: rebuilt.as_ref().map(trip_json).unwrap_or(Value::Null),
            });
        }
    }
    progress.finish_and_clear();
    let id = plan_id(head_seq, &changes, &missing);
    Ok(Plan {
        id,
        head_seq,
        changes,
        missing,
        bookings_checked: checked,
        trips_checked,
    })
}

pub fn write_plan(plan: &Plan, json_out: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json_out {
        writeln!(out, "{}", plan.to_json())?;
        return Ok(());
    }
    writeln!(
        out,
        "plan {} at log seq {}: {} bookings and {} trips checked, {} to change, {} messages missing",
        plan.id,
        plan.head_seq,
        plan.bookings_checked,
        plan.trips_checked,
        plan.changes.len(),
        plan.missing.len()
    )?;
    for c in &plan.changes {
        writeln!(out, "  {}: {}", c.entity, describe(c))?;
    }
    for m in &plan.missing {
        writeln!(out, "  missing message {}", m.key)?;
    }
    if plan.changes.is_empty() && plan.missing.is_empty() {
        writeln!(
            out,
            "nothing to do: every projection equals the fold of its events"
        )?;
    }
    Ok(())
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub audit_seq: i64,
    pub changed: usize,
    pub paused: bool,
}

/// `apply`: see the module doc.
pub async fn apply(
    store: &dyn EventStore,
    plan: &Plan,
    operator: &Operator,
    resume_side_effects: bool,
    out: &mut impl Write,
) -> anyhow::Result<Applied> {
    let head = store.head_seq().await?;
    if head != plan.head_seq {
        bail!(
            "the log moved past the plan (plan {} was made at seq {}, the log is at seq {}): run plan again",
            plan.id,
            plan.head_seq,
            head
        );
    }
    if !store.side_effects_paused().await? {
        record_with(
            store,
            OperatorKind::SideEffectsPaused,
            operator,
            json!({"command": "apply", "planId": plan.id}),
            None,
        )
        .await?;
        writeln!(out, "side effects paused for the replay")?;
    }
    let detail = json!({
        "command": "apply",
        "planId": plan.id,
        "headSeq": plan.head_seq,
        "changes": plan.to_json()["changes"].clone(),
        "missingMessages": plan.missing.len(),
    });
    let audit_seq = record_with(
        store,
        OperatorKind::ReplayApplied,
        operator,
        detail,
        Some(plan.rebuild()),
    )
    .await?;
    writeln!(
        out,
        "applied plan {}: {} projections rebuilt, {} missing messages written (audit seq {audit_seq})",
        plan.id,
        plan.changes.len(),
        plan.missing.len()
    )?;
    let mut paused = true;
    if resume_side_effects {
        record_with(
            store,
            OperatorKind::SideEffectsResumed,
            operator,
            json!({"command": "apply", "planId": plan.id}),
            None,
        )
        .await?;
        paused = false;
        writeln!(out, "side effects resumed")?;
    } else {
        writeln!(
            out,
            "side effects stay paused: klubz-replay side-effects resume --operator … --reason … when ready"
        )?;
    }
    Ok(Applied {
        audit_seq,
        changed: plan.changes.len(),
        paused,
    })
}
