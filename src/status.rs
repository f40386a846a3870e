//! The service's own condition: readiness and the stream's connection, shared by the source
//! that changes them and the HTTP server that reports them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Readiness and stream condition.
#[derive(Debug)]
pub struct Status {
    ready: AtomicBool,
    not_ready_reason: Mutex<String>,
    connected: AtomicBool,
    reconnects: Mutex<BTreeMap<String, u64>>,
}

impl Status {
    /// Not ready yet, for `reason`.
    pub fn new(reason: &str) -> Status {
        Status {
            ready: AtomicBool::new(false),
            not_ready_reason: Mutex::new(reason.to_owned()),
            connected: AtomicBool::new(false),
            reconnects: Mutex::new(BTreeMap::new()),
        }
    }

    /// Marks the service ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the service not ready, for `reason`.
    pub fn set_not_ready(&self, reason: &str) {
        *self.not_ready_reason.lock() = reason.to_owned();
        self.ready.store(false, Ordering::Release);
    }

    /// `Ok(())` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(self.not_ready_reason.lock().clone())
        }
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
}
