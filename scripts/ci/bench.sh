#!/usr/bin/env bash
# Speed, as ratios of two loops timed in one process (trainer vs a plain loop; a GAPT compression step vs a
# baseline step): each check fails only when the 95% interval of its median ratio lies wholly beyond its bound, and
# an injected 20% slowdown must fail. The figures also go to
# .benchmarks/github-action-benchmark.json (customBiggerIsBetter format), split here by direction into
# .benchmarks/bench-bigger.json and .benchmarks/bench-smaller.json for benchmark-action/github-action-benchmark
# (one direction per chart). Expects the environment of scripts/ci/install.sh (.venv).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
out=.benchmarks/github-action-benchmark.json
rm -f "$out" .benchmarks/bench-bigger.json .benchmarks/bench-smaller.json
GAPT_BENCH_BENCH_JSON="$out" .venv/bin/pytest -m benchmark benchmarks -s \
  -k "trainer_vs_plain_loop or injected_20_percent_slowdown or gapt_compression_step_overhead"
rc=$?
if [ -f "$out" ]; then
  .venv/bin/python - "$out" <<'PY'
import json, pathlib, sys
src = pathlib.Path(sys.argv[1])
figures = json.loads(src.read_text())
smaller = [f for f in figures if "smaller is better" in f["name"]]
bigger = [f for f in figures if f not in smaller]
for name, part in (("bench-bigger.json", bigger), ("bench-smaller.json", smaller)):
    (src.parent / name).write_text(json.dumps(part, indent=2) + "\n")
    print(f"bench: {len(part)} figure(s) -> {src.parent / name}")
PY
fi
exit "$rc"
