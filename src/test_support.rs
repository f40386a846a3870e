//! Builders shared by unit tests: a small pipeline and state-event frames at chosen seconds.

use std::sync::Arc;

use crate::event::{StateKey, StateType};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::state::StateConfig;
use crate::timestamp::SECOND;

/// A pipeline tracking flow runs, without group-by labels.
pub fn pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig {
        state: StateConfig {
            track_task_runs: false,
            terminal_retention: 3600 * SECOND,
            max_series: 100,
            max_tracked_runs: 1_000_000,
            group_by: vec![],
        },
        dedup_window: 1800 * SECOND,
        dedup_capacity: 1000,
    })
}

/// `2026-11-25T01:00:SS`, or later minutes for seconds past 59.
pub fn ts(second: u32) -> String {
    format!("2026-11-25T01:{:02}:{:02}Z", second / 60, second % 60)
}

/// The default-named key of a state type.
pub fn key(ty: StateType) -> StateKey {
    StateKey {
        ty,
        name: Arc::from(ty.default_name()),
    }
}

/// A state event of run `run` at second `at` (after 01:00), `from` -> `to`.
pub fn frame(id: u32, run: u32, at: u32, from: Option<StateType>, to: StateType) -> Vec<u8> {
    let from = match from {
        Some(f) => format!(
            r#"{{"type":"{}","name":"{}"}}"#,
            f.as_str(),
            f.default_name()
        ),
        None => "null".to_owned(),
    };
    format!(
        r#"{{"id":"00000000-0000-7000-8000-{id:012}","event":"prefect.flow-run.{name}","occurred":"{t}","resource":{{"prefect.resource.id":"prefect.flow-run.00000000-0000-4000-8000-{run:012}","prefect.state-type":"{ty}","prefect.state-name":"{name}"}},"payload":{{"initial_state":{from},"validated_state":{{"type":"{ty}","name":"{name}"}}}}}}"#,
        name = to.default_name(),
        t = ts(at),
        ty = to.as_str(),
    )
    .into_bytes()
}
