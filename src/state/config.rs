//! [`StateConfig`]: the settings the state layer runs with, from the command line.

use crate::model::group_by::GroupBy;
use crate::model::time::Micros;

/// Settings of the state layer.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// Count task runs too (`--task-runs`).
    pub track_task_runs: bool,
    /// Drop terminal runs from memory after this long (event time) without an event.
    pub terminal_retention: Micros,
    /// Cap on group-by label sets and on distinct state names.
    pub max_series: usize,
    /// Cap on runs of each kind held in memory (`--max-tracked-runs`).
    pub max_tracked_runs: usize,
    /// Group-by dimensions, in label order.
    pub group_by: Vec<GroupBy>,
}
