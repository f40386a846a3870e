//! Hostile streams: a flood of distinct run ids, distinct state names and distinct group-by
//! values. The caps (`--max-series`, `--dedup-capacity`, `--terminal-retention`) hold, every
//! fold and eviction is counted, and peak memory does not grow with the flood's length.
//!
//! Expected values are worked out by hand from the stream's shape: event `i` (of `n`) is a
//! new run going RUNNING -> COMPLETED with state name `Done-i` and deployment `dep-i`,
//! occurring `i` ms after the first.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::support::run_to_end;

const MAX_SERIES: u64 = 50;
const DEDUP_CAPACITY: u64 = 20_000;
/// `--terminal-retention 10s` at one event per ms keeps the runs of the last 10,001 ms.
const RETAINED: u64 = 10_001;
/// `--max-tracked-runs` (above `RETAINED`, so the terminal flood never reaches it).
const MAX_TRACKED: u64 = 15_000;
/// How much more the peak RSS of the larger flood may be. The allocator's page retention
/// moves peaks by up to ~15 MB from run to run (44, 58, 44 MB at 50k, 200k, 800k events);
/// holding the 150,000 extra runs would add about 200 MB.
const RSS_SLACK_MB: f64 = 32.0;

/// `n` new runs entering a state: `Done-i` (COMPLETED) when `terminal`, else RUNNING.
fn write_flood(path: &Path, n: u64, terminal: bool) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let (s, ms) = (i / 1000, i % 1000);
        let (ty, name) = if terminal {
            ("COMPLETED", format!("Done-{i}"))
        } else {
            ("RUNNING", "Running".to_owned())
        };
        writeln!(
            out,
            concat!(
                r#"{{"id":"{i:08x}-0000-7000-8000-000000000000","event":"prefect.flow-run.{name}","#,
                r#""occurred":"2026-11-25T02:{m:02}:{s:02}.{ms:03}000Z","#,
                r#""resource":{{"prefect.resource.id":"prefect.flow-run.{i:08x}-0000-4000-8000-000000000000","#,
                r#""prefect.state-type":"{ty}","prefect.state-name":"{name}"}},"#,
                r#""related":[{{"prefect.resource.id":"prefect.deployment.{i:08x}-0000-4000-8000-000000000000","#,
                r#""prefect.resource.role":"deployment","prefect.resource.name":"dep-{i}"}}],"#,
                r#""payload":{{"initial_state":{{"type":"RUNNING","name":"Running"}},"#,
                r#""validated_state":{{"type":"{ty}","name":"{name}"}}}}}}"#
            ),
            i = i,
            ty = ty,
            name = name,
            m = s / 60,
            s = s % 60,
            ms = ms,
        )
        .unwrap();
    }
}

/// Replays a flood of `n` events (see [`write_flood`]); returns the metrics (name with
/// labels -> value) and the peak RSS in MB from the summary line.
fn replay_flood(dir: &Path, n: u64, terminal: bool) -> (HashMap<String, f64>, f64) {
    let path = dir.join(format!("flood-{n}-{terminal}.jsonl"));
    write_flood(&path, n, terminal);
    let output = run_to_end(&[
        "replay",
        path.to_str().unwrap(),
        "--output",
        "prometheus",
        "--max-series",
        &MAX_SERIES.to_string(),
        "--dedup-capacity",
        &DEDUP_CAPACITY.to_string(),
        "--terminal-retention",
        "10s",
        "--max-tracked-runs",
        &MAX_TRACKED.to_string(),
    ]);
    assert!(output.status.success());
    let metrics = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let rss = stderr
        .split("peak RSS ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .expect("the summary reports the peak RSS");
    (metrics, rss)
}

fn check_caps(metrics: &HashMap<String, f64>, n: u64) {
    let get = |name: &str| -> u64 {
        *metrics
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing")) as u64
    };
    assert_eq!(
        get("prefect_flow_runs{state_type=\"COMPLETED\",state_name=\"__other__\"}"),
        n - MAX_SERIES
    );
    assert_eq!(
        get("prefect_exporter_series_folded_total{what=\"state_name\"}"),
        n - MAX_SERIES
    );
    assert_eq!(
        get("prefect_exporter_series_folded_total{what=\"label_set\"}"),
        n - MAX_SERIES
    );
    assert_eq!(get("prefect_exporter_dedup_ids"), DEDUP_CAPACITY);
    assert_eq!(
        get("prefect_exporter_dedup_evicted_total"),
        n - DEDUP_CAPACITY
    );
    assert_eq!(get("prefect_exporter_tracked_resources"), RETAINED);
    assert_eq!(get("prefect_exporter_runs_retired_total"), n - RETAINED);
    let label_sets = metrics
        .keys()
        .filter(|k| k.starts_with("prefect_flow_run_state_entries_total{"))
        .count() as u64;
    assert!(
        label_sets <= 2 * (MAX_SERIES + 1),
        "{label_sets} entry series for {MAX_SERIES} names and label sets"
    );
}

#[test]
fn floods_of_ids_names_and_label_values_stay_within_the_caps() {
    let dir = tempfile::tempdir().unwrap();
    let (small, small_rss) = replay_flood(dir.path(), 50_000, true);
    check_caps(&small, 50_000);
    let (large, large_rss) = replay_flood(dir.path(), 200_000, true);
    check_caps(&large, 200_000);
    eprintln!("peak RSS: {small_rss} MB at 50,000 events, {large_rss} MB at 200,000");
    assert!(
        large_rss < small_rss + RSS_SLACK_MB,
        "memory grew with the flood: {small_rss} MB -> {large_rss} MB"
    );
}

#[test]
fn a_flood_of_runs_that_never_finish_stays_within_max_tracked_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut rss = Vec::new();
    for n in [50_000, 200_000] {
        let (metrics, peak) = replay_flood(dir.path(), n, false);
        let get = |name: &str| {
            *metrics
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing")) as u64
        };
        // Every run still counts; only the longest-waiting ones left memory.
        assert_eq!(
            get("prefect_flow_runs{state_type=\"RUNNING\",state_name=\"Running\"}"),
            n
        );
        assert_eq!(get("prefect_exporter_tracked_resources"), MAX_TRACKED);
        assert_eq!(get("prefect_exporter_runs_evicted_total"), n - MAX_TRACKED);
        // The survivors are the newest runs, whose deployments all folded into __other__.
        assert_eq!(
            get("prefect_flow_runs_active{state_type=\"RUNNING\",state_name=\"Running\",deployment=\"__other__\",work_pool=\"__other__\"}"),
            MAX_TRACKED
        );
        rss.push(peak);
    }
    eprintln!(
        "peak RSS: {} MB at 50,000 running runs, {} MB at 200,000",
        rss[0], rss[1]
    );
    assert!(
        rss[1] < rss[0] + RSS_SLACK_MB,
        "memory grew with the flood: {rss:?}"
    );
}
