#!/usr/bin/env python3
"""Side by side on Prefect's production topology: the REST cost of the Redis-source exporter,
the websocket exporter and the official `prometheus-prefect-exporter` (issue 13, "Measure and
publish"), plus our exporters' CPU per million events and event delay.

Run with the pinned test Python (it has prefect 3.9.1, prefect-redis, redis-py, pytest), from a
copy of PrefectHQ/prometheus-prefect-exporter in its own virtualenv (never part of this
repository):

    git clone https://github.com/PrefectHQ/prometheus-prefect-exporter /tmp/ppe
    python3 -m venv /tmp/ppe/.venv && /tmp/ppe/.venv/bin/pip install -r /tmp/ppe/requirements.txt
    cargo build --release
    PREFECT_E2E_PG_BIN=$(bash scripts/install-test-services.sh) \
      "$(bash scripts/python-env.sh)" scripts/bench-api-cost.py --official /tmp/ppe --minutes 8

`--official-python` names another interpreter for it (default OFFICIAL/.venv/bin/python);
`--bin` another exporter binary (default `$PREFECT_EXPORTER_BIN` or target/release). The whole
run takes the window plus about three minutes.

What it does, all on 127.0.0.1 with free ports and bounded waits:
  1. starts the production topology of tests/e2e/topology.py (PostgreSQL, Redis messaging,
     two API replicas, one services process);
  2. puts a counting HTTP reverse proxy (asyncio) in front of replica 1, one listening port per
     client, so every request of each client is counted by method, endpoint (UUIDs folded to
     `{id}`, query dropped) and status, with the response's bytes on the wire (head + body as
     sent, gzip if the server compressed it); a websocket upgrade is passed through and its
     bytes are counted apart from REST;
  3. starts, each through its own proxy port: `run --redis-url … --state-file … --task-runs`,
     `run --task-runs` (websocket) — both with their default reconcile (5 m) and verify (15 s)
     intervals — and the official exporter with its defaults (it queries Prefect on every
     scrape: a custom collector), all scraped every `--scrape-interval` (30 s, the official
     README's recommendation for high-frequency environments);
  4. runs the workload against replica 2 for `--minutes`: the e2e `mixed` flows one after the
     other, and a burst of 8 flows x 150 tasks at 40 % of the window;
  5. reports per client the requests and response bytes in the window, scaled to per hour
     (the start-up calls before the window are reported apart), and its CPU seconds (utime +
     stime from /proc/PID/stat) per hour; for our two exporters also:
     - CPU seconds per million flow- and task-run events that Prefect stored in the window (the
       server's `/events/count-by/event`, an independent count), as measured and net of the
       delay polling below (its cost per poll is measured after the window and taken out);
     - the event delay, measured directly: every run event of the window is read from Redis
       (XRANGE, no consumer group) with its `occurred` and its XADD time, each exporter's
       `/api/v1/counts` is polled every 0.1 s, and the i-th new event in stream order counts
       as visible at the first poll showing i new events applied (what `/api/v1/counts` shows
       `/metrics` shows too: one shared state). p50/p99 of visible − `occurred` (the whole
       delay) and of visible − XADD (the exporter's own share, Prefect's part taken out);
       Prefect's own occurred → XADD is printed too;
     - the same from their own `prefect_exporter_event_delay_seconds` histogram (its change
       over the window, interpolated inside a bucket as `histogram_quantile` does, with the
       bucket bound: coarse, 5-15 s and 15-60 s buckets at these delays);
  6. checks afterwards, once Prefect itself is quiescent, that both exporters equal replica 1's
     REST truth (flow runs: totals and entries; task runs: entries against the stored events,
     since a subflow's wrapper task run has no events and reaches the totals only at the next
     reconciliation), so the figures are of exporters that were right.

Prints a Markdown table, then the JSON (`--json-out FILE` writes it too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "scripts" / "lib"))

from bench_probes import (  # noqa: E402
    Poller,
    StreamWatch,
    cpu_per_poll,
    cpu_seconds,
    delay_buckets,
    loadavg,
    metric_total,
    quantile,
    visible_delays,
)
from burst import start_burst  # noqa: E402
from counting_proxy import CountingProxy, minus, per_client  # noqa: E402
from support import (  # noqa: E402
    HOST,
    PROCS,
    Exporter,
    Workload,
    clean_env,
    diff,
    exporter_view,
    free_port,
    http,
    log,
    popen,
    stop_process,
    tail,
    wait_quiescent,
)
from test_topology import service_batches  # noqa: E402
from topology import EVENTS_STREAM, PrefectCluster  # noqa: E402

CLIENTS = ("redis", "websocket", "official")
BOTH = ["flow_runs", "task_runs"]


# ------------------------------------------------------------------ measurements


def stored_run_events(api, since: dt.datetime, until: dt.datetime) -> dict[str, int]:
    """Flow- and task-run events Prefect stored with `occurred` in [since, until)."""
    body = {
        "filter": {"occurred": {"since": since.isoformat(), "until": until.isoformat()},
                   "event": {"prefix": ["prefect.flow-run.", "prefect.task-run."]}},
        "time_unit": "day",
        "time_interval": 1.0,
    }
    rows = api.rest.call("POST", "/events/count-by/event", body)
    out = {"flow_run": 0, "task_run": 0}
    for row in rows:
        kind = "flow_run" if row["value"].startswith("prefect.flow-run.") else "task_run"
        out[kind] += int(row["count"])
    return out


class Official:
    """The official exporter: `python main.py` in its own copy and virtualenv."""

    def __init__(self, path: Path, python: str, api_url: str, home: Path) -> None:
        self.port = free_port()
        self.log_path = home / "official.log"
        env = clean_env()
        env.update(PREFECT_API_URL=api_url, METRICS_ADDR=HOST, METRICS_PORT=str(self.port),
                   PREFECT_HOME=str(home), LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as out:
            self.proc = popen([python, "main.py"], env=env, cwd=path, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        for _ in range(int(timeout / 0.25) + 5):
            if self.proc.poll() is not None:
                raise SystemExit(f"official exporter exited {self.proc.returncode}\n{tail(self.log_path)}")
            try:
                status, _ = http("GET", f"http://{HOST}:{self.port}/metrics", timeout=60)
                if status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                break
            time.sleep(0.25)
        raise SystemExit(f"official exporter not serving /metrics within {timeout} s\n{tail(self.log_path)}")


class Scraper:
    """GETs each target's /metrics every `interval` seconds on a fixed schedule (one thread per
    target, so a slow official scrape does not delay ours); keeps each scrape's duration."""

    def __init__(self, targets: dict[str, str], interval: float, until: float) -> None:
        self.durations: dict[str, list[float]] = {name: [] for name in targets}
        self.failures: dict[str, int] = {name: 0 for name in targets}
        self.threads = [threading.Thread(target=self._run, args=(n, u, interval, until), daemon=True)
                        for n, u in targets.items()]
        for t in self.threads:
            t.start()

    def _run(self, name: str, url: str, interval: float, until: float) -> None:
        start = time.monotonic()
        for k in range(100_000):
            due = start + k * interval
            if due >= until:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            t0 = time.monotonic()
            try:
                status, _ = http("GET", url, timeout=max(interval, 30))
                ok = status == 200
            except OSError:
                ok = False
            if ok:
                self.durations[name].append(time.monotonic() - t0)
            else:
                self.failures[name] += 1

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout=timeout)


# ------------------------------------------------------------------ the run


def run_workload(api2, tmp: Path, t0: float, window: float, errors: list[str]) -> dict:
    """`mixed` one after another until 45 s before the window ends (in a thread), and a burst
    of 8 x 150 at 40 % of the window; returns what ran."""
    done = {"mixed": 0, "burst": None}

    def workloads(server, *args: str, name: Optional[str] = None) -> Workload:
        return Workload(server, list(args), name or args[0])

    def mixed_loop() -> None:
        for i in range(1000):
            if time.monotonic() > t0 + window - 45:
                return
            try:
                workloads(api2, "mixed", name=f"mixed{i}").check(180)
                done["mixed"] += 1
            except Exception as exc:  # noqa: BLE001 - reported
                errors.append(f"mixed{i}: {exc}"[:2000])
                return

    thread = threading.Thread(target=mixed_loop, daemon=True)
    thread.start()
    time.sleep(max(0.0, t0 + 0.4 * window - time.monotonic()))
    try:
        b = start_burst(workloads, api2, tmp, 8, 150)
        done["burst"] = {"flows": b.flows, "tasks_per_flow": b.tasks, "seconds": round(b.t_last - b.t_go, 1)}
    except BaseException as exc:  # noqa: BLE001 - pytest.fail raises a BaseException
        errors.append(f"burst: {exc}"[:2000])
    thread.join(timeout=max(1.0, t0 + window + 200 - time.monotonic()))
    return done


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def markdown(res: dict) -> str:
    c = res["clients"]
    names = {"redis": "Redis-source exporter", "websocket": "websocket exporter",
             "official": "prometheus-prefect-exporter (30 s scrape)"}
    lines = ["| | " + " | ".join(names[k] for k in CLIENTS) + " |", "|---" * (len(CLIENTS) + 1) + "|"]

    def row(label: str, fn) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(k) for k in CLIENTS) + " |")

    row("REST requests / hour", lambda k: f"{c[k]['per_hour']['requests']:,.0f}")
    row("REST response bytes / hour", lambda k: human_bytes(c[k]['per_hour']['response_bytes']))
    row("REST requests in the window", lambda k: f"{c[k]['window']['requests']:,}")
    row("start-up requests (before the window)", lambda k: f"{c[k]['startup']['requests']:,} "
        f"({human_bytes(c[k]['startup']['response_bytes'])})")
    row("websocket stream bytes / hour", lambda k: human_bytes(c[k]['per_hour']['websocket_bytes_down'])
        if c[k]['per_hour']['websocket_bytes_down'] else "—")
    ours = ("redis", "websocket")
    row("CPU s / hour (utime+stime)", lambda k: f"{c[k]['cpu_seconds_per_hour']:.1f}" + (
        f" (net of polling {c[k]['cpu_seconds_per_hour_net']:.1f})" if k in ours else ""))
    row("CPU s per million run events (net of polling)",
        lambda k: f"{c[k]['cpu_seconds_per_million_events']:,.0f} "
                  f"({c[k]['cpu_seconds_per_million_events_net']:,.0f})" if k in ours else "—")

    def visible(k: str, q: str) -> str:
        if k not in ours:
            return "— (queries Prefect on each scrape: up to 30 s old + query time)"
        d = c[k]["visible_delay"]
        if not d.get("events"):
            return "n/a"
        return f"{d[q + '_ms'] / 1000:,.2f} s (exporter's own share {d['own_' + q + '_ms'] / 1000:,.2f} s)"

    def histogram(k: str, q: str) -> str:
        if k not in ours:
            return "—"
        d = c[k]["delay"][q]
        if d["estimate_s"] is None:
            return "n/a"
        return f"{d['estimate_s']:,.2f} s (bucket ≤ {d['bucket_le_s']} s)"

    row("event → `/api/v1/counts` delay p50 (polled every 0.1 s)", lambda k: visible(k, "p50"))
    row("event → `/api/v1/counts` delay p99", lambda k: visible(k, "p99"))
    row("`prefect_exporter_event_delay_seconds` p50 (interpolated)", lambda k: histogram(k, "p50"))
    row("`prefect_exporter_event_delay_seconds` p99", lambda k: histogram(k, "p99"))
    row("/metrics scrape, median", lambda k: f"{statistics.median(c[k]['scrape_seconds']) * 1000:,.0f} ms"
        if c[k]["scrape_seconds"] else "n/a")
    row("events received in the window (duplicates included)",
        lambda k: f"{c[k]['prefect_exporter_events_received_total']:,}" if k != "official" else "—")
    row("verify windows match / repaired / failed; events repaired",
        lambda k: (f"{c[k]['verify_windows']['match']} / {c[k]['verify_windows']['repaired']} / "
                   f"{c[k]['verify_windows']['failed']}; {c[k]['prefect_exporter_events_repaired_total']}")
        if k != "official" else "—")
    row("exact against REST afterwards", lambda k: c[k].get("exact", "—"))
    w = res["workload"]
    lines.append("")
    lines.append(f"Window {res['window_seconds']:.0f} s; workload: {w['mixed_runs']} `mixed` runs and "
                 f"{w['burst']}; Prefect stored {w['stored_events']['flow_run']:,} flow-run and "
                 f"{w['stored_events']['task_run']:,} task-run events in the window "
                 f"({w['stream_entries_added']:,} entries added to the `{EVENTS_STREAM}` stream); "
                 f"load average {res['load']['min']:.1f}–{res['load']['max']:.1f} (2 cores). "
                 f"Prefect's own share of the delay, `occurred` to the `XADD` in Redis, before any "
                 f"exporter can see an event: p50 {res['prefect_occurred_to_redis'].get('p50_ms', 0):,.0f} ms, "
                 f"p99 {res['prefect_occurred_to_redis'].get('p99_ms', 0):,.0f} ms "
                 f"({res['prefect_occurred_to_redis'].get('events', 0):,} run events read from the stream).")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, type=Path, help="a copy of prometheus-prefect-exporter (main.py)")
    ap.add_argument("--official-python", default=None,
                    help="python of a virtualenv with its requirements.txt (default: OFFICIAL/.venv/bin/python)")
    ap.add_argument("--minutes", type=float, default=8.0, help="length of the measured window (1-10)")
    ap.add_argument("--scrape-interval", type=float, default=30.0)
    ap.add_argument("--bin", default=os.environ.get("PREFECT_EXPORTER_BIN",
                                                   str(ROOT / "target" / "release" / "prefect-events-exporter")))
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    args = ap.parse_args()
    if not 1 <= args.minutes <= 10:
        ap.error("--minutes must be between 1 and 10 (the whole run stays under 15 minutes)")
    official_python = args.official_python or str(args.official / ".venv" / "bin" / "python")
    if not (args.official / "main.py").is_file():
        ap.error(f"--official {args.official}: no main.py")
    if not os.access(official_python, os.X_OK):
        ap.error(f"no python at {official_python} (--official-python)")
    os.environ["PREFECT_EXPORTER_BIN"] = str(Path(args.bin).resolve())
    window = args.minutes * 60

    root = Path(tempfile.mkdtemp(prefix="bench-api-cost-"))
    log(f"temp root {root}")
    cluster = PrefectCluster(root, name="apicost", extra_env=service_batches())
    proxy: Optional[CountingProxy] = None
    exporters: dict[str, Exporter] = {}
    official: Optional[Official] = None
    errors: list[str] = []
    started = time.monotonic()
    try:
        cluster.start()
        api1, api2 = cluster.replicas
        proxy = CountingProxy(api1.port)
        ports = {k: proxy.listen(k) for k in CLIENTS}
        url = {k: f"http://{HOST}:{p}/api" for k, p in ports.items()}
        exporters["redis"] = Exporter(None, task_runs=True, name="exporter-redis",
                                      source_args=["--prefect-api-url", url["redis"]],
                                      extra_args=["--redis-url", cluster.redis.url(0),
                                                  "--state-file", str(root / "redis-state.bin")])
        exporters["websocket"] = Exporter(None, task_runs=True, name="exporter-websocket",
                                          source_args=["--prefect-api-url", url["websocket"]])
        for exp in exporters.values():
            log(f"{exp.name} ready after {exp.wait_ready(90):.1f} s")
        official = Official(args.official, official_python, url["official"], root)
        log(f"official exporter serving after {official.wait_ready():.1f} s")
        counts = exporters["websocket"].counts()
        assert counts["stream"]["source"] == "websocket", counts["stream"]
        assert exporters["redis"].counts()["stream"]["source"] == "redis"

        # ---- the window
        tally0 = proxy.tally.snapshot()
        metrics0 = {k: e.metrics() for k, e in exporters.items()}
        pids = {k: e.proc.pid for k, e in exporters.items()} | {"official": official.proc.pid}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        xinfo0 = cluster.redis.client().xinfo_stream(EVENTS_STREAM)
        stream = StreamWatch(cluster.redis.client(), xinfo0["last-generated-id"])
        pollers = {k: Poller(e) for k, e in exporters.items()}
        wall0 = dt.datetime.now(dt.timezone.utc)
        t0 = time.monotonic()
        scraper = Scraper({k: e.url("/metrics") for k, e in exporters.items()}
                          | {"official": f"http://{HOST}:{official.port}/metrics"},
                          args.scrape_interval, t0 + window)
        loads: list[float] = [loadavg()]
        stop_load = threading.Event()

        def sample_load() -> None:
            while not stop_load.wait(15):
                loads.append(loadavg())

        threading.Thread(target=sample_load, daemon=True).start()
        log(f"window of {window:.0f} s starts")
        done = run_workload(api2, root, t0, window, errors)
        time.sleep(max(0.0, t0 + window - time.monotonic()))
        t1 = time.monotonic()
        tally1 = proxy.tally.snapshot()
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        polls = {k: p.polls for k, p in pollers.items()}
        metrics1 = {k: e.metrics() for k, e in exporters.items()}
        wall1 = dt.datetime.now(dt.timezone.utc)
        xinfo1 = cluster.redis.client().xinfo_stream(EVENTS_STREAM)
        stop_load.set()
        scraper.join(timeout=60)
        elapsed = t1 - t0
        log(f"window ended after {elapsed:.0f} s")

        # Prefect's persister lags a burst: count the window's stored events once it is done.
        t_settle = time.monotonic()
        truth = wait_quiescent(api1, BOTH, settle=6.0, timeout=300)
        log(f"Prefect quiescent {time.monotonic() - t_settle:.0f} s after the window")
        for p in pollers.values():  # late events of the window are visible by now
            p.finish()
        stored = stored_run_events(api1, wall0, wall1)
        n_events = stored["flow_run"] + stored["task_run"]
        res: dict[str, Any] = {
            "window_seconds": round(elapsed, 1),
            "scrape_interval_seconds": args.scrape_interval,
            "workload": {"mixed_runs": done["mixed"],
                         "burst": (f"a burst of {done['burst']['flows']} flows x {done['burst']['tasks_per_flow']} "
                                   f"tasks ({done['burst']['seconds']} s)") if done["burst"] else "no burst",
                         "stored_events": stored,
                         "stream_entries_added": xinfo1["entries-added"] - xinfo0["entries-added"]},
            "load": {"min": min(loads), "max": max(loads), "mean": round(statistics.mean(loads), 2)},
            "settings": {"ours": "run --task-runs, default --reconcile-interval 5m --verify-interval 15s; "
                                 "Redis source with --state-file",
                         "official": "defaults of main.py (OFFSET_MINUTES 3, PAGINATION_LIMIT 200, "
                                     "FAILED_RUNS_OFFSET_MINUTES 10080), queried on each scrape"},
            "clients": {},
            "errors": errors,
        }
        scale = 3600 / elapsed
        for k in CLIENTS:
            start = per_client(tally0, k)
            win = minus(per_client(tally1, k), start)
            entry: dict[str, Any] = {
                "startup": {"requests": start["requests"], "response_bytes": start["response_bytes"]},
                "window": win,
                "per_hour": {f: round(win[f] * scale) for f in ("requests", "response_bytes", "websocket_bytes_down")},
                "cpu_seconds_window": round(cpu1[k] - cpu0[k], 2),
                "cpu_seconds_per_hour": round((cpu1[k] - cpu0[k]) * scale, 1),
                "scrape_seconds": [round(s, 4) for s in scraper.durations[k]],
                "scrape_failures": scraper.failures[k],
            }
            if k in exporters:
                entry["cpu_seconds_per_million_events"] = round((cpu1[k] - cpu0[k]) / n_events * 1e6, 1) if n_events else None
                b0, b1 = delay_buckets(metrics0[k]), delay_buckets(metrics1[k])
                entry["delay"] = {"p50": quantile(0.5, b0, b1), "p99": quantile(0.99, b0, b1)}
                for name in ("prefect_exporter_events_received_total", "prefect_exporter_events_repaired_total",
                             "prefect_exporter_events_duplicate_total", "prefect_exporter_stream_reconnects_total",
                             "prefect_exporter_backfill_gaps_total"):
                    entry[name] = int(metric_total(metrics1[k], name) - metric_total(metrics0[k], name))
                entry["verify_windows"] = {
                    r: int(metric_total(metrics1[k], "prefect_exporter_verify_windows_total", result=r)
                           - metric_total(metrics0[k], "prefect_exporter_verify_windows_total", result=r))
                    for r in ("match", "repaired", "failed")}
            res["clients"][k] = entry

        # ---- were they right? Against replica 1's settled REST truth (`truth`, read straight,
        # not through the proxy).
        prefect_delay = stream.finish()
        for k, exp in exporters.items():
            res["clients"][k]["visible_delay"] = visible_delays(pollers[k].points, stream.run_events)
            per_poll = cpu_per_poll(exp)
            used = res["clients"][k]["cpu_seconds_window"] - polls[k] * per_poll
            res["clients"][k]["polling"] = {"polls_in_window": polls[k], "cpu_seconds_per_poll": round(per_poll, 6)}
            res["clients"][k]["cpu_seconds_per_million_events_net"] = \
                round(used / n_events * 1e6, 1) if n_events else None
            res["clients"][k]["cpu_seconds_per_hour_net"] = round(used * scale, 1)
        res["prefect_occurred_to_redis"] = prefect_delay
        # Flow runs: totals and entries. Task runs: entries only, against the stored events —
        # a subflow's wrapper task run has no events and reaches the totals at the next
        # reconciliation (5 min by default), not through the stream.
        truth = {"flow_runs": truth["flow_runs"],
                 "task_runs": {"entries_by_state_name": truth["task_runs"]["entries_by_state_name"]}}

        def view(exp: Exporter) -> dict:
            v = exporter_view(exp.counts(), BOTH, entries=True)
            return {"flow_runs": v["flow_runs"],
                    "task_runs": {"entries_by_state_name": v["task_runs"]["entries_by_state_name"]}}

        for k, exp in exporters.items():
            got: dict = {}
            for _ in range(30):
                got = view(exp)
                if got == truth:
                    break
                time.sleep(2)
            res["clients"][k]["exact"] = "yes" if got == truth else "no"
            if got != truth:
                res["clients"][k]["diff"] = diff(got, truth)[:20]
        res["total_run_seconds"] = round(time.monotonic() - started, 1)

        print()
        print(markdown(res))
        print()
        print(json.dumps(res, indent=2, sort_keys=True))
        if args.json_out:
            args.json_out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        if proxy.errors:
            log(f"proxy errors: {proxy.errors[:5]}")
        return 0 if not errors and all(res["clients"][k]["exact"] == "yes" for k in exporters) else 1
    finally:
        for exp in exporters.values():
            exp.stop()
            (root / f"{exp.name}.log").write_text(exp.log_text(last=10**6))
        if official is not None:
            stop_process(official.proc)
        if proxy is not None:
            proxy.close()
        cluster.stop()
        PROCS.kill_all()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
