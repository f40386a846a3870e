//! The state layer's rules, checked on events built directly: totals against a REST baseline
//! whatever order events arrive in, durations observed when a run leaves a state, active
//! runs, and the index of waiting runs.

use std::collections::HashMap;

use crate::model::event::{RunKind, StateType};
use crate::state::names::StateId;
use crate::state::record::run_key;
use crate::state::test_support::{apply, at, event, key, run_id, tracker, waiting_runs};
use crate::state::Tracker;

use StateType::{Completed, Pending, Running};

fn with_baseline(t: &Tracker, second: u32, totals: &[(StateType, i64)]) {
    let totals = totals.iter().map(|(ty, n)| (key(*ty), *n)).collect();
    t.shared()
        .reconcile(vec![(RunKind::FlowRun, totals)], at(second), None)
        .expect("no marker: always applied");
}

fn totals(t: &Tracker) -> HashMap<StateType, i64> {
    t.shared().with_counts(|counts| {
        let mut out = HashMap::new();
        for (k, v) in &counts.kind_counts(RunKind::FlowRun).current {
            if *v != 0 {
                *out.entry(k.ty).or_default() += v;
            }
        }
        out
    })
}

#[test]
fn a_repaired_creation_event_leaves_totals_exact() {
    let mut t = tracker();
    with_baseline(&t, 10, &[]);
    apply(&mut t, &[event(3, 1, 30, Some(Running), Completed)]);
    assert_eq!(
        totals(&t),
        HashMap::from([(Completed, 1), (Running, -1)]),
        "assumed to exist at the baseline"
    );
    apply(&mut t, &[event(1, 1, 20, None, Pending)]);
    assert_eq!(
        totals(&t),
        HashMap::from([(Completed, 1)]),
        "created after the baseline after all"
    );
    apply(&mut t, &[event(2, 1, 25, Some(Pending), Running)]);
    assert_eq!(totals(&t), HashMap::from([(Completed, 1)]));
}

#[test]
fn a_run_counted_by_the_baseline_moves_out_of_its_baseline_state() {
    let mut t = tracker();
    with_baseline(&t, 10, &[(Running, 1)]);
    apply(&mut t, &[event(1, 1, 20, Some(Running), Completed)]);
    assert_eq!(totals(&t), HashMap::from([(Completed, 1)]));
}

#[test]
fn backfilled_events_from_before_the_baseline_change_nothing() {
    let mut t = tracker();
    with_baseline(&t, 40, &[(Completed, 1)]);
    apply(
        &mut t,
        &[
            event(3, 1, 30, Some(Running), Completed),
            event(1, 1, 10, None, Pending),
            event(2, 1, 20, Some(Pending), Running),
        ],
    );
    assert_eq!(totals(&t), HashMap::from([(Completed, 1)]));
}

#[test]
fn events_straddling_the_baseline_count_once() {
    let mut t = tracker();
    // At the baseline (second 25) the run was RUNNING.
    with_baseline(&t, 25, &[(Running, 1)]);
    apply(
        &mut t,
        &[
            event(3, 1, 30, Some(Running), Completed),
            event(2, 1, 20, Some(Pending), Running),
            event(1, 1, 10, None, Pending),
        ],
    );
    assert_eq!(totals(&t), HashMap::from([(Completed, 1)]));
}

#[test]
fn a_new_baseline_rebases_tracked_runs() {
    let mut t = tracker();
    with_baseline(&t, 5, &[]);
    apply(&mut t, &[event(1, 1, 10, None, Pending)]);
    apply(&mut t, &[event(2, 1, 20, Some(Pending), Running)]);
    assert_eq!(totals(&t), HashMap::from([(Running, 1)]));
    // The server says the same at second 25; then the run completes.
    with_baseline(&t, 25, &[(Running, 1)]);
    apply(&mut t, &[event(3, 1, 30, Some(Running), Completed)]);
    assert_eq!(totals(&t), HashMap::from([(Completed, 1)]));
}

#[test]
fn without_a_baseline_unknown_runs_only_add() {
    let mut t = tracker();
    apply(&mut t, &[event(2, 1, 20, Some(Pending), Running)]);
    assert_eq!(totals(&t), HashMap::from([(Running, 1)]));
}

#[test]
fn durations_are_observed_on_leaving_and_waiting_runs_are_indexed_oldest_first() {
    let mut t = tracker();
    apply(&mut t, &waiting_runs());
    t.shared().with_counts(|counts| {
        let kc = &counts.kind_counts(RunKind::FlowRun);
        let pending = &kc.durations[&key(Pending)];
        assert_eq!(
            (pending.count(), pending.sum()),
            (1, 30.0),
            "run 4 left PENDING after 30 s"
        );
        let running = &kc.durations[&key(Running)];
        assert_eq!(
            (running.count(), running.sum()),
            (1, 60.0),
            "run 4 ran 60 s"
        );
        let active: i64 = kc
            .active
            .iter()
            .filter(|((s, _), _)| s.ty == Pending)
            .map(|(_, n)| *n)
            .sum();
        assert_eq!(active, 2, "runs 1 and 2");
        let waiting = &counts.waiting[RunKind::FlowRun.index()];
        let mut oldest: Vec<(StateType, i64)> = waiting
            .oldest()
            .map(|(s, since)| (counts.states.key(s).ty, since))
            .collect();
        oldest.sort_unstable();
        assert_eq!(
            oldest,
            vec![(Pending, at(10)), (Running, at(15))],
            "terminal states are not indexed"
        );
        let pending: Vec<i64> = waiting
            .entered_before(StateId::default_of(Pending), at(100))
            .map(|(since, _)| since)
            .collect();
        assert_eq!(pending, vec![at(10), at(20)]);
    });
}

/// The change log marks an event older than its run's state (Prefect does not deliver events
/// in `occurred` order): a RUNNING arriving after the COMPLETED that followed it is logged
/// (and counted as an entry) but did not move the run, and the stream leaves it out of the
/// run's own path.
#[test]
fn the_change_log_marks_late_events() {
    let mut t = tracker();
    apply(
        &mut t,
        &[
            event(1, 1, 20, None, Pending),
            event(3, 1, 40, Some(Running), Completed),
            event(2, 1, 30, Some(Pending), Running),
        ],
    );
    let logged: Vec<(u64, bool)> = t.shared().with_counts(|c| {
        c.changes
            .since(0)
            .unwrap()
            .map(|change| (change.seq, change.current))
            .collect()
    });
    assert_eq!(logged, vec![(0, true), (1, true), (2, false)]);
    let (run, _) = run_key(RunKind::FlowRun, &run_id(1));
    let state = t
        .shared()
        .find_run(RunKind::FlowRun, run, |r, _| r.state())
        .unwrap();
    assert_eq!(
        t.shared().with_counts(|c| c.states.key(state).ty),
        Completed
    );
}
