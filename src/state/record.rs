//! One tracked run: its record (current state, labels, per-transition counts, recent
//! transitions), the key it is stored under, and where it stood at the REST baseline.
//!
//! Plain data and the rules that change one record; the [`super::Tracker`] decides when.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::model::event::{
    fnv1a_128, format_uuid, parse_uuid, EventId, RelatedNames, RunKind, StateKey,
};
use crate::model::time::Micros;
use crate::state::labels::{Interner, SeriesId};

/// How many of a run's transitions its record keeps, newest last.
pub const RECENT_TRANSITIONS: usize = 5;

/// The map key of a run: the UUID of its resource id, or a 128-bit hash of an id that is not
/// `prefect.<kind>.<lower-case uuid>` (the record then keeps the original text).
pub type RunKey = u128;

/// The key of a resource id of `kind`, and whether the id is canonical.
pub fn run_key(kind: RunKind, resource_id: &str) -> (RunKey, bool) {
    let suffix = &resource_id[kind.resource_prefix().len()..];
    match parse_uuid(suffix) {
        Some(value) if suffix.bytes().all(|b| !b.is_ascii_uppercase()) => (value, true),
        _ => (fnv1a_128(resource_id.as_bytes()), false),
    }
}

/// One transition as a run's record keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentTransition {
    /// The state left, `None` for a new run.
    pub from: Option<StateKey>,
    /// The state entered.
    pub to: StateKey,
    /// The state timestamp of the event.
    pub at: Micros,
    /// The event.
    pub event: EventId,
}

/// How often a run made one transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionCount {
    /// The state left, `None` for a new run.
    pub from: Option<StateKey>,
    /// The state entered.
    pub to: StateKey,
    /// Events carrying this transition.
    pub count: u32,
}

/// Names of a run's related resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunLabels {
    /// Flow name.
    pub flow: Option<Arc<str>>,
    /// Deployment name.
    pub deployment: Option<Arc<str>>,
    /// Work pool name.
    pub work_pool: Option<Arc<str>>,
    /// Work queue name.
    pub work_queue: Option<Arc<str>>,
    /// Tag names.
    pub tags: Box<[Arc<str>]>,
}

/// Everything known about one tracked run.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The resource id when it is not canonical (else it is rebuilt from kind and key).
    pub odd_id: Option<Box<str>>,
    /// `prefect.resource.name` of the newest event.
    pub name: Option<Box<str>>,
    /// The current state.
    pub state: StateKey,
    /// When the run entered the current state.
    pub since: Micros,
    /// State timestamp of the event that set the current state (ordering key).
    pub state_at: Micros,
    /// The event that set the current state (tie-breaker for equal timestamps).
    pub state_event: EventId,
    /// Newest `occurred` of any of its events (drives terminal retention).
    pub last_occurred: Micros,
    /// The group-by label set of the current state.
    pub series: SeriesId,
    /// Related names from the newest event that had them.
    pub labels: RunLabels,
    /// Per-transition counts.
    pub transitions: Vec<TransitionCount>,
    /// The last few transitions, oldest first.
    pub recent: VecDeque<RecentTransition>,
    /// Where the run stood when the REST baseline was taken (see [`BaseAnchor`]).
    pub base: BaseAnchor,
}

/// The state a run had at the time of the REST baseline, as far as its events tell.
///
/// With a baseline, the totals are `REST counts at time B` plus, for every tracked run,
/// `+1` in its current state and `-1` in its state at B. The state at B is the `to` of its
/// newest event at or before B, or else the `from` of its oldest event after B (`None`: the
/// run did not exist at B). Both are kept up to date whatever order events arrive in, so the
/// totals stay exact when a lost event is repaired later. Without a baseline (replay), the
/// state at B is always `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseAnchor {
    /// The baseline this anchor belongs to ([`Counts::baseline_epoch`]).
    pub epoch: u64,
    /// The timestamp of the event the anchor comes from.
    pub at: Micros,
    /// Whether that event is at or before the baseline time.
    pub before: bool,
    /// The run's state at the baseline time.
    pub state: Option<StateKey>,
}

impl BaseAnchor {
    /// Folds in one event with state timestamp `at`; `baseline` is the baseline time.
    pub(super) fn observe(
        &mut self,
        baseline: Micros,
        at: Micros,
        from: &Option<StateKey>,
        to: &StateKey,
    ) {
        if at <= baseline {
            if !self.before || at > self.at {
                *self = BaseAnchor {
                    epoch: self.epoch,
                    at,
                    before: true,
                    state: Some(to.clone()),
                };
            }
        } else if !self.before && at < self.at {
            *self = BaseAnchor {
                epoch: self.epoch,
                at,
                before: false,
                state: from.clone(),
            };
        }
    }
}

impl RunRecord {
    /// The run's `prefect.resource.id`.
    pub fn resource_id(&self, kind: RunKind, key: RunKey) -> String {
        match &self.odd_id {
            Some(id) => id.to_string(),
            None => format!("{}{}", kind.resource_prefix(), format_uuid(key)),
        }
    }

    pub(super) fn count_transition(&mut self, from: &Option<StateKey>, to: &StateKey) {
        match self
            .transitions
            .iter_mut()
            .find(|t| &t.from == from && &t.to == to)
        {
            Some(t) => t.count = t.count.saturating_add(1),
            None => self.transitions.push(TransitionCount {
                from: from.clone(),
                to: to.clone(),
                count: 1,
            }),
        }
    }

    pub(super) fn remember(&mut self, transition: RecentTransition) {
        let position = self
            .recent
            .iter()
            .rposition(|t| (t.at, t.event) <= (transition.at, transition.event))
            .map_or(0, |p| p + 1);
        if position == 0 && self.recent.len() >= RECENT_TRANSITIONS {
            return;
        }
        self.recent.insert(position, transition);
        while self.recent.len() > RECENT_TRANSITIONS {
            self.recent.pop_front();
        }
    }
}

/// Whether an event names any related resource.
pub(super) fn has_labels(related: &RelatedNames<'_>) -> bool {
    related.flow.is_some()
        || related.deployment.is_some()
        || related.work_pool.is_some()
        || related.work_queue.is_some()
        || !related.tags.is_empty()
}

/// A run's labels from an event's related names, strings shared through `strings`.
pub(super) fn run_labels(strings: &mut Interner, related: &RelatedNames<'_>) -> RunLabels {
    let tags = related.tags.iter().map(|t| strings.share(t)).collect();
    let mut share = |name: &Option<Cow<'_, str>>| name.as_deref().map(|n| strings.share(n));
    RunLabels {
        flow: share(&related.flow),
        deployment: share(&related.deployment),
        work_pool: share(&related.work_pool),
        work_queue: share(&related.work_queue),
        tags,
    }
}
