//! A run known from Prefect's REST API rather than from its events: what the baseline lists
//! of runs that were already waiting when the exporter started.

use crate::model::event::StateType;
use crate::model::time::Micros;

/// A run as listed by `/flow_runs/filter` or `/task_runs/filter`.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownRun {
    /// The run's UUID.
    pub id: String,
    /// The run's name.
    pub name: Option<String>,
    /// Current state type.
    pub state_type: StateType,
    /// Current state name.
    pub state_name: String,
    /// When it entered the state.
    pub state_timestamp: Option<Micros>,
    /// Work queue name, when the server sends it.
    pub work_queue: Option<String>,
    /// Work pool name, when the server sends it.
    pub work_pool: Option<String>,
}
