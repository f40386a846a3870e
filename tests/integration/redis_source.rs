//! `--redis-url`: the exporter reading a real `redis-server` (started here on a free loopback
//! port in a temp directory) through its consumer group. The stream is written by hand: each
//! event of a recording `XADD`ed as Prefect does (`data` = the event JSON, `attributes` =
//! `{"id","event"}`). Ground truth: the recording's REST truth
//! (`prefect-3.9.1-main.expected.json`) and counts of entries written here.
//!
//! Skipped, with a message, only when `redis-server` is not installed
//! (`bash scripts/install-test-services.sh` installs it; CI does).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flags::one_line_error;
use crate::support::{metric, replay_data, wait_for_flow_runs, Service};

/// What the REST truth holds for flow runs.
const FIELDS: [&str; 3] = ["total", "by_state_type", "by_state_name"];
const GROUP: &str = "prefect-events-exporter";

/// A throwaway `redis-server`; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    url: String,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port, or `None` when `redis-server` is not installed.
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("SKIPPED: redis-server is not installed (bash scripts/install-test-services.sh installs it)");
            return None;
        }
        // Redis cannot report a port it chose: take a free one, and retry if another process
        // took it in between.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(child) = Redis::spawn(port, dir.path()) {
                return Some(Redis {
                    child,
                    port,
                    url: format!("redis://127.0.0.1:{port}/0"),
                    dir,
                });
            }
        }
        panic!("redis-server did not start on a free port in 5 attempts");
    }

    /// `redis-server` on `port` without persistence, once it answers `PING`.
    fn spawn(port: u16, dir: &std::path::Path) -> Option<Child> {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let url = format!("redis://127.0.0.1:{port}/0");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let ping = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return Some(child);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kills the server.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port: like a real restart without persistence, every key
    /// (the stream, the group) is gone.
    fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = Redis::spawn(self.port, self.dir.path()) {
                self.child = child;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on its port"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// `XADD events * data <event> attributes {"id","event"}` for every event of `file`;
    /// the ids, in order.
    fn add_events(&self, file: &str) -> Vec<String> {
        let mut conn = self.conn();
        let text = std::fs::read_to_string(replay_data(file)).unwrap();
        let mut ids = Vec::new();
        for line in text.lines() {
            let frame: Value = serde_json::from_str(line).unwrap();
            if frame["type"] != "event" {
                continue;
            }
            let event = &frame["event"];
            let attributes = serde_json::json!({"id": event["id"], "event": event["event"]});
            let id: String = redis::cmd("XADD")
                .arg("events")
                .arg("*")
                .arg("data")
                .arg(event.to_string())
                .arg("attributes")
                .arg(attributes.to_string())
                .query(&mut conn)
                .unwrap();
            ids.push(id);
        }
        ids
    }

    /// The group's field `name` in `XINFO GROUPS events`.
    fn group_field(&self, name: &str) -> i64 {
        let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("events")
            .query(&mut self.conn())
            .unwrap();
        for group in groups {
            let pairs: Vec<_> = group.chunks(2).collect();
            let is_ours = pairs.iter().any(|p| {
                p[0] == redis::Value::BulkString(b"name".to_vec())
                    && p[1] == redis::Value::BulkString(GROUP.as_bytes().to_vec())
            });
            if is_ours {
                for p in pairs {
                    if p[0] == redis::Value::BulkString(name.as_bytes().to_vec()) {
                        if let redis::Value::Int(n) = p[1] {
                            return n;
                        }
                    }
                }
            }
        }
        panic!("no group {GROUP} with an integer {name}");
    }

    /// Waits until the group has no pending entry (everything acknowledged).
    fn wait_all_acknowledged(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.group_field("pending") != 0 {
            assert!(
                Instant::now() < deadline,
                "entries still pending after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exporter on `redis`, without REST (no baseline, no checks; the API URL does not
/// answer): only the stream can make the counts right.
fn exporter(redis: &Redis, extra: &[&str]) -> Service {
    let mut args = vec![
        "--prefect-api-url",
        "http://127.0.0.1:1/api",
        "--redis-url",
        &redis.url,
        "--no-bootstrap",
        "--reconcile-interval",
        "0",
        "--verify-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    Service::start(&args)
}

fn counts(service: &Service) -> Value {
    service.get("/api/v1/counts").json()
}

fn gaps(service: &Service) -> f64 {
    metric(
        &service.get("/metrics").body,
        "prefect_exporter_backfill_gaps_total",
        &[],
    )
    .unwrap_or(f64::NAN)
}

/// Of `file`'s events, those the exporter takes in without `--task-runs` (named
/// `prefect.flow-run.…`; entries naming other events are acknowledged and left out, as the
/// websocket's filter would): how many, and how many of them repeat an earlier id.
fn flow_run_events(file: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(replay_data(file)).unwrap();
    let mut seen = std::collections::HashSet::new();
    let (mut received, mut duplicates) = (0, 0);
    for line in text.lines() {
        let frame: Value = serde_json::from_str(line).unwrap();
        let name = frame["event"]["event"].as_str().unwrap_or("");
        if frame["type"] == "event" && name.starts_with("prefect.flow-run.") {
            received += 1;
            if !seen.insert(frame["event"]["id"].to_string()) {
                duplicates += 1;
            }
        }
    }
    (received, duplicates)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(replay_data("prefect-3.9.1-main.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits until `events.received` reaches `n`, then checks it stays there.
fn wait_received(service: &Service, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts(service)["events"]["received"].as_u64() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "{what}: received {} of {n}",
            counts(service)["events"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn redis_source_counts_exactly_and_a_trim_past_unread_entries_is_one_gap() {
    let Some(redis) = Redis::start() else { return };
    let expected = expected();
    let first = redis.add_events("prefect-3.9.1-main.jsonl");
    let (received, duplicates) = flow_run_events("prefect-3.9.1-main.jsonl");
    assert!(
        received < first.len() as u64,
        "the recording has other events too"
    );
    let service = exporter(&redis, &[]);
    wait_for_flow_runs(
        &service,
        &expected,
        &FIELDS,
        Duration::from_secs(60),
        "redis",
    );
    wait_received(&service, received, "redis");
    let doc = counts(&service);
    assert_eq!(doc["events"]["duplicates"], duplicates);
    assert_eq!(doc["events"]["rejected"], 0);
    assert_eq!(doc["stream"]["source"], "redis");
    assert_eq!(doc["stream"]["connected"], true);
    assert_eq!(gaps(&service), 0.0, "first use of a new group is no gap");
    // Without a state file an entry is acknowledged once applied.
    redis.wait_all_acknowledged(Duration::from_secs(30));
    assert!(service.terminate().success());

    // While the exporter is down: 5 more entries, of which the first 2 are trimmed away
    // unread (as Prefect's XTRIM MINID does past an idle group), then 5 more.
    let more = redis.add_events("synthetic-self-transitions.jsonl");
    assert_eq!(more.len(), 5);
    let _: i64 = redis::cmd("XTRIM")
        .arg("events")
        .arg("MINID")
        .arg(&more[2])
        .query(&mut redis.conn())
        .unwrap();
    let last = redis.add_events("synthetic-duplicates.jsonl");
    let service = exporter(&redis, &[]);
    wait_received(&service, (3 + last.len()) as u64, "after the trim");
    assert_eq!(gaps(&service), 1.0, "the trim is one gap");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(gaps(&service), 1.0, "counted once");
    assert_eq!(
        counts(&service)["events"]["received"],
        (3 + last.len()) as u64
    );
    assert!(service.terminate().success());
}

#[test]
fn redis_source_with_a_state_file_survives_sigkill_and_reclaims_pending_entries_without_double_counting(
) {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.bin");
    let state_arg = state.to_str().unwrap();
    let expected = expected();
    let entries = redis.add_events("prefect-3.9.1-main.jsonl").len() as u64;
    let (received, _) = flow_run_events("prefect-3.9.1-main.jsonl");

    // 1. No snapshot before the SIGKILL: nothing may be acknowledged, so the restart gets
    //    every entry again from the group's pending list.
    let service = exporter(
        &redis,
        &["--state-file", state_arg, "--snapshot-interval", "1h"],
    );
    wait_received(&service, received, "before the kill");
    assert_eq!(
        redis.group_field("pending"),
        entries as i64,
        "nothing durable, nothing acknowledged"
    );
    kill(service);

    // 2. Restarted: the pending entries are claimed and applied; each snapshot on disk lets
    //    its entries be acknowledged.
    let service = exporter(
        &redis,
        &["--state-file", state_arg, "--snapshot-interval", "1s"],
    );
    wait_for_flow_runs(
        &service,
        &expected,
        &FIELDS,
        Duration::from_secs(60),
        "reclaimed",
    );
    wait_received(&service, received, "reclaimed");
    redis.wait_all_acknowledged(Duration::from_secs(30));
    let before = counts(&service);
    kill(service);

    // 3. A crash between a snapshot and its XACK: every entry delivered again, unacknowledged
    //    (to another consumer of the group). The restart claims them; dedup drops them all.
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg("events")
        .arg(GROUP)
        .arg("0")
        .query(&mut redis.conn())
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("crashed")
        .arg("COUNT")
        .arg(entries)
        .arg("STREAMS")
        .arg("events")
        .arg(">")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(redis.group_field("pending"), entries as i64);
    let service = exporter(
        &redis,
        &["--state-file", state_arg, "--snapshot-interval", "1s"],
    );
    let duplicates = before["events"]["duplicates"].as_u64().unwrap() + received;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts(&service)["events"]["duplicates"].as_u64() != Some(duplicates) {
        assert!(Instant::now() < deadline, "{}", counts(&service)["events"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = counts(&service);
    for f in FIELDS {
        assert_eq!(
            after["flow_runs"][f], expected["flow_runs"][f],
            "flow_runs.{f}"
        );
    }
    redis.wait_all_acknowledged(Duration::from_secs(30));
    assert_eq!(gaps(&service), 0.0);
    assert!(service.terminate().success());
}

/// SIGKILL (what dropping a [`Service`] sends).
fn kill(service: Service) {
    drop(service);
}

#[test]
fn a_group_named_ephemeral_is_refused_naming_the_flag() {
    let line = one_line_error(&["--redis-group", "ephemeral-exporter"], "--redis-group");
    assert!(line.contains("ephemeral"), "{line}");
}

#[test]
fn a_bad_redis_url_is_refused_without_showing_its_password() {
    let line = one_line_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "http://user:hunter22@127.0.0.1:1/0",
        ],
        "--redis-url",
    );
    assert!(!line.contains("hunter22"), "{line}");
}

/// Polls until `check` holds for the service's `/readyz` status and counts document.
fn wait_until(service: &Service, what: &str, check: impl Fn(u16, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = service.get("/readyz");
        let doc = counts(service);
        if check(ready.status, &doc) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /readyz {} {}, stream {}",
            ready.status,
            ready.body,
            doc["stream"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn losing_redis_makes_the_exporter_unready_and_a_restart_that_lost_the_stream_is_one_gap() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let entries = redis.add_events("synthetic-self-transitions.jsonl").len() as u64;
    let service = exporter(&redis, &[]);
    wait_received(&service, entries, "before the loss");
    redis.kill();
    wait_until(&service, "Redis down", |status, doc| {
        status == 503 && doc["stream"]["connected"] == false
    });
    let reason = service.get("/readyz").body;
    assert!(reason.contains("events stream"), "{reason}");
    redis.restart();
    wait_until(&service, "Redis back", |status, doc| {
        status == 200 && doc["stream"]["connected"] == true
    });
    assert!(counts(&service)["stream"]["reconnects"].as_u64().unwrap() >= 1);
    assert_eq!(gaps(&service), 1.0, "the group vanished with Redis's data");
    let more = redis.add_events("synthetic-duplicates.jsonl").len() as u64;
    wait_received(&service, entries + more, "after the restart");
    assert_eq!(gaps(&service), 1.0);
    assert!(service.terminate().success());
}

/// The names of the group's consumers (`XINFO CONSUMERS events <group>`).
fn consumer_names(redis: &Redis) -> Vec<String> {
    let consumers: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("events")
        .arg(GROUP)
        .query(&mut redis.conn())
        .unwrap();
    consumers
        .iter()
        .filter_map(|fields| {
            let at = fields
                .chunks(2)
                .position(|p| p[0] == redis::Value::BulkString(b"name".to_vec()))?;
            match &fields[at * 2 + 1] {
                redis::Value::BulkString(name) => Some(String::from_utf8_lossy(name).into_owned()),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn a_second_exporter_in_the_same_group_is_refused_and_takes_over_when_the_first_stops() {
    let Some(redis) = Redis::start() else { return };
    let expected = expected();
    redis.add_events("prefect-3.9.1-main.jsonl");
    let (received, _) = flow_run_events("prefect-3.9.1-main.jsonl");
    let first = exporter(&redis, &[]);
    wait_for_flow_runs(&first, &expected, &FIELDS, Duration::from_secs(60), "first");
    wait_received(&first, received, "first");
    redis.wait_all_acknowledged(Duration::from_secs(30));
    let names = consumer_names(&redis);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with("prefect-events-exporter-"),
        "{names:?}"
    );

    // 1. A second exporter in the same group reads nothing and says why.
    let second = Service::spawn(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--prefect-api-url",
        "http://127.0.0.1:1/api",
        "--redis-url",
        &redis.url,
        "--no-bootstrap",
        "--reconcile-interval",
        "0",
        "--verify-interval",
        "0",
    ]);
    let (logged, lines) = second.logs_until(Duration::from_secs(30), |l| {
        l.contains("\"ERROR\"") && l.contains("give each exporter its own --redis-group")
    });
    assert!(logged, "{lines:?}");
    let ready = second.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let reason = format!(
        "another consumer ({}) is reading group '{GROUP}' of stream 'events': give each exporter its own --redis-group",
        names[0]
    );
    assert!(ready.body.contains(&reason), "{}", ready.body);
    assert_eq!(counts(&second)["events"]["received"], 0);
    assert_eq!(counts(&second)["stream"]["connected"], false);
    assert_eq!(consumer_names(&redis), names, "the refused one never joins");

    // 2. The first is not disturbed: it takes every new entry, exactly.
    redis.add_events("synthetic-duplicates.jsonl");
    let (more, _) = flow_run_events("synthetic-duplicates.jsonl");
    wait_received(&first, received + more, "first, undisturbed");
    assert_eq!(first.get("/readyz").status, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(counts(&second)["events"]["received"], 0, "still refused");
    assert_eq!(second.get("/readyz").status, 503);
    let (logged_twice, _) = second.logs_until(Duration::from_millis(200), |l| {
        l.contains("\"ERROR\"") && l.contains("--redis-group")
    });
    assert!(!logged_twice, "the refusal is logged once");

    // 3. The first stops (everything it read acknowledged): the second takes the group over
    //    from where the first left it, forgets the first's name, and counts only what is new.
    assert!(first.terminate().success());
    wait_until(&second, "the second takes over", |status, doc| {
        status == 200 && doc["stream"]["connected"] == true
    });
    let last = redis.add_events("synthetic-self-transitions.jsonl");
    let (newest, _) = flow_run_events("synthetic-self-transitions.jsonl");
    assert_eq!(newest, last.len() as u64);
    wait_received(&second, newest, "the second, after the take-over");
    redis.wait_all_acknowledged(Duration::from_secs(30));
    let now = consumer_names(&redis);
    assert_eq!(now.len(), 1, "the first's name was deleted: {now:?}");
    assert_ne!(now, names, "each process reads under its own name");
    assert_eq!(gaps(&second), 0.0);
    assert!(second.terminate().success());
}
