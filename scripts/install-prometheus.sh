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

SUDO=""
created_policy_rc=""
cleanup() {
  if [[ -n $created_policy_rc ]]; then
    $SUDO rm -f /usr/sbin/policy-rc.d || true
  fi
}
trap cleanup EXIT

report() {
  local bin
  bin=$(command -v prometheus)
  echo "prometheus: $bin ($("$bin" --version 2>&1 | head -n 1))"
}

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  report
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "prometheus is not on PATH and apt-get is not available: install Prometheus (server and promtool)" >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "prometheus is not on PATH; installing it needs root (or sudo)" >&2
    exit 1
  fi
fi

prometheus_pids() { pgrep -x prometheus 2>/dev/null | sort || true; }
before=$(prometheus_pids)

# Keep the package's postinst from starting a Prometheus server.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  created_policy_rc=1
fi

# Another engineer's install may hold the dpkg lock: wait for it (bounded) instead of failing.
apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
install=("${apt[@]}" install -y --no-install-recommends prometheus)
updated=""
if ! apt-cache show prometheus >/dev/null 2>&1; then
  echo "apt-get update (the package lists do not know prometheus)"
  $SUDO "${apt[@]}" update
  updated=1
fi
if ! $SUDO "${install[@]}"; then
  if [[ -n $updated ]]; then
    exit 1
  fi
  echo "apt-get update (install failed with the current package lists)"
  $SUDO "${apt[@]}" update
  $SUDO "${install[@]}"
fi

# Stop any Prometheus server the install started (only those: not ones running before, nor
# tests' own). The package's service would listen on :9090; it is visible within a second.
for _ in 1 2 3 4 5; do
  after=$(prometheus_pids)
  new=$(comm -13 <(echo "$before") <(echo "$after"))
  [[ -n $new ]] && break
  sleep 0.2
done
for pid in $new; do
  # A test's own server (a --config.file outside /etc/prometheus) started meanwhile is not ours.
  args=$(ps -o args= -p "$pid" 2>/dev/null || true)
  if [[ $args == *--config.file=* && $args != *--config.file=/etc/prometheus/* ]]; then
    continue
  fi
  echo "stopping the prometheus server the package started (pid $pid)"
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl stop prometheus.service 2>/dev/null || true
  fi
  $SUDO kill "$pid" 2>/dev/null || true
done

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "the prometheus package is installed but prometheus/promtool are not on PATH" >&2
  exit 1
fi
report
