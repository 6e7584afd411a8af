#!/usr/bin/env bash
# The README's test command, exactly (tests/test_github_ci.py checks that the two agree); .ci/run and the GitHub
# workflow (.github/workflows/ci.yml, job "test") both call this script. Exit 1 when pytest collects nothing.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
python3 -m venv .venv && .venv/bin/pip install -q -c constraints/cpu.txt -e '.[test]' && .venv/bin/pytest
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "ci: pytest collected no tests; the test suite is missing or deselected" >&2
  exit 1
fi
exit "$rc"
