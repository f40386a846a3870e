//! `run --replay` over real HTTP: every endpoint, exact values from the hand-written
//! synthetic files (odd names, out-of-order, self-transitions: 7 runs with disjoint ids).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::{python, replay_data, Service};

const ODD_PENDING: &str = "Waiting \"for\" \\ the\nqueue ☃";
const ODD_DEPLOYMENT: &str = "nightly \"etl\" \\ v2\nüber";
const RUN_G: &str = "prefect.flow-run.00000006-0000-7000-8000-000000000001";

fn service() -> Service {
    let files: Vec<String> = [
        "synthetic-odd-names.jsonl",
        "synthetic-out-of-order.jsonl",
        "synthetic-self-transitions.jsonl",
    ]
    .iter()
    .map(|f| replay_data(f).display().to_string())
    .collect();
    let mut args = vec!["--replay"];
    args.extend(files.iter().map(String::as_str));
    Service::start(&args)
}

/// Parses exposition text with Python's prometheus_client (`text` or `openmetrics`) and
/// returns `[name, labels, value]` samples.
fn parse_with_prometheus_client(format: &str, text: &str) -> Vec<(String, Value, f64)> {
    const SCRIPT: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.buffer.read().decode("utf-8")
out = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(text) for s in f.samples]
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", SCRIPT, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python (set PREFECT_EXPORTER_TEST_PYTHON or run scripts/test.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client could not parse the {format} exposition: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&output.stdout).unwrap();
    samples
}

fn sample(samples: &[(String, Value, f64)], name: &str, labels: Value) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == labels)
        .map(|(_, _, v)| *v)
}

fn assert_parsed_values(samples: &[(String, Value, f64)]) {
    let runs = |ty: &str, name: &str| {
        sample(
            samples,
            "prefect_flow_runs",
            json!({"state_type": ty, "state_name": name}),
        )
    };
    assert_eq!(runs("RUNNING", "Läuft"), Some(1.0));
    assert_eq!(runs("RUNNING", "Running"), Some(2.0));
    assert_eq!(runs("PAUSED", "Suspended \"manual\""), Some(1.0));
    assert_eq!(runs("CRASHED", "Out of memory 💥"), Some(1.0));
    assert_eq!(runs("SCHEDULED", "Late"), Some(1.0));
    assert_eq!(runs("COMPLETED", "Completed"), Some(1.0));
    assert_eq!(
        runs("FAILED", "Failed"),
        Some(0.0),
        "default states are zero-filled"
    );
    let odd_entry = json!({"state_type": "PENDING", "state_name": ODD_PENDING, "deployment": ODD_DEPLOYMENT, "work_pool": "pool-é"});
    assert_eq!(
        sample(samples, "prefect_flow_run_state_entries_total", odd_entry),
        Some(1.0)
    );
    let plain_entry = json!({"state_type": "PENDING", "state_name": "Pending", "deployment": "", "work_pool": ""});
    assert_eq!(
        sample(samples, "prefect_flow_run_state_entries_total", plain_entry),
        Some(2.0)
    );
    let new_to_pending = json!({"from_state_type": "", "to_state_type": "PENDING"});
    assert_eq!(
        sample(
            samples,
            "prefect_flow_run_transitions_total",
            new_to_pending
        ),
        Some(2.0)
    );
    let late = json!({"state_type": "SCHEDULED", "state_name": "Late"});
    assert_eq!(
        sample(samples, "prefect_flow_run_self_transitions_total", late),
        Some(2.0)
    );
    assert_eq!(
        sample(
            samples,
            "prefect_exporter_events_received_total",
            json!({"kind": "state"})
        ),
        Some(16.0)
    );
    assert_eq!(
        sample(
            samples,
            "prefect_exporter_events_duplicate_total",
            json!({})
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(samples, "prefect_exporter_tracked_resources", json!({})),
        Some(7.0)
    );
    assert_eq!(
        sample(samples, "prefect_exporter_dedup_ids", json!({})),
        Some(16.0)
    );
    let active_running = json!({"state_type": "RUNNING", "state_name": "Läuft", "deployment": ODD_DEPLOYMENT, "work_pool": "pool-é"});
    assert_eq!(
        sample(samples, "prefect_flow_runs_active", active_running),
        Some(1.0)
    );
    // Run G left its odd Pending state after exactly one second: the 1 s bucket holds it, the
    // 0.5 s bucket does not (`le` is written "1" in text and "1.0" in OpenMetrics).
    let bucket = |le: f64| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == "prefect_flow_run_state_duration_seconds_bucket"
                    && l["state_name"] == ODD_PENDING
                    && l["le"].as_str().and_then(|v| v.parse::<f64>().ok()) == Some(le)
            })
            .map(|(_, _, v)| *v)
    };
    assert_eq!(bucket(0.5), Some(0.0));
    assert_eq!(bucket(1.0), Some(1.0));
}

#[test]
fn counts_endpoint_has_exact_totals() {
    let service = service();
    let response = service.get("/api/v1/counts");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let counts = response.json();
    let flow = &counts["flow_runs"];
    assert_eq!(flow["total"], 7);
    assert_eq!(
        flow["by_state_type"],
        json!({"COMPLETED": 1, "CRASHED": 1, "PAUSED": 1, "RUNNING": 3, "SCHEDULED": 1})
    );
    assert_eq!(
        flow["by_state_name"],
        json!({"Completed": 1, "Late": 1, "Läuft": 1, "Out of memory 💥": 1, "Running": 2, "Suspended \"manual\"": 1})
    );
    assert_eq!(counts["events"]["received"], 16);
    assert_eq!(counts["events"]["self_transitions"], 3);
    assert_eq!(counts["stream"]["connected"], false);
    assert_eq!(
        counts["stream"]["last_event_occurred"],
        "2026-11-25T01:00:08.000001Z"
    );
    assert!(
        counts.get("task_runs").is_none(),
        "task runs are off by default"
    );
}

#[test]
fn resource_endpoint_shows_one_run() {
    let service = service();
    let run = service.get(&format!("/api/v1/resources/{RUN_G}")).json();
    assert_eq!(run["id"], RUN_G);
    assert_eq!(run["kind"], "flow-run");
    assert_eq!(run["name"], "run-0001");
    assert_eq!(run["state"]["type"], "RUNNING");
    assert_eq!(run["state"]["name"], "Läuft");
    assert_eq!(run["state"]["since"], "2026-11-25T01:00:02.000001Z");
    assert_eq!(run["labels"]["deployment"], ODD_DEPLOYMENT);
    assert_eq!(run["labels"]["work_pool"], "pool-é");
    assert_eq!(run["labels"]["flow"], Value::Null);
    assert_eq!(
        run["transitions"],
        json!([
            {"from_type": "", "from_name": "", "to_type": "PENDING", "to_name": ODD_PENDING, "count": 1},
            {"from_type": "PENDING", "from_name": ODD_PENDING, "to_type": "RUNNING", "to_name": "Läuft", "count": 1}
        ])
    );
    let recent = run["last_transitions"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(
        recent[1]["event_id"],
        "00000061-0000-7000-8000-000000000002"
    );
    assert_eq!(recent[1]["at"], "2026-11-25T01:00:02.000001Z");

    let encoded = RUN_G.replace('.', "%2E");
    assert_eq!(
        service.get(&format!("/api/v1/resources/{encoded}")).json()["id"],
        RUN_G,
        "percent-encoded ids work"
    );

    let missing =
        service.get("/api/v1/resources/prefect.flow-run.00000000-0000-7000-8000-00000000dead");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("unknown resource"));
    assert_eq!(
        service.get("/api/v1/resources/prefect.task-run.x").status,
        404
    );
}

#[test]
fn resource_listing_filters_and_orders_oldest_first() {
    let service = service();
    let ids = |path: &str| -> (Vec<String>, u64) {
        let list = service.get(path).json();
        let ids = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        (ids, list["total_matching"].as_u64().unwrap())
    };
    let (running, total) = ids("/api/v1/resources?kind=flow-run&state_type=RUNNING");
    assert_eq!(total, 3);
    assert_eq!(
        running,
        vec![
            RUN_G.to_owned(),
            "prefect.flow-run.0000000f-0000-7000-8000-000000000001".to_owned(),
            "prefect.flow-run.0000000c-0000-7000-8000-000000000001".to_owned(),
        ]
    );
    assert_eq!(
        ids("/api/v1/resources?state_type=running&limit=1"),
        (vec![RUN_G.to_owned()], 3)
    );
    // In replay mode ages are measured against the recordings' newest event (01:00:08):
    // the RUNNING runs entered it at :02, :05 and :08, so they are 6, 3 and 0 s old.
    assert_eq!(
        ids("/api/v1/resources?state_type=RUNNING&older_than=4s"),
        (vec![RUN_G.to_owned()], 1),
        "ages follow the recording, not the wall clock"
    );
    assert_eq!(
        ids("/api/v1/resources?state_type=RUNNING&older_than=7s").1,
        0
    );
    assert_eq!(
        ids("/api/v1/resources?state_name=Late").0,
        vec!["prefect.flow-run.0000000e-0000-7000-8000-000000000001".to_owned()]
    );
    assert_eq!(ids("/api/v1/resources").1, 7);
    assert_eq!(
        ids("/api/v1/resources?kind=task-run").1,
        0,
        "task runs are not tracked"
    );
    for bad in [
        "kind=flow",
        "state_type=DONE",
        "older_than=soon",
        "limit=0",
        "colour=red",
    ] {
        let response = service.get(&format!("/api/v1/resources?{bad}"));
        assert_eq!(response.status, 400, "{bad}");
        assert!(response.json()["error"].is_string(), "{bad}");
    }
}

#[test]
fn metrics_parse_with_a_real_prometheus_parser_in_both_formats() {
    let service = service();
    let text = service.get("/metrics");
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(text
        .body
        .contains("prefect_flow_runs{state_type=\"RUNNING\",state_name=\"Läuft\"} 1\n"));
    assert_parsed_values(&parse_with_prometheus_client("text", &text.body));

    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let om = service.get_with("/metrics", &[("Accept", accept)]);
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("# EOF\n"));
    assert_parsed_values(&parse_with_prometheus_client("openmetrics", &om.body));
}

#[test]
fn health_readiness_landing_and_errors() {
    let service = service();
    assert_eq!(service.get("/healthz").status, 200);
    let ready = service.get("/readyz");
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"status": "ready"}))
    );
    let landing = service.get("/");
    assert_eq!(landing.status, 200);
    for link in [
        "/metrics",
        "/api/v1/counts",
        "/api/v1/resources",
        "/healthz",
        "/readyz",
    ] {
        assert!(landing.body.contains(link), "{link}");
    }
    let missing = service.get("/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("/nope"));
    let post = crate::support::http(service.addr, "POST", "/metrics", &[("Content-Length", "0")]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert!(post.json()["error"].is_string());
}

#[test]
fn sigterm_stops_the_service_with_exit_0() {
    let service = service();
    let status = service.terminate();
    assert_eq!(status.code(), Some(0));
}
