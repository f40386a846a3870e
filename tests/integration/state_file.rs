//! `--state-file`: counts survive SIGKILL and SIGTERM restarts exactly, against a live
//! stream from `serve-replay`; unusable files are refused (exit 2) or discarded on request.
//!
//! Ground truth: `replay` of the same recording in one uninterrupted pass, whose flow-run
//! counts equal the server's REST truth (`prefect-3.9.1-main.expected.json`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flags::one_line_error;
use crate::support::{replay_data, replay_json, wait_for_flow_runs, Service};

const FIELDS: [&str; 5] = [
    "total",
    "by_state_type",
    "by_state_name",
    "entries_by_state_name",
    "transitions",
];

fn main_file() -> String {
    replay_data("prefect-3.9.1-main.jsonl")
        .display()
        .to_string()
}

/// The exporter against `api`, persisting to `state` every `snapshot`, with no REST
/// baseline, reconciliation or verification: only the stream and the state file can make the
/// counts exact.
fn exporter(api: &str, state: &Path, snapshot: &str) -> Service {
    Service::start(&exporter_args(api, state, snapshot))
}

fn exporter_args<'a>(api: &'a str, state: &'a Path, snapshot: &'a str) -> Vec<&'a str> {
    vec![
        "--prefect-api-url",
        api,
        "--state-file",
        state.to_str().unwrap(),
        "--snapshot-interval",
        snapshot,
        "--no-bootstrap",
        "--reconcile-interval",
        "0",
        "--verify-interval",
        "0",
    ]
}

fn received(service: &Service) -> u64 {
    service.get("/api/v1/counts").json()["events"]["received"]
        .as_u64()
        .unwrap()
}

/// What the file holds, read by an exporter whose server does not answer: its counts can
/// only come from the file.
fn restored_counts(state: &Path) -> Value {
    let mut args = vec!["run", "--listen", "127.0.0.1:0", "--log-format", "json"];
    args.extend(exporter_args("http://127.0.0.1:1/api", state, "1h"));
    let offline = Service::spawn(&args);
    let counts = offline.get("/api/v1/counts").json();
    assert!(
        offline.get("/readyz").status == 503,
        "no stream without a server"
    );
    counts
}

/// Waits until `service`'s flow-run counts equal `expected`'s, then checks they stay so.
fn assert_converges(service: &Service, expected: &Value, what: &str) {
    wait_for_flow_runs(service, expected, &FIELDS, Duration::from_secs(60), what);
    std::thread::sleep(Duration::from_secs(1));
    let again = service.get("/api/v1/counts").json();
    for f in FIELDS {
        assert_eq!(
            again["flow_runs"][f], expected["flow_runs"][f],
            "{what}: flow_runs.{f} moved after matching"
        );
    }
}

/// Plays the main recording over about 7 s, stops the exporter mid-stream with `stop`
/// (snapshots every `snapshot`), checks that the file holds at least the counts seen
/// `floor_age` before the stop, restarts on it, and expects exactly the uninterrupted counts.
fn restart_mid_stream(snapshot: &str, floor_age: Duration, stop: impl FnOnce(Service)) {
    let file = main_file();
    let expected = replay_json(&[&file]);
    assert_eq!(
        expected["flow_runs"]["total"], 693,
        "REST truth of the file"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("exporter.state");
    let server = Service::serve_replay(&[&file], &["--rate", "750"]);
    let api = server.api_url();

    let first = exporter(&api, &state, snapshot);
    let deadline = Instant::now() + Duration::from_secs(30);
    while received(&first) < 1500 {
        assert!(Instant::now() < deadline, "the stream did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let floor = received(&first);
    std::thread::sleep(floor_age);
    let at_stop = received(&first);
    assert!(
        at_stop < 5238,
        "stopped mid-stream ({at_stop} events so far)"
    );
    stop(first);
    assert!(state.exists(), "a state file was written");

    // The file alone holds the counters: they continue, they are not reset.
    let held = restored_counts(&state);
    let restored = held["events"]["received"].as_u64().unwrap();
    assert!(
        restored >= floor,
        "the file holds {restored} events; {floor} were counted before the stop"
    );
    assert!(held["flow_runs"]["total"].as_u64().unwrap() > 0);

    let second = exporter(&api, &state, snapshot);
    assert_converges(&second, &expected, "after restart");
}

#[test]
fn sigkill_mid_stream_then_restart_gives_exactly_the_uninterrupted_counts() {
    // Snapshots every 200 ms: the file holds at least what was counted 600 ms before.
    restart_mid_stream("200ms", Duration::from_millis(600), drop);
}

#[test]
fn sigterm_mid_stream_then_restart_gives_exactly_the_uninterrupted_counts() {
    // No periodic snapshot within the test: only the one written at SIGTERM can hold the
    // counts seen just before it.
    restart_mid_stream("1h", Duration::ZERO, |service| {
        assert!(service.terminate().success())
    });
}

#[test]
fn a_second_exporter_on_the_same_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("shared.state");
    let mut args = vec!["run", "--listen", "127.0.0.1:0", "--log-format", "json"];
    args.extend(exporter_args("http://127.0.0.1:1/api", &state, "1h"));
    let _first = Service::spawn(&args);
    let mut second = args.clone();
    second[2] = "127.0.0.1:0";
    let output = crate::support::run_to_end(&second);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--state-file") && stderr.contains("another process"),
        "{stderr}"
    );
}

/// A valid state file written by `run --replay` of a small recording.
fn written_state(dir: &Path) -> (std::path::PathBuf, String) {
    let file = replay_data("synthetic-out-of-order.jsonl")
        .display()
        .to_string();
    let state = dir.join("good.state");
    let service = Service::start(&["--replay", &file, "--state-file", state.to_str().unwrap()]);
    // Written once after loading, as the metrics report.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !service
        .get("/metrics")
        .body
        .contains("prefect_exporter_state_file_writes_total{result=\"ok\"} 1")
    {
        assert!(Instant::now() < deadline, "no state-file write reported");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(state.exists());
    assert!(service.terminate().success());
    (state, file)
}

#[test]
fn replay_restart_continues_where_it_stopped_whatever_the_dedup_window() {
    // A 1 s dedup window cannot catch a second reading of the 13-minute recording: only the
    // saved position keeps the restart from counting it again. (With so short a window the
    // recording's own re-sent events count twice, so the reference is the first run.)
    let file = main_file();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("replay.state");
    let args = [
        "--replay",
        &file,
        "--state-file",
        state.to_str().unwrap(),
        "--dedup-window",
        "1s",
    ];
    let first = Service::start(&args);
    let counted = first.get("/api/v1/counts").json();
    assert!(first.terminate().success());
    let again = Service::start(&args);
    let counts = again.get("/api/v1/counts").json();
    assert_eq!(counts["flow_runs"], counted["flow_runs"]);
    assert_eq!(
        counts["events"], counted["events"],
        "counters continue, and nothing was read twice"
    );
}

#[test]
fn a_state_file_is_only_used_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = written_state(dir.path());
    one_line_error(
        &[
            "run",
            "--prefect-api-url",
            "http://127.0.0.1:1/api",
            "--listen",
            "127.0.0.1:0",
            "--state-file",
            state.to_str().unwrap(),
        ],
        "--state-file",
    );
}

#[test]
fn corrupt_or_truncated_state_files_are_refused_unless_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let (state, file) = written_state(dir.path());
    let bytes = std::fs::read(&state).unwrap();
    let truncated = dir.path().join("truncated.state");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let corrupt = dir.path().join("corrupt.state");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x5a;
    std::fs::write(&corrupt, &flipped).unwrap();
    let future = dir.path().join("future.state");
    let mut newer = bytes.clone();
    newer[8] = 99;
    std::fs::write(&future, &newer).unwrap();

    for (path, word) in [
        (&truncated, "truncated"),
        (&corrupt, "corrupt"),
        (&future, "version 99"),
    ] {
        let path = path.to_str().unwrap();
        let stderr = one_line_error(
            &[
                "run",
                "--replay",
                &file,
                "--listen",
                "127.0.0.1:0",
                "--state-file",
                path,
            ],
            "--state-file",
        );
        assert!(stderr.contains(word), "{path}: {stderr}");
        assert!(stderr.contains("--discard-bad-state"), "{stderr}");
    }

    // Discarded: starts fresh, counts like a first run, and the bad file is kept aside.
    let expected = replay_json(&[&file]);
    let fresh = Service::start(&[
        "--replay",
        &file,
        "--state-file",
        corrupt.to_str().unwrap(),
        "--discard-bad-state",
    ]);
    let counts = fresh.get("/api/v1/counts").json();
    assert_eq!(counts["flow_runs"], expected["flow_runs"]);
    assert_eq!(counts["events"]["received"], expected["events"]["received"]);
    assert!(corrupt.with_extension("discarded").exists());
}

/// `run --replay` of a small file with `--state-file PATH` (and `extra`), under a 400 MB
/// address-space limit (so a build that reads a huge file whole fails instead of taking
/// the machine's memory); the exit status and stderr, or a panic after 10 s.
fn start_on_state_file(path: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let file = replay_data("synthetic-odd-names.jsonl");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 400000; exec \"$0\" \"$@\"")
        .arg(crate::support::binary_path())
        .args(["run", "--listen", "127.0.0.1:0", "--replay"])
        .arg(&file)
        .arg("--state-file")
        .arg(path)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("poll").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running 10 s after start with --state-file {path:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_fifo_or_a_device_as_state_file_is_refused_at_once() {
    // Before: a FIFO blocked the start forever (SIGTERM did not end it); `/dev/zero` read
    // until memory ran out.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.state");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let device = dir.path().join("zero.state");
    std::os::unix::fs::symlink("/dev/zero", &device).unwrap();
    for (path, what) in [
        (&fifo, "a FIFO"),
        (&device, "a device"),
        (&dir.path().to_owned(), "a directory"),
    ] {
        let (code, stderr) = start_on_state_file(path, &[]);
        assert_eq!(code, Some(2), "{path:?}: {stderr}");
        assert!(
            stderr.contains("--state-file") && stderr.contains(what) && stderr.lines().count() == 1,
            "{path:?}: {stderr}"
        );
    }
    assert!(
        !Path::new("/dev/zero.lock").exists(),
        "no lock beside the device"
    );
}

#[test]
fn a_sparse_one_gigabyte_state_file_is_refused_without_reading_it() {
    // Before: read whole before its header was checked (1.06 GB RSS; under this test's
    // 400 MB limit, "out of memory").
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.state");
    let file = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut &file, b"PEXSTATE\x01\x00\x00\x00").unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    let (code, stderr) = start_on_state_file(&path, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    // Zeros from the start: not a state file.
    let zeros = dir.path().join("zeros.state");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let (code, stderr) = start_on_state_file(&zeros, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bad magic"), "{stderr}");
}

#[test]
fn a_symlinked_state_file_is_locked_and_written_through_the_link() {
    // Before: the lock was taken beside the link, so a second exporter on the real path
    // got its own lock, and the rename at shutdown replaced the link with a file.
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("target.state");
    let link = dir.path().join("link.state");
    std::os::unix::fs::symlink("real/target.state", &link).unwrap();
    let file = replay_data("synthetic-out-of-order.jsonl")
        .display()
        .to_string();
    let expected = replay_json(&[&file]);
    let first = Service::start(&["--replay", &file, "--state-file", link.to_str().unwrap()]);

    let (code, stderr) = start_on_state_file(&real, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("another process"), "{stderr}");

    assert!(first.terminate().success());
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link is still a link");
    let bytes = std::fs::read(&real).unwrap();
    assert!(bytes.starts_with(b"PEXSTATE"), "the target holds the state");
    assert!(!dir.path().join("link.state.lock").exists());

    // Read back through the real path: the counts of the whole file.
    let again = Service::start(&["--replay", &file, "--state-file", real.to_str().unwrap()]);
    let counts = again.get("/api/v1/counts").json();
    assert_eq!(counts["flow_runs"], expected["flow_runs"]);
    assert_eq!(counts["events"]["received"], expected["events"]["received"]);
}
