#!/usr/bin/env bash
# Makes sure the Prometheus server binary (`prometheus`, and `promtool` with it) is on PATH, for
# the end-to-end tests that run a real Prometheus (tests/e2e/test_prometheus.py). Idempotent:
# does nothing when both are already there.
#
#   bash scripts/install-prometheus.sh        # prints the path and version of `prometheus`
#
# Otherwise it installs the Debian/Ubuntu `prometheus` package (as root or with sudo;
# `apt-get update` only if the package cannot be installed without it), with service start-up
# disabled during the install (Debian's policy-rc.d), and stops again any Prometheus server the
# install started anyway: the tests start their own, on a free loopback port.
set -euo pipefail

source "$(dirname "$0")/lib/apt.sh"

report() {
  local bin
  bin=$(command -v prometheus)
  echo "prometheus: $bin ($("$bin" --version 2>&1 | head -n 1))"
}

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  report
  exit 0
fi

# The package's own server (its config under /etc/prometheus, listening on :9090), never a
# test's (a --config.file elsewhere).
package_server_pids() {
  local pid args
  for pid in $(pgrep -x prometheus 2>/dev/null || true); do
    args=$(ps -o args= -p "$pid" 2>/dev/null || true)
    if [[ $args != *--config.file=* || $args == *--config.file=/etc/prometheus/* ]]; then
      echo "$pid"
    fi
  done
}

echo "installing prometheus" >&2
apt_install package_server_pids prometheus.service prometheus

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "the prometheus package is installed but prometheus/promtool are not on PATH" >&2
  exit 1
fi
report
