//! `--web-basic-auth` under costly and long inputs (issue 16): bcrypt costs that would hang
//! a scrape are refused at start, a running bcrypt check never holds up SIGTERM, and a
//! password whose bytes past 72 bcrypt ignores is reported once.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::flags::one_line_error;
use crate::support::{replay_data, Service};

/// A well-formed bcrypt hash at `cost` that no password matches (checking it costs the
/// full `2^cost` rounds; making it costs nothing).
fn unmatchable_hash(cost: u32) -> String {
    format!(
        "${}${cost:02}$abcdefghijklmnopqrstuuJtpZ6p3cb0uA1GvjhJq0LmnGUlCx0Ga",
        "2b"
    )
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// `run --replay` behind `--web-basic-auth FLAG`, once it listens (`/readyz` needs
/// credentials too, so readiness is not polled: every test here asks for auth first).
fn start(flag: &str) -> Service {
    let file = replay_data("synthetic-odd-names.jsonl");
    Service::spawn(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--replay",
        file.to_str().unwrap(),
        "--web-basic-auth",
        flag,
    ])
}

/// CPU time (user + system) the process has used, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is the 3rd, utime the 14th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

#[test]
fn bcrypt_costs_above_16_are_refused_naming_the_flag() {
    let file = replay_data("synthetic-duplicates.jsonl");
    for cost in [17, 24, 31] {
        let flag = format!("prometheus:{}", unmatchable_hash(cost));
        let stderr = one_line_error(
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--replay",
                file.to_str().unwrap(),
                "--web-basic-auth",
                &flag,
            ],
            "--web-basic-auth",
        );
        assert_eq!(
            stderr.trim_end(),
            format!("error: --web-basic-auth: the bcrypt cost is {cost}; it must be from 4 to 16 (each step doubles the time of a check; at 17 one takes longer than a scrape timeout)")
        );
    }
}

#[test]
fn sigterm_does_not_wait_for_a_running_bcrypt_check() {
    // Cost 16, the highest accepted: in this debug build a check takes about half a minute.
    let service = start(&format!("prometheus:{}", unmatchable_hash(16)));
    let pid = service.pid();
    let idle = cpu_ticks(pid);
    let addr = service.addr;
    let request = std::thread::spawn(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            basic("prometheus", "guess")
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    });
    // The check is running once the process has burnt half a second of CPU (it idles at ~0).
    let deadline = Instant::now() + Duration::from_secs(20);
    while cpu_ticks(pid) < idle + 50 {
        assert!(Instant::now() < deadline, "bcrypt never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopping = Instant::now();
    let status = service.terminate();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(8),
        "exit took {took:?}: the HTTP drain deadline is 5 s, and a running bcrypt check must not add to it"
    );
    request.join().unwrap();
}

#[test]
fn a_password_longer_than_72_bytes_is_accepted_with_one_warning() {
    let long = format!("{}-tail", "p".repeat(72));
    let hash = bcrypt::hash(&long, 4).unwrap();
    let service = start(&format!("prometheus:{hash}"));
    let get = |password: &str| {
        service
            .get_with(
                "/metrics",
                &[("Authorization", &basic("prometheus", password))],
            )
            .status
    };
    assert_eq!(get(&long), 200);
    // bcrypt reads 72 bytes: another tail passes too, which is what the warning is about.
    assert_eq!(get(&format!("{}-other", "p".repeat(72))), 200);
    assert_eq!(get(&"p".repeat(71)), 401);
    let (found, logs) = service.logs_until(Duration::from_secs(5), |l| {
        l.contains("longer than 72 bytes")
    });
    assert!(found, "no warning: {logs:?}");
    let warning: serde_json::Value = serde_json::from_str(logs.last().unwrap()).unwrap();
    assert_eq!(warning["level"], "WARN");
    assert_eq!(
        warning["fields"]["message"],
        "A password longer than 72 bytes was accepted: bcrypt reads only the first 72, so every password that shares them is accepted too. Configure a password of at most 72 bytes."
    );
    assert!(logs
        .iter()
        .all(|l| !l.contains(&long) && !l.contains(&hash)));
    // Once per process.
    assert_eq!(get(&long), 200);
    let (again, _) = service.logs_until(Duration::from_secs(1), |l| {
        l.contains("longer than 72 bytes")
    });
    assert!(!again, "warned twice");
}

#[test]
fn a_password_of_72_bytes_or_fewer_gives_no_warning() {
    let password = "q".repeat(72);
    let hash = bcrypt::hash(&password, 4).unwrap();
    let service = start(&format!("prometheus:{hash}"));
    let status = service
        .get_with(
            "/metrics",
            &[("Authorization", &basic("prometheus", &password))],
        )
        .status;
    assert_eq!(status, 200);
    let (found, _) = service.logs_until(Duration::from_secs(1), |l| {
        l.contains("longer than 72 bytes")
    });
    assert!(!found);
}
