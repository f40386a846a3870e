//! Metric families to bytes: Prometheus text 0.0.4 or OpenMetrics 1.0.0, chosen from the
//! request's `Accept` header.

use std::fmt::Write;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

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

/// Encodes `families` in `format`.
pub fn encode(families: &[MetricFamily], format: Format) -> String {
    match format {
        Format::Prometheus => {
            let mut buf = Vec::new();
            // Encoding into a Vec cannot fail for well-formed families.
            if TextEncoder::new().encode(families, &mut buf).is_err() {
                buf.clear();
            }
            String::from_utf8(buf).unwrap_or_default()
        }
        Format::OpenMetrics => encode_openmetrics(families),
    }
}

/// OpenMetrics 1.0.0 text: counters are declared without their `_total` suffix and the
/// exposition ends with `# EOF`.
fn encode_openmetrics(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(4096);
    for mf in families {
        let name = mf.name();
        let (declared, type_name) = match mf.get_field_type() {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {declared} {type_name}");
        let _ = writeln!(out, "# HELP {declared} {}", escape(mf.help()));
        for m in mf.get_metric() {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            match mf.get_field_type() {
                MetricType::COUNTER => sample(
                    &mut out,
                    &format!("{declared}_total"),
                    &labels,
                    None,
                    m.get_counter().get_value(),
                ),
                MetricType::GAUGE => {
                    sample(&mut out, name, &labels, None, m.get_gauge().get_value())
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let bucket = format!("{name}_bucket");
                    for b in h.get_bucket() {
                        let le = bound(b.upper_bound());
                        sample(
                            &mut out,
                            &bucket,
                            &labels,
                            Some(&le),
                            b.cumulative_count() as f64,
                        );
                    }
                    sample(
                        &mut out,
                        &bucket,
                        &labels,
                        Some("+Inf"),
                        h.get_sample_count() as f64,
                    );
                    sample(
                        &mut out,
                        &format!("{name}_count"),
                        &labels,
                        None,
                        h.get_sample_count() as f64,
                    );
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        &labels,
                        None,
                        h.get_sample_sum(),
                    );
                }
                MetricType::SUMMARY | MetricType::UNTYPED => {}
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], le: Option<&str>, value: f64) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", float(value));
}

/// Escapes `\`, `"` and newlines in label values and help text.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A bucket bound in OpenMetrics' canonical form (`1.0`, `0.25`, `+Inf`).
fn bound(v: f64) -> String {
    if v.is_finite() {
        format!("{v:?}")
    } else {
        float(v)
    }
}

/// A number as OpenMetrics writes it (`+Inf`, `-Inf`, `NaN`, integers without a fraction).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
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

    #[test]
    fn escapes() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(3.0), "3");
        assert_eq!(float(0.25), "0.25");
        assert_eq!(bound(1.0), "1.0");
        assert_eq!(bound(86400.0), "86400.0");
    }
}
