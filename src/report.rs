//! The JSON documents of the API: `/api/v1/counts` (also what `replay` prints), built from a
//! copy of the aggregates, and the run views of `/api/v1/resources`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::decode::RejectReason;
use crate::event::{format_uuid, RunKind, StateKey, StateType};
use crate::query::ResourceQuery;
use crate::state::{run_key, EventCounts, KindCounts, RunKey, RunRecord, Shared};
use crate::status::Status;
use crate::timestamp::{as_seconds, format_rfc3339, now_micros, Micros};

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
        let (flow, task, events) = {
            let counts = shared.counts.lock();
            let task = shared
                .track_task_runs
                .then(|| counts.kinds[RunKind::TaskRun.index()].clone());
            (
                counts.kinds[RunKind::FlowRun.index()].clone(),
                task,
                counts.events.clone(),
            )
        };
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

impl KindReport {
    fn from_counts(counts: &KindCounts) -> KindReport {
        let mut by_type: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut by_name: BTreeMap<String, i64> = BTreeMap::new();
        for (state, &n) in &counts.current {
            *by_type.entry(state.ty.as_str()).or_default() += n;
            *by_name.entry(state.name.to_string()).or_default() += n;
        }
        by_type.retain(|_, n| *n != 0);
        by_name.retain(|_, n| *n != 0);
        let mut entries: BTreeMap<String, u64> = BTreeMap::new();
        for ((state, _), &n) in &counts.entries {
            *entries.entry(state.name.to_string()).or_default() += n;
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
            total: by_type.values().sum(),
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

/// One run, as `/api/v1/resources/{id}` shows it.
#[derive(Debug, Serialize)]
pub struct ResourceView {
    /// `prefect.resource.id`.
    pub id: String,
    /// `flow-run` or `task-run`.
    pub kind: &'static str,
    /// The run's name.
    pub name: Option<String>,
    /// The current state.
    pub state: StateView,
    /// Related names.
    pub labels: LabelsView,
    /// Newest `occurred` of its events.
    pub last_event_occurred: String,
    /// Per-transition counts.
    pub transitions: Vec<RunTransitionView>,
    /// The last few transitions, oldest first.
    pub last_transitions: Vec<RecentView>,
}

/// A run's current state.
#[derive(Debug, Serialize)]
pub struct StateView {
    /// State type.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// State name.
    pub name: String,
    /// When the run entered it.
    pub since: String,
    /// Seconds since then.
    pub age_seconds: f64,
}

/// A run's related names.
#[derive(Debug, Serialize)]
pub struct LabelsView {
    /// Flow name.
    pub flow: Option<String>,
    /// Deployment name.
    pub deployment: Option<String>,
    /// Work pool name.
    pub work_pool: Option<String>,
    /// Work queue name.
    pub work_queue: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// A per-transition count of one run.
#[derive(Debug, Serialize)]
pub struct RunTransitionView {
    /// State type left (`""` for a new run).
    pub from_type: &'static str,
    /// State name left (`""` for a new run).
    pub from_name: String,
    /// State type entered.
    pub to_type: &'static str,
    /// State name entered.
    pub to_name: String,
    /// How many events carried it.
    pub count: u32,
}

/// One of a run's last transitions.
#[derive(Debug, Serialize)]
pub struct RecentView {
    /// State type left (`""` for a new run).
    pub from_type: &'static str,
    /// State name left (`""` for a new run).
    pub from_name: String,
    /// State type entered.
    pub to_type: &'static str,
    /// State name entered.
    pub to_name: String,
    /// State timestamp.
    pub at: String,
    /// Event id.
    pub event_id: String,
}

fn state_parts(state: &Option<StateKey>) -> (&'static str, String) {
    match state {
        Some(s) => (s.ty.as_str(), s.name.to_string()),
        None => ("", String::new()),
    }
}

fn opt(text: &Option<Arc<str>>) -> Option<String> {
    text.as_deref().map(str::to_owned)
}

impl ResourceView {
    fn from_record(kind: RunKind, key: RunKey, record: &RunRecord, now: Micros) -> ResourceView {
        ResourceView {
            id: record.resource_id(kind, key),
            kind: kind.as_str(),
            name: record.name.as_deref().map(str::to_owned),
            state: StateView {
                ty: record.state.ty.as_str(),
                name: record.state.name.to_string(),
                since: format_rfc3339(record.since),
                age_seconds: as_seconds((now - record.since).max(0)),
            },
            labels: LabelsView {
                flow: opt(&record.labels.flow),
                deployment: opt(&record.labels.deployment),
                work_pool: opt(&record.labels.work_pool),
                work_queue: opt(&record.labels.work_queue),
                tags: record.labels.tags.iter().map(|t| t.to_string()).collect(),
            },
            last_event_occurred: format_rfc3339(record.last_occurred),
            transitions: record
                .transitions
                .iter()
                .map(|t| {
                    let (from_type, from_name) = state_parts(&t.from);
                    RunTransitionView {
                        from_type,
                        from_name,
                        to_type: t.to.ty.as_str(),
                        to_name: t.to.name.to_string(),
                        count: t.count,
                    }
                })
                .collect(),
            last_transitions: record
                .recent
                .iter()
                .map(|t| {
                    let (from_type, from_name) = state_parts(&t.from);
                    RecentView {
                        from_type,
                        from_name,
                        to_type: t.to.ty.as_str(),
                        to_name: t.to.name.to_string(),
                        at: format_rfc3339(t.at),
                        event_id: format_uuid(t.event.0),
                    }
                })
                .collect(),
        }
    }

    /// The tracked run with this `prefect.resource.id`, if any.
    pub fn find(shared: &Shared, resource_id: &str, now: Micros) -> Option<ResourceView> {
        let kind = RunKind::of_resource(resource_id)?;
        if !shared.kinds().any(|k| k == kind) {
            return None;
        }
        let (key, _) = run_key(kind, resource_id);
        let record = shared.table(kind).runs.get(&key)?;
        Some(ResourceView::from_record(kind, key, &record, now))
    }
}

/// The answer of `/api/v1/resources`.
#[derive(Debug, Serialize)]
pub struct ResourceList {
    /// When the list was made.
    pub as_of: String,
    /// Runs matching the filters (before `limit`).
    pub total_matching: usize,
    /// The oldest `limit` of them, oldest first.
    pub resources: Vec<ResourceView>,
}

impl ResourceList {
    /// Lists tracked runs matching `query`, oldest in their state first.
    pub fn build(shared: &Shared, query: &ResourceQuery, now: Micros) -> ResourceList {
        let kind = query.kind;
        let mut matching: Vec<(Micros, RunKey)> = Vec::new();
        let tracked = shared.kinds().any(|k| k == kind);
        let indexed = query.state_type.filter(|t| !t.is_terminal());
        if let (true, Some(state_type)) = (tracked, indexed) {
            // Non-terminal states are indexed by entry time: no scan of every run.
            let before = query.older_than.map_or(Micros::MAX, |age| now - age);
            let counts = shared.counts.lock();
            let waiting = &counts.waiting[kind.index()];
            for (state, _) in waiting.oldest() {
                let name_ok = query
                    .state_name
                    .as_deref()
                    .is_none_or(|n| state.name.as_ref() == n);
                if state.ty == state_type && name_ok {
                    matching.extend(waiting.entered_before(state, before));
                }
            }
        } else if tracked {
            for entry in shared.table(kind).runs.iter() {
                let record = entry.value();
                let keep = query.state_type.is_none_or(|t| record.state.ty == t)
                    && query
                        .state_name
                        .as_deref()
                        .is_none_or(|n| record.state.name.as_ref() == n)
                    && query.older_than.is_none_or(|age| now - record.since >= age);
                if keep {
                    matching.push((record.since, *entry.key()));
                }
            }
        }
        matching.sort_unstable();
        let resources = matching
            .iter()
            .take(query.limit)
            .filter_map(|&(_, key)| {
                let record = shared.table(kind).runs.get(&key)?;
                Some(ResourceView::from_record(kind, key, &record, now))
            })
            .collect();
        ResourceList {
            as_of: format_rfc3339(now),
            total_matching: matching.len(),
            resources,
        }
    }
}
