//! Prefect's REST API: run counts for the baseline and reconciliation, non-terminal runs,
//! stored-event counts for verification, and stored events for repair.
//!
//! Each endpoint has its own response-size limit (a count is a bare integer, an events page
//! at most a few MiB) and the bounds of [`super::transport`]: timeouts, retries, the shutdown
//! token. Answers are validated: a negative run count is refused, a huge one saturates at
//! [`MAX_RUN_COUNT`], so no sum of counts can overflow. Stored events come a page at a time
//! ([`EventPages`]), so the caller decides how many pages to fetch and applies each before the
//! next.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::model::event::{RunKind, StateType};
use crate::model::known_run::KnownRun;
use crate::model::secret::Credentials;
use crate::model::time::{format_rfc3339, parse_rfc3339, Micros};
use crate::prefect::accounting::ApiStats;
pub use crate::prefect::transport::ApiError;
use crate::prefect::transport::Transport;

/// Page size of `/flow_runs/filter` (the server's maximum).
const RUN_PAGE: usize = 200;
/// Page size of `/events/filter` (the server's maximum).
const EVENT_PAGE: usize = 50;
/// Most bytes of a run count (a bare integer).
pub const COUNT_BODY_MAX: usize = 4 * 1024;
/// Most bytes of stored-event counts by name (one entry per event name).
const EVENT_COUNTS_BODY_MAX: usize = 1024 * 1024;
/// Most bytes of one page of stored events (50 events).
pub const EVENT_PAGE_BODY_MAX: usize = 8 * 1024 * 1024;
/// Most bytes of one page of runs (200 runs, with their parameters).
const RUN_PAGE_BODY_MAX: usize = 16 * 1024 * 1024;
/// Largest run count taken from the server: larger ones saturate here. No server holds this
/// many runs (2^53 - 1, the largest integer a Prometheus sample holds exactly), and with it
/// no sum of counts and event deltas can overflow an `i64`.
pub const MAX_RUN_COUNT: i64 = (1 << 53) - 1;

#[derive(Deserialize)]
struct RawRun {
    id: String,
    name: Option<String>,
    state: Option<RawState>,
    work_queue_name: Option<String>,
    work_pool_name: Option<String>,
}

#[derive(Deserialize)]
struct RawState {
    #[serde(rename = "type")]
    ty: String,
    name: Option<String>,
    timestamp: Option<String>,
}

#[derive(Deserialize)]
struct EventCount {
    value: String,
    count: u64,
}

#[derive(Deserialize)]
struct EventPage {
    events: Vec<Value>,
    next_page: Option<String>,
}

/// A client of one Prefect API (`PREFECT_API_URL`).
#[derive(Clone, Debug)]
pub struct PrefectApi {
    transport: Transport,
}

impl PrefectApi {
    /// A client for `api_url` (e.g. `http://127.0.0.1:4200/api`) whose calls end with
    /// [`ApiError::Cancelled`] once `shutdown` is cancelled.
    pub fn new(
        api_url: &str,
        credentials: &Credentials,
        shutdown: CancellationToken,
    ) -> Result<PrefectApi, ApiError> {
        Ok(PrefectApi {
            transport: Transport::new(api_url, credentials, shutdown)?,
        })
    }

    /// The same client, counting every request attempt in `stats` (before it is cloned for
    /// the tasks that use it).
    pub fn with_stats(self, stats: ApiStats) -> PrefectApi {
        PrefectApi {
            transport: self.transport.with_stats(stats),
        }
    }

    /// Waits `duration`, or fails with [`ApiError::Cancelled`] at shutdown.
    pub async fn pause(&self, duration: std::time::Duration) -> Result<(), ApiError> {
        self.transport.pause(duration).await
    }

    /// Runs of `kind` in state type `ty`, optionally only those whose state name is (or is
    /// not) in a list. Negative counts are refused; counts over [`MAX_RUN_COUNT`] saturate.
    pub async fn count_runs(
        &self,
        kind: RunKind,
        ty: StateType,
        names: NameFilter<'_>,
    ) -> Result<i64, ApiError> {
        let (path, key) = runs_endpoint(kind, "count");
        let body = json!({ key: { "state": state_filter(&[ty], names) } });
        let count: i64 = self
            .transport
            .call(&path, Some(&body), COUNT_BODY_MAX)
            .await?;
        if count < 0 {
            return Err(ApiError::Decode {
                url: format!("{}{path}", self.transport.shown_url()),
                message: format!("a negative run count ({count})"),
            });
        }
        if count > MAX_RUN_COUNT {
            debug!(count, "A run count over 2^53 - 1; saturating.");
        }
        Ok(count.min(MAX_RUN_COUNT))
    }

    /// Runs of `kind` in any of `types` (and name filter), oldest state first, up to `max`.
    pub async fn list_runs(
        &self,
        kind: RunKind,
        types: &[StateType],
        names: NameFilter<'_>,
        max: usize,
    ) -> Result<Vec<KnownRun>, ApiError> {
        let (path, key) = runs_endpoint(kind, "filter");
        let mut out = Vec::new();
        let mut offset = 0;
        while out.len() < max {
            let limit = RUN_PAGE.min(max - out.len());
            let body = json!({
                key: { "state": state_filter(types, names) },
                "limit": limit,
                "offset": offset,
            });
            let page: Vec<RawRun> = self
                .transport
                .call(&path, Some(&body), RUN_PAGE_BODY_MAX)
                .await?;
            let got = page.len();
            out.extend(page.into_iter().take(limit).filter_map(|run| {
                let state = run.state?;
                let state_type = StateType::parse(&state.ty)?;
                Some(KnownRun {
                    id: run.id,
                    name: run.name,
                    state_name: state
                        .name
                        .unwrap_or_else(|| state_type.default_name().to_owned()),
                    state_type,
                    state_timestamp: state.timestamp.as_deref().and_then(parse_rfc3339),
                    work_queue: run.work_queue_name,
                    work_pool: run.work_pool_name,
                })
            }));
            if got < limit {
                break;
            }
            offset += got;
        }
        Ok(out)
    }

    /// Stored events per event name with `occurred` in `[since, until]` and a name starting
    /// with one of `prefixes` (`POST /events/count-by/event`).
    pub async fn count_events_by_name(
        &self,
        since: Micros,
        until: Micros,
        prefixes: &[&str],
    ) -> Result<HashMap<String, u64>, ApiError> {
        let body = json!({
            "filter": event_filter(since, until, prefixes),
            "time_unit": "day",
            "time_interval": 1.0,
        });
        let counts: Vec<EventCount> = self
            .transport
            .call("/events/count-by/event", Some(&body), EVENT_COUNTS_BODY_MAX)
            .await?;
        let mut out: HashMap<String, u64> = HashMap::new();
        for c in counts {
            let n = out.entry(c.value).or_default();
            *n = n.saturating_add(c.count);
        }
        Ok(out)
    }

    /// The stored events with `occurred` in `[since, until]` and a name starting with one of
    /// `prefixes`, to be read page by page (`POST /events/filter`, then
    /// `/events/filter/next`).
    pub fn event_pages<'a>(
        &'a self,
        since: Micros,
        until: Micros,
        prefixes: &[&str],
    ) -> EventPages<'a> {
        EventPages {
            api: self,
            next: Some(PageRequest::First(
                json!({ "filter": event_filter(since, until, prefixes), "limit": EVENT_PAGE }),
            )),
        }
    }
}

enum PageRequest {
    First(Value),
    Token(String),
}

/// Stored events, one page per [`EventPages::next_page`] call.
pub struct EventPages<'a> {
    api: &'a PrefectApi,
    next: Option<PageRequest>,
}

impl EventPages<'_> {
    /// The next page's events as JSON bytes, or `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>, ApiError> {
        let page: EventPage = match self.next.take() {
            None => return Ok(None),
            Some(PageRequest::First(body)) => {
                self.api
                    .transport
                    .call("/events/filter", Some(&body), EVENT_PAGE_BODY_MAX)
                    .await?
            }
            Some(PageRequest::Token(token)) => {
                let path = format!("/events/filter/next?page-token={token}");
                self.api
                    .transport
                    .call(&path, None, EVENT_PAGE_BODY_MAX)
                    .await?
            }
        };
        if let Some(next) = page.next_page {
            match next
                .split_once("page-token=")
                .map(|(_, t)| t.split('&').next().unwrap_or(t))
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && b != b'#'))
            {
                Some(token) => self.next = Some(PageRequest::Token(token.to_owned())),
                None => warn!("A next-page link without a usable page token; stopping there."),
            }
        }
        Ok(Some(
            page.events
                .iter()
                .map(|event| serde_json::to_vec(event).unwrap_or_default())
                .collect(),
        ))
    }
}

/// A filter on state names.
#[derive(Clone, Copy, Debug)]
pub enum NameFilter<'a> {
    /// Any name.
    Any,
    /// Only these names.
    OneOf(&'a [String]),
    /// None of these names.
    NoneOf(&'a [String]),
}

fn runs_endpoint(kind: RunKind, action: &str) -> (String, &'static str) {
    match kind {
        RunKind::FlowRun => (format!("/flow_runs/{action}"), "flow_runs"),
        RunKind::TaskRun => (format!("/task_runs/{action}"), "task_runs"),
    }
}

fn state_filter(types: &[StateType], names: NameFilter<'_>) -> Value {
    let types: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    let mut filter = json!({ "type": { "any_": types } });
    match names {
        NameFilter::Any => {}
        NameFilter::OneOf(names) => filter["name"] = json!({ "any_": names }),
        NameFilter::NoneOf(names) => filter["name"] = json!({ "not_any_": names }),
    }
    filter
}

fn event_filter(since: Micros, until: Micros, prefixes: &[&str]) -> Value {
    json!({
        "occurred": { "since": format_rfc3339(since), "until": format_rfc3339(until) },
        "event": { "prefix": prefixes },
    })
}
