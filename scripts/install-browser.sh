#!/usr/bin/env bash
# Makes sure the browser test (tests/browser) can run: Debian's `chromium` at /usr/bin/chromium
# (installed with apt-get when missing, as root or with sudo; `apt-get update` only if the
# package cannot be installed without it) and playwright-core from tests/browser's lock file
# (`npm ci`, a couple of seconds). Node.js and npm must be on PATH.
#
#   bash scripts/install-browser.sh      # prints the Chromium version
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/chromium ]]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "/usr/bin/chromium is missing and apt-get is not available: install Chromium" >&2
    exit 1
  fi
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=sudo
    else
      echo "/usr/bin/chromium is missing: run as root or install sudo to install Debian's chromium" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y --no-install-recommends chromium; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends chromium
  fi
fi

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is not on PATH: install Node.js (with npm) for the browser test" >&2
    exit 1
  fi
done
(cd tests/browser && npm ci --no-audit --no-fund)
/usr/bin/chromium --version 2>/dev/null
