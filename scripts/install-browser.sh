#!/usr/bin/env bash
# Makes sure the browser test (tests/browser) can run: Debian's `chromium` at /usr/bin/chromium
# (installed with apt-get when missing, through scripts/lib/apt.sh) and playwright-core from
# tests/browser's lock file (`npm ci`, a couple of seconds). Node.js and npm must be on PATH.
#
#   bash scripts/install-browser.sh      # prints the Chromium version
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/apt.sh

# Chromium runs no service.
no_service() { :; }

if [[ ! -x /usr/bin/chromium ]]; then
  echo "installing chromium" >&2
  apt_install no_service "" chromium
fi

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is not on PATH: install Node.js (with npm) for the browser test" >&2
    exit 1
  fi
done
(cd tests/browser && npm ci --no-audit --no-fund)
/usr/bin/chromium --version 2>/dev/null
