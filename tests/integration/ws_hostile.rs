//! A hostile or broken events websocket (issue 16): ping floods, silence, frames the
//! protocol cannot carry, and server text meant to forge log lines. Each server is scripted
//! in the test, frame by frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake_prefect::{
    empty_rest, exporter, is_websocket, respond, respond_json, rfc3339_from_now, state_event, uuid,
    Exchange, FakePrefect, WsConn, PING, TEXT,
};
use crate::support::{metric, rss_kib, Service};

/// Answers REST like an empty Prefect; each websocket goes to `script` with its index
/// (0 for the first connection), right after the upgrade.
fn with_stream(
    script: impl Fn(&mut WsConn, &Exchange, u64) + Send + Sync + 'static,
) -> impl Fn(Exchange) + Send + Sync + 'static {
    let connections = AtomicU64::new(0);
    move |ex: Exchange| {
        if !is_websocket(&ex.request) {
            let mut stream = ex.stream;
            match empty_rest(&ex.request) {
                Some(body) => respond_json(&mut stream, body),
                None => respond(&mut stream, 404, &[], b"{}"),
            }
            return;
        }
        let Ok(stream) = ex.stream.try_clone() else {
            return;
        };
        let Ok(mut ws) = WsConn::accept(stream, &ex.request) else {
            return;
        };
        script(&mut ws, &ex, connections.fetch_add(1, Ordering::SeqCst));
    }
}

/// Polls `/metrics` until `name{labels}` equals `value`; the last value after `within`.
fn wait_metric(
    service: &Service,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
    within: Duration,
) -> Option<f64> {
    let deadline = Instant::now() + within;
    loop {
        let now = metric(&service.get("/metrics").body, name, labels);
        if now == Some(value) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_ping_flood_is_cut_off_and_memory_stays_bounded() {
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let fake = FakePrefect::start(with_stream(move |ws, ex, index| {
        if ws.subscribe().is_err() {
            return;
        }
        if index > 0 {
            // Later connections: an ordinary, quiet stream.
            ws.keep_alive(&ex.stop, Duration::from_secs(1), Duration::from_secs(60));
            return;
        }
        // 1.5 million pings of 125 bytes, never reading the pongs.
        let mut frame = WsConn::header(PING, 125);
        frame.extend_from_slice(&[b'p'; 125]);
        let batch: Vec<u8> = frame.repeat(1000);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pings = 0;
        while pings < 1_500_000 && Instant::now() < deadline {
            if std::io::Write::write_all(&mut ws.stream, &batch).is_err() {
                break;
            }
            pings += 1000;
        }
        sent2.store(pings.max(1), Ordering::SeqCst);
    }));
    let service = exporter(&fake, &[], &[]);
    let pid = service.pid();
    let start_kib = rss_kib(pid);
    let mut peak = start_kib;
    let deadline = Instant::now() + Duration::from_secs(40);
    while sent.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    peak = peak.max(rss_kib(pid));
    eprintln!(
        "ping flood: {} pings sent, RSS {start_kib} KiB at start, peak {peak} KiB",
        sent.load(Ordering::SeqCst)
    );
    assert!(
        peak < start_kib + 40 * 1024,
        "RSS grew from {start_kib} KiB to {peak} KiB"
    );
    assert!(
        sent.load(Ordering::SeqCst) < 1_500_000,
        "the exporter hung up before the flood ended ({} pings)",
        sent.load(Ordering::SeqCst)
    );
    let flood = wait_metric(
        &service,
        "prefect_exporter_stream_reconnects_total",
        &[("reason", "flood")],
        1.0,
        Duration::from_secs(10),
    );
    assert_eq!(flood, Some(1.0), "the flooding connection was dropped once");
}

#[test]
fn a_silent_stream_is_dropped_after_the_idle_timeout() {
    let fake = FakePrefect::start(with_stream(move |ws, ex, index| {
        // The first connection subscribes, later ones never answer the auth message; then
        // no frame, no ping, until the exporter hangs up (or the test ends).
        if index == 0 && ws.subscribe().is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let _ = ws.stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 64];
        while !ex.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match std::io::Read::read(&mut ws.stream, &mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    }));
    let service = exporter(
        &fake,
        &["--reconcile-interval", "0", "--verify-interval", "0"],
        &[("PREFECT_EXPORTER_STREAM_IDLE_TIMEOUT", "2s")],
    );
    let connected = wait_metric(
        &service,
        "prefect_exporter_stream_connected",
        &[],
        1.0,
        Duration::from_secs(20),
    );
    assert_eq!(connected, Some(1.0));
    let dropped = wait_metric(
        &service,
        "prefect_exporter_stream_connected",
        &[],
        0.0,
        Duration::from_secs(10),
    );
    assert_eq!(
        dropped,
        Some(0.0),
        "the silent connection is no longer reported connected"
    );
    let idle = metric(
        &service.get("/metrics").body,
        "prefect_exporter_stream_reconnects_total",
        &[("reason", "idle")],
    );
    assert_eq!(idle, Some(1.0), "dropped for being idle");
    // The reconnection hangs in its handshake (15 s), so the truth stays visible.
    let ready = service.get("/readyz");
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["error"],
        "not ready: events stream: no frame and no ping for 2 s; the connection is taken for dead"
    );
    let counts = service.get("/api/v1/counts").json();
    assert_eq!(counts["stream"]["connected"], false);
    assert_eq!(
        metric(
            &service.get("/metrics").body,
            "prefect_exporter_stream_connected",
            &[]
        ),
        Some(0.0)
    );
    assert!(
        fake.wait_for(Duration::from_secs(10), |seen| {
            seen.iter().filter(|r| r.contains("/events/out")).count() >= 2
        }),
        "it reconnected"
    );
}

#[test]
fn oversize_and_invalid_utf8_frames_are_counted_and_the_stream_goes_on() {
    let script = move |ws: &mut WsConn, ex: &Exchange, _index: u64| {
        if ws.subscribe().is_err() {
            return;
        }
        // After the baseline, so each event adds a run to the totals.
        let now = rfc3339_from_now(0);
        let event =
            |n: u64| state_event(&uuid(n), &uuid(100 + n), None, ("RUNNING", "Running"), &now);
        let mut oversize = event(90).into_bytes();
        oversize.extend(std::iter::repeat_n(b' ', (5 << 20) - oversize.len()));
        let invalid_utf8 = event(91).replace("fake-run", "fake-\u{fffd}").into_bytes();
        let invalid_utf8: Vec<u8> = {
            // Replace the UTF-8 of U+FFFD with a lone continuation byte.
            let at = invalid_utf8
                .windows(3)
                .position(|w| w == "\u{fffd}".as_bytes())
                .expect("marker");
            let mut bytes = invalid_utf8[..at].to_vec();
            bytes.push(0x80);
            bytes.extend_from_slice(&invalid_utf8[at + 3..]);
            bytes
        };
        let fragmented = {
            let mut message = event(92).into_bytes();
            message.extend(std::iter::repeat_n(b' ', (6 << 20) - message.len()));
            message
        };
        let mut steps = || -> std::io::Result<()> {
            ws.send_text(&event(1))?;
            ws.send(TEXT, &oversize)?;
            ws.send_text(&event(2))?;
            ws.send(TEXT, &invalid_utf8)?;
            ws.send_text(&event(3))?;
            let (a, rest) = fragmented.split_at(3 << 20);
            let (b, c) = rest.split_at(2 << 20);
            ws.send(0x01, a)?;
            ws.send(0x00, b)?;
            ws.send(0x80, c)?;
            ws.send_text(&event(4))?;
            Ok(())
        };
        if steps().is_ok() {
            ws.keep_alive(&ex.stop, Duration::from_secs(1), Duration::from_secs(60));
        }
    };
    let fake = FakePrefect::start(with_stream(script));
    let service = exporter(
        &fake,
        &["--reconcile-interval", "0", "--verify-interval", "0"],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counts = service.get("/api/v1/counts").json();
    while counts["flow_runs"]["total"] != 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        counts = service.get("/api/v1/counts").json();
    }
    assert_eq!(
        counts["flow_runs"]["total"], 4,
        "every event arrived: {counts}"
    );
    assert_eq!(counts["events"]["state_events"], 4);
    assert_eq!(counts["events"]["duplicates"], 0);
    assert_eq!(
        counts["events"]["rejected_by_reason"],
        serde_json::json!({"malformed_json": 1, "oversize": 2})
    );
    assert_eq!(counts["stream"]["reconnects"], 0);
    assert_eq!(counts["stream"]["connected"], true);
    assert_eq!(fake.count("/api/events/out"), 1, "one connection");
}

#[test]
fn server_text_is_escaped_in_text_logs_and_readyz() {
    let hostile = "bye\n2026-01-01T00:00:00.000000Z ERROR forged: line\u{1b}[31m";
    let rest_failed = AtomicBool::new(false);
    let streams = with_stream(move |ws, _, index| {
        if index == 0 {
            if ws.subscribe().is_ok() {
                let _ = ws.close(1011, hostile);
            }
        } else {
            let _ = ws.read_frame();
            let failure = serde_json::json!({"type": "auth_failure", "reason": hostile});
            let _ = ws.send_text(&failure.to_string());
        }
        let _ = ws.read_frame();
    });
    let fake = FakePrefect::start(move |mut ex| {
        if ex.request.path == "/api/flow_runs/count" && !rest_failed.swap(true, Ordering::SeqCst) {
            respond(&mut ex.stream, 500, &[], hostile.as_bytes());
            return;
        }
        streams(ex);
    });
    let url = fake.api_url();
    let service = Service::spawn(&[
        "run",
        "--prefect-api-url",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "text",
        "--verify-interval",
        "0",
        "--reconcile-interval",
        "0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = service.get("/readyz");
    while !ready.body.contains("authentication failed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ready = service.get("/readyz");
    }
    let reason = ready.json()["error"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        reason,
        "not ready: events stream: authentication failed: bye\\n2026-01-01T00:00:00.000000Z ERROR forged: line\\u{1b}[31m"
    );
    let lines = service.drain_logs(Duration::from_millis(500));
    let text = lines.join("\n");
    for what in [
        "HTTP 500: bye\\n2026",
        "(code 1011: bye\\n2026",
        "authentication failed: bye\\n2026",
    ] {
        assert!(text.contains(what), "{what} in {text}");
    }
    for line in &lines {
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z ERROR forged"),
            "forged: {line}"
        );
        assert!(
            !line.contains('\u{1b}'),
            "an escape code reached the log: {line:?}"
        );
    }
}
