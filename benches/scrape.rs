//! Criterion bench of a `/metrics` scrape: rendering every family as text with 10,000
//! series of the large families (5,000 deployments, each with one PENDING run: one entry
//! series and one active series each), as `scripts/bench-e2e.sh` scrapes over HTTP.
//!
//! Each format twice: `direct/*` is what the service does (the state's families written
//! straight by the encoder, the exporter's and the process's gathered from the registry);
//! `registry/*` gathers the state's families from the `prometheus` registry too, as
//! library metric families, before the same encoder writes them.
//!
//! Run: `cargo bench --bench scrape`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use prefect_events_exporter::expose::collect::{Metrics, StatePath};
use prefect_events_exporter::expose::exposition::Format;
use prefect_events_exporter::ingest::{Pipeline, PipelineConfig};
use prefect_events_exporter::model::group_by::GroupBy;
use prefect_events_exporter::model::time::Clock;
use prefect_events_exporter::state::status::Status;
use prefect_events_exporter::state::StateConfig;

const DEPLOYMENTS: usize = 5_000;

fn pipeline() -> Pipeline {
    let mut p = Pipeline::new(PipelineConfig {
        state: StateConfig {
            track_task_runs: false,
            terminal_retention: 3_600_000_000,
            max_series: 10_000,
            max_tracked_runs: 1_000_000,
            group_by: vec![GroupBy::Deployment],
        },
        dedup_window: 1_800_000_000,
        dedup_capacity: 4_000_000,
    });
    let frames: Vec<String> = (0..DEPLOYMENTS)
        .map(|i| {
            format!(
                concat!(
                    r#"{{"id":"00000000-0000-7000-9000-{i:012x}","event":"prefect.flow-run.Pending","#,
                    r#""occurred":"2026-11-25T01:00:00.000001Z","resource":{{"prefect.resource.id":"#,
                    r#""prefect.flow-run.00000000-0000-4000-8000-{i:012x}","prefect.state-type":"PENDING","#,
                    r#""prefect.state-name":"Pending"}},"related":[{{"prefect.resource.id":"prefect.deployment.{i}","#,
                    r#""prefect.resource.role":"deployment","prefect.resource.name":"deployment-{i}"}}],"#,
                    r#""payload":{{"initial_state":null,"validated_state":{{"type":"PENDING","name":"Pending"}}}}}}"#
                ),
                i = i
            )
        })
        .collect();
    p.ingest_batch(&frames);
    p
}

fn benches(c: &mut Criterion) {
    let p = pipeline();
    let clock: Clock = Arc::new(|| 1_800_000_000_000_000);
    let mut group = c.benchmark_group("scrape");
    for (path, name) in [
        (StatePath::Direct, "direct"),
        (StatePath::Registry, "registry"),
    ] {
        let metrics =
            Metrics::with_state_path(p.shared(), Arc::new(Status::new()), clock.clone(), path);
        let text = metrics.render(Format::Prometheus);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(series > 2 * DEPLOYMENTS, "{series} series");
        println!(
            "scrape bench ({name}): {series} series, {} bytes",
            text.len()
        );
        group.bench_function(format!("{name}/prometheus_text"), |b| {
            b.iter(|| black_box(metrics.render(Format::Prometheus)))
        });
        group.bench_function(format!("{name}/openmetrics"), |b| {
            b.iter(|| black_box(metrics.render(Format::OpenMetrics)))
        });
    }
    group.finish();
}

criterion_group!(scrape, benches);
criterion_main!(scrape);
