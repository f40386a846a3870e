//! One tracked run: its record (current state, labels, per-transition counts, recent
//! transitions), the key it is stored under, and where it stood at the REST baseline.
//!
//! Plain data and the rules that change one record; the [`super::Tracker`] decides when.
//! Records are compact: states are [`StateId`]s, labels a shared [`LabelsId`], the event that
//! set the current state is the newest of the recent transitions, and the small collections
//! are inline.

use compact_str::CompactString;

use crate::model::event::{fnv1a_128, format_uuid, parse_uuid, EventId, RunKind};
use crate::model::time::Micros;
use crate::state::inline::{History, RecentTransition};
use crate::state::label_sets::LabelsId;
use crate::state::labels::SeriesId;
use crate::state::names::StateId;

/// The map key of a run: the UUID of its resource id, or a 128-bit hash of an id that is not
/// `prefect.<kind>.<lower-case uuid>` (the table then keeps the original text).
pub type RunKey = u128;

/// The key of a resource id of `kind`, and whether the id is canonical.
pub fn run_key(kind: RunKind, resource_id: &str) -> (RunKey, bool) {
    let suffix = &resource_id[kind.resource_prefix().len()..];
    match parse_uuid(suffix) {
        Some(value) if suffix.bytes().all(|b| !b.is_ascii_uppercase()) => (value, true),
        _ => (fnv1a_128(resource_id.as_bytes()), false),
    }
}

/// The canonical `prefect.resource.id` of run `key` of `kind`.
pub fn canonical_id(kind: RunKind, key: RunKey) -> String {
    format!("{}{}", kind.resource_prefix(), format_uuid(key))
}

/// The state a run had at the time of the REST baseline, as far as its events tell.
///
/// With a baseline, the totals are `REST counts at time B` plus, for every tracked run,
/// `+1` in its current state and `-1` in its state at B. The state at B is the `to` of its
/// newest event at or before B, or else the `from` of its oldest event after B (`None`: the
/// run did not exist at B). Both are kept up to date whatever order events arrive in, so the
/// totals stay exact when a lost event is repaired later. Without a baseline (replay), the
/// state at B is always `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseAnchor {
    /// The baseline this anchor belongs to (`Counts::baseline_epoch`).
    pub epoch: u64,
    /// The timestamp of the event the anchor comes from.
    pub at: Micros,
    /// Whether that event is at or before the baseline time.
    pub before: bool,
    /// The run's state at the baseline time.
    pub state: Option<StateId>,
}

impl BaseAnchor {
    /// Folds in one event with state timestamp `at`; `baseline` is the baseline time.
    pub(super) fn observe(
        &mut self,
        baseline: Micros,
        at: Micros,
        from: Option<StateId>,
        to: StateId,
    ) {
        if at <= baseline {
            if !self.before || at > self.at {
                *self = BaseAnchor {
                    epoch: self.epoch,
                    at,
                    before: true,
                    state: Some(to),
                };
            }
        } else if !self.before && at < self.at {
            *self = BaseAnchor {
                epoch: self.epoch,
                at,
                before: false,
                state: from,
            };
        }
    }
}

/// `base_state` of a record with no state at the baseline.
const NO_STATE: u16 = u16::MAX;
/// Flag: the anchor's event is at or before the baseline.
const BASE_BEFORE: u8 = 1;
/// Flag: the current state comes from the REST baseline, not from an event (the state
/// timestamp is `since`, the event id 0), until an event newer than it arrives.
const SEEDED: u8 = 2;

/// Everything known about one tracked run.
#[derive(Clone, Debug)]
pub struct RunRecord {
    key: [u64; 2],
    since: Micros,
    last_occurred: Micros,
    base_at: Micros,
    name: Option<CompactString>,
    history: History,
    series: SeriesId,
    labels: LabelsId,
    state: StateId,
    base_state: u16,
    base_epoch: u16,
    flags: u8,
}

/// What a new record starts from.
pub struct NewRun<'a> {
    /// Its key.
    pub key: RunKey,
    /// `prefect.resource.name`, if any.
    pub name: Option<&'a str>,
    /// Its state.
    pub state: StateId,
    /// When it entered the state.
    pub since: Micros,
    /// Newest `occurred` of its events.
    pub last_occurred: Micros,
    /// Its group-by label set.
    pub series: SeriesId,
    /// Its related names.
    pub labels: LabelsId,
    /// Where it stood at the baseline.
    pub base: BaseAnchor,
}

impl RunRecord {
    /// A record from an event (`seeded` false) or from the REST baseline (`seeded` true: the
    /// state's timestamp is `since` and no event set it yet).
    pub fn new(run: NewRun<'_>, seeded: bool) -> RunRecord {
        let mut record = RunRecord {
            key: [(run.key >> 64) as u64, run.key as u64],
            since: run.since,
            last_occurred: run.last_occurred,
            base_at: 0,
            base_epoch: 0,
            series: run.series,
            labels: run.labels,
            state: run.state,
            base_state: NO_STATE,
            flags: if seeded { SEEDED } else { 0 },
            name: run.name.map(CompactString::from),
            history: History::default(),
        };
        record.set_base(run.base);
        record
    }

    /// Its key.
    pub fn key(&self) -> RunKey {
        (u128::from(self.key[0]) << 64) | u128::from(self.key[1])
    }

    /// `prefect.resource.name` of the newest event that had one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The current state.
    pub fn state(&self) -> StateId {
        self.state
    }

    /// When the run entered the current state.
    pub fn since(&self) -> Micros {
        self.since
    }

    /// State timestamp of the event that set the current state (the ordering key).
    pub fn state_at(&self) -> Micros {
        self.current().0
    }

    /// The event that set the current state (0 for a run known only from REST).
    pub fn state_event(&self) -> EventId {
        self.current().1
    }

    /// (state timestamp, event id) of the current state: the newest recent transition,
    /// unless the state came from the baseline and no newer event arrived.
    fn current(&self) -> (Micros, EventId) {
        match self.history.last() {
            Some(newest) if self.flags & SEEDED == 0 => newest.order(),
            _ => (self.since, EventId(0)),
        }
    }

    /// Newest `occurred` of any of its events (drives terminal retention).
    pub fn last_occurred(&self) -> Micros {
        self.last_occurred
    }

    /// The group-by label set of the current state.
    pub fn series(&self) -> SeriesId {
        self.series
    }

    /// Related names from the newest event that had them.
    pub fn labels(&self) -> LabelsId {
        self.labels
    }

    /// The last few transitions and the per-transition counts.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Where the run stood when the REST baseline was taken.
    pub fn base(&self) -> BaseAnchor {
        BaseAnchor {
            epoch: u64::from(self.base_epoch),
            at: self.base_at,
            before: self.flags & BASE_BEFORE != 0,
            state: (self.base_state != NO_STATE).then_some(StateId(self.base_state)),
        }
    }

    pub(super) fn set_base(&mut self, base: BaseAnchor) {
        // Epochs are compared for equality only; a run untouched for 65,536 baselines (half
        // a year at the default interval) is the only one that could be mistaken.
        self.base_epoch = base.epoch as u16;
        self.base_at = base.at;
        self.base_state = base.state.map_or(NO_STATE, |s| s.0);
        if base.before {
            self.flags |= BASE_BEFORE;
        } else {
            self.flags &= !BASE_BEFORE;
        }
    }

    pub(super) fn count_transition(&mut self, from: Option<StateId>, to: StateId) {
        self.history.count(from, to);
    }

    pub(super) fn remember(&mut self, transition: RecentTransition) {
        self.history.remember(transition);
    }

    /// Notes a newer event: its `occurred`, and the run name when it has one. Returns
    /// whether the event is the newest seen (so its labels replace the run's).
    pub(super) fn saw(&mut self, occurred: Micros, name: Option<&str>) -> bool {
        if occurred <= self.last_occurred {
            return false;
        }
        self.last_occurred = occurred;
        if let Some(name) = name {
            if self.name.as_deref() != Some(name) {
                self.name = Some(CompactString::from(name));
            }
        }
        true
    }

    pub(super) fn set_labels(&mut self, labels: LabelsId) {
        self.labels = labels;
    }

    /// Enters `state` of an event at `at` (the caller decided it is the newest), keeping
    /// `since` when the state does not change.
    pub(super) fn enter(&mut self, state: StateId, series: SeriesId, at: Micros) {
        if state != self.state {
            self.since = at;
        }
        self.state = state;
        self.series = series;
        self.flags &= !SEEDED;
    }

    /// Rebuilds a saved record (a state file): counts and transitions as saved. `None` when
    /// the saved current event is neither the newest transition nor a baseline state.
    pub fn restore(
        run: NewRun<'_>,
        state_at: Micros,
        state_event: EventId,
        transitions: impl IntoIterator<Item = (Option<StateId>, StateId, u32)>,
        recent: impl IntoIterator<Item = RecentTransition>,
    ) -> Option<RunRecord> {
        let mut record = RunRecord::new(run, false);
        for (from, to, count) in transitions {
            record.history.add_count(from, to, count);
        }
        record.history.set_recent(recent);
        if record.current() != (state_at, state_event) {
            if state_event != EventId(0) || state_at != record.since {
                return None;
            }
            record.flags |= SEEDED;
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_compact() {
        assert_eq!(
            std::mem::size_of::<Option<RunRecord>>(),
            std::mem::size_of::<RunRecord>(),
            "a free slab slot costs nothing extra"
        );
        assert!(
            std::mem::size_of::<RunRecord>() <= 248,
            "{} bytes",
            std::mem::size_of::<RunRecord>()
        );
    }
}
