//! Every metric family of the state and the exporter's own condition: name, help text, type
//! and labels, in one place. The state's families ([`KindDefs`]) are definitions the
//! direct encoder writes from; the exporter's own ([`ExporterMetrics`]) are `prometheus`
//! library metrics in the exporter's registry, the HTTP server's ([`HttpMetrics`], updated
//! by `web::metrics`) among them. (The `prometheus` crate's process collector adds
//! `process_*`.)

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use crate::expose::exporter_metrics::HistogramSnapshot;
use crate::expose::exposition::Kind;
use crate::model::event::RunKind;

/// One metric family's definition.
pub struct Def {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) kind: Kind,
    pub(crate) labels: Vec<String>,
}

impl Def {
    /// A family `name` of `kind` with `help` text and these label names, in order.
    pub fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: Kind,
        labels: &[&str],
    ) -> Def {
        Def {
            name: name.into(),
            help: help.into(),
            kind,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn with_labels(mut self, extra: &[String]) -> Def {
        self.labels.extend(extra.iter().cloned());
        self
    }
}

/// The family definitions of one run kind.
pub(crate) struct KindDefs {
    pub(crate) runs: Def,
    pub(crate) entries: Def,
    pub(crate) transitions: Def,
    pub(crate) self_transitions: Def,
    pub(crate) active: Def,
    pub(crate) oldest_age: Def,
    pub(crate) durations: Def,
}

impl KindDefs {
    /// Every definition, in exposition order.
    pub(crate) fn all(&self) -> [&Def; 7] {
        [
            &self.runs,
            &self.entries,
            &self.transitions,
            &self.self_transitions,
            &self.active,
            &self.oldest_age,
            &self.durations,
        ]
    }

    pub(crate) fn new(kind: RunKind, group_by: &[String]) -> KindDefs {
        let stem = kind.metric_stem();
        let what = match kind {
            RunKind::FlowRun => "flow runs",
            RunKind::TaskRun => "task runs",
        };
        let state = ["state_type", "state_name"];
        KindDefs {
            runs: Def::new(
                format!("prefect_{stem}s"),
                format!("Number of {what} currently in each state (all runs the server knows)."),
                Kind::Gauge,
                &state,
            ),
            entries: Def::new(
                format!("prefect_{stem}_state_entries_total"),
                format!("Entries of {what} into a state (self-transitions excluded)."),
                Kind::Counter,
                &state,
            )
            .with_labels(group_by),
            transitions: Def::new(
                format!("prefect_{stem}_transitions_total"),
                format!(
                    "State transitions of {what} by type (from_state_type is empty for new runs)."
                ),
                Kind::Counter,
                &["from_state_type", "to_state_type"],
            ),
            self_transitions: Def::new(
                format!("prefect_{stem}_self_transitions_total"),
                format!("State events of {what} whose state equals the previous one."),
                Kind::Counter,
                &state,
            ),
            active: Def::new(
                format!("prefect_{stem}s_active"),
                format!("Tracked {what} in a non-terminal state."),
                Kind::Gauge,
                &state,
            )
            .with_labels(group_by),
            oldest_age: Def::new(
                format!("prefect_{stem}_oldest_state_age_seconds"),
                format!("Age of the oldest tracked {what} in each non-terminal state."),
                Kind::Gauge,
                &state,
            ),
            durations: Def::new(
                format!("prefect_{stem}_state_duration_seconds"),
                format!("Time {what} spent in a state, observed when they leave it."),
                Kind::Histogram,
                &state,
            ),
        }
    }
}

/// The build this binary came from: `version`, `revision` (git commit, or `unknown`) and
/// `rustc_version` (set by `build.rs`), the labels of `prefect_exporter_build_info`.
pub(crate) const BUILD_INFO: [(&str, &str); 3] = [
    ("version", env!("CARGO_PKG_VERSION")),
    ("revision", env!("PREFECT_EXPORTER_REVISION")),
    ("rustc_version", env!("PREFECT_EXPORTER_RUSTC_VERSION")),
];

/// Name of the scrape-duration family (written last in every scrape).
pub(crate) const SCRAPE_DURATION: &str = "prefect_exporter_scrape_duration_seconds";

/// The exporter's own families: `prometheus` library metrics registered in the exporter's
/// registry. Those about the stream and the state are set from the shared state at each
/// scrape (`ExporterMetrics::refresh`, in `exporter_metrics`), so ingestion never touches
/// them; the build info is set once, the scrape duration by the scrape itself.
pub(crate) struct ExporterMetrics {
    pub(crate) received: IntCounterVec,
    pub(crate) duplicates: IntCounter,
    pub(crate) rejected: IntCounterVec,
    pub(crate) connected: IntGauge,
    pub(crate) reconnects: IntCounterVec,
    /// No sample until an event is applied.
    pub(crate) last_event: GaugeVec,
    pub(crate) delay: HistogramSnapshot,
    pub(crate) chain_gaps: IntCounter,
    pub(crate) tracked: IntGauge,
    pub(crate) dedup_ids: IntGauge,
    pub(crate) dedup_evicted: IntCounter,
    pub(crate) retired: IntCounter,
    pub(crate) evicted: IntCounter,
    pub(crate) folded: IntCounterVec,
    pub(crate) windows: IntCounterVec,
    pub(crate) repaired: IntCounter,
    pub(crate) repair_truncated: IntCounterVec,
    pub(crate) deficit: IntGaugeVec,
    pub(crate) corrections: IntCounterVec,
    pub(crate) drift: IntGaugeVec,
    pub(crate) reconciliations: IntCounter,
    pub(crate) backfill_gaps: IntCounter,
    /// The state-file families have no sample without `--state-file`.
    pub(crate) state_writes: IntCounterVec,
    pub(crate) state_bytes: IntGaugeVec,
    pub(crate) state_write_seconds: GaugeVec,
    pub(crate) state_pause_seconds: GaugeVec,
    pub(crate) build_info: IntGaugeVec,
    pub(crate) scrape_duration: Gauge,
}

/// The HTTP server's families: open, shed and refused connections, refused requests, stream
/// clients. Library
/// metrics the server updates itself (a few atomic operations per connection, none per
/// event); registered with the exporter's others when the API server starts (an offline
/// `replay --output prometheus` has no HTTP server to count).
#[derive(Clone, Debug)]
pub(crate) struct HttpMetrics {
    pub(crate) open: IntGauge,
    pub(crate) refused: IntCounter,
    pub(crate) shed: IntCounter,
    /// Clients of `/api/v1/stream` connected now.
    pub(crate) stream_clients: IntGauge,
    /// Stream clients closed with `overflow`.
    pub(crate) stream_dropped: IntCounter,
    /// By `reason` (`unauthorized`, `body_too_large`, `body_timeout`).
    pub(crate) rejected: IntCounterVec,
}

impl HttpMetrics {
    /// The HTTP families at zero, not registered anywhere.
    pub(crate) fn new() -> prometheus::Result<HttpMetrics> {
        Ok(HttpMetrics {
            open: IntGauge::new(
                "prefect_exporter_http_connections_open",
                "HTTP connections open now.",
            )?,
            refused: IntCounter::new(
                "prefect_exporter_http_connections_refused_total",
                "HTTP connections closed at once because --web-max-connections were open and all had sent a request.",
            )?,
            shed: IntCounter::new(
                "prefect_exporter_http_connections_shed_total",
                "HTTP connections that had sent no request, closed at --web-max-connections to admit a newer one.",
            )?,
            stream_clients: IntGauge::new(
                "prefect_exporter_http_stream_clients",
                "Clients connected to /api/v1/stream now.",
            )?,
            stream_dropped: IntCounter::new(
                "prefect_exporter_http_stream_clients_dropped_total",
                "Stream clients closed with an overflow event because they read too slowly.",
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_http_requests_rejected_total",
                    "HTTP requests refused before routing, by reason (unauthorized, body_too_large, body_timeout).",
                ),
                &["reason"],
            )?,
        })
    }

    /// The same families, registered in `r`.
    pub(crate) fn registered(r: &Registry) -> prometheus::Result<HttpMetrics> {
        let http = HttpMetrics::new()?;
        r.register(Box::new(http.open.clone()))?;
        r.register(Box::new(http.refused.clone()))?;
        r.register(Box::new(http.shed.clone()))?;
        r.register(Box::new(http.stream_clients.clone()))?;
        r.register(Box::new(http.stream_dropped.clone()))?;
        r.register(Box::new(http.rejected.clone()))?;
        Ok(http)
    }
}

/// Bucket bounds of `prefect_exporter_api_request_duration_seconds`: from a quick count on
/// loopback (5 ms) to the whole-request timeout (30 s).
pub(crate) const API_DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The REST client's families: every request attempt the exporter makes to Prefect's API, by
/// route template and outcome. Library metrics the client updates itself (one counter and
/// one histogram observation per request, never per event); registered when the API server
/// starts, handed to the client by `run`.
#[derive(Clone, Debug)]
pub(crate) struct ApiMetrics {
    /// By `endpoint` (route template) and `code` (HTTP status, or a word for a failure
    /// without one).
    pub(crate) requests: IntCounterVec,
    /// By `endpoint`: from sending the request to the end of reading its answer.
    pub(crate) duration: HistogramVec,
}

impl ApiMetrics {
    /// The REST families at zero, registered in `r`.
    pub(crate) fn registered(r: &Registry) -> prometheus::Result<ApiMetrics> {
        Ok(ApiMetrics {
            requests: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_api_requests_total",
                    "REST requests to the Prefect API (every attempt, retries included), by route template and HTTP status code (or timeout, connect, body, error, cancelled).",
                ),
                &["endpoint", "code"],
            ))?,
            duration: registered(r, HistogramVec::new(
                HistogramOpts::new(
                    "prefect_exporter_api_request_duration_seconds",
                    "Duration of REST requests to the Prefect API (every attempt), by route template.",
                )
                .buckets(API_DURATION_BUCKETS.to_vec()),
                &["endpoint"],
            ))?,
        })
    }
}

impl ExporterMetrics {
    /// Defines every family of the exporter's own and registers it in `registry`; the build
    /// info is set to 1. Fails only when a name is already registered there.
    pub(crate) fn register(r: &Registry) -> prometheus::Result<ExporterMetrics> {
        let build_labels = BUILD_INFO.map(|(label, _)| label);
        let metrics = ExporterMetrics {
            received: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_events_received_total",
                    "Frames decoded as events, by kind (state or other); duplicates included.",
                ),
                &["kind"],
            ))?,
            duplicates: registered(r, IntCounter::new(
                "prefect_exporter_events_duplicate_total",
                "Events dropped because their id was already seen.",
            ))?,
            rejected: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_events_rejected_total",
                    "Frames rejected as unusable, by reason; each is skipped.",
                ),
                &["reason"],
            ))?,
            connected: registered(r, IntGauge::new(
                "prefect_exporter_stream_connected",
                "1 while the events stream is subscribed.",
            ))?,
            reconnects: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_stream_reconnects_total",
                    "Reconnections of the events stream, by reason.",
                ),
                &["reason"],
            ))?,
            last_event: registered(r, GaugeVec::new(
                Opts::new(
                    "prefect_exporter_last_event_timestamp_seconds",
                    "Newest occurred timestamp applied (Unix seconds).",
                ),
                &[],
            ))?,
            delay: registered(r, HistogramSnapshot::new(
                "prefect_exporter_event_delay_seconds",
                "Wall-clock time between an event's occurred timestamp and applying it.",
            ))?,
            chain_gaps: registered(r, IntCounter::new(
                "prefect_exporter_chain_gaps_total",
                "State events of tracked runs whose follows names an event never seen (a drop).",
            ))?,
            tracked: registered(r, IntGauge::new(
                "prefect_exporter_tracked_resources",
                "Runs held in memory.",
            ))?,
            dedup_ids: registered(r, IntGauge::new(
                "prefect_exporter_dedup_ids",
                "Event ids held by the deduplication window.",
            ))?,
            dedup_evicted: registered(r, IntCounter::new(
                "prefect_exporter_dedup_evicted_total",
                "Event ids dropped from a full deduplication window before aging out.",
            ))?,
            retired: registered(r, IntCounter::new(
                "prefect_exporter_runs_retired_total",
                "Terminal runs dropped from memory after the retention period (their counts stay).",
            ))?,
            evicted: registered(r, IntCounter::new(
                "prefect_exporter_runs_evicted_total",
                "Runs dropped from memory because --max-tracked-runs were held; their contribution to the totals stays.",
            ))?,
            folded: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_series_folded_total",
                    "Events whose state name or label set was folded into __other__ by the series cap.",
                ),
                &["what"],
            ))?,
            windows: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_verify_windows_total",
                    "Closed windows of events compared with the server's stored events, by result.",
                ),
                &["result"],
            ))?,
            repaired: registered(r, IntCounter::new(
                "prefect_exporter_events_repaired_total",
                "Events recovered by repair that the live stream had dropped.",
            ))?,
            repair_truncated: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_repair_truncated_total",
                    "Re-fetches of a window's stored events stopped at a page limit (per window, or per verification interval) before the server's last page.",
                ),
                &["limit"],
            ))?,
            deficit: registered(r, IntGaugeVec::new(
                Opts::new(
                    "prefect_exporter_runs_deficit",
                    "Runs by which a state's total is below zero (a lost or late event); the exposed totals hold at zero until verification or reconciliation settles it.",
                ),
                &["kind", "state_type"],
            ))?,
            corrections: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_reconcile_corrections_total",
                    "Runs moved by reconciliation with the server's REST counts, by state type.",
                ),
                &["state_type"],
            ))?,
            drift: registered(r, IntGaugeVec::new(
                Opts::new(
                    "prefect_exporter_reconcile_last_drift",
                    "Server count minus exporter count at the last reconciliation, by state type.",
                ),
                &["state_type"],
            ))?,
            reconciliations: registered(r, IntCounter::new(
                "prefect_exporter_reconciliations_total",
                "Reconciliations applied (the first is the start-up baseline).",
            ))?,
            backfill_gaps: registered(r, IntCounter::new(
                "prefect_exporter_backfill_gaps_total",
                "Stream outages longer than the server's 15-minute backfill, or Redis stream entries lost before they were read.",
            ))?,
            state_writes: registered(r, IntCounterVec::new(
                Opts::new(
                    "prefect_exporter_state_file_writes_total",
                    "State-file writes, by result (ok or error); only with --state-file.",
                ),
                &["result"],
            ))?,
            state_bytes: registered(r, IntGaugeVec::new(
                Opts::new(
                    "prefect_exporter_state_file_bytes",
                    "Size of the last state file written.",
                ),
                &[],
            ))?,
            state_write_seconds: registered(r, GaugeVec::new(
                Opts::new(
                    "prefect_exporter_state_file_write_seconds",
                    "Duration of the last state-file write (on the writer thread, not the ingestion path).",
                ),
                &[],
            ))?,
            state_pause_seconds: registered(r, GaugeVec::new(
                Opts::new(
                    "prefect_exporter_state_file_pause_seconds",
                    "How long ingestion paused to hand the last snapshot to the writer.",
                ),
                &[],
            ))?,
            build_info: registered(r, IntGaugeVec::new(
                Opts::new(
                    "prefect_exporter_build_info",
                    "A metric with a constant '1' value labeled by the version, git revision and rustc version this exporter was built from.",
                ),
                &build_labels,
            ))?,
            scrape_duration: registered(r, Gauge::new(
                SCRAPE_DURATION,
                "Time this scrape took to read the state and write every other family, in seconds.",
            ))?,
        };
        metrics
            .build_info
            .with_label_values(&BUILD_INFO.map(|(_, value)| value))
            .set(1);
        Ok(metrics)
    }
}

/// Registers a library metric in `registry` (a clone: clones share their values) and
/// returns it.
fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> prometheus::Result<M> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}
