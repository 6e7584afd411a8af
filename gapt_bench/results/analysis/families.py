"""Holm families: which tests are corrected together, defined once for every page that shows a p-value.

Decision: two families, both shown wherever a comparison belongs to both, under the same names.

- "report": the headline comparisons of one task (each metric and method against the reference), a family per
  task. It is an exploratory screen over everything the task measured, so it is corrected as a whole; it stops
  at the task because a task's verdicts must not change when another task's runs share the results folder (one
  family over the quick suite's five tasks held 150 tests, at which 3 seeds could never reach significance).
  Per-layer metrics form their own family per task, "per-layer": dozens of diagnostic tests would otherwise swamp
  the headline ones.
- "claims": the comparisons that test the papers' claims and their controls (`paper.claim_members`). These
  hypotheses were fixed before any run (confirmatory), so they are corrected only among themselves.

A single family would either dilute the claims with the exploratory screen (a claim with p = 0.002 would need
p < 0.05/40) or under-correct the screen. So each comparison carries `p_holm_report` and, when it tests a claim,
`p_holm_claims`; `gapt-bench report` and `gapt-bench paper` both print both columns, named "p (Holm) report" and
"p (Holm) claims" (P_REPORT, P_CLAIMS), and each page says which one its verdict uses: the report's verdicts use
the report family, the paper's verdicts the claims family. A comparison that reads "no significant difference" in
the report and "replicates" in the paper then shows why on both pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gapt_bench.results import stats
from gapt_bench.results.analysis.groups import is_layer_metric
from gapt_bench.results.analysis.paper import PAPER_CLAIMS, claim_members

REPORT = "report"
PER_LAYER = "per-layer"
CLAIMS = "claims"
P_REPORT, P_CLAIMS = "p (Holm) report", "p (Holm) claims"  # the columns' names on every page
DEFINITIONS = {
    REPORT: "every headline comparison of one task (its metrics and methods vs the reference), a family per task",
    PER_LAYER: "every per-layer comparison of one task, a family per task",
    CLAIMS: "the comparisons testing the papers' claims and their controls (the rows of `gapt-bench paper`)",
}


def apply_families(
    comparisons: list[dict], reference: str, controls: Mapping[str, Sequence[str]], alpha: float
) -> dict[str, dict]:
    """Adds p_holm_report (alias p_holm), holm_family, holm_family_size (its task's family), the report verdict,
    and for claim members p_holm_claims and claims_family_size, to each comparison in place.
    Returns {family: {size (all tasks together), per_task: {task: size} (report families), definition}}."""
    out: dict[str, dict] = {}
    for family in (REPORT, PER_LAYER):
        per_task: dict[str, int] = {}
        for task in sorted({c["task"] for c in comparisons}):
            members = [
                c for c in comparisons if c["task"] == task and (family == PER_LAYER) == is_layer_metric(c["metric"])
            ]
            tested = per_task[task] = sum(c["p"] is not None for c in members)
            for c, p_adj in zip(members, stats.holm([c["p"] for c in members])):
                c["p_holm_report"] = c["p_holm"] = p_adj
                c["holm_family"], c["holm_family_size"] = family, tested
                c["verdict"] = stats.verdict(c["delta"], p_adj, c["direction"] == "max", alpha)
        out[family] = {"size": sum(per_task.values()), "per_task": per_task, "definition": DEFINITIONS[family]}
    members = claims_family(comparisons, reference, controls)
    tested = sum(c["p"] is not None for c in members)
    for c in comparisons:
        c["p_holm_claims"], c["claims_family_size"] = None, None
    for c, p_adj in zip(members, stats.holm([c["p"] for c in members])):
        c["p_holm_claims"], c["claims_family_size"] = p_adj, tested
    out[CLAIMS] = {"size": tested, "definition": DEFINITIONS[CLAIMS]}
    return out


def claims_family(comparisons: Sequence[dict], reference: str, controls: Mapping[str, Sequence[str]]) -> list[dict]:
    """The comparisons of the claims family, each once, in claim order."""
    out: list[dict] = []
    for claim in PAPER_CLAIMS:
        if claim.kind != "relative":
            continue
        for _, c in claim_members(claim, comparisons, reference, controls):
            if not any(c is o for o in out):
                out.append(c)
    return out
