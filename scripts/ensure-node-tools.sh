#!/usr/bin/env bash
# Makes sure the pinned npm tools in tools/node (the Motoko compiler and interpreter with its
# core library, and the IC JavaScript agent) are installed, for `make canister` and the tests.
# Installs node and npm from Debian's packages when they are missing and it may (root or
# password-less sudo), then the tools with `npm ci` from tools/node/package-lock.json when they are
# missing or stale; says in one line what is wrong when it cannot.
set -euo pipefail

dir="$(cd "$(dirname "$0")/../tools/node" && pwd)"
have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }
if ! have_node && command -v apt-get >/dev/null 2>&1; then
  # As ensure-postgres.sh does: Debian's packages when we may install them.
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "node and npm not found: installing Debian's nodejs and npm packages (apt-get)..." >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || true
  fi
fi
have_node || {
  echo "node and npm are missing: install them (Debian: 'sudo apt-get install -y nodejs npm'; node 18 or newer) and run this again" >&2
  exit 1
}
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
  echo "node $(node --version) is too old for the tools in tools/node: install node 18 or newer and run this again" >&2
  exit 1
fi
# Test binaries of several packages may get here at once: one installs, the others wait.
exec 9>"$dir/.install.lock"
flock 9
# npm ci writes node_modules/.package-lock.json; when it equals the lock file, nothing changed.
if [ -f "$dir/node_modules/.package-lock.json" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
  exit 0
fi
if ! out=$(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error 2>&1); then
  echo "npm ci in tools/node failed (is the npm registry reachable?): $(printf '%s' "$out" | grep -m1 -i 'err' || printf '%s' "$out" | tail -n1)" >&2
  exit 1
fi
