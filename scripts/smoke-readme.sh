#!/usr/bin/env bash
# Runs the README's "run" command as written (plus `--listen 127.0.0.1:0 --log-format json`,
# so it takes a free port, read back from its log), checks that /metrics and
# /api/v1/counts answer with the recording's known totals (693 flow runs, Prefect's REST
# truth), then stops it with SIGTERM and requires exit code 0.
#
# No pipe ends in `grep -q` (under pipefail, grep leaving at the first match fails the
# writer with SIGPIPE/curl error 23): responses are captured first, then searched.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=$(grep -m1 '^cargo run --release -- run --replay ' README.md)
[ -n "$cmd" ] || { echo "README has no run command" >&2; exit 1; }
log=$(mktemp)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
cmd="$cmd --listen 127.0.0.1:0 --log-format json"
echo "running: $cmd" >&2
bash -c "exec $cmd" >"$log" 2>&1 &
pid=$!

# Polls (with a deadline: the command builds the release binary first) until the log names
# the listen address and /readyz answers 200.
deadline=$((SECONDS + 900))
addr=
ready=
while [ "$SECONDS" -lt "$deadline" ]; do
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "the run command exited early" >&2; exit 1; }
  if [ -z "$addr" ]; then
    addr=$(grep -m1 -o '"listen":"[^"]*"' "$log" || true)
    addr=${addr#\"listen\":\"}
    addr=${addr%\"}
  fi
  if [ -n "$addr" ] && curl -fsS "http://$addr/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
[ -n "$ready" ] || { cat "$log" >&2; echo "not ready within 900 s" >&2; exit 1; }

metrics=$(curl -fsS "http://$addr/metrics")
grep -qx 'prefect_flow_runs{state_type="COMPLETED",state_name="Completed"} 659' <<<"$metrics" \
  || { echo "/metrics lacks the expected Completed total" >&2; exit 1; }
counts=$(curl -fsS "http://$addr/api/v1/counts")
total=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["flow_runs"]["total"])' <<<"$counts")
[ "$total" = 693 ] || { echo "/api/v1/counts total is $total, expected 693" >&2; exit 1; }
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || { cat "$log" >&2; echo "exit code $status after SIGTERM" >&2; exit 1; }
echo "README run command: ok on $addr (693 flow runs, clean exit on SIGTERM)" >&2
