//! [`Tracker`]: the single writer of [`Shared`], and [`Writer`], its handle for one batch of
//! events.
//!
//! The pipeline opens a [`Writer`] per batch (the aggregates stay locked for the batch),
//! counts every frame through it, applies each new state event with [`Writer::apply`], and
//! ends the batch with [`Writer::finish`], which retires terminal runs past their retention.
//!
//! Semantics (SPEC §3): every state event contributes its own transition (`from` =
//! `initial_state`, `to` = `validated_state`), so entries and transitions do not depend on
//! arrival order; a run's current state is the one of its newest event by state timestamp,
//! which an older event arriving late never moves back; a same-state event is a
//! self-transition, counted apart and never as an entry.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use parking_lot::MutexGuard;

use crate::model::event::{Event, EventId, RelatedNames, RunKind, StateChange, StateKey};
use crate::model::group_by::GroupBy;
use crate::model::known_run::KnownRun;
use crate::model::reject::RejectReason;
use crate::model::time::{as_seconds, Micros};
use crate::state::counts::{Aggregates, Counts, KindCounts, DURATION_BUCKETS};
use crate::state::histogram::Histogram;
use crate::state::labels::{Interner, SeriesId, SeriesTable, StateNames};
use crate::state::ledger::Ledger;
use crate::state::record::{
    has_labels, run_key, run_labels, BaseAnchor, RecentTransition, RunKey, RunRecord,
};
use crate::state::shared::{RunTable, Shared};

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
    pub group_by: Vec<GroupBy>,
}

/// A run's record as it changed since the last [`Tracker::take_dirty`]: `None` when it was
/// dropped.
pub type DirtyRun = (RunKind, RunKey, Option<RunRecord>);

/// Where terminal runs wait to be retired: (newest `occurred`, kind, key), oldest first.
type Retention = VecDeque<(Micros, RunKind, RunKey)>;

/// The runs changed since the last snapshot, when the state file asks for them.
type Dirty = Option<HashSet<(RunKind, RunKey), foldhash::fast::RandomState>>;

/// The single writer of [`Shared`].
#[derive(Debug)]
pub struct Tracker {
    shared: Arc<Shared>,
    names: StateNames,
    strings: Interner,
    config: StateConfig,
    retention: Retention,
    dirty: Dirty,
}

impl Tracker {
    /// A tracker with empty state.
    pub fn new(config: StateConfig) -> Tracker {
        let series = SeriesTable::new(config.group_by.clone(), config.max_series);
        let shared = Arc::new(Shared::new(Counts::new(series), config.track_task_runs));
        Tracker {
            shared,
            names: StateNames::new(config.max_series),
            strings: Interner::new(config.max_series.saturating_mul(4)),
            config,
            retention: VecDeque::new(),
            dirty: None,
        }
    }

    /// The state readers see.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The settings it runs with.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// The kind `event` is tracked as, when it is a state event of a tracked kind.
    pub fn tracked_kind(&self, event: &Event<'_>) -> Option<RunKind> {
        tracked_kind(&self.config, event)
    }

    /// Opens a batch: the aggregates stay locked until [`Writer::finish`] (or drop), so keep
    /// batches short (a few hundred frames).
    pub fn writer(&mut self, now: Micros) -> Writer<'_> {
        let Tracker {
            shared,
            names,
            strings,
            config,
            retention,
            dirty,
        } = self;
        let shared: &Shared = shared;
        Writer {
            counts: shared.lock_counts(),
            shared,
            names,
            strings,
            config,
            retention,
            dirty,
            now,
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
        let shared = &self.shared;
        dirty
            .drain()
            .map(|(kind, key)| {
                let record = shared.table(kind).runs.get(&key).map(|r| r.clone());
                (kind, key, record)
            })
            .collect()
    }

    /// A copy of the persistable aggregates.
    pub fn aggregates(&self) -> Aggregates {
        Aggregates::copy(&self.shared.lock_counts())
    }

    /// The state-name table and the label-string interner, for rebuilding records.
    pub fn interners(&mut self) -> (&mut StateNames, &mut Interner) {
        (&mut self.names, &mut self.strings)
    }

    /// Replaces everything with restored aggregates and runs (a state file), and rebuilds the
    /// retention queue and the waiting index from the runs.
    pub fn install(&mut self, mut counts: Counts, runs: Vec<(RunKind, RunKey, RunRecord)>) {
        let mut retention: Vec<(Micros, RunKind, RunKey)> = Vec::new();
        counts.waiting = Default::default();
        for (kind, key, record) in runs {
            counts.waiting[kind.index()].moved(key, None, Some((&record.state, record.since)));
            if record.state.ty.is_terminal() {
                retention.push((record.last_occurred, kind, key));
            }
            self.shared.table(kind).runs.insert(key, record);
        }
        retention.sort_unstable_by_key(|&(at, kind, key)| (at, kind.index(), key));
        self.retention = retention.into();
        self.names.set_folded(counts.events.folded_state_names);
        *self.shared.lock_counts() = counts;
    }

    /// Turns on the verification ledger for event names with these prefixes (keeping one
    /// restored from a state file).
    pub fn enable_ledger(&mut self, prefixes: Vec<&'static str>) {
        let mut counts = self.shared.lock_counts();
        if counts.ledger.is_none() {
            counts.ledger = Some(Ledger::new(prefixes));
        }
    }

    /// Starts tracking a run known only from the REST baseline, in its current state, without
    /// changing the totals (the baseline already counts it).
    pub fn seed(&mut self, kind: RunKind, run: &KnownRun, now: Micros) {
        self.writer(now).seed(kind, run);
    }
}

/// What the dedup window holds, reported at the end of a batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct DedupGauges {
    /// Newest `occurred` seen: event time "now", for retention.
    pub newest: Option<Micros>,
    /// Ids remembered.
    pub ids: u64,
    /// Ids evicted because the window was full.
    pub evicted: u64,
}

/// One batch of writes: the aggregates locked, the tracker's tables at hand.
pub struct Writer<'t> {
    counts: MutexGuard<'t, Counts>,
    shared: &'t Shared,
    names: &'t mut StateNames,
    strings: &'t mut Interner,
    config: &'t StateConfig,
    retention: &'t mut Retention,
    dirty: &'t mut Dirty,
    now: Micros,
}

/// One state event, resolved to counted keys.
struct Step<'e, 'a> {
    kind: RunKind,
    key: RunKey,
    event: &'e Event<'a>,
    at: Micros,
    from: Option<StateKey>,
    to: StateKey,
    series: SeriesId,
}

impl<'t> Writer<'t> {
    /// The kind `event` is tracked as, when it is a state event of a tracked kind.
    pub fn tracked_kind(&self, event: &Event<'_>) -> Option<RunKind> {
        tracked_kind(self.config, event)
    }

    /// Counts a decoded event (`tracked`: a state event of a tracked kind), duplicates
    /// included.
    pub fn count_received(&mut self, tracked: bool) {
        let events = &mut self.counts.events;
        if tracked {
            events.state += 1;
            events.last_state_seen = Some(self.now);
        } else {
            events.other += 1;
        }
    }

    /// Counts an event dropped as a duplicate.
    pub fn count_duplicate(&mut self) {
        self.counts.events.duplicates += 1;
    }

    /// Counts a rejected frame.
    pub fn count_rejected(&mut self, reason: RejectReason) {
        self.counts.events.rejected[reason.index()] += 1;
    }

    /// Notes an event seen for the first time: the ledger, the delay, the newest `occurred`.
    pub fn admit(&mut self, event: &Event<'_>) {
        let counts = &mut *self.counts;
        if let Some(ledger) = counts.ledger.as_mut() {
            ledger.record(&event.name, event.occurred);
        }
        let events = &mut counts.events;
        events
            .delay
            .observe(as_seconds(self.now - event.occurred).max(0.0));
        if events.last_occurred.is_none_or(|t| event.occurred > t) {
            events.last_occurred = Some(event.occurred);
        }
    }

    /// Ends the batch: retires terminal runs past their retention (event time) and records
    /// the dedup window's gauges.
    pub fn finish(mut self, dedup: DedupGauges) {
        if let Some(newest) = dedup.newest {
            self.retire(newest);
        }
        self.counts.events.dedup_ids = dedup.ids;
        self.counts.events.dedup_evicted = dedup.evicted;
    }

    /// Applies one new (already deduplicated) state event of `kind`.
    ///
    /// `follows_seen` says whether the event named by `follows` is known (for chain gaps).
    pub fn apply(
        &mut self,
        kind: RunKind,
        event: &Event<'_>,
        change: &StateChange<'_>,
        follows_seen: bool,
    ) {
        let to = self.names.key(change.to.ty, &change.to.name);
        let from = change.from.as_ref().map(|f| self.names.key(f.ty, &f.name));
        let counts = &mut *self.counts;
        counts.events.folded_state_names = self.names.folded();
        let series = counts.series.id_for(&event.related);
        counts.events.folded_label_sets = counts.series.folded();
        count_event_transition(counts, kind, &from, &to, series);

        let (key, canonical) = run_key(kind, &event.resource_id);
        self.mark(kind, key);
        let step = Step {
            kind,
            key,
            event,
            at: change.timestamp,
            from,
            to,
            series,
        };
        let table: &'t RunTable = self.shared.table(kind);
        match table.runs.entry(key) {
            Entry::Vacant(vacant) => {
                let record = self.new_run(&step, canonical);
                vacant.insert(record);
                self.enforce_cap(kind, key);
            }
            Entry::Occupied(mut occupied) => {
                if event.follows.is_some() && !follows_seen {
                    self.counts.events.chain_gaps += 1;
                }
                self.update_run(occupied.get_mut(), step);
            }
        }
    }

    /// The record of a run seen for the first time, with its contribution to the totals.
    fn new_run(&mut self, step: &Step<'_, '_>, canonical: bool) -> RunRecord {
        let counts = &mut *self.counts;
        let mut base = BaseAnchor {
            epoch: counts.baseline_epoch,
            at: step.at,
            before: false,
            state: None,
        };
        if let Some(b) = counts.baseline {
            base.before = step.at <= b;
            base.state = if base.before {
                Some(step.to.clone())
            } else {
                step.from.clone()
            };
        }
        let kc = &mut counts.kinds[step.kind.index()];
        kc.add_current(&step.to, 1);
        if let Some(state) = &base.state {
            kc.add_current(state, -1);
        }
        kc.add_active(&step.to, step.series, 1);
        counts.waiting[step.kind.index()].moved(step.key, None, Some((&step.to, step.at)));
        let event = step.event;
        if step.to.ty.is_terminal() {
            self.retention
                .push_back((event.occurred, step.kind, step.key));
        }
        let mut record = RunRecord {
            odd_id: (!canonical).then(|| event.resource_id.as_ref().into()),
            name: event.resource_name.as_deref().map(Into::into),
            state: step.to.clone(),
            since: step.at,
            state_at: step.at,
            state_event: event.id,
            last_occurred: event.occurred,
            series: step.series,
            labels: run_labels(self.strings, &event.related),
            transitions: Vec::new(),
            recent: VecDeque::new(),
            base,
        };
        record.count_transition(&step.from, &step.to);
        record.remember(recent(step));
        record
    }

    /// Folds one more event into a tracked run's record.
    fn update_run(&mut self, record: &mut RunRecord, step: Step<'_, '_>) {
        record.count_transition(&step.from, &step.to);
        record.remember(recent(&step));
        let event = step.event;
        if event.occurred > record.last_occurred {
            record.last_occurred = event.occurred;
            if let Some(name) = event.resource_name.as_deref() {
                if record.name.as_deref() != Some(name) {
                    record.name = Some(name.into());
                }
            }
            if has_labels(&event.related) {
                record.labels = run_labels(self.strings, &event.related);
            }
        }
        self.move_anchor(record, &step);
        if (step.at, event.id) > (record.state_at, record.state_event) {
            self.enter_state(record, step);
        }
    }

    /// Keeps the run's state at the baseline time right, and the totals with it.
    fn move_anchor(&mut self, record: &mut RunRecord, step: &Step<'_, '_>) {
        let counts = &mut *self.counts;
        let Some(baseline) = counts.baseline else {
            return;
        };
        if record.base.epoch != counts.baseline_epoch {
            record.base = BaseAnchor {
                epoch: counts.baseline_epoch,
                at: record.state_at,
                before: true,
                state: Some(record.state.clone()),
            };
        }
        let old = record.base.state.clone();
        record.base.observe(baseline, step.at, &step.from, &step.to);
        if record.base.state != old {
            let kc = &mut counts.kinds[step.kind.index()];
            if let Some(state) = &old {
                kc.add_current(state, 1);
            }
            if let Some(state) = &record.base.state {
                kc.add_current(state, -1);
            }
        }
    }

    /// Moves a run into the state of its newest event.
    fn enter_state(&mut self, record: &mut RunRecord, step: Step<'_, '_>) {
        let counts = &mut *self.counts;
        let kc = &mut counts.kinds[step.kind.index()];
        let was_terminal = record.state.ty.is_terminal();
        let before = (record.state != step.to).then(|| (record.state.clone(), record.since));
        if record.state != step.to {
            kc.add_current(&record.state, -1);
            kc.add_current(&step.to, 1);
            observe_duration(kc, &record.state, step.at - record.since);
            record.since = step.at;
        }
        kc.add_active(&record.state, record.series, -1);
        kc.add_active(&step.to, step.series, 1);
        record.state = step.to;
        record.series = step.series;
        record.state_at = step.at;
        record.state_event = step.event.id;
        if let Some((state, since)) = before {
            counts.waiting[step.kind.index()].moved(
                step.key,
                Some((&state, since)),
                Some((&record.state, record.since)),
            );
        }
        if record.state.ty.is_terminal() && !was_terminal {
            self.retention
                .push_back((record.last_occurred, step.kind, step.key));
        }
    }

    /// Keeps at most `--max-tracked-runs` runs of `kind` in memory: past it, drops the
    /// terminal run longest without an event or else the run waiting longest in a
    /// non-terminal state (never `keep`, the run just added). Its contribution to the totals
    /// stays, as with retirement; the drop is counted.
    fn enforce_cap(&mut self, kind: RunKind, keep: RunKey) {
        let table: &'t RunTable = self.shared.table(kind);
        while table.runs.len() > self.config.max_tracked_runs {
            let Some(victim) = self.eviction_victim(kind, keep) else {
                return;
            };
            let Some((_, record)) = table.runs.remove(&victim) else {
                continue;
            };
            let counts = &mut *self.counts;
            counts.waiting[kind.index()].moved(victim, Some((&record.state, record.since)), None);
            counts.kinds[kind.index()].add_active(&record.state, record.series, -1);
            counts.events.runs_evicted += 1;
            self.mark(kind, victim);
        }
    }

    /// The run [`Writer::enforce_cap`] drops next.
    fn eviction_victim(&mut self, kind: RunKind, keep: RunKey) -> Option<RunKey> {
        // The queue's front holds the terminal runs longest without an event; entries of the
        // other kind are skipped, a bounded number, so a cap stays cheap.
        let terminal = self
            .retention
            .iter()
            .take(64)
            .position(|&(_, k, key)| k == kind && key != keep);
        match terminal {
            Some(position) => self.retention.remove(position).map(|(_, _, key)| key),
            None => {
                let waiting = &self.counts.waiting[kind.index()];
                waiting
                    .oldest()
                    .min_by_key(|&(_, since)| since)
                    .and_then(|(state, _)| {
                        waiting
                            .entered_before(state, Micros::MAX)
                            .map(|(_, key)| key)
                            .find(|&key| key != keep)
                    })
            }
        }
    }

    /// Tracks a run known only from the REST baseline, in its current state, without
    /// changing the totals (the baseline already counts it).
    pub fn seed(&mut self, kind: RunKind, run: &KnownRun) {
        let resource_id = format!("{}{}", kind.resource_prefix(), run.id);
        let (key, canonical) = run_key(kind, &resource_id);
        let table: &'t RunTable = self.shared.table(kind);
        let Entry::Vacant(vacant) = table.runs.entry(key) else {
            return;
        };
        self.mark(kind, key);
        let state = self.names.key(run.state_type, &run.state_name);
        let at = run.state_timestamp.unwrap_or(self.now);
        let related = RelatedNames {
            work_pool: run.work_pool.as_deref().map(Cow::Borrowed),
            work_queue: run.work_queue.as_deref().map(Cow::Borrowed),
            ..RelatedNames::default()
        };
        let counts = &mut *self.counts;
        let series = counts.series.id_for(&related);
        counts.kinds[kind.index()].add_active(&state, series, 1);
        counts.waiting[kind.index()].moved(key, None, Some((&state, at)));
        vacant.insert(RunRecord {
            odd_id: (!canonical).then(|| resource_id.into()),
            name: run.name.as_deref().map(Into::into),
            state: state.clone(),
            since: at,
            state_at: at,
            state_event: EventId(0),
            last_occurred: at,
            series,
            labels: run_labels(self.strings, &related),
            transitions: Vec::new(),
            recent: VecDeque::new(),
            base: BaseAnchor {
                epoch: counts.baseline_epoch,
                at,
                before: true,
                state: Some(state),
            },
        });
        self.enforce_cap(kind, key);
    }

    /// Drops terminal runs with no event for the retention period before `now` (event time).
    /// Their contribution to the totals stays.
    fn retire(&mut self, now: Micros) {
        let cutoff = now - self.config.terminal_retention;
        while let Some(&(at, kind, key)) = self.retention.front() {
            if at >= cutoff {
                break;
            }
            self.retention.pop_front();
            let mut newer = None;
            let removed = self.shared.table(kind).runs.remove_if(&key, |_, record| {
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
                self.counts.events.runs_retired += 1;
                self.mark(kind, key);
            } else if let Some(last) = newer {
                self.retention.push_back((last, kind, key));
            }
        }
    }

    fn mark(&mut self, kind: RunKind, key: RunKey) {
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.insert((kind, key));
        }
    }
}

/// The kind `event` is tracked as under `config`, when it is a state event of a tracked kind.
fn tracked_kind(config: &StateConfig, event: &Event<'_>) -> Option<RunKind> {
    event.state.as_ref()?;
    match RunKind::of_resource(&event.resource_id)? {
        RunKind::TaskRun if !config.track_task_runs => None,
        kind => Some(kind),
    }
}

/// Counts the transition an event carries: a self-transition, or an entry and a transition
/// by type.
fn count_event_transition(
    counts: &mut Counts,
    kind: RunKind,
    from: &Option<StateKey>,
    to: &StateKey,
    series: SeriesId,
) {
    let kc = &mut counts.kinds[kind.index()];
    if from.as_ref() == Some(to) {
        *kc.self_transitions.entry(to.clone()).or_default() += 1;
        counts.events.self_transitions += 1;
    } else {
        *kc.entries.entry((to.clone(), series)).or_default() += 1;
        let from_index = from.as_ref().map_or(9, |f| f.ty.index());
        kc.transitions[from_index][to.ty.index()] += 1;
    }
}

/// Records time spent in `state` when a run leaves it.
fn observe_duration(kc: &mut KindCounts, state: &StateKey, micros: Micros) {
    let seconds = micros.max(0) as f64 / 1e6;
    kc.durations
        .entry(state.clone())
        .or_insert_with(|| Histogram::new(&DURATION_BUCKETS))
        .observe(seconds);
}

/// The transition a record keeps among its last few.
fn recent(step: &Step<'_, '_>) -> RecentTransition {
    RecentTransition {
        from: step.from.clone(),
        to: step.to.clone(),
        at: step.at,
        event: step.event.id,
    }
}
