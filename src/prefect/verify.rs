//! Verify and repair: the exporter checks itself against the events the server stored.
//!
//! Every interval, the closed window of `occurred` since the last one (older than `settle`)
//! is compared, event name by event name, with `POST /events/count-by/event`. A window that
//! differs is re-fetched from `/events/filter` and fed through the normal pipeline (dedup
//! discards what was already there). Each window is checked once more after
//! `second_pass_after`, for late client-side events. In the healthy case this costs one small
//! query per interval.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::model::time::{format_rfc3339, now_micros, Micros, SECOND};
use crate::prefect::api::PrefectApi;
use crate::state::counts::Verdict;
use crate::state::Shared;

/// Events re-fetched for a window, to be applied by the pipeline, which answers with how
/// many of them were new.
pub struct RepairBatch {
    /// Raw event JSON.
    pub events: Vec<Vec<u8>>,
    /// Receives the number of events that were not seen before.
    pub done: oneshot::Sender<u64>,
}

/// Outcome of checking one window.
#[derive(Debug, PartialEq, Eq)]
pub enum WindowResult {
    /// Held events equal stored events.
    Match,
    /// Equal after re-fetching the window.
    Repaired,
    /// Still different (often: the server has not persisted all its events yet), or the
    /// check itself failed; the window is checked again.
    Differs,
}

/// How many times a differing window is checked again (at each interval) before it counts
/// as failed; it is still checked once more in the second pass.
const RETRIES: u32 = 20;

/// When a window that had events is checked again after its first check (then once more
/// after the configured second pass): Prefect's persister can lag the stream by tens of
/// seconds under load. Empty windows (a quiet system) skip these, so the healthy case costs
/// one small query per interval.
const EARLY_RECHECKS: [Duration; 4] = [
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(40),
    Duration::from_secs(90),
];

/// Settings of verification.
#[derive(Clone, Debug)]
pub struct VerifyConfig {
    /// How often to check.
    pub interval: Duration,
    /// How old a window must be before it is checked.
    pub settle: Micros,
    /// When each window is checked again.
    pub second_pass_after: Duration,
}

/// Checks windows and asks the pipeline to apply repairs.
pub struct Verifier {
    api: PrefectApi,
    shared: Arc<Shared>,
    repairs: mpsc::Sender<RepairBatch>,
    config: VerifyConfig,
}

impl Verifier {
    /// A verifier sending repairs to `repairs`.
    pub fn new(
        api: PrefectApi,
        shared: Arc<Shared>,
        repairs: mpsc::Sender<RepairBatch>,
        config: VerifyConfig,
    ) -> Verifier {
        Verifier {
            api,
            shared,
            repairs,
            config,
        }
    }

    fn held(&self, from: Micros, to: Micros) -> (HashMap<String, u64>, Vec<&'static str>) {
        self.shared.ledger_window(from, to)
    }

    /// Checks `[from, to)` (whole seconds) and repairs it if needed. Events the repair
    /// applied for the first time are counted as repaired whatever the result.
    pub async fn check(&self, from: Micros, to: Micros) -> WindowResult {
        let (held, prefixes) = self.held(from, to);
        let stored = match self.api.count_events_by_name(from, to - 1, &prefixes).await {
            Ok(mut stored) => {
                stored.retain(|_, n| *n > 0);
                stored
            }
            Err(e) => {
                warn!(error = %e, "Could not count stored events for verification.");
                return WindowResult::Differs;
            }
        };
        if stored == held {
            return WindowResult::Match;
        }
        let missing: u64 = stored
            .iter()
            .map(|(k, n)| n.saturating_sub(held.get(k).copied().unwrap_or(0)))
            .sum();
        debug!(from = %format_rfc3339(from), to = %format_rfc3339(to), missing, "A window differs from the server; re-fetching it.");
        let mut events = Vec::new();
        if let Err(e) = self
            .api
            .fetch_events(from, to - 1, &prefixes, |e| events.push(e))
            .await
        {
            warn!(error = %e, "Could not re-fetch a window's events.");
            return WindowResult::Differs;
        }
        let (done, answer) = oneshot::channel();
        if self
            .repairs
            .send(RepairBatch { events, done })
            .await
            .is_err()
        {
            return WindowResult::Differs;
        }
        let new = answer.await.unwrap_or(0);
        self.shared.count_repaired(new);
        let (held, _) = self.held(from, to);
        if held == stored {
            WindowResult::Repaired
        } else {
            let differences: Vec<String> = stored
                .keys()
                .chain(held.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| stored.get(*k) != held.get(*k))
                .map(|k| {
                    format!(
                        "{k}: server {} held {}",
                        stored.get(k).copied().unwrap_or(0),
                        held.get(k).copied().unwrap_or(0)
                    )
                })
                .collect();
            debug!(from = %format_rfc3339(from), to = %format_rfc3339(to), repaired = new, differences = %differences.join(", "), "A window still differs from the server after repair; checking it again later.");
            WindowResult::Differs
        }
    }

    fn record(&self, result: &WindowResult) {
        self.shared.count_window(match result {
            WindowResult::Match => Verdict::Match,
            WindowResult::Repaired => Verdict::Repaired,
            WindowResult::Differs => Verdict::Failed,
        });
    }

    /// Verifies windows from `start` on, every interval, until `shutdown`; notifies
    /// `repaired` after a repair so the totals are reconciled promptly.
    ///
    /// Under load Prefect persists events tens of seconds behind the live stream, so a window
    /// can look right while both sides still miss the same events, or differ while the server
    /// catches up. So a differing window is checked again at each interval (up to
    /// [`RETRIES`] times) before it counts as failed, and every window is checked again
    /// [`EARLY_RECHECKS`] after its first check and once more after `second_pass_after`.
    pub async fn run(&self, start: Micros, repaired: Arc<Notify>, shutdown: CancellationToken) {
        let mut next_from = start.div_euclid(SECOND) * SECOND;
        let mut pending: VecDeque<(Micros, Micros, u32)> = VecDeque::new();
        let mut later: Vec<(Instant, Micros, Micros, usize)> = Vec::new();
        let mut recheck_after: Vec<Duration> = EARLY_RECHECKS.to_vec();
        recheck_after.push(self.config.second_pass_after);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
            let to = (now_micros() - self.config.settle).div_euclid(SECOND) * SECOND;
            if to > next_from {
                pending.push_back((next_from, to, 0));
                next_from = to;
            }
            let mut any_repair = false;
            for _ in 0..pending.len() {
                let Some((from, to, attempts)) = pending.pop_front() else {
                    break;
                };
                let result = self.check(from, to).await;
                any_repair |= result == WindowResult::Repaired;
                if result == WindowResult::Differs && attempts + 1 < RETRIES {
                    pending.push_back((from, to, attempts + 1));
                    continue;
                }
                if result == WindowResult::Differs {
                    warn!(from = %format_rfc3339(from), to = %format_rfc3339(to), "A window still differs from the server's stored events after repeated repairs.");
                }
                self.record(&result);
                let had_events = !self.held(from, to).0.is_empty();
                let pass = if had_events {
                    0
                } else {
                    recheck_after.len() - 1
                };
                later.push((Instant::now() + recheck_after[pass], from, to, pass));
            }
            let now = Instant::now();
            let (due, waiting): (Vec<_>, Vec<_>) = later.drain(..).partition(|(at, from, _, _)| {
                *at <= now && !pending.iter().any(|(f, _, _)| f == from)
            });
            later = waiting;
            for (_, from, to, pass) in due {
                let result = self.check(from, to).await;
                any_repair |= result == WindowResult::Repaired;
                self.record(&result);
                match recheck_after.get(pass + 1) {
                    Some(after) => later.push((Instant::now() + *after, from, to, pass + 1)),
                    None => self.shared.forget_verified(to),
                }
            }
            if any_repair {
                repaired.notify_one();
            }
        }
    }
}
