//! Verify and repair: the exporter checks itself against the events the server stored.
//!
//! Every interval, the closed window of `occurred` since the last one (older than `settle`)
//! is compared, event name by event name, with `POST /events/count-by/event`. A window where
//! the server holds more of some event is re-fetched from `/events/filter` and fed through the
//! normal pipeline (dedup discards what was already there); one where it holds only fewer
//! (its persister is behind) is re-fetched only on its last retry and its rechecks, since
//! until then a re-fetch could add nothing. Each window is checked once more after
//! `second_pass_after`, for late client-side events. In the healthy case this costs one small
//! query per interval.
//!
//! Repair is bounded: each page of stored events is applied before the next is fetched (so
//! nothing accumulates), at most [`WINDOW_PAGES`] pages are fetched for one window and
//! [`INTERVAL_PAGES`] in one round, and a window cut off at its limit pauses re-fetching with
//! backoff. Each cut is counted (`prefect_exporter_repair_truncated_total`); the first of a
//! series is logged. A server whose pages never end costs a bounded number of requests and no
//! memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::model::time::{format_rfc3339, now_micros, Micros, SECOND};
use crate::prefect::api::{ApiError, PrefectApi};
use crate::state::counts::Verdict;
use crate::state::status::Status;
use crate::state::Shared;

/// One page of events re-fetched for a window, to be applied by the pipeline, which answers
/// with how many of them were new.
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
    /// Still different, and the re-fetch stopped at a page limit before the server's last
    /// page; the window is checked again.
    Truncated(PageLimit),
}

/// Which bound stopped a re-fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageLimit {
    /// [`WINDOW_PAGES`] pages for one window.
    Window,
    /// [`INTERVAL_PAGES`] pages in one verification round (one `--verify-interval`).
    Interval,
}

impl PageLimit {
    /// The `limit` label of `prefect_exporter_repair_truncated_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            PageLimit::Window => "window",
            PageLimit::Interval => "interval",
        }
    }
}

/// Most pages of stored events (50 events each) fetched for one window in one check.
pub const WINDOW_PAGES: usize = 400;
/// Most pages fetched in one verification round (every `--verify-interval`), all windows
/// together.
pub const INTERVAL_PAGES: usize = 1_000;
/// Longest pause of re-fetching after a window was cut off at [`WINDOW_PAGES`].
const MAX_FETCH_PAUSE: Duration = Duration::from_secs(300);

/// Pages a round may still fetch.
#[derive(Debug)]
pub struct PageBudget {
    left: usize,
}

impl PageBudget {
    /// A budget of `pages`.
    pub fn new(pages: usize) -> PageBudget {
        PageBudget { left: pages }
    }

    fn exhausted(&self) -> bool {
        self.left == 0
    }
}

/// Pauses re-fetching after windows are cut off, doubling from one interval up to
/// [`MAX_FETCH_PAUSE`]; a window repaired or matched whole ends it.
#[derive(Debug, Default)]
struct FetchPause {
    length: Option<Duration>,
    until: Option<Instant>,
}

impl FetchPause {
    /// Starts or lengthens the pause; whether it is the first of a series.
    fn extend(&mut self, interval: Duration) -> bool {
        let first = self.length.is_none();
        let length = self
            .length
            .map_or(interval, |l| (l * 2).min(MAX_FETCH_PAUSE))
            .min(MAX_FETCH_PAUSE);
        self.length = Some(length);
        self.until = Some(Instant::now() + length);
        first
    }

    fn clear(&mut self) {
        *self = FetchPause::default();
    }

    fn active(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }
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
    status: Arc<Status>,
    repairs: mpsc::Sender<RepairBatch>,
    config: VerifyConfig,
}

impl Verifier {
    /// A verifier sending repairs to `repairs` and counting cut-off re-fetches in `status`.
    pub fn new(
        api: PrefectApi,
        shared: Arc<Shared>,
        status: Arc<Status>,
        repairs: mpsc::Sender<RepairBatch>,
        config: VerifyConfig,
    ) -> Verifier {
        Verifier {
            api,
            shared,
            status,
            repairs,
            config,
        }
    }

    fn held(&self, from: Micros, to: Micros) -> (HashMap<String, u64>, Vec<&'static str>) {
        self.shared.ledger_window(from, to)
    }

    /// Checks `[from, to)` (whole seconds) and repairs it if needed, fetching at most
    /// [`WINDOW_PAGES`] pages and what is left of `budget`. Events the repair applied for the
    /// first time are counted as repaired whatever the result.
    ///
    /// A window where the server holds only fewer events of each name than the exporter is
    /// re-fetched only when `thorough`: while the server's persister may still be behind, a
    /// re-fetch could add nothing; later, extra events the server never stored could hide a
    /// missing one of the same name, so the last retry and the rechecks fetch anyway.
    pub async fn check(
        &self,
        from: Micros,
        to: Micros,
        budget: &mut PageBudget,
        thorough: bool,
    ) -> WindowResult {
        let (held, prefixes) = self.held(from, to);
        let stored = match self.api.count_events_by_name(from, to - 1, &prefixes).await {
            Ok(mut stored) => {
                stored.retain(|_, n| *n > 0);
                stored
            }
            Err(ApiError::Cancelled) => return WindowResult::Differs,
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
        if missing == 0 && !thorough {
            debug!(from = %format_rfc3339(from), to = %format_rfc3339(to), "The server holds fewer events than the exporter for a window; checking it again later.");
            return WindowResult::Differs;
        }
        debug!(from = %format_rfc3339(from), to = %format_rfc3339(to), missing, "A window differs from the server; re-fetching it.");
        let mut pages = self.api.event_pages(from, to - 1, &prefixes);
        let mut new = 0;
        let mut fetched = 0;
        let mut cut = None;
        let mut held = held;
        while held != stored {
            if fetched == WINDOW_PAGES {
                cut = Some(PageLimit::Window);
                break;
            }
            if budget.exhausted() {
                cut = Some(PageLimit::Interval);
                break;
            }
            let events = match pages.next_page().await {
                Ok(Some(events)) => events,
                Ok(None) => break,
                Err(e) => {
                    if !matches!(e, ApiError::Cancelled) {
                        warn!(error = %e, "Could not re-fetch a window's events.");
                    }
                    self.shared.count_repaired(new);
                    return WindowResult::Differs;
                }
            };
            fetched += 1;
            budget.left -= 1;
            let Some(applied) = self.apply(events).await else {
                self.shared.count_repaired(new);
                return WindowResult::Differs;
            };
            new += applied;
            held = self.held(from, to).0;
        }
        self.shared.count_repaired(new);
        if held == stored {
            return WindowResult::Repaired;
        }
        if let Some(limit) = cut {
            debug!(from = %format_rfc3339(from), to = %format_rfc3339(to), pages = fetched, limit = limit.as_str(), "A window's re-fetch stopped at its page limit.");
            return WindowResult::Truncated(limit);
        }
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

    /// Has the pipeline apply one page; how many of its events were new (`None`: the
    /// pipeline has stopped).
    async fn apply(&self, events: Vec<Vec<u8>>) -> Option<u64> {
        let (done, answer) = oneshot::channel();
        self.repairs.send(RepairBatch { events, done }).await.ok()?;
        answer.await.ok()
    }

    fn record(&self, result: &WindowResult) {
        self.shared.count_window(match result {
            WindowResult::Match => Verdict::Match,
            WindowResult::Repaired => Verdict::Repaired,
            WindowResult::Differs | WindowResult::Truncated(_) => Verdict::Failed,
        });
    }

    /// Counts a cut-off re-fetch; one cut at [`WINDOW_PAGES`] pauses re-fetching (the first
    /// of a series is logged).
    fn cut_off(&self, limit: PageLimit, pause: &mut FetchPause) {
        self.status.count_repair_truncated(limit.as_str());
        match limit {
            PageLimit::Window if pause.extend(self.config.interval) => {
                warn!(pages = WINDOW_PAGES, "Re-fetching a window's events stopped at the page limit: the server keeps offering more pages. Re-fetching pauses, with backoff; each cut is counted.");
            }
            PageLimit::Window => {}
            PageLimit::Interval => {
                debug!(pages = INTERVAL_PAGES, "This round's re-fetches reached the page limit; the rest waits for the next round.");
            }
        }
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
        let mut pause = FetchPause::default();
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
            let mut budget = PageBudget::new(INTERVAL_PAGES);
            let mut any_repair = false;
            for _ in 0..pending.len() {
                if shutdown.is_cancelled() {
                    return;
                }
                if pause.active() || budget.exhausted() {
                    break;
                }
                let Some((from, to, attempts)) = pending.pop_front() else {
                    break;
                };
                let last = attempts + 1 >= RETRIES;
                let result = self.check(from, to, &mut budget, last).await;
                any_repair |= result == WindowResult::Repaired;
                match result {
                    WindowResult::Truncated(limit) => self.cut_off(limit, &mut pause),
                    WindowResult::Match | WindowResult::Repaired => pause.clear(),
                    WindowResult::Differs => {}
                }
                let again = matches!(result, WindowResult::Differs | WindowResult::Truncated(_));
                if again && attempts + 1 < RETRIES {
                    pending.push_back((from, to, attempts + 1));
                    continue;
                }
                if again {
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
            for (at, from, to, pass) in due {
                if shutdown.is_cancelled() {
                    return;
                }
                if pause.active() || budget.exhausted() {
                    later.push((at, from, to, pass));
                    continue;
                }
                let result = self.check(from, to, &mut budget, true).await;
                any_repair |= result == WindowResult::Repaired;
                if let WindowResult::Truncated(limit) = result {
                    self.cut_off(limit, &mut pause);
                }
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
