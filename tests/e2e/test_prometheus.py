"""The exporter scraped by a real Prometheus server (Debian's `prometheus`, 1 s scrapes and rule
evaluations), with the repository's alert rules (a test copy with short `for:`, see
prometheus.py) and every PromQL expression of the Grafana dashboard.

Ground truth is independent of the exporter: the recording's REST answer
(`replay-data/prefect-3.9.1-main.expected.json`: 659 Completed flow runs, ...) and the
hand-made `data/stuck-pending.jsonl` (one run left PENDING; see its generator).

- `test_replay_scraped_by_prometheus`: `run --replay` of the main recording. Prometheus sees
  `up == 1`, negotiated OpenMetrics (checked in the metric families Prometheus parsed, against
  a control job that gets text 0.0.4), the REST truth, every dashboard expression evaluating
  (empty exactly where stated in REPLAY_EMPTY), and the alerts the recording must fire.
- `test_live_stream_rates_and_alerts`: `run` against `serve-replay` of the stuck-pending
  recording at its recorded pace: entry rate > 0 while events flow, PrefectFlowRunStuckPending
  firing for the run left PENDING, PrefectExporterDisconnected firing once serve-replay stops;
  the REST requests of the baseline counted and timed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Iterable

import pytest

from prometheus import (
    STUCK_PENDING_SECONDS,
    Expect,
    Prometheus,
    ServeReplay,
    TextFormatProxy,
    all_value,
    at_least,
    dashboard_queries,
    equals,
    load_dashboard,
    rule_alert_names,
    rules_test_copy,
    since_exporter_start,
    substitute,
    within,
)
from support import HOST, Exporter, artifacts, http, summary

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "replay-data" / "prefect-3.9.1-main.jsonl"
TRUTH = json.loads((ROOT / "replay-data" / "prefect-3.9.1-main.expected.json").read_text())
STUCK = Path(__file__).resolve().parent / "data" / "stuck-pending.jsonl"
STUCK_EVENTS = 62  # state events in stuck-pending.jsonl (its generator's docstring)
STUCK_RUN = "prefect.flow-run.5e0000aa-0000-7000-8000-000000000000"



def recording_facts(path: Path) -> dict:
    """Read from the file itself: distinct event ids and the newest `occurred` (Unix seconds)."""
    ids, newest = set(), 0.0
    with open(path, encoding="utf-8") as f:
        for line in f:
            frame = json.loads(line) if line.strip() else {}
            if frame.get("type") == "event":
                ids.add(frame["event"]["id"])
                occurred = dt.datetime.fromisoformat(frame["event"]["occurred"].replace("Z", "+00:00"))
                newest = max(newest, occurred.timestamp())
    return {"distinct_ids": len(ids), "newest_occurred": newest}


FACTS = recording_facts(MAIN)

JOB = "prefect-events-exporter"  # the scrape job of the README
CONTROL_JOB = "prefect-events-exporter-text"  # the same exporter through TextFormatProxy

STATE_TYPES = ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED", "PAUSED", "CANCELLING"]

# What Prometheus must have scraped from `run --replay` of the main recording: one line per
# metric (`$job` is the scrape job). Values come from the recording's REST truth or from what
# replay mode is (no live stream, no reconciliation).
REPLAY_EXPECTATIONS = [
    Expect('up{job="$job"}', equals(1)),
    Expect('prefect_flow_runs{job="$job",state_type="COMPLETED",state_name="Completed"}', equals(659)),
    Expect('sum(prefect_flow_runs{job="$job"})', equals(TRUTH["flow_runs"]["total"])),
    Expect('sum(prefect_exporter_events_received_total{job="$job"})', equals(TRUTH["events"]["received"])),
    Expect('prefect_exporter_events_duplicate_total{job="$job"}', equals(TRUTH["events"]["duplicates"])),
    Expect('sum(prefect_exporter_events_rejected_total{job="$job"})', equals(TRUTH["events"]["rejected"])),
    Expect('prefect_exporter_stream_connected{job="$job"}', equals(0)),
    Expect('prefect_exporter_reconciliations_total{job="$job"}', equals(0)),
    # The recording spans 13 minutes, far less than --terminal-retention (1h): every run is held.
    Expect('prefect_exporter_tracked_resources{job="$job"}', equals(TRUTH["flow_runs"]["total"])),
    Expect('prefect_exporter_dedup_ids{job="$job"}', equals(FACTS["distinct_ids"])),
    Expect('prefect_exporter_last_event_timestamp_seconds{job="$job"}',
           within(FACTS["newest_occurred"] - 0.001, FACTS["newest_occurred"] + 0.001)),
    # What every exporter ships: the `prometheus` crate's process collector, the build info
    # (labels set by build.rs), and the exporter's own scrape duration.
    Expect('process_cpu_seconds_total{job="$job"}', at_least(0)),
    Expect('process_resident_memory_bytes{job="$job"}', within(1e6, 4e9)),
    Expect('process_virtual_memory_bytes{job="$job"}', at_least(1e6)),
    Expect('process_open_fds{job="$job"}', at_least(3)),
    Expect('process_max_fds{job="$job"}', at_least(64)),
    Expect('process_start_time_seconds{job="$job"}', since_exporter_start()),
    Expect('prefect_exporter_build_info{job="$job",version=~".+",revision=~".+",rustc_version=~"[0-9]+[.][0-9]+[.][0-9]+.*"}',
           equals(1)),
    Expect('prefect_exporter_scrape_duration_seconds{job="$job"}', within(0, 1)),
]

# Dashboard expressions that must return NO series on the replay of the main recording (all
# others must return at least one), and why:
REPLAY_EMPTY = {
    # Every run of the recording has work_pool="" and Prometheus drops empty labels, so no
    # series has a work_pool label to list (the panels still match them: All is ".*").
    "variable work_pool": "the recording has no work pools",
    # Replay mode has no live stream, so the exporter exports no reconnect series at all.
    "panel 'Stream reconnects' A": "replay mode has no stream to reconnect",
}

# Dashboard values checked against the REST truth (panel, refId) -> {legend labels: value}.
REPLAY_DASHBOARD_VALUES = {
    "panel 'Late runs now' A": {(): TRUTH["flow_runs"]["by_state_name"]["Late"]},
    "panel 'Runs by state' A": {
        (("state_type", t),): TRUTH["flow_runs"]["by_state_type"].get(t, 0) for t in STATE_TYPES
    },
    # Tracked non-terminal runs = the truth's non-terminal runs: Late 3, Scheduled 3, Pending 3.
    "panel 'Active runs by state' A": {
        (("state_name", "Late"), ("state_type", "SCHEDULED")): 3,
        (("state_name", "Pending"), ("state_type", "PENDING")): 3,
        (("state_name", "Scheduled"), ("state_type", "SCHEDULED")): 3,
    },
    "panel 'Connected' A": {(): 0},
}

# Alerts of the test copy that fire on the replay of the main recording, and why; every
# other rule must stay quiet.
REPLAY_FIRING = {
    # The recording ends with 3 runs PENDING since 2026-11-25, days older than 3 s.
    "PrefectFlowRunStuckPending",
    # It ends with 3 Late runs.
    "PrefectFlowRunsLate",
    # Replay mode is never connected to a stream (prefect_exporter_stream_connected 0).
    "PrefectExporterDisconnected",
}


@pytest.fixture
def started(request, e2e_root):
    """Start things and stop them all (in reverse order) when the test ends, passed or not:
    started(thing) registers anything with stop() and describe(). Exporters must exit 0 on
    SIGTERM (checked when the test itself passed)."""
    things: list = []

    def add(thing):
        things.append(thing)
        artifacts(request).append(thing)
        return thing

    add.root = e2e_root
    yield add
    bad = []
    for thing in reversed(things):
        alive = getattr(thing, "proc", None) is not None and thing.proc.poll() is None
        rc = thing.stop()
        if isinstance(thing, Exporter) and alive and rc != 0:
            bad.append(f"{thing.name} exited {rc} on SIGTERM")
    rep = getattr(request.node, "rep_call", None)
    if bad and rep is not None and rep.passed:
        pytest.fail("; ".join(bad))


def start_prometheus(started, name: str, jobs: dict[str, list[str]]) -> Prometheus:
    home = started.root / f"prometheus-{name}-{time.monotonic_ns()}"
    home.mkdir()
    rules = rules_test_copy(home / "rules.test-copy.yml")
    prom = started(Prometheus(home, jobs, [rules]))
    prom.start()
    return prom


def address(exporter: Exporter) -> str:
    return f"{HOST}:{exporter.port}"


def series_key(metric: dict) -> tuple:
    return tuple(sorted(metric.items()))


def evaluate_dashboard(prom: Prometheus, job: str) -> dict[str, list[dict]]:
    """Every dashboard expression at now: variables resolved first (job = `job`, which its
    variable query must list; the others "All", their allValue), then every panel target."""
    dashboard = load_dashboard()
    values: dict[str, str] = {}
    results: dict[str, list[dict]] = {}
    for q in dashboard_queries(dashboard):
        expr = substitute(q.expr, values)
        if q.label is not None:
            found = prom.label_values(q.label, expr)
            results[q.where] = [{"metric": {q.label: v}} for v in found]
            name = q.where.split(" ", 1)[1]
            if name == "job":
                assert job in found, f"variable job = {found}, want {job} among them"
                values[name] = job
            else:
                values[name] = all_value(dashboard, name)
        else:
            results[q.where] = prom.query(expr)
    return results


def check_expectations(prom: Prometheus, job: str, expectations: Iterable[Expect], ctx: dict) -> list[str]:
    return [f for f in (e.failure(prom, job, ctx) for e in expectations) if f]


def test_replay_scraped_by_prometheus(started):
    exporter = started(Exporter(None, source_args=["--replay", str(MAIN)], name="exporter-replay"))
    exporter_started_unix = time.time()
    exporter.wait_ready()
    proxy = started(TextFormatProxy(exporter.url("/metrics")))
    prom = start_prometheus(started, "replay", {JOB: [address(exporter)], CONTROL_JOB: [proxy.address]})
    # Three scrapes of each job: rate() and increase() in the dashboard have points.
    t0 = time.monotonic()
    prom.wait_scrapes(JOB, 3)
    prom.wait_scrapes(CONTROL_JOB, 3)
    waited = time.monotonic() - t0

    # The scrape target is the exporter, healthy.
    (target,) = prom.targets(JOB)
    assert target["health"] == "up" and target["lastError"] == "", target
    assert target["scrapeUrl"] == f"http://{address(exporter)}/metrics", target

    # OpenMetrics was negotiated: Prometheus' OpenMetrics parser names a counter family without
    # `_total` (`# TYPE prefect_flow_run_state_entries counter`), its text parser by the sample
    # name (`prefect_flow_run_state_entries_total`). The control job, served text 0.0.4 only by
    # the proxy, must show the other shape, or this check could not tell them apart.
    scraped = prom.target_metadata(JOB)
    control = prom.target_metadata(CONTROL_JOB)
    assert scraped.get("prefect_flow_run_state_entries", {}).get("type") == "counter", sorted(scraped)
    assert "prefect_flow_run_state_entries_total" not in scraped, sorted(scraped)
    assert control.get("prefect_flow_run_state_entries_total", {}).get("type") == "counter", sorted(control)
    assert "prefect_flow_run_state_entries" not in control, sorted(control)
    assert proxy.content_types and all(c.startswith("text/plain; version=0.0.4") for c in proxy.content_types), proxy.content_types
    counters = sorted(m for m, row in scraped.items() if row["type"] == "counter")
    assert counters and not [m for m in counters if m.endswith("_total")], counters

    # One line per metric: the REST truth and replay-mode facts.
    ctx = {"exporter_started_unix": exporter_started_unix}
    failures = check_expectations(prom, JOB, REPLAY_EXPECTATIONS, ctx)
    assert not failures, "\n".join(failures)
    # Totals by state type and by state name equal the server's REST answer (zero elsewhere).
    by_type = {r["metric"]["state_type"]: float(r["value"][1])
               for r in prom.query(f'sum by (state_type) (prefect_flow_runs{{job="{JOB}"}})')}
    assert by_type == {t: TRUTH["flow_runs"]["by_state_type"].get(t, 0) for t in STATE_TYPES}
    by_name = {r["metric"]["state_name"]: float(r["value"][1])
               for r in prom.query(f'sum by (state_name) (prefect_flow_runs{{job="{JOB}"}}) > 0')}
    assert by_name == TRUTH["flow_runs"]["by_state_name"]


    # Every dashboard expression evaluates; empty exactly where REPLAY_EMPTY says.
    results = evaluate_dashboard(prom, JOB)
    assert set(REPLAY_EMPTY) <= set(results), f"REPLAY_EMPTY names unknown expressions: {set(REPLAY_EMPTY) - set(results)}"
    empty = {where for where, series in results.items() if not series}
    assert empty == set(REPLAY_EMPTY), (
        f"empty: {sorted(empty)}, want exactly {sorted(REPLAY_EMPTY)}\n"
        + "\n".join(f"  {w}: {len(s)} series" for w, s in results.items())
    )
    for where, want in REPLAY_DASHBOARD_VALUES.items():
        got = {series_key(r["metric"]): float(r["value"][1]) for r in results[where]}
        assert got == want, f"{where}: {got}, want {want}"
    nan = sorted(w for w, s in results.items() if s and "value" in s[0] and any(r["value"][1] == "NaN" for r in s))
    summary(f"PROMETHEUS-REPLAY: {len(results)} dashboard expressions, empty {sorted(empty)}, NaN (0/0: counters "
            f"constant in replay) {nan}; first 3 scrapes after {waited:.1f} s")

    # Every rule of the test copy is loaded and evaluates without error; exactly the alerts of
    # REPLAY_FIRING are active (pending or firing), and all of them fire, once per scrape job.
    assert sorted(r["name"] for r in prom.rules()) == sorted(rule_alert_names())
    want = sorted((name, job, "firing") for name in REPLAY_FIRING for job in (JOB, CONTROL_JOB))
    deadline = time.monotonic() + 30
    for _ in range(200):
        rules, alerts = prom.rules(), prom.alerts()
        evaluated = not [r for r in rules if r["lastEvaluation"].startswith("0001-")]
        active = sorted((a["labels"]["alertname"], a["labels"]["job"], a["state"]) for a in alerts)
        if (evaluated and active == want) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    assert active == want, active
    stuck = {(a["labels"]["state_type"], a["labels"]["state_name"])
             for a in alerts if a["labels"]["alertname"] == "PrefectFlowRunStuckPending"}
    assert stuck == {("PENDING", "Pending")}, stuck


def rate_diagnosis(prom: Prometheus, source: ServeReplay, exporter: Exporter, received_before: int) -> str:
    """What each side held when the entry rate was not seen: whether serve-replay answers and
    how many flow runs it has released, the exporter's events received (before the wait, and
    now) and its entry counters, and the raw samples, scrape health and durations Prometheus
    kept for the last 15 s."""
    t0 = time.monotonic()
    try:
        status, raw = http("POST", f"{source.api_url}/flow_runs/count", body={}, timeout=5)
        answer = f"HTTP {status} {raw[:100]!r}"
    except OSError as err:
        answer = repr(err)
    lines = [f"serve-replay POST /flow_runs/count: {answer} in {time.monotonic() - t0:.2f} s"]
    try:
        lines.append(f"exporter events received: {received_before} before the wait, "
                     f"{exporter.counts()['events']['received']} now")
        lines += [f"exporter: {line}" for line in exporter.metrics().splitlines()
                  if line.startswith("prefect_flow_run_state_entries")]
    except (OSError, AssertionError, ValueError, KeyError) as err:
        lines.append(f"exporter: {err!r}")
    # Range vectors: Prometheus.query() takes instant vectors only.
    try:
        for expr in (f'prefect_flow_run_state_entries_total{{job="{JOB}"}}[15s]',
                     f'up{{job="{JOB}"}}[15s]', f'scrape_duration_seconds{{job="{JOB}"}}[15s]'):
            for series in prom.api("query", [("query", expr)])["result"]:
                lines.append(f"prometheus {expr} {series['metric']}: {series['values']}")
        for target in prom.targets(JOB):
            lines.append(f"prometheus target: health {target.get('health')}, last scrape {target.get('lastScrape')} "
                         f"({target.get('lastScrapeDuration')} s), error {target.get('lastError')!r}")
    except (OSError, AssertionError) as err:
        lines.append(f"prometheus: {err!r}")
    return "\n".join(lines)


def test_live_stream_rates_and_alerts(started):
    source = started(ServeReplay([STUCK], "--speed", "1"))
    exporter = started(Exporter(source, name="exporter-live"))
    exporter.wait_ready()
    prom = start_prometheus(started, "live", {JOB: [address(exporter)]})
    prom.wait_scrapes(JOB, 2)

    # Entries are counted while events flow: the rate is positive, and the recording (about
    # 40 s) has not been played out yet.
    received_before = exporter.counts()["events"]["received"]
    try:
        rate = prom.wait_value(
            f'sum(rate(prefect_flow_run_state_entries_total{{job="{JOB}"}}[10s]))',
            lambda v: v is not None and v > 0,
            30,
            "a positive entry rate",
        )
    except AssertionError as timed_out:
        # Once (clean-clone run X2, stop 22) the rate stayed 0.0 for the whole 30 s, with no log line from the
        # exporter or serve-replay. Say which side stood still: serve-replay, the exporter's
        # own counts, or what Prometheus stored from its scrapes.
        raise AssertionError(f"{timed_out}\n{rate_diagnosis(prom, source, exporter, received_before)}") from None
    t_rate = time.monotonic() - source.started
    received = exporter.counts()["events"]["received"]

    # The REST cost is scraped: the baseline alone is nine flow-run counts (one per state
    # type), each answered 200 by serve-replay, each timed.
    rest = prom.wait_value(
        f'sum(prefect_exporter_api_requests_total{{job="{JOB}",endpoint="/flow_runs/count",code="200"}})',
        lambda v: v is not None and v >= 9,
        30,
        "the baseline's REST requests",
    )
    timed = prom.value(f'sum(prefect_exporter_api_request_duration_seconds_count{{job="{JOB}",endpoint="/flow_runs/count"}})')
    assert timed is not None and timed >= 9, timed
    assert received < STUCK_EVENTS, f"the recording was over ({received} events) before the rate was seen"

    # The run left PENDING: the alert fires, for the PENDING/Pending series, with the run's
    # age, which can only be as old as the replay.
    alert = prom.wait_alert("PrefectFlowRunStuckPending", "firing", 30)
    t_stuck = time.monotonic() - source.started
    age = float(alert["value"])
    assert (alert["labels"]["state_type"], alert["labels"]["state_name"], alert["labels"]["job"]) == (
        "PENDING", "Pending", JOB), alert
    assert STUCK_PENDING_SECONDS < age <= t_stuck + 1, (alert, t_stuck)
    status, raw = exporter.get(f"/api/v1/resources?kind=flow-run&state_type=PENDING&older_than={STUCK_PENDING_SECONDS:.0f}s")
    assert status == 200, raw
    assert [r["id"] for r in json.loads(raw)["resources"]] == [STUCK_RUN], raw[:1000]

    # Connected until the source goes away; then disconnected, still scraped, and the alert fires.
    assert prom.value(f'prefect_exporter_stream_connected{{job="{JOB}"}}') == 1
    assert not [a for a in prom.alerts() if a["labels"]["alertname"] == "PrefectExporterDisconnected"]
    t_stop = time.monotonic()
    source.stop()
    disconnected = prom.wait_alert("PrefectExporterDisconnected", "firing", 30)
    t_disconnected = time.monotonic() - t_stop
    assert disconnected["labels"]["job"] == JOB, disconnected
    assert prom.value(f'prefect_exporter_stream_connected{{job="{JOB}"}}') == 0
    assert prom.value(f'up{{job="{JOB}"}}') == 1
    summary(f"PROMETHEUS-LIVE: rate {rate:.2f}/s seen {t_rate:.1f} s after serve-replay started; "
            f"flow-run counts over REST {rest:.0f}; "
            f"StuckPending firing at {t_stuck:.1f} s (oldest PENDING age {age:.1f} s); "
            f"Disconnected firing {t_disconnected:.1f} s after serve-replay stopped")
