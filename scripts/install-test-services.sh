#!/usr/bin/env bash
# Makes sure the services the topology end-to-end tests start themselves are installed:
# Redis (Debian's `redis-server`) and PostgreSQL (Debian's `postgresql`, version 15 on
# Debian 12). The tests run their own throwaway instances on free loopback ports in temp
# directories; they never use the system services, so none is left running.
#
#   PG_BIN=$(bash scripts/install-test-services.sh)   # prints PostgreSQL's bin directory
#
# Idempotent: when `redis-server` and PostgreSQL's `initdb`/`pg_ctl` are already there it
# installs nothing (and never calls apt-get). Otherwise it installs the missing packages with
# apt-get, as root or through sudo, with service start-up disabled during the install
# (Debian's policy-rc.d), and stops any redis-server or postgres process the install started
# anyway (only those: processes running before are left alone).
#
# stdout: the directory holding initdb, pg_ctl and postgres (e.g. /usr/lib/postgresql/15/bin);
# the tests read it from PREFECT_E2E_PG_BIN. Everything else goes to stderr.
set -euo pipefail

SUDO=""
created_policy_rc=""
cleanup() {
  if [[ -n $created_policy_rc ]]; then
    $SUDO rm -f /usr/sbin/policy-rc.d || true
  fi
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }

# PostgreSQL's server binaries are not on PATH on Debian (only the client wrappers are): they
# live in /usr/lib/postgresql/<major>/bin. The newest major version with initdb, pg_ctl and
# postgres wins; then pg_config's --bindir; then PATH.
pg_bin_dir() {
  local d best="" best_major=-1 major
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] || continue
    major=$(basename "$(dirname "$d")")
    [[ $major =~ ^[0-9]+$ ]] || continue
    if ((major > best_major)); then
      best=$d
      best_major=$major
    fi
  done
  if [[ -z $best ]] && command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
      best=$d
    fi
  fi
  if [[ -z $best ]] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    best=$(dirname "$(readlink -f "$(command -v initdb)")")
    [[ -x $best/postgres ]] || best=""
  fi
  [[ -n $best ]] || return 1
  printf '%s\n' "$best"
}

have_redis() { command -v redis-server >/dev/null 2>&1; }

# The system services' processes only, never a test's own instances (those run as root or
# with a temp data directory): Debian's redis-server runs as user redis, and a cluster's
# postmaster is started with its config file under /etc/postgresql.
service_pids() {
  {
    pgrep -u redis -x redis-server 2>/dev/null || true
    pgrep -f '^/usr/lib/postgresql/[0-9]+/bin/postgres .*config_file=/etc/postgresql/' 2>/dev/null || true
  } | sort
}

apt_install() {
  local packages=("$@")
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${packages[*]} and apt-get is not available: install them by hand"
    return 1
  fi
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=sudo
    else
      say "missing ${packages[*]}; installing them needs root (or sudo)"
      return 1
    fi
  fi
  local before after pid
  before=$(service_pids)
  # Keep the packages' postinst scripts from starting the system services.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    created_policy_rc=1
  fi
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}")
  local updated=""
  local p
  for p in "${packages[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
      say "apt-get update (the package lists do not know $p)"
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
      updated=1
      break
    fi
  done
  if ! $SUDO "${install[@]}" >&2; then
    if [[ -n $updated ]]; then
      return 1
    fi
    say "apt-get update (install failed with the current package lists)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    $SUDO "${install[@]}" >&2 || return 1
  fi
  if [[ -n $created_policy_rc ]]; then
    $SUDO rm -f /usr/sbin/policy-rc.d
    created_policy_rc=""
  fi
  # Stop whatever service process the install started anyway (none with policy-rc.d, but a
  # package may start its daemon some other way): only processes that were not there before.
  after=$(service_pids)
  for pid in $(comm -13 <(echo "$before") <(echo "$after")); do
    say "stopping $(ps -o comm= -p "$pid" 2>/dev/null || echo process) (pid $pid) started by the install"
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      $SUDO systemctl stop redis-server.service postgresql.service 2>/dev/null || true
    fi
    $SUDO kill "$pid" 2>/dev/null || true
  done
}

missing=()
have_redis || missing+=(redis-server)
pg_bin_dir >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt_install "${missing[@]}"
fi

have_redis || { say "redis-server is still not on PATH"; exit 1; }
pg=$(pg_bin_dir) || { say "no PostgreSQL bin directory with initdb, pg_ctl and postgres"; exit 1; }
say "redis-server: $(command -v redis-server) ($(redis-server --version | head -n 1))"
say "PostgreSQL: $pg ($("$pg/postgres" --version))"
printf '%s\n' "$pg"
