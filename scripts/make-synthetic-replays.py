#!/usr/bin/env python3
"""Writes the synthetic replay files in replay-data/ (run once; the output is committed).

Each file exercises one hazard of real streams: duplicates, out-of-order arrival,
self-transitions, odd state names, and hostile lines. The expected counts beside each file
(`*.expected.json`) are written by hand from the event lists below, never from the exporter.
"""
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "replay-data")


def uuid(prefix, n):
    return f"{prefix:08x}-0000-7000-8000-{n:012x}"


def event(eid, run, t, to, frm=None, kind="flow-run", related=None, follows=None):
    """A state event like Prefect's: to/frm are (type, name)."""
    ts = f"2026-11-25T01:00:{t:02d}.000001Z"
    return {
        "occurred": ts,
        "event": f"prefect.{kind}.{to[1]}",
        "resource": {
            "prefect.resource.id": f"prefect.{kind}.{run}",
            "prefect.resource.name": f"run-{run[-4:]}",
            "prefect.state-message": "",
            "prefect.state-name": to[1],
            "prefect.state-timestamp": ts.replace("Z", "+00:00"),
            "prefect.state-type": to[0],
        },
        "related": related or [],
        "payload": {
            "intended": {"from": frm[0] if frm else None, "to": to[0]},
            "initial_state": {"type": frm[0], "name": frm[1]} if frm else None,
            "validated_state": {"type": to[0], "name": to[1]},
        },
        "id": eid,
        "follows": follows,
        "received": ts,
    }


def frame(e):
    return json.dumps({"type": "event", "event": e}, ensure_ascii=False)


def bare(e):
    return json.dumps(e, ensure_ascii=False)


def write(name, lines, newline="\n"):
    data = newline.join(lines) + newline
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


PENDING = ("PENDING", "Pending")
RUNNING = ("RUNNING", "Running")
COMPLETED = ("COMPLETED", "Completed")
SCHEDULED = ("SCHEDULED", "Scheduled")
LATE = ("SCHEDULED", "Late")

# --- duplicates: one run, every event sent more than once, framed and bare ---------------
A = uuid(0xA, 1)
a1 = event(uuid(0xA1, 1), A, 1, PENDING)
a2 = event(uuid(0xA1, 2), A, 2, RUNNING, PENDING, follows=a1["id"])
a3 = event(uuid(0xA1, 3), A, 3, COMPLETED, RUNNING, follows=a2["id"])
write("synthetic-duplicates.jsonl", [
    '{"type":"auth_success"}',
    frame(a1), bare(a1), frame(a2), frame(a2), frame(a3), frame(a1), bare(a3),
])

# --- out of order: events of two runs arrive shuffled ------------------------------------
B = uuid(0xB, 1)
b1 = event(uuid(0xB1, 1), B, 1, PENDING)
b2 = event(uuid(0xB1, 2), B, 2, RUNNING, PENDING)
b3 = event(uuid(0xB1, 3), B, 3, COMPLETED, RUNNING)
C = uuid(0xC, 1)
c1 = event(uuid(0xC1, 1), C, 1, SCHEDULED)
c2 = event(uuid(0xC1, 2), C, 5, LATE, SCHEDULED)
c3 = event(uuid(0xC1, 3), C, 7, PENDING, LATE)
c4 = event(uuid(0xC1, 4), C, 8, RUNNING, PENDING)
write("synthetic-out-of-order.jsonl", [frame(e) for e in (b3, c2, b1, c4, c1, b2, c3)])

# --- self-transitions: Late -> Late twice with distinct ids; a first event that is one ----
E = uuid(0xE, 1)
e1 = event(uuid(0xE1, 1), E, 1, SCHEDULED)
e2 = event(uuid(0xE1, 2), E, 2, LATE, SCHEDULED)
e3 = event(uuid(0xE1, 3), E, 3, LATE, LATE)
e4 = event(uuid(0xE1, 4), E, 4, LATE, LATE)
F = uuid(0xF, 1)
f1 = event(uuid(0xF1, 1), F, 5, RUNNING, RUNNING)
write("synthetic-self-transitions.jsonl", [frame(e) for e in (e1, e2, e3, e4, f1)])

# --- odd state names and label values ------------------------------------------------------
ODD_PENDING = ("PENDING", 'Waiting "for" \\ the\nqueue \u2603')
G = uuid(0x6, 1)
odd_related = [
    {"prefect.resource.id": "prefect.deployment.1", "prefect.resource.role": "deployment",
     "prefect.resource.name": 'nightly "etl" \\ v2\n\u00fcber'},
    {"prefect.resource.id": "prefect.work-pool.1", "prefect.resource.role": "work-pool",
     "prefect.resource.name": "pool-\u00e9"},
]
g1 = event(uuid(0x61, 1), G, 1, ODD_PENDING, related=odd_related)
g2 = event(uuid(0x61, 2), G, 2, ("RUNNING", "L\u00e4uft"), ODD_PENDING, related=odd_related)
H = uuid(0x7, 1)
h1 = event(uuid(0x71, 1), H, 3, ("CRASHED", "Out of memory \U0001F4A5"))
I = uuid(0x8, 1)
i1 = event(uuid(0x81, 1), I, 4, ("PAUSED", 'Suspended "manual"'))
write("synthetic-odd-names.jsonl", [frame(e) for e in (g1, g2, h1, i1)])

# --- hostile: every rejection reason between valid events, CRLF endings, 100 KB garbage ----
J = uuid(0x9, 1)
j1 = event(uuid(0x91, 1), J, 1, PENDING)
j2 = event(uuid(0x91, 2), J, 2, RUNNING, PENDING)
j3 = event(uuid(0x91, 3), J, 3, COMPLETED, RUNNING)
task = event(uuid(0x92, 1), uuid(0x93, 1), 2, RUNNING, PENDING, kind="task-run")
heartbeat = {
    "occurred": "2026-11-25T01:00:02Z", "event": "prefect.flow-run.heartbeat",
    "resource": {"prefect.resource.id": f"prefect.flow-run.{J}"}, "related": [],
    "payload": {}, "id": uuid(0x94, 1), "follows": None, "received": "2026-11-25T01:00:02Z",
}


def without(e, key):
    return {k: v for k, v in e.items() if k != key}


def with_resource(e, resource):
    return {**e, "resource": resource}


garbage = ("lorem ipsum {[\"" * 7200)[:100_000]
bad_utf8_garbage = b"\xff\xfe" + b"x" * 99_998
valid_j1 = frame(j1)
lines = [
    '{"type":"auth_success"}',
    "",
    "{not json",                                                      # malformed_json
    valid_j1,
    garbage,                                                          # malformed_json
    "[1,2,3]",                                                        # not_an_object
    '"just a string"',                                                # not_an_object
    '{"type":"event","event":"prefect.flow-run.Completed"}',          # not_an_object
    '{"type":"event"}',                                               # missing_event
    bare(without(j1, "id")),                                          # missing_id
    bare({**j1, "id": 12345}),                                        # missing_id
    "{}",                                                             # missing_id
    frame(j2),
    bare(without(j1, "event")),                                       # missing_event
    bare(without(j1, "occurred")),                                    # missing_occurred
    bare({**j1, "occurred": "2026-13-45T99:00:00Z"}),                 # bad_timestamp
    bare(with_resource(j1, {"prefect.resource.name": "x"})),          # missing_resource_id
    bare(with_resource(j1, "prefect.flow-run.x")),                    # missing_resource_id
    bare(with_resource(j1, {**j1["resource"], "prefect.state-type": "DONE"})),  # bad_state_type
    '{"type":"event","event":' + '{"event":' * 1000 + "{}" + "}" * 1000 + "}",  # too_deep
    valid_j1[: len(valid_j1) // 2],                                   # malformed_json
    '{"type":"auth_success"} trailing',                               # malformed_json
    frame(j2),                                                        # duplicate
    frame(task),                                                      # other (task runs off)
    frame(heartbeat),                                                 # other
    frame(j3),
    "",
]
data = "\r\n".join(lines).encode("utf-8") + b"\r\n"
# Two more malformed lines that are not UTF-8: raw bytes, and a bad byte inside a string.
bad_string = frame(j1).replace('"run-', '"\udcffrun-').encode("utf-8", "surrogateescape")
data += bad_utf8_garbage + b"\r\n" + bad_string + b"\r\n"
with open(os.path.join(OUT, "synthetic-hostile.jsonl"), "wb") as f:
    f.write(data)
print("wrote synthetic replay files to", os.path.normpath(OUT), file=sys.stderr)
