//! The service's own condition: readiness and the stream's connection, shared by the tasks
//! that change them and the HTTP server that reports them.
//!
//! Readiness is a set of named conditions (`baseline`, `stream`, `replay`); the service is
//! ready when none is unmet, and `/readyz` reports the first unmet one's reason. Counters of
//! the source's and the checks' own troubles (reconnects, cut-off repairs) live here too: they
//! start at zero with each process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Readiness and stream condition.
#[derive(Debug, Default)]
pub struct Status {
    unmet: Mutex<BTreeMap<&'static str, String>>,
    connected: AtomicBool,
    reconnects: Mutex<BTreeMap<String, u64>>,
    repair_truncated: Mutex<BTreeMap<&'static str, u64>>,
}

impl Status {
    /// Ready, with no condition unmet yet.
    pub fn new() -> Status {
        Status::default()
    }

    /// Marks `condition` unmet, for `reason`.
    pub fn require(&self, condition: &'static str, reason: impl Into<String>) {
        self.unmet.lock().insert(condition, reason.into());
    }

    /// Marks `condition` met.
    pub fn satisfy(&self, condition: &'static str) {
        self.unmet.lock().remove(condition);
    }

    /// Why the service is not ready (the first unmet condition's reason), or `None` when it
    /// is.
    pub fn unready_reason(&self) -> Option<String> {
        self.unmet.lock().values().next().cloned()
    }

    /// Whether a stream is subscribed now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Records the stream's connection state.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// Reconnections so far.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.lock().values().sum()
    }

    /// Reconnections so far, by reason.
    pub fn reconnects_by_reason(&self) -> BTreeMap<String, u64> {
        self.reconnects.lock().clone()
    }

    /// Counts one reconnection for `reason`.
    pub fn count_reconnect(&self, reason: &str) {
        *self.reconnects.lock().entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts a repair re-fetch cut off at the page limit `limit`.
    pub fn count_repair_truncated(&self, limit: &'static str) {
        *self.repair_truncated.lock().entry(limit).or_default() += 1;
    }

    /// Repair re-fetches cut off so far, by page limit.
    pub fn repair_truncated(&self) -> BTreeMap<&'static str, u64> {
        self.repair_truncated.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_every_condition_is_met() {
        let status = Status::new();
        assert_eq!(status.unready_reason(), None);
        status.require("stream", "connecting");
        status.require("baseline", "taking the baseline");
        assert_eq!(
            status.unready_reason().as_deref(),
            Some("taking the baseline")
        );
        status.satisfy("baseline");
        assert_eq!(status.unready_reason().as_deref(), Some("connecting"));
        status.satisfy("stream");
        assert_eq!(status.unready_reason(), None);
    }
}
