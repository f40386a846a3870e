//! `serve-replay` as a Prefect server: the handshake cases recorded against a real Prefect
//! 3.9.1 server give the same outcome here, and `run` against it with every fault ends with
//! exactly the counts `replay` gives for the same file.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::HandshakeError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{client, Error as WsError, Message};

use crate::support::{replay_data, replay_json, wait_for_flow_runs, Service, QUICK_CHECKS};

/// What a handshake came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The upgrade was refused with this HTTP status.
    Http(u16),
    /// The server sent a close frame.
    Closed(u16, String),
    /// The server dropped the connection without a close frame.
    Dropped,
    /// Still open after the messages; this many frames arrived.
    Open(usize),
}

/// The outcome a transcript recorded from the real server.
fn recorded_outcome(lines: &[Value]) -> Outcome {
    let end = lines
        .iter()
        .rev()
        .find(|l| l["dir"] == "meta")
        .expect("a final meta line");
    match end["kind"].as_str() {
        Some("connect_error") => {
            let error = end["error"].as_str().unwrap_or("");
            let status = error
                .split("status_code=")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.parse().ok());
            Outcome::Http(status.expect("a status code"))
        }
        Some("closed_by_server") => match end["rcvd_code"].as_u64() {
            Some(code) => Outcome::Closed(
                code as u16,
                end["rcvd_reason"].as_str().unwrap_or("").to_owned(),
            ),
            None => Outcome::Dropped,
        },
        Some("closed_by_client") => {
            Outcome::Open(end["frames_received"].as_u64().unwrap_or(0) as usize)
        }
        other => panic!("unknown transcript end {other:?}"),
    }
}

/// Replays a transcript's client side against `addr`.
fn replay_client(addr: SocketAddr, lines: &[Value]) -> Outcome {
    let connecting = &lines[0];
    let argv: Vec<&str> = connecting["argv"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut request = format!("ws://{addr}/api/events/out")
        .into_client_request()
        .unwrap();
    if connecting["offered_subprotocols"].is_array() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("prefect"),
        );
    }
    if let Some(i) = argv.iter().position(|a| *a == "--header") {
        let (name, value) = argv[i + 1].split_once(": ").unwrap();
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut socket = match client(request, stream) {
        Ok((socket, _)) => socket,
        Err(HandshakeError::Failure(WsError::Http(response))) => {
            return Outcome::Http(response.status().as_u16())
        }
        Err(e) => panic!("handshake failed: {e}"),
    };
    let sent: Vec<&str> = lines
        .iter()
        .filter(|l| l["dir"] == "sent")
        .filter_map(|l| l["raw"].as_str())
        .collect();
    let mut frames = 0;
    for message in sent {
        if socket.send(Message::text(message)).is_err() {
            break;
        }
        // Like the recording client, read the answer to the auth message before going on.
        if message.contains("\"auth\"") {
            match socket.read() {
                Ok(Message::Text(_)) => frames += 1,
                Ok(Message::Close(frame)) => {
                    let frame = frame.unwrap();
                    return Outcome::Closed(frame.code.into(), frame.reason.to_string());
                }
                Ok(_) => {}
                Err(_) => return Outcome::Dropped,
            }
        }
    }
    loop {
        match socket.read() {
            Ok(Message::Text(_)) => frames += 1,
            Ok(Message::Close(Some(frame))) => {
                return Outcome::Closed(frame.code.into(), frame.reason.to_string())
            }
            Ok(Message::Close(None)) => return Outcome::Closed(1005, String::new()),
            Ok(_) => {}
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Outcome::Open(frames)
            }
            Err(_) => return Outcome::Dropped,
        }
    }
}

/// Completed flow runs the server reports (`admin:pass` sent as HTTP Basic).
fn completed_runs(server: &Service) -> i64 {
    let body = r#"{"flow_runs":{"state":{"type":{"any_":["COMPLETED"]}}}}"#;
    let length = body.len().to_string();
    let headers = [
        ("Content-Length", length.as_str()),
        ("Authorization", "Basic YWRtaW46cGFzcw=="),
    ];
    crate::support::http_with_body(server.addr, "POST", "/api/flow_runs/count", &headers, body)
        .json()
        .as_i64()
        .unwrap()
}

/// Waits until the whole main recording is released (659 completed runs, its REST truth).
fn wait_released(server: &Service) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed_runs(server) != 659 {
        assert!(
            Instant::now() < deadline,
            "the timeline was not released within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn handshake_cases_recorded_from_the_real_server_give_the_same_outcome() {
    // Old recorded timestamps: nothing is within the 15-minute backfill, as in the recordings.
    let file = replay_data("prefect-3.9.1-main.jsonl")
        .display()
        .to_string();
    let open = Service::serve_replay(&[&file], &["--rate", "max", "--keep-timestamps"]);
    let auth = Service::serve_replay(
        &[&file],
        &[
            "--rate",
            "max",
            "--keep-timestamps",
            "--auth-string",
            "admin:pass",
        ],
    );
    wait_released(&open);
    wait_released(&auth);
    let mut checked = 0;
    for entry in std::fs::read_dir(replay_data("handshake")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let handshake_case =
            (name.starts_with("auth_") || name.starts_with("noauth_")) && name.ends_with(".jsonl");
        // auth_11/12 are whole sessions with flows, not handshake cases.
        if !handshake_case || name.starts_with("auth_11") || name.starts_with("auth_12") {
            continue;
        }
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let server = if name.starts_with("auth_") {
            &auth
        } else {
            &open
        };
        assert_eq!(
            replay_client(server.addr, &lines),
            recorded_outcome(&lines),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 25, "every handshake transcript was checked");
}

#[test]
fn rest_endpoints_answer_from_released_events() {
    let file = replay_data("prefect-3.9.1-main.jsonl")
        .display()
        .to_string();
    let server = Service::serve_replay(&[&file], &["--rate", "max"]);
    wait_released(&server);
    let count = |ty: &str| -> i64 {
        let body = format!(r#"{{"flow_runs":{{"state":{{"type":{{"any_":["{ty}"]}}}}}}}}"#);
        crate::support::http_post(server.addr, "/api/flow_runs/count", &body)
            .json()
            .as_i64()
            .unwrap()
    };
    // The recording's REST truth (prefect-3.9.1-main.expected.json).
    assert_eq!(count("COMPLETED"), 659);
    assert_eq!(count("SCHEDULED"), 6);
    assert_eq!(count("PENDING"), 3);
    let late =
        r#"{"flow_runs":{"state":{"type":{"any_":["SCHEDULED"]},"name":{"any_":["Late"]}}}}"#;
    assert_eq!(
        crate::support::http_post(server.addr, "/api/flow_runs/count", late).json(),
        3
    );
    let by_name = crate::support::http_post(
        server.addr,
        "/api/events/count-by/event",
        r#"{"filter":{"occurred":{"since":"2000-01-01T00:00:00Z","until":"2100-01-01T00:00:00Z"},"event":{"prefix":["prefect.flow-run.Completed"]}},"time_unit":"day","time_interval":1.0}"#,
    )
    .json();
    assert_eq!(by_name[0]["value"], "prefect.flow-run.Completed");
    assert_eq!(by_name[0]["count"], 659);
    assert_eq!(server.get("/api/nope").status, 404);
}

/// Runs the exporter against `serve-replay` of the main recording with `faults`, and waits
/// until its counts equal `replay`'s for the same file.
fn run_against_faults(faults: &[&str]) {
    let file = replay_data("prefect-3.9.1-main.jsonl")
        .display()
        .to_string();
    let expected = replay_json(&[&file]);
    let mut server_args = vec!["--speed", "60"];
    server_args.extend_from_slice(faults);
    let server = Service::serve_replay(&[&file], &server_args);
    let api = server.api_url();
    let mut args = vec!["--prefect-api-url", api.as_str()];
    args.extend(QUICK_CHECKS);
    let exporter = Service::start(&args);
    let fields = [
        "by_state_type",
        "by_state_name",
        "entries_by_state_name",
        "transitions",
    ];
    let what = format!("{faults:?}");
    wait_for_flow_runs(
        &exporter,
        &expected,
        &fields,
        Duration::from_secs(150),
        &what,
    );
}

#[test]
fn run_is_exact_against_disconnects() {
    run_against_faults(&["--disconnect-every", "700"]);
}

#[test]
fn run_is_exact_against_close_codes() {
    run_against_faults(&["--disconnect-every", "700", "--close-code", "1012"]);
}

#[test]
fn run_is_exact_against_duplicates() {
    run_against_faults(&["--duplicate-rate", "0.3"]);
}

#[test]
fn run_is_exact_against_silently_dropped_live_events() {
    run_against_faults(&["--drop-live-rate", "0.5"]);
}

#[test]
fn run_is_exact_against_reordering() {
    run_against_faults(&["--reorder-window", "20"]);
}

#[test]
fn run_is_exact_against_stalls() {
    run_against_faults(&["--stall-ms", "3000"]);
}

#[test]
fn run_is_exact_against_every_fault_at_once() {
    run_against_faults(&[
        "--disconnect-every",
        "900",
        "--duplicate-rate",
        "0.2",
        "--drop-live-rate",
        "0.3",
        "--reorder-window",
        "10",
        "--stall-ms",
        "500",
    ]);
}

#[test]
fn record_writes_a_replayable_file() {
    let source = replay_data("synthetic-out-of-order.jsonl")
        .display()
        .to_string();
    let server = Service::serve_replay(&[&source], &["--rate", "max"]);
    let out = tempfile::NamedTempFile::new().unwrap();
    let out_path = out.path().display().to_string();
    let api = server.api_url();
    let mut recorder = crate::support::binary()
        .args(["record", "--out", &out_path, "--prefect-api-url", &api])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&out_path)
        .unwrap_or_default()
        .lines()
        .count()
        < 7
    {
        assert!(
            Instant::now() < deadline,
            "7 frames were not recorded within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &recorder.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(recorder.wait().unwrap().code(), Some(0));
    let recorded = replay_json(&[&out_path]);
    let original = replay_json(&[&source]);
    assert_eq!(recorded["flow_runs"], original["flow_runs"]);
    assert_eq!(recorded["events"]["received"], 7);
}

/// An event of `resource` at `seconds` after the recording's start.
fn synthetic_event(n: usize, seconds: u32, resource: &str) -> String {
    format!(
        r#"{{"type":"event","event":{{"id":"00000000-0000-4000-8000-{n:012}","occurred":"2026-11-25T02:00:{seconds:02}Z","event":"prefect.flow-run.Running","resource":{{"prefect.resource.id":"{resource}"}}}}}}"#
    )
}

#[test]
fn a_live_event_goes_out_when_released_even_if_the_next_ones_are_filtered_out() {
    // One wanted event, then 300 the subscriber's filter skips, all released in one burst 5 s
    // after the start. The wanted one used to wait in the write buffer until the next ping
    // (20 s after connecting), because only a sent event flushed.
    const WANTED: &str = "prefect.flow-run.11111111-1111-4111-8111-111111111111";
    const OTHER: &str = "prefect.flow-run.22222222-2222-4222-8222-222222222222";
    let mut lines = vec![synthetic_event(0, 0, OTHER), synthetic_event(1, 5, WANTED)];
    lines.extend((2..302).map(|n| synthetic_event(n, 5, OTHER)));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines.join("\n") + "\n").unwrap();
    let path = file.path().display().to_string();
    let spawned = Instant::now();
    let server = Service::serve_replay(&[&path], &["--speed", "1"]);

    let mut request = format!("ws://{}/api/events/out", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("prefect"),
    );
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut socket, _) = client(request, stream).unwrap();
    let connected = Instant::now();
    socket
        .send(Message::text(r#"{"type":"auth","token":null}"#))
        .unwrap();
    let filter = format!(r#"{{"type":"filter","filter":{{"resource":{{"id":["{WANTED}"]}}}}}}"#);
    socket.send(Message::text(filter)).unwrap();
    // Subscribed before the burst (the timeline starts after the spawn), so the wanted event
    // comes live, not in the backfill, which always flushed.
    assert!(
        spawned.elapsed() < Duration::from_secs(5),
        "subscribed {:?} after the spawn: too late to see the burst live",
        spawned.elapsed()
    );
    let arrived = loop {
        match socket.read() {
            Ok(Message::Text(text)) if text.contains(WANTED) => break connected.elapsed(),
            Ok(_) => {}
            Err(e) => panic!("no event within 30 s: {e}"),
        }
    };
    // Released about 5 s after the server started; the first ping is 20 s after connecting.
    assert!(
        arrived < Duration::from_secs(10),
        "the event arrived {arrived:?} after connecting"
    );
}
