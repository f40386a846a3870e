//! Decode -> dedup -> state: the one path every frame takes, from any source.
//!
//! Synchronous and owned by one task. A batch of frames is applied under one lock of the
//! aggregates and ended explicitly ([`Batch::finish`], which also retires old runs); every
//! rejected or duplicate frame is counted here, and rejections are logged here too
//! (rate-limited), so nothing is dropped silently anywhere else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::ingest::decode::{decode, Decoded, RejectReason};
use crate::ingest::dedup::{Dedup, Seen};
use crate::model::event::RunKind;
use crate::model::known_run::KnownRun;
use crate::model::time::{now_micros, Micros, FUTURE_TOLERANCE};
use crate::state::counts::Aggregates;
use crate::state::tracker::{DedupGauges, DirtyRun};
use crate::state::{Shared, StateConfig, Tracker, Writer};

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

/// What changed since the last [`Pipeline::take_changes`]: for the state file.
#[derive(Debug)]
pub struct Changes {
    /// The aggregates now.
    pub aggregates: Aggregates,
    /// Runs changed (or dropped).
    pub runs: Vec<DirtyRun>,
    /// Ids the dedup window admitted, in order, with their `occurred`.
    pub admitted: Vec<(u128, Micros)>,
}

/// The ingestion pipeline.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    dedup: Dedup,
    tracker: Tracker,
    reject_log: RateLimit,
    admitted: Option<Vec<(u128, Micros)>>,
}

impl Pipeline {
    /// A pipeline with empty state.
    pub fn new(config: PipelineConfig) -> Pipeline {
        Pipeline {
            dedup: Dedup::new(config.dedup_window, config.dedup_capacity),
            tracker: Tracker::new(config.state.clone()),
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
    pub fn take_changes(&mut self) -> Changes {
        Changes {
            aggregates: self.tracker.aggregates(),
            runs: self.tracker.take_dirty(),
            admitted: self
                .admitted
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
        }
    }

    /// The state readers see.
    pub fn shared(&self) -> Arc<Shared> {
        self.tracker.shared().clone()
    }

    /// Starts a batch: the aggregates stay locked until [`Batch::finish`], so keep batches
    /// short (a few hundred frames).
    pub fn batch(&mut self) -> Batch<'_> {
        let Pipeline {
            dedup,
            tracker,
            reject_log,
            admitted,
            ..
        } = self;
        Batch {
            writer: tracker.writer(now_micros()),
            dedup,
            reject_log,
            admitted: admitted.as_mut(),
        }
    }

    /// Applies frames as one batch.
    pub fn ingest_batch<I>(&mut self, frames: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut batch = self.batch();
        for frame in frames {
            batch.ingest(frame.as_ref());
        }
        batch.finish();
    }

    /// Turns on the verification ledger for event names with these prefixes (keeping one
    /// restored from a state file).
    pub fn enable_ledger(&mut self, prefixes: Vec<&'static str>) {
        self.tracker.enable_ledger(prefixes);
    }

    /// Starts tracking a run known from the REST baseline (no event seen yet), unless it is
    /// tracked already. It does not change the totals: the baseline counts it.
    pub fn seed_run(&mut self, kind: RunKind, run: &KnownRun, now: Micros) {
        self.tracker.seed(kind, run, now);
    }

    /// Applies one frame in a batch of its own.
    pub fn ingest(&mut self, frame: &[u8]) -> Outcome {
        let mut batch = self.batch();
        let outcome = batch.ingest(frame);
        batch.finish();
        outcome
    }
}

/// Frames applied under one lock of the aggregates, until [`Batch::finish`].
pub struct Batch<'p> {
    writer: Writer<'p>,
    dedup: &'p mut Dedup,
    reject_log: &'p mut RateLimit,
    admitted: Option<&'p mut Vec<(u128, Micros)>>,
}

impl Batch<'_> {
    /// Decodes, deduplicates and applies one frame.
    ///
    /// An event whose `occurred` is more than [`FUTURE_TOLERANCE`] ahead of the wall clock is
    /// rejected; one less ahead counts as now for the dedup window, retention and the resume
    /// point, so no single event moves them into the future.
    pub fn ingest(&mut self, frame: &[u8]) -> Outcome {
        let mut event = match decode(frame) {
            Decoded::Event(event) => event,
            Decoded::Skip => return Outcome::Skipped,
            Decoded::Rejected(reason) => {
                self.reject(reason, frame.len());
                return Outcome::Rejected(reason);
            }
        };
        let now = self.writer.now();
        if event.occurred > now.saturating_add(FUTURE_TOLERANCE) {
            self.reject(RejectReason::FutureTimestamp, frame.len());
            return Outcome::Rejected(RejectReason::FutureTimestamp);
        }
        let tracked = self.writer.tracked_kind(&event);
        self.writer.count_received(tracked.is_some());
        let at = event.occurred.min(now);
        if self.dedup.check_and_insert(event.id, at) == Seen::Duplicate {
            self.writer.count_duplicate();
            return Outcome::Duplicate;
        }
        if let Some(admitted) = self.admitted.as_mut() {
            admitted.push((event.id.0, at));
        }
        self.writer.admit(&event);
        event.occurred = at;
        let (Some(kind), Some(change)) = (tracked, event.state.as_ref()) else {
            return Outcome::Other;
        };
        let follows_seen = event.follows.is_none_or(|f| self.dedup.contains(f));
        self.writer.apply(kind, &event, change, follows_seen);
        Outcome::Applied
    }

    /// Counts (and logs, rate-limited) a frame rejected before or during decoding.
    pub fn reject(&mut self, reason: RejectReason, frame_bytes: usize) {
        self.writer.count_rejected(reason);
        if let Some(suppressed) = self.reject_log.allow() {
            warn!(
                reason = reason.as_str(),
                frame_bytes,
                suppressed_since_last = suppressed,
                "Rejected a frame; it is counted and skipped."
            );
        }
    }

    /// Ends the batch: retires terminal runs past their retention and records the dedup
    /// window's size, then releases the aggregates.
    pub fn finish(self) {
        self.writer.finish(DedupGauges {
            newest: self.dedup.newest(),
            ids: self.dedup.len() as u64,
            evicted: self.dedup.evicted_by_capacity(),
        });
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
    use super::*;
    use crate::ingest::test_support::{frame, pipeline};
    use crate::model::event::StateType::Pending;

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
    fn duplicates_never_make_a_reconciliation_moment_busy() {
        // Before: a repair re-fetching a window the server can never make equal (the exporter
        // held events Redis lost before the server stored them) applied its stored events
        // again every verify interval, each duplicate moved the quiet marker, and the REST
        // totals were not applied for as long as the window was retried (100 s).
        let mut p = pipeline();
        let shared = p.shared();
        p.ingest_batch([frame(1, 1, 10, None, Pending)]);
        let marker = shared.state_event_marker();
        p.ingest_batch([frame(1, 1, 10, None, Pending)]);
        assert_eq!(
            shared.state_event_marker(),
            marker,
            "a duplicate changes no count"
        );
        let totals = [(crate::state::test_support::key(Pending), 1)]
            .into_iter()
            .collect();
        let reconciled = shared.reconcile(vec![(RunKind::FlowRun, totals)], 0, Some(marker.0));
        assert!(reconciled.is_some(), "applied after a duplicate");
        p.ingest_batch([frame(2, 2, 11, None, Pending)]);
        assert_ne!(
            shared.state_event_marker(),
            marker,
            "a new state event moves it"
        );
        let totals = [(crate::state::test_support::key(Pending), 2)]
            .into_iter()
            .collect();
        let reconciled = shared.reconcile(vec![(RunKind::FlowRun, totals)], 0, Some(marker.0));
        assert!(reconciled.is_none(), "postponed after a new state event");
    }

    #[test]
    fn the_waiting_index_matches_the_runs_on_real_recordings() {
        let mut p = Pipeline::new(PipelineConfig {
            state: StateConfig {
                track_task_runs: true,
                terminal_retention: 3_600 * crate::model::time::SECOND,
                max_series: 100,
                max_tracked_runs: 1_000_000,
                group_by: vec![],
            },
            dedup_window: 1_800 * crate::model::time::SECOND,
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
        let mut checked = 0;
        for kind in RunKind::ALL {
            let mut scanned: Vec<(String, i64, u128)> = Vec::new();
            let states = shared.with_counts(|counts| counts.states.clone());
            shared.for_each_run(kind, |r| {
                let state = states.key(r.state());
                if !state.ty.is_terminal() {
                    scanned.push((state.name.to_string(), r.since(), r.key()));
                }
            });
            let mut indexed: Vec<(String, i64, u128)> = shared.with_counts(|counts| {
                let waiting = &counts.waiting[kind.index()];
                waiting
                    .oldest()
                    .flat_map(|(state, _)| {
                        let name = counts.states.key(state).name.to_string();
                        waiting
                            .entered_before(state, i64::MAX)
                            .map(move |(since, key)| (name.clone(), since, key))
                    })
                    .collect()
            });
            scanned.sort_unstable();
            indexed.sort_unstable();
            assert_eq!(indexed, scanned, "{kind:?}");
            checked += scanned.len();
        }
        assert!(checked > 0, "the recordings leave runs waiting");
    }
}
