//! From a decoded state file back to live state: aggregates, run records, dedup window.
//!
//! Every index in the file is checked, and every counter is bounded first (`plausible`), so a
//! file that passes its checksum but does not fit (written by a buggy build, or edited) is
//! refused with a message instead of panicking.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{Invalid, Unusable};
use super::format::{HistogramV1, KindV1, RunV1, StateV1, StrV1};
use crate::ingest::dedup::{Dedup, IdBuckets};
use crate::ingest::Pipeline;
use crate::model::event::{EventId, RunKind, StateKey, StateType};
use crate::model::reject::RejectReason;
use crate::model::time::{now_micros, Micros};
use crate::state::changes::{ChangeLog, HISTORY};
use crate::state::counts::{
    CheckCounts, Counts, EventCounts, KindCounts, KindTally, DELAY_BUCKETS, DURATION_BUCKETS,
};
use crate::state::histogram::Histogram;
use crate::state::inline::RecentTransition;
use crate::state::label_sets::{LabelSets, RunLabels};
use crate::state::labels::{SeriesId, SeriesTable};
use crate::state::ledger::{Ledger, Names};
use crate::state::names::{StateId, StateTable};
use crate::state::record::{BaseAnchor, NewRun, RunKey, RunRecord};

/// Resolves the file's table indexes.
struct Tables {
    states: Vec<(StateId, StateKey)>,
    strings: Vec<Arc<str>>,
    series: usize,
}

impl Tables {
    fn state_entry(&self, i: u32) -> Result<&(StateId, StateKey), Invalid> {
        self.states.get(i as usize).ok_or(Invalid::Index {
            table: "state",
            index: u64::from(i),
        })
    }

    fn state(&self, i: u32) -> Result<StateKey, Invalid> {
        self.state_entry(i).map(|(_, key)| key.clone())
    }

    fn id(&self, i: u32) -> Result<StateId, Invalid> {
        self.state_entry(i).map(|&(id, _)| id)
    }

    fn maybe_id(&self, i: Option<u32>) -> Result<Option<StateId>, Invalid> {
        i.map(|i| self.id(i)).transpose()
    }

    fn series(&self, i: u32) -> Result<SeriesId, Invalid> {
        if (i as usize) < self.series.max(1) {
            Ok(SeriesId(i))
        } else {
            Err(Invalid::Index {
                table: "label set",
                index: u64::from(i),
            })
        }
    }

    fn string(&self, s: &StrV1) -> Result<Arc<str>, Invalid> {
        match s {
            StrV1::Table(i) => self
                .strings
                .get(*i as usize)
                .cloned()
                .ok_or(Invalid::Index {
                    table: "string",
                    index: u64::from(*i),
                }),
            StrV1::Inline(text) => Ok(Arc::from(text.as_str())),
        }
    }
}

/// What [`restore`] hands to the writer's copy.
pub struct Restored {
    /// The dedup window's ids.
    pub dedup: IdBuckets,
    /// The run keys, in the order of the file's runs (per kind).
    pub keys: [Vec<RunKey>; 2],
}

/// Installs the state of `loaded` into a fresh `pipeline`. The file's settings must match
/// the pipeline's.
pub fn restore(pipeline: &mut Pipeline, loaded: &StateV1) -> Result<Restored, Unusable> {
    let (window, capacity) = pipeline.dedup_limits();
    let tracker = pipeline.tracker_mut();
    let config = tracker.config().clone();
    if loaded.track_task_runs != config.track_task_runs {
        return Err(Unusable::TaskRuns {
            saved: loaded.track_task_runs,
        });
    }
    let group_by: Vec<&str> = config.group_by.iter().map(|g| g.label()).collect();
    if loaded.group_by != group_by {
        return Err(Unusable::GroupBy {
            saved: loaded.group_by.join(","),
            now: group_by.join(","),
        });
    }

    super::plausible::state(loaded)?;

    let mut states = StateTable::new(config.max_series);
    let mut ids = Vec::with_capacity(loaded.states.len());
    for (ty, name) in &loaded.states {
        let ty = StateType::ALL
            .get(usize::from(*ty))
            .copied()
            .ok_or(Invalid::Index {
                table: "state type",
                index: u64::from(*ty),
            })?;
        let id = states.restore_id(ty, name);
        ids.push((id, states.key(id).clone()));
    }
    let tables = Tables {
        states: ids,
        strings: loaded
            .strings
            .iter()
            .map(|s| Arc::from(s.as_str()))
            .collect(),
        series: loaded.counts.series.len(),
    };

    let mut label_sets = LabelSets::new(config.max_series.saturating_mul(4));
    let mut runs = Vec::new();
    let mut keys: [Vec<RunKey>; 2] = Default::default();
    for (index, encoded) in loaded.runs.iter().enumerate() {
        let kind = RunKind::ALL[index];
        for bytes in encoded {
            let run = super::format::decode_run(&bytes.0)?;
            super::plausible::run(&run)?;
            let odd_id = run.odd_id.clone().map(Box::from);
            let record = record(&tables, &mut label_sets, run)?;
            keys[index].push(record.key());
            runs.push((kind, record, odd_id));
        }
    }

    let c = &loaded.counts;
    let series = SeriesTable::restore(
        config.group_by.clone(),
        config.max_series,
        c.series.clone(),
        c.series_other,
        c.series_folded,
    )
    .ok_or(Invalid::Shape("label sets do not match --group-by"))?;
    let mut buckets = BTreeMap::new();
    for (second, ids) in &loaded.dedup_buckets {
        if ids.0.len() % 16 != 0 {
            return Err(Invalid::Shape("dedup bucket is not a whole number of ids").into());
        }
        let ids: Vec<u128> = ids
            .0
            .chunks_exact(16)
            .map(|b| u128::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect();
        buckets.insert(*second, ids);
    }
    let buckets = IdBuckets::from_parts(
        window,
        capacity,
        not_ahead(maybe_time(loaded.dedup_newest)?),
        loaded.dedup_evicted,
        buckets,
    );

    let e = &c.events;
    let mut rejected = [0u64; RejectReason::ALL.len()];
    for (slot, value) in rejected.iter_mut().zip(&e.rejected) {
        *slot = *value;
    }
    let tallies = [
        KindTally::from_view(&kind(&tables, &c.kinds[0])?, &mut states),
        KindTally::from_view(&kind(&tables, &c.kinds[1])?, &mut states),
    ];
    states.set_folded(c.events.folded_state_names);
    let counts = Counts {
        tallies,
        states,
        label_sets,
        events: EventCounts {
            state: e.state,
            other: e.other,
            duplicates: e.duplicates,
            rejected,
            self_transitions: e.self_transitions,
            chain_gaps: e.chain_gaps,
            last_occurred: not_ahead(maybe_time(e.last_occurred)?),
            state_applied: 0,
            last_state_seen: None,
            delay: histogram(&DELAY_BUCKETS, &e.delay)?,
            dedup_ids: buckets.len() as u64,
            dedup_evicted: buckets.evicted_by_capacity(),
            runs_retired: e.runs_retired,
            runs_evicted: e.runs_evicted,
            folded_state_names: e.folded_state_names,
            folded_label_sets: e.folded_label_sets,
        },
        series,
        baseline: maybe_time(c.baseline)?,
        baseline_epoch: c.baseline_epoch,
        ledger: c.ledger.as_ref().map(|seconds| {
            let seconds = seconds
                .iter()
                .map(|(s, names)| {
                    let names: Names = names.iter().map(|(n, c)| (n.as_str().into(), *c)).collect();
                    (*s, names)
                })
                .collect();
            Ledger::from_seconds(
                RunKind::subscribed_prefixes(config.track_task_runs),
                seconds,
            )
        }),
        checks: CheckCounts {
            windows_match: c.checks.windows_match,
            windows_repaired: c.checks.windows_repaired,
            windows_failed: c.checks.windows_failed,
            events_repaired: c.checks.events_repaired,
            corrections: array(&c.checks.corrections),
            last_drift: array(&c.checks.last_drift),
            reconciliations: c.checks.reconciliations,
            backfill_gaps: c.checks.backfill_gaps,
        },
        // Rebuilt from the runs by `install`.
        waiting: Default::default(),
        // Changes and minutes are for live readers; a restored process starts them anew.
        changes: ChangeLog::new(HISTORY),
        minutes: Default::default(),
    };
    tracker.install(counts, runs);
    pipeline.replace_dedup(Dedup::from_buckets(buckets.clone()));
    Ok(Restored {
        dedup: buckets,
        keys,
    })
}

fn array<T: Copy + Default, const N: usize>(values: &[T]) -> [T; N] {
    let mut out = [T::default(); N];
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = *value;
    }
    out
}

fn histogram(bounds: &'static [f64], h: &HistogramV1) -> Result<Histogram, Invalid> {
    Histogram::from_parts(bounds, h.buckets.clone(), h.sum, h.count)
        .ok_or(Invalid::Shape("histogram buckets do not match"))
}

fn kind(t: &Tables, k: &KindV1) -> Result<KindCounts, Invalid> {
    let mut out = KindCounts::default();
    for &(s, n) in &k.current {
        *out.current.entry(t.state(s)?).or_default() += n;
    }
    for &(s, series, n) in &k.entries {
        *out.entries
            .entry((t.state(s)?, t.series(series)?))
            .or_default() += n;
    }
    if k.transitions.len() != 90 {
        return Err(Invalid::Shape("transition table has the wrong size"));
    }
    for (i, row) in out.transitions.iter_mut().enumerate() {
        row.copy_from_slice(&k.transitions[i * 9..i * 9 + 9]);
    }
    for &(s, n) in &k.self_transitions {
        *out.self_transitions.entry(t.state(s)?).or_default() += n;
    }
    for &(s, series, n) in &k.active {
        *out.active
            .entry((t.state(s)?, t.series(series)?))
            .or_default() += n;
    }
    for (s, h) in &k.durations {
        out.durations
            .insert(t.state(*s)?, histogram(&DURATION_BUCKETS, h)?);
    }
    Ok(out)
}

/// Earliest and latest times a state file may hold: years 1 to 9999, as RFC 3339 allows.
const TIME_RANGE: std::ops::RangeInclusive<Micros> =
    -62_135_596_800_000_000..=253_402_300_799_999_999;

/// Checks a saved time.
fn time(at: Micros) -> Result<Micros, Invalid> {
    if TIME_RANGE.contains(&at) {
        Ok(at)
    } else {
        Err(Invalid::Time(at))
    }
}

/// A saved event time no later than now: a file written before future events were refused
/// may carry one, and it must not hold the dedup window or the resume point in the future.
fn not_ahead(at: Option<Micros>) -> Option<Micros> {
    at.map(|t| t.min(now_micros()))
}

fn maybe_time(at: Option<Micros>) -> Result<Option<Micros>, Invalid> {
    at.map(time).transpose()
}

/// `at + offset`, checked.
fn shifted(at: Micros, offset: i64) -> Result<Micros, Invalid> {
    at.checked_add(offset)
        .ok_or(Invalid::Overflow)
        .and_then(time)
}

fn record(t: &Tables, sets: &mut LabelSets, r: RunV1) -> Result<RunRecord, Invalid> {
    let at = time(r.state_at)?;
    let [flow, deployment, work_pool, work_queue] = &r.labels;
    let label = |s: &Option<StrV1>| s.as_ref().map(|s| t.string(s)).transpose();
    let labels = RunLabels {
        flow: label(flow)?,
        deployment: label(deployment)?,
        work_pool: label(work_pool)?,
        work_queue: label(work_queue)?,
        tags: r
            .tags
            .iter()
            .map(|s| t.string(s))
            .collect::<Result<_, _>>()?,
    };
    let transitions = r
        .transitions
        .iter()
        .map(|&(from, to, count)| Ok((t.maybe_id(from)?, t.id(to)?, count)))
        .collect::<Result<Vec<_>, Invalid>>()?;
    let recent = r
        .recent
        .iter()
        .map(|&(from, to, offset, event)| {
            Ok(RecentTransition {
                from: t.maybe_id(from)?,
                to: t.id(to)?,
                at: shifted(at, offset)?,
                event: EventId(u128::from_le_bytes(event)),
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    let (epoch, base_offset, before, base_state) = r.base;
    let run = NewRun {
        key: u128::from_le_bytes(r.key),
        name: r.name.as_deref(),
        state: t.id(r.state)?,
        since: shifted(at, r.since_before.checked_neg().unwrap_or(i64::MAX))?,
        last_occurred: shifted(at, r.occurred_after)?,
        series: t.series(r.series)?,
        labels: sets.acquire_saved(&labels),
        base: BaseAnchor {
            epoch,
            at: shifted(at, base_offset)?,
            before,
            state: t.maybe_id(base_state)?,
        },
    };
    let event = EventId(u128::from_le_bytes(r.state_event));
    RunRecord::restore(run, at, event, transitions, recent).ok_or(Invalid::Shape(
        "a run's current state is not its newest transition",
    ))
}
