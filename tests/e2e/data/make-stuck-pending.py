#!/usr/bin/env python3
"""Writes stuck-pending.jsonl beside this script (run once; the output is committed).

A hand-made recording, in the frame format of replay-data/, for test_prometheus.py: one flow
run that goes Scheduled -> Pending and is then left PENDING for good, and, around it, a steady
trickle of runs that pass through Pending -> Running -> Completed (0.3 s in each state, one
new run every 2 s for about 40 s), so events keep flowing while Prometheus scrapes.

`serve-replay` moves every timestamp so the first event happens when it starts, and releases
the events at their recorded pace: the stuck run's PENDING age grows from 0 with the wall
clock, while no other run stays in PENDING longer than 0.3 s.

Known counts after the whole file (written from the lists below, not from the exporter):
21 flow runs, 20 COMPLETED and 1 PENDING; 62 state events.
"""
import datetime as dt
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stuck-pending.jsonl")
T0 = dt.datetime(2026, 11, 25, 2, 0, 0, tzinfo=dt.timezone.utc)

FLOW = "prefect.flow.5e000000-0000-7000-8000-000000000001"
DEPLOYMENT = "prefect.deployment.5e000000-0000-7000-8000-000000000002"
WORK_POOL = "prefect.work-pool.5e000000-0000-7000-8000-000000000003"
RELATED = [
    {"prefect.resource.id": FLOW, "prefect.resource.role": "flow", "prefect.resource.name": "etl"},
    {"prefect.resource.id": DEPLOYMENT, "prefect.resource.role": "deployment", "prefect.resource.name": "etl-hourly"},
    {"prefect.resource.id": WORK_POOL, "prefect.resource.role": "work-pool", "prefect.resource.name": "k8s"},
]

SCHEDULED = ("SCHEDULED", "Scheduled")
PENDING = ("PENDING", "Pending")
RUNNING = ("RUNNING", "Running")
COMPLETED = ("COMPLETED", "Completed")

events = []


def state_event(run, n, seconds, to, frm, follows):
    """One flow-run state event as Prefect 3.9.1 emits it."""
    at = T0 + dt.timedelta(seconds=seconds)
    occurred = at.isoformat().replace("+00:00", "Z")
    eid = f"5e0000ee-{run:04x}-7000-8000-{n:012x}"
    events.append({
        "occurred": occurred,
        "event": f"prefect.flow-run.{to[1]}",
        "resource": {
            "prefect.resource.id": f"prefect.flow-run.5e0000aa-{run:04x}-7000-8000-000000000000",
            "prefect.resource.name": f"run-{run}",
            "prefect.run-count": "1" if to != SCHEDULED and to != PENDING else "0",
            "prefect.state-message": "",
            "prefect.state-name": to[1],
            "prefect.state-timestamp": at.isoformat(),
            "prefect.state-type": to[0],
        },
        "related": RELATED,
        "payload": {
            "intended": {"from": frm[0] if frm else None, "to": to[0]},
            "initial_state": {"type": frm[0], "name": frm[1]} if frm else None,
            "validated_state": {"type": to[0], "name": to[1]},
        },
        "id": eid,
        "follows": follows,
        "received": occurred,
    })
    return eid


# The stuck run (run 0): scheduled, then PENDING at 0.2 s, and nothing after that.
e = state_event(0, 1, 0.0, SCHEDULED, None, None)
state_event(0, 2, 0.2, PENDING, SCHEDULED, e)

# Runs 1..20 start at 1 s, 3 s, ..., 39 s and complete 0.6 s later.
for run in range(1, 21):
    t = 1.0 + 2 * (run - 1)
    e = state_event(run, 1, t, PENDING, None, None)
    e = state_event(run, 2, t + 0.3, RUNNING, PENDING, e)
    state_event(run, 3, t + 0.6, COMPLETED, RUNNING, e)

with open(OUT, "w", encoding="utf-8") as f:
    f.write('{"type":"auth_success"}\n')
    for ev in events:
        f.write(json.dumps({"type": "event", "event": ev}, separators=(",", ":")) + "\n")
