#!/usr/bin/env bash
# The README's screenshot of the site: built from the committed quick-suite baseline, opened in headless Chromium
# (Debian: apt-get install -y chromium). Run it again after regenerating baselines/cpu-quick.jsonl.
#   scripts/site_screenshot.sh [PAGE]   (PAGE: index.html by default, or paper.html, task-fineweb_lm.html, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
page="${1:-index.html}"
bench=.venv/bin/gapt-bench; [ -x "$bench" ] || bench=gapt-bench
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$bench" site baselines/cpu-quick.jsonl -o "$tmp/site"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$tmp/profile" \
  --window-size=1280,1000 --screenshot="$PWD/results/figures/site.png" "file://$tmp/site/$page" 2>/dev/null
echo "wrote results/figures/site.png ($page)"
