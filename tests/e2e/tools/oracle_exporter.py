#!/usr/bin/env python3
"""Harness self-test only: a stand-in "exporter" that answers every request from the server.

It takes the live-mode flags the tests pass, logs the JSON `listen` line, and serves
`/readyz`, `/healthz`, `/api/v1/counts` and `/metrics` from a snapshot of the server's own
REST truth and stored state-event counts, refreshed about once a second. It subscribes to
nothing and repairs nothing: it is the answer key. If a test fails with it as
PREFECT_EXPORTER_BIN, the harness (or Prefect's behaviour) is wrong, not the exporter:

    PREFECT_EXPORTER_BIN=tests/e2e/tools/oracle_exporter.py \\
        "$(bash scripts/python-env.sh)" -m pytest tests/e2e/test_live.py

It re-executes itself with the pinned venv's python (target/pyenv) when started by another
one. It polls REST hard, which slows Prefect's own event persister down: burst timings
measured with it are pessimistic.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
try:
    import pytest  # noqa: F401 - support.py needs it; only the pinned venv has it
except ImportError:
    venv = HERE.parents[3] / "target" / "pyenv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(str(venv / "bin" / "python"), [str(venv / "bin" / "python"), str(HERE), *sys.argv[1:]])
    raise

sys.path.insert(0, str(HERE.parents[1]))

import support  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["run"])
    p.add_argument("--prefect-api-url", required=True)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--log-format", default="json")
    p.add_argument("--task-runs", action="store_true")
    p.add_argument("--auth-string")
    p.add_argument("--reconcile-interval")
    p.add_argument("--verify-interval")
    a = p.parse_args()

    rest = support.Rest(a.prefect_api_url, a.auth_string)
    kinds = ["flow_runs"] + (["task_runs"] if a.task_runs else [])
    state: dict = {"ready": False, "reason": "starting", "snap": None, "reconnects": 0, "up": None}

    def logj(level: str, msg: str, **fields: str) -> None:
        fields["message"] = msg
        line = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": level, "fields": fields}
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()

    def refresh() -> None:
        last_reason = None
        while True:
            try:
                status, _ = support.http("POST", a.prefect_api_url + "/flow_runs/count", {}, rest.headers, timeout=5)
                if status == 401:
                    reason = "auth failed: the server answered 401"
                    state.update(ready=False, reason=reason)
                    if reason != last_reason:
                        logj("WARN", reason)
                        last_reason = reason
                    time.sleep(2)
                    continue
                snap = {}
                for kind in kinds:
                    truth = rest.truth(kind)
                    prefix = support.FLOW_RUN_PREFIX if kind == "flow_runs" else support.TASK_RUN_PREFIX
                    truth["entries_by_state_name"] = rest.state_event_counts(prefix)
                    truth["transitions"] = []
                    snap[kind] = truth
                if state["up"] is False:
                    state["reconnects"] += 1
                state.update(up=True, snap=snap, ready=True)
            except Exception as exc:  # noqa: BLE001 - server down / restarting
                if state["up"]:
                    logj("WARN", f"server unreachable: {exc!r}")
                state["up"] = False
            time.sleep(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def send(self, code: int, body, ctype: str = "application/json") -> None:
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                return self.send(200, {"status": "ok"})
            if self.path == "/readyz":
                if state["ready"]:
                    return self.send(200, {"status": "ready"})
                return self.send(503, {"error": "not ready: " + state["reason"]})
            if self.path == "/api/v1/counts":
                doc = dict(state["snap"] or {})
                doc["events"] = {"received": 0, "state_events": 0, "duplicates": 0, "rejected": 0, "self_transitions": 0}
                doc["stream"] = {"connected": bool(state["up"]), "last_event_occurred": None, "reconnects": state["reconnects"]}
                return self.send(200, doc)
            if self.path == "/metrics":
                text = (
                    "# TYPE prefect_exporter_events_repaired counter\n"
                    "prefect_exporter_events_repaired_total 0\n"
                    "# TYPE prefect_exporter_stream_reconnects counter\n"
                    f'prefect_exporter_stream_reconnects_total{{reason="oracle"}} {state["reconnects"]}\n'
                )
                return self.send(200, text, "text/plain; version=0.0.4")
            self.send(404, {"error": "not found"})

    host, port = a.listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=refresh, daemon=True).start()
    logj("INFO", "Serving HTTP.", listen=f"{host}:{server.server_address[1]}")
    server.serve_forever()


if __name__ == "__main__":
    main()
