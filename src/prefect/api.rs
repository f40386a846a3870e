//! Prefect's REST API: run counts for the baseline and reconciliation, non-terminal runs,
//! stored-event counts for verification, and stored events for repair.
//!
//! One `reqwest` client with timeouts; 429/502/503/504 and transport errors are retried with
//! backoff, honouring `Retry-After`. Credentials go only into the `Authorization` header,
//! marked sensitive; no error message contains them.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;
use tracing::{debug, warn};

use crate::model::event::{RunKind, StateType};
use crate::model::known_run::KnownRun;
use crate::model::secret::Credentials;
use crate::model::time::{format_rfc3339, parse_rfc3339, Micros};

/// Requests are retried this many times on retryable answers.
const RETRIES: u32 = 5;
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size of `/flow_runs/filter` (the server's maximum).
const RUN_PAGE: usize = 200;
/// Page size of `/events/filter` (the server's maximum).
const EVENT_PAGE: usize = 50;

/// A failed REST call.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The server refused the credentials.
    #[error("{path}: authentication failed (HTTP {status}); check --api-key / --auth-string")]
    Auth {
        /// The endpoint.
        path: String,
        /// 401 or 403.
        status: u16,
    },
    /// The server answered with an error status.
    #[error("{path}: HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        path: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The request did not complete.
    #[error("{path}: {message}")]
    Transport {
        /// The endpoint.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The answer was not what Prefect sends.
    #[error("{path}: unexpected response: {message}")]
    Decode {
        /// The endpoint.
        path: String,
        /// What was wrong with it.
        message: String,
    },
}

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
    base: String,
    client: reqwest::Client,
}

impl PrefectApi {
    /// A client for `api_url` (e.g. `http://127.0.0.1:4200/api`).
    pub fn new(api_url: &str, credentials: &Credentials) -> Result<PrefectApi, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = credentials.authorization() {
            let mut value = HeaderValue::from_str(&value).map_err(|_| ApiError::Decode {
                path: "credentials".to_owned(),
                message: "the credentials contain characters not allowed in a header".to_owned(),
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Transport {
                path: api_url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(PrefectApi {
            base: api_url.trim_end_matches('/').to_owned(),
            client,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let request = match body {
                Some(body) => self.client.post(&url).json(body),
                None => self.client.get(&url),
            };
            let (retry_after, error) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        let bytes = response.bytes().await.map_err(|e| ApiError::Transport {
                            path: path.to_owned(),
                            message: e.to_string(),
                        })?;
                        return serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
                            path: path.to_owned(),
                            message: e.to_string(),
                        });
                    }
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(ApiError::Auth {
                            path: path.to_owned(),
                            status: status.as_u16(),
                        });
                    }
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 30.0)));
                    let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    let text = response.text().await.unwrap_or_default();
                    let error = ApiError::Status {
                        path: path.to_owned(),
                        status: status.as_u16(),
                        body: text.chars().take(200).collect(),
                    };
                    if !retryable {
                        return Err(error);
                    }
                    (retry_after, error)
                }
                Err(e) => (
                    None,
                    ApiError::Transport {
                        path: path.to_owned(),
                        message: e.without_url().to_string(),
                    },
                ),
            };
            attempt += 1;
            if attempt > RETRIES {
                return Err(error);
            }
            let delay = retry_after.unwrap_or(Duration::from_millis(250 << attempt.min(6)));
            debug!(error = %error, attempt, delay_ms = delay.as_millis() as u64, "Retrying a REST call.");
            tokio::time::sleep(delay).await;
        }
    }

    /// Runs of `kind` in state type `ty`, optionally only those whose state name is (or is
    /// not) in a list.
    pub async fn count_runs(
        &self,
        kind: RunKind,
        ty: StateType,
        names: NameFilter<'_>,
    ) -> Result<i64, ApiError> {
        let (path, key) = runs_endpoint(kind, "count");
        let body = json!({ key: { "state": state_filter(&[ty], names) } });
        self.send::<i64>(&path, Some(&body)).await
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
            let page: Vec<RawRun> = self.send(&path, Some(&body)).await?;
            let got = page.len();
            out.extend(page.into_iter().filter_map(|run| {
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
        let counts: Vec<EventCount> = self.send("/events/count-by/event", Some(&body)).await?;
        let mut out = HashMap::new();
        for c in counts {
            *out.entry(c.value).or_default() += c.count;
        }
        Ok(out)
    }

    /// Every stored event with `occurred` in `[since, until]` and a name starting with one of
    /// `prefixes`, page by page (`POST /events/filter`, then `/events/filter/next`); each
    /// event is handed to `sink` as JSON bytes. Returns how many were fetched.
    pub async fn fetch_events(
        &self,
        since: Micros,
        until: Micros,
        prefixes: &[&str],
        mut sink: impl FnMut(Vec<u8>),
    ) -> Result<u64, ApiError> {
        let body = json!({ "filter": event_filter(since, until, prefixes), "limit": EVENT_PAGE });
        let mut page: EventPage = self.send("/events/filter", Some(&body)).await?;
        let mut fetched = 0u64;
        loop {
            for event in page.events {
                fetched += 1;
                sink(serde_json::to_vec(&event).unwrap_or_default());
            }
            let Some(next) = page.next_page else { break };
            let Some(token) = next
                .split_once("page-token=")
                .map(|(_, t)| t.split('&').next().unwrap_or(t))
            else {
                warn!("A next-page link without a page token; stopping.");
                break;
            };
            page = self
                .send(&format!("/events/filter/next?page-token={token}"), None)
                .await?;
        }
        Ok(fetched)
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
