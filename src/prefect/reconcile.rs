//! The REST baseline and its periodic reconciliation.
//!
//! The server's counts by state type and name replace the exporter's totals, but only at a
//! quiet moment: no state event seen for `settle` before the counts are taken, while they are
//! taken, and for `settle` after. A moment that is not quiet is retried shortly after, so a
//! correction never races an event in flight. Each correction is counted by state type.
//!
//! Counts are summed saturating (the API caps each at [`crate::prefect::api::MAX_RUN_COUNT`]),
//! and every wait ends at shutdown.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::event::{RunKind, StateKey, StateType};
use crate::model::time::{micros, now_micros};
use crate::prefect::api::{ApiError, NameFilter, PrefectApi};
use crate::state::Shared;

/// Names looked up per state type when discovering names the exporter has never seen.
const DISCOVER_LIMIT: usize = 1000;
/// Discovery rounds per state type: each lists up to [`DISCOVER_LIMIT`] runs for names not
/// counted yet (a server that keeps naming new states cannot keep the loop going).
const DISCOVER_ROUNDS: u32 = 3;
/// Retry delay when the moment was not quiet.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// Counts every run of `kind` by state type and name. `known` lists names to count per type
/// (the default names are always counted); names of runs not covered are discovered.
pub async fn server_counts(
    api: &PrefectApi,
    kind: RunKind,
    known: &HashMap<StateType, BTreeSet<String>>,
) -> Result<HashMap<StateKey, i64>, ApiError> {
    let mut out = HashMap::new();
    for ty in StateType::ALL {
        let total = api.count_runs(kind, ty, NameFilter::Any).await?;
        if total == 0 {
            continue;
        }
        let mut names: BTreeSet<String> = known.get(&ty).cloned().unwrap_or_default();
        names.insert(ty.default_name().to_owned());
        let mut counted: i64 = 0;
        let mut queried: Vec<String> = Vec::new();
        let mut pending: Vec<String> = names.into_iter().collect();
        let mut rounds = 0;
        while let Some(name) = pending.pop() {
            queried.push(name.clone());
            let n = api
                .count_runs(kind, ty, NameFilter::OneOf(std::slice::from_ref(&name)))
                .await?;
            if n > 0 {
                out.insert(
                    StateKey {
                        ty,
                        name: Arc::from(name.as_str()),
                    },
                    n,
                );
                counted = counted.saturating_add(n);
            }
            if pending.is_empty() && counted < total && rounds < DISCOVER_ROUNDS {
                rounds += 1;
                // Flow-run filters can exclude names; task-run filters cannot (HTTP 422), so
                // task runs are sampled without a name filter.
                let filter = match kind {
                    RunKind::FlowRun => NameFilter::NoneOf(&queried),
                    RunKind::TaskRun => NameFilter::Any,
                };
                let others = api.list_runs(kind, &[ty], filter, DISCOVER_LIMIT).await?;
                let found: BTreeSet<String> = others
                    .into_iter()
                    .map(|r| r.state_name)
                    .filter(|n| !queried.contains(n))
                    .collect();
                pending.extend(found);
            }
        }
        if counted != total {
            // Runs changed state between the queries (the attempt is then discarded as busy),
            // or names beyond the discovery limit.
            debug!(kind = kind.as_str(), state_type = ty.as_str(), total, counted, "State names do not add up to the type's count; the rest is attributed to the default name.");
            let rest = out
                .entry(StateKey {
                    ty,
                    name: Arc::from(ty.default_name()),
                })
                .or_insert(0);
            *rest = rest.saturating_add(total.saturating_sub(counted));
        }
    }
    Ok(out)
}

/// Takes the server's counts and applies them when the stream is quiet.
pub struct Reconciler {
    api: PrefectApi,
    shared: Arc<Shared>,
    settle: Duration,
}

/// What one attempt did.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The totals now equal the server's counts.
    Applied,
    /// State events were in flight; nothing changed.
    Busy,
}

impl Reconciler {
    /// A reconciler that needs `settle` of quiet around its queries.
    pub fn new(api: PrefectApi, shared: Arc<Shared>, settle: Duration) -> Reconciler {
        Reconciler {
            api,
            shared,
            settle,
        }
    }

    /// One attempt. With `require_quiet` false (the first baseline, before the stream starts)
    /// the counts are applied whatever happens.
    pub async fn attempt(&self, require_quiet: bool) -> Result<Attempt, ApiError> {
        let started = now_micros();
        let (seen, last) = self.shared.state_event_marker();
        if require_quiet && last.is_some_and(|t| t > started - micros(self.settle)) {
            return Ok(Attempt::Busy);
        }
        let mut all = Vec::new();
        for kind in self.shared.kinds() {
            let known = self.shared.known_state_names(kind);
            all.push((kind, server_counts(&self.api, kind, &known).await?));
        }
        if require_quiet {
            self.api.pause(self.settle).await?;
            if self.shared.state_event_marker().0 != seen {
                return Ok(Attempt::Busy);
            }
        }
        let marker = require_quiet.then_some(seen);
        let Some(reconciled) = self.shared.reconcile(all, started, marker) else {
            return Ok(Attempt::Busy);
        };
        let moved: u64 = reconciled.drift.iter().map(|d| d.unsigned_abs()).sum();
        if moved > 0 && reconciled.reconciliations > 1 {
            info!(runs_moved = moved, "Reconciliation corrected the totals.");
        } else {
            debug!("Totals match the server.");
        }
        Ok(Attempt::Applied)
    }

    /// Reconciles every `interval`, and whenever `trigger` is notified, until `shutdown`.
    pub async fn run(&self, interval: Duration, trigger: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
                () = trigger.notified() => {}
            }
            let deadline = tokio::time::Instant::now() + interval.max(Duration::from_secs(10));
            loop {
                match self.attempt(true).await {
                    Ok(Attempt::Applied) => break,
                    Ok(Attempt::Busy) => {
                        debug!("State events in flight; reconciliation postponed.")
                    }
                    Err(ApiError::Cancelled) => return,
                    Err(e) => warn!(error = %e, "Reconciliation failed; will retry."),
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(BUSY_RETRY) => {}
                }
            }
        }
    }
}
