//! SIGTERM ends the service promptly whatever it is waiting for (issue 16): REST retries
//! and their `Retry-After` waits, a Prefect server that went away, a stderr pipe whose
//! reader has exited.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake_prefect::{
    empty_rest, exporter, is_websocket, respond, respond_json, Exchange, FakePrefect, WsConn,
};
use crate::support::{binary, replay_data};

/// Answers like an empty Prefect; once `gone` is set, reads each request and hangs up.
fn until_gone(gone: Arc<AtomicBool>) -> impl Fn(Exchange) + Send + Sync + 'static {
    move |ex: Exchange| {
        let Exchange {
            request,
            mut stream,
            stop,
            ..
        } = ex;
        if gone.load(Ordering::SeqCst) {
            return;
        }
        if is_websocket(&request) {
            let Ok(mut ws) = WsConn::accept(stream, &request) else {
                return;
            };
            if ws.subscribe().is_err() {
                return;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while !gone.load(Ordering::SeqCst)
                && !stop.load(Ordering::SeqCst)
                && Instant::now() < deadline
            {
                if ws.send(crate::fake_prefect::PING, b"k").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = ws.stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        match empty_rest(&request) {
            Some(body) => respond_json(&mut stream, body),
            None => respond(&mut stream, 404, &[], b"{}"),
        }
    }
}

#[test]
fn sigterm_ends_rest_retries_and_their_retry_after_wait_at_once() {
    let fake = FakePrefect::start(|mut ex| {
        if ex.request.path == "/api/flow_runs/count" {
            respond(&mut ex.stream, 503, &[("Retry-After", "30")], b"busy");
        } else {
            respond(&mut ex.stream, 404, &[], b"{}");
        }
    });
    let service = exporter(&fake, &[], &[]);
    assert!(fake.wait_for(Duration::from_secs(10), |seen| !seen.is_empty()));
    let (status, took) = service.terminate_within(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
}

#[test]
fn sigterm_after_the_server_went_away_does_not_wait_out_the_grace_period() {
    let gone = Arc::new(AtomicBool::new(false));
    let fake = FakePrefect::start(until_gone(gone.clone()));
    let service = exporter(
        &fake,
        &["--verify-interval", "1s", "--verify-settle", "1s"],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while service.get("/readyz").status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(service.get("/readyz").status, 200);
    let before = fake.count("/api/events/count-by/event");
    gone.store(true, Ordering::SeqCst);
    // The verifier's next check meets the vanished server and starts retrying.
    assert!(fake.wait_for(Duration::from_secs(10), |seen| {
        seen.iter()
            .filter(|r| r.contains("/events/count-by/event"))
            .count()
            > before
    }));
    let (status, took) = service.terminate_within(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
}

#[test]
fn sigterm_with_a_closed_stderr_pipe_still_exits() {
    // `run --replay FILE 2>&1 | head -1`: the reader takes one line and exits.
    let file = replay_data("prefect-3.9.1-main.jsonl");
    let program = binary().get_program().to_owned();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" run --replay \"$1\" --listen 127.0.0.1:0 2>&1")
        .arg(&program)
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("one line");
    assert!(!first.is_empty());
    // The reader is gone: every later write to stderr fails with EPIPE.
    let pid = child.id().to_string();
    let ready_deadline = Instant::now() + Duration::from_secs(10);
    // Wait until its HTTP listener is up (a listening socket among its open files).
    while Instant::now() < ready_deadline && !listening(&pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(listening(&pid), "the service is up");
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = sent + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = status.expect("the process exited after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
}

/// Whether process `pid` has a listening TCP socket (from `/proc/net/tcp` and its fds).
fn listening(pid: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect::<Vec<_>>()
        .join("\n");
    tables.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(3) == Some(&"0A") && fields.get(9).is_some_and(|i| inodes.iter().any(|x| x == i))
    })
}
