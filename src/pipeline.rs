//! Decode -> dedup -> state: the one path every frame takes, from any source.
//!
//! Synchronous and owned by one task. A batch of frames is applied under one lock of the
//! aggregates; every rejected or duplicate frame is counted here, and rejections are logged
//! here too (rate-limited), so nothing is dropped silently anywhere else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::decode::{decode, Decoded, RejectReason};
use crate::dedup::{Dedup, Seen};
use crate::state::{Counts, Shared, StateConfig, Tracker};
use crate::timestamp::{as_seconds, now_micros, Micros};
use parking_lot::MutexGuard;

/// Settings of the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The state layer's settings.
    pub state: StateConfig,
    /// Dedup window in event-time micros (`--dedup-window`).
    pub dedup_window: Micros,
    /// Dedup capacity (`--dedup-capacity`).
    pub dedup_capacity: usize,
}

/// What happened to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new state event of a tracked kind, applied.
    Applied,
    /// A new event that is not a tracked state event.
    Other,
    /// An event id already seen.
    Duplicate,
    /// Not an event (another frame type, a blank line).
    Skipped,
    /// Unusable input.
    Rejected(RejectReason),
}

impl Outcome {
    /// Whether the frame was an event seen for the first time.
    pub fn is_new_event(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Other)
    }
}

/// The ingestion pipeline.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    shared: Arc<Shared>,
    dedup: Dedup,
    tracker: Tracker,
    reject_log: RateLimit,
    admitted: Option<Vec<(u128, Micros)>>,
}

impl Pipeline {
    /// A pipeline with empty state.
    pub fn new(config: PipelineConfig) -> Pipeline {
        let tracker = Tracker::new(config.state.clone());
        Pipeline {
            shared: tracker.shared().clone(),
            dedup: Dedup::new(config.dedup_window, config.dedup_capacity),
            tracker,
            reject_log: RateLimit::new(Duration::from_secs(10)),
            admitted: None,
            config,
        }
    }

    /// Back to empty state (a state file that could not be restored).
    pub fn reset(&mut self) {
        *self = Pipeline::new(self.config.clone());
    }

    /// The dedup window's limits: event-time micros and ids.
    pub fn dedup_limits(&self) -> (Micros, usize) {
        (self.config.dedup_window, self.config.dedup_capacity)
    }

    /// The state layer, for restoring a state file.
    pub fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    /// Replaces the dedup window (restoring a state file).
    pub fn replace_dedup(&mut self, dedup: Dedup) {
        self.dedup = dedup;
    }

    /// Starts remembering what changes, for [`Pipeline::take_changes`].
    pub fn journal(&mut self) {
        self.tracker.journal();
        self.admitted.get_or_insert_with(Vec::new);
    }

    /// What changed since the last call: a copy of the aggregates, of the changed runs, and
    /// the ids admitted. Costs time in proportion to the changes, not to the state.
    pub fn take_changes(&mut self) -> crate::persist::mirror::Changes {
        let counts = self.shared.counts.lock();
        crate::persist::mirror::Changes {
            aggregates: crate::persist::mirror::Aggregates::copy(&counts),
            runs: self.tracker.take_dirty(),
            admitted: self
                .admitted
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
            replay: None,
        }
    }

    /// The state readers see.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Starts a batch: the aggregates stay locked until the batch is dropped, so keep batches
    /// short (a few hundred frames).
    pub fn batch(&mut self) -> Batch<'_> {
        let Pipeline {
            shared,
            dedup,
            tracker,
            reject_log,
            admitted,
            ..
        } = self;
        Batch {
            counts: shared.counts.lock(),
            dedup,
            tracker,
            reject_log,
            admitted: admitted.as_mut(),
            now: now_micros(),
        }
    }

    /// Applies a batch of frames under one lock of the aggregates.
    pub fn ingest_batch<I>(&mut self, frames: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut batch = self.batch();
        for frame in frames {
            batch.ingest(frame.as_ref());
        }
    }

    /// Turns on the verification ledger for event names with these prefixes (keeping one
    /// restored from a state file).
    pub fn enable_ledger(&mut self, prefixes: Vec<&'static str>) {
        let mut counts = self.shared.counts.lock();
        if counts.ledger.is_none() {
            counts.ledger = Some(crate::ledger::Ledger::new(prefixes));
        }
    }

    /// Starts tracking a run known from the REST baseline (no event seen yet), unless it is
    /// tracked already. It does not change the totals: the baseline counts it.
    pub fn seed_run(
        &mut self,
        kind: crate::event::RunKind,
        run: &crate::prefect_api::RunSummary,
        now: Micros,
    ) {
        let mut counts = self.shared.counts.lock();
        self.tracker.seed(&mut counts, kind, run, now);
    }

    /// Applies one frame in a batch of its own.
    pub fn ingest(&mut self, frame: &[u8]) -> Outcome {
        self.batch().ingest(frame)
    }
}

/// Frames applied under one lock of the aggregates; ends (and retires old runs) on drop.
pub struct Batch<'p> {
    counts: MutexGuard<'p, Counts>,
    dedup: &'p mut Dedup,
    tracker: &'p mut Tracker,
    reject_log: &'p mut RateLimit,
    admitted: Option<&'p mut Vec<(u128, Micros)>>,
    now: Micros,
}

impl Batch<'_> {
    /// Decodes, deduplicates and applies one frame.
    pub fn ingest(&mut self, frame: &[u8]) -> Outcome {
        let counts = &mut *self.counts;
        let event = match decode(frame) {
            Decoded::Event(event) => event,
            Decoded::Skip => return Outcome::Skipped,
            Decoded::Rejected(reason) => {
                self.reject(reason, frame.len());
                return Outcome::Rejected(reason);
            }
        };
        let tracked = self.tracker.tracked_kind(&event);
        match tracked {
            Some(_) => {
                counts.events.state += 1;
                counts.events.last_state_seen = Some(self.now);
            }
            None => counts.events.other += 1,
        }
        if self.dedup.check_and_insert(event.id, event.occurred) == Seen::Duplicate {
            counts.events.duplicates += 1;
            return Outcome::Duplicate;
        }
        if let Some(admitted) = self.admitted.as_mut() {
            admitted.push((event.id.0, event.occurred));
        }
        if let Some(ledger) = counts.ledger.as_mut() {
            ledger.record(&event.name, event.occurred);
        }
        counts
            .events
            .delay
            .observe(as_seconds(self.now - event.occurred).max(0.0));
        if counts
            .events
            .last_occurred
            .is_none_or(|t| event.occurred > t)
        {
            counts.events.last_occurred = Some(event.occurred);
        }
        let (Some(kind), Some(change)) = (tracked, event.state.as_ref()) else {
            return Outcome::Other;
        };
        let follows_seen = event.follows.is_none_or(|f| self.dedup.contains(f));
        self.tracker
            .apply(counts, kind, &event, change, follows_seen);
        Outcome::Applied
    }

    /// Counts (and logs, rate-limited) a frame rejected before or during decoding.
    pub fn reject(&mut self, reason: RejectReason, frame_bytes: usize) {
        self.counts.events.rejected[reason.index()] += 1;
        if let Some(suppressed) = self.reject_log.allow() {
            warn!(
                reason = reason.as_str(),
                frame_bytes,
                suppressed_since_last = suppressed,
                "Rejected a frame; it is counted and skipped."
            );
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let counts = &mut *self.counts;
        if let Some(newest) = self.dedup.newest() {
            self.tracker.retire(counts, newest);
        }
        counts.events.dedup_ids = self.dedup.len() as u64;
        counts.events.dedup_evicted = self.dedup.evicted_by_capacity();
    }
}

/// Lets one log line through per period and counts the ones held back.
#[derive(Debug)]
struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    fn new(period: Duration) -> RateLimit {
        RateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed count)` when a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::event::{RunKind, StateType};

    use crate::test_support::{frame, key, pipeline, ts};

    fn with_baseline(p: &Pipeline, at_second: u32, totals: &[(StateType, i64)]) {
        let shared = p.shared();
        let mut counts = shared.counts.lock();
        counts.rebase(
            RunKind::FlowRun,
            totals.iter().map(|(t, n)| (key(*t), *n)).collect(),
        );
        counts.set_baseline(crate::timestamp::parse_rfc3339(&ts(at_second)).unwrap());
    }

    fn totals(p: &Pipeline) -> HashMap<StateType, i64> {
        let shared = p.shared();
        let counts = shared.counts.lock();
        let mut out = HashMap::new();
        for (k, v) in &counts.kinds[RunKind::FlowRun.index()].current {
            if *v != 0 {
                *out.entry(k.ty).or_default() += v;
            }
        }
        out
    }

    use StateType::{Completed, Pending, Running};

    #[test]
    fn a_repaired_creation_event_leaves_totals_exact() {
        let mut p = pipeline();
        with_baseline(&p, 10, &[]);
        p.ingest(&frame(3, 1, 30, Some(Running), Completed));
        assert_eq!(
            totals(&p),
            HashMap::from([(Completed, 1), (Running, -1)]),
            "assumed to exist at the baseline"
        );
        p.ingest(&frame(1, 1, 20, None, Pending));
        assert_eq!(
            totals(&p),
            HashMap::from([(Completed, 1)]),
            "created after the baseline after all"
        );
        p.ingest(&frame(2, 1, 25, Some(Pending), Running));
        assert_eq!(totals(&p), HashMap::from([(Completed, 1)]));
    }

    #[test]
    fn a_run_counted_by_the_baseline_moves_out_of_its_baseline_state() {
        let mut p = pipeline();
        with_baseline(&p, 10, &[(Running, 1)]);
        p.ingest(&frame(1, 1, 20, Some(Running), Completed));
        assert_eq!(totals(&p), HashMap::from([(Completed, 1)]));
    }

    #[test]
    fn backfilled_events_from_before_the_baseline_change_nothing() {
        let mut p = pipeline();
        with_baseline(&p, 40, &[(Completed, 1)]);
        for f in [
            frame(3, 1, 30, Some(Running), Completed),
            frame(1, 1, 10, None, Pending),
            frame(2, 1, 20, Some(Pending), Running),
        ] {
            p.ingest(&f);
        }
        assert_eq!(totals(&p), HashMap::from([(Completed, 1)]));
    }

    #[test]
    fn events_straddling_the_baseline_count_once() {
        let mut p = pipeline();
        // At the baseline (second 25) the run was RUNNING.
        with_baseline(&p, 25, &[(Running, 1)]);
        for f in [
            frame(3, 1, 30, Some(Running), Completed),
            frame(2, 1, 20, Some(Pending), Running),
            frame(1, 1, 10, None, Pending),
        ] {
            p.ingest(&f);
        }
        assert_eq!(totals(&p), HashMap::from([(Completed, 1)]));
    }

    #[test]
    fn a_new_baseline_rebases_tracked_runs() {
        let mut p = pipeline();
        with_baseline(&p, 5, &[]);
        p.ingest(&frame(1, 1, 10, None, Pending));
        p.ingest(&frame(2, 1, 20, Some(Pending), Running));
        assert_eq!(totals(&p), HashMap::from([(Running, 1)]));
        // The server says the same at second 25; then the run completes.
        with_baseline(&p, 25, &[(Running, 1)]);
        p.ingest(&frame(3, 1, 30, Some(Running), Completed));
        assert_eq!(totals(&p), HashMap::from([(Completed, 1)]));
    }

    #[test]
    fn without_a_baseline_unknown_runs_only_add() {
        let mut p = pipeline();
        p.ingest(&frame(2, 1, 20, Some(Pending), Running));
        assert_eq!(totals(&p), HashMap::from([(Running, 1)]));
    }

    #[test]
    fn outcomes() {
        let mut p = pipeline();
        assert_eq!(p.ingest(&frame(1, 1, 10, None, Pending)), Outcome::Applied);
        assert_eq!(
            p.ingest(&frame(1, 1, 10, None, Pending)),
            Outcome::Duplicate
        );
        assert_eq!(p.ingest(b"{\"type\":\"auth_success\"}"), Outcome::Skipped);
        assert_eq!(
            p.ingest(b"nope"),
            Outcome::Rejected(RejectReason::MalformedJson)
        );
    }

    #[test]
    fn the_waiting_index_matches_the_runs_on_real_recordings() {
        let mut p = Pipeline::new(PipelineConfig {
            state: StateConfig {
                track_task_runs: true,
                terminal_retention: 3_600 * crate::timestamp::SECOND,
                max_series: 100,
                max_tracked_runs: 1_000_000,
                group_by: vec![],
            },
            dedup_window: 1_800 * crate::timestamp::SECOND,
            dedup_capacity: 100_000,
        });
        for name in [
            "prefect-3.9.1-main.jsonl",
            "prefect-3.9.1-burst-live-lossy.jsonl",
            "prefect-3.9.1-burst-backfill.jsonl",
            "synthetic-out-of-order.jsonl",
        ] {
            let path = format!("{}/replay-data/{name}", env!("CARGO_MANIFEST_DIR"));
            let bytes = std::fs::read(path).unwrap();
            p.ingest_batch(bytes.split(|&b| b == b'\n'));
        }
        let shared = p.shared();
        let counts = shared.counts.lock();
        let mut checked = 0;
        for kind in RunKind::ALL {
            let mut scanned: Vec<(String, i64, u128)> = shared
                .table(kind)
                .runs
                .iter()
                .filter(|r| !r.state.ty.is_terminal())
                .map(|r| (r.state.name.to_string(), r.since, *r.key()))
                .collect();
            let waiting = &counts.waiting[kind.index()];
            let mut indexed: Vec<(String, i64, u128)> = waiting
                .oldest()
                .flat_map(|(state, _)| {
                    waiting
                        .entered_before(state, i64::MAX)
                        .map(move |(since, key)| (state.name.to_string(), since, key))
                })
                .collect();
            scanned.sort_unstable();
            indexed.sort_unstable();
            assert_eq!(indexed, scanned, "{kind:?}");
            checked += scanned.len();
        }
        assert!(checked > 0, "the recordings leave runs waiting");
    }
}
