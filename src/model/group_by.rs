//! The dimensions of `--group-by`: related resources whose names become labels.

/// A dimension of `--group-by`: a related resource whose name becomes a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// The run's deployment.
    Deployment,
    /// The run's flow.
    Flow,
    /// The run's work pool.
    WorkPool,
    /// The run's work queue.
    WorkQueue,
    /// The run's tags, sorted and joined with `,`.
    Tag,
}

impl GroupBy {
    /// Every dimension.
    pub const ALL: [GroupBy; 5] = [
        GroupBy::Deployment,
        GroupBy::Flow,
        GroupBy::WorkPool,
        GroupBy::WorkQueue,
        GroupBy::Tag,
    ];

    /// The flag spelling and the Prometheus label name.
    pub fn label(self) -> &'static str {
        match self {
            GroupBy::Deployment => "deployment",
            GroupBy::Flow => "flow",
            GroupBy::WorkPool => "work_pool",
            GroupBy::WorkQueue => "work_queue",
            GroupBy::Tag => "tag",
        }
    }

    /// Parses a flag value (`deployment`, `work_pool`, ...).
    pub fn parse(text: &str) -> Option<GroupBy> {
        GroupBy::ALL.into_iter().find(|g| g.label() == text)
    }
}
