//! A scripted fake Prefect server for hostile-upstream tests: plain threads on
//! `127.0.0.1:0`, one per connection, each handing the parsed request to the test's own
//! handler, which writes exactly the answer the test needs (a hostile one, byte by byte if it
//! must). Helpers write ordinary REST answers and speak raw websocket frames.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Most connections one fake server accepts (a bound on its accept loop).
const MAX_CONNECTIONS: u64 = 100_000;

/// One HTTP request as the fake server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`.
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler sees: the request, the connection, and the server's stop flag.
pub struct Exchange {
    /// The request.
    pub request: Request,
    /// The connection, to answer on.
    pub stream: TcpStream,
    /// Set when the fake server is dropped: long-running handlers stop.
    pub stop: Arc<AtomicBool>,
    /// Sequence number of this request on the server (0-based).
    pub seq: u64,
}

type Handler = dyn Fn(Exchange) + Send + Sync;

/// A running fake server; stops accepting and tells handlers to stop when dropped.
pub struct FakePrefect {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakePrefect {
    /// Serves every request with `handler`, each connection on its own thread.
    pub fn start(handler: impl Fn(Exchange) + Send + Sync + 'static) -> FakePrefect {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicU64::new(0));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_CONNECTIONS as usize) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (handler, stop, seen, counter) = (
                    handler.clone(),
                    stop2.clone(),
                    seen2.clone(),
                    counter.clone(),
                );
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let Ok(request) = read_request(&stream) else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(format!("{} {}", request.method, request.path));
                    let seq = counter.fetch_add(1, Ordering::SeqCst);
                    handler(Exchange {
                        request,
                        stream,
                        stop,
                        seq,
                    });
                });
            }
        });
        FakePrefect { addr, stop, seen }
    }

    /// `http://ADDR/api`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Requests seen so far (`METHOD /path?query`), in arrival order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests so far had a path starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|r| r.split(' ').nth(1).is_some_and(|p| p.starts_with(prefix)))
            .count()
    }

    /// Polls until `condition` holds on the requests seen; false after `within`.
    pub fn wait_for(&self, within: Duration, condition: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if condition(&self.seen()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        condition(&self.seen())
    }
}

impl Drop for FakePrefect {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn read_request(stream: &TcpStream) -> io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    for _ in 0..200 {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if method.is_empty() {
        return Err(io::Error::other("empty request"));
    }
    Ok(Request {
        method,
        path,
        headers,
    })
}

/// Writes an HTTP response with `Connection: close`.
pub fn respond(stream: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// A JSON 200.
pub fn respond_json(stream: &mut TcpStream, body: &str) {
    respond(
        stream,
        200,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
}

/// The answer of a healthy, empty Prefect to a REST request (`None` for other paths).
pub fn empty_rest(request: &Request) -> Option<&'static str> {
    let path = request.path.split('?').next().unwrap_or("");
    match path {
        "/api/flow_runs/count" | "/api/task_runs/count" => Some("0"),
        "/api/flow_runs/filter" | "/api/task_runs/filter" => Some("[]"),
        "/api/events/count-by/event" => Some("[]"),
        "/api/events/filter" | "/api/events/filter/next" => {
            Some(r#"{"events":[],"next_page":null,"total":0}"#)
        }
        "/api/health" => Some("true"),
        _ => None,
    }
}

/// Whether the request is the events websocket's upgrade.
pub fn is_websocket(request: &Request) -> bool {
    request.path.starts_with("/api/events/out")
}

/// A websocket connection, server side, spoken frame by frame.
pub struct WsConn {
    /// The socket.
    pub stream: TcpStream,
}

/// A final text frame (the first header byte: FIN and opcode).
pub const TEXT: u8 = 0x81;
/// A ping.
pub const PING: u8 = 0x89;
/// A close frame.
pub const CLOSE: u8 = 0x88;

impl WsConn {
    /// Answers the upgrade (subprotocol `prefect`).
    pub fn accept(mut stream: TcpStream, request: &Request) -> io::Result<WsConn> {
        let key = request.header("sec-websocket-key").unwrap_or("");
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: prefect\r\n\r\n"
        );
        stream.write_all(head.as_bytes())?;
        Ok(WsConn { stream })
    }

    /// The header of an unmasked server frame: `first` (FIN and opcode) and the length.
    pub fn header(first: u8, len: usize) -> Vec<u8> {
        let mut out = vec![first];
        match len {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out
    }

    /// Sends one frame.
    pub fn send(&mut self, first: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = WsConn::header(first, payload.len());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame)
    }

    /// Sends a text frame.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(TEXT, text.as_bytes())
    }

    /// Sends a close frame with `code` and `reason`.
    pub fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send(CLOSE, &payload)
    }

    /// Reads one client frame (unmasked): its first header byte and payload.
    pub fn read_frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head)?;
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if len > 1 << 20 {
            return Err(io::Error::other("client frame too large"));
        }
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 {
            self.stream.read_exact(&mut mask)?;
        }
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        Ok((head[0], payload))
    }

    /// Reads the `auth` message (returned), answers `auth_success`, reads the filter.
    pub fn subscribe(&mut self) -> io::Result<Value> {
        let (_, auth) = self.read_frame()?;
        self.send_text(r#"{"type":"auth_success"}"#)?;
        let (_, filter) = self.read_frame()?;
        let filter: Value = serde_json::from_slice(&filter).unwrap_or(Value::Null);
        if filter["type"] != "filter" {
            return Err(io::Error::other("expected a filter"));
        }
        Ok(serde_json::from_slice(&auth).unwrap_or(Value::Null))
    }

    /// Holds the connection open, pinging every `every`, until `stop` or `within` passes.
    pub fn keep_alive(&mut self, stop: &AtomicBool, every: Duration, within: Duration) {
        let deadline = Instant::now() + within;
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            if self.send(PING, b"keepalive").is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    }
}

/// Serves an events websocket: accepts the upgrade, takes the subscription, sends `frames`
/// and holds the connection open with pings until `stop` or a minute passes.
pub fn serve_subscription(
    stream: TcpStream,
    request: &Request,
    stop: &AtomicBool,
    frames: &[String],
) {
    let Ok(mut ws) = WsConn::accept(stream, request) else {
        return;
    };
    if ws.subscribe().is_err() {
        return;
    }
    for frame in frames {
        if ws.send_text(frame).is_err() {
            return;
        }
    }
    ws.keep_alive(stop, Duration::from_secs(1), Duration::from_secs(60));
}

/// RFC 3339 for `offset_ms` milliseconds from now (negative: in the past).
pub fn rfc3339_from_now(offset_ms: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(offset_ms);
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format time")
}

/// A flow-run state event frame of run `run` (a UUID) with event id `id` (a UUID):
/// `from` (type, name) or a new run, to `to`, at `occurred`.
pub fn state_event(
    id: &str,
    run: &str,
    from: Option<(&str, &str)>,
    to: (&str, &str),
    occurred: &str,
) -> String {
    let initial = match from {
        Some((ty, name)) => format!(r#"{{"type":"{ty}","name":"{name}"}}"#),
        None => "null".to_owned(),
    };
    let (ty, name) = to;
    format!(
        r#"{{"type":"event","event":{{"occurred":"{occurred}","event":"prefect.flow-run.{name}","resource":{{"prefect.resource.id":"prefect.flow-run.{run}","prefect.resource.name":"fake-run","prefect.state-name":"{name}","prefect.state-timestamp":"{occurred}","prefect.state-type":"{ty}"}},"related":[],"payload":{{"intended":{{"from":null,"to":"{ty}"}},"initial_state":{initial},"validated_state":{{"type":"{ty}","name":"{name}"}}}},"id":"{id}","follows":null,"received":"{occurred}"}}}}"#
    )
}

/// A UUID made from `n` (for distinct, readable ids).
pub fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Starts `run` against `fake` with `--listen 127.0.0.1:0 --log-format json` plus `args`.
pub fn exporter(
    fake: &FakePrefect,
    args: &[&str],
    env: &[(&str, &str)],
) -> crate::support::Service {
    let url = fake.api_url();
    let mut full = vec![
        "run",
        "--prefect-api-url",
        url.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ];
    full.extend_from_slice(args);
    crate::support::Service::spawn_with_env(&full, env)
}
