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

/// Runs the binary with `args` and one environment variable; returns its one stderr line
/// (exit 2 required).
fn one_line_error_with_env(args: &[&str], var: &str, value: &str) -> String {
    let output = crate::support::binary()
        .args(args)
        .env(var, value)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{var}={value}: {stderr}"
    );
    stderr.trim_end().to_owned()
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let file = replay_data("synthetic-duplicates.jsonl");
    let file = file.to_str().unwrap();
    let stderr =
        one_line_error_with_env(&["replay", file], "PREFECT_EXPORTER_DEDUP_WINDOW", "banana");
    assert!(
        stderr.starts_with(
            "error: invalid value 'banana' for PREFECT_EXPORTER_DEDUP_WINDOW (--dedup-window): "
        ),
        "{stderr}"
    );
    // The same value on the command line names the flag alone.
    let stderr = one_line_error(
        &["replay", "--dedup-window", "banana", file],
        "--dedup-window",
    );
    assert!(
        !stderr.contains("PREFECT_EXPORTER_DEDUP_WINDOW"),
        "{stderr}"
    );
    // The command line wins over the environment: its value is the one refused.
    let output = crate::support::binary()
        .args(["replay", "--dedup-window", "5m", file])
        .env("PREFECT_EXPORTER_DEDUP_WINDOW", "banana")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    // A variable of the bare invocation's (`run`'s) flags is not read by `replay`.
    let output = crate::support::binary()
        .args(["replay", file])
        .env("PREFECT_EXPORTER_LISTEN", "bad")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A value refused after parsing (the bcrypt hash's form) names the variable too.
    let stderr = one_line_error_with_env(
        &["run", "--listen", "127.0.0.1:0", "--replay", file],
        "PREFECT_EXPORTER_WEB_BASIC_AUTH",
        "nocolon",
    );
    assert!(
        stderr.starts_with(
            "error: PREFECT_EXPORTER_WEB_BASIC_AUTH (--web-basic-auth): expected USER:BCRYPT_HASH"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("nocolon"), "{stderr}");
    let stderr = one_line_error_with_env(&["replay", file], "PREFECT_EXPORTER_GROUP_BY", "colour");
    assert!(
        stderr.starts_with(
            "error: invalid value 'colour' for PREFECT_EXPORTER_GROUP_BY (--group-by): "
        ),
        "{stderr}"
    );
}

#[test]
fn negative_looking_values_reach_the_value_check() {
    let file = replay_data("synthetic-duplicates.jsonl");
    let file = file.to_str().unwrap();
    for (flag, value) in [
        ("--verify-interval", "-5s"),
        ("--reconcile-interval", "-1m"),
        ("--snapshot-interval", "-10s"),
        ("--web-header-timeout", "-2s"),
        ("--web-max-connections", "-1"),
        ("--dedup-window", "-30m"),
        ("--dedup-capacity", "-4"),
    ] {
        let stderr = one_line_error(
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--replay",
                file,
                flag,
                value,
            ],
            flag,
        );
        assert!(
            stderr.starts_with(&format!("error: invalid value '{value}' for '{flag} ")),
            "{flag} {value}: {stderr}"
        );
    }
}

#[test]
fn run_help_says_it_follows_a_prefect_server_unless_replaying() {
    let output = run_to_end(&["run", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    let about = help.lines().next().unwrap_or("");
    assert_eq!(
        about,
        "Follow a Prefect server's events stream (`--prefect-api-url`), or recorded files with `--replay`, and serve the counts over HTTP until SIGINT/SIGTERM"
    );
    let top = String::from_utf8_lossy(&run_to_end(&["--help"]).stdout).into_owned();
    assert!(
        top.contains("run           Follow a Prefect server's events stream"),
        "{top}"
    );
}
