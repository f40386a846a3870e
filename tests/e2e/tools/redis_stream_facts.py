"""Observe Prefect's Redis `events` stream on a real cluster; the source of REDIS-NOTES.md.

Not a test: a one-off probe that prints what Redis holds, for the engineer who writes a Redis
Streams consumer. It starts the topology of topology.py (PostgreSQL, Redis, two API replicas,
one services process) in a temp dir, then:

1. snapshots the keys, `XINFO STREAM events`, `XINFO GROUPS events` and
   `XINFO CONSUMERS events <group>` after start-up;
2. adds three probe consumer groups of its own on `events`: `probe-idle` reads 5 entries,
   acknowledges 3 and is never used again; `probe-slow` reads 1 entry per second (slower than
   the stream) until told to stop; `probe-full` reads everything as it comes;
3. runs flows/workloads.py `mixed` against replica 2, sampling the stream and groups every
   second, then records every entry the workload added (`--recording`, JSONL of
   {"id", "data", "attributes"} exactly as stored) and `XRANGE events - + COUNT 3`;
4. keeps sampling to see Prefect's consumers trim the stream (every 60 s), stops `probe-slow`,
   waits past the idle threshold (`--idle-threshold`, set on the cluster as
   PREFECT_REDIS_MESSAGING_CONSUMER_TRIM_IDLE_THRESHOLD) and the next trims, and reports what
   trimming did to the probes (pending entries, XAUTOCLAIM, XREADGROUP, lag).

    PY=$(bash scripts/python-env.sh)
    PG_BIN=$(bash scripts/install-test-services.sh)
    PREFECT_E2E_PG_BIN=$PG_BIN $PY tests/e2e/tools/redis_stream_facts.py --out /tmp/facts.json \
        --recording tests/e2e/data/prefect-3.9.1-redis-stream-mixed.jsonl

Every process it starts is stopped at the end (support.PROCS), loops are bounded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

E2E = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(E2E))

import support  # noqa: E402
from support import Workload, log  # noqa: E402
from topology import EVENTS_STREAM, running_cluster  # noqa: E402


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, bytes):
        return x.decode(errors="replace")
    return x


def short_entry(entry: Any) -> Any:
    """An XINFO first-entry/last-entry with its data cut (they can be KBs)."""
    if not entry:
        return entry
    eid, fields = entry
    return [eid, {k: (v[:160] + "…" if isinstance(v, str) and len(v) > 160 else v) for k, v in fields.items()}]


def stream_info(r) -> dict:
    info = r.xinfo_stream(EVENTS_STREAM)
    info["first-entry"] = short_entry(info.get("first-entry"))
    info["last-entry"] = short_entry(info.get("last-entry"))
    return info


def groups_info(r) -> list:
    out = []
    for g in r.xinfo_groups(EVENTS_STREAM):
        g = dict(g)
        g["consumers_detail"] = r.xinfo_consumers(EVENTS_STREAM, g["name"])
        out.append(g)
    return out


def raw_command(redis, protocol: int, *args) -> Any:
    """The reply as the wire has it (no redis-py response callback), in RESP2 or RESP3
    (prefect-redis speaks RESP2; redis-py 8 defaults to RESP3)."""
    c = redis.client(decode_responses=True, protocol=protocol)
    conn = c.connection_pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        c.connection_pool.release(conn)
        c.close()


def key_summary(r) -> dict:
    """Key patterns (ids replaced by *) with their type and count, and a sample TTL."""
    out: dict[str, dict] = {}
    for i, key in enumerate(r.scan_iter(count=500)):
        if i >= 20000:
            break
        parts = key.split(":")
        pattern = ":".join("*" if (len(p) >= 16 and any(c.isdigit() for c in p)) else p for p in parts)
        slot = out.setdefault(pattern, {"type": r.type(key), "count": 0, "example": key, "ttl": r.ttl(key)})
        slot["count"] += 1
    return out


class SlowReader(threading.Thread):
    """Consumer group `probe-slow`: one entry per second, acknowledged, until stopped."""

    def __init__(self, redis) -> None:
        super().__init__(daemon=True)
        self.r = redis.client()
        self.stop_flag = threading.Event()
        self.read = 0

    def run(self) -> None:
        for _ in range(3600):
            if self.stop_flag.is_set():
                return
            got = self.r.xreadgroup("probe-slow", "slow-1", {EVENTS_STREAM: ">"}, count=1, block=100)
            for _, entries in got or []:
                for eid, _fields in entries:
                    self.r.xack(EVENTS_STREAM, "probe-slow", eid)
                    self.read += 1
            self.stop_flag.wait(1.0)


class FullReader(threading.Thread):
    """Consumer group `probe-full`: reads everything as it comes (COUNT 100, BLOCK 1000)."""

    def __init__(self, redis) -> None:
        super().__init__(daemon=True)
        self.r = redis.client()
        self.stop_flag = threading.Event()
        self.ids: list[str] = []

    def run(self) -> None:
        for _ in range(100000):
            if self.stop_flag.is_set():
                return
            got = self.r.xreadgroup("probe-full", "full-1", {EVENTS_STREAM: ">"}, count=100, block=1000)
            for _, entries in got or []:
                ids = [eid for eid, _ in entries]
                self.ids += ids
                self.r.xack(EVENTS_STREAM, "probe-full", *ids)


def sample(r, t0: float, label: str) -> dict:
    s = r.xinfo_stream(EVENTS_STREAM)
    return {
        "t": round(time.monotonic() - t0, 1),
        "phase": label,
        "length": s["length"],
        "first": (s.get("first-entry") or [None])[0],
        "last_generated": s["last-generated-id"],
        "entries_added": s["entries-added"],
        "max_deleted": s["max-deleted-entry-id"],
        "recorded_first": s["recorded-first-entry-id"],
        "groups": {g["name"]: [g["last-delivered-id"], g["entries-read"], g["lag"], g["pending"]]
                   for g in r.xinfo_groups(EVENTS_STREAM)},
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--recording", help="JSONL of the entries the mixed workload added")
    ap.add_argument("--idle-threshold", type=int, default=30,
                    help="PREFECT_REDIS_MESSAGING_CONSUMER_TRIM_IDLE_THRESHOLD for the cluster (s)")
    ap.add_argument("--watch", type=int, default=140, help="seconds to watch trimming after the workload")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="redis-facts-"))
    report: dict[str, Any] = {"idle_threshold_s": args.idle_threshold}
    samples: list[dict] = []
    try:
        with running_cluster(root, name="facts", extra_env={
            "PREFECT_REDIS_MESSAGING_CONSUMER_TRIM_IDLE_THRESHOLD": str(args.idle_threshold),
        }) as cluster:
            report["cluster_timings"] = cluster.timings
            r = cluster.redis.client()
            t0 = time.monotonic()
            report["after_start"] = {
                "keys_db0": key_summary(r),
                "keys_db1": key_summary(cluster.redis.client(db=1)),
                "xinfo_stream": stream_info(r),
                "xinfo_groups": groups_info(r),
                "raw_resp2_xinfo_groups": jsonable(raw_command(cluster.redis, 2, "XINFO", "GROUPS", EVENTS_STREAM)),
                "raw_resp3_xinfo_groups": jsonable(raw_command(cluster.redis, 3, "XINFO", "GROUPS", EVENTS_STREAM)),
                "raw_resp2_xinfo_consumers": jsonable(raw_command(cluster.redis, 2, "XINFO", "CONSUMERS", EVENTS_STREAM, "event-persister")),
                "raw_resp2_xinfo_stream": jsonable(raw_command(cluster.redis, 2, "XINFO", "STREAM", EVENTS_STREAM))[:20],
                "redis_version": r.info("server")["redis_version"],
            }
            start_id = r.xinfo_stream(EVENTS_STREAM)["last-generated-id"]

            # Probe groups, from the current end of the stream.
            for g in ("probe-idle", "probe-slow", "probe-full"):
                r.xgroup_create(EVENTS_STREAM, g, id="$")
            report["raw_resp2_xinfo_groups_new_probes"] = jsonable(
                raw_command(cluster.redis, 2, "XINFO", "GROUPS", EVENTS_STREAM))
            slow, full = SlowReader(cluster.redis), FullReader(cluster.redis)
            slow.start()
            full.start()

            api2 = cluster.replicas[1]
            wl = Workload(api2, ["mixed"], "mixed")
            idle_ids: list[str] = []
            for _ in range(600):
                samples.append(sample(r, t0, "workload"))
                if len(idle_ids) < 5:
                    got = r.xreadgroup("probe-idle", "idle-1", {EVENTS_STREAM: ">"}, count=5 - len(idle_ids))
                    idle_ids += [eid for _, entries in got or [] for eid, _ in entries]
                    if len(idle_ids) == 5:
                        r.xack(EVENTS_STREAM, "probe-idle", *idle_ids[:3])
                        report["probe_idle"] = {"read": idle_ids, "acked": idle_ids[:3]}
                if wl.poll() is not None:
                    break
                time.sleep(1.0)
            assert wl.proc.returncode == 0, wl.output()
            log("workload done")
            time.sleep(6)  # let the client's last batched events (every 5 or 10 s) arrive
            end_id = r.xinfo_stream(EVENTS_STREAM)["last-generated-id"]
            entries = r.xrange(EVENTS_STREAM, min=f"({start_id}", max=end_id)
            report["workload_entries"] = len(entries)
            report["xrange_count_3"] = [[eid, f] for eid, f in r.xrange(EVENTS_STREAM, "-", "+", count=3)]
            report["raw_xrange_count_1"] = jsonable(raw_command(cluster.redis, 2, "XRANGE", EVENTS_STREAM, "-", "+", "COUNT", "1"))
            names: dict[str, int] = {}
            for eid, f in entries:
                ev = json.loads(f["data"])
                names[ev["event"]] = names.get(ev["event"], 0) + 1
            report["workload_event_names"] = dict(sorted(names.items()))
            # Field order, attribute keys, id shapes.
            report["entry_field_sets"] = sorted({",".join(f.keys()) for _, f in entries})
            report["attribute_key_sets"] = sorted({",".join(json.loads(f["attributes"]).keys()) for _, f in entries})
            report["data_key_orders"] = sorted({",".join(json.loads(f["data"]).keys()) for _, f in entries})
            report["ids_match_attributes"] = all(
                json.loads(f["attributes"])["id"] == json.loads(f["data"])["id"]
                and json.loads(f["attributes"])["event"] == json.loads(f["data"])["event"]
                for _, f in entries)
            distinct_event_ids = {json.loads(f["data"])["id"] for _, f in entries}
            report["workload_distinct_event_ids"] = len(distinct_event_ids)
            sizes = sorted(len(f["data"].encode()) for _, f in entries)
            report["data_bytes"] = {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]} if sizes else {}
            if args.recording:
                lines = [json.dumps({"id": eid, "data": f["data"], "attributes": f["attributes"]},
                                    ensure_ascii=False) for eid, f in entries]
                text = "\n".join(lines) + "\n"
                report["recording_bytes"] = len(text.encode())
                Path(args.recording).parent.mkdir(parents=True, exist_ok=True)
                Path(args.recording).write_text(text)
                log(f"recorded {len(lines)} entries ({len(text.encode())} bytes) to {args.recording}")
            report["after_workload"] = {"xinfo_stream": stream_info(r), "xinfo_groups": groups_info(r)}

            # Trimming with every group active but probe-idle (idle beyond the threshold soon)
            # and probe-slow holding the slowest position.
            t_watch = time.monotonic()
            for _ in range(args.watch * 2):
                if time.monotonic() - t_watch > args.watch:
                    break
                samples.append(sample(r, t0, "watch-slow-active"))
                time.sleep(1.0)
            report["slow_read_before_stop"] = slow.read
            slow.stop_flag.set()
            slow.join(5)
            t_stop = time.monotonic()
            for _ in range((args.idle_threshold + 130) * 2):
                if time.monotonic() - t_stop > args.idle_threshold + 130:
                    break
                samples.append(sample(r, t0, "watch-slow-stopped"))
                time.sleep(1.0)
            report["after_trims"] = {"xinfo_stream": stream_info(r), "xinfo_groups": groups_info(r)}

            # What trimming left of probe-idle's pending entries and position.
            pend = r.xpending_range(EVENTS_STREAM, "probe-idle", min="-", max="+", count=10)
            # The first XAUTOCLAIM reports trimmed pending entries as deleted and drops them.
            raw_claim = raw_command(cluster.redis, 2, "XAUTOCLAIM", EVENTS_STREAM, "probe-idle", "idle-2", "0", "0-0",
                                    "COUNT", "10")
            claim_again = r.xautoclaim(EVENTS_STREAM, "probe-idle", "idle-3", min_idle_time=0, start_id="0-0", count=10)
            report["probe_idle_after"] = {
                "xpending": jsonable(pend),
                "raw_xautoclaim": jsonable(raw_claim),
                "xautoclaim_again": jsonable(claim_again),
                "xpending_after": jsonable(r.xpending_range(EVENTS_STREAM, "probe-idle", min="-", max="+", count=10)),
                "xreadgroup_new_count_3": jsonable(r.xreadgroup("probe-idle", "idle-1", {EVENTS_STREAM: ">"}, count=3)),
            }
            full.stop_flag.set()
            full.join(5)
            all_full = set(full.ids)
            report["probe_full"] = {"read": len(full.ids), "distinct": len(all_full),
                                    "has_every_workload_entry": all(eid in all_full for eid, _ in entries)}
            report["keys_db0_end"] = key_summary(r)
            report["samples"] = samples
    finally:
        support.PROCS.kill_all()
        Path(args.out).write_text(json.dumps(jsonable(report), indent=1, default=str))
        log(f"report in {args.out}")
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
