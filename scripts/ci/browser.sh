#!/usr/bin/env bash
# The static site in a real headless browser (`pytest -m browser`). Uses `chromium` (or `chromium-browser`) from
# PATH: GitHub's Ubuntu runners ship one; elsewhere (Debian) it is installed with apt-get (53 s here). The browser
# tests skip themselves without a browser, so a missing one is an error here, never a silent pass.
# Expects the environment of scripts/ci/install.sh (.venv).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/dev/null 2>&1 \
    || { echo "ci: cannot install chromium (apt-get install -y chromium) for the browser tests" >&2; exit 1; }
fi
.venv/bin/pytest -m browser -rs
rc=$?
[ "$rc" -eq 5 ] && { echo "ci: no browser tests collected" >&2; exit 1; }
exit "$rc"
