#!/usr/bin/env bash
# What 50 `/api/v1/stream` clients cost the exporter: `run` fed by `serve-replay --rate R
# --loop` (default 1000 lines/s), the exporter's CPU (utime + stime from /proc) over a
# window with no stream client, then with N `curl -N` clients (half on the counts stream,
# half on every flow-run transition), each window measured three times.
#
#   bash scripts/bench-stream.sh [BIN] [RATE] [CLIENTS] [SECONDS] [mixed|counts|transitions]
# Wall-clock CPU shares are noisy on a shared machine: compare the windows of one run.
set -euo pipefail
bin=${1:-target/release/prefect-events-exporter}
rate=${2:-1000}
clients=${3:-50}
seconds=${4:-20}
mode=${5:-mixed}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

listen_of() { # the address a process logged (JSON logs), waiting up to 30 s
  for _ in $(seq 300); do
    addr=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$1" | head -n 1)
    if [[ -n $addr ]]; then echo "$addr"; return; fi
    sleep 0.1
  done
  echo "no listen address in $1" >&2; exit 1
}
"$bin" serve-replay replay-data/prefect-3.9.1-main.jsonl --rate "$rate" --loop \
  --listen 127.0.0.1:0 --log-format json 2>"$tmp/server.log" & pids+=($!)
server=$(listen_of "$tmp/server.log")
"$bin" run --prefect-api-url "http://$server/api" --listen 127.0.0.1:0 --log-format json \
  2>"$tmp/run.log" & exporter=$!; pids+=($exporter)
api=$(listen_of "$tmp/run.log")
until curl -fsS "http://$api/readyz" >/dev/null 2>&1; do sleep 0.1; done
sleep 5

cpu() { awk '{print $14 + $15}' "/proc/$exporter/stat"; }
events() { curl -fsS "http://$api/metrics" | awk '/^prefect_exporter_events_received_total/ {n += $2} END {print n}'; }
window() { # prints "CPU % of a core, events/s" over $seconds
  local hz c0 e0 c1 e1
  hz=$(getconf CLK_TCK)
  c0=$(cpu); e0=$(events); sleep "$seconds"; c1=$(cpu); e1=$(events)
  awk -v c="$((c1 - c0))" -v hz="$hz" -v s="$seconds" -v e="$((e1 - e0))" \
    'BEGIN {printf "%.1f %% of a core, %.0f events/s\n", 100 * c / hz / s, e / s}'
}
for i in 1 2 3; do echo "no stream clients:  $(window)"; done
for i in $(seq "$clients"); do
  case $mode in
    counts) path="/api/v1/stream" ;;
    transitions) path="/api/v1/stream?kind=flow-run" ;;
    *) if (( i % 2 )); then path="/api/v1/stream"; else path="/api/v1/stream?kind=flow-run"; fi ;;
  esac
  curl -sN "http://$api$path" >/dev/null & pids+=($!)
done
sleep 2
echo "stream clients: $(curl -fsS "http://$api/metrics" | awk '/^prefect_exporter_http_stream_clients / {print $2}')"
for i in 1 2 3; do echo "$clients stream clients: $(window)"; done
