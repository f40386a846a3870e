#!/usr/bin/env python3
"""End-to-end load measurements of prefect-events-exporter (see README "Measured").

Run: `bash scripts/bench-e2e.sh` (builds the release binary and the pinned Python env).
Every server binds 127.0.0.1; every loop is bounded in count and time.

Measures, printing one `RESULT name value unit` line each:
  1. websocket ingest: `run` subscribed to `serve-replay --rate max` of a large unique stream
     (the main recording copied with fresh UUIDs): events/s end to end, CPU s per 1M events;
  2. Prefect's own Python `get_events_subscriber` counting states into a dict, same stream;
  3. event delay p50/p99 at a steady 1,000 events/s (the exporter's delay histogram);
  4. `/metrics` scrape time at 10,000 series while ingesting;
  5. peak RSS of `replay` holding 1,000,000 tracked runs and 4,000,000 dedup ids;
  6. `--state-file` with those: file size, write and load time, and the ingestion pause of a
     snapshot once they are all in memory;
  7. decode: 200,000 unique real-shaped frames (the main recording, every UUID rewritten per
     copy) read by `serde_json` into `IgnoredAny` (reading only), by a naive typed serde
     program (`examples/frame_baselines.rs`), by `replay` (the whole pipeline) and by a plain
     Python script doing the same counting; frames/s, best and median of 3 rounds.
`--only ws|scrape|memory|state-file|decode` runs just that stage.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "replay-data" / "prefect-3.9.1-main.jsonl"
UUID = re.compile(rb"[0-9a-f]{8}(?=-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
TICKS = os.sysconf("SC_CLK_TCK")


def result(name, value, unit):
    print(f"RESULT {name} {value} {unit}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_http(url, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            get(url, 1)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def distinct_frames():
    seen, frames = set(), []
    for line in MAIN.read_bytes().splitlines():
        if not line.strip():
            continue
        frame = json.loads(line)
        if frame.get("type") == "event" and frame["event"]["id"] not in seen:
            seen.add(frame["event"]["id"])
            frames.append(line)
    return frames


def make_stream(path, copies):
    """The main recording `copies` times, every UUID's first 8 hex digits XORed per copy."""
    frames = distinct_frames()
    count = 0
    with open(path, "wb") as out:
        for copy in range(copies):
            for frame in frames:
                out.write(UUID.sub(lambda m: b"%08x" % (int(m.group(0), 16) ^ copy), frame) + b"\n")
                count += 1
    return count


class Proc:
    def __init__(self, args, **kw):
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def serve(binary, path, *args):
    port = free_port()
    proc = Proc([binary, "serve-replay", str(path), "--listen", f"127.0.0.1:{port}", *args])
    wait_http(f"http://127.0.0.1:{port}/api/health")
    return proc, f"http://127.0.0.1:{port}/api"


def stored_events(api):
    body = json.dumps({"filter": {"occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
                                  "event": {"prefix": ["prefect.flow-run.", "prefect.task-run."]}},
                       "time_unit": "day", "time_interval": 1.0}).encode()
    req = urllib.request.Request(f"{api}/events/count-by/event", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return sum(c["count"] for c in json.load(r))


def wait_released(api, expected, seconds=300):
    deadline = time.monotonic() + seconds
    while stored_events(api) < expected:
        if time.monotonic() > deadline:
            raise SystemExit("serve-replay did not release the stream in time")
        time.sleep(0.5)


def exporter(binary, api, *args):
    port = free_port()
    proc = Proc([binary, "run", "--prefect-api-url", api, "--listen", f"127.0.0.1:{port}", "--task-runs",
                 "--verify-interval", "0", "--reconcile-interval", "0", *args])
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, f"http://127.0.0.1:{port}"


def received(base):
    return json.loads(get(f"{base}/api/v1/counts"))["events"]["received"]


def bench_ws(binary, stream, expected):
    server, api = serve(binary, stream, "--rate", "max")
    try:
        wait_released(api, expected)
        started = time.monotonic()
        proc, base = exporter(binary, api, "--no-bootstrap")
        try:
            cpu0 = cpu_seconds(proc.p.pid)
            deadline = started + 600
            while received(base) < expected and time.monotonic() < deadline:
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            got = received(base)
            cpu = cpu_seconds(proc.p.pid) - cpu0
        finally:
            proc.stop()
    finally:
        server.stop()
    result("ws_ingest_events_per_s", round(got / elapsed), "events/s")
    result("ws_cpu_seconds_per_million_events", round(cpu / got * 1e6, 2), "s")
    return got / elapsed


SUBSCRIBER = r"""
import asyncio, collections, sys, time
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
async def main(expected):
    counts = collections.Counter()
    n = 0
    start = time.monotonic()
    f = EventFilter(event=EventNameFilter(prefix=["prefect.flow-run.", "prefect.task-run."]))
    async with get_events_subscriber(filter=f) as sub:
        async for event in sub:
            n += 1
            counts[event.resource.get("prefect.state-type", "")] += 1
            if n >= expected:
                break
    print(n / (time.monotonic() - start))
asyncio.run(main(int(sys.argv[1])))
"""


def bench_python(python, binary, stream, expected):
    server, api = serve(binary, stream, "--rate", "max")
    try:
        wait_released(api, expected)
        env = dict(os.environ, PREFECT_API_URL=api, PREFECT_HOME=tempfile.mkdtemp(), PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED="false")
        started = time.monotonic()
        out = subprocess.run([python, "-c", SUBSCRIBER, str(expected)], env=env, capture_output=True, text=True, timeout=900)
        elapsed = time.monotonic() - started
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
    finally:
        server.stop()
    rate = expected / elapsed
    result("python_subscriber_events_per_s", round(rate), "events/s")
    return rate


def quantile(buckets, total, q):
    for bound, cumulative in buckets:
        if cumulative >= q * total:
            return bound
    return float("inf")


def bench_delay(binary, stream, seconds):
    server, api = serve(binary, stream, "--rate", "1000")
    try:
        proc, base = exporter(binary, api)
        try:
            time.sleep(seconds)
            text = get(f"{base}/metrics").decode()
        finally:
            proc.stop()
    finally:
        server.stop()
    buckets = [(float(m.group(1)), int(float(m.group(2)))) for m in
               re.finditer(r'^prefect_exporter_event_delay_seconds_bucket\{le="([0-9.e+]+)"\} (\S+)$', text, re.M)]
    total = int(float(re.search(r"^prefect_exporter_event_delay_seconds_count (\S+)$", text, re.M).group(1)))
    result("delay_p50_at_1000_per_s_upper_bound", quantile(buckets, total, 0.5), "s")
    result("delay_p99_at_1000_per_s_upper_bound", quantile(buckets, total, 0.99), "s")


def make_series_stream(path, deployments):
    with open(path, "w") as out:
        for i in range(deployments):
            rid = f"prefect.flow-run.00000000-0000-4000-8000-{i:012x}"
            event = {"id": f"00000000-0000-7000-9000-{i:012x}", "event": "prefect.flow-run.Pending",
                     "occurred": "2026-11-25T01:00:00.000001Z",
                     "resource": {"prefect.resource.id": rid, "prefect.state-type": "PENDING", "prefect.state-name": "Pending"},
                     "related": [{"prefect.resource.id": f"prefect.deployment.{i}", "prefect.resource.role": "deployment",
                                  "prefect.resource.name": f"deployment-{i}"}],
                     "payload": {"initial_state": None, "validated_state": {"type": "PENDING", "name": "Pending"}}}
            out.write(json.dumps({"type": "event", "event": event}) + "\n")


def bench_scrape(binary, series_file, stream):
    """10,000 deployments give 10,000 entry and 10,000 active series; scrape while a stream is applied."""
    server, api = serve(binary, stream, "--rate", "2000")
    port = free_port()
    proc = Proc([binary, "run", "--replay", str(series_file), "--listen", f"127.0.0.1:{port}", "--group-by", "deployment"])
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz")
    live, live_base = exporter(binary, api, "--group-by", "deployment")
    try:
        times = []
        for _ in range(30):
            start = time.monotonic()
            body = get(f"{base}/metrics")
            times.append(time.monotonic() - start)
            get(f"{live_base}/metrics")
        series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    finally:
        live.stop()
        proc.stop()
        server.stop()
    result("metrics_series", series, "series")
    result("metrics_scrape_median_ms", round(statistics.median(times) * 1000, 2), "ms")
    result("metrics_scrape_max_ms", round(max(times) * 1000, 2), "ms")


GENERATOR = r"""
import sys
runs, per_run = int(sys.argv[1]), int(sys.argv[2])
first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
states = [("PENDING", "Pending", "null"), ("RUNNING", "Running", '{"type":"PENDING","name":"Pending"}'),
          ("COMPLETED", "Completed", '{"type":"RUNNING","name":"Running"}'), ("COMPLETED", "Completed", '{"type":"COMPLETED","name":"Completed"}')]
w = sys.stdout.write
for r in range(first, first + runs):
    sec = (r - first) * 1200 // runs
    ts = "2026-11-25T01:%02d:%02d.%06dZ" % (sec // 60, sec % 60, r % 1000000)
    for k in range(per_run):
        t, n, f = states[k]
        w('{"id":"%08x-0000-7000-8000-%012x","event":"prefect.flow-run.%s","occurred":"%s","resource":{"prefect.resource.id":"prefect.flow-run.%08x-0000-4000-8000-000000000000","prefect.state-type":"%s","prefect.state-name":"%s"},"payload":{"initial_state":%s,"validated_state":{"type":"%s","name":"%s"}}}\n' % (k, r, n, ts, r, t, n, f, t, n))
"""


# The issue-12 memory shape: runs left RUNNING, each Scheduled -> Pending -> Running plus a
# heartbeat, related to one of 100 flows, 1,000 deployments, 10 work pools and 20 tags, over
# 20 minutes of event time. Arguments: runs.
RUNNING_GENERATOR = r"""
import sys
runs = int(sys.argv[1])
uuid = lambda kind, n: "%08x-0000-4%03x-8000-%012x" % (n, kind, n)
def related(r):
    f, d, p, t = r % 100, r % 1000, r % 10, r % 20
    return ('[{"prefect.resource.id":"prefect.flow.%s","prefect.resource.role":"flow","prefect.resource.name":"flow-%d"},'
            '{"prefect.resource.id":"prefect.deployment.%s","prefect.resource.role":"deployment","prefect.resource.name":"deployment-%d"},'
            '{"prefect.resource.id":"prefect.work-pool.%s","prefect.resource.role":"work-pool","prefect.resource.name":"pool-%d"},'
            '{"prefect.resource.id":"prefect.tag.tag-%d","prefect.resource.role":"tag"}]') % (uuid(1, f), f, uuid(2, d), d, uuid(3, p), p, t)
chain = [("SCHEDULED", "Scheduled", "null"), ("PENDING", "Pending", '{"type":"SCHEDULED","name":"Scheduled"}'),
         ("RUNNING", "Running", '{"type":"PENDING","name":"Pending"}')]
w = sys.stdout.write
for r in range(runs):
    sec = r * 1200 // runs
    ts = "2026-11-25T01:%02d:%02d.%06dZ" % (sec // 60, sec % 60, r % 1000000)
    rid = "prefect.flow-run." + uuid(0, r)
    rel = related(r)
    for k, (t, n, f) in enumerate(chain):
        w('{"id":"%08x-0000-7000-8000-%012x","event":"prefect.flow-run.%s","occurred":"%s","resource":{"prefect.resource.id":"%s","prefect.resource.name":"run-%d","prefect.state-type":"%s","prefect.state-name":"%s"},"related":%s,"payload":{"initial_state":%s,"validated_state":{"type":"%s","name":"%s"}}}\n' % (k, r, n, ts, rid, r, t, n, rel, f, t, n))
    w('{"id":"%08x-0000-7000-8000-%012x","event":"prefect.flow-run.heartbeat","occurred":"%s","resource":{"prefect.resource.id":"%s","prefect.resource.name":"run-%d"},"related":%s,"payload":{}}\n' % (3, r, ts, rid, r, rel))
"""


PYTHON_COUNTER = r"""
import json, sys, time
lines = [l for l in open(sys.argv[1], "rb").read().split(b"\n") if l.strip()]
started = time.perf_counter()
seen, runs, frames, duplicates = set(), {}, 0, 0
for line in lines:
    try:
        event = json.loads(line).get("event")
    except ValueError:
        continue
    if not event:
        continue
    frames += 1
    if event["id"] in seen:
        duplicates += 1
        continue
    seen.add(event["id"])
    resource = event["resource"]
    rid = resource.get("prefect.resource.id", "")
    if not rid.startswith(("prefect.flow-run.", "prefect.task-run.")):
        continue
    state = (event.get("payload") or {}).get("validated_state") or {}
    to = (state.get("type") or resource.get("prefect.state-type"), state.get("name") or resource.get("prefect.state-name"))
    if to[0] is None:
        continue
    run = runs.setdefault(rid, {"occurred": "", "state": None, "entries": {}})
    run["entries"][to] = run["entries"].get(to, 0) + 1
    if event["occurred"] >= run["occurred"]:
        run["occurred"], run["state"] = event["occurred"], to
seconds = time.perf_counter() - started
print(f"frames={frames} seconds={seconds:.4f} frames_per_second={frames / seconds:.0f} runs={len(runs)}")
"""


def make_unique_frames(path, count):
    """`count` frames: the main recording's distinct event frames, every UUID's first 8 hex
    digits XORed with the copy number, as many copies as it takes."""
    frames = distinct_frames()
    with open(path, "wb") as out:
        for n in range(count):
            copy, frame = divmod(n, len(frames))
            out.write(UUID.sub(lambda m: b"%08x" % (int(m.group(0), 16) ^ copy), frames[frame]) + b"\n")
    return os.path.getsize(path) / count


def frames_per_second(out):
    return float(re.search(r"frames_per_second=(\d+)", out).group(1))


def bench_decode(binary, baselines, python, count, rounds=3):
    """Frames/s of the references and of `replay` over the same unique frames."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.jsonl"
        size = make_unique_frames(path, count)
        result("decode_frames", count, "frames")
        result("decode_frame_bytes_mean", round(size), "bytes")
        runs = {"ignored_any": [], "naive_serde": [], "replay": [], "python": []}
        for _ in range(rounds):
            for mode, name in (("ignored-any", "ignored_any"), ("naive", "naive_serde")):
                out = subprocess.run([baselines, mode, str(path)], capture_output=True, text=True, check=True).stdout
                runs[name].append(frames_per_second(out))
            out = subprocess.run([binary, "replay", "--task-runs", str(path)], capture_output=True, text=True, check=True)
            seconds = float(re.search(r"in ([0-9.]+) s", out.stderr).group(1))
            runs["replay"].append(count / seconds)
            out = subprocess.run([python, "-c", PYTHON_COUNTER, str(path)], capture_output=True, text=True, check=True).stdout
            runs["python"].append(frames_per_second(out))
        reference = max(runs["ignored_any"])
        for name, values in runs.items():
            result(f"decode_{name}_frames_per_second_best", round(max(values)), "frames/s")
            result(f"decode_{name}_frames_per_second_median", round(statistics.median(values)), "frames/s")
            result(f"decode_{name}_vs_ignored_any_best", round(max(values) / reference, 2), "x")


def peak_rss(binary, runs, per_run, *args, generator=GENERATOR):
    """`replay` of the generated stream with `args`; returns (summary line, counts, peak RSS MB)."""
    gen = subprocess.Popen([sys.executable, "-c", generator, str(runs), str(per_run)], stdout=subprocess.PIPE)
    out = subprocess.run([binary, "replay", "/dev/stdin", *args], stdin=gen.stdout,
                         capture_output=True, text=True, timeout=1800)
    gen.wait()
    summary = out.stderr.strip().splitlines()[-1]
    return summary, json.loads(out.stdout), float(re.search(r"peak RSS (\d+) MB", summary).group(1))


def bench_memory(binary, runs, per_run):
    summary, counts, rss = peak_rss(binary, runs, per_run, "--dedup-capacity", str(runs * per_run))
    result("replay_summary", json.dumps(summary), "")
    result("memory_tracked_runs", counts["flow_runs"]["total"], "runs")
    result("memory_events", counts["events"]["received"], "events")
    result("memory_peak_rss_mb", rss, "MB")
    # Runs left RUNNING with related flow, deployment, work pool and tag (4 events a run).
    summary, counts, rss = peak_rss(binary, runs, 4, "--dedup-capacity", str(runs * 4),
                                    "--group-by", "deployment,work_pool", generator=RUNNING_GENERATOR)
    result("memory_running_replay_summary", json.dumps(summary), "")
    result("memory_running_tracked_runs", counts["flow_runs"]["total"], "runs")
    result("memory_running_peak_rss_mb", rss, "MB")


def bench_memory_split(binary, runs, per_run):
    """The same stream with a 1-id dedup window (runs alone), then with every run retired
    at once (the dedup window alone)."""
    _, _, rss = peak_rss(binary, runs, per_run, "--dedup-capacity", "1")
    result("memory_runs_only_peak_rss_mb", rss, "MB")
    _, _, small = peak_rss(binary, runs // 5, per_run, "--dedup-capacity", "1")
    result("memory_bytes_per_run", round((rss - small) * 1e6 / (runs - runs // 5)), "B (peak RSS slope from runs/5 to runs)")
    _, _, rss = peak_rss(binary, runs, per_run, "--dedup-capacity", str(runs * per_run), "--terminal-retention", "1us")
    result("memory_dedup_only_peak_rss_mb", rss, "MB")
    _, _, small = peak_rss(binary, runs // 5, per_run, "--dedup-capacity", str(runs * per_run), "--terminal-retention", "1us")
    ids = runs * per_run
    result("memory_bytes_per_dedup_id", round((rss - small) * 1e6 / (ids - ids // 5)), "B (peak RSS slope)")


def metric(base, name):
    for line in get(f"{base}/metrics").decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_metric(base, name, at_least, seconds=600):
    deadline = time.monotonic() + seconds
    while (metric(base, name) or 0) < at_least:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not reach {at_least}")
        time.sleep(0.2)


def bench_state_file(binary, runs, per_run, tmp):
    """--state-file with `runs` tracked runs and runs * per_run dedup ids: file size, write
    time, load time, and the ingestion pause of a snapshot once they are all in memory."""
    state = Path(tmp) / "exporter.state"
    capacity = str(runs * per_run + 10_000)
    writes = 'prefect_exporter_state_file_writes_total{result="ok"}'

    def start(stream_args):
        port = free_port()
        gen = subprocess.Popen([sys.executable, "-c", GENERATOR, *map(str, stream_args)], stdout=subprocess.PIPE)
        started = time.monotonic()
        proc = subprocess.Popen([binary, "run", "--replay", "/dev/stdin", "--listen", f"127.0.0.1:{port}",
                                 "--state-file", str(state), "--dedup-capacity", capacity, "--log-format", "json"],
                                stdin=gen.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        gen.stdout.close()
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", seconds=900)
        return proc, base, time.monotonic() - started

    proc, base, _ = start([runs, per_run])
    wait_metric(base, writes, 1)
    proc.terminate()
    t = time.monotonic()
    proc.wait(timeout=600)
    result("state_file_shutdown_write_seconds", round(time.monotonic() - t, 2), "s")
    result("state_file_mb", round(state.stat().st_size / 1e6, 1), "MB")

    # Restart: load the file, then 1,000 new runs arrive; their snapshot's pause is the
    # steady-state cost with every run in memory.
    proc, base, ready = start([1000, per_run, runs])
    wait_metric(base, writes, 1)
    result("state_file_restart_to_ready_seconds", round(ready, 2), "s")
    result("state_file_tracked_runs_after_restart", metric(base, 'prefect_exporter_tracked_resources'), "runs")
    result("state_file_pause_ms", round(metric(base, "prefect_exporter_state_file_pause_seconds") * 1000, 3), "ms")
    result("state_file_write_seconds", round(metric(base, "prefect_exporter_state_file_write_seconds"), 2), "s")
    proc.terminate()
    _, stderr = proc.communicate(timeout=600)
    for line in stderr.splitlines():
        if "State file loaded" in line:
            result("state_file_load_seconds", round(json.loads(line)["fields"]["seconds"], 2), "s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--copies", type=int, default=25)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--baselines", required=True, help="the frame_baselines example binary")
    parser.add_argument("--decode-frames", type=int, default=200_000)
    parser.add_argument("--only", choices=["state-file", "scrape", "ws", "memory", "decode"], help="run one stage")
    args = parser.parse_args()
    if args.only == "decode":
        bench_decode(args.bin, args.baselines, args.python, args.decode_frames)
        return
    if args.only == "state-file":
        with tempfile.TemporaryDirectory() as tmp:
            bench_state_file(args.bin, args.runs, 4, tmp)
        return
    if args.only == "memory":
        bench_memory(args.bin, args.runs, 4)
        bench_memory_split(args.bin, args.runs, 4)
        return
    if args.only == "ws":
        with tempfile.TemporaryDirectory() as tmp:
            stream = Path(tmp) / "stream.jsonl"
            make_stream(stream, args.copies)
            with open(stream, "rb") as f:
                expected = sum(1 for line in f if b'"event":"prefect.flow-run.' in line or b'"event":"prefect.task-run.' in line)
            result("stream_run_events", expected, "events")
            bench_ws(args.bin, stream, expected)
        return
    if args.only == "scrape":
        with tempfile.TemporaryDirectory() as tmp:
            stream, series = Path(tmp) / "stream.jsonl", Path(tmp) / "series.jsonl"
            make_stream(stream, args.copies)
            make_series_stream(series, 10_000)
            bench_scrape(args.bin, series, stream)
        return
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "stream.jsonl"
        total = make_stream(stream, args.copies)
        with open(stream, "rb") as f:
            expected = sum(1 for line in f if b'"event":"prefect.flow-run.' in line or b'"event":"prefect.task-run.' in line
                           or b'"event": "prefect.flow-run.' in line or b'"event": "prefect.task-run.' in line)
        result("stream_events", total, "events")
        result("stream_run_events", expected, "events")
        ours = bench_ws(args.bin, stream, expected)
        theirs = bench_python(args.python, args.bin, stream, expected)
        result("ratio_exporter_to_python_subscriber", round(ours / theirs, 1), "x")
        bench_delay(args.bin, stream, 20)
        series = Path(tmp) / "series.jsonl"
        make_series_stream(series, 10_000)
        bench_scrape(args.bin, series, stream)
        bench_memory(args.bin, args.runs, 4)
        bench_state_file(args.bin, args.runs, 4, tmp)
    bench_decode(args.bin, args.baselines, args.python, args.decode_frames)


if __name__ == "__main__":
    main()
