"""A real Prometheus server for the end-to-end tests, and what test_prometheus.py needs around it.

- `Prometheus`: Debian's `prometheus` binary (`bash scripts/install-prometheus.sh` puts it on
  PATH; `PROMETHEUS_BIN` overrides) started as a subprocess with a config file and TSDB in a
  temp dir, listening on a free 127.0.0.1 port, scraping and evaluating every second; its
  HTTP API (`/api/v1/query`, `/targets`, `/targets/metadata`, `/rules`, `/alerts`, label values)
  as small methods. Stopped by its id (support.stop_process) when its fixture ends.
- `rules_test_copy`: the repository's alert rules with `for:` shortened (and one threshold
  lowered) so that alerts fire within seconds; every change is listed in `RULE_CHANGES`.
- `ServeReplay`: `prefect-events-exporter serve-replay` on a port it picks itself (read from
  its JSON log line), as the Prefect server of a live `run`.
- `TextFormatProxy`: an in-process HTTP proxy that asks the exporter for the Prometheus text
  format only (`Accept: text/plain;version=0.0.4`): a second scrape job through it is the
  control that shows the OpenMetrics check can tell the two formats apart.
- `Expect` and its checks: one line per metric assertion.

Every wait is a bounded poll of a condition; 127.0.0.1 only. PyYAML (for the rules copy)
is in the pinned test venv as a dependency of prefect.
"""

from __future__ import annotations

import http.server as http_server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pytest
import yaml

from support import HOST, _listen_port, exporter_bin, free_port, http, log, popen, stop_process, tail

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "prefect-events-exporter.rules.yml"
DASHBOARD = ROOT / "dashboards" / "prefect-events-exporter.json"

# Scrape and rule evaluation every second; a scrape must fit in its interval.
INTERVAL = "1s"


def prometheus_bin() -> str:
    path = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "no prometheus binary: run `bash scripts/install-prometheus.sh` (Debian's prometheus "
            "package) or set PROMETHEUS_BIN",
            pytrace=False,
        )
    return path


# ------------------------------------------------------------------ alert rules, test copy

# What the test copy changes, rule by rule (everything else is the repository's file as is):
#   every rule's `for:` (1m, 2m, 5m, 10m, 15m in the repository) -> TEST_FOR (2s), so an alert
#     goes pending -> firing after two 1 s evaluations instead of minutes;
#   PrefectFlowRunStuckPending: threshold `> 600` (10 minutes in PENDING) -> `> 3` seconds, so
#     a run left PENDING by the test's recording is "stuck" 3 s after it entered PENDING; the
#     other runs of that recording spend 0.3 s in PENDING, far below it.
# No other threshold changes: PrefectExporterDisconnected (`== 0`) needs none.
TEST_FOR = "2s"
THRESHOLDS = {
    "PrefectFlowRunStuckPending": ('prefect_flow_run_oldest_state_age_seconds{state_type="PENDING"} > 600',
                                   'prefect_flow_run_oldest_state_age_seconds{state_type="PENDING"} > 3'),
}
STUCK_PENDING_SECONDS = 3.0


def rules_test_copy(dest: Path) -> Path:
    """Writes the test copy of the alert rules to `dest` (YAML) and returns it."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            alerts.append(rule["alert"])
            assert "for" in rule, f"{rule['alert']} has no for:"
            rule["for"] = TEST_FOR
            if rule["alert"] in THRESHOLDS:
                old, new = THRESHOLDS[rule["alert"]]
                assert rule["expr"].strip() == old, (
                    f"{RULES}: {rule['alert']} expr is {rule['expr']!r}, the test copy expects {old!r}: "
                    f"update THRESHOLDS in {__file__}"
                )
                rule["expr"] = new
    missing = set(THRESHOLDS) - set(alerts)
    assert not missing, f"{RULES} lacks {missing}"
    header = (
        f"# Test copy of {RULES.relative_to(ROOT)} written by tests/e2e/prometheus.py:\n"
        f"# every `for:` is {TEST_FOR}; changed expressions: {sorted(THRESHOLDS)}.\n"
    )
    dest.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return dest


def rule_alert_names() -> list[str]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


# ------------------------------------------------------------------ Prometheus


class PrometheusApiError(AssertionError):
    pass


class Prometheus:
    """One Prometheus server in `home`: `jobs` maps a job name to its targets (host:port)."""

    def __init__(self, home: Path, jobs: dict[str, list[str]], rule_files: Iterable[Path] = ()) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.jobs = jobs
        self.rule_files = [str(p) for p in rule_files]
        self.config_path = home / "prometheus.yml"
        self.log_path = home / "prometheus.log"
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        config = {
            "global": {
                "scrape_interval": INTERVAL,
                "scrape_timeout": INTERVAL,
                "evaluation_interval": INTERVAL,
            },
            "rule_files": self.rule_files,
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
            ],
        }
        # JSON is YAML: no quoting questions.
        self.config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")

    def start(self, timeout: float = 60, attempts: int = 3) -> float:
        """Start on a free port and wait for /-/ready; returns the seconds it took. A port taken
        between choosing and binding it is retried on another one (bounded)."""
        t0 = time.monotonic()
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            with open(self.log_path, "ab") as logf:
                logf.write(f"\n==== start attempt {attempt}, port {self.port} ====\n".encode())
                logf.flush()
                self.proc = popen(
                    [
                        prometheus_bin(),
                        f"--config.file={self.config_path}",
                        f"--storage.tsdb.path={self.home / 'data'}",
                        f"--web.listen-address={HOST}:{self.port}",
                        "--log.level=info",
                    ],
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    cwd=self.home,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    status, _ = http("GET", self.url("/-/ready"), timeout=2)
                except OSError:
                    status = 0
                if status == 200:
                    took = time.monotonic() - t0
                    log(f"prometheus ready on :{self.port} in {took:.1f} s")
                    return took
                time.sleep(0.1)
            else:
                raise AssertionError(f"prometheus not ready within {timeout} s\n{tail(self.log_path)}")
            if "address already in use" not in tail(self.log_path, 20):
                raise AssertionError(f"prometheus exited with {self.proc.returncode}\n{tail(self.log_path)}")
        raise AssertionError(f"prometheus found no free port in {attempts} attempts\n{tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)

    def describe(self) -> tuple[str, str]:
        config = self.config_path.read_text() if self.config_path.exists() else ""
        return ("prometheus config and log (tail)", f"{config}\n--- log\n{tail(self.log_path, 60)}")

    # -- HTTP API

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def api(self, path: str, params: Optional[list[tuple[str, str]]] = None) -> Any:
        """GET an /api/v1 endpoint; returns `data`, raises with Prometheus' error otherwise."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        status, raw = http("GET", self.url(f"/api/v1/{path}{query}"), timeout=20)
        try:
            body = json.loads(raw)
        except ValueError:
            raise PrometheusApiError(f"/api/v1/{path}{query}: HTTP {status}, not JSON: {raw[:300]!r}")
        if status != 200 or body.get("status") != "success":
            raise PrometheusApiError(
                f"/api/v1/{path} {params}: HTTP {status} {body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query at now: the list of series ({"metric", "value": [t, "v"]})."""
        data = self.api("query", [("query", expr)])
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", f"{expr}: result type {data['resultType']}"
        return data["result"]

    def value(self, expr: str) -> Optional[float]:
        """The value of a query that returns at most one series (None when empty)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {len(result)} series, want at most one: {result[:5]}"
        return float(result[0]["value"][1]) if result else None

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", [("match[]", match)])

    def targets(self, job: str) -> list[dict]:
        return [t for t in self.api("targets")["activeTargets"] if t["labels"].get("job") == job]

    def target_metadata(self, job: str) -> dict[str, dict]:
        """Metric family name -> metadata, as Prometheus parsed them from `job`'s scrapes."""
        rows = self.api("targets/metadata", [("match_target", f'{{job="{job}"}}')])
        return {row["metric"]: row for row in rows}

    def rules(self) -> list[dict]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def alerts(self) -> list[dict]:
        """Active (pending or firing) alerts."""
        return self.api("alerts")["alerts"]

    # -- waits

    def wait_value(self, expr: str, pred: Callable[[Optional[float]], bool], timeout: float, what: str) -> float:
        """Poll a one-series query until pred(value); returns the value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        for _ in range(int(timeout / 0.25) + 5):
            last = self.value(expr)
            if pred(last):
                return last
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}: {expr} = {last}\n{tail(self.log_path, 20)}")

    def wait_scrapes(self, job: str, scrapes: int, timeout: float = 60) -> float:
        """Wait until every target of `job` was scraped successfully `scrapes` times within the
        last minute (so that rate() and increase() have points); returns the seconds waited."""
        t0 = time.monotonic()
        self.wait_value(
            f'min(sum_over_time(up{{job="{job}"}}[1m]))',
            lambda v: v is not None and v >= scrapes,
            timeout,
            f"{scrapes} successful scrapes of job {job}",
        )
        return time.monotonic() - t0

    def wait_alert(self, name: str, state: str, timeout: float) -> dict:
        """Poll /api/v1/alerts until an alert `name` is in `state`; returns it."""
        deadline = time.monotonic() + timeout
        seen: list = []
        for _ in range(int(timeout / 0.25) + 5):
            seen = [a for a in self.alerts() if a["labels"].get("alertname") == name]
            for alert in seen:
                if alert["state"] == state:
                    return alert
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        raise AssertionError(
            f"alert {name} not {state} within {timeout} s (seen: {seen}); all active: "
            f"{[(a['labels'].get('alertname'), a['state']) for a in self.alerts()]}"
        )


# ------------------------------------------------------------------ serve-replay


class ServeReplay:
    """`serve-replay FILES --listen 127.0.0.1:0 ARGS`; its port is read from its JSON log."""

    def __init__(self, files: Iterable[Path], *args: str, name: str = "serve-replay") -> None:
        self.name = name
        self.args = [exporter_bin(), "serve-replay", *map(str, files), "--listen", f"{HOST}:0",
                     "--log-format", "json", *args]
        self.lines: list[str] = []
        self.port: Optional[int] = None
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.proc = popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise AssertionError(f"{name} did not report its listen address\n{self.log_text()}")
        self.api_url = f"http://{HOST}:{self.port}/api"

    def _read(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                self.lines.append(line)
                if self.port is None:
                    self.port = _listen_port(line)
        self.proc.stderr.close()

    def stop(self) -> Optional[int]:
        rc = stop_process(self.proc, timeout=10)
        self._reader.join(timeout=2)
        return rc

    def log_text(self, last: int = 100) -> str:
        with self._lock:
            lines = list(self.lines[-last:])
        return f"$ {' '.join(self.args)}\n(rc {self.proc.poll()})\n" + "\n".join(lines)

    def describe(self) -> tuple[str, str]:
        return (f"{self.name} stderr", self.log_text())


# ------------------------------------------------------------------ text-format control


class TextFormatProxy:
    """GET /metrics here = the exporter's /metrics asked for text 0.0.4 only (a thread of the
    test process; `stop()` shuts it down)."""

    ACCEPT = "text/plain;version=0.0.4"

    def __init__(self, upstream: str) -> None:
        proxy = self

        class Handler(http_server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    status, body, ctype = proxy._fetch()
                except OSError as exc:
                    status, body, ctype = 502, repr(exc).encode(), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.upstream = upstream
        self.content_types: list[str] = []
        self.server = http_server.ThreadingHTTPServer((HOST, 0), Handler)
        self.address = f"{HOST}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def _fetch(self) -> tuple[int, bytes, str]:
        req = urllib.request.Request(self.upstream, headers={"Accept": self.ACCEPT})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=5) as resp:
                ctype = resp.headers.get("Content-Type", "")
                self.content_types.append(ctype)
                return resp.status, resp.read(), ctype
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), "text/plain"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def describe(self) -> tuple[str, str]:
        return ("text-format proxy", f"{self.address} -> {self.upstream}; content types {self.content_types[-3:]}")


# ------------------------------------------------------------------ one-line expectations


@dataclass(frozen=True)
class Check:
    """A predicate on a sample value, with the text shown when it fails."""

    text: str
    pred: Callable[[float, dict], bool]

    def __call__(self, value: float, ctx: dict) -> bool:
        return self.pred(value, ctx)


def equals(x: float) -> Check:
    return Check(f"== {x}", lambda v, ctx: v == x)


def at_least(x: float) -> Check:
    return Check(f">= {x}", lambda v, ctx: v >= x)


def within(lo: float, hi: float) -> Check:
    return Check(f"in [{lo}, {hi}]", lambda v, ctx: lo <= v <= hi)


def since_exporter_start(slack: float = 5.0) -> Check:
    """A Unix time between the exporter's start (minus `slack`) and now."""
    return Check(
        "a Unix time since the exporter started",
        lambda v, ctx: ctx["exporter_started_unix"] - slack <= v <= time.time() + slack,
    )


@dataclass(frozen=True)
class Expect:
    """One assertion on what Prometheus scraped: `query` (`$job` = the exporter's scrape job)
    must return exactly one series whose value passes `check`."""

    query: str
    check: Check

    def expr(self, job: str) -> str:
        return self.query.replace("$job", job)

    def failure(self, prom: Prometheus, job: str, ctx: dict) -> Optional[str]:
        """None when it holds, else why not."""
        expr = self.expr(job)
        result = prom.query(expr)
        if len(result) != 1:
            return f"{expr}: {len(result)} series, want exactly one: {result[:5]}"
        value = float(result[0]["value"][1])
        if not self.check(value, ctx):
            return f"{expr} = {value}, want {self.check.text}"
        return None


# ------------------------------------------------------------------ the dashboard's PromQL


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of the dashboard: a panel target or a query variable."""

    where: str  # 'panel "Late runs now" A' or 'variable job'
    expr: str  # as written in the dashboard (Grafana variables not substituted)
    label: Optional[str] = None  # for a label_values() variable: the label


# Grafana's interval variables, as a dashboard at a few minutes' range would resolve them.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
LABEL_VALUES = re.compile(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", re.S)


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(panels: list) -> Iterable[dict]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels") or [])


def dashboard_queries(dashboard: dict) -> list[DashboardQuery]:
    """Query variables first (in dashboard order, as Grafana resolves them), then every target."""
    out = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = LABEL_VALUES.fullmatch(q or "")
        assert m, f"variable {v['name']}: only label_values(selector, label) is supported here, got {q!r}"
        out.append(DashboardQuery(f"variable {v['name']}", m.group(1), m.group(2)))
    for p in _panels(dashboard.get("panels", [])):
        for t in p.get("targets") or []:
            out.append(DashboardQuery(f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana variables replaced by `values` (then GRAFANA_INTERVALS); an unknown one fails."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in values:
            return values[name]
        if name in GRAFANA_INTERVALS:
            return GRAFANA_INTERVALS[name]
        raise AssertionError(f"no value for Grafana variable ${name} in {expr!r}")

    return VARIABLE.sub(repl, expr)


def all_value(dashboard: dict, name: str) -> str:
    """The value Grafana sends for the variable's "All" (its allValue; the dashboard's default)."""
    for v in dashboard["templating"]["list"]:
        if v.get("name") == name:
            assert v.get("includeAll") and v.get("allValue"), f"variable {name} has no allValue"
            return v["allValue"]
    raise AssertionError(f"no variable {name}")
