//! libFuzzer target: the state-file reader (`persist`) on arbitrary bytes, as a fresh
//! exporter loads `--state-file` at start. It never panics: a file is either refused with its
//! typed error (`Unusable`, whose message says what is wrong) or loaded, and a loaded state
//! then takes a recording's events and answers `/api/v1/resources` without panicking.
//!
//! The first byte picks how the rest is used: even, as the whole file; odd, as the payload
//! of a file this target frames itself (magic, version, length and CRC-32 right), so the
//! fuzzer reaches the decoding and cross-checks behind the checksum.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prefect_events_exporter::expose::resources::{ResourceList, ResourceQuery, DEFAULT_LIMIT};
use prefect_events_exporter::ingest::{Pipeline, PipelineConfig};
use prefect_events_exporter::load_state_for_fuzzing;
use prefect_events_exporter::model::event::RunKind;
use prefect_events_exporter::model::group_by::GroupBy;
use prefect_events_exporter::model::time::{now_micros, SECOND};
use prefect_events_exporter::state::StateConfig;

/// The recording the seed state file was written from (`seed.sh`), replayed after a load.
const RECORDING: &[u8] = include_bytes!("../../replay-data/synthetic-out-of-order.jsonl");

/// `run --replay` with the default flags, as the seed was written.
fn pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig {
        state: StateConfig {
            track_task_runs: false,
            terminal_retention: 3600 * SECOND,
            max_series: 10_000,
            max_tracked_runs: 1_000_000,
            group_by: vec![GroupBy::Deployment, GroupBy::WorkPool],
        },
        dedup_window: 1800 * SECOND,
        dedup_capacity: 4_000_000,
    })
}

/// `payload` framed as a version-1 state file.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut file = b"PEXSTATE".to_vec();
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(payload);
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    file.extend_from_slice(b"PEX!");
    file
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        framed(rest)
    };
    let mut pipeline = pipeline();
    match load_state_for_fuzzing(&file, &mut pipeline, "replay") {
        Err(unusable) => assert!(!unusable.to_string().is_empty()),
        Ok(_) => {
            pipeline.ingest_batch(RECORDING.split(|&b| b == b'\n'));
            let shared = pipeline.shared();
            for kind in [RunKind::FlowRun, RunKind::TaskRun] {
                let query = ResourceQuery {
                    kind,
                    state_type: None,
                    state_name: None,
                    older_than: None,
                    limit: DEFAULT_LIMIT,
                };
                let list = ResourceList::build(&shared, &query, now_micros());
                assert!(list.resources.len() <= DEFAULT_LIMIT);
            }
        }
    }
});
