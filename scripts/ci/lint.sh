#!/usr/bin/env bash
# Lint and types: ruff (lint + format) on the whole tree, mypy on the modules users import (its file list is in
# pyproject.toml), with the linters pinned in the package's `lint` extra. .ci/run and the GitHub workflow (job
# "lint") both call this script. Expects the environment of scripts/ci/install.sh (.venv); adds the linters to it.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
.venv/bin/pip install -q -c constraints/cpu.txt -e '.[lint]' \
  || { echo "ci: cannot install the linters (pip install -e '.[lint]')" >&2; exit 1; }
rc=0
echo "== ruff check ."
.venv/bin/ruff check . || rc=1
echo "== ruff format --check ."
.venv/bin/ruff format --check . || rc=1
echo "== mypy"
.venv/bin/mypy || rc=1
exit "$rc"
