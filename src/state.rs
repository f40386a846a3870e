//! Per-run state keyed by `prefect.resource.id`, and the aggregate counts built from it.
//!
//! [`Tracker`] is the only writer: the pipeline calls [`Tracker::apply`] for every new state
//! event while holding the [`Counts`] lock for a batch. Readers (HTTP, metrics) take that lock
//! only to copy the small aggregates, and read run records from the [`RunTable`]s shard by
//! shard, so reading never stalls ingestion for longer than one copy.
//!
//! Semantics (SPEC §3): every state event contributes its own transition (`from` =
//! `initial_state`, `to` = `validated_state`), so entries and transitions do not depend on
//! arrival order; a run's current state is the one of its newest event by state timestamp,
//! which an older event arriving late never moves back; a same-state event is a
//! self-transition, counted apart and never as an entry.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::decode::RejectReason;
use crate::event::{
    format_uuid, parse_uuid, Event, EventId, RelatedNames, RunKind, StateChange, StateKey,
};
use crate::histogram::Histogram;
use crate::labels::{Interner, SeriesId, SeriesTable, StateNames};
use crate::ledger::Ledger;
use crate::prefect_api::RunSummary;
use crate::timestamp::Micros;

/// How many of a run's transitions its record keeps, newest last.
pub const RECENT_TRANSITIONS: usize = 5;

/// Upper bounds (seconds) of the state-duration histogram: queue waits in seconds up to runs
/// of a day.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
    43200.0, 86400.0,
];

/// Settings of the state layer.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// Count task runs too (`--task-runs`).
    pub track_task_runs: bool,
    /// Drop terminal runs from memory after this long (event time) without an event.
    pub terminal_retention: Micros,
    /// Cap on group-by label sets and on distinct state names.
    pub max_series: usize,
    /// Cap on runs of each kind held in memory (`--max-tracked-runs`).
    pub max_tracked_runs: usize,
    /// Group-by dimensions, in label order.
    pub group_by: Vec<crate::labels::GroupBy>,
}

/// The map key of a run: the UUID of its resource id, or a 128-bit hash of an id that is not
/// `prefect.<kind>.<lower-case uuid>` (the record then keeps the original text).
pub type RunKey = u128;

/// The key of a resource id of `kind`, and whether the id is canonical.
pub fn run_key(kind: RunKind, resource_id: &str) -> (RunKey, bool) {
    let suffix = &resource_id[kind.resource_prefix().len()..];
    match parse_uuid(suffix) {
        Some(value) if suffix.bytes().all(|b| !b.is_ascii_uppercase()) => (value, true),
        _ => (crate::event::fnv1a_128(resource_id.as_bytes()), false),
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
    fn observe(&mut self, baseline: Micros, at: Micros, from: &Option<StateKey>, to: &StateKey) {
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

    fn count_transition(&mut self, from: &Option<StateKey>, to: &StateKey) {
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

    fn remember(&mut self, transition: RecentTransition) {
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

/// The runs of one kind, keyed by [`RunKey`].
#[derive(Debug, Default)]
pub struct RunTable {
    /// The records. Readers may iterate; only the [`Tracker`] writes.
    pub runs: DashMap<RunKey, RunRecord, foldhash::fast::RandomState>,
}

/// Upper bounds (seconds) of the event-delay histogram.
pub const DELAY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
];

/// A hash map with a fast hasher, for keys the event stream cannot choose freely (state
/// names and label sets are capped by `--max-series`).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Aggregates of one run kind.
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

impl KindCounts {
    fn add_current(&mut self, state: &StateKey, delta: i64) {
        *self.current.entry(state.clone()).or_default() += delta;
    }

    fn add_active(&mut self, state: &StateKey, series: SeriesId, delta: i64) {
        if state.ty.is_terminal() {
            return;
        }
        let key = (state.clone(), series);
        let value = self.active.entry(key.clone()).or_default();
        *value += delta;
        if *value == 0 {
            self.active.remove(&key);
        }
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
    /// Wall-clock time the last state event was decoded (quiescence checks).
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
    /// Per kind, by [`RunKind::index`].
    pub kinds: [KindCounts; 2],
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
}

/// Tracked runs in non-terminal states, ordered by when they entered the state.
#[derive(Clone, Debug, Default)]
pub struct Waiting {
    by_state: FastMap<StateKey, std::collections::BTreeSet<(Micros, RunKey)>>,
}

impl Waiting {
    /// Notes that run `key` moved from `old` (state, since) to `new`; terminal states are
    /// not indexed.
    pub fn moved(
        &mut self,
        key: RunKey,
        old: Option<(&StateKey, Micros)>,
        new: Option<(&StateKey, Micros)>,
    ) {
        if old == new {
            return;
        }
        if let Some((state, since)) = old.filter(|(s, _)| !s.ty.is_terminal()) {
            if let Some(set) = self.by_state.get_mut(state) {
                set.remove(&(since, key));
                if set.is_empty() {
                    self.by_state.remove(state);
                }
            }
        }
        if let Some((state, since)) = new.filter(|(s, _)| !s.ty.is_terminal()) {
            self.by_state
                .entry(state.clone())
                .or_default()
                .insert((since, key));
        }
    }

    /// When the longest-waiting run of each non-terminal state entered it.
    pub fn oldest(&self) -> impl Iterator<Item = (&StateKey, Micros)> + '_ {
        self.by_state
            .iter()
            .filter_map(|(state, set)| set.first().map(|&(since, _)| (state, since)))
    }

    /// Runs in `state` that entered it at or before `before`, longest waiting first.
    pub fn entered_before(
        &self,
        state: &StateKey,
        before: Micros,
    ) -> impl Iterator<Item = (Micros, RunKey)> + '_ {
        self.by_state
            .get(state)
            .into_iter()
            .flat_map(move |set| set.range(..=(before, RunKey::MAX)).copied())
    }
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

impl Counts {
    /// Replaces the totals of `kind` with the server's counts, taken while no state event was
    /// in flight (quiescence), and returns the drift (runs moved). Call
    /// [`Counts::set_baseline`] afterwards: every tracked run's state at the new baseline is
    /// its current state, and anchors are rebased lazily when a run is next touched.
    pub fn rebase(&mut self, kind: RunKind, totals: HashMap<StateKey, i64>) -> [i64; 9] {
        let current = &mut self.kinds[kind.index()].current;
        let mut drift = [0i64; 9];
        for (key, value) in &totals {
            drift[key.ty.index()] += value - current.get(key).copied().unwrap_or(0);
        }
        for (key, value) in current.iter() {
            if !totals.contains_key(key) {
                drift[key.ty.index()] -= value;
            }
        }
        *current = totals.into_iter().collect();
        drift
    }

    /// Starts a new baseline epoch at `at` (after [`Counts::rebase`] of every tracked kind).
    pub fn set_baseline(&mut self, at: Micros) {
        self.baseline = Some(at);
        self.baseline_epoch += 1;
    }
}

/// State shared between the pipeline and its readers.
#[derive(Debug)]
pub struct Shared {
    /// Runs per kind, by [`RunKind::index`].
    pub tables: [RunTable; 2],
    /// The aggregates.
    pub counts: Mutex<Counts>,
    /// Whether task runs are tracked.
    pub track_task_runs: bool,
    /// State-file writes, when `--state-file` is on.
    pub persist: Mutex<Option<PersistStats>>,
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

impl Shared {
    /// The run table of `kind`.
    pub fn table(&self, kind: RunKind) -> &RunTable {
        &self.tables[kind.index()]
    }

    /// The kinds being tracked.
    pub fn kinds(&self) -> impl Iterator<Item = RunKind> + '_ {
        RunKind::ALL
            .into_iter()
            .filter(|k| *k == RunKind::FlowRun || self.track_task_runs)
    }
}

/// The single writer of [`Shared`].
#[derive(Debug)]
pub struct Tracker {
    shared: Arc<Shared>,
    names: StateNames,
    strings: Interner,
    config: StateConfig,
    retention: VecDeque<(Micros, RunKind, RunKey)>,
    dirty: Option<HashSet<(RunKind, RunKey), foldhash::fast::RandomState>>,
}

/// A run's record as it changed since the last [`Tracker::take_dirty`]: `None` when it was
/// dropped.
pub type DirtyRun = (RunKind, RunKey, Option<RunRecord>);

impl Tracker {
    /// A tracker with empty state.
    pub fn new(config: StateConfig) -> Tracker {
        let counts = Counts {
            kinds: Default::default(),
            events: EventCounts::default(),
            series: SeriesTable::new(config.group_by.clone(), config.max_series),
            baseline: None,
            baseline_epoch: 0,
            ledger: None,
            checks: CheckCounts::default(),
            waiting: Default::default(),
        };
        let shared = Arc::new(Shared {
            tables: Default::default(),
            counts: Mutex::new(counts),
            track_task_runs: config.track_task_runs,
            persist: Mutex::new(None),
        });
        Tracker {
            shared,
            names: StateNames::new(config.max_series),
            strings: Interner::new(config.max_series.saturating_mul(4)),
            config,
            retention: VecDeque::new(),
            dirty: None,
        }
    }

    /// Starts remembering which runs change, for [`Tracker::take_dirty`] (the state file).
    pub fn journal(&mut self) {
        self.dirty.get_or_insert_with(Default::default);
    }

    /// Copies of the runs changed since the last call (cheap: only those runs are cloned).
    pub fn take_dirty(&mut self) -> Vec<DirtyRun> {
        let Some(dirty) = self.dirty.as_mut() else {
            return Vec::new();
        };
        dirty
            .drain()
            .map(|(kind, key)| {
                let record = self.shared.tables[kind.index()]
                    .runs
                    .get(&key)
                    .map(|r| r.clone());
                (kind, key, record)
            })
            .collect()
    }

    /// The state-name table and the label-string interner, for rebuilding records.
    pub fn interners(&mut self) -> (&mut StateNames, &mut Interner) {
        (&mut self.names, &mut self.strings)
    }

    /// The settings it runs with.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// Replaces everything with restored aggregates and runs (a state file), and rebuilds the
    /// retention queue from the terminal runs.
    pub fn install(&mut self, mut counts: Counts, runs: Vec<(RunKind, RunKey, RunRecord)>) {
        let mut retention: Vec<(Micros, RunKind, RunKey)> = Vec::new();
        counts.waiting = Default::default();
        for (kind, key, record) in runs {
            counts.waiting[kind.index()].moved(key, None, Some((&record.state, record.since)));
            if record.state.ty.is_terminal() {
                retention.push((record.last_occurred, kind, key));
            }
            self.shared.tables[kind.index()].runs.insert(key, record);
        }
        retention.sort_unstable_by_key(|&(at, kind, key)| (at, kind.index(), key));
        self.retention = retention.into();
        self.names.set_folded(counts.events.folded_state_names);
        *self.shared.counts.lock() = counts;
    }

    fn mark(&mut self, kind: RunKind, key: RunKey) {
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.insert((kind, key));
        }
    }

    /// The state readers see.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The kind `event` is tracked as, when it is a state event of a tracked kind.
    pub fn tracked_kind(&self, event: &Event<'_>) -> Option<RunKind> {
        event.state.as_ref()?;
        match RunKind::of_resource(&event.resource_id)? {
            RunKind::TaskRun if !self.config.track_task_runs => None,
            kind => Some(kind),
        }
    }

    /// Applies one new (already deduplicated) state event of `kind`.
    ///
    /// `follows_seen` says whether the event named by `follows` is known (for chain gaps).
    pub fn apply(
        &mut self,
        counts: &mut Counts,
        kind: RunKind,
        event: &Event<'_>,
        change: &StateChange<'_>,
        follows_seen: bool,
    ) {
        let to = self.names.key(change.to.ty, &change.to.name);
        let from = change.from.as_ref().map(|f| self.names.key(f.ty, &f.name));
        counts.events.folded_state_names = self.names.folded();
        let series = counts.series.id_for(&event.related);
        counts.events.folded_label_sets = counts.series.folded();
        let kc = &mut counts.kinds[kind.index()];
        let waiting = &mut counts.waiting[kind.index()];
        if from.as_ref() == Some(&to) {
            *kc.self_transitions.entry(to.clone()).or_default() += 1;
            counts.events.self_transitions += 1;
        } else {
            *kc.entries.entry((to.clone(), series)).or_default() += 1;
            let from_index = from.as_ref().map_or(9, |f| f.ty.index());
            kc.transitions[from_index][to.ty.index()] += 1;
        }

        let (key, canonical) = run_key(kind, &event.resource_id);
        self.mark(kind, key);
        let transition = RecentTransition {
            from: from.clone(),
            to: to.clone(),
            at: change.timestamp,
            event: event.id,
        };
        let baseline = counts.baseline;
        let epoch = counts.baseline_epoch;
        let table = &self.shared.tables[kind.index()];
        let inserted = match table.runs.entry(key) {
            Entry::Vacant(vacant) => {
                let mut base = BaseAnchor {
                    epoch,
                    at: change.timestamp,
                    before: false,
                    state: None,
                };
                if let Some(b) = baseline {
                    base.before = change.timestamp <= b;
                    base.state = if base.before {
                        Some(to.clone())
                    } else {
                        from.clone()
                    };
                }
                kc.add_current(&to, 1);
                if let Some(state) = &base.state {
                    kc.add_current(state, -1);
                }
                kc.add_active(&to, series, 1);
                waiting.moved(key, None, Some((&to, change.timestamp)));
                if to.ty.is_terminal() {
                    self.retention.push_back((event.occurred, kind, key));
                }
                let mut record = RunRecord {
                    odd_id: (!canonical).then(|| event.resource_id.as_ref().into()),
                    name: event.resource_name.as_deref().map(Into::into),
                    state: to.clone(),
                    since: change.timestamp,
                    state_at: change.timestamp,
                    state_event: event.id,
                    last_occurred: event.occurred,
                    series,
                    labels: run_labels(&mut self.strings, &event.related),
                    transitions: Vec::new(),
                    recent: VecDeque::new(),
                    base,
                };
                record.count_transition(&from, &to);
                record.remember(transition);
                vacant.insert(record);
                true
            }
            Entry::Occupied(mut occupied) => {
                let record = occupied.get_mut();
                if event.follows.is_some() && !follows_seen {
                    counts.events.chain_gaps += 1;
                }
                record.count_transition(&from, &to);
                record.remember(transition);
                if event.occurred > record.last_occurred {
                    record.last_occurred = event.occurred;
                    if let Some(name) = event.resource_name.as_deref() {
                        if record.name.as_deref() != Some(name) {
                            record.name = Some(name.into());
                        }
                    }
                    if has_labels(&event.related) {
                        record.labels = run_labels(&mut self.strings, &event.related);
                    }
                }
                if let Some(b) = baseline {
                    if record.base.epoch != epoch {
                        record.base = BaseAnchor {
                            epoch,
                            at: record.state_at,
                            before: true,
                            state: Some(record.state.clone()),
                        };
                    }
                    let old = record.base.state.clone();
                    record.base.observe(b, change.timestamp, &from, &to);
                    if record.base.state != old {
                        if let Some(state) = &old {
                            kc.add_current(state, 1);
                        }
                        if let Some(state) = &record.base.state {
                            kc.add_current(state, -1);
                        }
                    }
                }
                if (change.timestamp, event.id) > (record.state_at, record.state_event) {
                    let was_terminal = record.state.ty.is_terminal();
                    let before = (record.state != to).then(|| (record.state.clone(), record.since));
                    if record.state != to {
                        kc.add_current(&record.state, -1);
                        kc.add_current(&to, 1);
                        let seconds = (change.timestamp - record.since).max(0) as f64 / 1e6;
                        kc.durations
                            .entry(record.state.clone())
                            .or_insert_with(|| Histogram::new(&DURATION_BUCKETS))
                            .observe(seconds);
                        record.since = change.timestamp;
                    }
                    kc.add_active(&record.state, record.series, -1);
                    kc.add_active(&to, series, 1);
                    record.state = to;
                    record.series = series;
                    record.state_at = change.timestamp;
                    record.state_event = event.id;
                    if let Some((state, since)) = before {
                        waiting.moved(
                            key,
                            Some((&state, since)),
                            Some((&record.state, record.since)),
                        );
                    }
                    if record.state.ty.is_terminal() && !was_terminal {
                        self.retention.push_back((record.last_occurred, kind, key));
                    }
                }
                false
            }
        };
        if inserted {
            self.enforce_cap(counts, kind, key);
        }
    }

    /// Keeps at most `--max-tracked-runs` runs of `kind` in memory: past it, drops the
    /// terminal run longest without an event or else the run waiting longest in a
    /// non-terminal state (never `keep`, the run just added). Its contribution to the totals
    /// stays, as with retirement; the drop is counted.
    fn enforce_cap(&mut self, counts: &mut Counts, kind: RunKind, keep: RunKey) {
        let table = &self.shared.tables[kind.index()];
        while table.runs.len() > self.config.max_tracked_runs {
            // The queue's front holds the terminal runs longest without an event; entries of
            // the other kind are skipped, a bounded number, so a cap stays cheap.
            let terminal = self
                .retention
                .iter()
                .take(64)
                .position(|&(_, k, key)| k == kind && key != keep);
            let victim = match terminal {
                Some(position) => self.retention.remove(position).map(|(_, _, key)| key),
                None => counts.waiting[kind.index()]
                    .oldest()
                    .min_by_key(|&(_, since)| since)
                    .and_then(|(state, _)| {
                        counts.waiting[kind.index()]
                            .entered_before(state, Micros::MAX)
                            .map(|(_, key)| key)
                            .find(|&key| key != keep)
                    }),
            };
            let Some(victim) = victim else { return };
            let Some((_, record)) = table.runs.remove(&victim) else {
                continue;
            };
            counts.waiting[kind.index()].moved(victim, Some((&record.state, record.since)), None);
            counts.kinds[kind.index()].add_active(&record.state, record.series, -1);
            counts.events.runs_evicted += 1;
            if let Some(dirty) = self.dirty.as_mut() {
                dirty.insert((kind, victim));
            }
        }
    }

    /// Tracks a run known only from the REST baseline, in its current state, without
    /// changing the totals (the baseline already counts it).
    pub fn seed(&mut self, counts: &mut Counts, kind: RunKind, run: &RunSummary, now: Micros) {
        let (key, canonical) = run_key(kind, &format!("{}{}", kind.resource_prefix(), run.id));
        let table = &self.shared.tables[kind.index()];
        let Entry::Vacant(vacant) = table.runs.entry(key) else {
            return;
        };
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.insert((kind, key));
        }
        let state = self.names.key(run.state_type, &run.state_name);
        let at = run.state_timestamp.unwrap_or(now);
        let related = RelatedNames {
            work_pool: run.work_pool.as_deref().map(Cow::Borrowed),
            work_queue: run.work_queue.as_deref().map(Cow::Borrowed),
            ..RelatedNames::default()
        };
        let series = counts.series.id_for(&related);
        counts.kinds[kind.index()].add_active(&state, series, 1);
        counts.waiting[kind.index()].moved(key, None, Some((&state, at)));
        vacant.insert(RunRecord {
            odd_id: (!canonical).then(|| format!("{}{}", kind.resource_prefix(), run.id).into()),
            name: run.name.as_deref().map(Into::into),
            state: state.clone(),
            since: at,
            state_at: at,
            state_event: EventId(0),
            last_occurred: at,
            series,
            labels: run_labels(&mut self.strings, &related),
            transitions: Vec::new(),
            recent: VecDeque::new(),
            base: BaseAnchor {
                epoch: counts.baseline_epoch,
                at,
                before: true,
                state: Some(state),
            },
        });
        self.enforce_cap(counts, kind, key);
    }

    /// Drops terminal runs with no event for the retention period before `now` (event time).
    /// Their contribution to the totals stays.
    pub fn retire(&mut self, counts: &mut Counts, now: Micros) {
        let cutoff = now - self.config.terminal_retention;
        while let Some(&(at, kind, key)) = self.retention.front() {
            if at >= cutoff {
                break;
            }
            self.retention.pop_front();
            let table = &self.shared.tables[kind.index()];
            let mut newer = None;
            let removed = table.runs.remove_if(&key, |_, record| {
                if !record.state.ty.is_terminal() {
                    return false;
                }
                if record.last_occurred >= cutoff {
                    newer = Some(record.last_occurred);
                    return false;
                }
                true
            });
            if removed.is_some() {
                counts.events.runs_retired += 1;
                self.mark(kind, key);
            } else if let Some(last) = newer {
                self.retention.push_back((last, kind, key));
            }
        }
    }
}

fn has_labels(related: &RelatedNames<'_>) -> bool {
    related.flow.is_some()
        || related.deployment.is_some()
        || related.work_pool.is_some()
        || related.work_queue.is_some()
        || !related.tags.is_empty()
}

fn run_labels(strings: &mut Interner, related: &RelatedNames<'_>) -> RunLabels {
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
