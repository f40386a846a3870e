//! Bad configuration: exit code 2 and one line naming the flag.

use crate::support::{replay_data, run_to_end};

pub fn one_line_error(args: &[&str], flag: &str) -> String {
    let output = run_to_end(args);
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?} should name {flag}: {stderr}"
    );
    stderr
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let file = replay_data("synthetic-duplicates.jsonl");
    let file = file.to_str().unwrap();
    one_line_error(
        &["replay", "--group-by", "deployment,colour", file],
        "--group-by",
    );
    one_line_error(
        &["replay", "--dedup-window", "soon", file],
        "--dedup-window",
    );
    one_line_error(
        &["replay", "--dedup-capacity", "0", file],
        "--dedup-capacity",
    );
    one_line_error(&["replay", "--max-series", "many", file], "--max-series");
    one_line_error(&["replay", "--output", "xml", file], "--output");
    one_line_error(
        &["run", "--listen", "not-an-address", "--replay", file],
        "--listen",
    );
    one_line_error(&["run", "--replay", "/nonexistent.jsonl"], "--replay");
    one_line_error(&["--no-such-flag"], "--no-such-flag");
}

#[test]
fn bad_web_flags_exit_2_with_one_line_naming_the_flag() {
    let file = replay_data("synthetic-duplicates.jsonl");
    let run = |extra: &[&str], flag: &str| {
        let mut args = vec![
            "run",
            "--listen",
            "127.0.0.1:0",
            "--replay",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        one_line_error(&args, flag)
    };
    let stderr = run(&["--web-basic-auth", "nocolon"], "--web-basic-auth");
    assert!(
        !stderr.contains("nocolon"),
        "the value is never echoed: {stderr}"
    );
    let malformed = "prometheus:$2b$10$not-a-real-hash";
    let stderr = run(&["--web-basic-auth", malformed], "--web-basic-auth");
    assert!(
        !stderr.contains("not-a-real-hash") && !stderr.contains("prometheus"),
        "{stderr}"
    );
    run(
        &["--web-auth-token", "t", "--web-basic-auth", "u:h"],
        "--web-basic-auth",
    );
    run(
        &[
            "--web-tls-cert",
            "/nonexistent/cert.pem",
            "--web-tls-key",
            "/nonexistent/key.pem",
        ],
        "--web-tls-cert",
    );
    let not_pem = file.to_str().unwrap();
    run(
        &["--web-tls-cert", not_pem, "--web-tls-key", not_pem],
        "--web-tls-cert",
    );
    run(
        &["--web-tls-cert", "/nonexistent/cert.pem"],
        "--web-tls-key",
    );
    run(&["--web-max-connections", "0"], "--web-max-connections");
    run(&["--web-header-timeout", "0"], "--web-header-timeout");
}

#[test]
fn environment_variables_set_flags() {
    let file = replay_data("synthetic-duplicates.jsonl");
    let output = crate::support::binary()
        .args(["replay", file.to_str().unwrap()])
        .env("PREFECT_EXPORTER_GROUP_BY", "colour")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--group-by"));

    let output = crate::support::binary()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--replay",
            file.to_str().unwrap(),
        ])
        .env("PREFECT_EXPORTER_WEB_BASIC_AUTH", "nocolon")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--web-basic-auth"));
}

#[test]
fn help_exits_0() {
    let output = run_to_end(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("replay"));
}

#[test]
fn a_directory_given_as_a_replay_file_exits_2_naming_the_argument() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let stderr = one_line_error(&["replay", dir], "FILE");
    assert_eq!(
        stderr.trim_end(),
        format!("error: FILE: cannot read {dir}: it is a directory")
    );
    let stderr = one_line_error(
        &["run", "--listen", "127.0.0.1:0", "--replay", dir],
        "--replay",
    );
    assert_eq!(
        stderr.trim_end(),
        format!("error: --replay: cannot read {dir}: it is a directory")
    );
}
