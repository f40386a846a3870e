//! The writer's copy of the state: kept up to date from small [`Changes`], written whole.
//!
//! Ingestion pauses only to hand over a [`Changes`]: a copy of the aggregates (small) and
//! of the runs changed since the last snapshot, plus the ids the dedup window admitted. The
//! writer thread folds them into its [`Mirror`] — every run pre-encoded, the dedup window
//! replayed into its own [`IdBuckets`] — and writes the file from there, so the pause does
//! not grow with the number of tracked runs.

use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::error::Invalid;
use super::format::{
    encode_run, ChecksV1, CountsV1, EventsV1, HistogramV1, KindV1, ReplayV1, RunV1, StateV1, StrV1,
};
use crate::ingest::dedup::IdBuckets;
use crate::ingest::Changes;
use crate::model::event::{StateKey, StateType};
use crate::model::time::Micros;
use crate::state::counts::{Aggregates, KindCounts};
use crate::state::histogram::Histogram;
use crate::state::record::{RunKey, RunRecord};

/// Strings stored once and referenced by index.
#[derive(Debug, Default)]
struct Table {
    index: HashMap<Arc<str>, u32>,
    list: Vec<String>,
}

impl Table {
    fn get_or_add(&mut self, text: &Arc<str>) -> u32 {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        let i = self.list.len() as u32;
        self.index.insert(text.clone(), i);
        self.list.push(text.to_string());
        i
    }
}

/// Most label strings kept in the shared table; rarer ones are stored in their runs.
const STRING_TABLE_CAP: usize = 100_000;

/// The writer's copy of everything the state file holds.
#[derive(Debug)]
pub struct Mirror {
    source: String,
    replay: Option<ReplayV1>,
    track_task_runs: bool,
    group_by: Vec<String>,
    states: Vec<(u8, String)>,
    state_index: HashMap<StateKey, u32>,
    strings: Table,
    runs: [HashMap<RunKey, Vec<u8>>; 2],
    dedup: IdBuckets,
    aggregates: Option<Aggregates>,
}

impl Mirror {
    /// An empty mirror for `source`, these settings and an empty dedup window.
    pub fn new(
        source: String,
        track_task_runs: bool,
        group_by: Vec<String>,
        dedup: IdBuckets,
    ) -> Mirror {
        Mirror {
            source,
            replay: None,
            track_task_runs,
            group_by,
            states: Vec::new(),
            state_index: HashMap::new(),
            strings: Table::default(),
            runs: Default::default(),
            dedup,
            aggregates: None,
        }
    }

    /// A mirror holding what a loaded file held: its tables and encoded runs are reused as
    /// they are (indexes stay valid because tables only grow).
    pub fn from_loaded(
        loaded: &mut StateV1,
        restored: super::restore::Restored,
        aggregates: Aggregates,
    ) -> Result<Mirror, Invalid> {
        let mut mirror = Mirror::new(
            loaded.source.clone(),
            loaded.track_task_runs,
            loaded.group_by.clone(),
            restored.dedup,
        );
        mirror.replay = loaded.replay.clone();
        for (ty, name) in &loaded.states {
            let ty = StateType::ALL
                .get(usize::from(*ty))
                .copied()
                .ok_or(Invalid::Index {
                    table: "state type",
                    index: u64::from(*ty),
                })?;
            let key = StateKey {
                ty,
                name: Arc::from(name.as_str()),
            };
            mirror.state_index.insert(key, mirror.states.len() as u32);
            mirror.states.push((ty.index() as u8, name.clone()));
        }
        for text in std::mem::take(&mut loaded.strings) {
            mirror.strings.get_or_add(&Arc::from(text));
        }
        for (kind, (runs, keys)) in loaded.runs.iter_mut().zip(restored.keys).enumerate() {
            for (bytes, key) in std::mem::take(runs).into_iter().zip(keys) {
                mirror.runs[kind].insert(key, bytes.0);
            }
        }
        mirror.aggregates = Some(aggregates);
        Ok(mirror)
    }

    /// Folds in what changed (and, in `run --replay`, how far the files have been read).
    pub fn apply(&mut self, changes: Changes, replay: Option<ReplayV1>) {
        for (id, occurred) in changes.admitted {
            self.dedup.push(id, occurred, |_| {});
        }
        for (kind, key, record) in changes.runs {
            let runs = kind.index();
            match record {
                Some(record) => {
                    let encoded = encode_run(&self.run(key, &record));
                    self.runs[runs].insert(key, encoded);
                }
                None => {
                    self.runs[runs].remove(&key);
                }
            }
        }
        self.aggregates = Some(changes.aggregates);
        if replay.is_some() {
            self.replay = replay;
        }
    }

    /// Tracked runs in the mirror.
    pub fn run_count(&self) -> usize {
        self.runs.iter().map(HashMap::len).sum()
    }

    /// Writes the whole state as a framed file to `out`; returns the bytes written.
    pub fn write(&mut self, written_at: Micros, out: impl std::io::Write) -> std::io::Result<u64> {
        let Some(aggregates) = self.aggregates.take() else {
            return Err(std::io::Error::other("no state captured yet"));
        };
        let counts = self.counts(&aggregates);
        self.aggregates = Some(aggregates);
        let state = StateV1 {
            written_at,
            source: self.source.clone(),
            replay: self.replay.clone(),
            track_task_runs: self.track_task_runs,
            group_by: self.group_by.clone(),
            states: self.states.clone(),
            strings: self.strings.list.clone(),
            counts,
            dedup_newest: self.dedup.newest(),
            dedup_evicted: self.dedup.evicted_by_capacity(),
            dedup_buckets: BucketsRef(&self.dedup),
            runs: [RunsRef(&self.runs[0]), RunsRef(&self.runs[1])],
        };
        super::format::write(&state, out)
    }

    fn state(&mut self, key: &StateKey) -> u32 {
        if let Some(&i) = self.state_index.get(key) {
            return i;
        }
        let i = self.states.len() as u32;
        self.state_index.insert(key.clone(), i);
        self.states
            .push((key.ty.index() as u8, key.name.to_string()));
        i
    }

    fn string(&mut self, text: &Arc<str>) -> StrV1 {
        if self.strings.list.len() < STRING_TABLE_CAP || self.strings.index.contains_key(text) {
            StrV1::Table(self.strings.get_or_add(text))
        } else {
            StrV1::Inline(text.to_string())
        }
    }

    fn run(&mut self, key: RunKey, r: &RunRecord) -> RunV1 {
        let at = r.state_at;
        let labels = &r.labels;
        RunV1 {
            key: key.to_le_bytes(),
            odd_id: r.odd_id.as_deref().map(str::to_owned),
            name: r.name.as_deref().map(str::to_owned),
            state: self.state(&r.state),
            state_at: at,
            since_before: at - r.since,
            occurred_after: r.last_occurred - at,
            state_event: r.state_event.0.to_le_bytes(),
            series: r.series.0,
            labels: [
                labels.flow.as_ref().map(|s| self.string(s)),
                labels.deployment.as_ref().map(|s| self.string(s)),
                labels.work_pool.as_ref().map(|s| self.string(s)),
                labels.work_queue.as_ref().map(|s| self.string(s)),
            ],
            tags: labels.tags.iter().map(|s| self.string(s)).collect(),
            transitions: r
                .transitions
                .iter()
                .map(|t| {
                    (
                        t.from.as_ref().map(|f| self.state(f)),
                        self.state(&t.to),
                        t.count,
                    )
                })
                .collect(),
            recent: r
                .recent
                .iter()
                .map(|t| {
                    (
                        t.from.as_ref().map(|f| self.state(f)),
                        self.state(&t.to),
                        t.at - at,
                        t.event.0.to_le_bytes(),
                    )
                })
                .collect(),
            base: (
                r.base.epoch,
                r.base.at - at,
                r.base.before,
                r.base.state.as_ref().map(|s| self.state(s)),
            ),
        }
    }

    fn counts(&mut self, a: &Aggregates) -> CountsV1 {
        let kinds = [self.kind(&a.kinds[0]), self.kind(&a.kinds[1])];
        let e = &a.events;
        let c = &a.checks;
        CountsV1 {
            kinds,
            events: EventsV1 {
                state: e.state,
                other: e.other,
                duplicates: e.duplicates,
                rejected: e.rejected.to_vec(),
                self_transitions: e.self_transitions,
                chain_gaps: e.chain_gaps,
                last_occurred: e.last_occurred,
                delay: histogram(&e.delay),
                runs_retired: e.runs_retired,
                runs_evicted: e.runs_evicted,
                folded_state_names: e.folded_state_names,
                folded_label_sets: e.folded_label_sets,
            },
            series: a
                .series
                .iter()
                .map(|set| set.iter().map(|v| v.to_string()).collect())
                .collect(),
            series_other: a.series_other.map(|s| s.0),
            series_folded: a.series_folded,
            baseline: a.baseline,
            baseline_epoch: a.baseline_epoch,
            ledger: a.ledger.as_ref().map(|l| {
                l.seconds()
                    .iter()
                    .map(|(s, names)| {
                        let names = names.iter().map(|(n, c)| (n.to_string(), *c)).collect();
                        (*s, names)
                    })
                    .collect()
            }),
            checks: ChecksV1 {
                windows_match: c.windows_match,
                windows_repaired: c.windows_repaired,
                windows_failed: c.windows_failed,
                events_repaired: c.events_repaired,
                corrections: c.corrections.to_vec(),
                last_drift: c.last_drift.to_vec(),
                reconciliations: c.reconciliations,
                backfill_gaps: c.backfill_gaps,
            },
        }
    }

    fn kind(&mut self, k: &KindCounts) -> KindV1 {
        KindV1 {
            current: k.current.iter().map(|(s, n)| (self.state(s), *n)).collect(),
            entries: k
                .entries
                .iter()
                .map(|((s, series), n)| (self.state(s), series.0, *n))
                .collect(),
            transitions: k.transitions.iter().flatten().copied().collect(),
            self_transitions: k
                .self_transitions
                .iter()
                .map(|(s, n)| (self.state(s), *n))
                .collect(),
            active: k
                .active
                .iter()
                .map(|((s, series), n)| (self.state(s), series.0, *n))
                .collect(),
            durations: k
                .durations
                .iter()
                .map(|(s, h)| (self.state(s), histogram(h)))
                .collect(),
        }
    }
}

fn histogram(h: &Histogram) -> HistogramV1 {
    HistogramV1 {
        buckets: h.buckets().to_vec(),
        sum: h.sum(),
        count: h.count(),
    }
}

/// Serializes the mirror's dedup buckets like [`StateV1::dedup_buckets`].
pub struct BucketsRef<'a>(&'a IdBuckets);

impl Serialize for BucketsRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let buckets = self.0;
        let count = buckets.iter().count();
        let mut seq = serializer.serialize_seq(Some(count))?;
        let mut bytes = Vec::new();
        for (second, ids) in buckets.iter() {
            bytes.clear();
            for id in ids {
                bytes.extend_from_slice(&id.to_le_bytes());
            }
            seq.serialize_element(&(second, serde_bytes::Bytes::new(&bytes)))?;
        }
        seq.end()
    }
}

/// Serializes one kind's encoded runs like [`StateV1::runs`].
pub struct RunsRef<'a>(&'a HashMap<RunKey, Vec<u8>>);

impl Serialize for RunsRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.values().map(|b| serde_bytes::Bytes::new(b)))
    }
}
