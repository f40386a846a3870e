//! Reference programs for `scripts/bench-e2e.sh --only decode`: how fast can a frames file
//! (one websocket frame per line, `{"type":"event","event":{…}}`) be read at all, and how fast
//! does the obvious serde program count it?
//!
//! `frame_baselines ignored-any FILE`: `serde_json::from_slice::<IgnoredAny>` per line, which
//! validates the JSON and builds nothing (the reading-only reference).
//!
//! `frame_baselines naive FILE`: a typed, borrowed serde decode of the fields the exporter
//! reads, a `HashSet<u128>` of event ids for dedup and a `HashMap<String, …>` of runs with
//! their current state and per-state entry counts: what a competent first version would do.
//!
//! Each prints one line: `frames=N seconds=S frames_per_second=R` (and the counts it made,
//! so the work cannot be optimised away and can be checked against `replay`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::de::IgnoredAny;
use serde::Deserialize;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    event: Option<Event<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    occurred: Cow<'a, str>,
    #[serde(borrow)]
    resource: HashMap<Cow<'a, str>, Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<Payload<'a>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    validated_state: Option<State<'a>>,
}

#[derive(Deserialize)]
struct State<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// A run as the naive program keeps it.
#[derive(Default)]
struct Run {
    state: (String, String),
    occurred: String,
    entries: HashMap<(String, String), u64>,
}

fn parse_id(id: &str) -> Option<u128> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    u128::from_str_radix(&hex, 16).ok()
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

fn ignored_any(bytes: &[u8]) -> (u64, String) {
    let (mut frames, mut bad) = (0u64, 0u64);
    for line in lines(bytes) {
        match serde_json::from_slice::<IgnoredAny>(line) {
            Ok(_) => frames += 1,
            Err(_) => bad += 1,
        }
    }
    (frames, format!("invalid={bad}"))
}

fn naive(bytes: &[u8]) -> (u64, String) {
    let mut seen: HashSet<u128> = HashSet::new();
    let mut runs: HashMap<String, Run> = HashMap::new();
    let (mut frames, mut duplicates, mut entries) = (0u64, 0u64, 0u64);
    for line in lines(bytes) {
        let Ok(frame) = serde_json::from_slice::<Frame>(line) else {
            continue;
        };
        let Some(event) = frame.event else { continue };
        frames += 1;
        let Some(id) = parse_id(&event.id) else {
            continue;
        };
        if !seen.insert(id) {
            duplicates += 1;
            continue;
        }
        let Some(resource) = event.resource.get("prefect.resource.id") else {
            continue;
        };
        if !(resource.starts_with("prefect.flow-run.") || resource.starts_with("prefect.task-run."))
            || !event.event.contains('.')
        {
            continue;
        }
        let to = match event.payload.and_then(|p| p.validated_state) {
            Some(state) => (state.kind.into_owned(), state.name.into_owned()),
            None => match (
                event.resource.get("prefect.state-type"),
                event.resource.get("prefect.state-name"),
            ) {
                (Some(kind), Some(name)) => (kind.to_string(), name.to_string()),
                _ => continue,
            },
        };
        let run = runs.entry(resource.to_string()).or_default();
        *run.entries.entry(to.clone()).or_default() += 1;
        entries += 1;
        if *event.occurred >= *run.occurred {
            run.occurred = event.occurred.into_owned();
            run.state = to;
        }
    }
    (
        frames,
        format!(
            "runs={} entries={entries} duplicates={duplicates}",
            runs.len()
        ),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: frame_baselines ignored-any|naive FILE");
        std::process::exit(2);
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: {path}: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let (frames, counts) = match mode.as_str() {
        "ignored-any" => ignored_any(&bytes),
        "naive" => naive(&bytes),
        other => {
            eprintln!("error: unknown mode {other:?} (ignored-any or naive)");
            std::process::exit(2);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "frames={frames} seconds={seconds:.4} frames_per_second={:.0} {counts}",
        frames as f64 / seconds
    );
}
