//! Shared helpers: the binary, a running `run --replay` service, a minimal HTTP client, and
//! the subset comparison used by expected files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test (`PREFECT_EXPORTER_TEST_BINARY` runs the tests against another
/// build, e.g. an older commit's, to see a regression test fail there).
pub fn binary() -> Command {
    Command::new(binary_path())
}

/// The path of the binary under test (see [`binary`]).
pub fn binary_path() -> PathBuf {
    match std::env::var_os("PREFECT_EXPORTER_TEST_BINARY") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_prefect-events-exporter")),
    }
}

/// `replay-data/` of this repository.
pub fn replay_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("replay-data")
        .join(name)
}

/// Runs the binary to completion with a deadline.
pub fn run_to_end(args: &[&str]) -> Output {
    let child = binary()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn binary");
    wait_with_deadline(child, Duration::from_secs(60))
}

fn wait_with_deadline(mut child: Child, deadline: Duration) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("poll child").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("process did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `replay` and parses its JSON output.
pub fn replay_json(args: &[&str]) -> Value {
    let mut full = vec!["replay"];
    full.extend_from_slice(args);
    let output = run_to_end(&full);
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("replay prints JSON")
}

/// Asserts that every field of every section of `expected` equals the same field of
/// `actual` (whole values: maps must match key for key). Sections or fields absent from
/// `expected` are not compared.
pub fn assert_matches_expected(actual: &Value, expected: &Value, what: &str) {
    let expected = expected.as_object().expect("expected file is an object");
    for (section, fields) in expected {
        let fields = fields.as_object().expect("sections are objects");
        for (field, value) in fields {
            assert_eq!(
                actual.get(section).and_then(|s| s.get(field)),
                Some(value),
                "{what}: {section}.{field}"
            );
        }
    }
}

/// Polls `service`'s `/api/v1/counts` until `flow_runs.<field>` equals `expected`'s for every
/// one of `fields`; after `within`, fails on the first field that still differs.
pub fn wait_for_flow_runs(
    service: &Service,
    expected: &Value,
    fields: &[&str],
    within: Duration,
    what: &str,
) {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = service.get("/api/v1/counts").json();
        if fields
            .iter()
            .all(|f| last["flow_runs"][f] == expected["flow_runs"][f])
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for f in fields {
        assert_eq!(
            last["flow_runs"][f], expected["flow_runs"][f],
            "{what}: flow_runs.{f}"
        );
    }
}

/// Flags of a `run` against `serve-replay` that reconcile and verify every few seconds, so
/// its counts settle on the server's quickly.
pub const QUICK_CHECKS: [&str; 6] = [
    "--reconcile-interval",
    "2s",
    "--verify-interval",
    "1s",
    "--verify-settle",
    "2s",
];

/// A `run --replay` process serving HTTP; killed with SIGKILL on drop.
pub struct Service {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Log lines it printed (collected in the background).
    pub logs: mpsc::Receiver<String>,
}

impl Service {
    /// Starts `run --listen 127.0.0.1:0 --log-format json` plus `args`, and waits until it is
    /// ready.
    pub fn start(args: &[&str]) -> Service {
        let mut full = vec!["run", "--listen", "127.0.0.1:0", "--log-format", "json"];
        full.extend_from_slice(args);
        let service = Service::spawn(&full);
        service.wait_for("/readyz");
        service
    }

    /// Starts `serve-replay FILES --listen 127.0.0.1:0 --log-format json` plus `args`, and
    /// waits until it answers.
    pub fn serve_replay(files: &[&str], args: &[&str]) -> Service {
        let mut full = vec!["serve-replay"];
        full.extend_from_slice(files);
        full.extend_from_slice(&["--listen", "127.0.0.1:0", "--log-format", "json"]);
        full.extend_from_slice(args);
        let service = Service::spawn(&full);
        service.wait_for("/api/health");
        service
    }

    /// Starts the binary with `args` and waits for the log line with its listen address.
    pub fn spawn(args: &[&str]) -> Service {
        Service::spawn_with_env(args, &[])
    }

    /// [`Service::spawn`] with extra environment variables. Logs may be JSON or text (the
    /// address is then read from `listen=`).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut child = binary()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn binary");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut service = Service {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            logs: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = service
                .logs
                .recv_timeout(remaining)
                .expect("the service logs its listen address");
            let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(listen) = parsed["fields"]["listen"].as_str() {
                break listen.parse().expect("listen address");
            }
            let text = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("listen="));
            if let Some(listen) = text.filter(|_| line.contains("Serving HTTP")) {
                break listen.parse().expect("listen address");
            }
        };
        service.addr = addr;
        service
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("poll child")
    }

    /// Log lines printed so far (waiting at most `within` for the first).
    pub fn drain_logs(&self, within: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        if let Ok(line) = self.logs.recv_timeout(within) {
            lines.push(line);
        }
        lines.extend(self.logs.try_iter());
        lines
    }

    /// Collects log lines until one satisfies `found` (returned last) or `within` passes.
    pub fn logs_until(
        &self,
        within: Duration,
        found: impl Fn(&str) -> bool,
    ) -> (bool, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut lines = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(remaining) {
                Ok(line) => {
                    let hit = found(&line);
                    lines.push(line);
                    if hit {
                        return (true, lines);
                    }
                }
                Err(_) => return (false, lines),
            }
        }
    }

    /// Sends SIGTERM; the exit status and how long the exit took (panics after `limit`).
    pub fn terminate_within(mut self, limit: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let sent = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("poll") {
                return (status, sent.elapsed());
            }
            if sent.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `http://ADDR/api`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    fn wait_for(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.get(path).status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{path} did not answer 200 within 30 s");
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, &[])
    }

    /// GET `path` with extra headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http(self.addr, "GET", path, headers)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("poll") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// A POST with a JSON body.
pub fn http_post(addr: SocketAddr, path: &str, body: &str) -> Response {
    let length = body.len().to_string();
    http_with_body(
        addr,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &length),
        ],
        body,
    )
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http_with_body(addr, method, path, headers, "")
}

/// One HTTP/1.1 request with a body and `Connection: close`.
pub fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The resident set size of process `pid` in KiB (`VmRSS`), or 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The value of the Prometheus sample `name{labels…}` (labels in any order, all given must
/// match) in `/metrics` text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (n == name && all).then(|| value.parse().ok())?
        })
}

/// The Python interpreter with `prometheus_client` (set by `scripts/test.sh`).
pub fn python() -> String {
    std::env::var("PREFECT_EXPORTER_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}
