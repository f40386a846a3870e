#!/usr/bin/env bash
# Compares the two well-kept async Redis clients (`redis` with tokio, `fred`) on the
# exporter's hot path: reading Prefect's `events` stream through a consumer group
# (XREADGROUP COUNT 512 + XACK of each batch) over loopback, with entries cycled from the real
# stream recording. Prints one JSON line per run and client (entries/s, CPU µs and heap
# allocations per entry), then each client's crate count, release build CPU time and binary
# size (the first build of each is the clean one: build CPU counts only then). Usage: bash scripts/redis-client-bench.sh [ENTRIES] [RUNS]   (defaults 100000 5)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
entries=${1:-100000}
runs=${2:-5}
bench="$root/scripts/redis-client-bench"
recording="$root/tests/e2e/data/prefect-3.9.1-redis-stream-mixed.jsonl"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
for client in redis fred; do
  target="$root/target/redis-client-bench/$client"
  start=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/build-$client.time" \
    cargo build --quiet --release -j1 --manifest-path "$bench/Cargo.toml" --target-dir "$target" --features "use-$client"
  crates=$(cargo tree --manifest-path "$bench/Cargo.toml" --features "use-$client" -e normal --prefix none | sort -u | wc -l)
  build_cpu=$(awk '{print $1 + $2}' "$work/build-$client.time")
  size=$(stat -c %s "$target/release/redis-client-bench")
  "$target/release/redis-client-bench" "redis://127.0.0.1:$port/0" "$recording" "$entries" "$runs"
  echo "{\"client\":\"$client\",\"crates_in_tree\":$crates,\"release_build_cpu_s\":$build_cpu,\"wall_s\":$(echo "$(date +%s.%N) - $start" | bc),\"binary_bytes\":$size}"
done
