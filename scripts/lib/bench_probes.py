"""Side measurements for scripts/bench-api-cost.py, none of which asks the exporter for more
than a real deployment would (except `Poller`, whose CPU cost `cpu_per_poll` measures so it
can be taken out):

    StreamWatch   reads Prefect's Redis `events` stream as it grows (XRANGE, no consumer
                  group: it changes nothing) and keeps each run event's `occurred` and XADD time
    Poller        polls an exporter's /api/v1/counts every 0.1 s: when its n-th new event
                  became visible
    visible_delays
                  matches the two: each event's delay to visibility, and the exporter's share
    quantile      Prometheus's histogram_quantile over a window's bucket increments
    cpu_seconds   utime + stime of a process from /proc/PID/stat
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Optional

TICKS = os.sysconf("SC_CLK_TCK")
DELAY = "prefect_exporter_event_delay_seconds"
RUN_PREFIXES = ("prefect.flow-run.", "prefect.task-run.")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def samples(text: str) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def metric_total(text: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(text)
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def delay_buckets(text: str) -> dict[float, float]:
    """Cumulative counts of the delay histogram by upper bound (inf included)."""
    return {float(s.labels["le"]): s.value for s in samples(text) if s.name == DELAY + "_bucket"}


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> dict:
    """Prometheus's histogram_quantile over the window's bucket increments: the bucket holding
    the q-th observation, linear inside it (from 0 for the first); the bucket's bound too."""
    bounds = sorted(after)
    cum = [after[b] - before.get(b, 0.0) for b in bounds]
    total = cum[-1] if cum else 0
    if total <= 0:
        return {"estimate_s": None, "bucket_le_s": None, "observations": 0}
    rank = q * total
    for i, b in enumerate(bounds):
        if cum[i] >= rank:
            lo = bounds[i - 1] if i else 0.0
            below = cum[i - 1] if i else 0.0
            if b == float("inf"):
                return {"estimate_s": lo, "bucket_le_s": "+Inf", "observations": int(total)}
            inside = cum[i] - below
            est = lo + (b - lo) * ((rank - below) / inside if inside else 1.0)
            return {"estimate_s": round(est, 4), "bucket_le_s": b, "observations": int(total)}
    return {"estimate_s": None, "bucket_le_s": None, "observations": int(total)}


class StreamWatch:
    """Reads Prefect's `events` stream as it grows (XRANGE after the last id, every 0.5 s, no
    consumer group: it changes nothing in Redis) and keeps, for each flow- or task-run event,
    the milliseconds from its `occurred` to the `XADD` (the entry id's time part): Prefect's
    own share of the delay, before any exporter can see the event."""

    def __init__(self, client, start_id: str, stream: str = "events") -> None:
        self.client = client
        self.stream = stream
        self.last = start_id
        self.delays_ms: list[float] = []
        self.run_events: list[tuple[float, float]] = []  # (occurred ms, XADD ms), stream order, distinct
        self.seen: set[str] = set()
        self.entries = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                for _ in range(1000):
                    batch = self.client.xrange(self.stream, min=f"({self.last}", count=1000)
                    if not batch:
                        break
                    for entry_id, fields in batch:
                        self.last = entry_id
                        self.entries += 1
                        self._note(entry_id, fields.get("data"))
            except Exception as exc:  # noqa: BLE001 - reported
                self.errors.append(repr(exc))

    def _note(self, entry_id: str, data: Optional[str]) -> None:
        if not data:
            return
        event = json.loads(data)
        if not event.get("event", "").startswith(RUN_PREFIXES):
            return
        if event.get("id") in self.seen:
            return
        self.seen.add(event.get("id"))
        occurred_ms = dt.datetime.fromisoformat(event["occurred"].replace("Z", "+00:00")).timestamp() * 1000
        added_ms = int(entry_id.split("-", 1)[0])
        self.delays_ms.append(added_ms - occurred_ms)
        self.run_events.append((occurred_ms, added_ms))

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join(timeout=10)
        d = sorted(self.delays_ms)
        if not d:
            return {"events": 0}
        pick = lambda q: round(d[min(len(d) - 1, int(q * len(d)))], 1)  # noqa: E731
        return {"events": len(d), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(d[-1], 1),
                "entries_read": self.entries, "errors": self.errors[:3]}


class Poller:
    """Polls an exporter's `/api/v1/counts` every 0.1 s and keeps (wall ms at the answer,
    distinct events applied = received - duplicates): when the n-th new event became visible.
    What the exporter counts is also what its `/metrics` shows (one shared state)."""

    def __init__(self, exp, interval: float = 0.1) -> None:
        self.exp = exp
        self.points: list[tuple[float, int]] = []
        self.polls = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self.thread.start()

    def _run(self, interval: float) -> None:
        start = time.monotonic()
        for k in range(1_000_000):
            if self.stop.is_set():
                return
            time.sleep(max(0.0, start + k * interval - time.monotonic()))
            try:
                events = self.exp.counts()["events"]
            except (OSError, AssertionError, ValueError):
                continue
            self.polls += 1
            self.points.append((time.time() * 1000, events.get("received", 0) - events.get("duplicates", 0)))

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def visible_delays(points: list[tuple[float, int]], run_events: list[tuple[float, float]]) -> dict:
    """Matches the i-th distinct run event of the stream (stream order) with the first poll at
    which the exporter had applied i+1 new events: that poll's time minus the event's
    `occurred` (the whole delay) and minus its XADD (the exporter's own share). Exact for an
    exporter applying events in stream order (the Redis source; the websocket of replica 1
    forwards them in the order replica 1 reads the stream); a websocket event dropped and
    repaired later shifts the match."""
    if not points:
        return {"events": 0}
    base = points[0][1]
    whole, own = [], []
    j = 0
    for i, (occurred, added) in enumerate(run_events):
        while j < len(points) and points[j][1] - base < i + 1:
            j += 1
        if j == len(points):
            break
        whole.append(points[j][0] - occurred)
        own.append(points[j][0] - added)

    def pct(values: list[float], q: float) -> float:
        v = sorted(values)
        return round(v[min(len(v) - 1, int(q * len(v)))], 1)

    if not whole:
        return {"events": 0, "not_seen": len(run_events)}
    return {"events": len(whole), "not_seen": len(run_events) - len(whole),
            "p50_ms": pct(whole, 0.5), "p99_ms": pct(whole, 0.99),
            "own_p50_ms": pct(own, 0.5), "own_p99_ms": pct(own, 0.99)}


def cpu_per_poll(exp, n: int = 1000) -> float:
    """CPU seconds one `/api/v1/counts` answer costs the exporter (to take the polling out)."""
    c0 = cpu_seconds(exp.proc.pid)
    for _ in range(n):
        exp.counts()
    return (cpu_seconds(exp.proc.pid) - c0) / n
