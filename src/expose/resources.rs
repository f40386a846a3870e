//! The run views of `/api/v1/resources`: one run by its `prefect.resource.id`, and lists of
//! tracked runs matching a [`ResourceQuery`], oldest in their state first.

use std::sync::Arc;

use serde::Serialize;

use crate::model::event::{format_uuid, RunKind, StateKey, StateType};
use crate::model::time::{as_seconds, format_rfc3339, Micros};
use crate::state::record::{run_key, RunKey, RunRecord};
use crate::state::Shared;

/// The most runs one listing returns.
pub const MAX_LIMIT: usize = 10_000;
/// Runs a listing returns without `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// The parameters of `/api/v1/resources`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceQuery {
    /// Which kind of run (default `flow-run`).
    pub kind: RunKind,
    /// Only runs in this state type.
    pub state_type: Option<StateType>,
    /// Only runs with this state name.
    pub state_name: Option<String>,
    /// Only runs in their state for at least this long.
    pub older_than: Option<Micros>,
    /// At most this many runs.
    pub limit: usize,
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
        if !shared.tracks(kind) {
            return None;
        }
        let (key, _) = run_key(kind, resource_id);
        shared.find_run(kind, key, |record| {
            ResourceView::from_record(kind, key, record, now)
        })
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
        let tracked = shared.tracks(kind);
        let indexed = query.state_type.filter(|t| !t.is_terminal());
        if let (true, Some(state_type)) = (tracked, indexed) {
            // Non-terminal states are indexed by entry time: no scan of every run.
            let before = query.older_than.map_or(Micros::MAX, |age| now - age);
            shared.with_counts(|counts| {
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
            });
        } else if tracked {
            shared.for_each_run(kind, |key, record| {
                let keep = query.state_type.is_none_or(|t| record.state.ty == t)
                    && query
                        .state_name
                        .as_deref()
                        .is_none_or(|n| record.state.name.as_ref() == n)
                    && query.older_than.is_none_or(|age| now - record.since >= age);
                if keep {
                    matching.push((record.since, key));
                }
            });
        }
        matching.sort_unstable();
        let resources = matching
            .iter()
            .take(query.limit)
            .filter_map(|&(_, key)| {
                shared.find_run(kind, key, |record| {
                    ResourceView::from_record(kind, key, record, now)
                })
            })
            .collect();
        ResourceList {
            as_of: format_rfc3339(now),
            total_matching: matching.len(),
            resources,
        }
    }
}
