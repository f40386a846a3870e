//! The vocabulary of the exporter: state types, run kinds, event ids and the decoded event.
//!
//! Everything here is plain data. Decoding lives in `ingest::decode`, counting in `state`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::model::time::Micros;

/// The largest frame or line accepted (Prefect's events go up to 1.5 MB).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// One of Prefect's nine fixed state types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateType {
    /// `SCHEDULED`
    Scheduled,
    /// `PENDING`
    Pending,
    /// `RUNNING`
    Running,
    /// `COMPLETED`
    Completed,
    /// `FAILED`
    Failed,
    /// `CANCELLED`
    Cancelled,
    /// `CRASHED`
    Crashed,
    /// `PAUSED`
    Paused,
    /// `CANCELLING`
    Cancelling,
}

impl StateType {
    /// All nine, in a stable order (used for array indexes and zero-filled output).
    pub const ALL: [StateType; 9] = [
        StateType::Scheduled,
        StateType::Pending,
        StateType::Running,
        StateType::Completed,
        StateType::Failed,
        StateType::Cancelled,
        StateType::Crashed,
        StateType::Paused,
        StateType::Cancelling,
    ];

    /// Prefect's spelling, e.g. `COMPLETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateType::Scheduled => "SCHEDULED",
            StateType::Pending => "PENDING",
            StateType::Running => "RUNNING",
            StateType::Completed => "COMPLETED",
            StateType::Failed => "FAILED",
            StateType::Cancelled => "CANCELLED",
            StateType::Crashed => "CRASHED",
            StateType::Paused => "PAUSED",
            StateType::Cancelling => "CANCELLING",
        }
    }

    /// The state name Prefect gives a state of this type when none is set, e.g. `Completed`.
    pub fn default_name(self) -> &'static str {
        match self {
            StateType::Scheduled => "Scheduled",
            StateType::Pending => "Pending",
            StateType::Running => "Running",
            StateType::Completed => "Completed",
            StateType::Failed => "Failed",
            StateType::Cancelled => "Cancelled",
            StateType::Crashed => "Crashed",
            StateType::Paused => "Paused",
            StateType::Cancelling => "Cancelling",
        }
    }

    /// Parses Prefect's spelling (exact, upper case).
    pub fn parse(text: &str) -> Option<StateType> {
        StateType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Position in [`StateType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Completed, Failed, Cancelled and Crashed runs never change again on their own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateType::Completed | StateType::Failed | StateType::Cancelled | StateType::Crashed
        )
    }
}

impl fmt::Display for StateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state as counted: its type and its (possibly folded) name.
///
/// Names are shared `Arc<str>`s handed out by the state-name table, so cloning a key never
/// allocates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// The fixed state type.
    pub ty: StateType,
    /// The free-text state name (`Late`, `AwaitingRetry`, ...).
    pub name: Arc<str>,
}

/// The kinds of run whose states are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunKind {
    /// `prefect.flow-run.<uuid>`
    FlowRun,
    /// `prefect.task-run.<uuid>` (only with `--task-runs`)
    TaskRun,
}

impl RunKind {
    /// Both kinds, flow runs first.
    pub const ALL: [RunKind; 2] = [RunKind::FlowRun, RunKind::TaskRun];

    /// The resource-id prefix, e.g. `prefect.flow-run.`.
    pub fn resource_prefix(self) -> &'static str {
        match self {
            RunKind::FlowRun => "prefect.flow-run.",
            RunKind::TaskRun => "prefect.task-run.",
        }
    }

    /// The kind as users write it (`flow-run`, `task-run`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::FlowRun => "flow-run",
            RunKind::TaskRun => "task-run",
        }
    }

    /// Parses `flow-run` / `task-run`.
    pub fn parse(text: &str) -> Option<RunKind> {
        RunKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The metric stem, e.g. `flow_run` in `prefect_flow_run_state_entries_total`.
    pub fn metric_stem(self) -> &'static str {
        match self {
            RunKind::FlowRun => "flow_run",
            RunKind::TaskRun => "task_run",
        }
    }

    /// Position in [`RunKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The event-name prefixes to subscribe to: flow runs, and task runs when tracked.
    pub fn subscribed_prefixes(task_runs: bool) -> Vec<&'static str> {
        RunKind::ALL
            .into_iter()
            .filter(|k| *k == RunKind::FlowRun || task_runs)
            .map(RunKind::resource_prefix)
            .collect()
    }

    /// The kind whose prefix starts `resource_id`, if any.
    pub fn of_resource(resource_id: &str) -> Option<RunKind> {
        RunKind::ALL
            .into_iter()
            .find(|k| resource_id.starts_with(k.resource_prefix()))
    }
}

/// An event id: the UUID as a 128-bit integer (16 bytes instead of a 36-byte string).
///
/// Ids that are not UUIDs (Prefect never sends them, hostile files may) are folded to 128 bits
/// with FNV-1a, so every string id still deduplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// The id of any string: its UUID value when it is one, else its 128-bit FNV-1a hash.
    pub fn from_text(text: &str) -> EventId {
        match parse_uuid(text) {
            Some(value) => EventId(value),
            None => EventId(fnv1a_128(text.as_bytes())),
        }
    }
}

/// Parses a hyphenated UUID (either case) into its 128-bit value.
pub fn parse_uuid(text: &str) -> Option<u128> {
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text).ok().map(|u| u.as_u128())
}

/// Formats a 128-bit value as a lower-case hyphenated UUID.
pub fn format_uuid(value: u128) -> String {
    uuid::Uuid::from_u128(value).hyphenated().to_string()
}

/// 128-bit FNV-1a: a stable (across runs and versions) fold of arbitrary bytes.
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes.iter().fold(OFFSET, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// A state as written in an event: type plus name, borrowed from the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawState<'a> {
    /// The state type.
    pub ty: StateType,
    /// The state name as sent.
    pub name: Cow<'a, str>,
}

/// The names of a run's related resources that can become labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelatedNames<'a> {
    /// `related` role `flow`: the flow's name.
    pub flow: Option<Cow<'a, str>>,
    /// `related` role `deployment`: the deployment's name.
    pub deployment: Option<Cow<'a, str>>,
    /// `related` role `work-pool`: the work pool's name.
    pub work_pool: Option<Cow<'a, str>>,
    /// `related` role `work-queue`: the work queue's name.
    pub work_queue: Option<Cow<'a, str>>,
    /// `related` role `tag`: tag names (from `prefect.tag.<name>` ids).
    pub tags: Vec<Cow<'a, str>>,
}

/// The transition a state event carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange<'a> {
    /// `payload.initial_state`, or `None` for a new run.
    pub from: Option<RawState<'a>>,
    /// `payload.validated_state`, falling back to the resource's state labels.
    pub to: RawState<'a>,
    /// `prefect.state-timestamp` when present and valid, else `occurred`.
    pub timestamp: Micros,
}

/// A validated event, borrowed from the frame it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event id (dedup key).
    pub id: EventId,
    /// The event name, e.g. `prefect.flow-run.Completed`.
    pub name: Cow<'a, str>,
    /// When it happened.
    pub occurred: Micros,
    /// `resource["prefect.resource.id"]`.
    pub resource_id: Cow<'a, str>,
    /// `resource["prefect.resource.name"]`.
    pub resource_name: Option<Cow<'a, str>>,
    /// Present when the resource carries `prefect.state-type`.
    pub state: Option<StateChange<'a>>,
    /// Names from `related`.
    pub related: RelatedNames<'a>,
    /// The previous event of the same resource, when the server knows it.
    pub follows: Option<EventId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_types_round_trip() {
        for ty in StateType::ALL {
            assert_eq!(StateType::parse(ty.as_str()), Some(ty));
            assert_eq!(StateType::ALL[ty.index()], ty);
        }
        assert_eq!(StateType::parse("completed"), None);
    }

    #[test]
    fn uuid_ids_are_their_value_and_others_hash() {
        let id = EventId::from_text("01a2104c-18d9-719d-a0b2-304a840aac1a");
        assert_eq!(id.0, 0x01a2104c_18d9_719d_a0b2_304a840aac1a);
        assert_eq!(
            EventId::from_text("01A2104C-18D9-719D-A0B2-304A840AAC1A"),
            id,
            "case does not matter"
        );
        assert_eq!(
            EventId::from_text("not-a-uuid"),
            EventId::from_text("not-a-uuid")
        );
        assert_ne!(
            EventId::from_text("not-a-uuid"),
            EventId::from_text("not-a-uuid2")
        );
        assert_eq!(format_uuid(id.0), "01a2104c-18d9-719d-a0b2-304a840aac1a");
    }

    #[test]
    fn run_kind_from_resource() {
        assert_eq!(
            RunKind::of_resource("prefect.flow-run.abc"),
            Some(RunKind::FlowRun)
        );
        assert_eq!(
            RunKind::of_resource("prefect.task-run.abc"),
            Some(RunKind::TaskRun)
        );
        assert_eq!(RunKind::of_resource("prefect.flow.abc"), None);
    }
}
