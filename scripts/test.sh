#!/usr/bin/env bash
# The project's whole test suite, as CI runs it (`.ci/run`) and as the README tells users:
# format, lints, unit and integration tests (with a real Prometheus parser from a pinned
# Python virtualenv), the end-to-end tests against a real Prefect 3.9.1 server (SQLite, and
# the production topology: PostgreSQL, Redis messaging, two API replicas; Prefect's own
# client against serve-replay; a real Prometheus scraping the exporter with the alert rules
# and dashboard queries), the live page in headless Chromium, the fuzz targets for a bounded
# time, then the README's run command as a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings

step "Python test environment (pinned, cached under target/pyenv)"
PREFECT_EXPORTER_TEST_PYTHON=$(bash scripts/python-env.sh)
export PREFECT_EXPORTER_TEST_PYTHON

step "services for the Redis integration tests and the topology tests: Redis and PostgreSQL (installed when missing, never left running)"
PREFECT_E2E_PG_BIN=$(bash scripts/install-test-services.sh)
export PREFECT_E2E_PG_BIN

step "cargo test"
cargo test

step "operations artefacts: alert rules (promtool check/test rules) and the Grafana dashboard"
bash scripts/check-ops.sh

step "cargo build --release"
cargo build --release

step "Prometheus server for the end-to-end tests (Debian's prometheus package; once)"
bash scripts/install-prometheus.sh

step "end-to-end tests: real Prefect 3.9.1 server and flows (SQLite; PostgreSQL + Redis + 2 API replicas), Prefect's client vs serve-replay, a real Prometheus"
PREFECT_EXPORTER_BIN="$PWD/target/release/prefect-events-exporter" \
  "$PREFECT_EXPORTER_TEST_PYTHON" -m pytest tests/e2e

step "browser test: the live page in Debian's headless Chromium (playwright-core)"
bash scripts/install-browser.sh
PREFECT_EXPORTER_BIN="$PWD/target/release/prefect-events-exporter" node tests/browser/live-page.test.mjs

step "fuzz targets (libFuzzer via cargo-fuzz): decoder, query parser, state-file reader, 45 s each"
bash scripts/fuzz.sh 45

step "README run command"
bash scripts/smoke-readme.sh
