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

use parking_lot::MutexGuard;

use crate::model::event::{Event, RelatedNames, RunKind, StateChange};
use crate::model::known_run::KnownRun;
use crate::model::reject::RejectReason;
use crate::model::time::{as_seconds, Micros};
use crate::state::changes::Change;
use crate::state::config::StateConfig;
use crate::state::counts::{Aggregates, Counts};
use crate::state::inline::RecentTransition;
use crate::state::label_sets::{has_labels, RunLabels};
use crate::state::labels::{SeriesId, SeriesTable};
use crate::state::ledger::Ledger;
use crate::state::names::StateId;
use crate::state::record::{run_key, BaseAnchor, NewRun, RunKey, RunRecord};
use crate::state::shared::Shared;
use crate::state::table::RunTable;

/// A run's record as changed since the last [`Tracker::take_dirty`]; `None` when dropped.
pub type DirtyRun = (RunKind, RunKey, Option<SavedRun>);

/// A copy of a run for the state file: the record, its resource id when not canonical, and
/// its related names (the record holds only their id).
#[derive(Clone, Debug)]
pub struct SavedRun {
    /// The record.
    pub record: RunRecord,
    /// The resource id when not canonical.
    pub odd_id: Option<Box<str>>,
    /// Its related names.
    pub labels: RunLabels,
}

/// Where terminal runs wait to be retired: (newest `occurred`, kind, key), oldest first.
type Retention = VecDeque<(Micros, RunKind, RunKey)>;

/// The runs changed since the last snapshot, when the state file asks for them.
type Dirty = Option<HashSet<(RunKind, RunKey), foldhash::fast::RandomState>>;

/// The single writer of [`Shared`].
#[derive(Debug)]
pub struct Tracker {
    shared: Arc<Shared>,
    config: StateConfig,
    retention: Retention,
    dirty: Dirty,
}

impl Tracker {
    /// A tracker with empty state.
    pub fn new(config: StateConfig) -> Tracker {
        let series = SeriesTable::new(config.group_by.clone(), config.max_series);
        let counts = Counts::new(series, config.max_series);
        let shared = Arc::new(Shared::new(counts, config.track_task_runs));
        Tracker {
            shared,
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

    /// Opens a batch: the aggregates stay locked until [`Writer::finish`] (or drop), so keep
    /// batches short (a few hundred frames).
    pub fn writer(&mut self, now: Micros) -> Writer<'_> {
        let Tracker {
            shared,
            config,
            retention,
            dirty,
        } = self;
        let shared: &Shared = shared;
        Writer {
            counts: shared.lock_counts(),
            shared,
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
        let found: Vec<_> = dirty
            .drain()
            .map(|(kind, key)| {
                let record = shared.find_run(kind, key, |record, odd_id| {
                    (record.clone(), odd_id.map(Box::from))
                });
                (kind, key, record)
            })
            .collect();
        let sets = &shared.lock_counts().label_sets;
        found
            .into_iter()
            .map(|(kind, key, record)| {
                let saved = record.map(|(record, odd_id)| SavedRun {
                    labels: sets.get(record.labels()).clone(),
                    record,
                    odd_id,
                });
                (kind, key, saved)
            })
            .collect()
    }

    /// A copy of the persistable aggregates.
    pub fn aggregates(&self) -> Aggregates {
        Aggregates::copy(&self.shared.lock_counts())
    }

    /// Replaces everything with restored aggregates and runs (a state file; the records'
    /// state and label ids are those of `counts`), and rebuilds the retention queue and the
    /// waiting index from the runs.
    pub fn install(
        &mut self,
        mut counts: Counts,
        runs: Vec<(RunKind, RunRecord, Option<Box<str>>)>,
    ) {
        let mut retention: Vec<(Micros, RunKind, RunKey)> = Vec::new();
        counts.waiting = Default::default();
        for (kind, record, odd_id) in runs {
            let key = record.key();
            let state = record.state();
            let terminal = counts.states.key(state).ty.is_terminal();
            let waiting = (!terminal).then_some((state, record.since()));
            counts.waiting[kind.index()].moved(key, None, waiting);
            if terminal {
                retention.push((record.last_occurred(), kind, key));
            }
            let table = self.shared.table(kind);
            let hash = table.hash(key);
            table.insert(&mut table.write(hash), hash, record, odd_id);
        }
        retention.sort_unstable_by_key(|&(at, kind, key)| (at, kind.index(), key));
        self.retention = retention.into();
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

    /// The kind `event` is tracked as, when it is a state event of a tracked kind.
    pub fn tracked_kind(&self, event: &Event<'_>) -> Option<RunKind> {
        tracked_kind(&self.config, event)
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
    config: &'t StateConfig,
    retention: &'t mut Retention,
    dirty: &'t mut Dirty,
    now: Micros,
}

/// One state event, resolved to counted ids.
struct Step<'e, 'a> {
    kind: RunKind,
    key: RunKey,
    event: &'e Event<'a>,
    at: Micros,
    from: Option<StateId>,
    to: StateId,
    series: SeriesId,
}

impl Step<'_, '_> {
    fn recent(&self) -> RecentTransition {
        RecentTransition {
            from: self.from,
            to: self.to,
            at: self.at,
            event: self.event.id,
        }
    }
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

    /// The wall-clock time the batch started.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Notes an event seen for the first time: the ledger (by its `occurred`, as the server
    /// stores it), the delay, and the newest `occurred` (the resume point) with an `occurred`
    /// ahead of the wall clock counting as now.
    pub fn admit(&mut self, event: &Event<'_>) {
        let counts = &mut *self.counts;
        if let Some(ledger) = counts.ledger.as_mut() {
            ledger.record(&event.name, event.occurred);
        }
        let events = &mut counts.events;
        events
            .delay
            .observe(as_seconds(self.now - event.occurred).max(0.0));
        let at = event.occurred.min(self.now);
        if events.last_occurred.is_none_or(|t| at > t) {
            events.last_occurred = Some(at);
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
        let shared = self.shared;
        drop(self);
        shared.publish();
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
        let counts = &mut *self.counts;
        counts.events.state_applied += 1;
        counts.events.last_state_seen = Some(self.now);
        let to = counts.states.id(change.to.ty, &change.to.name);
        let from = change
            .from
            .as_ref()
            .map(|f| counts.states.id(f.ty, &f.name));
        counts.events.folded_state_names = counts.states.folded();
        let series = counts.series.id_for(&event.related);
        counts.events.folded_label_sets = counts.series.folded();
        let tally = &mut counts.tallies[kind.index()];
        if from == Some(to) {
            tally.count_self_transition(to);
            counts.events.self_transitions += 1;
        } else {
            tally.count_entry(to, series);
            let from_type = from.map(|f| counts.states.key(f).ty.index());
            tally.count_transition(from_type, change.to.ty.index());
            counts.minutes.count(kind, change.to.ty, event.occurred);
        }

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
        let hash = table.hash(key);
        let mut shard = table.write(hash);
        let current = match shard.get_mut(hash, key) {
            Some(record) => {
                if event.follows.is_some() && !follows_seen {
                    self.counts.events.chain_gaps += 1;
                }
                self.update_run(record, step)
            }
            None => {
                let record = self.new_run(&step);
                let odd_id = (!canonical).then(|| Box::from(event.resource_id.as_ref()));
                table.insert(&mut shard, hash, record, odd_id);
                drop(shard);
                self.enforce_cap(kind, key);
                true
            }
        };
        self.counts.changes.push(Change {
            seq: 0,
            kind,
            key,
            canonical,
            from,
            to,
            occurred: event.occurred,
            current,
        });
    }

    /// The record of a run seen for the first time, with its contribution to the totals.
    fn new_run(&mut self, step: &Step<'_, '_>) -> RunRecord {
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
                Some(step.to)
            } else {
                step.from
            };
        }
        let terminal = counts.states.key(step.to).ty.is_terminal();
        let tally = &mut counts.tallies[step.kind.index()];
        tally.add_current(step.to, 1);
        if let Some(state) = base.state {
            tally.add_current(state, -1);
        }
        tally.add_active(&counts.states, step.to, step.series, 1);
        let waiting = (!terminal).then_some((step.to, step.at));
        counts.waiting[step.kind.index()].moved(step.key, None, waiting);
        let event = step.event;
        if terminal {
            self.retention
                .push_back((event.occurred, step.kind, step.key));
        }
        let mut record = RunRecord::new(
            NewRun {
                key: step.key,
                name: event.resource_name.as_deref(),
                state: step.to,
                since: step.at,
                last_occurred: event.occurred,
                series: step.series,
                labels: counts.label_sets.acquire(&event.related),
                base,
            },
            false,
        );
        record.count_transition(step.from, step.to);
        record.remember(step.recent());
        record
    }

    /// Folds one more event into a tracked run's record; false when it arrived late.
    fn update_run(&mut self, record: &mut RunRecord, step: Step<'_, '_>) -> bool {
        let current = (record.state_at(), record.state_event());
        record.count_transition(step.from, step.to);
        record.remember(step.recent());
        let event = step.event;
        if record.saw(event.occurred, event.resource_name.as_deref()) && has_labels(&event.related)
        {
            let sets = &mut self.counts.label_sets;
            let labels = sets.acquire(&event.related);
            sets.release(record.labels());
            record.set_labels(labels);
        }
        self.move_anchor(record, &step);
        let newer = (step.at, event.id) > current;
        if newer {
            self.enter_state(record, step);
        }
        newer
    }

    /// Keeps the run's state at the baseline time right, and the totals with it.
    fn move_anchor(&mut self, record: &mut RunRecord, step: &Step<'_, '_>) {
        let counts = &mut *self.counts;
        let Some(baseline) = counts.baseline else {
            return;
        };
        let mut base = record.base();
        // Records keep the epoch's low 16 bits (see `RunRecord::set_base`).
        if base.epoch != u64::from(counts.baseline_epoch as u16) {
            base = BaseAnchor {
                epoch: counts.baseline_epoch,
                at: record.state_at(),
                before: true,
                state: Some(record.state()),
            };
        }
        let old = base.state;
        base.observe(baseline, step.at, step.from, step.to);
        record.set_base(base);
        if base.state != old {
            let tally = &mut counts.tallies[step.kind.index()];
            if let Some(state) = old {
                tally.add_current(state, 1);
            }
            if let Some(state) = base.state {
                tally.add_current(state, -1);
            }
        }
    }

    /// Moves a run into the state of its newest event.
    fn enter_state(&mut self, record: &mut RunRecord, step: Step<'_, '_>) {
        let counts = &mut *self.counts;
        let states = &counts.states;
        let tally = &mut counts.tallies[step.kind.index()];
        let (old, old_since) = (record.state(), record.since());
        let was_terminal = states.key(old).ty.is_terminal();
        if old != step.to {
            tally.add_current(old, -1);
            tally.add_current(step.to, 1);
            tally.observe_duration(old, (step.at - old_since).max(0) as f64 / 1e6);
        }
        tally.add_active(states, old, record.series(), -1);
        tally.add_active(states, step.to, step.series, 1);
        record.enter(step.to, step.series, step.at);
        let terminal = states.key(step.to).ty.is_terminal();
        if old != step.to {
            let waiting =
                |state, since| (!states.key(state).ty.is_terminal()).then_some((state, since));
            counts.waiting[step.kind.index()].moved(
                step.key,
                waiting(old, old_since),
                waiting(step.to, record.since()),
            );
        }
        if terminal && !was_terminal {
            self.retention
                .push_back((record.last_occurred(), step.kind, step.key));
        }
    }

    /// Keeps at most `--max-tracked-runs` runs of `kind` in memory: past it, drops the
    /// terminal run longest without an event or else the run waiting longest in a
    /// non-terminal state (never `keep`, the run just added). Its contribution to the totals
    /// stays, as with retirement; the drop is counted.
    fn enforce_cap(&mut self, kind: RunKind, keep: RunKey) {
        let table: &'t RunTable = self.shared.table(kind);
        while table.len() > self.config.max_tracked_runs {
            let Some(victim) = self.eviction_victim(kind, keep) else {
                return;
            };
            let hash = table.hash(victim);
            let removed = table.remove_unless(&mut table.write(hash), hash, victim, |_| false);
            let Some(record) = removed else {
                continue;
            };
            self.forget(kind, &record);
            self.counts.events.runs_evicted += 1;
            self.mark(kind, victim);
        }
    }

    /// Takes a dropped run out of the waiting index, the active gauges and the label sets.
    fn forget(&mut self, kind: RunKind, record: &RunRecord) {
        let counts = &mut *self.counts;
        let state = record.state();
        if !counts.states.key(state).ty.is_terminal() {
            counts.waiting[kind.index()].moved(record.key(), Some((state, record.since())), None);
        }
        counts.tallies[kind.index()].add_active(&counts.states, state, record.series(), -1);
        counts.label_sets.release(record.labels());
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
        let hash = table.hash(key);
        let mut shard = table.write(hash);
        if shard.get(hash, key).is_some() {
            return;
        }
        let counts = &mut *self.counts;
        let state = counts.states.id(run.state_type, &run.state_name);
        let at = run.state_timestamp.unwrap_or(self.now);
        let related = RelatedNames {
            work_pool: run.work_pool.as_deref().map(Cow::Borrowed),
            work_queue: run.work_queue.as_deref().map(Cow::Borrowed),
            ..RelatedNames::default()
        };
        let series = counts.series.id_for(&related);
        counts.tallies[kind.index()].add_active(&counts.states, state, series, 1);
        if !counts.states.key(state).ty.is_terminal() {
            counts.waiting[kind.index()].moved(key, None, Some((state, at)));
        }
        let record = RunRecord::new(
            NewRun {
                key,
                name: run.name.as_deref(),
                state,
                since: at,
                last_occurred: at,
                series,
                labels: counts.label_sets.acquire(&related),
                base: BaseAnchor {
                    epoch: counts.baseline_epoch,
                    at,
                    before: true,
                    state: Some(state),
                },
            },
            true,
        );
        table.insert(
            &mut shard,
            hash,
            record,
            (!canonical).then(|| resource_id.into()),
        );
        drop(shard);
        self.mark(kind, key);
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
            let table = self.shared.table(kind);
            let hash = table.hash(key);
            let mut newer = None;
            let states = &self.counts.states;
            let removed = table.remove_unless(&mut table.write(hash), hash, key, |record| {
                if !states.key(record.state()).ty.is_terminal() {
                    return true;
                }
                if record.last_occurred() >= cutoff {
                    newer = Some(record.last_occurred());
                    return true;
                }
                false
            });
            if let Some(record) = removed {
                self.counts.label_sets.release(record.labels());
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
