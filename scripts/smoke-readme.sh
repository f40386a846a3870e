#!/usr/bin/env bash
# Runs the README's "run" command exactly as written, checks that /metrics and
# /api/v1/counts answer with the recording's known totals (693 flow runs, Prefect's REST
# truth), then stops it with SIGTERM and requires exit code 0.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=$(grep -m1 '^cargo run --release -- run --replay ' README.md)
[ -n "$cmd" ] || { echo "README has no run command" >&2; exit 1; }
log=$(mktemp)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
echo "running: $cmd" >&2
bash -c "exec $cmd" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  if curl -fsS http://127.0.0.1:9742/readyz >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "the run command exited early" >&2; exit 1; }
  sleep 0.5
done
curl -fsS http://127.0.0.1:9742/metrics | grep -q '^prefect_flow_runs{state_type="COMPLETED",state_name="Completed"} 659$' \
  || { echo "/metrics lacks the expected Completed total" >&2; exit 1; }
total=$(curl -fsS http://127.0.0.1:9742/api/v1/counts | python3 -c 'import json,sys; print(json.load(sys.stdin)["flow_runs"]["total"])')
[ "$total" = 693 ] || { echo "/api/v1/counts total is $total, expected 693" >&2; exit 1; }
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || { cat "$log" >&2; echo "exit code $status after SIGTERM" >&2; exit 1; }
echo "README run command: ok (693 flow runs, clean exit on SIGTERM)" >&2
