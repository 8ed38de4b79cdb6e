//! `verify`: the hash chains are intact, every projection equals the fold
//! of its events and every side-effect message has its cause in the log,
//! once (invariants 4, 8 and 9). Written once over
//! [`EventStore`], used by `smoke`, the tests and `klubz-replay verify`.

use super::chain::{BrokenLink, ChainKey, ChainWalker};
use super::{EventStore, OutboxFilter, StoreError};
use crate::domain::{fold_booking, fold_trip, BookingStatus};
use crate::projection::BookingView;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};

/// A projection that differs from the fold of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub entity: String,
    pub stored: String,
    pub folded: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub streams: usize,
    pub bookings: u64,
    pub trips: u64,
    pub broken_link: Option<BrokenLink>,
    pub drift: Vec<Drift>,
    /// Side-effect messages without a cause in the log, or twice.
    pub messages: Vec<MessageProblem>,
}

/// A side-effect message that no event of its booking explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageProblem {
    pub key: String,
    pub problem: String,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.broken_link.is_none() && self.drift.is_empty() && self.messages.is_empty()
    }
}

/// Walks every event once (streamed, in seq order) and every projection.
pub async fn verify(store: &dyn EventStore, key: &ChainKey) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut walker = ChainWalker::new(key.clone());
    let mut events = store.stream_all(0);
    while let Some(event) = events.next().await {
        let event = event?;
        if let Err(broken) = walker.check(&event) {
            report.broken_link = Some(broken);
            break;
        }
    }
    drop(events);
    report.events = walker.events;
    report.streams = walker.streams();

    // Seats per trip, from the folds of the bookings (memory: one number per trip).
    let mut seats: HashMap<String, u32> = HashMap::new();
    let mut after = String::new();
    loop {
        let ids = store.booking_ids(&after, 500).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in ids {
            report.bookings += 1;
            let history: Vec<_> = store
                .booking_history(&id)
                .await?
                .iter()
                .map(|e| e.recorded())
                .collect::<Result<_, _>>()?;
            let state = fold_booking(&id, &history).state;
            if let Some(b) = state
                .as_ref()
                .filter(|b| b.status == BookingStatus::Accepted)
            {
                *seats.entry(b.trip_id.clone()).or_default() += b.passengers;
            }
            let folded = state.as_ref().map(BookingView::from);
            let stored = store.booking(&id).await?;
            if folded != stored {
                report.drift.push(Drift {
                    entity: format!("booking {id}"),
                    stored: format!("{stored:?}"),
                    folded: format!("{folded:?}"),
                });
            }
            // Every message has its cause in the booking's log, once.
            let seqs: HashSet<i64> = history.iter().map(|r| r.seq).collect();
            let messages = store
                .list_outbox(&OutboxFilter {
                    booking_id: Some(id.clone()),
                    limit: 1000,
                    ..OutboxFilter::default()
                })
                .await?;
            let mut causes = HashSet::new();
            for m in &messages {
                if !seqs.contains(&m.created_seq) {
                    report.messages.push(MessageProblem {
                        key: m.message_key.clone(),
                        problem: format!(
                            "its causing event (seq {}) is not in booking {id}'s log",
                            m.created_seq
                        ),
                    });
                }
                if !causes.insert((m.kind.clone(), m.created_seq)) {
                    report.messages.push(MessageProblem {
                        key: m.message_key.clone(),
                        problem: format!(
                            "a second {} message for the event at seq {}",
                            m.kind, m.created_seq
                        ),
                    });
                }
            }
        }
        after = last;
    }

    let mut after = String::new();
    loop {
        let ids = store.trip_ids(&after, 500).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in ids {
            report.trips += 1;
            let history: Vec<_> = store
                .read_stream(&crate::domain::events::stream::trip(&id))
                .await?
                .iter()
                .map(|e| e.recorded())
                .collect::<Result<_, _>>()?;
            let stored = store.trip(&id).await?;
            let mut folded = fold_trip(&history);
            if let Some(t) = folded.as_mut() {
                // Seats are derived from the bookings' projections.
                t.seats_accepted = seats.get(&id).copied().unwrap_or(0);
            }
            if folded != stored {
                report.drift.push(Drift {
                    entity: format!("trip {id}"),
                    stored: format!("{stored:?}"),
                    folded: format!("{folded:?}"),
                });
            }
        }
        after = last;
    }
    Ok(report)
}
