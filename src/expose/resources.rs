//! The run views of `/api/v1/resources`: one run by its `prefect.resource.id`, and lists of
//! tracked runs matching a [`ResourceQuery`], oldest in their state first.

use std::sync::Arc;

use serde::Serialize;

use crate::model::event::{format_uuid, RunKind, StateKey, StateType};
use crate::model::time::{as_seconds, format_rfc3339, Micros};
use crate::state::counts::Counts;
use crate::state::names::StateId;
use crate::state::record::{canonical_id, run_key, RunKey, RunRecord};
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

fn state_parts(state: Option<&StateKey>) -> (&'static str, String) {
    match state {
        Some(s) => (s.ty.as_str(), s.name.to_string()),
        None => ("", String::new()),
    }
}

fn opt(text: &Option<Arc<str>>) -> Option<String> {
    text.as_deref().map(str::to_owned)
}

/// A run copied out of its shard (with its resource id when not canonical), to be named
/// under the aggregates' lock.
type Found = (RunRecord, Option<String>);

fn found(shared: &Shared, kind: RunKind, key: RunKey) -> Option<Found> {
    shared.find_run(kind, key, |record, odd_id| {
        (record.clone(), odd_id.map(str::to_owned))
    })
}

impl ResourceView {
    fn from_record(kind: RunKind, found: &Found, counts: &Counts, now: Micros) -> ResourceView {
        let (record, odd_id) = found;
        let states = &counts.states;
        let state = states.key(record.state());
        let labels = counts.label_sets.get(record.labels());
        ResourceView {
            id: odd_id
                .clone()
                .unwrap_or_else(|| canonical_id(kind, record.key())),
            kind: kind.as_str(),
            name: record.name().map(str::to_owned),
            state: StateView {
                ty: state.ty.as_str(),
                name: state.name.to_string(),
                since: format_rfc3339(record.since()),
                age_seconds: as_seconds((now - record.since()).max(0)),
            },
            labels: LabelsView {
                flow: opt(&labels.flow),
                deployment: opt(&labels.deployment),
                work_pool: opt(&labels.work_pool),
                work_queue: opt(&labels.work_queue),
                tags: labels.tags.iter().map(|t| t.to_string()).collect(),
            },
            last_event_occurred: format_rfc3339(record.last_occurred()),
            transitions: record
                .history()
                .counts()
                .map(|t| {
                    let (from_type, from_name) = state_parts(t.from.map(|f| states.key(f)));
                    let to = states.key(t.to);
                    RunTransitionView {
                        from_type,
                        from_name,
                        to_type: to.ty.as_str(),
                        to_name: to.name.to_string(),
                        count: t.count,
                    }
                })
                .collect(),
            last_transitions: record
                .history()
                .recent()
                .map(|t| {
                    let (from_type, from_name) = state_parts(t.from.map(|f| states.key(f)));
                    let to = states.key(t.to);
                    RecentView {
                        from_type,
                        from_name,
                        to_type: to.ty.as_str(),
                        to_name: to.name.to_string(),
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
        let found = found(shared, kind, key)?;
        Some(shared.with_counts(|counts| ResourceView::from_record(kind, &found, counts, now)))
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
        if shared.tracks(kind) {
            // The states the query names (by type and name).
            let wanted: Vec<StateId> = shared.with_counts(|counts| {
                counts
                    .states
                    .ids()
                    .filter(|&id| {
                        let state = counts.states.key(id);
                        query.state_type.is_none_or(|t| state.ty == t)
                            && query
                                .state_name
                                .as_deref()
                                .is_none_or(|n| state.name.as_ref() == n)
                    })
                    .collect()
            });
            let indexed = query.state_type.is_some_and(|t| !t.is_terminal());
            if indexed {
                // Non-terminal states are indexed by entry time: no scan of every run.
                let before = query.older_than.map_or(Micros::MAX, |age| now - age);
                shared.with_counts(|counts| {
                    let waiting = &counts.waiting[kind.index()];
                    for &state in &wanted {
                        matching.extend(waiting.entered_before(state, before));
                    }
                });
            } else {
                shared.for_each_run(kind, |record| {
                    let keep = wanted.contains(&record.state())
                        && query
                            .older_than
                            .is_none_or(|age| now - record.since() >= age);
                    if keep {
                        matching.push((record.since(), record.key()));
                    }
                });
            }
        }
        matching.sort_unstable();
        let found: Vec<Found> = matching
            .iter()
            .take(query.limit)
            .filter_map(|&(_, key)| found(shared, kind, key))
            .collect();
        let resources = shared.with_counts(|counts| {
            found
                .iter()
                .map(|f| ResourceView::from_record(kind, f, counts, now))
                .collect()
        });
        ResourceList {
            as_of: format_rfc3339(now),
            total_matching: matching.len(),
            resources,
        }
    }
}
