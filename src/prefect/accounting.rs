//! What the REST client costs, counted: every request attempt to Prefect's API (baseline,
//! run listings, verification, repair pages, reconciliation; each retry too) by route
//! template and outcome, and its duration.
//!
//! The families are `prometheus` library metrics defined with the exporter's others (in
//! `expose`), handed to the client at start-up as the library's types ([`ApiStats::new`]), so
//! this layer never reaches the exposition. Labels stay a small closed set whatever the
//! server sends: `endpoint` is one of [`ENDPOINTS`] (or `other`), without the base URL, query
//! or page token; `code` is the HTTP status as a number, or one of the words of [`Code`] for
//! an attempt that ended without one.

use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec};

/// Every route the client calls, as templates (`endpoint` label values).
pub const ENDPOINTS: [&str; 7] = [
    "/flow_runs/count",
    "/flow_runs/filter",
    "/task_runs/count",
    "/task_runs/filter",
    "/events/count-by/event",
    "/events/filter",
    "/events/filter/next",
];

/// The `endpoint` label of a path that is none of [`ENDPOINTS`].
pub const OTHER: &str = "other";

/// The route template of `path` (the part after the API's base URL): the path without its
/// query (a page token) or fragment, if it is one of [`ENDPOINTS`]; [`OTHER`] otherwise, so
/// no value the server or a caller makes up can add a series.
pub fn endpoint(path: &str) -> &'static str {
    let route = path.split(['?', '#']).next().unwrap_or(path);
    let route = route.strip_suffix('/').unwrap_or(route);
    ENDPOINTS
        .iter()
        .find(|known| **known == route)
        .copied()
        .unwrap_or(OTHER)
}

/// How one request attempt ended: the `code` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The server answered with this HTTP status (whatever happened to the body after an
    /// error status: only its start is read).
    Status(u16),
    /// The whole-request timeout (30 s) passed before the answer was complete.
    Timeout,
    /// No connection: refused, DNS, TLS, or the 10 s connect timeout.
    Connect,
    /// A successful answer whose body could not be read to its end, or was over the
    /// endpoint's size limit (the rest is never read).
    Body,
    /// Any other failure before a status arrived (the request could not be sent).
    Error,
    /// Shutdown ended the attempt.
    Cancelled,
}

impl Code {
    /// The label value.
    pub fn label(self) -> String {
        match self {
            Code::Status(status) => status.to_string(),
            Code::Timeout => "timeout".to_owned(),
            Code::Connect => "connect".to_owned(),
            Code::Body => "body".to_owned(),
            Code::Error => "error".to_owned(),
            Code::Cancelled => "cancelled".to_owned(),
        }
    }

    /// The code of a request that failed before a status arrived.
    pub fn of_send_error(error: &reqwest::Error) -> Code {
        if error.is_connect() {
            Code::Connect
        } else if error.is_timeout() {
            Code::Timeout
        } else {
            Code::Error
        }
    }

    /// The code of a successful answer whose body could not be read.
    pub fn of_body_error(error: &reqwest::Error) -> Code {
        if error.is_timeout() {
            Code::Timeout
        } else {
            Code::Body
        }
    }
}

/// The client's handles on its families.
#[derive(Clone, Debug)]
pub struct ApiStats {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl ApiStats {
    /// Handles on `requests` (labels `endpoint`, `code`) and `duration` (label `endpoint`).
    pub fn new(requests: IntCounterVec, duration: HistogramVec) -> ApiStats {
        ApiStats { requests, duration }
    }

    /// Counts one attempt at `endpoint` that ended with `code` after `took`.
    pub fn record(&self, endpoint: &'static str, code: Code, took: Duration) {
        self.requests
            .with_label_values(&[endpoint, code.label().as_str()])
            .inc();
        self.duration
            .with_label_values(&[endpoint])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, Opts};

    #[test]
    fn paths_map_to_their_route_template_without_query_or_token() {
        let cases = [
            ("/flow_runs/count", "/flow_runs/count"),
            ("/flow_runs/filter", "/flow_runs/filter"),
            ("/task_runs/count", "/task_runs/count"),
            ("/task_runs/filter", "/task_runs/filter"),
            ("/events/count-by/event", "/events/count-by/event"),
            ("/events/filter", "/events/filter"),
            (
                "/events/filter/next?page-token=abc.DEF-123",
                "/events/filter/next",
            ),
            (
                "/events/filter/next?page-token=other#frag",
                "/events/filter/next",
            ),
            ("/flow_runs/count/", "/flow_runs/count"),
        ];
        for (path, template) in cases {
            assert_eq!(endpoint(path), template, "{path}");
        }
    }

    #[test]
    fn unknown_paths_and_ids_fold_into_other() {
        for path in [
            "",
            "/",
            "/flow_runs/6e0f1f8a-0d55-4a56-9a3f-9a0c7a2d1c11",
            "/flow_runs/count/extra",
            "/events/filter/next/secret-token",
            "/health",
            "flow_runs/count",
            "/FLOW_RUNS/COUNT",
        ] {
            assert_eq!(endpoint(path), OTHER, "{path:?}");
        }
    }

    #[test]
    fn codes_are_a_number_or_one_fixed_word() {
        assert_eq!(Code::Status(503).label(), "503");
        assert_eq!(Code::Status(200).label(), "200");
        let words: Vec<String> = [
            Code::Timeout,
            Code::Connect,
            Code::Body,
            Code::Error,
            Code::Cancelled,
        ]
        .iter()
        .map(|c| c.label())
        .collect();
        assert_eq!(words, ["timeout", "connect", "body", "error", "cancelled"]);
    }

    #[test]
    fn each_attempt_is_one_request_and_one_observation() {
        let requests =
            IntCounterVec::new(Opts::new("r_total", "r"), &["endpoint", "code"]).unwrap();
        let duration =
            HistogramVec::new(HistogramOpts::new("d_seconds", "d"), &["endpoint"]).unwrap();
        let stats = ApiStats::new(requests.clone(), duration.clone());
        let ep = endpoint("/events/filter");
        stats.record(ep, Code::Status(503), Duration::from_millis(3));
        stats.record(ep, Code::Status(503), Duration::from_millis(3));
        stats.record(ep, Code::Status(200), Duration::from_millis(40));
        assert_eq!(requests.with_label_values(&[ep, "503"]).get(), 2);
        assert_eq!(requests.with_label_values(&[ep, "200"]).get(), 1);
        let h = duration.with_label_values(&[ep]);
        assert_eq!(h.get_sample_count(), 3);
        assert!((h.get_sample_sum() - 0.046).abs() < 1e-9);
    }
}
