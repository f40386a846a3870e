//! The `/api/v1/history` document: entries into states per minute, by state type, over the
//! newest hour of events (the live page's sparkline), copied from the aggregates.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::event::{RunKind, StateType};
use crate::model::time::{format_rfc3339, now_micros};
use crate::state::minutes::Minute;
use crate::state::Shared;

/// The history document.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    /// When the document was made (RFC 3339).
    pub as_of: String,
    /// The minutes held, oldest first, without gaps (minutes of the events' `occurred`).
    pub minutes: Vec<MinuteReport>,
}

/// Entries of one minute.
#[derive(Debug, Serialize)]
pub struct MinuteReport {
    /// When the minute starts (RFC 3339).
    pub start: String,
    /// Flow-run entries by state type (non-zero only).
    pub flow_runs: BTreeMap<&'static str, u64>,
    /// Task-run entries by state type (non-zero only), when task runs are tracked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_runs: Option<BTreeMap<&'static str, u64>>,
}

impl HistoryReport {
    /// Builds the document (the lock is held only to copy the minutes).
    pub fn build(shared: &Shared) -> HistoryReport {
        let minutes: Vec<Minute> = shared.with_counts(|c| c.minutes.minutes().copied().collect());
        let tasks = shared.tracks(RunKind::TaskRun);
        let by_type = |row: &[u64; 9]| {
            StateType::ALL
                .iter()
                .filter(|t| row[t.index()] > 0)
                .map(|t| (t.as_str(), row[t.index()]))
                .collect()
        };
        HistoryReport {
            as_of: format_rfc3339(now_micros()),
            minutes: minutes
                .iter()
                .map(|m| MinuteReport {
                    start: format_rfc3339(m.start),
                    flow_runs: by_type(&m.entries[RunKind::FlowRun.index()]),
                    task_runs: tasks.then(|| by_type(&m.entries[RunKind::TaskRun.index()])),
                })
                .collect(),
        }
    }
}
