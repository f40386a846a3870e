//! The stream's last edges over real HTTP: a run whose events arrive out of `occurred` order
//! (a hand-written recording fed live by `serve-replay`) streams its own path and ends with
//! `end` exactly when its state is terminal; a client whose socket never drains is dropped
//! by the write deadline, and the gauges say so.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::stream::{Event, Sse};
use crate::support::{metric, replay_data, Service};

/// Second `s` of the hand-written recording.
fn at(s: u32) -> String {
    format!("2026-11-25T03:00:{s:02}.000000Z")
}

/// One state event of flow run `run`: event `id` at second `s`, `from` -> `to` (type, name).
fn line(id: u32, run: u32, s: u32, from: Option<(&str, &str)>, to: (&str, &str)) -> String {
    let run_id = format!("prefect.flow-run.00000000-0000-4000-8000-{run:012}");
    let state = |(ty, name): (&str, &str)| json!({"type": ty, "name": name});
    let event = json!({
        "occurred": at(s),
        "event": format!("prefect.flow-run.{}", to.1),
        "resource": {
            "prefect.resource.id": run_id,
            "prefect.resource.name": format!("run-{run}"),
            "prefect.state-name": to.1,
            "prefect.state-timestamp": at(s).replace('Z', "+00:00"),
            "prefect.state-type": to.0,
        },
        "related": [],
        "payload": {
            "intended": {"from": from.map(|f| f.0), "to": to.0},
            "initial_state": from.map(state),
            "validated_state": state(to),
        },
        "id": format!("01a2104c-0000-7000-8000-{id:012}"),
        "follows": null,
        "received": at(s),
    });
    json!({"type": "event", "event": event}).to_string()
}

const PENDING: (&str, &str) = ("PENDING", "Pending");
const RUNNING: (&str, &str) = ("RUNNING", "Running");
const FAILED: (&str, &str) = ("FAILED", "Failed");
const RETRY: (&str, &str) = ("SCHEDULED", "AwaitingRetry");
const COMPLETED: (&str, &str) = ("COMPLETED", "Completed");

/// `(from, to)` as a `transition` event shows them.
fn step(from: Option<(&str, &str)>, to: (&str, &str)) -> (Value, Value) {
    let state = |(ty, name): (&str, &str)| json!({"type": ty, "name": name});
    (from.map_or(Value::Null, state), state(to))
}

/// Reads `client` to its end: the `transition` steps, then the `end` event's state.
fn follow(client: &mut Sse, resource: &str) -> (Vec<(Value, Value)>, Option<Value>, Vec<Event>) {
    let mut steps = Vec::new();
    let mut events = Vec::new();
    loop {
        let event = client
            .next_event(Duration::from_secs(60))
            .expect("the run's stream ends with `end`");
        events.push(event.clone());
        assert_eq!(event.data["resource"], resource, "{event:?}");
        match event.name.as_str() {
            "transition" => steps.push((event.data["from"].clone(), event.data["to"].clone())),
            "end" => {
                assert_eq!(
                    client.next(Duration::from_secs(5)),
                    None,
                    "closed after `end`"
                );
                return (steps, Some(event.data["state"].clone()), events);
            }
            other => panic!("unexpected event {other}: {event:?}"),
        }
    }
}

/// Two runs whose events arrive out of order, released live after the clients connected:
/// - run 2 completes, then its RUNNING (older) arrives: streamed `PENDING`, `COMPLETED`,
///   `end`; a client resuming after the `COMPLETED` gets `end` at once, not the late RUNNING
///   as if the run had left its terminal state;
/// - run 1 fails, is retried, and its FAILED (older than the retry) arrives after the
///   retry's AwaitingRetry: the late FAILED does not end its stream (the run is SCHEDULED
///   then), the retry's RUNNING and COMPLETED follow, then `end`;
/// - an entries client sees every RUNNING entry, the late one marked `"late": true`.
#[test]
fn out_of_order_events_end_when_the_state_is_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out-of-order.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    // Another run first; played at 4 x the recorded pace, the two runs start 5 s after the
    // server, and an event older than the one before it is released right after that one.
    writeln!(file, "{}", line(100, 100, 0, None, PENDING)).unwrap();
    let two = [
        line(1, 2, 20, None, PENDING),
        line(3, 2, 24, Some(RUNNING), COMPLETED),
        line(2, 2, 22, Some(PENDING), RUNNING),
    ];
    let one = [
        line(11, 1, 30, None, PENDING),
        line(12, 1, 31, Some(PENDING), RUNNING),
        line(14, 1, 33, Some(FAILED), RETRY),
        line(13, 1, 32, Some(RUNNING), FAILED),
        line(15, 1, 34, Some(RETRY), RUNNING),
        line(16, 1, 35, Some(RUNNING), COMPLETED),
    ];
    for l in two.iter().chain(&one) {
        writeln!(file, "{l}").unwrap();
    }
    drop(file);
    let file = path.display().to_string();
    let server = Service::serve_replay(&[&file], &["--speed", "4"]);
    let exporter = Service::start(&["--prefect-api-url", &server.api_url()]);
    let run = |n: u32| format!("prefect.flow-run.00000000-0000-4000-8000-{n:012}");
    let (run1, run2) = (run(1), run(2));
    let mut one = Sse::connect(
        exporter.addr,
        &format!("/api/v1/stream?resource={run1}"),
        &[],
    );
    let mut two = Sse::connect(
        exporter.addr,
        &format!("/api/v1/stream?resource={run2}"),
        &[],
    );
    let mut running = Sse::connect(
        exporter.addr,
        "/api/v1/stream?kind=flow-run&state_type=RUNNING",
        &[],
    );
    for id in [&run1, &run2] {
        let status = exporter.get(&format!("/api/v1/resources/{id}")).status;
        assert_eq!(
            status, 404,
            "{id} must arrive live, after the clients connected"
        );
    }

    let (steps, end, events) = follow(&mut two, &run2);
    assert_eq!(
        steps,
        vec![step(None, PENDING), step(Some(RUNNING), COMPLETED)]
    );
    assert_eq!(end, Some(step(None, COMPLETED).1));
    let completed_id = events[1].id.clone().unwrap();

    let (steps, end, _) = follow(&mut one, &run1);
    let path = vec![
        step(None, PENDING),
        step(Some(PENDING), RUNNING),
        step(Some(FAILED), RETRY),
        step(Some(RETRY), RUNNING),
        step(Some(RUNNING), COMPLETED),
    ];
    assert_eq!(
        steps, path,
        "the late FAILED neither streamed nor ending it"
    );
    assert_eq!(end, Some(step(None, COMPLETED).1));

    let mut entries = Vec::new();
    while entries.len() < 3 {
        let event = running.next_event(Duration::from_secs(30)).unwrap();
        let late = event.data.get("late").cloned();
        entries.push((
            event.data["resource"].clone(),
            event.data["from"].clone(),
            late,
        ));
    }
    let state = |s| step(None, s).1;
    assert_eq!(
        entries,
        vec![
            (json!(run2), state(PENDING), Some(json!(true))),
            (json!(run1), state(PENDING), None),
            (json!(run1), state(RETRY), None),
        ]
    );

    // Resuming after run 2's COMPLETED, with its late RUNNING in the log since.
    let path = format!("/api/v1/stream?resource={run2}");
    let mut resumed = Sse::connect(exporter.addr, &path, &[("Last-Event-ID", &completed_id)]);
    let (steps, end, _) = follow(&mut resumed, &run2);
    assert_eq!(steps, vec![], "nothing after the COMPLETED it had");
    assert_eq!(end, Some(state(COMPLETED)));
}

/// A client that never reads while its socket never drains: it gets `overflow` queued (the
/// stall), and the connection, whose final write can never finish, is still dropped within
/// the write deadline: the open connections gauge falls back to the scrape's own and the
/// stream clients gauge to 0.
#[test]
fn a_connection_that_never_drains_is_dropped() {
    let file = replay_data("prefect-3.9.1-main.jsonl")
        .display()
        .to_string();
    let server = Service::serve_replay(&[&file], &["--rate", "3000", "--loop"]);
    let exporter = Service::start(&["--prefect-api-url", &server.api_url()]);
    let stalled = Sse::connect(exporter.addr, "/api/v1/stream?kind=flow-run", &[]);
    let gauges = || {
        let metrics = exporter.get("/metrics").body;
        let value = |name| metric(&metrics, name, &[]).unwrap_or(f64::NAN);
        (
            value("prefect_exporter_http_stream_clients_dropped_total"),
            value("prefect_exporter_http_connections_open"),
            value("prefect_exporter_http_stream_clients"),
        )
    };
    // Filling the kernel's buffers takes seconds, then 5 s of stall.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (dropped, open, clients) = gauges();
        if dropped == 1.0 {
            break;
        }
        assert!(
            open >= 2.0 && clients == 1.0,
            "{open} open, {clients} clients"
        );
        assert!(Instant::now() < deadline, "no overflow within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The write deadline is 15 s without progress, counted from when the socket filled.
    let dropped_at = Instant::now();
    let deadline = dropped_at + Duration::from_secs(30);
    loop {
        let (_, open, clients) = gauges();
        if (open, clients) == (1.0, 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still open 30 s after the overflow: {open} connections, {clients} stream clients"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "dropped {:.1} s after the overflow",
        dropped_at.elapsed().as_secs_f64()
    );
    drop(stalled);
}
