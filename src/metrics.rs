//! Every metric the exporter exposes: name, help text, type and labels, in one place.
//!
//! Counts are not kept in metric types on the hot path: [`StateCollector`] copies the
//! aggregates at scrape time and builds the families from them, and
//! [`crate::exposition::Encoder`] writes them straight to text, so ingestion pays nothing for
//! metrics and a scrape allocates little.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::exposition::{Encoder, Format, Kind};

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
    kind: Kind,
    labels: Vec<String>,
}

impl Def {
    fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind, labels: &[&str]) -> Def {
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
    evicted: Def,
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
        ExporterDefs {
            received: Def::new(
                "prefect_exporter_events_received_total",
                "Frames decoded as events, by kind (state or other); duplicates included.",
                Kind::Counter,
                &["kind"],
            ),
            duplicates: Def::new(
                "prefect_exporter_events_duplicate_total",
                "Events dropped because their id was already seen.",
                Kind::Counter,
                &[],
            ),
            rejected: Def::new(
                "prefect_exporter_events_rejected_total",
                "Frames rejected as unusable, by reason; each is skipped.",
                Kind::Counter,
                &["reason"],
            ),
            connected: Def::new(
                "prefect_exporter_stream_connected",
                "1 while the events stream is subscribed.",
                Kind::Gauge,
                &[],
            ),
            reconnects: Def::new(
                "prefect_exporter_stream_reconnects_total",
                "Reconnections of the events stream, by reason.",
                Kind::Counter,
                &["reason"],
            ),
            last_event: Def::new(
                "prefect_exporter_last_event_timestamp_seconds",
                "Newest occurred timestamp applied (Unix seconds).",
                Kind::Gauge,
                &[],
            ),
            delay: Def::new(
                "prefect_exporter_event_delay_seconds",
                "Wall-clock time between an event's occurred timestamp and applying it.",
                Kind::Histogram,
                &[],
            ),
            chain_gaps: Def::new(
                "prefect_exporter_chain_gaps_total",
                "State events of tracked runs whose follows names an event never seen (a drop).",
                Kind::Counter,
                &[],
            ),
            tracked: Def::new(
                "prefect_exporter_tracked_resources",
                "Runs held in memory.",
                Kind::Gauge,
                &[],
            ),
            dedup_ids: Def::new(
                "prefect_exporter_dedup_ids",
                "Event ids held by the deduplication window.",
                Kind::Gauge,
                &[],
            ),
            dedup_evicted: Def::new(
                "prefect_exporter_dedup_evicted_total",
                "Event ids dropped from a full deduplication window before aging out.",
                Kind::Counter,
                &[],
            ),
            retired: Def::new(
                "prefect_exporter_runs_retired_total",
                "Terminal runs dropped from memory after the retention period (their counts stay).",
                Kind::Counter,
                &[],
            ),
            evicted: Def::new(
                "prefect_exporter_runs_evicted_total",
                "Runs dropped from memory because --max-tracked-runs were held; their contribution to the totals stays.",
                Kind::Counter,
                &[],
            ),
            folded: Def::new(
                "prefect_exporter_series_folded_total",
                "Events whose state name or label set was folded into __other__ by the series cap.",
                Kind::Counter,
                &["what"],
            ),
            windows: Def::new(
                "prefect_exporter_verify_windows_total",
                "Closed windows of events compared with the server's stored events, by result.",
                Kind::Counter,
                &["result"],
            ),
            repaired: Def::new(
                "prefect_exporter_events_repaired_total",
                "Events recovered by repair that the live stream had dropped.",
                Kind::Counter,
                &[],
            ),
            corrections: Def::new(
                "prefect_exporter_reconcile_corrections_total",
                "Runs moved by reconciliation with the server's REST counts, by state type.",
                Kind::Counter,
                &["state_type"],
            ),
            drift: Def::new(
                "prefect_exporter_reconcile_last_drift",
                "Server count minus exporter count at the last reconciliation, by state type.",
                Kind::Gauge,
                &["state_type"],
            ),
            reconciliations: Def::new(
                "prefect_exporter_reconciliations_total",
                "Reconciliations applied (the first is the start-up baseline).",
                Kind::Counter,
                &[],
            ),
            backfill_gaps: Def::new(
                "prefect_exporter_backfill_gaps_total",
                "Stream outages longer than the server's 15-minute backfill.",
                Kind::Counter,
                &[],
            ),
            state_writes: Def::new(
                "prefect_exporter_state_file_writes_total",
                "State-file writes, by result (ok or error); only with --state-file.",
                Kind::Counter,
                &["result"],
            ),
            state_bytes: Def::new(
                "prefect_exporter_state_file_bytes",
                "Size of the last state file written.",
                Kind::Gauge,
                &[],
            ),
            state_write_seconds: Def::new(
                "prefect_exporter_state_file_write_seconds",
                "Duration of the last state-file write (on the writer thread, not the ingestion path).",
                Kind::Gauge,
                &[],
            ),
            state_pause_seconds: Def::new(
                "prefect_exporter_state_file_pause_seconds",
                "How long ingestion paused to hand the last snapshot to the writer.",
                Kind::Gauge,
                &[],
            ),
        }
    }
}

/// Builds every family from the shared state at scrape time.
pub struct StateCollector {
    shared: Arc<Shared>,
    status: Arc<Status>,
    clock: Clock,
    kinds: [KindDefs; 2],
    exporter: ExporterDefs,
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
        StateCollector {
            shared,
            status,
            clock,
            kinds,
            exporter,
        }
    }

    fn kind_families<'s>(
        &'s self,
        kind: RunKind,
        counts: &KindCounts,
        oldest: &[(StateKey, Micros)],
        series: &[crate::labels::LabelSet],
        dims: usize,
        out: &mut Vec<Family<'s>>,
    ) {
        let defs = &self.kinds[kind.index()];
        let state_labels = |s: &StateKey| -> Vec<Text> {
            vec![Text::Static(s.ty.as_str()), Text::Shared(s.name.clone())]
        };
        let with_series = |s: &StateKey, id: SeriesId| -> Vec<Text> {
            let mut labels = Vec::with_capacity(2 + dims);
            labels.push(Text::Static(s.ty.as_str()));
            labels.push(Text::Shared(s.name.clone()));
            match series.get(id.0 as usize) {
                Some(values) => labels.extend(values.iter().cloned().map(Text::Shared)),
                None => labels.extend((0..dims).map(|_| Text::Static(""))),
            }
            labels
        };

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
            by_series(&counts.entries)
                .into_iter()
                .map(|((k, s), v)| (with_series(k, *s), counter(*v as f64))),
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
            sorted(&counts.self_transitions)
                .into_iter()
                .map(|(k, v)| (state_labels(k), counter(*v as f64))),
        ));

        out.push(family(
            &defs.active,
            by_series(&counts.active)
                .into_iter()
                .map(|((k, s), v)| (with_series(k, *s), gauge(*v as f64))),
        ));

        let now = (self.clock)();
        out.push(family(
            &defs.oldest_age,
            oldest
                .iter()
                .map(|(k, since)| (state_labels(k), gauge(as_seconds((now - since).max(0))))),
        ));

        out.push(family(
            &defs.durations,
            sorted(&counts.durations)
                .into_iter()
                .map(|(k, h)| (state_labels(k), histogram(h))),
        ));
    }
}

impl StateCollector {
    /// Every family, built from a copy of the aggregates.
    fn families(&self) -> Vec<Family<'_>> {
        let (kinds, events, checks, series_values, dims) = {
            let counts = self.shared.counts.lock();
            let kinds: Vec<(RunKind, KindCounts, Oldest)> = self
                .shared
                .kinds()
                .map(|k| {
                    let mut oldest: Vec<(StateKey, Micros)> = counts.waiting[k.index()]
                        .oldest()
                        .map(|(state, since)| (state.clone(), since))
                        .collect();
                    oldest.sort_unstable();
                    (k, counts.kinds[k.index()].clone(), oldest)
                })
                .collect();
            let series_values = counts.series.sets().0.to_vec();
            (
                kinds,
                counts.events.clone(),
                counts.checks.clone(),
                series_values,
                counts.series.dims().len(),
            )
        };
        let mut out = Vec::new();
        for (kind, counts, oldest) in &kinds {
            self.kind_families(*kind, counts, oldest, &series_values, dims, &mut out);
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
            [(Vec::<Text>::new(), counter(events.duplicates as f64))],
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
                Vec::<Text>::new(),
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
            out.push(family(
                &e.last_event,
                [(Vec::<Text>::new(), gauge(as_seconds(last)))],
            ));
        }
        out.push(family(
            &e.delay,
            [(Vec::<Text>::new(), histogram(&events.delay))],
        ));
        out.push(family(
            &e.chain_gaps,
            [(Vec::<Text>::new(), counter(events.chain_gaps as f64))],
        ));
        let tracked: usize = self
            .shared
            .kinds()
            .map(|k| self.shared.table(k).runs.len())
            .sum();
        out.push(family(
            &e.tracked,
            [(Vec::<Text>::new(), gauge(tracked as f64))],
        ));
        out.push(family(
            &e.dedup_ids,
            [(Vec::<Text>::new(), gauge(events.dedup_ids as f64))],
        ));
        out.push(family(
            &e.dedup_evicted,
            [(Vec::<Text>::new(), counter(events.dedup_evicted as f64))],
        ));
        out.push(family(
            &e.retired,
            [(Vec::<Text>::new(), counter(events.runs_retired as f64))],
        ));
        out.push(family(
            &e.evicted,
            [(Vec::<Text>::new(), counter(events.runs_evicted as f64))],
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
            [(Vec::<Text>::new(), counter(checks.events_repaired as f64))],
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
            [(Vec::<Text>::new(), counter(checks.reconciliations as f64))],
        ));
        out.push(family(
            &e.backfill_gaps,
            [(Vec::<Text>::new(), counter(checks.backfill_gaps as f64))],
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
            out.push(family(
                &e.state_bytes,
                [(Vec::<Text>::new(), gauge(p.bytes as f64))],
            ));
            out.push(family(
                &e.state_write_seconds,
                [(Vec::<Text>::new(), gauge(p.write_seconds))],
            ));
            out.push(family(
                &e.state_pause_seconds,
                [(Vec::<Text>::new(), gauge(p.pause_seconds))],
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
}

impl HttpCollector {
    fn new(stats: Arc<HttpStats>) -> HttpCollector {
        let open = Def::new(
            "prefect_exporter_http_connections_open",
            "HTTP connections open now.",
            Kind::Gauge,
            &[],
        );
        let refused = Def::new(
            "prefect_exporter_http_connections_refused_total",
            "HTTP connections closed at once because --web-max-connections were open.",
            Kind::Counter,
            &[],
        );
        let rejected = Def::new(
            "prefect_exporter_http_requests_rejected_total",
            "HTTP requests refused before routing, by reason (unauthorized, body_too_large, body_timeout).",
            Kind::Counter,
            &["reason"],
        );
        HttpCollector {
            stats,
            open,
            refused,
            rejected,
        }
    }
}

impl HttpCollector {
    fn families(&self) -> Vec<Family<'_>> {
        let stats = &self.stats;
        vec![
            family(
                &self.open,
                [(Vec::<Text>::new(), gauge(stats.open() as f64))],
            ),
            family(
                &self.refused,
                [(Vec::<Text>::new(), counter(stats.refused() as f64))],
            ),
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

/// The exporter's metric families, rendered at scrape time.
pub struct Metrics {
    state: StateCollector,
    http: std::sync::OnceLock<HttpCollector>,
}

impl Metrics {
    /// Every family of the exporter, over `shared` and `status`.
    pub fn new(shared: Arc<Shared>, status: Arc<Status>, clock: Clock) -> Metrics {
        let group_by: Vec<String> = {
            let counts = shared.counts.lock();
            counts
                .series
                .dims()
                .iter()
                .map(|d| d.label().to_owned())
                .collect()
        };
        Metrics {
            state: StateCollector::new(shared, status, clock, &group_by),
            http: std::sync::OnceLock::new(),
        }
    }

    /// Adds the HTTP server's families, read from `stats` (once).
    pub fn register_http(&self, stats: Arc<HttpStats>) {
        let _ = self.http.set(HttpCollector::new(stats));
    }

    /// Every family as text in `format`. Families come in definition order and samples in a
    /// fixed order (by state, label sets by first appearance), so consecutive scrapes differ
    /// only in values.
    pub fn render(&self, format: Format) -> String {
        let mut encoder = Encoder::new(format);
        let http = self.http.get().map(HttpCollector::families);
        for family in self
            .state
            .families()
            .into_iter()
            .chain(http.into_iter().flatten())
        {
            let def = family.def;
            encoder.family(
                &def.name,
                &def.help,
                def.kind,
                &def.labels,
                family.samples.iter().map(|(labels, value)| {
                    let value = match value {
                        Value::Number(v) => crate::exposition::Value::Number(*v),
                        Value::Histogram(h) => crate::exposition::Value::Histogram(h),
                    };
                    (labels.as_slice(), value)
                }),
            );
        }
        encoder.finish()
    }
}

/// One family's samples: label values (in the definition's order) and a value.
struct Family<'d> {
    def: &'d Def,
    samples: Vec<(Vec<Text>, Value)>,
}

/// A label value: a fixed name, a shared name from the aggregates, or made at scrape time.
/// Cloning a shared one never copies the text.
#[derive(Clone)]
enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::Owned(text)
    }
}

enum Value {
    Number(f64),
    Histogram(Hist),
}

/// When the longest-waiting run of each non-terminal state entered it, by state.
type Oldest = Vec<(StateKey, Micros)>;

/// A map's entries in key order.
fn sorted<K: Ord, V, S>(map: &HashMap<K, V, S>) -> Vec<(&K, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Per-label-set entries in label-set order, then by state (cheap integer comparisons
/// first: no text is compared between label sets).
fn by_series<V, S>(map: &HashMap<(StateKey, SeriesId), V, S>) -> Vec<(&(StateKey, SeriesId), &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| (a.0 .1, &a.0 .0).cmp(&(b.0 .1, &b.0 .0)));
    entries
}

fn counter(v: f64) -> Value {
    Value::Number(v)
}

fn gauge(v: f64) -> Value {
    Value::Number(v)
}

fn histogram(h: &Hist) -> Value {
    Value::Histogram(h.clone())
}

fn family<L: Into<Text>>(
    def: &Def,
    samples: impl IntoIterator<Item = (Vec<L>, Value)>,
) -> Family<'_> {
    Family {
        def,
        samples: samples
            .into_iter()
            .map(|(labels, value)| (labels.into_iter().map(Into::into).collect(), value))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::ResourceQuery;
    use crate::report::ResourceList;
    use crate::test_support::{frame, pipeline, ts};
    use crate::timestamp::parse_rfc3339;
    use StateType::{Completed, Pending, Running};

    /// The value of the sample `name` whose labels include `labels`, in Prometheus text.
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                (n == name && all).then(|| value.parse().unwrap())
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
        let metrics = Metrics::new(p.shared(), Arc::new(Status::new()), clock);
        let families = metrics.render(Format::Prometheus);
        let age = |ty: &str, name: &str| {
            sample(
                &families,
                "prefect_flow_run_oldest_state_age_seconds",
                &[("state_type", ty), ("state_name", name)],
            )
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

        let duration = "prefect_flow_run_state_duration_seconds";
        let histogram = |ty: &str, name: &str, le: &str| {
            let labels = [("state_type", ty), ("state_name", name)];
            let with_le = [labels[0], labels[1], ("le", le)];
            (
                sample(&families, &format!("{duration}_count"), &labels),
                sample(&families, &format!("{duration}_sum"), &labels),
                sample(&families, &format!("{duration}_bucket"), &with_le),
            )
        };
        assert_eq!(
            histogram("PENDING", "Pending", "10.0"),
            (Some(1.0), Some(30.0), Some(0.0))
        );
        assert_eq!(
            histogram("PENDING", "Pending", "30.0"),
            (Some(1.0), Some(30.0), Some(1.0))
        );
        assert_eq!(
            histogram("RUNNING", "Running", "30.0"),
            (Some(1.0), Some(60.0), Some(0.0))
        );
        assert_eq!(
            histogram("RUNNING", "Running", "60.0"),
            (Some(1.0), Some(60.0), Some(1.0))
        );

        let active = sample(
            &families,
            "prefect_flow_runs_active",
            &[("state_type", "PENDING")],
        );
        assert_eq!(active, Some(2.0));

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
