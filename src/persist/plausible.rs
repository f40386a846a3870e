//! Plausibility of a state file's counters, checked before any is restored.
//!
//! A file with a right CRC-32 can still hold any number (written by a buggy build, edited, or
//! crafted): a counter restored at `u64::MAX` overflows at the next event, a panic with
//! overflow checks on and a wrapped counter without. So every counter the file restores is
//! refused above [`MAX_COUNT`], 2^53: 285 years at a million events a second, and the
//! largest integer a JSON reader or Prometheus' float64 samples still hold exactly. Counters
//! that are summed anywhere (per-state counts, entries by label set, histogram buckets,
//! rejected lines by reason, corrections and drift by state type, the ledger) are also
//! refused when their sum is above it, so no total computed from them (at restore, where a
//! repeated key adds up, or at exposition) can overflow either. The layout's `u32` counts
//! (a run's transitions, distinct events of one second in the ledger) are refused above
//! [`MAX_SMALL`], 2^31, which leaves them 2^31 increments of headroom.
//!
//! Every layout struct is destructured in full, so a field added to the layout does not
//! compile until it is checked here or named as not a counter.

use super::error::Invalid;
use super::format::{ChecksV1, CountsV1, EventsV1, HistogramV1, KindV1, RunV1, StateV1};

/// The largest counter (or sum of counters of one kind) a state file may hold: 2^53.
pub const MAX_COUNT: u64 = 1 << 53;

/// The largest `u32` count a state file may hold: 2^31.
pub const MAX_SMALL: u32 = 1 << 31;

/// One counter.
fn count(what: &'static str, value: u64) -> Result<(), Invalid> {
    Sum::new(what).add(value)
}

/// Counters of one kind, summed as they are checked.
struct Sum {
    what: &'static str,
    total: u64,
}

impl Sum {
    fn new(what: &'static str) -> Sum {
        Sum { what, total: 0 }
    }

    fn refuse(&self, value: i128, summed: bool) -> Invalid {
        Invalid::Implausible {
            what: self.what,
            value,
            summed,
            limit: MAX_COUNT,
        }
    }

    fn add(&mut self, value: u64) -> Result<(), Invalid> {
        if value > MAX_COUNT {
            return Err(self.refuse(i128::from(value), false));
        }
        // Both at most 2^53: cannot overflow.
        self.total += value;
        if self.total > MAX_COUNT {
            return Err(self.refuse(i128::from(self.total), true));
        }
        Ok(())
    }

    /// A signed counter (a gauge of runs, a drift): its magnitude counts.
    fn signed(&mut self, value: i64) -> Result<(), Invalid> {
        if value.unsigned_abs() > MAX_COUNT {
            return Err(self.refuse(i128::from(value), false));
        }
        self.add(value.unsigned_abs())
    }

    fn all<'a>(mut self, values: impl IntoIterator<Item = &'a u64>) -> Result<(), Invalid> {
        values.into_iter().try_for_each(|&v| self.add(v))
    }
}

/// A `u32` count.
fn small(what: &'static str, value: u32) -> Result<(), Invalid> {
    if value > MAX_SMALL {
        return Err(Invalid::Implausible {
            what,
            value: i128::from(value),
            summed: false,
            limit: u64::from(MAX_SMALL),
        });
    }
    Ok(())
}

/// Checks every counter of `state` but those inside its run records (see [`run`]).
pub fn state<B, R>(state: &StateV1<B, R>) -> Result<(), Invalid> {
    let StateV1 {
        written_at: _,
        source: _,
        // A position, checked against the file's length when the file is opened.
        replay: _,
        track_task_runs: _,
        group_by: _,
        states: _,
        strings: _,
        counts,
        dedup_newest: _,
        dedup_evicted,
        dedup_buckets: _,
        runs: _,
    } = state;
    count("dedup ids evicted", *dedup_evicted)?;
    self::counts(counts)
}

fn counts(c: &CountsV1) -> Result<(), Invalid> {
    let CountsV1 {
        kinds,
        events,
        series: _,
        series_other: _,
        series_folded,
        baseline: _,
        baseline_epoch,
        ledger,
        checks,
    } = c;
    for k in kinds {
        kind(k)?;
    }
    self::events(events)?;
    count("events whose label set folded", *series_folded)?;
    count("baseline epoch", *baseline_epoch)?;
    if let Some(ledger) = ledger {
        let mut sum = Sum::new("ledger counts");
        for (_, names) in ledger {
            for &(_, n) in names {
                small("ledger count of one second", n)?;
                sum.add(u64::from(n))?;
            }
        }
    }
    self::checks(checks)
}

fn kind(k: &KindV1) -> Result<(), Invalid> {
    let KindV1 {
        current,
        entries,
        transitions,
        self_transitions,
        active,
        durations,
    } = k;
    let mut sum = Sum::new("runs per state");
    current.iter().try_for_each(|&(_, n)| sum.signed(n))?;
    Sum::new("entries").all(entries.iter().map(|(_, _, n)| n))?;
    Sum::new("transitions").all(transitions)?;
    Sum::new("self-transitions").all(self_transitions.iter().map(|(_, n)| n))?;
    let mut sum = Sum::new("active runs");
    active.iter().try_for_each(|&(_, _, n)| sum.signed(n))?;
    durations
        .iter()
        .try_for_each(|(_, h)| histogram("state-duration histogram buckets", h))
}

fn events(e: &EventsV1) -> Result<(), Invalid> {
    let EventsV1 {
        state,
        other,
        duplicates,
        rejected,
        self_transitions,
        chain_gaps,
        last_occurred: _,
        delay,
        runs_retired,
        runs_evicted,
        folded_state_names,
        folded_label_sets,
    } = e;
    count("state events", *state)?;
    count("other events", *other)?;
    count("duplicates", *duplicates)?;
    Sum::new("rejected lines").all(rejected)?;
    count("self-transition events", *self_transitions)?;
    count("chain gaps", *chain_gaps)?;
    histogram("event-delay histogram buckets", delay)?;
    count("runs retired", *runs_retired)?;
    count("runs evicted", *runs_evicted)?;
    count("folded state names", *folded_state_names)?;
    count("folded label sets", *folded_label_sets)
}

fn checks(c: &ChecksV1) -> Result<(), Invalid> {
    let ChecksV1 {
        windows_match,
        windows_repaired,
        windows_failed,
        events_repaired,
        corrections,
        last_drift,
        reconciliations,
        backfill_gaps,
    } = c;
    count("windows matched", *windows_match)?;
    count("windows repaired", *windows_repaired)?;
    count("windows failed", *windows_failed)?;
    count("events repaired", *events_repaired)?;
    Sum::new("reconciliation corrections").all(corrections)?;
    let mut sum = Sum::new("reconciliation drift");
    last_drift.iter().try_for_each(|&d| sum.signed(d))?;
    count("reconciliations", *reconciliations)?;
    count("backfill gaps", *backfill_gaps)
}

/// A histogram: buckets bounded and summed to its count, a finite sum.
fn histogram(what: &'static str, h: &HistogramV1) -> Result<(), Invalid> {
    let HistogramV1 {
        buckets,
        sum,
        count,
    } = h;
    let mut total = Sum::new(what);
    for &n in buckets {
        total.add(n)?;
    }
    if total.total != *count {
        return Err(Invalid::Shape(
            "a histogram's count is not the sum of its buckets",
        ));
    }
    if !sum.is_finite() {
        return Err(Invalid::Shape("a histogram's sum is not a finite number"));
    }
    Ok(())
}

/// Checks the counters of one run record.
pub fn run(r: &RunV1) -> Result<(), Invalid> {
    let RunV1 {
        key: _,
        odd_id: _,
        name: _,
        state: _,
        state_at: _,
        since_before: _,
        occurred_after: _,
        state_event: _,
        series: _,
        labels: _,
        tags: _,
        transitions,
        recent: _,
        base: (epoch, _, _, _),
    } = r;
    transitions
        .iter()
        .try_for_each(|&(_, _, n)| small("a run's transition count", n))?;
    count("a run's baseline epoch", *epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_at(bucket: u64) -> HistogramV1 {
        let mut buckets = vec![0; 17];
        buckets[3] = bucket;
        HistogramV1 {
            buckets,
            sum: 1.0,
            count: bucket,
        }
    }

    #[test]
    fn counters_up_to_the_bound_pass_and_above_it_are_refused() {
        let mut s = StateV1::<(), ()>::default();
        s.counts.events.state = MAX_COUNT;
        s.counts.events.delay = histogram_at(MAX_COUNT);
        assert_eq!(state(&s), Ok(()));
        s.counts.events.delay = histogram_at(MAX_COUNT + 1);
        assert!(matches!(
            state(&s),
            Err(Invalid::Implausible {
                what: "event-delay histogram buckets",
                summed: false,
                ..
            })
        ));
        s.counts.events.delay = HistogramV1::default();
        s.counts.events.state = u64::MAX;
        assert!(matches!(
            state(&s),
            Err(Invalid::Implausible {
                what: "state events",
                ..
            })
        ));
    }

    #[test]
    fn sums_are_bounded_too_and_signed_counters_by_their_magnitude() {
        let mut s = StateV1::<(), ()>::default();
        s.counts.kinds[0].entries = vec![(0, 0, MAX_COUNT), (0, 1, 1)];
        assert!(matches!(
            state(&s),
            Err(Invalid::Implausible {
                what: "entries",
                summed: true,
                ..
            })
        ));
        s.counts.kinds[0].entries.clear();
        s.counts.kinds[1].current = vec![(0, i64::MIN)];
        let refused = state(&s).unwrap_err();
        assert!(
            refused.to_string().contains("-9223372036854775808"),
            "{refused}"
        );
        s.counts.kinds[1].current = vec![(0, -5), (1, 7)];
        s.counts.checks.last_drift = vec![-3, 3];
        assert_eq!(state(&s), Ok(()));
    }

    #[test]
    fn a_histogram_must_add_up_and_have_a_finite_sum() {
        let mut s = StateV1::<(), ()>::default();
        let mut h = histogram_at(4);
        h.count = 5;
        s.counts.kinds[0].durations = vec![(0, h)];
        assert!(matches!(state(&s), Err(Invalid::Shape(_))));
        let mut h = histogram_at(4);
        h.sum = f64::NAN;
        s.counts.kinds[0].durations = vec![(0, h)];
        assert!(matches!(state(&s), Err(Invalid::Shape(_))));
    }

    #[test]
    fn small_counts_have_headroom() {
        let mut s = StateV1::<(), ()>::default();
        s.counts.ledger = Some(vec![(
            0,
            vec![("prefect.flow-run.Running".into(), u32::MAX)],
        )]);
        assert!(matches!(
            state(&s),
            Err(Invalid::Implausible { limit, .. }) if limit == u64::from(MAX_SMALL)
        ));
    }
}
