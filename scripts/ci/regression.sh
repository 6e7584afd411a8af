#!/usr/bin/env bash
# This repository's own regression check: a short fresh run of the quick suite's FineWeb LM task (baseline and
# GAPT, seeds 0-2: about 3.5 worker-minutes) checked against the committed baselines/cpu-quick.jsonl with
# `gapt-bench regression`, through the same script as the composite action (scripts/ci/method-regression.sh).
# FineWeb LM because its seeds agree to about 1%, so 3 seeds detect a val_ce regression of about 11%
# (docs/github-actions.md, "What the regression check can detect"); the forgetting task's seeds differ by 100% and
# would only dilute the check's Holm family. A different machine gives slightly different numbers: the check
# compares over seeds with a 5% tolerance, never bit for bit. Expects the environment of scripts/ci/install.sh
# (.venv). Set the GAPT_* variables of method-regression.sh to change the plan (e.g. GAPT_TASKS=all for the whole
# quick suite, about 14 worker-minutes). Run by the workflow's `regression` job and by .ci/run.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
export GAPT_TASKS="${GAPT_TASKS:-fineweb_lm}"
export GAPT_PRESET="${GAPT_PRESET:-quick}"
export GAPT_METHODS="${GAPT_METHODS:-baseline,gapt}"
export GAPT_SEEDS="${GAPT_SEEDS:-0-2}"
export GAPT_BASELINE="${GAPT_BASELINE:-baselines/cpu-quick.jsonl}"
export GAPT_OUT="${GAPT_OUT:-.ci-regression/results}"
[ "$GAPT_OUT" = .ci-regression/results ] && rm -rf .ci-regression/results  # this script's own folder
export GAPT_SITE="${GAPT_SITE-}"
export GAPT_PYTHON="${GAPT_PYTHON:-.venv/bin/python}"
exec scripts/ci/method-regression.sh
