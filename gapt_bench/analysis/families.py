"""Holm families: which tests are corrected together, defined once for every page that shows a p-value.

Decision: two families, both shown wherever a comparison belongs to both, under the same names.

- "report": every headline comparison of the report (each task, metric and method against the reference). It is
  an exploratory screen over everything measured (some 40 tests at the quick suite), so it is corrected as a
  whole. Per-layer metrics form their own family, "per-layer": dozens of diagnostic tests would otherwise swamp
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

from typing import Mapping, Sequence

from gapt_bench import stats
from gapt_bench.analysis.groups import is_layer_metric
from gapt_bench.analysis.paper import PAPER_CLAIMS, claim_members

REPORT = "report"
PER_LAYER = "per-layer"
CLAIMS = "claims"
P_REPORT, P_CLAIMS = "p (Holm) report", "p (Holm) claims"  # the columns' names on every page
DEFINITIONS = {
    REPORT: "every headline comparison of the report (all tasks, metrics and methods vs the reference)",
    PER_LAYER: "every per-layer comparison of the report",
    CLAIMS: "the comparisons testing the papers' claims and their controls (the rows of `gapt-bench paper`)",
}


def apply_families(comparisons: list[dict], reference: str, controls: Mapping[str, Sequence[str]],
                   alpha: float) -> dict[str, dict]:
    """Adds p_holm_report (alias p_holm), holm_family, holm_family_size, the report verdict, and for claim
    members p_holm_claims and claims_family_size, to each comparison in place. Returns {family: {size, definition}}."""
    sizes = {}
    for family in (REPORT, PER_LAYER):
        members = [c for c in comparisons if (family == PER_LAYER) == is_layer_metric(c["metric"])]
        tested = sum(c["p"] is not None for c in members)
        sizes[family] = tested
        for c, p_adj in zip(members, stats.holm([c["p"] for c in members])):
            c["p_holm_report"] = c["p_holm"] = p_adj
            c["holm_family"], c["holm_family_size"] = family, tested
            c["verdict"] = stats.verdict(c["delta"], p_adj, c["direction"] == "max", alpha)
    members = claims_family(comparisons, reference, controls)
    tested = sum(c["p"] is not None for c in members)
    sizes[CLAIMS] = tested
    for c in comparisons:
        c["p_holm_claims"], c["claims_family_size"] = None, None
    for c, p_adj in zip(members, stats.holm([c["p"] for c in members])):
        c["p_holm_claims"], c["claims_family_size"] = p_adj, tested
    return {f: {"size": n, "definition": DEFINITIONS[f]} for f, n in sizes.items()}


def claims_family(comparisons: Sequence[dict], reference: str,
                  controls: Mapping[str, Sequence[str]]) -> list[dict]:
    """The comparisons of the claims family, each once, in claim order."""
    out: list[dict] = []
    for claim in PAPER_CLAIMS:
        if claim.kind != "relative":
            continue
        for _, c in claim_members(claim, comparisons, reference, controls):
            if not any(c is o for o in out):
                out.append(c)
    return out
