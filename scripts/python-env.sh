#!/usr/bin/env bash
# Creates (once) the Python virtualenv the tests use and prints its python's path.
# Pinned: Prefect 3.9.1 (the real server and Prefect's own client for end-to-end tests),
# prefect-redis (Redis messaging for the several-replica topology tests), prometheus-client (a
# real Prometheus/OpenMetrics parser for the exposition tests) and pytest (the end-to-end tests).
# Lives under target/ so `cargo clean` removes it and reruns are quick.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/pyenv"
pins="prefect==3.9.1 prefect-redis==0.3.0 prometheus-client==0.23.1 pytest==8.3.4"
marker="$venv/.installed"
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$pins" ]; then
  rm -rf "$venv"
  mkdir -p "$root/target"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check $pins >&2
  echo "$pins" > "$marker"
fi
echo "$venv/bin/python"
