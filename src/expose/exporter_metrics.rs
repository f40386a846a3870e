//! The exporter's own metrics brought up to date at scrape time: the library metrics of
//! [`ExporterMetrics`] (defined in [`crate::expose::catalogue`]) are set from one copy of the
//! shared state's stream and check counters, taken when Prometheus asks.
//!
//! Why at scrape time: the pipeline already keeps these counts in the state it owns (they are
//! in the state file, so they survive restarts), and it must not pay for metrics per event.
//! Copying them into the registry once per scrape costs a few dozen atomic stores; updating
//! library metrics per event would cost atomics on the ingestion path for nothing a scrape
//! does not already read. A counter is moved to the state's value by adding the difference,
//! so the library's counter type (which only goes up) says the same as the state.
//!
//! The delay histogram is observed by the pipeline into the state's own histogram; a
//! library `Histogram` cannot be set from a copy, so [`HistogramSnapshot`] is a small
//! `prometheus::core::Collector` that gathers the copy taken at the scrape as a histogram
//! family.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::IntCounter;

use crate::expose::catalogue::ExporterMetrics;
use crate::model::event::{RunKind, StateType};
use crate::model::reject::RejectReason;
use crate::model::time::as_seconds;
use crate::state::histogram::Histogram;
use crate::state::status::Status;
use crate::state::Shared;

impl ExporterMetrics {
    /// Sets every stream, state and check family from the state's values now. Callers
    /// serialize refreshes (a counter moves by the difference it reads).
    pub(crate) fn refresh(&self, shared: &Shared, status: &Status) {
        let (events, checks, deficits) = shared.with_counts(|c| {
            let deficits: Vec<(RunKind, [u64; 9])> =
                shared.kinds().map(|k| (k, c.deficits(k))).collect();
            (c.events.clone(), c.checks.clone(), deficits)
        });

        advance(&self.received.with_label_values(&["state"]), events.state);
        advance(&self.received.with_label_values(&["other"]), events.other);
        advance(&self.duplicates, events.duplicates);
        for reason in RejectReason::ALL {
            let counter = self.rejected.with_label_values(&[reason.as_str()]);
            advance(&counter, events.rejected[reason.index()]);
        }
        self.connected.set(i64::from(status.connected()));
        for (reason, n) in status.reconnects_by_reason() {
            advance(&self.reconnects.with_label_values(&[reason.as_str()]), n);
        }
        match events.last_occurred {
            Some(last) => self
                .last_event
                .with_label_values(&[""; 0])
                .set(as_seconds(last)),
            None => self.last_event.reset(),
        }
        self.delay.set(&events.delay);
        advance(&self.chain_gaps, events.chain_gaps);
        let tracked: usize = shared.kinds().map(|k| shared.run_count(k)).sum();
        self.tracked.set(saturating_i64(tracked as u64));
        self.dedup_ids.set(saturating_i64(events.dedup_ids));
        advance(&self.dedup_evicted, events.dedup_evicted);
        advance(&self.retired, events.runs_retired);
        advance(&self.evicted, events.runs_evicted);
        let folded = &self.folded;
        advance(
            &folded.with_label_values(&["state_name"]),
            events.folded_state_names,
        );
        advance(
            &folded.with_label_values(&["label_set"]),
            events.folded_label_sets,
        );

        let windows = &self.windows;
        advance(&windows.with_label_values(&["match"]), checks.windows_match);
        advance(
            &windows.with_label_values(&["repaired"]),
            checks.windows_repaired,
        );
        advance(
            &windows.with_label_values(&["failed"]),
            checks.windows_failed,
        );
        advance(&self.repaired, checks.events_repaired);
        let truncated = status.repair_truncated();
        for limit in ["window", "interval"] {
            let n = truncated.get(limit).copied().unwrap_or(0);
            advance(&self.repair_truncated.with_label_values(&[limit]), n);
        }
        for (kind, deficit) in &deficits {
            for ty in StateType::ALL {
                self.deficit
                    .with_label_values(&[kind.metric_stem(), ty.as_str()])
                    .set(saturating_i64(deficit[ty.index()]));
            }
        }
        for ty in StateType::ALL {
            let label = [ty.as_str()];
            advance(
                &self.corrections.with_label_values(&label),
                checks.corrections[ty.index()],
            );
            self.drift
                .with_label_values(&label)
                .set(checks.last_drift[ty.index()]);
        }
        advance(&self.reconciliations, checks.reconciliations);
        advance(&self.backfill_gaps, checks.backfill_gaps);

        match shared.persist_stats() {
            Some(p) => {
                advance(&self.state_writes.with_label_values(&["ok"]), p.writes_ok);
                advance(
                    &self.state_writes.with_label_values(&["error"]),
                    p.writes_failed,
                );
                let none = [""; 0];
                self.state_bytes
                    .with_label_values(&none)
                    .set(saturating_i64(p.bytes));
                self.state_write_seconds
                    .with_label_values(&none)
                    .set(p.write_seconds);
                self.state_pause_seconds
                    .with_label_values(&none)
                    .set(p.pause_seconds);
            }
            None => {
                self.state_writes.reset();
                self.state_bytes.reset();
                self.state_write_seconds.reset();
                self.state_pause_seconds.reset();
            }
        }
    }
}

/// Moves `counter` to `value`: up by the difference, or, should the source ever start again
/// below it, from zero (which Prometheus reads as a counter reset).
fn advance(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value < current {
        counter.reset();
        counter.inc_by(value);
    } else {
        counter.inc_by(value - current);
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A histogram family without labels whose observations are kept elsewhere: set from a copy
/// at scrape time, gathered by the registry like a library histogram. Clones share the value.
#[derive(Clone, Debug)]
pub(crate) struct HistogramSnapshot {
    desc: Desc,
    value: Arc<Mutex<Option<proto::Histogram>>>,
}

impl HistogramSnapshot {
    /// A histogram family `name` with `help`; no sample until [`HistogramSnapshot::set`].
    pub(crate) fn new(name: &str, help: &str) -> prometheus::Result<HistogramSnapshot> {
        Ok(HistogramSnapshot {
            desc: Desc::new(name.to_owned(), help.to_owned(), Vec::new(), HashMap::new())?,
            value: Arc::new(Mutex::new(None)),
        })
    }

    /// The family's value from now on: a copy of `histogram`.
    pub(crate) fn set(&self, histogram: &Histogram) {
        *self.value.lock() = Some(proto_histogram(histogram));
    }
}

/// A state histogram as a `prometheus` histogram: cumulative counts per finite bound (the
/// encoder adds `+Inf` from the count), count and sum.
pub(crate) fn proto_histogram(histogram: &Histogram) -> proto::Histogram {
    let mut h = proto::Histogram::default();
    h.set_sample_count(histogram.count());
    h.set_sample_sum(histogram.sum());
    h.set_bucket(
        histogram
            .cumulative()
            .map(|(bound, count)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(count);
                b
            })
            .collect(),
    );
    h
}

impl Collector for HistogramSnapshot {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        if let Some(h) = self.value.lock().clone() {
            let mut metric = proto::Metric::default();
            metric.set_histogram(h);
            family.set_metric(vec![metric]);
        }
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;

    use super::*;
    use crate::expose::exposition::{Encoder, Format};
    use crate::state::test_support::{apply, at, tracker, waiting_runs};

    /// The sample lines of every family in `registry` whose name starts with `prefix`.
    fn samples(registry: &Registry, prefix: &str) -> Vec<String> {
        let mut encoder = Encoder::new(Format::Prometheus);
        for family in registry.gather() {
            encoder.gathered(&family);
        }
        encoder
            .finish()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn families_follow_the_state_and_optional_ones_appear_with_their_value() {
        let registry = Registry::new();
        let metrics = ExporterMetrics::register(&registry).unwrap();
        let status = Status::new();
        let mut t = tracker();
        metrics.refresh(t.shared(), &status);
        let received = "prefect_exporter_events_received_total";
        assert_eq!(
            samples(&registry, received),
            [
                format!("{received}{{kind=\"other\"}} 0"),
                format!("{received}{{kind=\"state\"}} 0"),
            ]
        );
        assert_eq!(
            samples(&registry, "prefect_exporter_last_event_timestamp_seconds"),
            Vec::<String>::new(),
            "no event applied yet"
        );
        assert_eq!(
            samples(&registry, "prefect_exporter_state_file"),
            Vec::<String>::new(),
            "no --state-file"
        );

        apply(&mut t, &waiting_runs());
        t.shared().enable_persist_stats();
        t.shared().update_persist_stats(|p| {
            p.writes_ok = 2;
            p.writes_failed = 1;
            p.bytes = 1234;
            p.write_seconds = 0.5;
            p.pause_seconds = 0.25;
        });
        status.set_connected(true);
        status.count_reconnect("server_restart");
        status.count_reconnect("server_restart");
        metrics.refresh(t.shared(), &status);
        metrics.refresh(t.shared(), &status);
        assert_eq!(
            samples(&registry, received),
            [
                format!("{received}{{kind=\"other\"}} 0"),
                format!("{received}{{kind=\"state\"}} 6"),
            ],
            "a second refresh adds nothing"
        );
        assert_eq!(
            samples(&registry, "prefect_exporter_last_event_timestamp_seconds"),
            [format!(
                "prefect_exporter_last_event_timestamp_seconds {}",
                as_seconds(at(95))
            )]
        );
        assert_eq!(
            samples(&registry, "prefect_exporter_state_file"),
            [
                "prefect_exporter_state_file_bytes 1234",
                "prefect_exporter_state_file_pause_seconds 0.25",
                "prefect_exporter_state_file_write_seconds 0.5",
                "prefect_exporter_state_file_writes_total{result=\"error\"} 1",
                "prefect_exporter_state_file_writes_total{result=\"ok\"} 2",
            ]
        );
        assert_eq!(
            samples(&registry, "prefect_exporter_stream_"),
            [
                "prefect_exporter_stream_connected 1",
                "prefect_exporter_stream_reconnects_total{reason=\"server_restart\"} 2",
            ]
        );
        assert_eq!(
            samples(&registry, "prefect_exporter_tracked_resources"),
            ["prefect_exporter_tracked_resources 4"]
        );
        let delay = samples(&registry, "prefect_exporter_event_delay_seconds_count");
        assert_eq!(delay, ["prefect_exporter_event_delay_seconds_count 6"]);
    }

    #[test]
    fn a_counter_moves_to_the_state_value_and_restarts_below_it() {
        let counter = IntCounter::new("c_total", "A count.").unwrap();
        advance(&counter, 5);
        assert_eq!(counter.get(), 5);
        advance(&counter, 7);
        advance(&counter, 7);
        assert_eq!(counter.get(), 7);
        advance(&counter, 3);
        assert_eq!(
            counter.get(),
            3,
            "a source that started again: a counter reset"
        );
    }
}
