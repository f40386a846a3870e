//! The aggregates readers copy: per-kind counts by state, stream counters, verification
//! counters, and what the state file reports. Small, behind one lock in [`super::Shared`].

use std::collections::HashMap;

use crate::model::event::{RunKind, StateKey};
use crate::model::reject::RejectReason;
use crate::model::time::Micros;
use crate::state::changes::{ChangeLog, HISTORY};
use crate::state::histogram::Histogram;
use crate::state::label_sets::LabelSets;
use crate::state::labels::{SeriesId, SeriesTable};
use crate::state::ledger::Ledger;
use crate::state::minutes::MinuteHistory;
use crate::state::names::{StateId, StateTable};
use crate::state::waiting::Waiting;
use crate::state::FastMap;

/// Upper bounds (seconds) of the state-duration histogram: queue waits in seconds up to runs
/// of a day.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
    43200.0, 86400.0,
];

/// Upper bounds (seconds) of the event-delay histogram.
pub const DELAY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
];

/// Aggregates of one run kind, as readers see them: keyed by state.
#[derive(Clone, Debug, Default)]
pub struct KindCounts {
    /// Runs currently in each state.
    pub current: FastMap<StateKey, i64>,
    /// Entries into each state, by group-by label set (self-transitions excluded).
    pub entries: FastMap<(StateKey, SeriesId), u64>,
    /// Transitions by type: `[from type index, or 9 for a new run][to type index]`.
    pub transitions: [[u64; 9]; 10],
    /// Same-state events by state.
    pub self_transitions: FastMap<StateKey, u64>,
    /// Tracked non-terminal runs by state and group-by label set.
    pub active: FastMap<(StateKey, SeriesId), i64>,
    /// Time spent in each state, observed when a run leaves it.
    pub durations: FastMap<StateKey, Histogram>,
}

/// Aggregates of one run kind, as the tracker keeps them: indexed by [`StateId`], so an
/// event touches arrays and integer-keyed maps, never hashes a state name.
#[derive(Clone, Debug, Default)]
pub struct KindTally {
    /// Runs currently in each state (`None`: never counted).
    current: Vec<Option<i64>>,
    entries: FastMap<(StateId, SeriesId), u64>,
    transitions: [[u64; 9]; 10],
    self_transitions: Vec<u64>,
    active: FastMap<(StateId, SeriesId), i64>,
    durations: Vec<Option<Histogram>>,
}

/// The slot of `id` in a table indexed by state id, grown as needed.
fn slot<T: Default>(table: &mut Vec<T>, id: StateId) -> &mut T {
    if table.len() <= id.index() {
        table.resize_with(id.index() + 1, T::default);
    }
    &mut table[id.index()]
}

impl KindTally {
    pub(super) fn add_current(&mut self, state: StateId, delta: i64) {
        *slot(&mut self.current, state).get_or_insert(0) += delta;
    }

    pub(super) fn add_active(
        &mut self,
        states: &StateTable,
        state: StateId,
        series: SeriesId,
        delta: i64,
    ) {
        if states.key(state).ty.is_terminal() {
            return;
        }
        let key = (state, series);
        let value = self.active.entry(key).or_default();
        *value += delta;
        if *value == 0 {
            self.active.remove(&key);
        }
    }

    pub(super) fn count_entry(&mut self, state: StateId, series: SeriesId) {
        *self.entries.entry((state, series)).or_default() += 1;
    }

    pub(super) fn count_transition(&mut self, from_type: Option<usize>, to_type: usize) {
        self.transitions[from_type.unwrap_or(9)][to_type] += 1;
    }

    pub(super) fn count_self_transition(&mut self, state: StateId) {
        *slot(&mut self.self_transitions, state) += 1;
    }

    pub(super) fn observe_duration(&mut self, state: StateId, seconds: f64) {
        slot(&mut self.durations, state)
            .get_or_insert_with(|| Histogram::new(&DURATION_BUCKETS))
            .observe(seconds);
    }

    /// Replaces the current counts with `totals`; returns the drift by state type.
    fn rebase(&mut self, states: &mut StateTable, totals: HashMap<StateKey, i64>) -> [i64; 9] {
        let mut drift = [0i64; 9];
        for (i, value) in self.current.iter().enumerate() {
            if let Some(value) = value {
                drift[states.key(StateId(i as u16)).ty.index()] -= value;
            }
        }
        self.current.clear();
        for (key, value) in totals {
            drift[key.ty.index()] += value;
            let id = states.restore_id(key.ty, &key.name);
            *slot(&mut self.current, id) = Some(value);
        }
        drift
    }

    /// The aggregates keyed by state, for readers.
    pub fn view(&self, states: &StateTable) -> KindCounts {
        let key = |i: usize| states.key(StateId(i as u16)).clone();
        KindCounts {
            current: (self.current.iter().enumerate())
                .filter_map(|(i, v)| v.map(|v| (key(i), v)))
                .collect(),
            entries: (self.entries.iter())
                .map(|(&(s, series), &n)| ((states.key(s).clone(), series), n))
                .collect(),
            transitions: self.transitions,
            self_transitions: (self.self_transitions.iter().enumerate())
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (key(i), *n))
                .collect(),
            active: (self.active.iter())
                .map(|(&(s, series), &n)| ((states.key(s).clone(), series), n))
                .collect(),
            durations: (self.durations.iter().enumerate())
                .filter_map(|(i, h)| h.as_ref().map(|h| (key(i), h.clone())))
                .collect(),
        }
    }

    /// Aggregates saved by readers' keys (a state file), with ids from `states`.
    pub fn from_view(view: &KindCounts, states: &mut StateTable) -> KindTally {
        let mut tally = KindTally {
            transitions: view.transitions,
            ..KindTally::default()
        };
        let mut id = |key: &StateKey| states.restore_id(key.ty, &key.name);
        for (key, &n) in &view.current {
            *slot(&mut tally.current, id(key)) = Some(n);
        }
        for ((key, series), &n) in &view.entries {
            tally.entries.insert((id(key), *series), n);
        }
        for (key, &n) in &view.self_transitions {
            *slot(&mut tally.self_transitions, id(key)) = n;
        }
        for ((key, series), &n) in &view.active {
            tally.active.insert((id(key), *series), n);
        }
        for (key, h) in &view.durations {
            *slot(&mut tally.durations, id(key)) = Some(h.clone());
        }
        tally
    }
}

/// Counters about the event stream itself.
#[derive(Clone, Debug)]
pub struct EventCounts {
    /// Decoded state events (duplicates included).
    pub state: u64,
    /// Decoded other events (duplicates included).
    pub other: u64,
    /// Events dropped as duplicates.
    pub duplicates: u64,
    /// Rejected lines by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Same-state events (all kinds).
    pub self_transitions: u64,
    /// Tracked runs whose `follows` named an event never seen.
    pub chain_gaps: u64,
    /// Newest `occurred` applied.
    pub last_occurred: Option<Micros>,
    /// State events applied (duplicates excluded), and the wall-clock time of the last one:
    /// the reconciler's quiescence marker. A duplicate changes no count, so it never makes a
    /// moment busy (a repair re-fetching a window applies many). Not persisted.
    pub state_applied: u64,
    /// See `state_applied`.
    pub last_state_seen: Option<Micros>,
    /// Wall-clock delay between `occurred` and applying, per event.
    pub delay: Histogram,
    /// Ids remembered by the dedup window.
    pub dedup_ids: u64,
    /// Ids dropped from the dedup window because it was full.
    pub dedup_evicted: u64,
    /// Terminal runs dropped from memory after the retention period.
    pub runs_retired: u64,
    /// Runs dropped from memory at `--max-tracked-runs`.
    pub runs_evicted: u64,
    /// State events whose state name was folded into `__other__`.
    pub folded_state_names: u64,
    /// State events whose group-by label set was folded into `__other__`.
    pub folded_label_sets: u64,
}

impl Default for EventCounts {
    fn default() -> Self {
        EventCounts {
            state: 0,
            other: 0,
            duplicates: 0,
            rejected: [0; RejectReason::ALL.len()],
            self_transitions: 0,
            chain_gaps: 0,
            last_occurred: None,
            state_applied: 0,
            last_state_seen: None,
            delay: Histogram::new(&DELAY_BUCKETS),
            dedup_ids: 0,
            dedup_evicted: 0,
            runs_retired: 0,
            runs_evicted: 0,
            folded_state_names: 0,
            folded_label_sets: 0,
        }
    }
}

impl EventCounts {
    /// All rejected lines.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

/// The aggregates readers copy: small, behind one lock.
#[derive(Debug)]
pub struct Counts {
    /// Per kind, by [`RunKind::index`] (read them with [`Counts::kind_counts`]).
    pub(crate) tallies: [KindTally; 2],
    /// The states counted, by id.
    pub states: StateTable,
    /// The runs' sets of related names, by id.
    pub label_sets: LabelSets,
    /// Stream counters.
    pub events: EventCounts,
    /// Group-by label sets.
    pub series: SeriesTable,
    /// Time of the last REST baseline (or reconciliation); `None` in replay mode.
    pub baseline: Option<Micros>,
    /// Incremented at every baseline; run anchors of an older epoch are rebased lazily.
    pub baseline_epoch: u64,
    /// Distinct events held per second, for verification (live mode only).
    pub ledger: Option<Ledger>,
    /// Verification and reconciliation counters.
    pub checks: CheckCounts,
    /// Tracked runs in each non-terminal state, by when they entered it, per kind: the
    /// oldest-age gauges and stuck-run lists read the first entries instead of every run.
    pub waiting: [Waiting; 2],
    /// Every state event applied, for the HTTP stream (bounded).
    pub changes: ChangeLog,
    /// Entries per minute over the newest hour of events.
    pub minutes: MinuteHistory,
}

/// The outcome of verifying one window of events against the server's stored events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Held events equal stored events.
    Match,
    /// Equal after re-fetching the window.
    Repaired,
    /// Still different after repeated repairs, or the check failed.
    Failed,
}

/// Counters of verification, repair and reconciliation.
#[derive(Clone, Debug, Default)]
pub struct CheckCounts {
    /// Verified windows by result: match, repaired, failed.
    pub windows_match: u64,
    /// Windows whose events were re-fetched and then matched.
    pub windows_repaired: u64,
    /// Windows that could not be made to match (or whose check failed).
    pub windows_failed: u64,
    /// Events recovered by repair that the live stream had dropped.
    pub events_repaired: u64,
    /// Runs moved by reconciliation, by state type index.
    pub corrections: [u64; 9],
    /// Signed drift (server minus exporter) of the last reconciliation, by state type index.
    pub last_drift: [i64; 9],
    /// Reconciliations applied.
    pub reconciliations: u64,
    /// Outages longer than the server's backfill horizon.
    pub backfill_gaps: u64,
}

impl CheckCounts {
    /// Counts one verified window.
    pub fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Match => self.windows_match += 1,
            Verdict::Repaired => self.windows_repaired += 1,
            Verdict::Failed => self.windows_failed += 1,
        }
    }
}

impl Counts {
    /// No counts yet, with an empty label-set table and a state table of `max_names`
    /// distinct names.
    pub fn new(series: SeriesTable, max_names: usize) -> Counts {
        Counts {
            tallies: Default::default(),
            states: StateTable::new(max_names),
            label_sets: LabelSets::new(max_names.saturating_mul(4)),
            events: EventCounts::default(),
            series,
            baseline: None,
            baseline_epoch: 0,
            ledger: None,
            checks: CheckCounts::default(),
            waiting: Default::default(),
            changes: ChangeLog::new(HISTORY),
            minutes: MinuteHistory::default(),
        }
    }

    /// Replaces the totals of `kind` with the server's counts, taken while no state event was
    /// in flight (quiescence), and returns the drift (runs moved). Call
    /// [`Counts::set_baseline`] afterwards: every tracked run's state at the new baseline is
    /// its current state, and anchors are rebased lazily when a run is next touched.
    pub(super) fn rebase(&mut self, kind: RunKind, totals: HashMap<StateKey, i64>) -> [i64; 9] {
        self.tallies[kind.index()].rebase(&mut self.states, totals)
    }

    /// The aggregates of `kind`, keyed by state.
    pub fn kind_counts(&self, kind: RunKind) -> KindCounts {
        self.tallies[kind.index()].view(&self.states)
    }

    /// Runs by which the totals of `kind` are below zero (a lost or late event), summed per
    /// state type (by [`StateType::index`](crate::model::event::StateType::index)); the exposed totals hold at zero meanwhile.
    pub fn deficits(&self, kind: RunKind) -> [u64; 9] {
        let mut deficit = [0u64; 9];
        let current = &self.tallies[kind.index()].current;
        for (i, total) in current.iter().enumerate() {
            if let Some(total) = total.filter(|t| *t < 0) {
                let slot = &mut deficit[self.states.key(StateId(i as u16)).ty.index()];
                *slot = slot.saturating_add(total.unsigned_abs());
            }
        }
        deficit
    }

    /// When the longest-waiting tracked run of each non-terminal state of `kind` entered it,
    /// by state.
    pub fn oldest_waiting(&self, kind: RunKind) -> Vec<(StateKey, Micros)> {
        let mut oldest: Vec<(StateKey, Micros)> = self.waiting[kind.index()]
            .oldest()
            .map(|(state, since)| (self.states.key(state).clone(), since))
            .collect();
        oldest.sort_unstable();
        oldest
    }

    /// Starts a new baseline epoch at `at` (after [`Counts::rebase`] of every tracked kind).
    pub(super) fn set_baseline(&mut self, at: Micros) {
        self.baseline = Some(at);
        self.baseline_epoch += 1;
    }
}

/// How the state file is doing (for metrics).
#[derive(Clone, Debug, Default)]
pub struct PersistStats {
    /// Successful writes.
    pub writes_ok: u64,
    /// Failed writes.
    pub writes_failed: u64,
    /// Size of the last successful write.
    pub bytes: u64,
    /// Duration of the last write (off the ingestion path).
    pub write_seconds: f64,
    /// How long ingestion paused to hand over the last snapshot.
    pub pause_seconds: f64,
}

/// A copy of the persistable aggregates (everything in [`Counts`] but the waiting index,
/// which is rebuilt from the runs), taken under the lock for the state file.
#[derive(Debug, Clone)]
pub struct Aggregates {
    /// Per kind, by [`RunKind::index`].
    pub kinds: [KindCounts; 2],
    /// The states counted, by id (what run records' ids mean).
    pub states: StateTable,
    /// Stream counters.
    pub events: EventCounts,
    /// Group-by label sets in id order.
    pub series: Vec<crate::state::labels::LabelSet>,
    /// The id of the `__other__` label set, if it exists.
    pub series_other: Option<SeriesId>,
    /// Events whose label set was folded.
    pub series_folded: u64,
    /// Time of the last REST baseline.
    pub baseline: Option<Micros>,
    /// Baseline generation.
    pub baseline_epoch: u64,
    /// The verification ledger.
    pub ledger: Option<Ledger>,
    /// Verification and reconciliation counters.
    pub checks: CheckCounts,
}

impl Aggregates {
    /// Copies the aggregates (no run records).
    pub fn copy(counts: &Counts) -> Aggregates {
        let (sets, other) = counts.series.sets();
        Aggregates {
            kinds: RunKind::ALL.map(|kind| counts.kind_counts(kind)),
            states: counts.states.clone(),
            events: counts.events.clone(),
            series: sets.to_vec(),
            series_other: other,
            series_folded: counts.series.folded(),
            baseline: counts.baseline,
            baseline_epoch: counts.baseline_epoch,
            ledger: counts.ledger.clone(),
            checks: counts.checks.clone(),
        }
    }
}
