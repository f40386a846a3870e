//! The exporter's metrics at scrape time: one [`Metrics`] owns the exporter's
//! [`prometheus::Registry`] (the exporter's own families, the HTTP server's among them, and
//! the process collector's) and the state's families, and renders them all with one [`Encoder`].
//!
//! Counts are not kept in metric types on the hot path: the state's families are built from
//! a copy of the aggregates at scrape time and handed to the encoder as [`Family`]s, which
//! it writes straight to text (the direct path: at 10,000 series it takes 2.45 times fewer
//! instructions than gathering the same samples as `prometheus` metric families, see
//! `benches/scrape.rs` and the README's Measured table);
//! the exporter's own library metrics are set from the state just before the registry is
//! gathered (`exporter_metrics`). Ingestion pays nothing for metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::Registry;

use crate::expose::catalogue::{ApiMetrics, Def, ExporterMetrics, HttpMetrics, SCRAPE_DURATION};
use crate::expose::exporter_metrics::proto_histogram;
use crate::expose::exposition::{self, Encoder, Format, Kind};
use crate::expose::state_families::StateCollector;
use crate::model::event::StateKey;
use crate::model::time::Clock;
use crate::state::histogram::Histogram;
use crate::state::labels::SeriesId;
use crate::state::status::Status;
use crate::state::Shared;

/// Which way the state's families reach the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatePath {
    /// Straight from the collector to the encoder (what the service uses).
    Direct,
    /// Through the registry as `prometheus` metric families, like every other family (for
    /// the scrape bench's comparison and the test that both paths say the same).
    Registry,
}

/// The exporter's metric families, rendered at scrape time.
pub struct Metrics {
    registry: Registry,
    /// The state's families when they take the direct path.
    direct: Option<Arc<StateCollector>>,
    exporter: ExporterMetrics,
    shared: Arc<Shared>,
    status: Arc<Status>,
    /// One refresh and gather at a time (counters move by the difference they read).
    scrape: Mutex<()>,
}

impl Metrics {
    /// The state's (direct path), the exporter's and the process's families, over `shared`
    /// and `status`.
    pub fn new(shared: Arc<Shared>, status: Arc<Status>, clock: Clock) -> Metrics {
        Metrics::with_state_path(shared, status, clock, StatePath::Direct)
    }

    /// As [`Metrics::new`], with the state's families on `path`.
    ///
    /// # Panics
    ///
    /// Never in practice: it registers a fixed set of families with distinct, valid names in
    /// a new registry (every test that builds a `Metrics` checks it).
    pub fn with_state_path(
        shared: Arc<Shared>,
        status: Arc<Status>,
        clock: Clock,
        path: StatePath,
    ) -> Metrics {
        let group_by: Vec<String> = shared.with_counts(|counts| {
            counts
                .series
                .dims()
                .iter()
                .map(|d| d.label().to_owned())
                .collect()
        });
        let registry = Registry::new();
        let exporter = ExporterMetrics::register(&registry)
            .expect("the exporter's families have distinct, valid names");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process families are not registered twice");
        let state = Arc::new(StateCollector::new(shared.clone(), clock, &group_by));
        let direct = match path {
            StatePath::Direct => Some(state),
            StatePath::Registry => {
                let families = StateFamilies::new(state)
                    .expect("the state's families have distinct, valid names");
                registry
                    .register(Box::new(families))
                    .expect("the state's families are not registered twice");
                None
            }
        };
        Metrics {
            registry,
            direct,
            exporter,
            shared,
            status,
            scrape: Mutex::new(()),
        }
    }

    /// The HTTP server's families, registered here, for the server to update. Fails when
    /// they already are (a second server on the same `Metrics`).
    pub(crate) fn register_http(&self) -> prometheus::Result<HttpMetrics> {
        HttpMetrics::registered(&self.registry)
    }

    /// The REST client's families, registered here, for the client to update. Fails when
    /// they already are.
    pub(crate) fn register_api(&self) -> prometheus::Result<ApiMetrics> {
        ApiMetrics::registered(&self.registry)
    }

    /// Every family as text in `format`: the state's families in definition order (samples
    /// by state, label sets by first appearance), then the registry's by name (samples by
    /// label values), then the scrape duration, which measures everything before it. So
    /// consecutive scrapes differ only in values.
    pub fn render(&self, format: Format) -> String {
        let started = Instant::now();
        let mut encoder = Encoder::new(format);
        if let Some(state) = &self.direct {
            for family in state.families() {
                family.write(&mut encoder);
            }
        }
        let _one_at_a_time = self.scrape.lock();
        self.exporter.refresh(&self.shared, &self.status);
        for family in self.registry.gather() {
            if family.name() != SCRAPE_DURATION {
                encoder.gathered(&family);
            }
        }
        let duration = &self.exporter.scrape_duration;
        duration.set(started.elapsed().as_secs_f64());
        for family in duration.collect() {
            encoder.gathered(&family);
        }
        encoder.finish()
    }
}

/// The state's families as a `prometheus` collector ([`StatePath::Registry`]).
struct StateFamilies {
    state: Arc<StateCollector>,
    descs: Vec<Desc>,
}

impl StateFamilies {
    fn new(state: Arc<StateCollector>) -> prometheus::Result<StateFamilies> {
        let descs = state
            .defs()
            .map(|def| {
                Desc::new(
                    def.name.clone(),
                    def.help.clone(),
                    def.labels.clone(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(StateFamilies { state, descs })
    }
}

impl Collector for StateFamilies {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.state.families().iter().map(Family::to_proto).collect()
    }
}

/// One family's samples: label values (in the definition's order) and a value.
pub struct Family<'d> {
    def: &'d Def,
    samples: Vec<(Vec<Text>, Value)>,
}

impl<'d> Family<'d> {
    /// The family `def` with these samples.
    pub fn new<L: Into<Text>>(
        def: &'d Def,
        samples: impl IntoIterator<Item = (Vec<L>, Value)>,
    ) -> Family<'d> {
        Family {
            def,
            samples: samples
                .into_iter()
                .map(|(labels, value)| (labels.into_iter().map(Into::into).collect(), value))
                .collect(),
        }
    }

    fn write(&self, encoder: &mut Encoder) {
        let def = self.def;
        encoder.family(
            &def.name,
            &def.help,
            def.kind,
            &def.labels,
            self.samples.iter().map(|(labels, value)| {
                let value = match value {
                    Value::Number(v) => exposition::Value::Number(*v),
                    Value::Histogram(h) => exposition::Value::Histogram(h),
                };
                (labels.as_slice(), value)
            }),
        );
    }

    /// The same family as a `prometheus` metric family (labels in the definition's order).
    fn to_proto(&self) -> MetricFamily {
        let def = self.def;
        let mut family = MetricFamily::default();
        family.set_name(def.name.clone());
        family.set_help(def.help.clone());
        family.set_field_type(match def.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
        });
        let metrics = self.samples.iter().map(|(values, value)| {
            let mut metric = proto::Metric::default();
            metric.set_label(
                def.labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.as_ref().to_owned());
                        pair
                    })
                    .collect(),
            );
            match (value, def.kind) {
                (Value::Histogram(h), _) => metric.set_histogram(proto_histogram(h)),
                (Value::Number(v), Kind::Counter) => {
                    let mut c = proto::Counter::default();
                    c.set_value(*v);
                    metric.set_counter(c);
                }
                (Value::Number(v), _) => {
                    let mut g = proto::Gauge::default();
                    g.set_value(*v);
                    metric.set_gauge(g);
                }
            }
            metric
        });
        family.set_metric(metrics.collect());
        family
    }
}

/// A label value: a fixed name, a shared name from the aggregates, or made at scrape time.
/// Cloning a shared one never copies the text.
#[derive(Clone)]
pub enum Text {
    /// A fixed name.
    Static(&'static str),
    /// A name shared with the aggregates.
    Shared(Arc<str>),
    /// A name made at scrape time.
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

/// A sample's value.
pub enum Value {
    /// A counter's or gauge's number.
    Number(f64),
    /// A histogram.
    Histogram(Histogram),
}

/// A counter's value.
pub fn counter(v: f64) -> Value {
    Value::Number(v)
}

/// A gauge's value.
pub fn gauge(v: f64) -> Value {
    Value::Number(v)
}

/// A histogram's value (copied).
pub fn histogram(h: &Histogram) -> Value {
    Value::Histogram(h.clone())
}

/// A map's entries in key order.
pub(crate) fn sorted<K: Ord, V, S>(map: &HashMap<K, V, S>) -> Vec<(&K, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Per-label-set entries in label-set order, then by state (cheap integer comparisons
/// first: no text is compared between label sets).
pub(crate) fn by_series<V, S>(
    map: &HashMap<(StateKey, SeriesId), V, S>,
) -> Vec<(&(StateKey, SeriesId), &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| (a.0 .1, &a.0 .0).cmp(&(b.0 .1, &b.0 .0)));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::catalogue::BUILD_INFO;
    use crate::state::test_support::{apply, at, tracker, waiting_runs};

    fn metrics(path: StatePath) -> Metrics {
        let mut t = tracker();
        apply(&mut t, &waiting_runs());
        let now = at(100);
        let clock: Clock = Arc::new(move || now);
        Metrics::with_state_path(t.shared().clone(), Arc::new(Status::new()), clock, path)
    }

    /// The lines of `text` but those of the families that change between any two scrapes,
    /// sorted.
    fn steady_lines(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("process_") && !l.contains(SCRAPE_DURATION))
            .collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn both_state_paths_render_the_same_families() {
        let direct = metrics(StatePath::Direct);
        let registry = metrics(StatePath::Registry);
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let (a, b) = (direct.render(format), registry.render(format));
            assert!(a.contains("prefect_flow_runs_active{state_type=\"PENDING\""));
            assert_eq!(steady_lines(&a), steady_lines(&b), "{format:?}");
            assert_ne!(a, b, "the registry orders families by name");
        }
    }

    #[test]
    fn a_scrape_ends_with_its_own_duration_after_process_and_build_families() {
        let text = metrics(StatePath::Direct).render(Format::OpenMetrics);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let build = format!(
            "prefect_exporter_build_info{{revision=\"{}\",rustc_version=\"{}\",version=\"{}\"}} 1",
            BUILD_INFO[1].1, BUILD_INFO[2].1, BUILD_INFO[0].1
        );
        assert!(samples.contains(&build.as_str()), "{build}");
        assert_eq!(BUILD_INFO[0].1, env!("CARGO_PKG_VERSION"));
        assert!(!BUILD_INFO[1].1.is_empty() && !BUILD_INFO[2].1.is_empty());
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let found = samples
                .iter()
                .filter(|l| l.starts_with(&format!("{name} ")))
                .count();
            assert_eq!(found, 1, "{name}");
        }
        assert!(text.contains("# TYPE process_cpu_seconds counter\n"));

        let (rest, last) = text
            .strip_suffix("# EOF\n")
            .and_then(|t| t.trim_end().rsplit_once('\n'))
            .expect("lines before # EOF");
        assert!(
            rest.ends_with(&format!("# TYPE {SCRAPE_DURATION} gauge")),
            "{rest}"
        );
        let seconds: f64 = last
            .strip_prefix(&format!("{SCRAPE_DURATION} "))
            .expect("the duration is the last sample")
            .parse()
            .unwrap();
        assert!(seconds > 0.0 && seconds < 1.0, "{seconds}");
        assert_eq!(
            text.matches(SCRAPE_DURATION).count(),
            3,
            "HELP, TYPE, one sample"
        );
    }
}
