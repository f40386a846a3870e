# Sourced by the install-*.sh scripts: installs Debian packages for the tests without leaving
# any system service running.
#
#   source scripts/lib/apt.sh
#   apt_install PIDS_FUNCTION UNITS PACKAGE...
#
# Installs PACKAGE... with apt-get (as root or through sudo; waits up to 300 s for another
# install's dpkg lock; `apt-get update` first when the package lists do not know a package,
# or once more when the install fails with the current lists), with service start-up disabled
# during the install (Debian's policy-rc.d). Then it stops every process that PIDS_FUNCTION
# (a shell function printing the pids of the packages' system services, one per line) lists
# now but did not list before, stopping the systemd UNITS (space-separated) first where
# systemd runs: the tests start their own instances, on free loopback ports. Progress goes to
# stderr; returns non-zero when the packages cannot be installed.

_apt_sudo=""
_apt_policy_rc=""

_apt_say() { printf '%s\n' "$*" >&2; }

_apt_cleanup() {
  if [[ -n $_apt_policy_rc ]]; then
    $_apt_sudo rm -f /usr/sbin/policy-rc.d || true
    _apt_policy_rc=""
  fi
}
trap _apt_cleanup EXIT

apt_install() {
  local pids_function=$1 units=$2
  shift 2
  local packages=("$@")
  if ! command -v apt-get >/dev/null 2>&1; then
    _apt_say "missing ${packages[*]} and apt-get is not available: install them by hand"
    return 1
  fi
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      _apt_sudo=sudo
    else
      _apt_say "missing ${packages[*]}; installing them needs root (or sudo)"
      return 1
    fi
  fi
  local before after pid p updated=""
  before=$("$pids_function" | sort)
  # Keep the packages' postinst scripts from starting the system services.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $_apt_sudo tee /usr/sbin/policy-rc.d >/dev/null
    $_apt_sudo chmod 755 /usr/sbin/policy-rc.d
    _apt_policy_rc=1
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
  local install=("${apt[@]}" install -y --no-install-recommends "${packages[@]}")
  for p in "${packages[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
      _apt_say "apt-get update (the package lists do not know $p)"
      $_apt_sudo "${apt[@]}" update >&2
      updated=1
      break
    fi
  done
  if ! $_apt_sudo "${install[@]}" >&2; then
    if [[ -n $updated ]]; then
      _apt_cleanup
      return 1
    fi
    _apt_say "apt-get update (install failed with the current package lists)"
    $_apt_sudo "${apt[@]}" update >&2
    if ! $_apt_sudo "${install[@]}" >&2; then
      _apt_cleanup
      return 1
    fi
  fi
  _apt_cleanup
  # A package may start its daemon some other way than through policy-rc.d; it shows within
  # a second. Stop only processes that were not there before.
  local new="" tries
  for tries in 1 2 3 4 5; do
    after=$("$pids_function" | sort)
    new=$(comm -13 <(echo "$before") <(echo "$after"))
    [[ -n $new ]] && break
    sleep 0.2
  done
  for pid in $new; do
    _apt_say "stopping $(ps -o comm= -p "$pid" 2>/dev/null || echo process) (pid $pid) started by the install"
    if [[ -n $units ]] && command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      # shellcheck disable=SC2086 # units is a space-separated list
      $_apt_sudo systemctl stop $units 2>/dev/null || true
    fi
    $_apt_sudo kill "$pid" 2>/dev/null || true
  done
}
