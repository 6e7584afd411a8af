#!/usr/bin/env bash
# The README's test command without its last step (`&& .venv/bin/pytest`): the environment the other CI scripts
# (browser.sh, bench.sh, regression.sh) run in. tests/test_github_ci.py checks it against the README.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv .venv && .venv/bin/pip install -q -c constraints/cpu.txt -e '.[test]'
