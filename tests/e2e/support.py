"""Helpers for the end-to-end tests (fixtures are in conftest.py).

A real Prefect 3.9.1 server (SQLite, temp PREFECT_HOME, free loopback port), real flows run as
subprocesses (`flows/workloads.py`), and the exporter binary named by `PREFECT_EXPORTER_BIN`.
Ground truth always comes from the server (REST and its stored events), never from the exporter.

Every process started here is started in its own session (process group) and recorded; it is
stopped by its id when its fixture ends, and again (SIGKILL) at session end if still alive,
even when a test fails or is interrupted. Every wait loop is bounded in time and iterations.
Network: 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pytest

E2E_DIR = Path(__file__).resolve().parent
WORKLOADS = E2E_DIR / "flows" / "workloads.py"
PYTHON = sys.executable  # the pinned venv's python (it has prefect, pytest, prometheus-client)
HOST = "127.0.0.1"

FLOW_RUN_PREFIX = "prefect.flow-run."
TASK_RUN_PREFIX = "prefect.task-run."


SUMMARY: list[str] = []


def summary(line: str) -> None:
    """A result line printed now and again in pytest's terminal summary (even without -s)."""
    SUMMARY.append(line)
    print(line, flush=True)


def log(msg: str) -> None:
    """Progress line (visible with -s; also kept in the captured output on failure)."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def artifacts(request) -> list:
    """Things whose logs are attached to the test's report when it fails."""
    node = request.node
    if not hasattr(node, "e2e_artifacts"):
        node.e2e_artifacts = []
    return node.e2e_artifacts


# ------------------------------------------------------------------ processes


class Procs:
    """Every process the harness starts, so none outlives the session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        with self._lock:
            self._procs.append(proc)
        return proc

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            stop_process(p, timeout=5)


PROCS = Procs()


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a process in its own session (so its children can be stopped with it)."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    return PROCS.add(proc)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # The process was started with start_new_session=True, so its pid is its group id. Only
    # that group (which we created) is signalled.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def stop_process(proc: subprocess.Popen, timeout: float = 15, sig: int = signal.SIGTERM) -> Optional[int]:
    """SIGTERM (by default) the process's group, wait up to `timeout`, then SIGKILL it."""
    if proc.poll() is None:
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    return proc.returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def clean_env() -> dict[str, str]:
    """The parent's environment without any PREFECT_* setting (no user profile leaks in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


# ------------------------------------------------------------------ HTTP / REST


class HttpError(Exception):
    def __init__(self, status: int, body: str, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:500]}")
        self.status = status
        self.body = body


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: Optional[dict[str, str]] = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for any status (no exception on 4xx/5xx)."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Accept": "application/json"}
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    # No proxies: loopback only, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Rest:
    """The Prefect server's REST API: the ground truth."""

    def __init__(self, api_url: str, auth_string: Optional[str] = None) -> None:
        self.api_url = api_url
        self.headers: dict[str, str] = {}
        if auth_string:
            token = base64.b64encode(auth_string.encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """JSON call; retries 503 (SQLite "database is locked") and connection errors, bounded."""
        url = self.api_url + path
        deadline = time.monotonic() + timeout
        last = ""
        for attempt in range(200):
            try:
                status, raw = http(method, url, body, self.headers, timeout=30)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                status, raw, last = 0, b"", repr(exc)
            else:
                if 200 <= status < 300:
                    return json.loads(raw) if raw.strip() else None
                last = f"HTTP {status}: {raw[:300]!r}"
                if status not in (502, 503, 504):
                    raise HttpError(status, raw.decode(errors="replace"), url)
            if time.monotonic() > deadline:
                break
            time.sleep(min(0.25 * (attempt + 1), 2.0))
        raise AssertionError(f"{method} {url} kept failing for {timeout} s; last: {last}")

    # -- runs

    def all_runs(self, kind: str) -> list[dict]:
        """Every flow run or task run (kind = "flow_runs" / "task_runs"), all pages."""
        out: list[dict] = []
        seen: set[str] = set()
        for page_no in range(10_000):
            page = self.call("POST", f"/{kind}/filter", {"limit": 200, "offset": page_no * 200})
            for run in page:
                if run["id"] not in seen:  # offsets can shift if runs are created meanwhile
                    seen.add(run["id"])
                    out.append(run)
            if len(page) < 200:
                return out
        raise AssertionError(f"too many pages of {kind}")

    def truth(self, kind: str) -> dict:
        """{"total", "by_state_type", "by_state_name"} (non-zero entries only), from all pages."""
        by_type: collections.Counter = collections.Counter()
        by_name: collections.Counter = collections.Counter()
        runs = self.all_runs(kind)
        for run in runs:
            state = run.get("state") or {}
            by_type[state.get("type") or run.get("state_type")] += 1
            by_name[state.get("name") or run.get("state_name")] += 1
        return {
            "total": len(runs),
            "by_state_type": {k: v for k, v in sorted(by_type.items()) if v},
            "by_state_name": {k: v for k, v in sorted(by_name.items()) if v},
        }

    def count(self, kind: str, state_types: Optional[Iterable[str]] = None, **filters: Any) -> int:
        """`POST /{kind}/count` (a bare integer), optionally by state type."""
        body: dict = dict(filters)
        if state_types is not None:
            body.setdefault(kind, {})["state"] = {"type": {"any_": list(state_types)}}
        return int(self.call("POST", f"/{kind}/count", body))

    def cross_check(self, kind: str, truth: dict) -> None:
        """The paged truth agrees with the server's own count endpoint (per state type)."""
        for state_type, n in truth["by_state_type"].items():
            got = self.count(kind, [state_type])
            assert got == n, f"{kind}: /count says {state_type}={got}, paging says {n}"
        total = self.count(kind)
        assert total == truth["total"], f"{kind}: /count total {total} != paged {truth['total']}"

    # -- stored events

    def event_counts(self, prefixes: list[str], since: Optional[dt.datetime] = None) -> dict[str, int]:
        """Stored events by name: `POST /events/count-by/event`.

        The body is `{"filter": EventFilter, "time_unit", "time_interval"}` (all three are
        embedded body fields of `count_account_events` in prefect/server/api/events.py). The
        filter's `occurred.until` defaults to *now*, `since` to 180 days ago; `time_unit` /
        `time_interval` must give <= 1000 buckets over the window even for countable=event.
        """
        now = dt.datetime.now(dt.timezone.utc)
        since = since or (now - dt.timedelta(days=1))
        body = {
            "filter": {
                "occurred": {
                    "since": since.isoformat(),
                    "until": (now + dt.timedelta(days=1)).isoformat(),
                },
                "event": {"prefix": prefixes},
            },
            "time_unit": "day",
            "time_interval": 1.0,
        }
        rows = self.call("POST", "/events/count-by/event", body)
        return {row["value"]: int(row["count"]) for row in rows}

    def state_event_counts(self, prefix: str) -> dict[str, int]:
        """Stored *state* events under `prefix`, keyed by state name (the part after it).

        A state event is one whose resource has a `prefect.state-type` label; that is what the
        exporter counts. The server filters on the label (`"*"` = any value); the names that
        carry no state (`heartbeat`, `pull-step.*`) therefore drop out.
        """
        now = dt.datetime.now(dt.timezone.utc)
        body = {
            "filter": {
                "occurred": {
                    "since": (now - dt.timedelta(days=1)).isoformat(),
                    "until": (now + dt.timedelta(days=1)).isoformat(),
                },
                "event": {"prefix": [prefix]},
                "resource": {"labels": {"prefect.state-type": "*"}},
            },
            "time_unit": "day",
            "time_interval": 1.0,
        }
        rows = self.call("POST", "/events/count-by/event", body)
        return {row["value"][len(prefix):]: int(row["count"]) for row in rows}


# ------------------------------------------------------------------ Prefect server


class PrefectServer:
    """`prefect server start` in a temp PREFECT_HOME on a free port; restartable in place."""

    def __init__(
        self,
        root: Path,
        name: str,
        auth_string: Optional[str] = None,
        template_db: Optional[Path] = None,
        extra_env: Optional[dict[str, str]] = None,
    ) -> None:
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.port = free_port()
        self.auth_string = auth_string
        self.api_url = f"http://{HOST}:{self.port}/api"
        self.log_path = self.home / "server.log"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.extra_env = dict(extra_env or {})
        if template_db is not None and template_db.exists():
            shutil.copy2(template_db, self.home / "prefect.db")
        self.rest = Rest(self.api_url, auth_string)

    def server_env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            # SQLite: state changes use BEGIN IMMEDIATE and wait this long for the lock
            # (default 10 s) instead of answering 503 under bursts.
            PREFECT_SERVER_DATABASE_TIMEOUT="60",
        )
        if self.auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        env.update(self.extra_env)
        return env

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for flows and runners talking to this server."""
        env = clean_env()
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            # Logs to the API are extra SQLite writes that only slow the server down.
            PREFECT_LOGGING_TO_API_ENABLED="false",
            # Survive a server restart (back-off 2+4+8+16+32+64 s at most).
            PREFECT_CLIENT_MAX_RETRIES="6",
            PYTHONUNBUFFERED="1",
        )
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        env.update(extra)
        return env

    def healthy(self) -> bool:
        try:
            status, _ = http("GET", f"{self.api_url}/health", timeout=2)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False
        return status == 200

    def start(self, timeout: float = 120) -> float:
        """Start and wait for /api/health = 200; returns the seconds it took."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n==== start #{self.starts} port {self.port} ====\n".encode())
            logf.flush()
            self.proc = popen(
                [PYTHON, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(self.port)],
                env=self.server_env(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.home,
            )
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"Prefect server {self.name} exited with {self.proc.returncode} during start"
                    f"\n--- {self.log_path}\n{tail(self.log_path)}"
                )
            if self.healthy():
                took = time.monotonic() - t0
                log(f"server {self.name} up on :{self.port} in {took:.1f} s (start #{self.starts})")
                return took
            time.sleep(0.25)
        raise AssertionError(
            f"Prefect server {self.name} not healthy within {timeout} s\n--- {self.log_path}\n"
            f"{tail(self.log_path)}"
        )

    def stop(self, timeout: float = 30) -> Optional[float]:
        if self.proc is None or self.proc.returncode is not None:
            return None
        t0 = time.monotonic()
        stop_process(self.proc, timeout=timeout)
        took = time.monotonic() - t0
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it: rc -15 is normal.
        log(f"server {self.name} stopped in {took:.1f} s (rc {self.proc.returncode})")
        return took

    def restart(self) -> tuple[float, float]:
        """SIGTERM, then start again on the same port and database."""
        stopped = self.stop() or 0.0
        started = self.start()
        return stopped, started

    def describe(self) -> tuple[str, str]:
        return (f"prefect server {self.name} log (tail)", tail(self.log_path, 60))


# ------------------------------------------------------------------ flows


class Workload:
    """A flows subprocess (`flows/workloads.py ...`) with its output in files."""

    def __init__(self, server: PrefectServer, args: list[str], name: str, env_extra: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.args = args
        d = Path(tempfile.mkdtemp(prefix=f"wl-{name}-", dir=server.home))
        self.out_path = d / "stdout"
        self.err_path = d / "stderr"
        self.started = time.monotonic()
        self.finished: Optional[float] = None
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = popen(
                [PYTHON, str(WORKLOADS), *args],
                env=server.client_env(**(env_extra or {})),
                stdout=out,
                stderr=err,
                cwd=d,
            )

    def poll(self) -> Optional[int]:
        rc = self.proc.poll()
        if rc is not None and self.finished is None:
            self.finished = time.monotonic()
        return rc

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll() is not None:
                return self.proc.returncode
            time.sleep(0.1)
        stop_process(self.proc)
        raise AssertionError(f"workload {self.name} {self.args} still running after {timeout} s\n{self.output()}")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def output(self, lines: int = 40) -> str:
        return f"--- stdout\n{tail(self.out_path, lines)}\n--- stderr\n{tail(self.err_path, lines)}"

    def check(self, timeout: float) -> str:
        rc = self.wait(timeout)
        assert rc == 0, f"workload {self.name} {self.args} exited {rc}\n{self.output()}"
        return self.stdout()

    def stop(self) -> None:
        stop_process(self.proc)
        self.poll()

    def describe(self) -> tuple[str, str]:
        return (f"workload {self.name} {' '.join(self.args)} (rc {self.proc.returncode})", self.output(15))



# ------------------------------------------------------------------ exporter


def exporter_bin() -> str:
    path = os.environ.get("PREFECT_EXPORTER_BIN")
    if not path:
        pytest.fail(
            "PREFECT_EXPORTER_BIN is not set: point it at the built exporter binary, e.g. "
            "PREFECT_EXPORTER_BIN=target/release/prefect-events-exporter",
            pytrace=False,
        )
    p = Path(path)
    if not p.is_file() or not os.access(p, os.X_OK):
        pytest.fail(f"PREFECT_EXPORTER_BIN={path!r} is not an executable file", pytrace=False)
    return str(p.resolve())


class Exporter:
    """The exporter's live mode against one server; stderr collected by a thread."""

    def __init__(
        self,
        server: PrefectServer,
        task_runs: bool = False,
        auth_string: Optional[str] = None,
        extra_args: Iterable[str] = (),
        name: str = "exporter",
        source_args: Optional[Iterable[str]] = None,
    ) -> None:
        """`source_args` replaces the live-mode source flags (`--prefect-api-url` of `server`
        with 5 s reconcile and verify intervals), e.g. `["--replay", FILE]`; `server` is then
        not used and may be None."""
        self.name = name
        self.server = server
        self.lines: list[tuple[float, str]] = []  # (monotonic time, stderr line)
        self.stdout_lines: list[str] = []
        self._lock = threading.Lock()
        self.port: Optional[int] = None
        self.started = time.monotonic()
        if source_args is None:
            source_args = [
                "--prefect-api-url", server.api_url,
                "--reconcile-interval", "5s",
                "--verify-interval", "5s",
            ]
        args = [
            exporter_bin(), "run",
            *source_args,
            "--listen", f"{HOST}:0",
            "--log-format", "json",
        ]
        if task_runs:
            args.append("--task-runs")
        if auth_string:
            args += ["--auth-string", auth_string]
        args += list(extra_args)
        self.args = args
        env = clean_env()
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream, is_stderr: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                if is_stderr:
                    self.lines.append((time.monotonic(), line))
                    if self.port is None:
                        self.port = _listen_port(line)
                else:
                    self.stdout_lines.append(line)
        stream.close()

    # -- lifecycle

    def wait_listening(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port is not None:
                return self.port
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader thread drain
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before listening\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no JSON log line with fields.listen within {timeout} s\n{self.log_text()}")

    def wait_ready(self, timeout: float = 60) -> float:
        """Poll /readyz until 200; returns the seconds since the process started."""
        self.wait_listening()
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                status, body = self.readyz()
            except OSError as exc:
                last = repr(exc)
            else:
                if status == 200:
                    return time.monotonic() - self.started
                last = (status, body)
            time.sleep(0.1)
        raise AssertionError(f"{self.name} /readyz not 200 within {timeout} s; last {last}\n{self.log_text()}")

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            time.sleep(0.2)
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}\n{self.log_text()}")

    def stop(self, timeout: float = 15) -> Optional[int]:
        rc = stop_process(self.proc, timeout=timeout)
        for t in self._threads:
            t.join(timeout=2)
        return rc

    # -- HTTP

    def url(self, path: str) -> str:
        assert self.port is not None, "exporter not listening yet"
        return f"http://{HOST}:{self.port}{path}"

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        return http("GET", self.url(path), timeout=timeout)

    def readyz(self) -> tuple[int, Any]:
        status, raw = self.get("/readyz")
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode(errors="replace")
        return status, body

    def counts(self) -> dict:
        status, raw = self.get("/api/v1/counts")
        assert status == 200, f"/api/v1/counts answered {status}: {raw[:300]!r}"
        return json.loads(raw)

    def metrics(self) -> str:
        status, raw = self.get("/metrics", timeout=20)
        assert status == 200, f"/metrics answered {status}"
        return raw.decode()

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` (with these labels) in /metrics, parsed by
        prometheus_client; 0 when absent."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    # -- logs

    def stderr_since(self, t: float) -> list[str]:
        with self._lock:
            return [line for (ts, line) in self.lines if ts >= t]

    def log_text(self, last: int = 300) -> str:
        with self._lock:
            lines = [line for _, line in self.lines]
            out = list(self.stdout_lines)
        head = f"$ {' '.join(self.args)}\n(rc {self.proc.poll()}, {len(lines)} stderr lines)"
        body = "\n".join(lines[-last:])
        if out:
            body += "\n--- stdout\n" + "\n".join(out[-50:])
        return f"{head}\n{body}"

    def describe(self) -> tuple[str, str]:
        return (f"{self.name} stderr", self.log_text())


def _listen_port(line: str) -> Optional[int]:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    fields = obj.get("fields") if isinstance(obj.get("fields"), dict) else {}
    listen = fields.get("listen", obj.get("listen"))
    if isinstance(listen, str) and ":" in listen:
        try:
            return int(listen.rsplit(":", 1)[1])
        except ValueError:
            return None
    return None


# ------------------------------------------------------------------ comparisons


def exporter_view(counts: dict, kinds: Iterable[str], entries: bool = False) -> dict:
    """The part of /api/v1/counts that must equal the server's truth."""
    view: dict = {}
    for kind in kinds:
        section = counts.get(kind)
        if section is None:
            view[kind] = None
            continue
        view[kind] = {
            "total": section.get("total"),
            "by_state_type": {k: v for k, v in sorted((section.get("by_state_type") or {}).items()) if v},
            "by_state_name": {k: v for k, v in sorted((section.get("by_state_name") or {}).items()) if v},
        }
        if entries:
            view[kind]["entries_by_state_name"] = {
                k: v for k, v in sorted((section.get("entries_by_state_name") or {}).items()) if v
            }
    return view


def truth_view(server: PrefectServer, kinds: Iterable[str], entries: bool = False) -> dict:
    view: dict = {}
    for kind in kinds:
        view[kind] = server.rest.truth(kind)
        if entries:
            prefix = FLOW_RUN_PREFIX if kind == "flow_runs" else TASK_RUN_PREFIX
            view[kind]["entries_by_state_name"] = dict(sorted(server.rest.state_event_counts(prefix).items()))
    return view


def diff(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(actual) | set(expected), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{sub}: exporter has nothing, server has {expected[key]!r}")
            elif key not in expected:
                out.append(f"{sub}: exporter has {actual[key]!r}, server has nothing")
            else:
                out += diff(actual[key], expected[key], sub)
        return out
    if actual != expected:
        return [f"{path}: exporter {actual!r} != server {expected!r}"]
    return []


def wait_until_equal(
    get_actual: Callable[[], Any],
    get_expected: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 1.0,
    context: Callable[[], str] = lambda: "",
) -> tuple[Any, float]:
    """Poll until exporter == server. A match counts only if the server's answer is the same
    when read again right after (so a moving target never matches by luck). Returns (value,
    seconds waited). Fails with the last diff at the deadline."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_diff: list[str] = ["(never compared)"]
    for _ in range(max(1, int(timeout / interval) + 5)):
        actual = get_actual()
        expected = get_expected()
        last_diff = diff(actual, expected)
        if not last_diff:
            again = get_expected()
            if again == expected:
                return actual, time.monotonic() - t0
            last_diff = ["server truth changed during the comparison (not quiescent yet)"] + diff(expected, again)
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    extra = context()
    pytest.fail(
        f"{what}: exporter != server after {time.monotonic() - t0:.1f} s:\n  "
        + "\n  ".join(last_diff[:60])
        + (f"\n{extra}" if extra else ""),
        pytrace=False,
    )


def exporter_context(exp) -> Callable[[], str]:
    """A failure-message callback: the exporter's event and stream counters right now."""
    def ctx() -> str:
        try:
            c = exp.counts()
            return f"exporter events={c.get('events')} stream={c.get('stream')}"
        except Exception as exc:  # noqa: BLE001 - context only
            return f"(exporter counts unavailable: {exc!r})"

    return ctx


def require(cond: bool, msg: str) -> None:
    """A check on the *workload* (what Prefect did), not on the exporter."""
    if not cond:
        pytest.fail(f"workload precondition: {msg}", pytrace=False)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll cond() until truthy; bounded. Returns its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    for _ in range(max(1, int(timeout / interval) + 5)):
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def wait_quiescent(server: PrefectServer, kinds: Iterable[str], settle: float = 6.0, timeout: float = 120) -> dict:
    """REST truth and stored state-event counts unchanged over `settle` seconds (longer than
    the server's event persister flush interval, 5 s, so no flush can hide in between)."""
    kinds = list(kinds)
    deadline = time.monotonic() + timeout
    prev = truth_view(server, kinds, entries=True)
    while time.monotonic() < deadline:
        time.sleep(settle)
        cur = truth_view(server, kinds, entries=True)
        if cur == prev:
            return cur
        prev = cur
    raise AssertionError(f"server {server.name} never quiescent within {timeout} s; last {prev}")


# ------------------------------------------------------------------ Prefect operations


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_flow(server: PrefectServer, name: str) -> str:
    """`POST /flows/` (returns the existing flow when the name exists)."""
    return server.rest.call("POST", "/flows/", {"name": name})["id"]


def create_deployment(server: PrefectServer, flow_id: str, name: str, schedules: Optional[list] = None) -> str:
    """A deployment nobody runs: no work pool, no runner polls it."""
    body: dict = {"name": name, "flow_id": flow_id}
    if schedules is not None:
        body["schedules"] = schedules
    return server.rest.call("POST", "/deployments/", body)["id"]


def deployment_id(server: PrefectServer, flow_name: str, deployment_name: str) -> Optional[str]:
    try:
        return server.rest.call("GET", f"/deployments/name/{flow_name}/{deployment_name}")["id"]
    except HttpError as exc:
        if exc.status == 404:
            return None
        raise


def create_deployment_run(
    server: PrefectServer,
    dep_id: str,
    scheduled_time: Optional[dt.datetime] = None,
    parameters: Optional[dict] = None,
) -> dict:
    """`POST /deployments/{id}/create_flow_run`: a SCHEDULED run (a Scheduled event, unlike
    the scheduler's runs), due at `scheduled_time` (default: now)."""
    body: dict = {}
    if parameters is not None:
        body["parameters"] = parameters
    if scheduled_time is not None:
        body["state"] = {
            "type": "SCHEDULED",
            "name": "Scheduled",
            "state_details": {"scheduled_time": scheduled_time.isoformat()},
        }
    return server.rest.call("POST", f"/deployments/{dep_id}/create_flow_run", body)


def set_flow_run_state(server: PrefectServer, run_id: str, state_type: str, name: str, force: bool = False) -> dict:
    body = {"state": {"type": state_type, "name": name}, "force": force}
    result = server.rest.call("POST", f"/flow_runs/{run_id}/set_state", body)
    assert result["status"] == "ACCEPT", f"set_state {state_type} on {run_id}: {result}"
    return result


def flow_run(server: PrefectServer, run_id: str) -> dict:
    return server.rest.call("GET", f"/flow_runs/{run_id}")


def wait_flow_run(server: PrefectServer, run_id: str, pred: Callable[[dict], bool], timeout: float, what: str) -> tuple[dict, float]:
    """Poll one flow run until pred(run); returns (run, seconds)."""
    t0 = time.monotonic()
    run = wait_for(lambda: (lambda r: r if pred(r) else None)(flow_run(server, run_id)), timeout, f"flow run {run_id} {what}")
    return run, time.monotonic() - t0


def state_of(run: dict) -> tuple[str, str]:
    st = run.get("state") or {}
    return st.get("type"), st.get("name")
