"""The seed papers' published figures and claims, and which comparisons test them (one home for the numbers).

GAPT (Yu 2025): relative effects of gapt against the baseline. Capacity (Morris et al. 2025): alpha in bits per
parameter, in the paper's convention, which scales the strict memorized bits by S/(S-1) (the first token of a
sequence counted as predicted; capacity-paper.md section 1). Compare the paper's alpha with `*_paper_conv` values.
Text memorization (Morris et al. 2025 sections 3, 3.5): where the test-loss peak sits against the data-to-capacity
ratio, the membership-inference law's error, and the training-minus-test extraction rate at the largest N; each an
absolute figure from `analysis.memorization`, held to a band (DD_FACTOR, MI_LAW_BAND, EXTRACTION_BAND).

A claim's *members* are the comparisons that test it (one per setup, e.g. both batch layouts) and its controls,
listed right under it: the centred MBE for an MBE claim, and every control the claim's method declares. The same
member list defines the paper table's rows and the "claims" Holm family (`families.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gapt_bench.measures.memorization import (
    PAPER_ALPHA_SLOPE,  # 3.64, bf16 regression slope, paper convention
)
from gapt_bench.results.analysis.groups import CENTERED_SUFFIX

CAPACITY_TASK = "synthetic_capacity"
MEMORIZATION_TASK = "text_memorization"

PAPER_ALPHA_SLOPE_PRECISION = "bf16"  # the paper quotes no fp32 slope
PAPER_ALPHA_MEAN = {"bf16": 3.51, "fp32": 3.83}  # means of per-model ratios, paper convention
# Table 1 of the paper (V=2048, S=64): n_params -> (L, d, alpha fp32, alpha bf16), paper convention
PAPER_ROWS = {
    80_352: (1, 32, 4.23, 3.93),
    468_864: (1, 128, 3.65, 3.61),
    667_136: (2, 128, 3.99, 3.89),
    3_700_224: (4, 256, 3.68, 3.51),
    6_859_264: (8, 256, 3.96, 3.65),
}
# The paper's own spread of per-model capacity ratios (± 0.1 bits/param): the band an absolute claim is held to.
CAPACITY_BAND = 0.1
# Text memorization (sections 3 and 3.5): the bands its absolute claims are held to.
MI_LAW_BAND = 0.015  # the membership law's validation error: within 1.5 F1 points (section 3.5)
EXTRACTION_BAND = 0.01  # training minus test extraction rate that counts as converged (one percentage point)
LOW_DUTY = 0.05  # a phase-switching run compressing for less than this share of training barely tests its gate
DD_FACTOR = 2.0  # a double-descent peak "near ratio 1" lies within [1/2, 2]


def paper_alpha_slope(precision: str) -> float | None:
    """The paper's slope for this precision (it gives one for bf16 only)."""
    return PAPER_ALPHA_SLOPE if precision == PAPER_ALPHA_SLOPE_PRECISION else None


def paper_row_alpha(n_params: int | None, precision: str) -> float | None:
    """Table 1's alpha for a model of exactly this parameter count, in this precision (None if not in the table)."""
    row = PAPER_ROWS.get(n_params) if n_params is not None else None
    if row is None:
        return None
    return row[2] if precision == "fp32" else row[3]


@dataclass(frozen=True)
class Claim:
    task: str
    metric: str
    claimed: float  # relative change (-0.048 = -4.8%) or, for kind "absolute", the value itself
    text: str
    kind: str = "relative"  # relative | absolute
    method: str = "gapt"
    precision: str | None = None  # absolute capacity claims are per precision
    # Equivalence margin, declared here before any run: "no effect" means the 90% interval of the relative change
    # lies within +-margin * |claimed| (two one-sided tests at alpha 0.05). Half the claimed effect by default.
    margin: float = 0.5
    short: str = ""  # a few words, for one-line summaries


PAPER_CLAIMS: tuple[Claim, ...] = (
    Claim("fineweb_lm", "val_ce", -0.048, "GAPT: FineWeb validation CE −4.8%", short="GAPT: FineWeb CE −4.8%"),
    Claim("fineweb_lm", "val_mbe", -0.50, "GAPT: FineWeb MBE −50%", short="GAPT: FineWeb MBE −50%"),
    Claim(
        "arithmetic_ood",
        "ood_answer_ce",
        -0.35,
        "GAPT: arithmetic OOD +35% (read as OOD answer CE −35%)",
        short="GAPT: arithmetic OOD +35%",
    ),
    Claim(
        "forgetting_separation",
        "separation",
        0.97,
        "GAPT: representation separation +97%",
        short="GAPT: separation +97%",
    ),
    Claim(
        CAPACITY_TASK,
        "bits_per_param",
        3.51,
        "capacity 3.51 bits/param (bf16)",
        "absolute",
        "baseline",
        "bf16",
        short="capacity 3.51 bits/param (bf16)",
    ),
    Claim(
        CAPACITY_TASK,
        "bits_per_param",
        3.83,
        "capacity 3.83 bits/param (fp32)",
        "absolute",
        "baseline",
        "fp32",
        short="capacity 3.83 bits/param (fp32)",
    ),
    # text memorization (`claims._memorization_rows` reads `analysis.memorization`): one row per precision measured
    Claim(
        MEMORIZATION_TASK,
        "double_descent_peak_ratio",
        1.0,
        "text: test-loss double descent peaks at data/capacity ratio ≈ 1",
        "absolute",
        "baseline",
        short="text: double descent at ratio ≈ 1",
    ),
    Claim(
        MEMORIZATION_TASK,
        "mi_law_rms",
        0.0,
        "text: membership-inference F1 follows the law (corrected form): RMS error ≤ 0.015",
        "absolute",
        "baseline",
        short="text: membership law, RMS ≤ 0.015",
    ),
    Claim(
        MEMORIZATION_TASK,
        "extraction_gap",
        0.0,
        "text: training extraction converges to the test rate at large N (train − test → 0)",
        "absolute",
        "baseline",
        short="text: extraction → test rate",
    ),
)


def claim_controls(claim: Claim, controls: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str]]:
    """(metric, method, role) of the control rows under a relative claim."""
    out = []
    if "mbe" in claim.metric and not claim.metric.endswith(CENTERED_SUFFIX):
        out.append((claim.metric + CENTERED_SUFFIX, claim.method, "control: centred MBE"))
    out += [(claim.metric, c, f"control: {c}") for c in controls.get(claim.method, ())]
    return out


def claim_members(
    claim: Claim, comparisons: Sequence[dict], reference: str, controls: Mapping[str, Sequence[str]]
) -> list[tuple[str, dict]]:
    """(role, comparison) of every comparison that tests a relative claim: the claim rows, then its controls."""

    def find(metric: str, method: str) -> list[dict]:
        return [
            c
            for c in comparisons
            if c["task"] == claim.task
            and c["metric"] == metric
            and c["method"] == method
            and c["reference"] == reference
        ]

    out = [("claim", c) for c in find(claim.metric, claim.method)]
    for metric, method, role in claim_controls(claim, controls):
        out += [(role, c) for c in find(metric, method)]
    return out
