//! The registry of metric families: every part of the exporter that exposes metrics is a
//! [`Collector`] registered in one [`Metrics`], which renders them all at scrape time.
//!
//! Counts are not kept in metric types on the hot path: collectors copy what they read at
//! scrape time and hand [`Family`]s to the [`Encoder`], which writes them straight to text,
//! so ingestion pays nothing for metrics and a scrape allocates little.

use std::collections::HashMap;
use std::sync::Arc;

use crate::expose::catalogue::Def;
use crate::expose::exposition::{self, Encoder, Format};
use crate::expose::state_families::StateCollector;
use crate::model::event::StateKey;
use crate::model::time::Clock;
use crate::state::histogram::Histogram;
use crate::state::labels::SeriesId;
use crate::state::status::Status;
use crate::state::Shared;

/// A part of the exporter that exposes metric families.
pub trait Collector: Send + Sync {
    /// This part's families, built from a copy of what it reads.
    fn families(&self) -> Vec<Family<'_>>;
}

/// The exporter's metric families, rendered at scrape time.
pub struct Metrics {
    collectors: Vec<Arc<dyn Collector>>,
}

impl Metrics {
    /// The state's and the exporter's families, over `shared` and `status`.
    pub fn new(shared: Arc<Shared>, status: Arc<Status>, clock: Clock) -> Metrics {
        let group_by: Vec<String> = shared.with_counts(|counts| {
            counts
                .series
                .dims()
                .iter()
                .map(|d| d.label().to_owned())
                .collect()
        });
        let state = StateCollector::new(shared, status, clock, &group_by);
        Metrics {
            collectors: vec![Arc::new(state)],
        }
    }

    /// Adds a part's families after those already registered.
    pub fn register(&mut self, collector: Arc<dyn Collector>) {
        self.collectors.push(collector);
    }

    /// Every family as text in `format`. Families come in registration and definition
    /// order and samples in a fixed order (by state, label sets by first appearance), so
    /// consecutive scrapes differ only in values.
    pub fn render(&self, format: Format) -> String {
        let mut encoder = Encoder::new(format);
        for collector in &self.collectors {
            for family in collector.families() {
                family.write(&mut encoder);
            }
        }
        encoder.finish()
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
