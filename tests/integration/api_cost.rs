//! The REST cost made visible (issue 13): every request attempt the exporter makes to
//! Prefect's API is counted by route template and outcome, retries included. The truth is
//! what the fake server itself answered, tallied as it answers: no figure comes from the
//! exporter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fake_prefect::{
    empty_rest, exporter, is_websocket, respond, respond_json, Exchange, FakePrefect, WsConn,
};
use crate::support::{metric, Service};

/// (endpoint template, code) → requests.
type Tally = BTreeMap<(String, String), u64>;

/// The `prefect_exporter_api_requests_total` samples of a scrape.
fn requests_by_series(text: &str) -> Tally {
    let mut out = Tally::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("prefect_exporter_api_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").expect("a sample line");
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            let len = labels[start..].find('"').expect("closing quote");
            labels[start..start + len].to_owned()
        };
        let value: f64 = value.parse().expect("a number");
        out.insert((label("endpoint"), label("code")), value as u64);
    }
    out
}

fn wait_ready(service: &Service, within: Duration) {
    let deadline = Instant::now() + within;
    while service.get("/readyz").status != 200 {
        assert!(Instant::now() < deadline, "{}", service.get("/readyz").body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_rest_attempt_is_counted_by_endpoint_and_code_retries_included() {
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let flow_counts = Arc::new(AtomicU64::new(0));
    let task_counts = Arc::new(AtomicU64::new(0));
    let answered = tally.clone();
    let fake = FakePrefect::start(move |ex| {
        let Exchange {
            request,
            mut stream,
            stop,
            ..
        } = ex;
        if is_websocket(&request) {
            if let Ok(mut ws) = WsConn::accept(stream, &request) {
                if ws.subscribe().is_ok() {
                    ws.keep_alive(&stop, Duration::from_secs(1), Duration::from_secs(60));
                }
            }
            return;
        }
        let path = request.path.split('?').next().unwrap_or("").to_owned();
        let template = path.strip_prefix("/api").unwrap_or(&path).to_owned();
        // The first two flow-run counts are refused as busy (retried), the first task-run
        // count fails outright (the whole baseline is taken again); everything else is an
        // empty, healthy server. Tallied before the answer is sent, so the tally is complete
        // by the time the exporter has the answer.
        let code = if path == "/api/flow_runs/count"
            && flow_counts.fetch_add(1, Ordering::SeqCst) < 2
        {
            503
        } else if path == "/api/task_runs/count" && task_counts.fetch_add(1, Ordering::SeqCst) < 1 {
            500
        } else if empty_rest(&request).is_some() {
            200
        } else {
            404
        };
        *answered
            .lock()
            .unwrap()
            .entry((template, code.to_string()))
            .or_default() += 1;
        match (code, empty_rest(&request)) {
            (503, _) => respond(&mut stream, 503, &[("Retry-After", "0")], b"busy"),
            (200, Some(body)) => respond_json(&mut stream, body),
            (code, _) => respond(&mut stream, code, &[], b"{}"),
        }
    });
    let service = exporter(
        &fake,
        &[
            "--task-runs",
            "--reconcile-interval",
            "0",
            "--verify-interval",
            "0",
        ],
        &[],
    );
    // Ready: the baseline and the run listings are done, and with reconciliation and
    // verification off nothing else calls REST.
    wait_ready(&service, Duration::from_secs(30));
    let text = service.get("/metrics").body;
    let expected = tally.lock().unwrap().clone();
    assert_eq!(requests_by_series(&text), expected, "{text}");

    // Written by hand: the scripted failures, each once per attempt.
    let flow = ("/flow_runs/count".to_owned(), "503".to_owned());
    let task = ("/task_runs/count".to_owned(), "500".to_owned());
    assert_eq!(expected.get(&flow), Some(&2));
    assert_eq!(expected.get(&task), Some(&1));
    for endpoint in ["/flow_runs/count", "/task_runs/count", "/flow_runs/filter"] {
        let answered: u64 = expected
            .iter()
            .filter(|((e, _), _)| e == endpoint)
            .map(|(_, n)| n)
            .sum();
        assert!(answered > 0, "{endpoint} was called");
        let observed = metric(
            &text,
            "prefect_exporter_api_request_duration_seconds_count",
            &[("endpoint", endpoint)],
        );
        assert_eq!(
            observed,
            Some(answered as f64),
            "{endpoint}: one observation per attempt"
        );
    }
}

#[test]
fn a_server_that_cannot_be_reached_is_counted_as_connect_failures() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/api");
    let service = Service::spawn(&[
        "run",
        "--prefect-api-url",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--reconcile-interval",
        "0",
        "--verify-interval",
        "0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = service.get("/metrics").body;
        let series = requests_by_series(&text);
        let connect = series
            .get(&("/flow_runs/count".to_owned(), "connect".to_owned()))
            .copied()
            .unwrap_or(0);
        // The first count is tried, then retried after the backoff's first 0.5 s.
        if connect >= 2 {
            assert!(
                series.keys().all(|(_, code)| code == "connect"),
                "nothing answered, so every attempt is a connect failure: {series:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{series:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
