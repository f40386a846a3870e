//! What error responses repeat of a request: never more than a short, escaped excerpt of the
//! method, path, resource id or query (issue 16: a 405 echoed 400 KB of method back).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::{replay_data, Service};

fn service() -> Service {
    let file = replay_data("synthetic-odd-names.jsonl");
    Service::start(&["--replay", file.to_str().unwrap()])
}

/// Sends `request` raw and returns (status, JSON body).
fn raw(service: &Service, request: &[u8]) -> (u16, Value) {
    let mut stream =
        TcpStream::connect_timeout(&service.addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let status = text[9..12].parse().expect("status");
    let (_, body) = text.split_once("\r\n\r\n").expect("header end");
    (status, serde_json::from_str(body).expect("JSON body"))
}

#[test]
fn a_long_method_is_not_echoed_back_in_full() {
    let service = service();
    let method = "A".repeat(8000);
    let request = format!("{method} /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = raw(&service, request.as_bytes());
    assert_eq!(status, 405);
    let expected = format!(
        "method {}… (8000 bytes) not allowed on /metrics",
        "A".repeat(64)
    );
    assert_eq!(body, serde_json::json!({ "error": expected }));
}

#[test]
fn long_paths_ids_and_queries_are_cut_and_control_characters_escaped() {
    let service = service();
    let path = format!("/{}", "p".repeat(5000));
    let (status, body) = raw(
        &service,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 404);
    assert_eq!(
        body["error"],
        format!("no such path: /{}… (5001 bytes)", "p".repeat(63))
    );

    let id = service.get("/api/v1/resources/evil%0A%1B%5B31mred%E2%80%AEtxt");
    assert_eq!(id.status, 404);
    assert_eq!(
        id.json()["error"],
        "unknown resource: evil\\u{a}\\u{1b}[31mred\\u{202e}txt"
    );

    let query = service.get(&format!("/api/v1/resources?{}=1", "k".repeat(3000)));
    assert_eq!(query.status, 400);
    assert_eq!(
        query.json()["error"],
        format!("unknown query parameter '{}… (3000 bytes)'", "k".repeat(64))
    );
    let kind = service.get("/api/v1/resources?kind=flow%0Drun");
    assert_eq!(kind.status, 400);
    assert_eq!(
        kind.json()["error"],
        "kind: unknown kind 'flow\\u{d}run' (choices: flow-run, task-run)"
    );
}
