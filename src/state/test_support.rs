//! Builders for tests of the state layer and the layers that read it: a small tracker and
//! state events at chosen seconds, built directly (no decoding).

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::event::{
    Event, EventId, RawState, RelatedNames, RunKind, StateChange, StateKey, StateType,
};
use crate::model::time::{parse_rfc3339, Micros, SECOND};
use crate::state::tracker::{DedupGauges, Tracker};
use crate::state::StateConfig;

/// Settings tracking flow runs, without group-by labels.
pub fn config() -> StateConfig {
    StateConfig {
        track_task_runs: false,
        terminal_retention: 3600 * SECOND,
        max_series: 100,
        max_tracked_runs: 1_000_000,
        group_by: vec![],
    }
}

/// A tracker with [`config`].
pub fn tracker() -> Tracker {
    Tracker::new(config())
}

/// `2026-11-25T01:00:SS`, or later minutes for seconds past 59.
pub fn ts(second: u32) -> String {
    format!("2026-11-25T01:{:02}:{:02}Z", second / 60, second % 60)
}

/// [`ts`] as micros.
pub fn at(second: u32) -> Micros {
    parse_rfc3339(&ts(second)).expect("a valid timestamp")
}

/// The default-named key of a state type.
pub fn key(ty: StateType) -> StateKey {
    StateKey {
        ty,
        name: Arc::from(ty.default_name()),
    }
}

/// The resource id of test run `run`.
pub fn run_id(run: u32) -> String {
    format!("prefect.flow-run.00000000-0000-4000-8000-{run:012}")
}

/// A state event `id` of run `run` at second `second` (after 01:00), `from` -> `to`.
pub fn event(
    id: u32,
    run: u32,
    second: u32,
    from: Option<StateType>,
    to: StateType,
) -> Event<'static> {
    let state = |ty: StateType| RawState {
        ty,
        name: Cow::Borrowed(ty.default_name()),
    };
    Event {
        id: EventId::from_text(&format!("00000000-0000-7000-8000-{id:012}")),
        name: Cow::Owned(format!("prefect.flow-run.{}", to.default_name())),
        occurred: at(second),
        resource_id: Cow::Owned(run_id(run)),
        resource_name: None,
        state: Some(StateChange {
            from: from.map(state),
            to: state(to),
            timestamp: at(second),
        }),
        related: RelatedNames::default(),
        follows: None,
    }
}

/// Four runs: 1 and 2 PENDING since seconds 10 and 20, 3 RUNNING since 15, and 4 PENDING at
/// 5, RUNNING at 35 and COMPLETED at 95 (30 s pending, 60 s running).
pub fn waiting_runs() -> Vec<Event<'static>> {
    use StateType::{Completed, Pending, Running};
    vec![
        event(1, 1, 10, None, Pending),
        event(2, 2, 20, None, Pending),
        event(3, 3, 15, None, Running),
        event(4, 4, 5, None, Pending),
        event(5, 4, 35, Some(Pending), Running),
        event(6, 4, 95, Some(Running), Completed),
    ]
}

/// Applies `events` as one batch, as the pipeline does for new events.
pub fn apply(tracker: &mut Tracker, events: &[Event<'_>]) {
    let mut writer = tracker.writer(Micros::MAX / 2);
    let mut newest = None;
    for e in events {
        writer.count_received(true);
        writer.admit(e);
        writer.apply(
            RunKind::FlowRun,
            e,
            e.state.as_ref().expect("a state event"),
            true,
        );
        newest = newest.max(Some(e.occurred));
    }
    writer.finish(DedupGauges {
        newest,
        ..DedupGauges::default()
    });
}
