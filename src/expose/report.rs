//! The `/api/v1/counts` document (also what `replay` prints), built from a copy of the
//! aggregates.
//!
//! Runs per state are shown through [`shown_runs`]: never below zero. The tracker's totals
//! are signed on purpose: a run whose leaving event arrives before its entering one (or whose
//! entering event was lost and is repaired later) takes its state below zero until the other
//! event lands, and that arithmetic must stay exact so the totals equal the server's at
//! quiescence. Only what is shown is held at zero; the amount held back is the
//! `prefect_exporter_runs_deficit` gauge. Sums saturate.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::event::{RunKind, StateType};
use crate::model::reject::RejectReason;
use crate::model::time::{format_rfc3339, now_micros};
use crate::state::counts::{EventCounts, KindCounts};
use crate::state::status::Status;
use crate::state::Shared;

/// The counts document.
#[derive(Debug, Serialize)]
pub struct CountsReport {
    /// When the document was made (RFC 3339).
    pub as_of: String,
    /// Flow runs.
    pub flow_runs: KindReport,
    /// Task runs, when tracked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_runs: Option<KindReport>,
    /// The event stream.
    pub events: EventsReport,
    /// The source connection.
    pub stream: StreamReport,
}

/// Counts of one run kind.
#[derive(Debug, Serialize)]
pub struct KindReport {
    /// Runs in any state.
    pub total: i64,
    /// Runs now in each state type (non-zero only).
    pub by_state_type: BTreeMap<&'static str, i64>,
    /// Runs now in each state name (non-zero only).
    pub by_state_name: BTreeMap<String, i64>,
    /// Entries into each state name (self-transitions excluded).
    pub entries_by_state_name: BTreeMap<String, u64>,
    /// Transitions by state type; `from` is `""` for new runs.
    pub transitions: Vec<TransitionReport>,
}

/// One row of [`KindReport::transitions`].
#[derive(Debug, Serialize)]
pub struct TransitionReport {
    /// State type left, `""` for a new run.
    pub from: &'static str,
    /// State type entered.
    pub to: &'static str,
    /// How many.
    pub count: u64,
}

/// Stream counters.
#[derive(Debug, Serialize)]
pub struct EventsReport {
    /// Frames decoded as events (duplicates included).
    pub received: u64,
    /// Of which state events of a tracked kind.
    pub state_events: u64,
    /// Dropped as duplicates.
    pub duplicates: u64,
    /// Rejected lines.
    pub rejected: u64,
    /// Rejected lines by reason (non-zero only).
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Same-state events.
    pub self_transitions: u64,
}

/// Source connection.
#[derive(Debug, Serialize)]
pub struct StreamReport {
    /// Whether a live stream is subscribed.
    pub connected: bool,
    /// Newest `occurred` applied.
    pub last_event_occurred: Option<String>,
    /// Reconnections so far.
    pub reconnects: u64,
}

impl CountsReport {
    /// Builds the document from the shared state (the lock is held only to copy).
    pub fn build(shared: &Shared, status: &Status) -> CountsReport {
        let (flow, task, events) = shared.with_counts(|counts| {
            let task = shared
                .tracks(RunKind::TaskRun)
                .then(|| counts.kind_counts(RunKind::TaskRun));
            (
                counts.kind_counts(RunKind::FlowRun),
                task,
                counts.events.clone(),
            )
        });
        CountsReport {
            as_of: format_rfc3339(now_micros()),
            flow_runs: KindReport::from_counts(&flow),
            task_runs: task.as_ref().map(KindReport::from_counts),
            events: EventsReport::from_counts(&events),
            stream: StreamReport {
                connected: status.connected(),
                last_event_occurred: events.last_occurred.map(format_rfc3339),
                reconnects: status.reconnects(),
            },
        }
    }
}

/// Runs in a state as shown (never below zero), and the deficit held back.
pub fn shown_runs(total: i64) -> (i64, u64) {
    (total.max(0), total.min(0).unsigned_abs())
}

impl KindReport {
    fn from_counts(counts: &KindCounts) -> KindReport {
        let mut by_type: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut by_name: BTreeMap<String, i64> = BTreeMap::new();
        for (state, &n) in &counts.current {
            let (n, _) = shown_runs(n);
            let ty = by_type.entry(state.ty.as_str()).or_default();
            *ty = ty.saturating_add(n);
            let name = by_name.entry(state.name.to_string()).or_default();
            *name = name.saturating_add(n);
        }
        by_type.retain(|_, n| *n != 0);
        by_name.retain(|_, n| *n != 0);
        let mut entries: BTreeMap<String, u64> = BTreeMap::new();
        for ((state, _), &n) in &counts.entries {
            let entry = entries.entry(state.name.to_string()).or_default();
            *entry = entry.saturating_add(n);
        }
        let mut transitions = Vec::new();
        for (from_index, row) in counts.transitions.iter().enumerate() {
            let from = StateType::ALL.get(from_index).map_or("", |t| t.as_str());
            for (to_index, &count) in row.iter().enumerate() {
                if count > 0 {
                    transitions.push(TransitionReport {
                        from,
                        to: StateType::ALL[to_index].as_str(),
                        count,
                    });
                }
            }
        }
        transitions.sort_by(|a, b| (a.from, a.to).cmp(&(b.from, b.to)));
        KindReport {
            total: by_type.values().fold(0i64, |sum, n| sum.saturating_add(*n)),
            by_state_type: by_type,
            by_state_name: by_name,
            entries_by_state_name: entries,
            transitions,
        }
    }
}

impl EventsReport {
    fn from_counts(events: &EventCounts) -> EventsReport {
        EventsReport {
            received: events.state + events.other,
            state_events: events.state,
            duplicates: events.duplicates,
            rejected: events.rejected_total(),
            rejected_by_reason: RejectReason::ALL
                .iter()
                .filter(|r| events.rejected[r.index()] > 0)
                .map(|r| (r.as_str(), events.rejected[r.index()]))
                .collect(),
            self_transitions: events.self_transitions,
        }
    }
}
