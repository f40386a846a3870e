#!/usr/bin/env bash
# End-to-end load measurements (see scripts/bench_e2e.py); prints RESULT lines.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin prefect-events-exporter --example frame_baselines >&2
python=$(bash scripts/python-env.sh)
exec "$python" scripts/bench_e2e.py --bin target/release/prefect-events-exporter --baselines target/release/examples/frame_baselines --python "$python" "$@"
