#!/usr/bin/env bash
# CI: the cluster launcher on a real one-node Slurm (`pytest -m slurm`, tests/test_slurm.py). Brings the cluster up
# with scripts/slurm-up in a temporary folder (installing Debian's slurm and munge packages as root when missing),
# runs the slurm tests against it, and stops exactly the daemons it started (their pid files) whatever happens.
# Run from .ci/run after the venv is made; PYTEST overrides the pytest to use (default .venv/bin/pytest).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
pytest="${PYTEST:-.venv/bin/pytest}"
dir="$(mktemp -d "${TMPDIR:-/tmp}/gapt-bench-slurm-ci.XXXXXX")" \
  || { echo "ci: cannot create a folder for Slurm's files" >&2; exit 1; }
keep=""
# shellcheck disable=SC2329  # invoked by the EXIT trap below
cleanup() {
  if ! scripts/slurm-up down --dir "$dir" >>"$dir/slurm-up.log" 2>&1; then
    echo "ci: scripts/slurm-up down failed; its daemons' pid files and logs are in $dir" >&2
  elif [ -z "$keep" ]; then
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # the EXIT trap stops the daemons then too
# The node offers 4 CPUs (as tests/slurm_cluster.py would start it): a time-limit job runs beside a two-task DDP job.
up="$(scripts/slurm-up --dir "$dir" --cpus 4 --partition debug 2>"$dir/slurm-up.log")"
rc=$?
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 2 ] || keep=1  # the daemon logs the line names
  echo "ci: cannot install or start Slurm (scripts/slurm-up exit $rc: $(tail -1 "$dir/slurm-up.log"))" >&2
  exit 1
fi
case "$up" in
  *"export SLURM_CONF="*) export SLURM_CONF="${up##*export SLURM_CONF=}" ;;  # the tests use this cluster as it is
  *) echo "ci: scripts/slurm-up printed no SLURM_CONF (got '$up')" >&2; exit 1 ;;
esac
OMP_NUM_THREADS=1 "$pytest" -m slurm
rc=$?
[ "$rc" -eq 5 ] && { echo "ci: no slurm tests collected" >&2; exit 1; }
exit "$rc"
