//! A hostile or broken Prefect REST API (issue 16): every answer below comes from a scripted
//! fake server, and the exporter must neither crash, nor grow memory, nor send unbounded
//! requests, nor show a negative number of runs, nor hide why it cannot reach the server.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake_prefect::{
    empty_rest, exporter, is_websocket, respond, respond_json, rfc3339_from_now,
    serve_subscription, state_event, uuid, Exchange, FakePrefect,
};
use crate::support::{metric, rss_kib, Service};

/// Answers healthy REST requests and subscribes websockets, holding them open with pings.
fn healthy(ex: Exchange) {
    let Exchange {
        request,
        mut stream,
        stop,
        ..
    } = ex;
    if is_websocket(&request) {
        return serve_subscription(stream, &request, &stop, &[]);
    }
    match empty_rest(&request) {
        Some(body) => respond_json(&mut stream, body),
        None => respond(&mut stream, 404, &[], b"{}"),
    }
}

/// A healthy, empty server whose websocket sends one state event, now: a run entering
/// RUNNING from `from` (a new run when `None`).
fn sending_one(from: Option<(&'static str, &'static str)>) -> impl Fn(Exchange) {
    move |ex| {
        if !is_websocket(&ex.request) {
            return healthy(ex);
        }
        let event = state_event(
            &uuid(1),
            &uuid(100),
            from,
            ("RUNNING", "Running"),
            &rfc3339_from_now(0),
        );
        serve_subscription(ex.stream, &ex.request, &ex.stop, &[event]);
    }
}

/// Polls `/readyz` until its body contains `text`; the last body after `within`.
fn readyz_saying(service: &Service, text: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let body = service.get("/readyz").body;
        if body.contains(text) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn retry_after_nan_inf_negative_or_a_date_falls_back_to_the_backoff_instead_of_crashing() {
    let values = ["NaN", "inf", "-1", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"];
    let fake = FakePrefect::start(move |mut ex| {
        if ex.request.path == "/api/flow_runs/count" {
            let value = values[(ex.seq as usize) % values.len()];
            respond(&mut ex.stream, 503, &[("Retry-After", value)], b"busy");
        } else {
            healthy(ex);
        }
    });
    let mut service = exporter(&fake, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.count("/api/flow_runs/count") < 4
        && service.exited().is_none()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(service.exited(), None, "the process is still running");
    assert!(
        fake.count("/api/flow_runs/count") >= 4,
        "the count is retried after each hostile Retry-After: {:?}",
        fake.seen()
    );
    let body = readyz_saying(&service, "HTTP 503", Duration::from_secs(20));
    assert!(body.contains("REST baseline failed"), "{body}");
}

/// Serves chunks of spaces on `stream` (chunked encoding) until the client goes away, at
/// most `max_bytes` or `within`; how many bytes were written.
fn endless_chunked(stream: &mut std::net::TcpStream, max_bytes: u64, within: Duration) -> u64 {
    let _ = stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = vec![b' '; 64 * 1024];
    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(b"\r\n");
    let deadline = Instant::now() + within;
    let mut written = 0;
    while written < max_bytes && Instant::now() < deadline {
        if stream.write_all(&framed).is_err() {
            break;
        }
        written += chunk.len() as u64;
    }
    written
}

#[test]
fn an_endless_count_body_is_cut_off_at_its_limit_without_growing_memory() {
    let served = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let (served2, finished2) = (served.clone(), finished.clone());
    let fake = FakePrefect::start(move |mut ex| {
        if ex.request.path == "/api/flow_runs/count" {
            let n = endless_chunked(&mut ex.stream, 600 << 20, Duration::from_secs(20));
            served2.fetch_add(n, Ordering::SeqCst);
            finished2.fetch_add(1, Ordering::SeqCst);
        } else {
            healthy(ex);
        }
    });
    let service = exporter(&fake, &[], &[]);
    let pid = service.pid();
    let start_kib = rss_kib(pid);
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut peak = start_kib;
    while finished.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("endless count body: RSS {start_kib} KiB at start, peak {peak} KiB");
    assert!(
        peak < start_kib + 40 * 1024,
        "RSS grew from {start_kib} KiB to {peak} KiB"
    );
    assert!(
        served.load(Ordering::SeqCst) < 64 << 20,
        "the client stopped reading early: {} bytes served",
        served.load(Ordering::SeqCst)
    );
    let (refused, _) = service.logs_until(Duration::from_secs(10), |l| {
        l.contains("response body over 4096 bytes")
    });
    assert!(refused, "the oversized count is refused and logged");
}

#[test]
fn a_huge_error_body_is_not_held() {
    let streamed = Arc::new(AtomicU64::new(0));
    let streamed2 = streamed.clone();
    let fake = FakePrefect::start(move |mut ex| {
        if ex.request.path == "/api/flow_runs/count" && ex.seq == 0 {
            // 300 MB announced, streamed until the client hangs up.
            let total: u64 = 300 << 20;
            let head = format!("HTTP/1.1 503 X\r\nContent-Length: {total}\r\n\r\n");
            let _ = ex.stream.write_all(head.as_bytes());
            let chunk = vec![b'e'; 64 * 1024];
            let mut written = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            while written < total && Instant::now() < deadline {
                if ex.stream.write_all(&chunk).is_err() {
                    break;
                }
                written += chunk.len() as u64;
            }
            streamed2.store(written.max(1), Ordering::SeqCst);
        } else {
            healthy(ex);
        }
    });
    let mut service = exporter(&fake, &[], &[]);
    let pid = service.pid();
    let start_kib = rss_kib(pid);
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut peak = start_kib;
    while streamed.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    peak = peak.max(rss_kib(pid));
    eprintln!("300 MB error body: RSS {start_kib} KiB at start, peak {peak} KiB");
    assert!(
        peak < start_kib + 40 * 1024,
        "RSS grew from {start_kib} KiB to {peak} KiB"
    );
    assert!(
        streamed.load(Ordering::SeqCst) < 64 << 20,
        "the client hung up early: {} bytes streamed",
        streamed.load(Ordering::SeqCst)
    );
    assert_eq!(service.exited(), None);
}

#[test]
fn a_count_of_100_mb_of_spaces_is_refused() {
    let fake = FakePrefect::start(move |mut ex| {
        if ex.request.path == "/api/flow_runs/count" {
            let mut body = vec![b' '; 100 << 20];
            body.push(b'0');
            respond(
                &mut ex.stream,
                200,
                &[("Content-Type", "application/json")],
                &body,
            );
        } else {
            healthy(ex);
        }
    });
    let service = exporter(&fake, &[], &[]);
    let body = readyz_saying(&service, "response body over", Duration::from_secs(20));
    assert!(
        body.contains("/api/flow_runs/count: response body over 4096 bytes; refused"),
        "{body}"
    );
    assert_eq!(service.get("/readyz").status, 503, "no baseline from it");
}

#[test]
fn a_negative_rest_count_is_refused() {
    let fake = FakePrefect::start(move |mut ex| {
        if ex.request.path == "/api/flow_runs/count" {
            respond_json(&mut ex.stream, "-1000000");
        } else {
            healthy(ex);
        }
    });
    let service = exporter(&fake, &[], &[]);
    let body = readyz_saying(&service, "negative run count", Duration::from_secs(20));
    assert!(body.contains("a negative run count (-1000000)"), "{body}");
    let metrics = service.get("/metrics").body;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("prefect_flow_runs{"))
    {
        assert!(!line.ends_with(" -1000000"), "{line}");
    }
}

#[test]
fn nine_counts_of_i64_max_saturate_instead_of_wrapping() {
    let fake = FakePrefect::start(move |mut ex| {
        if ex.request.path == "/api/flow_runs/count" {
            respond_json(&mut ex.stream, &i64::MAX.to_string());
        } else {
            healthy(ex);
        }
    });
    let service = exporter(
        &fake,
        &["--reconcile-interval", "0", "--verify-interval", "0"],
        &[],
    );
    let body = readyz_saying(&service, "\"status\":\"ready\"", Duration::from_secs(20));
    assert!(body.contains("\"status\":\"ready\""), "{body}");
    let counts = service.get("/api/v1/counts").json();
    let cap = (1i64 << 53) - 1;
    assert_eq!(counts["flow_runs"]["total"], 9 * cap);
    for ty in [
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "CRASHED",
        "PAUSED",
        "CANCELLING",
    ] {
        assert_eq!(counts["flow_runs"]["by_state_type"][ty], cap, "{ty}");
    }
}

#[test]
fn a_state_total_below_zero_is_shown_as_zero_and_its_deficit_is_counted() {
    // A run leaves PENDING after the baseline, whose counts said no run was PENDING.
    let fake = FakePrefect::start(sending_one(Some(("PENDING", "Pending"))));
    let service = exporter(
        &fake,
        &["--reconcile-interval", "0", "--verify-interval", "0"],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counts = service.get("/api/v1/counts").json();
    while counts["events"]["state_events"] != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        counts = service.get("/api/v1/counts").json();
    }
    assert_eq!(counts["events"]["state_events"], 1);
    assert_eq!(
        counts["flow_runs"]["by_state_type"],
        serde_json::json!({"RUNNING": 1})
    );
    assert_eq!(counts["flow_runs"]["total"], 1);
    let metrics = service.get("/metrics").body;
    let runs = |ty, name| {
        metric(
            &metrics,
            "prefect_flow_runs",
            &[("state_type", ty), ("state_name", name)],
        )
    };
    assert_eq!(runs("PENDING", "Pending"), Some(0.0));
    assert_eq!(runs("RUNNING", "Running"), Some(1.0));
    let deficit = |ty| {
        metric(
            &metrics,
            "prefect_exporter_runs_deficit",
            &[("kind", "flow_run"), ("state_type", ty)],
        )
    };
    assert_eq!(deficit("PENDING"), Some(1.0));
    assert_eq!(deficit("RUNNING"), Some(0.0));
}

#[test]
fn repair_paging_is_bounded_when_pages_never_end() {
    let page = Arc::new(AtomicU64::new(0));
    let page2 = page.clone();
    let fake = FakePrefect::start(move |mut ex| {
        let path = ex.request.path.split('?').next().unwrap_or("").to_owned();
        match path.as_str() {
            "/api/events/count-by/event" => respond_json(
                &mut ex.stream,
                r#"[{"value":"prefect.flow-run.Completed","label":"x","count":5,"start_time":"2026-01-01T00:00:00Z","end_time":"2026-01-01T00:00:00Z"}]"#,
            ),
            "/api/events/filter" | "/api/events/filter/next" => {
                // One new event per page (outside every state), and always a next page.
                let n = page2.fetch_add(1, Ordering::SeqCst);
                let event = format!(
                    r#"{{"occurred":"{}","event":"prefect.flow-run.heartbeat","resource":{{"prefect.resource.id":"prefect.flow-run.{}"}},"related":[],"payload":{{}},"id":"{}","follows":null,"received":"{}"}}"#,
                    rfc3339_from_now(-3_000),
                    uuid(1),
                    uuid(1_000_000 + n),
                    rfc3339_from_now(-3_000),
                );
                let next = format!(
                    "http://{}/api/events/filter/next?page-token=t{n}",
                    ex.request.header("host").unwrap_or("x")
                );
                let body = format!(r#"{{"events":[{event}],"next_page":"{next}","total":999999}}"#);
                respond_json(&mut ex.stream, &body);
            }
            _ => healthy(ex),
        }
    });
    let service = exporter(
        &fake,
        &[
            "--verify-interval",
            "1s",
            "--verify-settle",
            "1s",
            "--reconcile-interval",
            "0",
        ],
        &[],
    );
    let pid = service.pid();
    let start_kib = rss_kib(pid);
    let mut peak = start_kib;
    let cuts = |service: &Service| {
        metric(
            &service.get("/metrics").body,
            "prefect_exporter_repair_truncated_total",
            &[("limit", "window")],
        )
        .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_cut = None;
    while cuts(&service) < 2.0 && Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        if first_cut.is_none() && cuts(&service) >= 1.0 {
            first_cut = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pages = page.load(Ordering::SeqCst);
    let counts = service.get("/api/v1/counts").json();
    eprintln!(
        "never-ending pages: {pages} pages fetched, RSS {start_kib} KiB at start, peak {peak} KiB"
    );
    assert_eq!(
        counts["events"]["received"], pages,
        "every page was applied before the next was fetched"
    );
    assert!(
        peak < start_kib + 40 * 1024,
        "RSS grew from {start_kib} KiB to {peak} KiB"
    );
    assert_eq!(pages, 800, "each cut after exactly 400 pages");
    assert_eq!(cuts(&service), 2.0, "two windows' re-fetches were cut off");
    let second = first_cut.expect("a first cut").elapsed();
    assert!(
        second >= Duration::from_secs(1),
        "backoff between cuts: {second:?}"
    );
    let lines = service.drain_logs(Duration::from_millis(200));
    let logged = lines
        .iter()
        .filter(|l| l.contains("stopped at the page limit"))
        .count();
    assert_eq!(logged, 1, "logged once: {lines:?}");
}

#[test]
fn an_unreachable_server_is_reported_at_once_with_its_url_and_the_cause() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("http://probe:urlsecret@127.0.0.1:{port}/api");
    let service = Service::spawn(&[
        "run",
        "--prefect-api-url",
        &url,
        "--auth-string",
        "admin:hunter2",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let started = Instant::now();
    let (found, lines) = service.logs_until(Duration::from_secs(5), |l| {
        l.contains("\"WARN\"") && l.contains("Connection refused")
    });
    assert!(found, "a warning within 5 s: {lines:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let line = lines.last().expect("the warning");
    assert!(
        line.contains(&format!("http://127.0.0.1:{port}/api/flow_runs/count")),
        "names the URL: {line}"
    );
    for line in &lines {
        assert!(
            !line.contains("urlsecret") && !line.contains("hunter2"),
            "{line}"
        );
    }
}

#[test]
fn a_window_the_server_holds_fewer_events_of_is_refetched_only_on_its_last_retry() {
    // The exporter holds one event of a window; the server (its persister behind) none.
    let fake = FakePrefect::start(sending_one(None));
    let service = exporter(
        &fake,
        &[
            "--verify-interval",
            "1s",
            "--verify-settle",
            "1s",
            "--reconcile-interval",
            "0",
        ],
        &[],
    );
    let received = Instant::now() + Duration::from_secs(30);
    while service.get("/api/v1/counts").json()["events"]["received"] != 1 {
        assert!(Instant::now() < received, "the event was not received");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its window is closed after the settle time, then checked on each of the next rounds.
    let seen_counts = fake.count("/api/events/count-by/event");
    let checked = Instant::now() + Duration::from_secs(30);
    while fake.count("/api/events/count-by/event") < seen_counts + 5 {
        assert!(Instant::now() < checked, "verification stopped checking");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fake.count("/api/events/filter"),
        0,
        "no event page fetched for a window the server holds fewer events of"
    );
    // On its last retry (the 20th, one a second here) the window is re-fetched all the same:
    // an event the server never stored could hide a missing one of the same name.
    let last_retry = Instant::now() + Duration::from_secs(60);
    while fake.count("/api/events/filter") == 0 {
        assert!(
            Instant::now() < last_retry,
            "the last retry re-fetched nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
