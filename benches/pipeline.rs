//! Criterion benches on real recorded events (`replay-data/prefect-3.9.1-main.jsonl`), with
//! every UUID rewritten per copy so the stream is large and unique: decode alone, dedup
//! alone, apply alone, the whole pipeline per frame, and the reference cost of merely reading
//! the same JSON with `serde_json` into `IgnoredAny`.
//!
//! Run: `cargo bench --bench pipeline` (frames/s and MB/s are printed as throughput).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prefect_events_exporter::ingest::decode::{decode, Decoded};
use prefect_events_exporter::ingest::dedup::Dedup;
use prefect_events_exporter::ingest::{Pipeline, PipelineConfig};
use prefect_events_exporter::model::event::RunKind;
use prefect_events_exporter::model::group_by::GroupBy;
use prefect_events_exporter::model::time::SECOND;
use prefect_events_exporter::state::tracker::DedupGauges;
use prefect_events_exporter::state::{StateConfig, Tracker};

#[path = "support/frames.rs"]
mod support;

use support::frames;

fn config() -> PipelineConfig {
    PipelineConfig {
        state: StateConfig {
            track_task_runs: true,
            terminal_retention: 3600 * SECOND,
            max_series: 10_000,
            max_tracked_runs: 1_000_000,
            group_by: vec![GroupBy::Deployment, GroupBy::WorkPool],
        },
        dedup_window: 1800 * SECOND,
        dedup_capacity: 4_000_000,
    }
}

fn benches(c: &mut Criterion) {
    let frames = frames();
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let mut group = c.benchmark_group("frames");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);

    group.bench_function("reference_serde_json_ignored_any", |b| {
        b.iter(|| {
            for frame in &frames {
                black_box(serde_json::from_slice::<serde::de::IgnoredAny>(frame).ok());
            }
        })
    });

    group.bench_function("decode", |b| {
        b.iter(|| {
            for frame in &frames {
                black_box(decode(frame));
            }
        })
    });

    let events: Vec<_> = frames
        .iter()
        .filter_map(|f| match decode(f) {
            Decoded::Event(e) => Some(e),
            _ => None,
        })
        .collect();

    group.bench_function("dedup", |b| {
        b.iter_batched(
            || Dedup::new(1800 * SECOND, 4_000_000),
            |mut dedup| {
                for e in &events {
                    black_box(dedup.check_and_insert(e.id, e.occurred));
                }
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("apply", |b| {
        b.iter_batched(
            || Tracker::new(config().state),
            |mut tracker| {
                let mut writer = tracker.writer(0);
                for e in &events {
                    if let (Some(kind), Some(change)) = (writer.tracked_kind(e), e.state.as_ref()) {
                        writer.apply(kind, e, change, true);
                    }
                }
                writer.finish(DedupGauges::default());
                black_box(tracker.shared().run_count(RunKind::FlowRun));
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("pipeline", |b| {
        b.iter_batched(
            || Pipeline::new(config()),
            |mut pipeline| {
                for chunk in frames.chunks(512) {
                    pipeline.ingest_batch(chunk);
                }
                black_box(pipeline.shared());
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    eprintln!(
        "bench stream: {} frames, {:.1} MB",
        frames.len(),
        bytes as f64 / 1e6
    );
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
