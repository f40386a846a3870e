//! Property tests in place of `cargo fuzz` (which needs a nightly toolchain this project's
//! machines and CI do not have): the frame decoder and the HTTP query parameters, fed
//! arbitrary bytes and mutations of every recorded frame in `replay-data/` (the seed corpus).
//!
//! Properties: nothing panics; every frame has exactly one outcome, and the counters account
//! for each (an event is counted as received, anything else unusable as rejected); a query
//! is either answered or refused with a message. `PROPTEST_CASES` raises the case count
//! (CI runs the defaults below, a few seconds).

use std::sync::{Arc, OnceLock};

use prefect_events_exporter::expose::resources::{ResourceList, ResourceView};
use prefect_events_exporter::ingest::decode::{decode, Decoded};
use prefect_events_exporter::ingest::{Outcome, Pipeline, PipelineConfig};
use prefect_events_exporter::state::{Shared, StateConfig};
use prefect_events_exporter::web::query::{parse_query, percent_decode, resource_query};
use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::support::replay_data;

/// Every line of every recording and synthetic file: the seed corpus.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(replay_data("")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                let bytes = std::fs::read(&path).unwrap();
                lines.extend(bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec));
            }
        }
        assert!(lines.len() > 5_000, "the corpus holds the recordings");
        lines
    })
}

fn pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig {
        state: StateConfig {
            track_task_runs: true,
            terminal_retention: 3_600_000_000,
            max_series: 100,
            max_tracked_runs: 1_000_000,
            group_by: vec![],
        },
        dedup_window: 1_800_000_000,
        dedup_capacity: 100_000,
    })
}

/// A pipeline holding the main recording, for answering queries.
fn loaded() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut p = pipeline();
        let bytes = std::fs::read(replay_data("prefect-3.9.1-main.jsonl")).unwrap();
        p.ingest_batch(bytes.split(|&b| b == b'\n'));
        p.shared()
    })
}

/// One edit of a seed frame.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Splice(usize, usize),
}

fn mutate(seed: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for edit in edits {
        let len = out.len().max(1);
        match edit {
            Mutation::Flip(at, mask) => {
                if let Some(b) = out.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Mutation::Truncate(at) => out.truncate(at % len),
            Mutation::Insert(at, bytes) => {
                let at = (at % len).min(out.len());
                out.splice(at..at, bytes.iter().copied());
            }
            Mutation::Splice(from, to) => {
                let (a, b) = (from % len, to % len);
                let (a, b) = (a.min(b).min(out.len()), a.max(b).min(out.len()));
                let copy = out[a..b].to_vec();
                out.extend_from_slice(&copy);
            }
        }
    }
    out
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes JSON cares about, so inserts often make structure rather than noise.
    let interesting = prop::sample::select(vec![
        b'{', b'}', b'[', b']', b'"', b'\\', b':', b',', b'0', b'-', b'e', b'u', 0xff, 0x00,
    ]);
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(a, m)| Mutation::Flip(a, m)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(interesting, 1..8))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ]
}

/// Ingests `frames` and checks that the counters account for every outcome.
fn ingest_and_account(frames: &[Vec<u8>]) {
    let mut p = pipeline();
    let mut outcomes = Vec::with_capacity(frames.len());
    let mut batch = p.batch();
    for frame in frames {
        outcomes.push(batch.ingest(frame));
    }
    batch.finish();
    let events = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Applied | Outcome::Other | Outcome::Duplicate))
        .count() as u64;
    let rejected = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Rejected(_)))
        .count() as u64;
    p.shared().with_counts(|counts| {
        assert_eq!(counts.events.state + counts.events.other, events);
        assert_eq!(counts.events.rejected_total(), rejected);
    });
}

proptest! {
    #![proptest_config(Config::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        ingest_and_account(&[bytes]);
    }

    #[test]
    fn mutated_recorded_frames_are_decoded_or_rejected_and_counted(
        seeds in prop::collection::vec(any::<prop::sample::Index>(), 1..16),
        edits in prop::collection::vec(mutation(), 1..4),
    ) {
        let corpus = corpus();
        let frames: Vec<Vec<u8>> = seeds
            .iter()
            .map(|i| mutate(i.get::<Vec<u8>>(corpus), &edits))
            .collect();
        for frame in &frames {
            if let Decoded::Event(event) = decode(frame) {
                // A decoded event's fields are usable as they are.
                prop_assert!(!event.name.is_empty());
                prop_assert!(!event.resource_id.is_empty());
            }
        }
        ingest_and_account(&frames);
    }

    #[test]
    fn arbitrary_query_strings_are_answered_or_refused(query in ".{0,200}") {
        let _ = percent_decode(&query);
        if let Ok(params) = parse_query(&query) {
            if let Ok(parsed) = resource_query(&params) {
                let list = ResourceList::build(loaded(), &parsed, 1_800_000_000_000_000);
                prop_assert!(serde_json::to_string(&list).is_ok());
            }
        }
        if let Some(id) = percent_decode(&query) {
            let _ = ResourceView::find(loaded(), &id, 0);
        }
    }

    #[test]
    fn structured_queries_with_hostile_values_are_answered_or_refused(
        pairs in prop::collection::vec(
            (
                prop::sample::select(vec!["kind", "state_type", "state_name", "older_than", "limit", "x", ""]),
                ".{0,24}",
            ),
            0..6,
        ),
    ) {
        let query: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let params = parse_query(&query).expect("well-formed percent-encoding");
        prop_assert_eq!(params.len(), pairs.len());
        for ((k, v), (pk, pv)) in pairs.iter().zip(&params) {
            prop_assert_eq!(*k, pk.as_str());
            prop_assert_eq!(v, pv);
        }
        match resource_query(&params) {
            Ok(parsed) => {
                let list = ResourceList::build(loaded(), &parsed, 1_800_000_000_000_000);
                prop_assert!(serde_json::to_string(&list).is_ok());
            }
            Err(message) => prop_assert!(!message.to_string().is_empty()),
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
