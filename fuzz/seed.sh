#!/usr/bin/env bash
# Regenerates the committed seed corpora under fuzz/seeds/ (small on purpose):
#   decode/      one line per distinct event name of each recording in replay-data/, and
#                every line of the synthetic files, up to 4 KiB each
#   query/       hand-written query strings of /api/v1/resources
#   state_file/  a state file written by `run --replay replay-data/synthetic-out-of-order.jsonl`
#                (mode byte 0: the whole file) and its payload (mode byte 1: framed by the target)
# Usage: fuzz/seed.sh [BINARY]   (default: target/release/prefect-events-exporter)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/prefect-events-exporter}
[ -x "$bin" ] || { echo "seed.sh: build the exporter first (cargo build --release)" >&2; exit 2; }
python3 - "$bin" <<'PY'
import hashlib, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request

binary = sys.argv[1]
root = "fuzz/seeds"

def fresh(name):
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path

def put(directory, data):
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)

out = fresh("decode")
for file in sorted(os.listdir("replay-data")):
    if not file.endswith(".jsonl"):
        continue
    seen = set()
    for line in open(os.path.join("replay-data", file), "rb").read().split(b"\n"):
        if len(line) > 4096:
            continue
        if file.startswith("synthetic-"):
            put(out, line)
            continue
        try:
            value = json.loads(line)
            name = (value.get("event") or {}).get("event") if value.get("type") == "event" else value.get("type")
        except (ValueError, AttributeError):
            name = None
        if name not in seen:
            seen.add(name)
            put(out, line)

out = fresh("query")
for query in [
    "", "kind=flow-run", "kind=task-run&state_type=running&limit=5",
    "state_type=SCHEDULED&state_name=Late&older_than=5m", "state_name=Awaiting%20Retry",
    "state_name=a+b", "older_than=1h%2030m", "older_than=0", "limit=10000", "limit=0",
    "limit=-1", "kind=", "=", "&&&", "%zz", "%e2%80%ae", "unknown=1", "kind=flow-run&kind=x",
]:
    put(out, query.encode())

out = fresh("state_file")
with tempfile.TemporaryDirectory() as tmp:
    state = os.path.join(tmp, "seed.state")
    proc = subprocess.Popen(
        [binary, "run", "--replay", "replay-data/synthetic-out-of-order.jsonl",
         "--state-file", state, "--listen", "127.0.0.1:0", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    listen = None
    for line in proc.stderr:
        listen = json.loads(line).get("fields", {}).get("listen")
        if listen:
            break
    deadline = time.monotonic() + 30
    want = 'prefect_exporter_state_file_writes_total{result="ok"} 1'
    while want not in urllib.request.urlopen(f"http://{listen}/metrics").read().decode():
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("seed.sh: the exporter wrote no state file within 30 s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    data = open(state, "rb").read()
put(out, b"\0" + data)
put(out, b"\1" + data[12:-16])
for name in ("decode", "query", "state_file"):
    print(name, len(os.listdir(os.path.join(root, name))), "seeds")
PY
