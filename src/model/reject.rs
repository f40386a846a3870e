//! Why an input line or frame was rejected: the `reason` label of
//! `prefect_exporter_events_rejected_total`, shared by the decoder that finds it and the counts
//! that keep it.

use std::fmt;

/// Why a line was rejected; the value of the `reason` label of
/// `prefect_exporter_events_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not JSON, invalid UTF-8, trailing garbage.
    MalformedJson,
    /// Nested deeper than the parser's recursion limit.
    TooDeep,
    /// Larger than [`crate::model::event::MAX_FRAME_BYTES`].
    Oversize,
    /// Valid JSON but not an object (or a frame whose `event` is not an object).
    NotAnObject,
    /// No string `id`.
    MissingId,
    /// No string `event`.
    MissingEvent,
    /// No string `occurred`.
    MissingOccurred,
    /// `occurred` is not RFC 3339.
    BadTimestamp,
    /// No object `resource` with a string `prefect.resource.id`.
    MissingResourceId,
    /// A state type that is not one of Prefect's nine.
    BadStateType,
    /// `occurred` more than [`FUTURE_TOLERANCE`](crate::model::time::FUTURE_TOLERANCE) ahead
    /// of the wall clock (a client with a wrong clock, or a hostile file): such an event would
    /// move the dedup window, retention and the resume point into the future.
    FutureTimestamp,
}

impl RejectReason {
    /// Every reason, for zero-filled output.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::MalformedJson,
        RejectReason::TooDeep,
        RejectReason::Oversize,
        RejectReason::NotAnObject,
        RejectReason::MissingId,
        RejectReason::MissingEvent,
        RejectReason::MissingOccurred,
        RejectReason::BadTimestamp,
        RejectReason::MissingResourceId,
        RejectReason::BadStateType,
        RejectReason::FutureTimestamp,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::TooDeep => "too_deep",
            RejectReason::Oversize => "oversize",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingId => "missing_id",
            RejectReason::MissingEvent => "missing_event",
            RejectReason::MissingOccurred => "missing_occurred",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::MissingResourceId => "missing_resource_id",
            RejectReason::BadStateType => "bad_state_type",
            RejectReason::FutureTimestamp => "future_timestamp",
        }
    }

    /// Position in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
