#!/usr/bin/env bash
# A fresh sweep of gapt-bench checked against a stored baseline with `gapt-bench regression`: the whole shell logic of the composite action
# .github/actions/gapt-bench (which only sets up Python, calls this script and uploads what it leaves), of this
# repository's own CI regression job (scripts/ci/regression.sh) and of tests/test_github_ci.py, which runs it
# locally. Every input comes from the environment (never from ${{ }} in the workflow), all optional:
#
#   GAPT_TASKS      comma list of tasks, or all               (default fineweb_lm)
#   GAPT_PRESET     preset                                    (default quick)
#   GAPT_METHODS    comma list of methods                     (default baseline,gapt)
#   GAPT_SEEDS      seeds: 0-2, 0,3,5                         (default 0-2; the check needs >= GAPT_MIN_N of them)
#   GAPT_INCLUDE    plug-in .py files or folders for --include, separated by newlines or commas
#   GAPT_PACKAGE    pip arguments installing the method's package (split on spaces): `.`, `-e .`, `name==1.0`
#   GAPT_SET        config overrides for --set, one per line
#   GAPT_BASELINE   records to check against (a runs.jsonl or results folder); empty: no check, only the report
#                   (the bootstrap: commit the records this run uploads as the baseline)
#   GAPT_STRICT     true: inconclusive verdicts and baseline configurations not rerun fail (exit 3)
#   GAPT_TOLERANCE  relative tolerance of the regression check      (default 0.05)
#   GAPT_MIN_N      seeds an arm needs before the check tests it       (default 3)
#   GAPT_REFERENCE  the report's and the site's reference method     (default baseline)
#   GAPT_WORKERS    parallel runs                                    (default: the number of cores)
#   GAPT_OUT        results folder, new or empty                     (default gapt-bench-results)
#   GAPT_SITE       static site folder; empty: no site               (default gapt-bench-site)
#   GAPT_INSTALL_SUITE   a gapt_bench source tree to pip install first (the action passes its own checkout);
#                        empty: gapt-bench is already installed
#   GAPT_CPU_TORCH  true: install with the suite's CPU torch pin (constraints/cpu.txt) and the CPU wheel index
#   GAPT_PYTHON     the Python to install into and run with (default python3; gapt-bench is `$GAPT_PYTHON -m
#                   gapt_bench`)
#
# Writes GAPT_OUT/{runs.jsonl,records/,runs/,report.md,regression.md,regression.json,summary.md}, the site, and
# appends summary.md to $GITHUB_STEP_SUMMARY and `exit-code=N` to $GITHUB_OUTPUT when those are set.
#
# Needs bash >= 4.4 (GitHub's Linux runners; macOS ships bash 3.2).
#
# Exit code: the regression verb's (0 pass; 1 a significant regression; 2 incompatible or bad input; 3 inconclusive
# under strict); 1 when a run failed or diverged and the check passed; the run's own 2 (bad input) or 130
# (interrupted) when the sweep could not run. The report and the site are informational: when they fail the
# summary says so and the exit code does not change.
set -uo pipefail

tasks="${GAPT_TASKS:-fineweb_lm}"
preset="${GAPT_PRESET:-quick}"
methods="${GAPT_METHODS:-baseline,gapt}"
seeds="${GAPT_SEEDS:-0-2}"
baseline="${GAPT_BASELINE:-}"
strict="${GAPT_STRICT:-false}"
tolerance="${GAPT_TOLERANCE:-0.05}"
min_n="${GAPT_MIN_N:-3}"
reference="${GAPT_REFERENCE:-baseline}"
out="${GAPT_OUT:-gapt-bench-results}"
site="${GAPT_SITE-gapt-bench-site}"
py="${GAPT_PYTHON:-python3}"

say() { echo "gapt-bench-ci: $*" >&2; }
truthy() { case "${1,,}" in true|1|yes|on) return 0 ;; *) return 1 ;; esac; }

# --- install ----------------------------------------------------------------------------------------------------
pip_index=()
if truthy "${GAPT_CPU_TORCH:-false}"; then
  pip_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
if [ -n "${GAPT_INSTALL_SUITE:-}" ]; then
  suite="$(cd "$GAPT_INSTALL_SUITE" && pwd)" || { say "no gapt_bench source at $GAPT_INSTALL_SUITE"; exit 2; }
  pin=()
  truthy "${GAPT_CPU_TORCH:-false}" && pin=(-c "$suite/constraints/cpu.txt")
  say "installing gapt-bench from $suite"
  "$py" -m pip install -q "${pin[@]}" "${pip_index[@]}" "$suite" || { say "pip could not install gapt-bench"; exit 2; }
fi
if [ -n "${GAPT_PACKAGE:-}" ]; then
  read -r -a pkg <<< "$GAPT_PACKAGE"
  pin=()
  [ -n "${suite:-}" ] && truthy "${GAPT_CPU_TORCH:-false}" && pin=(-c "$suite/constraints/cpu.txt")
  say "installing the method's package: ${pkg[*]}"
  "$py" -m pip install -q "${pin[@]}" "${pip_index[@]}" "${pkg[@]}" || { say "pip could not install ${pkg[*]}"; exit 2; }
fi
bench=("$py" -m gapt_bench)
"$py" -c "import gapt_bench; print('gapt-bench-ci: gapt_bench', gapt_bench.__version__, 'from', gapt_bench.__file__)" \
  || { say "gapt-bench is not installed for $py (set GAPT_INSTALL_SUITE, or GAPT_PYTHON to the Python that has it)"; exit 2; }

# --- the sweep --------------------------------------------------------------------------------------------------
include=()
while IFS= read -r path; do
  path="${path#"${path%%[![:space:]]*}"}"; path="${path%"${path##*[![:space:]]}"}"  # trim
  [ -n "$path" ] && include+=(--include "$path")
done < <(printf '%s\n' "${GAPT_INCLUDE:-}" | tr ',' '\n')
sets=()
while IFS= read -r kv; do
  kv="${kv#"${kv%%[![:space:]]*}"}"; kv="${kv%"${kv##*[![:space:]]}"}"
  [ -n "$kv" ] && sets+=(--set "$kv")
done <<< "${GAPT_SET:-}"
workers=()
[ -n "${GAPT_WORKERS:-}" ] && workers=(--workers "$GAPT_WORKERS")

# A results folder that holds runs already would have them skipped, not retrained: the check would read old records.
if [ -e "$out/runs.jsonl" ] || [ -e "$out/records" ]; then
  say "$out already holds run records; remove it or point GAPT_OUT at a new folder (finished runs are never retrained)"
  exit 2
fi
mkdir -p "$out" || { say "cannot create $out"; exit 2; }
plan=(--tasks "$tasks" --preset "$preset" --methods "$methods" --seeds "$seeds" "${sets[@]}" "${include[@]}")
say "gapt-bench run ${plan[*]} --out $out"
CI="${CI:-true}" "${bench[@]}" run "${plan[@]}" "${workers[@]}" --out "$out" --no-report --no-progress
run_rc=$?
summary="$out/summary.md"
{
  echo "## gapt-bench: \`$methods\` on \`$tasks\` (preset \`$preset\`, seeds \`$seeds\`)"
  echo
} > "$summary"
if [ "$run_rc" -eq 2 ] || [ "$run_rc" -eq 130 ]; then
  why=$([ "$run_rc" -eq 2 ] && echo "bad input (see the log)" || echo "interrupted")
  echo "**The sweep did not run: $why, exit $run_rc.**" >> "$summary"
  [ -n "${GITHUB_STEP_SUMMARY:-}" ] && cat "$summary" >> "$GITHUB_STEP_SUMMARY"
  [ -n "${GITHUB_OUTPUT:-}" ] && echo "exit-code=$run_rc" >> "$GITHUB_OUTPUT"
  exit "$run_rc"
fi

# --- the regression check -------------------------------------------------------------------------------------
regression_rc=0
if [ -n "$baseline" ]; then
  if [ ! -e "$baseline" ]; then
    say "baseline $baseline does not exist"
    regression_rc=2
    echo "**Regression check: baseline \`$baseline\` not found (exit 2).**" >> "$summary"
  else
    # Check only what this sweep planned: the baseline's other tasks and methods are not this run's business.
    base_records="$out/baseline.jsonl"
    "$py" - "$baseline" "$tasks" "$methods" "$base_records" <<'PY'
import json, sys
from gapt_bench.results.store import read_records
src, tasks, methods, dst = sys.argv[1:]
keep_t = None if tasks.strip() == "all" else {t.strip() for t in tasks.split(",")}
keep_m = {m.strip() for m in methods.split(",")}
recs = [r for r in read_records(src) if (keep_t is None or r["task"] in keep_t) and r["method"] in keep_m]
with open(dst, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in recs)
print(f"gapt-bench-ci: {len(recs)} baseline record(s) of these tasks and methods", file=sys.stderr)
if not recs:
    print(f"gapt-bench-ci: the baseline {src} holds no record of tasks {tasks} and methods {methods}: point "
          "baseline at records of this plan, or leave it empty to make one", file=sys.stderr)
PY
    strict_arg=()
    truthy "$strict" && strict_arg=(--strict)
    "${bench[@]}" regression --baseline "$base_records" --candidate "$out" --tolerance "$tolerance" \
      --min-n "$min_n" "${strict_arg[@]}" --format json --markdown "$out/regression.md" > "$out/regression.json"
    regression_rc=$?
    [ -f "$out/regression.md" ] && cat "$out/regression.md"
    "$py" - "$out/regression.json" "$regression_rc" "$baseline" "$out/annotations.txt" >> "$summary" <<'PY'
import json, sys
path, rc, baseline, annotations = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
meaning = {0: "passed", 1: "FAILED, a significant regression", 2: "FAILED, incompatible or bad input",
           3: "FAILED, inconclusive under strict"}.get(rc, f"FAILED (exit {rc})")
try:
    res = json.load(open(path))
except (OSError, ValueError):
    res = {}
counts = ", ".join(f"{v}: {n}" for v, n in (res.get("counts") or {}).items())
print(f"**Regression check against `{baseline}`: {meaning}** (exit {rc}{'; ' + counts if counts else ''})\n")
notes = []
bad = [r for r in res.get("rows", []) if r.get("verdict") in ("REGRESSION", "INCOMPATIBLE", "INCONCLUSIVE",
                                                              "MISSING", "WARN")]
for r in bad:
    change = "" if r.get("rel_change") is None else f" {r['rel_change'] * 100:+.1f}%"
    print(f"- {r['verdict']}: {r['task']} / {r.get('label') or r['method']} / `{r['metric']}`{change}"
          f"{' (' + r['note'] + ')' if r.get('note') else ''}")
    if r.get("verdict") == "REGRESSION":  # a GitHub annotation on the run's page
        notes.append(f"::error title=gapt-bench regression::{r['task']}/{r.get('label') or r['method']} "
                     f"{r['metric']}{change}")
if bad:
    print()
open(annotations, "w").write("".join(n + "\n" for n in notes))
PY
    [ -f "$out/annotations.txt" ] && cat "$out/annotations.txt"
    if [ -s "$out/regression.md" ]; then
      { echo "<details open><summary>Verdict table (gapt-bench regression)</summary>"; echo
        cat "$out/regression.md"; echo "</details>"; echo; } >> "$summary"
    fi
  fi
else
  {
    echo "**No baseline given: nothing checked.** To check later runs, commit this run's \`runs.jsonl\` (in the"
    echo "records artifact) as the baseline file and pass its path as \`baseline\`."
    echo
  } >> "$summary"
fi
if [ "$run_rc" -ne 0 ]; then
  echo "**Some runs failed or diverged (gapt-bench run exit $run_rc); see the log and the records.**" >> "$summary"
  echo >> "$summary"
fi

# --- the report (mean ± CI, MDE, seeds needed) and the site: informational --------------------------------------
if "${bench[@]}" report "$out" --reference "$reference" --format md --markdown "$out/report.md" > /dev/null; then
  { echo "<details><summary>Report: mean ± 95% CI per method, Δ against \`$reference\`, MDE and seeds needed</summary>"
    echo; cat "$out/report.md"; echo "</details>"; echo; } >> "$summary"
else
  echo "_The report could not be written (see the log); the regression check's verdict stands._" >> "$summary"
fi
if [ -n "$site" ]; then
  if "${bench[@]}" site "$out" -o "$site" --reference "$reference" "${include[@]}"; then
    echo "The static site (open \`index.html\`) and the records are uploaded as artifacts." >> "$summary"
  else
    echo "_The static site could not be built (see the log); the regression check's verdict stands._" >> "$summary"
  fi
fi

[ -n "${GITHUB_STEP_SUMMARY:-}" ] && cat "$summary" >> "$GITHUB_STEP_SUMMARY"
rc="$regression_rc"
[ "$rc" -eq 0 ] && [ "$run_rc" -ne 0 ] && rc="$run_rc"
[ -n "${GITHUB_OUTPUT:-}" ] && echo "exit-code=$rc" >> "$GITHUB_OUTPUT"
say "exit $rc (regression $regression_rc, run $run_rc)"
exit "$rc"
