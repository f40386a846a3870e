//! Headroom for scrapes and probes under a hostile client (issue 16): idle sockets at the
//! connection cap are shed rather than keeping `/healthz` and `/metrics` out, and half-sent
//! oversized request heads are cut off at 16 KiB with 431 instead of each holding hundreds
//! of KiB.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{http, metric, replay_data, rss_kib, Service};

/// `run --replay` (small file) on a free port with `extra` flags, ready.
fn start(extra: &[&str]) -> Service {
    let file = replay_data("synthetic-odd-names.jsonl");
    let mut args = vec!["--replay", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Service::start(&args)
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
}

/// GET `path` must answer 200 within `within` (each try with `Connection: close`).
fn answers_200(addr: SocketAddr, path: &str, within: Duration) -> String {
    let started = Instant::now();
    let response = http(addr, "GET", path, &[]);
    assert_eq!(
        response.status, 200,
        "{path} with idle sockets at the cap: {}",
        response.body
    );
    assert!(
        started.elapsed() < within,
        "{path} took {:?}",
        started.elapsed()
    );
    response.body
}

#[test]
fn idle_sockets_at_the_connection_cap_do_not_keep_healthz_or_metrics_out() {
    // Before: 20 idle sockets filled `--web-max-connections 20` and every probe got 503 until
    // the header timeout (30 s here) closed them.
    let service = start(&["--web-max-connections", "20", "--web-header-timeout", "30s"]);
    let mut idle: Vec<TcpStream> = Vec::new();
    for round in 0..5 {
        idle.extend((0..30).map(|_| connect(service.addr)));
        answers_200(service.addr, "/healthz", Duration::from_secs(2));
        let body = answers_200(service.addr, "/metrics", Duration::from_secs(2));
        let shed = metric(&body, "prefect_exporter_http_connections_shed_total", &[]).unwrap();
        assert!(
            shed >= (30 * (round + 1) - 20) as f64,
            "round {round}: {shed} shed"
        );
        assert_eq!(
            metric(
                &body,
                "prefect_exporter_http_connections_refused_total",
                &[]
            ),
            Some(0.0),
            "nobody is refused while idle sockets can make room"
        );
    }
    drop(idle);
}

#[test]
fn half_sent_oversized_headers_get_431_and_memory_stays_bounded() {
    // Before: hyper's ~400 KiB head limit let each half-sent 380 KB head stay buffered
    // (200 of them: about 80 MB more RSS, and no answer until the header timeout).
    let service = start(&["--web-header-timeout", "30s"]);
    let baseline = rss_kib(service.pid());
    let filler = vec![b'a'; 380 * 1024];
    let held: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = connect(service.addr);
            stream
                .set_write_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: ");
            // The server stops reading at its limit: the rest may not fit anywhere.
            let _ = stream.write_all(&filler);
            stream
        })
        .collect();
    let grown = rss_kib(service.pid()).saturating_sub(baseline);
    assert!(
        grown < 30 * 1024,
        "RSS grew {grown} KiB with 200 half-sent heads held (baseline {baseline} KiB)"
    );
    for mut stream in held {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let answered = text.starts_with("HTTP/1.1 431 ");
        let closed = match &read {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(
            answered || (raw.is_empty() && closed),
            "neither 431 nor closed: {read:?} {text}"
        );
    }
    // Small heads still work, and a 17 KiB one is refused.
    answers_200(service.addr, "/healthz", Duration::from_secs(2));
    let big = "b".repeat(17 * 1024);
    let mut stream = connect(service.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}
