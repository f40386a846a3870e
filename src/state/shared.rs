//! [`Shared`]: the state every reader sees, behind a wall.
//!
//! Its fields are private. Readers copy what they need through named methods (or a
//! read-only closure over the aggregates) and read run records one at a time, so a read never
//! holds a lock for longer than one copy. The [`super::Tracker`] is the only writer of runs and
//! of everything events change; the few other writers (reconciliation, verification, the
//! stream's observer, the state file) change only their own counters, each through one method
//! named for what it does.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::model::event::{RunKind, StateKey, StateType};
use crate::model::time::Micros;
use crate::state::counts::{Counts, PersistStats, Verdict};
use crate::state::record::{RunKey, RunRecord};
use crate::state::table::RunTable;

/// State shared between the pipeline and its readers.
#[derive(Debug)]
pub struct Shared {
    tables: [RunTable; 2],
    counts: Mutex<Counts>,
    track_task_runs: bool,
    persist: Mutex<Option<PersistStats>>,
    generation: AtomicU64,
    changed: Notify,
}

/// What a reconciliation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconciled {
    /// Server count minus exporter count, by state type index.
    pub drift: [i64; 9],
    /// Reconciliations applied so far, this one included.
    pub reconciliations: u64,
}

impl Shared {
    pub(super) fn new(counts: Counts, track_task_runs: bool) -> Shared {
        Shared {
            tables: Default::default(),
            counts: Mutex::new(counts),
            track_task_runs,
            persist: Mutex::new(None),
            generation: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    /// The aggregates, for the tracker's writes.
    pub(super) fn lock_counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock()
    }

    /// The run table of `kind`, for the tracker's writes.
    pub(super) fn table(&self, kind: RunKind) -> &RunTable {
        &self.tables[kind.index()]
    }

    /// Tells readers waiting on [`Shared::change_signal`] that the aggregates changed (a
    /// batch of events, a reconciliation). Called without the aggregates' lock held.
    pub(super) fn publish(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// How many times the aggregates changed: equal values mean nothing changed in between.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Woken at every change: create the `notified()` future, enable it, check
    /// [`Shared::generation`], then wait.
    pub fn change_signal(&self) -> &Notify {
        &self.changed
    }

    /// The kinds being tracked.
    pub fn kinds(&self) -> impl Iterator<Item = RunKind> + '_ {
        RunKind::ALL.into_iter().filter(|&k| self.tracks(k))
    }

    /// Whether runs of `kind` are tracked.
    pub fn tracks(&self, kind: RunKind) -> bool {
        kind == RunKind::FlowRun || self.track_task_runs
    }

    /// Runs `read` over the aggregates under their lock: copy what is needed and return it.
    pub fn with_counts<R>(&self, read: impl FnOnce(&Counts) -> R) -> R {
        read(&self.counts.lock())
    }

    /// Runs `read` over the record of run `key` of `kind` and its resource id when not
    /// canonical, if it is tracked. Copy what is needed: names of states and labels are
    /// resolved afterwards, through [`Shared::with_counts`].
    pub fn find_run<R>(
        &self,
        kind: RunKind,
        key: RunKey,
        read: impl FnOnce(&RunRecord, Option<&str>) -> R,
    ) -> Option<R> {
        let table = self.table(kind);
        let hash = table.hash(key);
        let shard = table.read(hash);
        let record = shard.get(hash, key)?;
        Some(read(record, shard.odd_id(key)))
    }

    /// Calls `visit` for every tracked run of `kind` (shard by shard; order unspecified).
    pub fn for_each_run(&self, kind: RunKind, mut visit: impl FnMut(&RunRecord)) {
        self.table(kind)
            .for_each_shard(|shard| shard.records().for_each(&mut visit));
    }

    /// Runs of `kind` held in memory.
    pub fn run_count(&self, kind: RunKind) -> usize {
        self.table(kind).len()
    }

    /// The newest `occurred` applied: the stream's resume point.
    pub fn last_occurred(&self) -> Option<Micros> {
        self.counts.lock().events.last_occurred
    }

    /// State events applied so far (duplicates excluded) and the wall-clock time of the last
    /// one: two equal markers around a query mean no state event changed the counts in
    /// between.
    pub fn state_event_marker(&self) -> (u64, Option<Micros>) {
        let counts = self.counts.lock();
        (counts.events.state_applied, counts.events.last_state_seen)
    }

    /// Distinct events held with `occurred` in `[from, to)` by name (zeros left out), and
    /// the prefixes the ledger counts; empty without a ledger.
    pub fn ledger_window(
        &self,
        from: Micros,
        to: Micros,
    ) -> (HashMap<String, u64>, Vec<&'static str>) {
        let counts = self.counts.lock();
        match counts.ledger.as_ref() {
            Some(ledger) => {
                let mut held = ledger.window(from, to);
                held.retain(|_, n| *n > 0);
                (held, ledger.prefixes().to_vec())
            }
            None => (HashMap::new(), Vec::new()),
        }
    }

    /// The state names counted for `kind`, by type (what reconciliation asks the server).
    pub fn known_state_names(&self, kind: RunKind) -> HashMap<StateType, BTreeSet<String>> {
        let current = self.counts.lock().kind_counts(kind).current;
        let mut known: HashMap<StateType, BTreeSet<String>> = HashMap::new();
        for key in current.keys() {
            known
                .entry(key.ty)
                .or_default()
                .insert(key.name.to_string());
        }
        known
    }

    /// How the state file is doing, when one is used.
    pub fn persist_stats(&self) -> Option<PersistStats> {
        self.persist.lock().clone()
    }

    /// Replaces the totals with the server's counts taken at `at`, unless state events
    /// arrived since `marker` (then `None`: the moment was not quiet); starts a new baseline
    /// and counts the correction.
    pub fn reconcile(
        &self,
        totals: Vec<(RunKind, HashMap<StateKey, i64>)>,
        at: Micros,
        marker: Option<u64>,
    ) -> Option<Reconciled> {
        let mut counts = self.counts.lock();
        if marker.is_some_and(|seen| counts.events.state_applied != seen) {
            return None;
        }
        let mut drift = [0i64; 9];
        for (kind, totals) in totals {
            for (i, d) in counts.rebase(kind, totals).into_iter().enumerate() {
                drift[i] += d;
            }
        }
        counts.set_baseline(at);
        let checks = &mut counts.checks;
        checks.reconciliations += 1;
        checks.last_drift = drift;
        for (i, d) in drift.iter().enumerate() {
            checks.corrections[i] += d.unsigned_abs();
        }
        let reconciliations = checks.reconciliations;
        drop(counts);
        self.publish();
        Some(Reconciled {
            drift,
            reconciliations,
        })
    }

    /// Counts one verified window.
    pub fn count_window(&self, verdict: Verdict) {
        self.counts.lock().checks.count(verdict);
    }

    /// Counts events recovered by repair.
    pub fn count_repaired(&self, events: u64) {
        self.counts.lock().checks.events_repaired += events;
    }

    /// Forgets the verification ledger's seconds before `before` (verified for good).
    pub fn forget_verified(&self, before: Micros) {
        if let Some(ledger) = self.counts.lock().ledger.as_mut() {
            ledger.prune(before);
        }
    }

    /// Counts an outage longer than the server's backfill horizon.
    pub fn count_backfill_gap(&self) {
        self.counts.lock().checks.backfill_gaps += 1;
    }

    /// Starts reporting state-file statistics (with `--state-file`).
    pub fn enable_persist_stats(&self) {
        *self.persist.lock() = Some(PersistStats::default());
    }

    /// Updates the state-file statistics, when enabled.
    pub fn update_persist_stats(&self, update: impl FnOnce(&mut PersistStats)) {
        if let Some(stats) = self.persist.lock().as_mut() {
            update(stats);
        }
    }
}
