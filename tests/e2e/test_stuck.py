"""End-to-end: a flow run stuck in PENDING is listed by the exporter and, fed through the real
alert rules with promtool, fires PrefectFlowRunStuckPending.

A real Prefect server; one flow run created over REST and set to PENDING with no worker, so it
stays PENDING. The exporter's own /metrics text at that moment becomes promtool input series
(value growing 60 s per minute from the scraped age), checked against the real rules file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support import (
    FLOW_RUN_PREFIX,
    create_flow,
    log,
    set_flow_run_state,
    summary,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "prefect-events-exporter.rules.yml"
METRIC = "prefect_flow_run_oldest_state_age_seconds"
THRESHOLD = 600.0  # the rule's `> 600`
STEPS = 20  # input series '<v0>+60x20': samples at 0m..20m
JOB = "prefect-events-exporter"


def _promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.skip("promtool not installed (bash scripts/check-ops.sh installs it)")
    return path


def _humanize_duration(v: float) -> str:
    """Prometheus' `humanizeDuration` template function (for v >= 1)."""
    assert v >= 1, v
    d = int(v)
    seconds, minutes, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
    if days:
        return f"{days}d {hours}h {minutes}m {seconds}s"
    if hours:
        return f"{hours}h {minutes}m {seconds}s"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{v:.4g}s"


def _series_values(v0: float, steps: int) -> list[float]:
    """What promtool expands '<v0>+60x<steps>' to (repeated addition, as its parser does)."""
    out, v = [], v0
    for _ in range(steps + 1):
        out.append(v)
        v += 60.0
    return out


def _series_selector(labels: dict[str, str]) -> str:
    body = ",".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    return f"{METRIC}{{{body}}}"


def _samples(metrics_text: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == METRIC:
                out.append((dict(s.labels), float(s.value)))
    return out


def test_stuck_pending_run_is_listed_and_fires_the_alert(servers, exporters):
    promtool = _promtool()
    assert RULES.is_file(), RULES
    t_start = time.monotonic()

    server = servers("stuck")
    exp = exporters(server)
    log(f"exporter ready after {exp.wait_ready(60):.1f} s")

    # A flow run that nobody will ever run: created over REST (SCHEDULED; with no state the
    # server would make it PENDING already), then set PENDING; no worker.
    flow_id = create_flow(server, "stuck-pending-flow")
    run = server.rest.call("POST", "/flow_runs/", {
        "flow_id": flow_id, "name": "stuck-pending-run",
        "state": {"type": "SCHEDULED", "name": "Scheduled"},
    })
    run_id = run["id"]
    set_flow_run_state(server, run_id, "PENDING", "Pending")
    log(f"flow run {run_id} set PENDING")
    resource_id = FLOW_RUN_PREFIX + run_id

    # 1. The resources API lists exactly that run as PENDING for >= 5 s, and /metrics agrees.
    path = "/api/v1/resources?kind=flow-run&state_type=PENDING&older_than=5s"

    def listed():
        exp.assert_alive()
        status, raw = exp.get(path)
        if status != 200:
            return None
        body = json.loads(raw)
        if not body.get("resources"):
            return None
        return body

    body = wait_for(listed, 60, f"{path} to list {resource_id}", interval=0.5)
    log(f"resources: {json.dumps(body)[:600]}")
    assert body["total_matching"] == 1, body
    assert len(body["resources"]) == 1, body
    res = body["resources"][0]
    assert res["id"] == resource_id, res
    assert res["kind"] == "flow-run", res
    assert res["state"]["type"] == "PENDING", res
    assert res["state"]["name"] == "Pending", res
    assert res["state"]["age_seconds"] >= 5, res

    def pending_age_in_metrics():
        text = exp.metrics()
        ages = [v for labels, v in _samples(text) if labels.get("state_type") == "PENDING"]
        return (text, ages[0]) if len(ages) == 1 and ages[0] >= 5 else None

    metrics_text, scraped_age = wait_for(pending_age_in_metrics, 30, f"{METRIC}{{state_type=PENDING}} >= 5", 0.5)
    log(f"/metrics: {METRIC}{{state_type=PENDING}} = {scraped_age}")

    # 2. The real /metrics samples become promtool input series, with the target labels a
    # Prometheus scrape would add (the description annotation names the instance).
    instance = f"127.0.0.1:{exp.port}"
    samples = _samples(metrics_text)
    assert samples, f"no {METRIC} samples in /metrics"
    input_series = []
    pending = []
    for labels, value in samples:
        assert "job" not in labels and "instance" not in labels, labels
        full = {"job": JOB, "instance": instance, **labels}
        input_series.append({"series": _series_selector(full), "values": f"{value!r}+60x{STEPS}"})
        if labels.get("state_type") == "PENDING":
            pending.append((full, value))
    assert len(pending) == 1, pending
    labels, v0 = pending[0]

    # First minute at which the value is above 600 (pending), fires one minute later (for: 1m).
    values = _series_values(v0, STEPS)
    k_above = next(k for k, v in enumerate(values) if v > THRESHOLD)
    k_fire = k_above + 1
    assert k_fire <= STEPS, (v0, k_fire)
    fire_value = values[k_fire]
    duration = _humanize_duration(fire_value)
    state_name = labels["state_name"]
    exp_alert = {
        "exp_labels": {"severity": "warning", **labels},
        "exp_annotations": {
            "summary": f"Flow run stuck in {state_name} (PENDING) for {duration}",
            "description": (
                f"The oldest flow run in state {state_name} (PENDING) on {instance} has been "
                f"waiting {duration} (threshold 10m): its infrastructure never started. "
                "List it with /api/v1/resources?kind=flow-run&state_type=PENDING."
            ),
        },
    }
    alert = "PrefectFlowRunStuckPending"
    rule_test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "stuck pending run scraped from a live exporter",
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    {"eval_time": "0m", "alertname": alert, "exp_alerts": []},
                    # above 600 but not yet for 1m: pending, not firing
                    {"eval_time": f"{k_above}m", "alertname": alert, "exp_alerts": []},
                    {"eval_time": f"{k_fire}m", "alertname": alert, "exp_alerts": [exp_alert]},
                    {"eval_time": f"{STEPS}m", "alertname": alert,
                     "exp_alerts": [{**exp_alert, "exp_annotations": {
                         k: v.replace(duration, _humanize_duration(values[STEPS]))
                         for k, v in exp_alert["exp_annotations"].items()}}]},
                ],
            }
        ],
    }

    with tempfile.TemporaryDirectory(prefix="stuck-rules-") as tmp:
        test_file = Path(tmp) / "stuck.rules.test.yml"
        test_file.write_text(json.dumps(rule_test, indent=2))  # JSON is YAML
        try:
            proc = subprocess.run(
                [promtool, "test", "rules", str(test_file)],
                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"promtool test rules timed out\n{exc.stdout}\n{exc.stderr}")
        out = (proc.stdout + proc.stderr).strip()
        log(f"promtool test rules (rc {proc.returncode}):\n{out}")
        assert proc.returncode == 0, (
            f"promtool test rules failed (rc {proc.returncode}):\n{out}\n--- test file\n{test_file.read_text()}"
        )

    # Still the same run, still PENDING (nothing ran it meanwhile).
    status, raw = exp.get(path)
    assert status == 200 and [r["id"] for r in json.loads(raw)["resources"]] == [resource_id], raw[:500]
    summary(
        f"STUCK: {resource_id} listed PENDING (age {res['state']['age_seconds']:.1f} s), "
        f"{METRIC} {v0!r} scraped; promtool: no alert at 0m/{k_above}m, "
        f"{alert} fires at {k_fire}m ({duration}); {time.monotonic() - t_start:.1f} s"
    )
