#!/usr/bin/env bash
# Install everything the project needs on a fresh machine, from the project's own files:
# the Python venv (pyproject), PostgreSQL for the contract tests (Debian), and the test-bed binaries
# (built from the Go module proxy and cached outside the repo). Idempotent; prints what it reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
say() { printf '[bootstrap +%4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then say "creating .venv"; "$PY" -m venv .venv; fi
if ! .venv/bin/python -c 'import dittoctl, kopf, kubernetes_asyncio, pytest, hypothesis' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing the project and its test extra into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch .venv/.installed
else
  say "cached: .venv"
fi

if [ "${SKIP_POSTGRES:-0}" != 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "installing PostgreSQL (Debian) for the contract tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  # Debian starts a cluster on 5432; the tests run their own on free ports, so stop it.
  $SUDO service postgresql stop >/dev/null 2>&1 || true
else
  say "cached: PostgreSQL"
fi

say "test-bed binaries (first build: about 10-30 min on 2 cores)"
bash tests/testbed/build.sh all
say "done"
