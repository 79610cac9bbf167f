#!/usr/bin/env bash
# Create ./.venv (if missing) and install srpc into it with the given extras.
# Usage: source scripts/bootstrap.sh "test"   -> sets $PY to the venv's python
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SRPC_VENV:-$REPO/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PY="$VENV/bin/python"
extras="${1:-}"
target="$REPO"
[ -n "$extras" ] && target="$REPO[$extras]"
"$PY" -m pip install --quiet --editable "$target"
