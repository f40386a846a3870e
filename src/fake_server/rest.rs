//! The fake server's REST endpoints, computed from the events released so far: health, run
//! counts and lists by state, stored-event counts by name, and stored events page by page.

use std::collections::BTreeMap;

use base64::Engine;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::filter::EventFilter;
use super::timeline::{RunInfo, Store};
use crate::model::event::RunKind;
use crate::model::time::format_rfc3339;
use crate::web::response::{error, json, HttpResponse};

/// The server version reported to clients' version checks (the recordings' server).
const RECORDED_VERSION: &str = "3.9.1";

/// Events per `/events/filter` page (Prefect's maximum).
const EVENT_PAGE: usize = 50;

/// A run-state filter: `{"state": {"type": {"any_": [...]}, "name": {"any_"|"not_any_": [...]}}}`.
struct RunFilter {
    types: Option<Vec<String>>,
    names: Option<Vec<String>>,
    not_names: Option<Vec<String>>,
}

fn list(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    })
}

impl RunFilter {
    fn parse(body: &Value, key: &str) -> RunFilter {
        let state = &body[key]["state"];
        RunFilter {
            types: list(&state["type"]["any_"]),
            names: list(&state["name"]["any_"]),
            not_names: list(&state["name"]["not_any_"]),
        }
    }

    fn keeps(&self, run: &RunInfo) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == run.state_type.as_str()))
            && self
                .names
                .as_ref()
                .is_none_or(|n| n.contains(&run.state_name))
            && self
                .not_names
                .as_ref()
                .is_none_or(|n| !n.contains(&run.state_name))
    }
}

fn runs(store: &Store, kind: RunKind, body: &Value) -> Vec<RunInfo> {
    let key = match kind {
        RunKind::FlowRun => "flow_runs",
        RunKind::TaskRun => "task_runs",
    };
    let filter = RunFilter::parse(body, key);
    let mut runs: Vec<RunInfo> = store
        .runs()
        .into_iter()
        .filter(|r| r.kind == kind && filter.keeps(r))
        .collect();
    runs.sort_by(|a, b| (a.state_at, &a.id).cmp(&(b.state_at, &b.id)));
    runs
}

fn run_json(run: &RunInfo) -> Value {
    json!({
        "id": run.id,
        "name": run.name,
        "state_type": run.state_type.as_str(),
        "state_name": run.state_name,
        "state": {
            "type": run.state_type.as_str(),
            "name": run.state_name,
            "timestamp": format_rfc3339(run.state_at),
        },
    })
}

fn matching(
    store: &Store,
    filter: &EventFilter,
) -> Vec<std::sync::Arc<super::timeline::StoredEvent>> {
    let until = filter.until_or_now();
    store.query(|e| filter.matches(&e.candidate(), until))
}

fn page(store: &Store, base_url: &str, raw_filter: &Value, offset: usize) -> HttpResponse {
    let filter = match EventFilter::parse(raw_filter) {
        Ok(filter) => filter,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    let events = matching(store, &filter);
    let end = (offset + EVENT_PAGE).min(events.len());
    let next_page = (end < events.len()).then(|| {
        let token = json!({ "filter": raw_filter, "offset": end }).to_string();
        format!(
            "{base_url}/api/events/filter/next?page-token={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
        )
    });
    let items: Vec<Value> = events[offset.min(end)..end]
        .iter()
        .filter_map(|e| serde_json::from_str(e.json()).ok())
        .collect();
    json(
        StatusCode::OK,
        &json!({ "events": items, "total": events.len(), "next_page": next_page }),
    )
}

/// Answers a REST request; `None` for paths it does not serve.
pub fn handle(
    store: &Store,
    base_url: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Option<HttpResponse> {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    let response = match (method, path) {
        ("GET", "/api/health") => json(StatusCode::OK, &true),
        ("GET", "/api/admin/version") => json(StatusCode::OK, &RECORDED_VERSION),
        ("POST", "/api/flow_runs/count") => {
            json(StatusCode::OK, &runs(store, RunKind::FlowRun, &body).len())
        }
        ("POST", "/api/task_runs/count") => {
            json(StatusCode::OK, &runs(store, RunKind::TaskRun, &body).len())
        }
        ("POST", "/api/flow_runs/filter") | ("POST", "/api/task_runs/filter") => {
            let kind = if path.starts_with("/api/flow") {
                RunKind::FlowRun
            } else {
                RunKind::TaskRun
            };
            let offset = body["offset"].as_u64().unwrap_or(0) as usize;
            let limit = body["limit"].as_u64().unwrap_or(200).min(200) as usize;
            let all = runs(store, kind, &body);
            let items: Vec<Value> = all.iter().skip(offset).take(limit).map(run_json).collect();
            json(StatusCode::OK, &items)
        }
        ("POST", "/api/events/count-by/event") => {
            let filter = match EventFilter::parse(&body["filter"]) {
                Ok(filter) => filter,
                Err(e) => return Some(error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())),
            };
            let mut counts: BTreeMap<String, (u64, i64, i64)> = BTreeMap::new();
            for event in matching(store, &filter) {
                let entry =
                    counts
                        .entry(event.name.clone())
                        .or_insert((0, event.occurred, event.occurred));
                entry.0 += 1;
                entry.1 = entry.1.min(event.occurred);
                entry.2 = entry.2.max(event.occurred);
            }
            let items: Vec<Value> = counts
                .into_iter()
                .map(|(name, (count, first, last))| {
                    json!({
                        "value": name, "label": name, "count": count,
                        "start_time": format_rfc3339(first), "end_time": format_rfc3339(last),
                    })
                })
                .collect();
            json(StatusCode::OK, &items)
        }
        ("POST", "/api/events/filter") => page(store, base_url, &body["filter"], 0),
        ("GET", "/api/events/filter/next") => {
            let token = query
                .split('&')
                .find_map(|p| p.strip_prefix("page-token="))
                .unwrap_or("");
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            match decoded {
                Some(token) => page(
                    store,
                    base_url,
                    &token["filter"],
                    token["offset"].as_u64().unwrap_or(0) as usize,
                ),
                None => error(StatusCode::FORBIDDEN, "invalid page token"),
            }
        }
        _ => return None,
    };
    Some(response)
}
