"""Realised duty cycles of a phase-switching method and its schedule control, side by side.

A control such as `periodic` is only a fair control of `gapt` if it spends about the same share of optimizer steps
in the compression phase: otherwise a difference between them measures the dose, not the gate's decisions.
Records of phase-switching methods carry `summary.duty_compress` (fraction of micro-batches in compression: of
optimizer steps when a step is one micro-batch), `summary.mean_phase_memorize` / `mean_phase_compress` (mean phase
lengths in micro-batches), and a matched control carries
`summary.matched_to` (the run_id whose schedule it copied). Older gapt records only have the gate's step counts
(`gate_steps_compress`, `gate_steps_memorize`: gate updates, in the gate's patience unit), from which the duty
cycle follows.

A pair is flagged as a mismatch when the two arms' mean duty cycles (over seeds) differ by more than
DUTY_TOLERANCE (absolute). Controls without a duty cycle (e.g. `mbe`, always on) are not schedule controls and
get no pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gapt_bench.results.analysis.common import mean_of
from gapt_bench.results.analysis.groups import Group, same_setup

DUTY_TOLERANCE = 0.05


def run_duty(record: dict) -> float | None:
    """The fraction of a run's training (micro-batches) spent in the compression phase, if the record says."""
    s = record.get("summary") or {}
    d = s.get("duty_compress")
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        return float(d)
    c, m = s.get("gate_steps_compress"), s.get("gate_steps_memorize")
    if isinstance(c, (int, float)) and isinstance(m, (int, float)) and c + m > 0:
        return float(c) / float(c + m)
    return None


def group_duty(g: Group) -> float | None:
    return mean_of(run_duty(r) for r in g.ok)


def _arm(g: Group | None, prefix: str) -> dict:
    return {
        f"{prefix}_duty": group_duty(g) if g else None,
        f"{prefix}_phase_memorize": g.summary_mean("mean_phase_memorize") if g else None,
        f"{prefix}_phase_compress": g.summary_mean("mean_phase_compress") if g else None,
    }


def _effect_for(control: Group, effects: list[Group]) -> tuple[Group | None, int]:
    """The effect group a control group copied its schedule from (by `matched_to`), else the only or largest
    candidate; and how many of the control's runs name a run of it."""

    def matched(e: Group) -> int:
        ids = {r.get("run_id") for r in e.ok}
        return sum((r.get("summary") or {}).get("matched_to") in ids for r in control.ok)

    if not effects:
        return None, 0
    best = max(effects, key=lambda e: (matched(e), len(e.ok)))
    return best, matched(best)


def control_pairs(groups: Sequence[Group], controls: Mapping[str, Sequence[str]]) -> list[dict]:
    """One pair per (effect group, schedule-control group) in the same setup: both arms' duty cycles (means over
    seeds), mean phase lengths, the difference (control - method) and whether it exceeds DUTY_TOLERANCE."""
    pairs = []
    for method, ctrls in controls.items():
        effects = [g for g in groups if g.method == method and g.ok]
        for ctrl in ctrls:
            for c in (g for g in groups if g.method == ctrl and g.ok):
                if group_duty(c) is None:
                    continue  # not a schedule control
                e, n_matched = _effect_for(c, [g for g in effects if same_setup(g, c)])
                if e is None:
                    continue
                row = {
                    "task": c.task,
                    "setup": c.setup_label,
                    "method": e.label,
                    "control": c.label,
                    "method_config_hash": e.config_hash,
                    "control_config_hash": c.config_hash,
                    **_arm(e, "method"),
                    **_arm(c, "control"),
                    "n_matched": n_matched,
                    "n_control": len(c.ok),
                }
                md, cd = row["method_duty"], row["control_duty"]
                row["difference"] = None if md is None else cd - md
                row["mismatch"] = None if md is None else abs(cd - md) > DUTY_TOLERANCE
                pairs.append(row)
    return pairs


def duty_text(pair: dict) -> str:
    """'duty gapt 0.42 / periodic 0.40', or a flagged mismatch; for notes beside a comparison."""

    def f(x: float | None) -> str:
        return "?" if x is None else f"{x:.2f}"

    body = f"{pair['method']} {f(pair['method_duty'])} / {pair['control']} {f(pair['control_duty'])}"
    if pair.get("mismatch"):
        return f"⚠ duty mismatch: {body} (|Δ| {abs(pair['difference']):.2f} > {DUTY_TOLERANCE:g})"
    if pair.get("mismatch") is None:
        return f"duty {body} (method's duty unknown)"
    return f"duty {body}"
