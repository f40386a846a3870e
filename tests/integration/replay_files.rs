//! `replay` over the files in `replay-data/`: each `NAME.expected.json` (counts written from
//! Prefect's REST truth or by hand) applies to `NAME.jsonl`, or to every `NAME-*.jsonl`
//! together when there is no `NAME.jsonl`. Task runs are tracked when the expected file has
//! `task_runs`.

use std::io::Write;

use serde_json::Value;

use crate::support::{assert_matches_expected, replay_data, replay_json, run_to_end};

fn check_expected(name: &str) {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(replay_data(&format!("{name}.expected.json"))).expect("expected file"),
    )
    .expect("expected JSON");
    let single = replay_data(&format!("{name}.jsonl"));
    let mut files: Vec<String> = if single.exists() {
        vec![single.display().to_string()]
    } else {
        let mut parts: Vec<String> = std::fs::read_dir(replay_data(""))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with(&format!("{name}-")) && f.ends_with(".jsonl"))
            .map(|f| replay_data(&f).display().to_string())
            .collect();
        parts.sort();
        parts
    };
    assert!(!files.is_empty(), "{name}: no input files");
    if expected.get("task_runs").is_some() {
        files.insert(0, "--task-runs".to_owned());
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let actual = replay_json(&args);
    assert_matches_expected(&actual, &expected, name);
}

#[test]
fn main_recording_gives_the_servers_rest_truth() {
    check_expected("prefect-3.9.1-main");
}

#[test]
fn burst_lossy_plus_backfill_gives_the_servers_rest_truth_for_flow_and_task_runs() {
    check_expected("prefect-3.9.1-burst");
}

#[test]
fn duplicates_change_nothing() {
    check_expected("synthetic-duplicates");
}

#[test]
fn out_of_order_events_sum_correctly_and_never_move_state_back() {
    check_expected("synthetic-out-of-order");
}

#[test]
fn self_transitions_are_counted_apart_and_never_as_entries() {
    check_expected("synthetic-self-transitions");
}

#[test]
fn odd_state_names_survive_exactly() {
    check_expected("synthetic-odd-names");
}

#[test]
fn hostile_file_counts_only_its_valid_events_and_every_bad_line() {
    check_expected("synthetic-hostile");
}

#[test]
fn every_expected_file_is_checked_by_a_test() {
    let names: Vec<String> = std::fs::read_dir(replay_data(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".expected.json").map(str::to_owned))
        .collect();
    let source = include_str!("replay_files.rs");
    for name in names {
        assert!(
            source.contains(&format!("check_expected(\"{name}\")")),
            "{name}.expected.json has no test"
        );
    }
}

#[test]
fn order_of_files_does_not_change_counts() {
    let lossy = replay_data("prefect-3.9.1-burst-live-lossy.jsonl");
    let backfill = replay_data("prefect-3.9.1-burst-backfill.jsonl");
    let (lossy, backfill) = (lossy.to_str().unwrap(), backfill.to_str().unwrap());
    let forward = replay_json(&["--task-runs", lossy, backfill]);
    let backward = replay_json(&["--task-runs", backfill, lossy]);
    for section in ["flow_runs", "task_runs"] {
        assert_eq!(forward[section], backward[section], "{section}");
    }
    assert_eq!(forward["events"], backward["events"]);
}

#[test]
fn oversize_line_is_rejected_and_the_next_line_counts() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let valid = std::fs::read_to_string(replay_data("synthetic-duplicates.jsonl")).unwrap();
    let first_event = valid.lines().nth(1).unwrap();
    file.write_all(&vec![b'x'; 5 * 1024 * 1024]).unwrap();
    file.write_all(b"\n").unwrap();
    file.write_all(first_event.as_bytes()).unwrap();
    file.write_all(b"\n").unwrap();
    let counts = replay_json(&[file.path().to_str().unwrap()]);
    assert_eq!(counts["events"]["rejected_by_reason"]["oversize"], 1);
    assert_eq!(counts["events"]["rejected"], 1);
    assert_eq!(counts["flow_runs"]["by_state_type"]["PENDING"], 1);
}

#[test]
fn replay_prints_a_throughput_line_on_stderr() {
    let file = replay_data("synthetic-duplicates.jsonl");
    let output = run_to_end(&["replay", file.to_str().unwrap()]);
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let line = stderr.lines().last().unwrap();
    assert!(line.starts_with("replayed 8 lines"), "{line}");
    assert!(
        line.contains("7 events") && line.contains("events/s"),
        "{line}"
    );
}

#[test]
fn replay_of_a_missing_file_exits_2_naming_it() {
    let output = run_to_end(&["replay", "/nonexistent/events.jsonl"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/events.jsonl"), "{stderr}");
}

#[test]
fn prometheus_output_of_replay_has_the_same_totals() {
    let file = replay_data("synthetic-out-of-order.jsonl");
    let output = run_to_end(&["replay", "--output", "prometheus", file.to_str().unwrap()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("prefect_flow_runs{state_type=\"COMPLETED\",state_name=\"Completed\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("prefect_flow_runs{state_type=\"RUNNING\",state_name=\"Running\"} 1\n"));
}

/// Regression (issue 16): one event with a far-future `occurred` moved the dedup window, the
/// retention clock and the resume point to year 9999. Replaying the main recording's first
/// 1,500 lines twice with such an event between them then counted every event twice
/// (duplicates 1,499 -> 0, entries 885 -> 1,770, total runs 283 -> 466).
#[test]
fn one_event_from_the_future_neither_blinds_dedup_nor_moves_time() {
    let main = std::fs::read_to_string(replay_data("prefect-3.9.1-main.jsonl")).unwrap();
    let first: Vec<&str> = main.lines().take(1_500).collect();
    let future = first
        .iter()
        .find(|l| l.contains("\"prefect.state-type\""))
        .expect("a state event")
        .replacen("\"occurred\":\"2026-", "\"occurred\":\"9999-", 1)
        .replacen("\"id\":\"", "\"id\":\"f", 1)
        .replacen("\"id\":\"f0", "\"id\":\"ff", 1);
    assert!(future.contains("9999-"), "{future}");
    let dir = tempfile::tempdir().unwrap();
    let once = dir.path().join("once.jsonl");
    let twice = dir.path().join("twice.jsonl");
    std::fs::write(&once, first.join("\n")).unwrap();
    let mut out = std::fs::File::create(&twice).unwrap();
    writeln!(out, "{}\n{future}\n{}", first.join("\n"), first.join("\n")).unwrap();

    let once = replay_json(&[once.to_str().unwrap()]);
    let twice = replay_json(&[twice.to_str().unwrap()]);
    let events = once["events"]["received"].as_u64().unwrap();
    assert_eq!(events, 1_499, "the issue's figures");
    assert_eq!(once["flow_runs"]["total"], 283);
    assert_eq!(twice["events"]["duplicates"].as_u64().unwrap(), events);
    assert_eq!(twice["events"]["rejected_by_reason"]["future_timestamp"], 1);
    assert_eq!(
        twice["flow_runs"], once["flow_runs"],
        "the second copy changes nothing"
    );
    let entries: u64 = twice["flow_runs"]["entries_by_state_name"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(entries, 885);
}

/// Regression (issue 16): in replay mode ages were measured against the wall clock
/// (`oldest_state_age_seconds` of about 512,716 s for a recording days old); they are measured
/// against the recording's newest event.
#[test]
fn replay_ages_are_measured_against_the_recordings_newest_event() {
    let event = |id: u32, run: u32, at: &str, ty: &str, name: &str| {
        format!(
            r#"{{"id":"00000000-0000-7000-8000-{id:012}","event":"prefect.flow-run.{name}","occurred":"{at}","resource":{{"prefect.resource.id":"prefect.flow-run.00000000-0000-4000-8000-{run:012}","prefect.state-type":"{ty}","prefect.state-name":"{name}"}},"payload":{{"initial_state":null,"validated_state":{{"type":"{ty}","name":"{name}"}}}}}}"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ages.jsonl");
    let lines = [
        event(1, 1, "2026-11-25T01:00:00Z", "PENDING", "Pending"),
        event(2, 2, "2026-11-25T01:01:40Z", "SCHEDULED", "Scheduled"),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let output = run_to_end(&["replay", "--output", "prometheus", file.to_str().unwrap()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let age = |state: &str, name: &str| {
        let prefix = format!(
            "prefect_flow_run_oldest_state_age_seconds{{state_type=\"{state}\",state_name=\"{name}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no age for {state}: {text}"))
    };
    assert_eq!(age("PENDING", "Pending"), "100");
    assert_eq!(age("SCHEDULED", "Scheduled"), "0");
}

#[test]
fn a_utf8_byte_order_mark_at_the_start_of_a_file_is_skipped() {
    let original = replay_data("synthetic-duplicates.jsonl");
    let mut marked = tempfile::NamedTempFile::new().unwrap();
    marked.write_all(b"\xEF\xBB\xBF").unwrap();
    marked
        .write_all(&std::fs::read(&original).unwrap())
        .unwrap();
    marked.flush().unwrap();
    let plain = replay_json(&[original.to_str().unwrap()]);
    let with_mark = replay_json(&[marked.path().to_str().unwrap()]);
    assert_eq!(with_mark["events"]["rejected"], 0);
    assert_eq!(with_mark["flow_runs"], plain["flow_runs"]);
    assert_eq!(with_mark["events"], plain["events"]);
}
