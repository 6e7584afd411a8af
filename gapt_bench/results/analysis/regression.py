"""Two result sets against each other: `compare` (how B differs from A, two-sided, like `asv compare`) and the
regression check `regression` (one-sided, tolerance and significance, with an exit code).

Matching. Groups pair up when task, method, task_version and config_hash agree (seeds excluded). A candidate
group that matches none is INCOMPATIBLE when the baseline holds an unmatched group of the same task and method (a
different version or config), else NEW; the same measurement version is required too (schema versions that only
changed the record's envelope, e.g. 1 and 2, compare: `store.MEASUREMENT_VERSION`). A baseline group that nothing
matched or named is MISSING.
Comparing nothing at all is an error, never a pass.

Machines. Each side's machine classes come from the records' `env.machine_class` ("unknown" when absent). When the
two sides differ, the result carries the note "baseline machine: X; candidate machine: Y: results are compared
statistically, not bit for bit". Nothing here assumes bit-exact reproduction: every verdict is a test over seeds
plus a tolerance, and identical values (no variance to test with) fall back to the tolerance alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from gapt_bench.results import stats
from gapt_bench.results.analysis.common import ALPHA, ReportError, clean, natural_key
from gapt_bench.results.analysis.groups import (
    Group,
    controls_by_method,
    diff_labels,
    direction_of,
    group_records,
    is_layer_metric,
    method_order,
    metric_sort_key,
    pair_by_seed,
)
from gapt_bench.results.store import measurement_version

UNKNOWN_MACHINE = "unknown"


def machine_classes(records: Sequence[dict]) -> list[str]:
    """The distinct `env.machine_class` values of the records ("unknown" for records without one)."""
    return sorted({str((r.get("env") or {}).get("machine_class") or UNKNOWN_MACHINE) for r in records})


def machine_notes(a: Sequence[dict], b: Sequence[dict], names: tuple[str, str]) -> tuple[dict, list[str]]:
    """({name: [classes]}, notes): a note naming both sides' machines when they differ."""
    ma, mb = machine_classes(a), machine_classes(b)
    machines = {names[0]: ma, names[1]: mb}
    if ma == mb:
        return machines, []
    return machines, [
        f"{names[0]} machine: {', '.join(ma)}; {names[1]} machine: {', '.join(mb)}: "
        f"results are compared statistically, not bit for bit"
    ]


def _status_row(g: Group, verdict: str, note: str) -> dict:
    return {
        "task": g.task,
        "method": g.method,
        "label": g.label,
        "metric": "*",
        "setup": g.setup_label,
        "config_hash": g.config_hash,
        "verdict": verdict,
        "note": note,
        "n_baseline": None,
        "n_candidate": None,
        "baseline_mean": None,
        "candidate_mean": None,
        "delta": None,
        "rel_change": None,
    }


def _why_incompatible(b: Group, c: Group) -> str:
    if b.task_version != c.task_version:
        return f"task_version {b.task_version} vs {c.task_version}"
    diff = diff_labels({"b": b.config, "c": c.config})
    return f"config differs: {diff['b']} → {diff['c']}" if diff["b"] or diff["c"] else "config_hash differs"


def _match(base: list[Group], cand: list[Group]) -> tuple[list[tuple[Group, Group]], list[dict]]:
    """Pairs (baseline group, candidate group) with the same task, method, task_version and config_hash, and
    rows for what does not match. A candidate group without a match is INCOMPATIBLE when a baseline group of the
    same task and method is left unmatched (the note diffs against it), else NEW; a baseline group left unmatched
    and not named by an INCOMPATIBLE row is MISSING."""
    pairs, rows = [], []
    for task, method in sorted({(g.task, g.method) for g in base + cand}):
        bs = [g for g in base if (g.task, g.method) == (task, method)]
        cs = [g for g in cand if (g.task, g.method) == (task, method)]
        matched_b, unmatched_c = set(), []
        for c in cs:
            b = next((b for b in bs if b.config_hash == c.config_hash and b.task_version == c.task_version), None)
            if b is None:
                unmatched_c.append(c)
                continue
            matched_b.add(id(b))
            if {measurement_version(v) for v in b.schema_versions} != {
                measurement_version(v) for v in c.schema_versions
            }:
                rows.append(
                    _status_row(
                        c,
                        "INCOMPATIBLE",
                        f"schema_version {sorted(map(str, b.schema_versions))} "
                        f"vs {sorted(map(str, c.schema_versions))}",
                    )
                )
            else:
                pairs.append((b, c))
        free_b = [b for b in bs if id(b) not in matched_b]
        named = set()
        for c in unmatched_c:
            b = _closest(free_b, c)
            if b is None:
                rows.append(_status_row(c, "NEW", "only in the candidate"))
            else:
                named.add(id(b))
                rows.append(_status_row(c, "INCOMPATIBLE", _why_incompatible(b, c)))
        rows += [_status_row(b, "MISSING", "only in the baseline") for b in free_b if id(b) not in named]
    return pairs, rows


def _closest(free_b: list[Group], c: Group) -> Group | None:
    """The unmatched baseline group to diff an unmatched candidate group against: one of the same task_version
    first (then only the config differs), else the first; None when every baseline group found its match."""
    return next((b for b in free_b if b.task_version == c.task_version), free_b[0] if free_b else None)


def _matched(
    base_records: Sequence[dict], cand_records: Sequence[dict]
) -> tuple[list[tuple[Group, Group]], list[dict]]:
    base, cand = group_records(base_records), group_records(cand_records)
    pairs, rows = _match(base, cand)
    if not pairs and not any(r["verdict"] == "INCOMPATIBLE" for r in rows):
        bt, ct = sorted({g.task for g in base}), sorted({g.task for g in cand})
        raise ReportError(
            f"nothing to compare: the baseline ({', '.join(bt) or 'no runs'}) and the candidate "
            f"({', '.join(ct) or 'no runs'}) share no task, method and config; point both at "
            f"results of the same plan"
        )
    return pairs, rows


def _metric_pairs(pairs: list[tuple[Group, Group]], include_layers: bool) -> list[tuple[Group, Group, str, str]]:
    out = []
    for b, c in pairs:
        for m in sorted(b.metrics & c.metrics, key=metric_sort_key):
            if include_layers or not is_layer_metric(m):
                out.append((b, c, m, direction_of(b.ok + c.ok, m)))
    return out


def _two_arm(b: Group, c: Group, metric: str, direction: str, alpha: float) -> dict:
    """Candidate (c) vs baseline (b) on one metric; the row layout shared by compare() and regression()."""
    cand, base, paired = pair_by_seed(c.seed_values(metric), b.seed_values(metric))
    res = stats.compare(cand, base, paired=paired, higher_is_better=direction == "max", alpha=alpha)
    return {
        "task": c.task,
        "method": c.method,
        "label": c.label,
        "metric": metric,
        "direction": direction,
        "setup": c.setup_label,
        "config_hash": c.config_hash,
        "n_baseline": res["n_b"],
        "n_candidate": res["n_a"],
        "baseline_mean": res["mean_b"],
        "candidate_mean": res["mean_a"],
        "delta": res["delta"],
        "rel_change": res["rel_delta"],
        "ci_low": res["ci_low"],
        "ci_high": res["ci_high"],
        "test": res["test"],
        "paired": paired,
        "p": res["p"],
        "p_greater": res["p_greater"],
        "p_less": res["p_less"],
        "mwu_p": res["mwu_p"],
        "mwu_p_min": res["mwu_p_min"],
        "mwu_note": res["mwu_note"],
        "degenerate": res["degenerate"],
        "note": "",
    }


def _sorted_rows(rows: list[dict], records: Sequence[dict], reference: str = "baseline") -> list[dict]:
    """Task, method (reference first, controls after their method), metric, setup: the report's reading order."""
    controls = controls_by_method(records)
    order = {
        t: {
            m: i for i, m in enumerate(method_order({r["method"] for r in rows if r["task"] == t}, reference, controls))
        }
        for t in {r["task"] for r in rows}
    }
    return sorted(
        rows,
        key=lambda r: (
            r["task"],
            order[r["task"]][r["method"]],
            r["metric"] == "*",
            metric_sort_key(r["metric"]),
            natural_key(r.get("setup") or ""),
        ),
    )


def compare(
    a_records: Sequence[dict],
    b_records: Sequence[dict],
    alpha: float = ALPHA,
    include_layers: bool = False,
    tolerance: float | None = None,
) -> dict:
    """How B differs from A (like `asv compare A B`): per matched (task, method, config, metric) a two-sided test of
    B − A, Holm over the rows, verdict better/worse/no significant difference/inconclusive for B. With a
    `tolerance` (a fraction), a change past it that is not significant is marked "~" in the note, as asv does.

    {"kind": "compare", "rows", "machines", "notes", "alpha", "tolerance"}."""
    pairs, rows = _matched(a_records, b_records)
    tested = [_two_arm(b, c, m, d, alpha) for b, c, m, d in _metric_pairs(pairs, include_layers)]
    for r, p_adj in zip(tested, stats.holm([r["p"] for r in tested])):
        r["p_holm"] = p_adj
        r["verdict"] = stats.verdict(r["delta"], p_adj, r["direction"] == "max", alpha)
        past = tolerance is not None and r["rel_change"] is not None and abs(r["rel_change"]) > tolerance
        if past and r["verdict"] == "no significant difference":
            r["note"] = f"~ past {tolerance * 100:g}%, not significant"
        r["note"] = "; ".join(x for x in (r["note"], r["degenerate"], r["mwu_note"]) if x)
    machines, notes = machine_notes(a_records, b_records, ("A", "B"))
    return clean(
        {
            "kind": "compare",
            "alpha": alpha,
            "tolerance": tolerance,
            "machines": machines,
            "notes": notes,
            "rows": _sorted_rows(tested + rows, [*a_records, *b_records]),
        }
    )


def regression(
    baseline_records: Sequence[dict],
    candidate_records: Sequence[dict],
    tolerance: float | str | dict = 0.05,
    alpha: float = ALPHA,
    min_n: int = 3,
    strict: bool = False,
    include_layers: bool = False,
) -> dict:
    """Regression check of a candidate against stored baseline results.

    Per (task, method, metric), with worse = (cand − base) · (−1 if higher is better else 1) and
    worse_rel = worse / |base mean| (any change counts as past tolerance when the base mean is 0):
    - INCOMPATIBLE (exit 2): a candidate group whose task and method match an unmatched baseline group but whose
      task_version or config_hash differ, or a matched pair whose schema_version differs. NEW: a candidate
      configuration beside ones that matched (no unmatched baseline group to stand against).
    - REGRESSION (exit 1): worse_rel > tolerance and the one-sided p (candidate worse; paired by seed when the
      seeds match, Welch otherwise), Holm-adjusted over the gate's family, is < alpha.
    - WARN: past tolerance, not significant. IMPROVED mirrors REGRESSION (its own Holm family). PASS otherwise.
    - INCONCLUSIVE: n < min_n in an arm, or no variance to test with while past tolerance (identical values with
      no change PASS). Exit 0, or 3 with strict; MISSING baseline groups count as inconclusive under strict.
    Exit code precedence: 2, then 1, then 3 (strict), else 0. `tolerance` may map metric names to tolerances
    ("default" for the rest).

    {"kind": "regression", "rows", "exit_code", "counts", "machines", "notes", "alpha", "min_n", "strict"}.
    """
    pairs, rows = _matched(baseline_records, candidate_records)
    tested = [_two_arm(b, c, m, d, alpha) for b, c, m, d in _metric_pairs(pairs, include_layers)]
    for r in tested:
        sign = -1 if r["direction"] == "max" else 1
        r["worse_rel"] = _worse_rel(r, sign)
        r["p_worse"] = r["p_less"] if sign < 0 else r["p_greater"]
        r["p_better"] = r["p_greater"] if sign < 0 else r["p_less"]
        if min(r["n_baseline"], r["n_candidate"]) < min_n:
            r["p_worse"] = r["p_better"] = None
    worse_adj = stats.holm([r["p_worse"] for r in tested])
    better_adj = stats.holm([r["p_better"] for r in tested])
    for r, pw, pb in zip(tested, worse_adj, better_adj):
        r["p_worse_holm"], r["p_better_holm"] = pw, pb
        r["tolerance"] = parse_tolerance(tolerance, r["metric"])
        r["verdict"], r["note"] = _regression_verdict(r, alpha, min_n)
    out = _sorted_rows(tested + rows, [*baseline_records, *candidate_records])
    code = regression_exit_code(out, strict)
    machines, notes = machine_notes(baseline_records, candidate_records, ("baseline", "candidate"))
    return clean(
        {
            "kind": "regression",
            "exit_code": code,
            "counts": dict(sorted(Counter(r["verdict"] for r in out).items())),
            "alpha": alpha,
            "min_n": min_n,
            "strict": strict,
            "machines": machines,
            "notes": notes,
            "rows": out,
        }
    )


def _worse_rel(r: dict, sign: int) -> float | None:
    if r["delta"] is None:
        return None
    worse = sign * r["delta"]
    if r["baseline_mean"]:
        return worse / abs(r["baseline_mean"])
    return 0.0 if worse == 0 else math.copysign(math.inf, worse)


def parse_tolerance(tolerance: float | str | dict, metric: str) -> float:
    """A fraction: 0.05, "0.05" or "5%"; a dict maps metric names (and "default") to such values."""
    if isinstance(tolerance, dict):
        return parse_tolerance(tolerance.get(metric, tolerance.get("default", 0.05)), metric)
    if isinstance(tolerance, str):
        text = tolerance.strip()
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    return float(tolerance)


def _regression_verdict(r: dict, alpha: float, min_n: int) -> tuple[str, str]:
    tol, wr = r["tolerance"], r["worse_rel"]
    if wr is None:
        return "INCONCLUSIVE", "no values"
    past = wr > tol
    change = (
        f"{'worse' if wr > 0 else 'better'} by {abs(wr) * 100:.1f}%" if wr else "no change"
    ) + f" (tolerance {tol * 100:g}%)"
    if min(r["n_baseline"], r["n_candidate"]) < min_n:
        return "INCONCLUSIVE", f"n < {min_n}; {change}"
    if r["p_worse"] is None:
        if abs(wr) <= tol:
            return "PASS", change if wr == 0 else f"{change}; not testable ({r['degenerate']})"
        return "INCONCLUSIVE", f"{r['degenerate'] or 'no test'}; {change}"
    if past:
        if r["p_worse_holm"] is not None and r["p_worse_holm"] < alpha:
            return "REGRESSION", change
        return "WARN", f"~ {change}, not significant"
    if -wr > tol and r["p_better_holm"] is not None and r["p_better_holm"] < alpha:
        return "IMPROVED", change
    return "PASS", change


def regression_exit_code(rows: list[dict], strict: bool = False) -> int:
    verdicts = {r["verdict"] for r in rows}
    if "INCOMPATIBLE" in verdicts:
        return 2
    if "REGRESSION" in verdicts:
        return 1
    if strict and verdicts & {"INCONCLUSIVE", "MISSING"}:
        return 3
    return 0
