#!/usr/bin/env bash
# Run the whole test suite from a fresh clone: installs what it needs into ./.venv first.
# Extra arguments go to pytest, e.g.: bash scripts/test.sh -k config -x
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/bootstrap.sh" "test"
cd "$REPO"
exec "$PY" -m pytest "$@"
