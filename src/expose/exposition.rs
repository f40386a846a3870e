//! Metric families to text: Prometheus text 0.0.4 or OpenMetrics 1.0.0, chosen from the
//! request's `Accept` header. One [`Encoder`] writes everything a scrape shows, from two
//! inputs: the state's high-cardinality families, handed over sample by sample
//! ([`Encoder::family`]), and the families gathered from the exporter's
//! [`prometheus::Registry`] ([`Encoder::gathered`]). Both go through the same header, label
//! escaping and number formatting, so a family reads the same whichever way it came.
//!
//! The `prometheus` crate's own `TextEncoder` writes Prometheus text only; OpenMetrics (which
//! Prometheus asks for first) needs counter families named without `_total`, `unknown` for
//! untyped, escaped quotes in help text and a final `# EOF`, so the exposition stays here.
//!
//! [`Encoder::family`] writes each sample as it is produced, into one growing buffer: no
//! intermediate metric objects, no per-label allocations, no sorting. At 10,000 series this
//! is what keeps a scrape in single-digit milliseconds (`cargo bench --bench scrape` compares
//! it with the registry's path).

use std::borrow::Cow;
use std::fmt::Write;

use prometheus::proto::{Metric, MetricFamily, MetricType};

use crate::state::histogram::Histogram;

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_TEXT,
            Format::OpenMetrics => OPENMETRICS_TEXT,
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics when it is acceptable with a
    /// q-value at least that of any text/plain or wildcard range, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let mut openmetrics: f32 = 0.0;
        let mut text: f32 = 0.0;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            for param in parts {
                if let Some(v) = param
                    .strip_prefix("q=")
                    .or_else(|| param.strip_prefix("Q="))
                {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// What a family holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A monotonically increasing count (names end in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in buckets, with sum and count.
    Histogram,
}

/// One sample's value.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// A number (counter or gauge, as the family says).
    Number(f64),
    /// A histogram.
    Histogram(&'a Histogram),
}

/// Writes families in one format.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    out: String,
}

impl Encoder {
    /// An empty exposition in `format`.
    pub fn new(format: Format) -> Encoder {
        Encoder {
            format,
            out: String::with_capacity(64 * 1024),
        }
    }

    /// Writes one family: `samples` give one label value per name in `labels`, in order.
    /// A family without samples is left out.
    pub fn family<'v, L, S>(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[String],
        samples: impl IntoIterator<Item = (L, Value<'v>)>,
    ) where
        L: AsRef<[S]>,
        S: AsRef<str>,
    {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let type_name = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let name = self.header(name, help, type_name, kind == Kind::Counter);
        let out = &mut self.out;
        for (values, value) in samples {
            let values = values.as_ref();
            let pairs = || {
                labels
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().map(AsRef::as_ref))
            };
            match value {
                Value::Number(v) => sample(out, &name, "", pairs(), None, v),
                Value::Histogram(h) => {
                    histogram(out, &name, pairs, h.cumulative(), h.count(), h.sum())
                }
            }
        }
    }

    /// Writes one family gathered from a [`prometheus::Registry`] (labels in the order the
    /// library gives them), exactly as [`Encoder::family`] writes its own: the same header,
    /// escaping, numbers and bucket bounds. A family without samples is left out; timestamps
    /// are not written (the library sets none).
    pub fn gathered(&mut self, family: &MetricFamily) {
        let metrics = family.get_metric();
        if metrics.is_empty() {
            return;
        }
        let kind = family.get_field_type();
        let type_name = match (kind, self.format) {
            (MetricType::COUNTER, _) => "counter",
            (MetricType::GAUGE, _) => "gauge",
            (MetricType::HISTOGRAM, _) => "histogram",
            (MetricType::SUMMARY, _) => "summary",
            (MetricType::UNTYPED, Format::Prometheus) => "untyped",
            (MetricType::UNTYPED, Format::OpenMetrics) => "unknown",
        };
        let name = self.header(
            family.name(),
            family.help(),
            type_name,
            kind == MetricType::COUNTER,
        );
        let out = &mut self.out;
        for metric in metrics {
            let pairs = || metric.get_label().iter().map(|l| (l.name(), l.value()));
            match kind {
                MetricType::COUNTER => sample(
                    out,
                    &name,
                    "",
                    pairs(),
                    None,
                    metric.get_counter().get_value(),
                ),
                MetricType::GAUGE => sample(
                    out,
                    &name,
                    "",
                    pairs(),
                    None,
                    metric.get_gauge().get_value(),
                ),
                MetricType::UNTYPED => sample(out, &name, "", pairs(), None, untyped(metric)),
                MetricType::HISTOGRAM => {
                    let h = metric.get_histogram();
                    let buckets = h
                        .get_bucket()
                        .iter()
                        .filter(|b| b.upper_bound().is_finite())
                        .map(|b| (b.upper_bound(), b.cumulative_count()));
                    histogram(
                        out,
                        &name,
                        pairs,
                        buckets,
                        h.get_sample_count(),
                        h.get_sample_sum(),
                    );
                }
                MetricType::SUMMARY => {
                    let s = metric.get_summary();
                    let mut q = String::new();
                    for quantile in s.get_quantile() {
                        q.clear();
                        write_bound(&mut q, quantile.quantile());
                        let q = Some(("quantile", q.as_str()));
                        sample(out, &name, "", pairs(), q, quantile.value());
                    }
                    sample(out, &name, "_count", pairs(), None, s.sample_count() as f64);
                    sample(out, &name, "_sum", pairs(), None, s.sample_sum());
                }
            }
        }
    }

    /// Writes `# HELP` and `# TYPE` and returns the name its samples carry. OpenMetrics names
    /// a counter family without `_total` and its samples with it; Prometheus text names both
    /// as given.
    fn header<'n>(
        &mut self,
        name: &'n str,
        help: &str,
        type_name: &str,
        counter: bool,
    ) -> Cow<'n, str> {
        let (declared, samples) = match (self.format, counter) {
            (Format::OpenMetrics, true) => match name.strip_suffix("_total") {
                Some(stem) => (stem, Cow::Borrowed(name)),
                None => (name, Cow::Owned(format!("{name}_total"))),
            },
            _ => (name, Cow::Borrowed(name)),
        };
        let out = &mut self.out;
        out.push_str("# HELP ");
        out.push_str(declared);
        out.push(' ');
        escape_into(out, help, self.format == Format::OpenMetrics);
        out.push_str("\n# TYPE ");
        out.push_str(declared);
        out.push(' ');
        out.push_str(type_name);
        out.push('\n');
        samples
    }

    /// The finished text (OpenMetrics ends with `# EOF`).
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// An untyped sample's value. The library deprecates its untyped model as protobuf-specific;
/// none of the exporter's collectors makes one, but a gathered family may still say so.
#[allow(deprecated)]
fn untyped(metric: &Metric) -> f64 {
    metric.get_untyped().get_value()
}

/// A histogram's lines: a bucket per finite bound (cumulative counts), `+Inf`, count, sum.
fn histogram<'a, P>(
    out: &mut String,
    name: &str,
    pairs: impl Fn() -> P,
    buckets: impl Iterator<Item = (f64, u64)>,
    count: u64,
    sum: f64,
) where
    P: Iterator<Item = (&'a str, &'a str)>,
{
    let mut le = String::new();
    for (bound, cumulative) in buckets {
        le.clear();
        write_bound(&mut le, bound);
        let le = Some(("le", le.as_str()));
        sample(out, name, "_bucket", pairs(), le, cumulative as f64);
    }
    let inf = Some(("le", "+Inf"));
    sample(out, name, "_bucket", pairs(), inf, count as f64);
    sample(out, name, "_count", pairs(), None, count as f64);
    sample(out, name, "_sum", pairs(), None, sum);
}

/// One line: `name{label="value",...} number`, with `extra` (`le`, `quantile`) last.
fn sample<'a>(
    out: &mut String,
    name: &str,
    suffix: &str,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut first = true;
    let mut pair = |k: &str, v: &str| {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_into(out, v, true);
        out.push('"');
    };
    for (k, v) in pairs {
        pair(k, v);
    }
    if let Some((k, v)) = extra {
        pair(k, v);
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    write_float(out, value);
    out.push('\n');
}

/// Appends `text` with `\\` and newlines escaped, and `"` too when `quotes` (label values,
/// and OpenMetrics help text).
fn escape_into(out: &mut String, text: &str, quotes: bool) {
    if !text.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' if quotes => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A bucket bound in OpenMetrics' canonical form (`1.0`, `0.25`, `+Inf`).
fn write_bound(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v:?}");
    } else {
        write_float(out, v);
    }
}

/// A number as both formats write it (`+Inf`, `-Inf`, `NaN`, integers without a fraction).
fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2,text/plain;q=0.9")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
    }

    fn text(f: impl Fn(&mut String)) -> String {
        let mut out = String::new();
        f(&mut out);
        out
    }

    #[test]
    fn escapes_and_numbers() {
        assert_eq!(
            text(|o| escape_into(o, "a\"b\\c\nd", true)),
            "a\\\"b\\\\c\\nd"
        );
        assert_eq!(text(|o| escape_into(o, "a\"b", false)), "a\"b");
        assert_eq!(text(|o| write_float(o, f64::INFINITY)), "+Inf");
        assert_eq!(text(|o| write_float(o, 3.0)), "3");
        assert_eq!(text(|o| write_float(o, 0.25)), "0.25");
        assert_eq!(text(|o| write_bound(o, 1.0)), "1.0");
        assert_eq!(text(|o| write_bound(o, 86400.0)), "86400.0");
    }

    #[test]
    fn both_formats_by_hand() {
        static BOUNDS: [f64; 2] = [1.0, 2.5];
        let mut h = Histogram::new(&BOUNDS);
        h.observe(2.0);
        let labels = vec!["state".to_owned()];
        let render = |format| {
            let mut enc = Encoder::new(format);
            enc.family(
                "x_total",
                "Things \"counted\".",
                Kind::Counter,
                &labels,
                [(["a\"b"], Value::Number(3.0))],
            );
            enc.family(
                "empty",
                "No samples.",
                Kind::Gauge,
                &[],
                Vec::<([&str; 0], Value)>::new(),
            );
            enc.family(
                "h",
                "Spread.",
                Kind::Histogram,
                &[],
                [([""; 0], Value::Histogram(&h))],
            );
            enc.finish()
        };
        assert_eq!(
            render(Format::Prometheus),
            "# HELP x_total Things \"counted\".\n# TYPE x_total counter\nx_total{state=\"a\\\"b\"} 3\n\
             # HELP h Spread.\n# TYPE h histogram\n\
             h_bucket{le=\"1.0\"} 0\nh_bucket{le=\"2.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 2\n"
        );
        assert_eq!(
            render(Format::OpenMetrics),
            "# HELP x Things \\\"counted\\\".\n# TYPE x counter\nx_total{state=\"a\\\"b\"} 3\n\
             # HELP h Spread.\n# TYPE h histogram\n\
             h_bucket{le=\"1.0\"} 0\nh_bucket{le=\"2.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 2\n# EOF\n"
        );
    }

    #[test]
    fn gathered_library_metrics_read_like_direct_families() {
        // The families of `both_formats_by_hand`, as library metrics in a registry (which
        // gathers them by name: `h` first).
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("x_total", "Things \"counted\"."),
            &["state"],
        )
        .unwrap();
        counter.with_label_values(&["a\"b"]).inc_by(3);
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("h", "Spread.").buckets(vec![1.0, 2.5]),
        )
        .unwrap();
        h.observe(2.0);
        registry.register(Box::new(counter)).unwrap();
        registry.register(Box::new(h)).unwrap();
        let render = |format| {
            let mut enc = Encoder::new(format);
            for family in registry.gather() {
                enc.gathered(&family);
            }
            enc.finish()
        };
        assert_eq!(
            render(Format::Prometheus),
            "# HELP h Spread.\n# TYPE h histogram\n\
             h_bucket{le=\"1.0\"} 0\nh_bucket{le=\"2.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 2\n\
             # HELP x_total Things \"counted\".\n# TYPE x_total counter\nx_total{state=\"a\\\"b\"} 3\n"
        );
        assert_eq!(
            render(Format::OpenMetrics),
            "# HELP h Spread.\n# TYPE h histogram\n\
             h_bucket{le=\"1.0\"} 0\nh_bucket{le=\"2.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 2\n\
             # HELP x Things \\\"counted\\\".\n# TYPE x counter\nx_total{state=\"a\\\"b\"} 3\n# EOF\n"
        );
    }

    /// A family of `ty` named `name` with one sample made by `fill`.
    fn hand_made(name: &str, ty: MetricType, fill: impl Fn(&mut Metric)) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(format!("{name}."));
        family.set_field_type(ty);
        let mut metric = Metric::default();
        fill(&mut metric);
        family.set_metric(vec![metric]);
        family
    }

    #[test]
    #[allow(deprecated)] // the library's untyped model, see `untyped`
    fn gathered_counters_without_total_summaries_and_untyped() {
        use prometheus::proto::{Counter, Quantile, Summary, Untyped};
        let families = [
            hand_made("c", MetricType::COUNTER, |m| {
                let mut c = Counter::default();
                c.set_value(1.0);
                m.set_counter(c);
            }),
            hand_made("s", MetricType::SUMMARY, |m| {
                let mut q = Quantile::default();
                q.set_quantile(0.5);
                q.set_value(1.5);
                let mut s = Summary::default();
                s.set_quantile(vec![q]);
                s.set_sample_count(2);
                s.set_sample_sum(3.0);
                m.set_summary(s);
            }),
            hand_made("u", MetricType::UNTYPED, |m| {
                let mut u = Untyped::default();
                u.set_value(4.0);
                m.set_untyped(u);
            }),
            hand_made("empty", MetricType::GAUGE, |_| {}),
        ];
        let mut no_samples = families[3].clone();
        no_samples.clear_metric();
        let render = |format| {
            let mut enc = Encoder::new(format);
            for family in families[..3].iter().chain([&no_samples]) {
                enc.gathered(family);
            }
            enc.finish()
        };
        let summary =
            "# HELP s s.\n# TYPE s summary\ns{quantile=\"0.5\"} 1.5\ns_count 2\ns_sum 3\n";
        assert_eq!(
            render(Format::Prometheus),
            format!(
                "# HELP c c.\n# TYPE c counter\nc 1\n{summary}# HELP u u.\n# TYPE u untyped\nu 4\n"
            )
        );
        assert_eq!(
            render(Format::OpenMetrics),
            format!(
                "# HELP c c.\n# TYPE c counter\nc_total 1\n{summary}# HELP u u.\n# TYPE u unknown\nu 4\n# EOF\n"
            )
        );
    }
}
