//! `GET /api/v1/stream` over real HTTP: the first `counts` against the recording's REST
//! truth, one run's transitions (fed live by `serve-replay`) against the JSONL read here,
//! heartbeats only for a filter that matches nothing, `Last-Event-ID` resuming without a gap
//! or a repeat, and a client that never reads closed with `overflow` while ingestion goes on.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{metric, replay_data, replay_json, wait_for_flow_runs, Service, QUICK_CHECKS};

/// One event as a client sees it (`name` is `:` for a comment such as `: ping`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `event:` (or `:` for a comment).
    pub name: String,
    /// `id:`.
    pub id: Option<String>,
    /// `data:` parsed as JSON (`Null` for a comment).
    pub data: Value,
}

/// A stream client over a plain socket, decoding HTTP/1.1 chunked transfer itself.
pub struct Sse {
    reader: BufReader<TcpStream>,
    /// Decoded body bytes not yet parsed into events.
    pending: Vec<u8>,
    /// Data bytes left in the current chunk.
    data_left: usize,
    /// Bytes of the CRLF after the current chunk's data left.
    crlf_left: usize,
    ended: bool,
    /// The response status.
    pub status: u16,
}

impl Sse {
    /// Sends `GET path` with `headers` and reads the response head.
    pub fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let mut chunked = false;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = value.trim() == "chunked",
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
        if status == 200 {
            assert_eq!(content_type, "text/event-stream");
            assert!(chunked, "a stream is sent chunked");
        }
        Sse {
            reader,
            pending: Vec::new(),
            data_left: 0,
            crlf_left: 0,
            ended: false,
            status,
        }
    }

    /// Reads more of the body into `pending`; false at its end.
    fn fill(&mut self) -> bool {
        while !self.ended {
            if self.data_left == 0 && self.crlf_left == 0 {
                let mut size = String::new();
                if self.reader.read_line(&mut size).unwrap() == 0 {
                    self.ended = true;
                    break;
                }
                let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
                self.ended = size == 0;
                (self.data_left, self.crlf_left) = (size, 2);
                continue;
            }
            if self.data_left == 0 {
                let mut crlf = vec![0; self.crlf_left];
                self.reader.read_exact(&mut crlf).unwrap();
                self.crlf_left = 0;
                continue;
            }
            let mut buf = vec![0; self.data_left.min(64 * 1024)];
            let n = self.reader.read(&mut buf).unwrap();
            if n == 0 {
                self.ended = true;
                break;
            }
            self.data_left -= n;
            self.pending.extend_from_slice(&buf[..n]);
            return true;
        }
        false
    }

    /// The next event, or `None` at the end of the stream; panics if none arrives within
    /// `within`.
    pub fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                return Some(parse_event(&String::from_utf8(block).unwrap()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no event within {within:?}");
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            if !self.fill() {
                assert!(self.pending.is_empty(), "a partial event at the end");
                return None;
            }
        }
    }

    /// The next event that is not a comment.
    pub fn next_event(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next(left)?;
            if event.name != ":" {
                return Some(event);
            }
        }
    }
}

fn parse_event(block: &str) -> Event {
    let mut event = Event {
        name: "message".to_owned(),
        id: None,
        data: Value::Null,
    };
    for line in block.lines() {
        if line.starts_with(':') {
            event.name = ":".to_owned();
            event.data = Value::String(line.trim_start_matches(':').trim().to_owned());
        } else if let Some(name) = line.strip_prefix("event: ") {
            event.name = name.to_owned();
        } else if let Some(id) = line.strip_prefix("id: ") {
            event.id = Some(id.to_owned());
        } else if let Some(data) = line.strip_prefix("data: ") {
            event.data = serde_json::from_str(data).expect("data is JSON");
        }
    }
    event
}

fn main_file() -> String {
    replay_data("prefect-3.9.1-main.jsonl")
        .display()
        .to_string()
}

/// The state events of `resource` in the recording, in file order, duplicates (by id)
/// dropped, as `(from, to)` states, up to the first terminal state.
fn recorded_transitions(resource: &str) -> Vec<(Value, Value)> {
    let text = std::fs::read_to_string(main_file()).unwrap();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let frame: Value = serde_json::from_str(line).unwrap();
        let event = &frame["event"];
        if event["resource"]["prefect.resource.id"] != resource
            || event["payload"]["validated_state"].is_null()
            || !seen.insert(event["id"].as_str().unwrap().to_owned())
        {
            continue;
        }
        let state = |s: &Value| {
            if s.is_null() {
                Value::Null
            } else {
                json!({"type": s["type"], "name": s["name"]})
            }
        };
        let to = state(&event["payload"]["validated_state"]);
        let terminal =
            ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"].contains(&to["type"].as_str().unwrap());
        out.push((state(&event["payload"]["initial_state"]), to));
        if terminal {
            break;
        }
    }
    out
}

#[test]
fn the_first_event_is_the_exact_counts() {
    let service = Service::start(&["--replay", &main_file()]);
    let mut client = Sse::connect(service.addr, "/api/v1/stream", &[]);
    assert_eq!(client.status, 200);
    let first = client.next(Duration::from_secs(10)).unwrap();
    assert_eq!(first.name, "counts");
    assert!(first.id.is_some());
    // The recording's REST truth (prefect-3.9.1-main.expected.json), written by hand.
    assert_eq!(
        first.data["flow_runs"]["by_state_type"],
        json!({"CANCELLED": 4, "COMPLETED": 659, "CRASHED": 1, "FAILED": 20, "PENDING": 3, "SCHEDULED": 6})
    );
    assert_eq!(first.data["flow_runs"]["total"], 693);
    assert_eq!(first.data["events"]["received"], 5238);
    assert_eq!(first.data["events"]["duplicates"], 956);
}

#[test]
fn stream_parameters_are_checked() {
    let service = Service::start(&["--replay", &main_file()]);
    for bad in [
        "/api/v1/stream?resource=prefect.flow.1",
        "/api/v1/stream?kind=flows",
        "/api/v1/stream?state_type=DONE",
        "/api/v1/stream?resource=prefect.flow-run.1&kind=flow-run",
        "/api/v1/stream?color=red",
    ] {
        let response = service.get(bad);
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
    }
}

/// A run fed live by `serve-replay`: its transitions in order then `end`; a filter that
/// matches nothing gets only heartbeats; a client that reconnects with `Last-Event-ID` gets
/// exactly what a client that stayed got.
#[test]
fn live_transitions_heartbeats_and_resume() {
    let file = main_file();
    let expected = replay_json(&[&file]);
    // Its events start at line 3120 of 5240 and end at line 4087: released live.
    let resource = "prefect.flow-run.01a2104c-210b-738e-9adc-245caecbbf99";
    let recorded = recorded_transitions(resource);
    assert_eq!(recorded.len(), 4, "the recording as read here");
    let server = Service::serve_replay(&[&file], &["--rate", "400"]);
    let api = server.api_url();
    let mut args = vec!["--prefect-api-url", &api, "--stream-ping-interval", "200ms"];
    args.extend(QUICK_CHECKS);
    let exporter = Service::start(&args);
    let addr = exporter.addr;
    let path = format!("/api/v1/stream?resource={resource}");
    let mut run = Sse::connect(addr, &path, &[]);
    let mut nothing = Sse::connect(
        addr,
        "/api/v1/stream?kind=flow-run&state_name=No%20such%20state",
        &[],
    );
    let entries = "/api/v1/stream?kind=flow-run&state_type=COMPLETED";
    let mut stayed = Sse::connect(addr, entries, &[]);
    let mut left = Sse::connect(addr, entries, &[]);

    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let stayed = scope.spawn(|| drain(&mut stayed, &done));
        let mut seen = Vec::new();
        let end = loop {
            let event = run
                .next_event(Duration::from_secs(60))
                .expect("the run's stream ends with `end`");
            match event.name.as_str() {
                "transition" => {
                    assert_eq!(event.data["resource"], resource);
                    assert!(event.data["occurred"].is_string());
                    seen.push((event.data["from"].clone(), event.data["to"].clone()));
                }
                "end" => break event,
                other => panic!("unexpected event {other}: {event:?}"),
            }
        };
        assert_eq!(seen, recorded);
        assert_eq!(end.data["state"], recorded.last().unwrap().1);
        assert_eq!(run.next(Duration::from_secs(5)), None, "closed after `end`");

        // The client that leaves reads three completions, then comes back.
        let mut first_part = Vec::new();
        while first_part.len() < 3 {
            let event = left.next_event(Duration::from_secs(30)).unwrap();
            assert_eq!(event.name, "transition");
            first_part.push(event);
        }
        let last_id = first_part.last().unwrap().id.clone().unwrap();
        drop(left);

        wait_for_flow_runs(
            &exporter,
            &expected,
            &["by_state_type", "by_state_name"],
            Duration::from_secs(60),
            "ingestion",
        );
        done.store(true, Ordering::SeqCst);
        let mut resumed = Sse::connect(addr, entries, &[("Last-Event-ID", &last_id)]);
        let all = stayed.join().unwrap();
        let rest = drain(&mut resumed, &done);
        let start = all
            .iter()
            .position(|e| e.id == first_part[0].id)
            .expect("the client that stayed saw the first event of the one that left");
        let mut joined = first_part.clone();
        joined.extend(rest);
        assert_eq!(
            all[start..],
            joined[..],
            "resumed without a gap or a repeat"
        );
        assert!(joined.iter().all(|e| e.data["to"]["type"] == "COMPLETED"));

        // The filter that matched nothing sent heartbeats only, all along.
        for _ in 0..5 {
            let event = nothing.next(Duration::from_secs(5)).unwrap();
            assert_eq!((event.name.as_str(), &event.data), (":", &json!("ping")));
        }
    });
}

/// Reads `client`'s events until `done` is set and three heartbeats in a row followed (or
/// two minutes passed, so a failing test ends).
fn drain(client: &mut Sse, done: &AtomicBool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events = Vec::new();
    let mut pings = 0;
    while pings < 3 && Instant::now() < deadline {
        let Some(event) = client.next(Duration::from_secs(30)) else {
            panic!(
                "the stream ended after {} events: {:?}",
                events.len(),
                events.last()
            );
        };
        if event.name != ":" {
            pings = 0;
            events.push(event);
        } else if done.load(Ordering::SeqCst) {
            pings += 1;
        }
    }
    events
}

/// A client that never reads, fed by a looping `serve-replay`: closed with `overflow`
/// (counted) once its buffers are full, while ingestion goes on at its rate.
#[test]
fn a_client_that_never_reads_is_closed_with_overflow() {
    let file = main_file();
    let server = Service::serve_replay(&[&file], &["--rate", "3000", "--loop"]);
    let exporter = Service::start(&["--prefect-api-url", &server.api_url()]);
    let mut stalled = Sse::connect(exporter.addr, "/api/v1/stream?kind=flow-run", &[]);
    let state_events = || {
        let metrics = exporter.get("/metrics").body;
        metric(
            &metrics,
            "prefect_exporter_events_received_total",
            &[("kind", "state")],
        )
        .unwrap_or(0.0)
    };
    // The kernel holds about 1 MiB, the exporter 256 events, then 5 s of stall.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = exporter.get("/metrics").body;
        let dropped = metric(
            &metrics,
            "prefect_exporter_http_stream_clients_dropped_total",
            &[],
        );
        if dropped == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "not dropped: {dropped:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let at_drop = state_events();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let rate = (state_events() - at_drop) / started.elapsed().as_secs_f64();
    // Not a throughput test (the machine is shared): ingestion is not held up.
    assert!(rate > 100.0, "ingestion went on: {rate:.0} state events/s");
    let mut last = None;
    let mut transitions = 0;
    while let Some(event) = stalled.next(Duration::from_secs(10)) {
        transitions += usize::from(event.name == "transition");
        last = Some(event);
    }
    assert_eq!(last.unwrap().name, "overflow", "the last event");
    assert!(
        transitions > 256,
        "{transitions} transitions before the overflow"
    );
    let metrics = exporter.get("/metrics").body;
    assert_eq!(
        metric(&metrics, "prefect_exporter_http_stream_clients", &[]),
        Some(0.0)
    );
}
