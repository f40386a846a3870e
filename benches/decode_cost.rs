//! The decoder's cost per frame, for instruction counting under callgrind (repeatable on a
//! busy machine, unlike wall-clock time): the bench stream of `pipeline`, decoded `passes`
//! times by one of `decode`, `reference` (`serde_json` into `IgnoredAny`, merely reading the
//! same bytes) or `none` (only building the stream), each in its own non-inlined function so
//! `--toggle-collect` can isolate it.
//!
//! ```text
//! cargo bench -j1 --bench decode_cost --no-run
//! valgrind --tool=callgrind --toggle-collect='decode_cost::run_*' \
//!     target/release/deps/decode_cost-<hash> decode 1
//! ```
//!
//! Under plain `cargo bench` it runs each mode once and prints nanoseconds per frame.

use std::hint::black_box;
use std::time::Instant;

use prefect_events_exporter::ingest::decode::{decode, Decoded};

#[path = "support/frames.rs"]
mod support;

#[inline(never)]
fn run_decode(frames: &[Vec<u8>]) -> usize {
    let mut events = 0;
    for frame in frames {
        if let Decoded::Event(e) = black_box(decode(black_box(frame))) {
            events += usize::from(!e.name.is_empty());
        }
    }
    events
}

#[inline(never)]
fn run_reference(frames: &[Vec<u8>]) -> usize {
    let mut ok = 0;
    for frame in frames {
        ok += usize::from(
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(
                frame,
            )))
            .is_ok(),
        );
    }
    ok
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let frames = support::frames();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let passes: usize = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(1);
    let modes: Vec<&str> = match args.first().map(String::as_str) {
        Some(mode @ ("decode" | "reference" | "none")) => vec![mode],
        _ => vec!["reference", "decode"],
    };
    for mode in modes {
        let start = Instant::now();
        let mut count = 0;
        for _ in 0..passes {
            count += match mode {
                "decode" => run_decode(&frames),
                "reference" => run_reference(&frames),
                _ => 0,
            };
        }
        let per_frame = start.elapsed().as_nanos() as f64 / (passes * frames.len()) as f64;
        eprintln!(
            "{mode}: {} frames ({bytes} bytes) x {passes}: {count} ok, {per_frame:.0} ns/frame",
            frames.len()
        );
    }
}
