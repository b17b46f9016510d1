#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries exist for the tests and the demo.
# Looks where internal/pgtest looks (PATH, pg_config --bindir,
# /usr/lib/postgresql/*/bin); installs Debian's postgresql package when it can
# (root or passwordless sudo with apt-get), otherwise says in one line how.
set -euo pipefail

have_pg() {
  command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
  if command -v pg_config >/dev/null 2>&1; then
    local d; d=$(pg_config --bindir 2>/dev/null || true)
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && return 0
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && return 0
  done
  return 1
}

have_pg && exit 0

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "PostgreSQL is missing: install it with 'sudo apt-get install -y postgresql' and run this again" >&2
      exit 1
    fi
  fi
  echo "PostgreSQL server binaries not found: installing Debian's postgresql package (apt-get)..." >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib >/dev/null
  # Debian starts a system cluster on install; the tests start their own and do not need it.
  have_pg && exit 0
fi
echo "PostgreSQL is missing: install it with 'sudo apt-get install -y postgresql' (Debian/Ubuntu) and run this again" >&2
exit 1
