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

source "$(dirname "$0")/lib/apt.sh"

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
  pgrep -u redis -x redis-server 2>/dev/null || true
  pgrep -f '^/usr/lib/postgresql/[0-9]+/bin/postgres .*config_file=/etc/postgresql/' 2>/dev/null || true
}

missing=()
have_redis || missing+=(redis-server)
pg_bin_dir >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt_install service_pids "redis-server.service postgresql.service" "${missing[@]}"
fi

have_redis || { say "redis-server is still not on PATH"; exit 1; }
pg=$(pg_bin_dir) || { say "no PostgreSQL bin directory with initdb, pg_ctl and postgres"; exit 1; }
say "redis-server: $(command -v redis-server) ($(redis-server --version | head -n 1))"
say "PostgreSQL: $pg ($("$pg/postgres" --version))"
printf '%s\n' "$pg"
