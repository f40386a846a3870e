#!/usr/bin/env bash
# End-to-end load measurements (see scripts/bench_e2e.py); prints RESULT lines.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release >&2
python=$(bash scripts/python-env.sh)
exec "$python" scripts/bench_e2e.py --bin target/release/prefect-events-exporter --python "$python" "$@"
