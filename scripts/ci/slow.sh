#!/usr/bin/env bash
# The slow tests (end-to-end kills, soaks, fresh runs checked against the committed baseline); exit 1 when none are
# collected. Expects the environment of scripts/ci/install.sh (.venv).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
.venv/bin/pytest -m slow
rc=$?
[ "$rc" -eq 5 ] && { echo "ci: no slow tests collected" >&2; exit 1; }
exit "$rc"
