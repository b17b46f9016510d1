#!/usr/bin/env bash
# Makes sure Debian's chromium exists for the console's browser test
# (internal/console). Installs the pinned version below when it can (root or
# passwordless sudo with apt-get); when apt no longer offers that version it
# says so in one line and installs the candidate instead; otherwise it says in
# one line how to install it. EDGESYNC_TEST_CHROMIUM names another binary.
set -euo pipefail

# The version the browser test was last run against (Debian 12 security; that
# archive keeps only its newest build, so the pin goes stale and the fallback
# below takes over).
PINNED="156.0.8078.114-1~deb12u1"
BIN="${EDGESYNC_TEST_CHROMIUM:-/usr/bin/chromium}"
HINT="chromium is missing: install it with 'sudo apt-get install -y chromium' (Debian) or set EDGESYNC_TEST_CHROMIUM to a Chromium binary, and run this again"

[ -x "$BIN" ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "$HINT" >&2
      exit 1
    fi
  fi
  apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
  echo "chromium not found: installing Debian's chromium $PINNED (apt-get)..." >&2
  apt_get update -qq >/dev/null
  if ! apt_get install -y -qq --no-install-recommends "chromium=$PINNED" >/dev/null 2>&1; then
    echo "chromium $PINNED is not offered by apt here; installing apt's candidate $(apt-cache policy chromium 2>/dev/null | sed -n 's/^ *Candidate: *//p') instead" >&2
    apt_get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  [ -x "$BIN" ] && exit 0
fi
echo "$HINT" >&2
exit 1
