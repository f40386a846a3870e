//! Every metric the exporter exposes: name, help text, type and labels, in one place.
//!
//! The exporter owns its [`Registry`] (never the global one). Counts are not kept in
//! Prometheus types on the hot path: [`StateCollector`] copies the aggregates at scrape time
//! and builds the metric families from them, so ingestion pays nothing for metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::Registry;

use crate::decode::RejectReason;
use crate::event::{RunKind, StateKey, StateType};
use crate::histogram::Histogram as Hist;
use crate::labels::SeriesId;
use crate::state::{KindCounts, Shared};
use crate::status::Status;
use crate::timestamp::{as_seconds, now_micros, Micros};
use crate::web_limits::{HttpStats, Rejection};

/// A source of "now" for ages (injectable in tests).
pub type Clock = Arc<dyn Fn() -> Micros + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(now_micros)
}

/// One metric family's definition.
struct Def {
    name: String,
    help: String,
    ty: MetricType,
    labels: Vec<String>,
}

impl Def {
    fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        ty: MetricType,
        labels: &[&str],
    ) -> Def {
        Def {
            name: name.into(),
            help: help.into(),
            ty,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn with_labels(mut self, extra: &[String]) -> Def {
        self.labels.extend(extra.iter().cloned());
        self
    }
}

/// The family definitions of one run kind.
struct KindDefs {
    runs: Def,
    entries: Def,
    transitions: Def,
    self_transitions: Def,
    active: Def,
    oldest_age: Def,
    durations: Def,
}

impl KindDefs {
    fn new(kind: RunKind, group_by: &[String]) -> KindDefs {
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
                MetricType::GAUGE,
                &state,
            ),
            entries: Def::new(
                format!("prefect_{stem}_state_entries_total"),
                format!("Entries of {what} into a state (self-transitions excluded)."),
                MetricType::COUNTER,
                &state,
            )
            .with_labels(group_by),
            transitions: Def::new(
                format!("prefect_{stem}_transitions_total"),
                format!(
                    "State transitions of {what} by type (from_state_type is empty for new runs)."
                ),
                MetricType::COUNTER,
                &["from_state_type", "to_state_type"],
            ),
            self_transitions: Def::new(
                format!("prefect_{stem}_self_transitions_total"),
                format!("State events of {what} whose state equals the previous one."),
                MetricType::COUNTER,
                &state,
            ),
            active: Def::new(
                format!("prefect_{stem}s_active"),
                format!("Tracked {what} in a non-terminal state."),
                MetricType::GAUGE,
                &state,
            )
            .with_labels(group_by),
            oldest_age: Def::new(
                format!("prefect_{stem}_oldest_state_age_seconds"),
                format!("Age of the oldest tracked {what} in each non-terminal state."),
                MetricType::GAUGE,
                &state,
            ),
            durations: Def::new(
                format!("prefect_{stem}_state_duration_seconds"),
                format!("Time {what} spent in a state, observed when they leave it."),
                MetricType::HISTOGRAM,
                &state,
            ),
        }
    }

    fn all(&self) -> [&Def; 7] {
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
}

/// The exporter's own family definitions.
struct ExporterDefs {
    received: Def,
    duplicates: Def,
    rejected: Def,
    connected: Def,
    reconnects: Def,
    last_event: Def,
    delay: Def,
    chain_gaps: Def,
    tracked: Def,
    dedup_ids: Def,
    dedup_evicted: Def,
    retired: Def,
    folded: Def,
    windows: Def,
    repaired: Def,
    corrections: Def,
    drift: Def,
    reconciliations: Def,
    backfill_gaps: Def,
    state_writes: Def,
    state_bytes: Def,
    state_write_seconds: Def,
    state_pause_seconds: Def,
}

impl ExporterDefs {
    fn new() -> ExporterDefs {
        use MetricType::{COUNTER, GAUGE, HISTOGRAM};
        ExporterDefs {
            received: Def::new(
                "prefect_exporter_events_received_total",
                "Frames decoded as events, by kind (state or other); duplicates included.",
                COUNTER,
                &["kind"],
            ),
            duplicates: Def::new(
                "prefect_exporter_events_duplicate_total",
                "Events dropped because their id was already seen.",
                COUNTER,
                &[],
            ),
            rejected: Def::new(
                "prefect_exporter_events_rejected_total",
                "Frames rejected as unusable, by reason; each is skipped.",
                COUNTER,
                &["reason"],
            ),
            connected: Def::new(
                "prefect_exporter_stream_connected",
                "1 while the events stream is subscribed.",
                GAUGE,
                &[],
            ),
            reconnects: Def::new(
                "prefect_exporter_stream_reconnects_total",
                "Reconnections of the events stream, by reason.",
                COUNTER,
                &["reason"],
            ),
            last_event: Def::new(
                "prefect_exporter_last_event_timestamp_seconds",
                "Newest occurred timestamp applied (Unix seconds).",
                GAUGE,
                &[],
            ),
            delay: Def::new(
                "prefect_exporter_event_delay_seconds",
                "Wall-clock time between an event's occurred timestamp and applying it.",
                HISTOGRAM,
                &[],
            ),
            chain_gaps: Def::new(
                "prefect_exporter_chain_gaps_total",
                "State events of tracked runs whose follows names an event never seen (a drop).",
                COUNTER,
                &[],
            ),
            tracked: Def::new(
                "prefect_exporter_tracked_resources",
                "Runs held in memory.",
                GAUGE,
                &[],
            ),
            dedup_ids: Def::new(
                "prefect_exporter_dedup_ids",
                "Event ids held by the deduplication window.",
                GAUGE,
                &[],
            ),
            dedup_evicted: Def::new(
                "prefect_exporter_dedup_evicted_total",
                "Event ids dropped from a full deduplication window before aging out.",
                COUNTER,
                &[],
            ),
            retired: Def::new(
                "prefect_exporter_runs_retired_total",
                "Terminal runs dropped from memory after the retention period (their counts stay).",
                COUNTER,
                &[],
            ),
            folded: Def::new(
                "prefect_exporter_series_folded_total",
                "Events whose state name or label set was folded into __other__ by the series cap.",
                COUNTER,
                &["what"],
            ),
            windows: Def::new(
                "prefect_exporter_verify_windows_total",
                "Closed windows of events compared with the server's stored events, by result.",
                COUNTER,
                &["result"],
            ),
            repaired: Def::new(
                "prefect_exporter_events_repaired_total",
                "Events recovered by repair that the live stream had dropped.",
                COUNTER,
                &[],
            ),
            corrections: Def::new(
                "prefect_exporter_reconcile_corrections_total",
                "Runs moved by reconciliation with the server's REST counts, by state type.",
                COUNTER,
                &["state_type"],
            ),
            drift: Def::new(
                "prefect_exporter_reconcile_last_drift",
                "Server count minus exporter count at the last reconciliation, by state type.",
                GAUGE,
                &["state_type"],
            ),
            reconciliations: Def::new(
                "prefect_exporter_reconciliations_total",
                "Reconciliations applied (the first is the start-up baseline).",
                COUNTER,
                &[],
            ),
            backfill_gaps: Def::new(
                "prefect_exporter_backfill_gaps_total",
                "Stream outages longer than the server's 15-minute backfill.",
                COUNTER,
                &[],
            ),
            state_writes: Def::new(
                "prefect_exporter_state_file_writes_total",
                "State-file writes, by result (ok or error); only with --state-file.",
                COUNTER,
                &["result"],
            ),
            state_bytes: Def::new(
                "prefect_exporter_state_file_bytes",
                "Size of the last state file written.",
                GAUGE,
                &[],
            ),
            state_write_seconds: Def::new(
                "prefect_exporter_state_file_write_seconds",
                "Duration of the last state-file write (on the writer thread, not the ingestion path).",
                GAUGE,
                &[],
            ),
            state_pause_seconds: Def::new(
                "prefect_exporter_state_file_pause_seconds",
                "How long ingestion paused to hand the last snapshot to the writer.",
                GAUGE,
                &[],
            ),
        }
    }

    fn all(&self) -> [&Def; 23] {
        [
            &self.received,
            &self.duplicates,
            &self.rejected,
            &self.connected,
            &self.reconnects,
            &self.last_event,
            &self.delay,
            &self.chain_gaps,
            &self.tracked,
            &self.dedup_ids,
            &self.dedup_evicted,
            &self.retired,
            &self.folded,
            &self.windows,
            &self.repaired,
            &self.corrections,
            &self.drift,
            &self.reconciliations,
            &self.backfill_gaps,
            &self.state_writes,
            &self.state_bytes,
            &self.state_write_seconds,
            &self.state_pause_seconds,
        ]
    }
}

/// Builds every family from the shared state at scrape time.
pub struct StateCollector {
    shared: Arc<Shared>,
    status: Arc<Status>,
    clock: Clock,
    kinds: [KindDefs; 2],
    exporter: ExporterDefs,
    descs: Vec<Desc>,
}

impl StateCollector {
    /// A collector over `shared`, with ages measured by `clock`.
    pub fn new(
        shared: Arc<Shared>,
        status: Arc<Status>,
        clock: Clock,
        group_by: &[String],
    ) -> StateCollector {
        let kinds = [
            KindDefs::new(RunKind::FlowRun, group_by),
            KindDefs::new(RunKind::TaskRun, group_by),
        ];
        let exporter = ExporterDefs::new();
        let descs = kinds
            .iter()
            .flat_map(KindDefs::all)
            .chain(exporter.all())
            .filter_map(|d| {
                Desc::new(
                    d.name.clone(),
                    d.help.clone(),
                    d.labels.clone(),
                    HashMap::new(),
                )
                .ok()
            })
            .collect();
        StateCollector {
            shared,
            status,
            clock,
            kinds,
            exporter,
            descs,
        }
    }

    fn kind_families(
        &self,
        kind: RunKind,
        counts: &KindCounts,
        series: &dyn Fn(SeriesId) -> Vec<String>,
        out: &mut Vec<MetricFamily>,
    ) {
        let defs = &self.kinds[kind.index()];
        let state_labels = |s: &StateKey| vec![s.ty.as_str().to_owned(), s.name.to_string()];

        let mut current: BTreeMap<&StateKey, i64> =
            counts.current.iter().map(|(k, v)| (k, *v)).collect();
        let defaults: Vec<StateKey> = StateType::ALL
            .iter()
            .map(|t| StateKey {
                ty: *t,
                name: Arc::from(t.default_name()),
            })
            .collect();
        for key in &defaults {
            current.entry(key).or_insert(0);
        }
        out.push(family(
            &defs.runs,
            current
                .into_iter()
                .map(|(k, v)| (state_labels(k), gauge(v as f64))),
        ));

        out.push(family(
            &defs.entries,
            counts.entries.iter().map(|((k, s), v)| {
                let mut labels = state_labels(k);
                labels.extend(series(*s));
                (labels, counter(*v as f64))
            }),
        ));

        let mut transitions = Vec::new();
        for (from_index, row) in counts.transitions.iter().enumerate() {
            let from = StateType::ALL.get(from_index).map_or("", |t| t.as_str());
            for (to_index, &n) in row.iter().enumerate() {
                if n > 0 {
                    transitions.push((
                        vec![
                            from.to_owned(),
                            StateType::ALL[to_index].as_str().to_owned(),
                        ],
                        counter(n as f64),
                    ));
                }
            }
        }
        out.push(family(&defs.transitions, transitions));

        out.push(family(
            &defs.self_transitions,
            counts
                .self_transitions
                .iter()
                .map(|(k, v)| (state_labels(k), counter(*v as f64))),
        ));

        out.push(family(
            &defs.active,
            counts.active.iter().map(|((k, s), v)| {
                let mut labels = state_labels(k);
                labels.extend(series(*s));
                (labels, gauge(*v as f64))
            }),
        ));

        let now = (self.clock)();
        let mut oldest: HashMap<StateKey, Micros> = HashMap::new();
        for record in self.shared.table(kind).runs.iter() {
            if record.state.ty.is_terminal() {
                continue;
            }
            let since = oldest.entry(record.state.clone()).or_insert(record.since);
            *since = (*since).min(record.since);
        }
        out.push(family(
            &defs.oldest_age,
            oldest
                .iter()
                .map(|(k, since)| (state_labels(k), gauge(as_seconds((now - since).max(0))))),
        ));

        out.push(family(
            &defs.durations,
            counts
                .durations
                .iter()
                .map(|(k, h)| (state_labels(k), histogram(h))),
        ));
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (kinds, events, checks, series_values, dims) = {
            let counts = self.shared.counts.lock();
            let kinds: Vec<(RunKind, KindCounts)> = self
                .shared
                .kinds()
                .map(|k| (k, counts.kinds[k.index()].clone()))
                .collect();
            let series_values: Vec<Vec<String>> = (0..counts.series.len())
                .map(|i| {
                    counts
                        .series
                        .values(SeriesId(i as u32))
                        .iter()
                        .map(|v| v.to_string())
                        .collect()
                })
                .collect();
            (
                kinds,
                counts.events.clone(),
                counts.checks.clone(),
                series_values,
                counts.series.dims().len(),
            )
        };
        let series = |id: SeriesId| -> Vec<String> {
            series_values
                .get(id.0 as usize)
                .cloned()
                .unwrap_or_else(|| vec![String::new(); dims])
        };
        let mut out = Vec::new();
        for (kind, counts) in &kinds {
            self.kind_families(*kind, counts, &series, &mut out);
        }

        let e = &self.exporter;
        out.push(family(
            &e.received,
            [
                (vec!["state".to_owned()], counter(events.state as f64)),
                (vec!["other".to_owned()], counter(events.other as f64)),
            ],
        ));
        out.push(family(
            &e.duplicates,
            [(vec![], counter(events.duplicates as f64))],
        ));
        out.push(family(
            &e.rejected,
            RejectReason::ALL.iter().map(|r| {
                (
                    vec![r.as_str().to_owned()],
                    counter(events.rejected[r.index()] as f64),
                )
            }),
        ));
        out.push(family(
            &e.connected,
            [(
                vec![],
                gauge(if self.status.connected() { 1.0 } else { 0.0 }),
            )],
        ));
        out.push(family(
            &e.reconnects,
            self.status
                .reconnects_by_reason()
                .into_iter()
                .map(|(r, n)| (vec![r], counter(n as f64))),
        ));
        if let Some(last) = events.last_occurred {
            out.push(family(&e.last_event, [(vec![], gauge(as_seconds(last)))]));
        }
        out.push(family(&e.delay, [(vec![], histogram(&events.delay))]));
        out.push(family(
            &e.chain_gaps,
            [(vec![], counter(events.chain_gaps as f64))],
        ));
        let tracked: usize = self
            .shared
            .kinds()
            .map(|k| self.shared.table(k).runs.len())
            .sum();
        out.push(family(&e.tracked, [(vec![], gauge(tracked as f64))]));
        out.push(family(
            &e.dedup_ids,
            [(vec![], gauge(events.dedup_ids as f64))],
        ));
        out.push(family(
            &e.dedup_evicted,
            [(vec![], counter(events.dedup_evicted as f64))],
        ));
        out.push(family(
            &e.retired,
            [(vec![], counter(events.runs_retired as f64))],
        ));
        out.push(family(
            &e.folded,
            [
                (
                    vec!["state_name".to_owned()],
                    counter(events.folded_state_names as f64),
                ),
                (
                    vec!["label_set".to_owned()],
                    counter(events.folded_label_sets as f64),
                ),
            ],
        ));
        out.push(family(
            &e.windows,
            [
                (
                    vec!["match".to_owned()],
                    counter(checks.windows_match as f64),
                ),
                (
                    vec!["repaired".to_owned()],
                    counter(checks.windows_repaired as f64),
                ),
                (
                    vec!["failed".to_owned()],
                    counter(checks.windows_failed as f64),
                ),
            ],
        ));
        out.push(family(
            &e.repaired,
            [(vec![], counter(checks.events_repaired as f64))],
        ));
        let by_type = |values: [f64; 9], ty: fn(f64) -> Value| {
            StateType::ALL
                .iter()
                .map(move |t| (vec![t.as_str().to_owned()], ty(values[t.index()])))
                .collect::<Vec<_>>()
        };
        out.push(family(
            &e.corrections,
            by_type(checks.corrections.map(|v| v as f64), counter),
        ));
        out.push(family(
            &e.drift,
            by_type(checks.last_drift.map(|v| v as f64), gauge),
        ));
        out.push(family(
            &e.reconciliations,
            [(vec![], counter(checks.reconciliations as f64))],
        ));
        out.push(family(
            &e.backfill_gaps,
            [(vec![], counter(checks.backfill_gaps as f64))],
        ));
        let persist = self.shared.persist.lock().clone();
        if let Some(p) = persist {
            out.push(family(
                &e.state_writes,
                [
                    (vec!["ok".to_owned()], counter(p.writes_ok as f64)),
                    (vec!["error".to_owned()], counter(p.writes_failed as f64)),
                ],
            ));
            out.push(family(&e.state_bytes, [(vec![], gauge(p.bytes as f64))]));
            out.push(family(
                &e.state_write_seconds,
                [(vec![], gauge(p.write_seconds))],
            ));
            out.push(family(
                &e.state_pause_seconds,
                [(vec![], gauge(p.pause_seconds))],
            ));
        }
        out
    }
}

/// The HTTP server's families: open and refused connections, refused requests.
struct HttpCollector {
    stats: Arc<HttpStats>,
    open: Def,
    refused: Def,
    rejected: Def,
    descs: Vec<Desc>,
}

impl HttpCollector {
    fn new(stats: Arc<HttpStats>) -> HttpCollector {
        use MetricType::{COUNTER, GAUGE};
        let open = Def::new(
            "prefect_exporter_http_connections_open",
            "HTTP connections open now.",
            GAUGE,
            &[],
        );
        let refused = Def::new(
            "prefect_exporter_http_connections_refused_total",
            "HTTP connections closed at once because --web-max-connections were open.",
            COUNTER,
            &[],
        );
        let rejected = Def::new(
            "prefect_exporter_http_requests_rejected_total",
            "HTTP requests refused before routing, by reason (unauthorized, body_too_large, body_timeout).",
            COUNTER,
            &["reason"],
        );
        let descs = [&open, &refused, &rejected]
            .into_iter()
            .filter_map(|d| {
                Desc::new(
                    d.name.clone(),
                    d.help.clone(),
                    d.labels.clone(),
                    HashMap::new(),
                )
                .ok()
            })
            .collect();
        HttpCollector {
            stats,
            open,
            refused,
            rejected,
            descs,
        }
    }
}

impl Collector for HttpCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = &self.stats;
        vec![
            family(&self.open, [(vec![], gauge(stats.open() as f64))]),
            family(&self.refused, [(vec![], counter(stats.refused() as f64))]),
            family(
                &self.rejected,
                Rejection::ALL.map(|r| {
                    (
                        vec![r.label().to_owned()],
                        counter(stats.rejected(r) as f64),
                    )
                }),
            ),
        ]
    }
}

/// The exporter's registry and its collectors.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with every family of the exporter registered.
    pub fn new(
        shared: Arc<Shared>,
        status: Arc<Status>,
        clock: Clock,
    ) -> prometheus::Result<Metrics> {
        let group_by: Vec<String> = {
            let counts = shared.counts.lock();
            counts
                .series
                .dims()
                .iter()
                .map(|d| d.label().to_owned())
                .collect()
        };
        let registry = Registry::new();
        registry.register(Box::new(StateCollector::new(
            shared, status, clock, &group_by,
        )))?;
        Ok(Metrics { registry })
    }

    /// Adds the HTTP server's families, read from `stats`.
    pub fn register_http(&self, stats: Arc<HttpStats>) -> prometheus::Result<()> {
        self.registry.register(Box::new(HttpCollector::new(stats)))
    }

    /// Every family, sorted by name.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

enum Value {
    Counter(f64),
    Gauge(f64),
    Histogram(Histogram),
}

fn counter(v: f64) -> Value {
    Value::Counter(v)
}

fn gauge(v: f64) -> Value {
    Value::Gauge(v)
}

fn histogram(h: &Hist) -> Value {
    let mut out = Histogram::default();
    out.set_sample_count(h.count());
    out.set_sample_sum(h.sum());
    out.set_bucket(
        h.cumulative()
            .map(|(bound, n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    Value::Histogram(out)
}

fn family(def: &Def, samples: impl IntoIterator<Item = (Vec<String>, Value)>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(def.name.clone());
    mf.set_help(def.help.clone());
    mf.set_field_type(def.ty);
    let metrics = samples
        .into_iter()
        .map(|(values, value)| {
            let mut m = Metric::default();
            m.set_label(
                def.labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut l = LabelPair::default();
                        l.set_name(name.clone());
                        l.set_value(value);
                        l
                    })
                    .collect(),
            );
            match value {
                Value::Counter(v) => {
                    let mut c = Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                }
                Value::Gauge(v) => {
                    let mut g = Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                }
                Value::Histogram(h) => m.set_histogram(h),
            }
            m
        })
        .collect();
    mf.set_metric(metrics);
    mf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::ResourceQuery;
    use crate::report::ResourceList;
    use crate::test_support::{frame, pipeline, ts};
    use crate::timestamp::parse_rfc3339;
    use StateType::{Completed, Pending, Running};

    fn sample<'a>(
        families: &'a [MetricFamily],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a Metric> {
        families
            .iter()
            .find(|f| f.name() == name)?
            .get_metric()
            .iter()
            .find(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
    }

    #[test]
    fn ages_durations_and_stuck_lists_with_a_fixed_clock() {
        let mut p = pipeline();
        for f in [
            frame(1, 1, 10, None, Pending),
            frame(2, 2, 20, None, Pending),
            frame(3, 3, 15, None, Running),
            frame(4, 4, 5, None, Pending),
            frame(5, 4, 35, Some(Pending), Running),
            frame(6, 4, 95, Some(Running), Completed),
        ] {
            p.ingest(&f);
        }
        let now = parse_rfc3339(&ts(100)).unwrap();
        let clock: Clock = Arc::new(move || now);
        let metrics = Metrics::new(p.shared(), Arc::new(Status::new()), clock).unwrap();
        let families = metrics.gather();
        let age = |ty: &str, name: &str| {
            sample(
                &families,
                "prefect_flow_run_oldest_state_age_seconds",
                &[("state_type", ty), ("state_name", name)],
            )
            .map(|m| m.get_gauge().get_value())
        };
        assert_eq!(
            age("PENDING", "Pending"),
            Some(90.0),
            "run 1 entered PENDING 90 s ago"
        );
        assert_eq!(
            age("RUNNING", "Running"),
            Some(85.0),
            "run 3; run 4 completed"
        );
        assert_eq!(
            age("COMPLETED", "Completed"),
            None,
            "terminal states have no age"
        );

        let histogram = |ty: &str, name: &str| {
            sample(
                &families,
                "prefect_flow_run_state_duration_seconds",
                &[("state_type", ty), ("state_name", name)],
            )
            .map(|m| m.get_histogram().clone())
            .unwrap()
        };
        let bucket = |h: &prometheus::proto::Histogram, le: f64| {
            h.get_bucket()
                .iter()
                .find(|b| b.upper_bound() == le)
                .map(|b| b.cumulative_count())
        };
        let pending = histogram("PENDING", "Pending");
        assert_eq!(
            (pending.get_sample_count(), pending.get_sample_sum()),
            (1, 30.0)
        );
        assert_eq!(
            (bucket(&pending, 10.0), bucket(&pending, 30.0)),
            (Some(0), Some(1))
        );
        let running = histogram("RUNNING", "Running");
        assert_eq!(
            (running.get_sample_count(), running.get_sample_sum()),
            (1, 60.0)
        );
        assert_eq!(
            (bucket(&running, 30.0), bucket(&running, 60.0)),
            (Some(0), Some(1))
        );

        let active = sample(
            &families,
            "prefect_flow_runs_active",
            &[("state_type", "PENDING")],
        )
        .unwrap();
        assert_eq!(active.get_gauge().get_value(), 2.0);

        let query = ResourceQuery {
            kind: RunKind::FlowRun,
            state_type: Some(Pending),
            state_name: None,
            older_than: Some(85 * crate::timestamp::SECOND),
            limit: 100,
        };
        let stuck = ResourceList::build(&p.shared(), &query, now);
        assert_eq!(stuck.total_matching, 1);
        assert_eq!(
            stuck.resources[0].id,
            "prefect.flow-run.00000000-0000-4000-8000-000000000001"
        );
        assert_eq!(stuck.resources[0].state.age_seconds, 90.0);
        let query = ResourceQuery {
            older_than: Some(60 * crate::timestamp::SECOND),
            ..query
        };
        let both: Vec<String> = ResourceList::build(&p.shared(), &query, now)
            .resources
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            both,
            vec![
                "prefect.flow-run.00000000-0000-4000-8000-000000000001",
                "prefect.flow-run.00000000-0000-4000-8000-000000000002"
            ],
            "oldest first"
        );
    }
}
