#!/usr/bin/env bash
# A virtualenv of its own for the peer benchmark (PgQueuer), kept apart from jobq's .venv so
# neither project's dependencies can shape the other's numbers. Idempotent: does nothing when
# the venv already has exactly the pinned versions.
#
#   bash bench/peer/setup.sh            # venv at ./.venv-peer (relative to the repo root)
#   PEER_VENV=/tmp/peer bash bench/peer/setup.sh
set -euo pipefail

# Pinned exactly so same-run ratios compare against a known peer. 1.6.0 is the newest
# pgqueuer release; it supports Python >= 3.10. asyncpg is the driver its `asyncpg` extra
# pulls in (an open range there), so it is pinned here too.
PGQUEUER_VERSION=1.6.0
ASYNCPG_VERSION=0.32.0
UVLOOP_VERSION=0.23.0  # the event loop the workers run on, as `pgq run` does

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${PEER_VENV:-.venv-peer}"
PYTHON="${PYTHON:-python3}"

installed() {
    "$VENV/bin/python" - "$PGQUEUER_VERSION" "$ASYNCPG_VERSION" "$UVLOOP_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version

wanted = tuple(sys.argv[1:4])
sys.exit(0 if (version("pgqueuer"), version("asyncpg"), version("uvloop")) == wanted else 1)
PY
}

if [ -x "$VENV/bin/python" ] && installed; then
    echo "peer venv $VENV: pgqueuer $PGQUEUER_VERSION, asyncpg $ASYNCPG_VERSION already installed"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "pgqueuer==$PGQUEUER_VERSION" \
    "asyncpg==$ASYNCPG_VERSION" "uvloop==$UVLOOP_VERSION"
installed || { echo "peer venv $VENV: install did not give the pinned versions" >&2; exit 1; }
echo "peer venv $VENV: pgqueuer $PGQUEUER_VERSION, asyncpg $ASYNCPG_VERSION installed"
