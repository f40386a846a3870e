//! Builders shared by unit tests of the pipeline and the layers above it: a small pipeline
//! and state-event frames at chosen seconds.

use crate::ingest::pipeline::{Pipeline, PipelineConfig};
use crate::model::event::StateType;
use crate::model::time::SECOND;
use crate::state::test_support::{config, ts};

/// A pipeline tracking flow runs, without group-by labels.
pub fn pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig {
        state: config(),
        dedup_window: 1800 * SECOND,
        dedup_capacity: 1000,
    })
}

/// A state event of run `run` at second `at` (after 01:00), `from` -> `to`, as a frame.
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
