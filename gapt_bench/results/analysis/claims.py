"""The seed papers' claims side by side with the measurements: the numbers behind `gapt-bench paper`.

Relative claims (GAPT) read the report's method-vs-reference comparison: measured = Δ / |reference mean|, its CI
the relative CI of `stats.compare` (a log ratio of means for positive metrics, named per row). Each claim row is
followed by its controls (`paper.claim_members`). Verdicts use the "claims" Holm family; the report family's p is
shown beside it (`families.py`). Beside each row: the MDE at the run's n, and the seeds needed to detect the
*claimed* effect (claimed relative change times the reference mean) given the observed sd of the per-seed
differences. Capacity claims are absolute, in the paper's convention (`capacity.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gapt_bench.results import stats
from gapt_bench.results.analysis.capacity import DATA_BOUND, analyse_capacity
from gapt_bench.results.analysis.common import ALPHA, clean, mean_of, unique
from gapt_bench.results.analysis.comparisons import build_report
from gapt_bench.results.analysis.duty import duty_text
from gapt_bench.results.analysis.paper import (
    CAPACITY_BAND,
    DD_FACTOR,
    LOW_DUTY,
    MEMORIZATION_TASK,
    MI_LAW_BAND,
    PAPER_CLAIMS,
    Claim,
    claim_members,
)
from gapt_bench.results.analysis.text_memorization import (
    analyse_memorization,
    extraction_convergence,
)

RELATIVE_VERDICTS = ("replicates", "smaller effect", "no effect", "smaller or none", "opposite effect", "inconclusive")


def claim_verdict(
    claimed: float,
    rel: float | None,
    lo: float | None,
    hi: float | None,
    p_holm: float | None,
    alpha: float = ALPHA,
    lo90: float | None = None,
    hi90: float | None = None,
    margin: float = 0.5,
) -> tuple[str, str]:
    """Verdict and a short reason for a relative claim, from the measured relative change, its 95% CI (lo, hi),
    its 90% CI (lo90, hi90: the two one-sided tests of equivalence) and the claim's equivalence margin (a fraction
    of the claimed effect, declared before the runs in `paper.Claim`).

    - "replicates": significant after Holm, same sign as the claim, the CI reaches the claimed magnitude
      (contains it or lies beyond it) and excludes no effect.
    - "opposite effect": significant, with the opposite sign.
    - "smaller effect": significant, same sign, the CI excludes 0 but stops short of the claimed magnitude: real,
      smaller (also when it lies within the equivalence margin: a significant effect is not "no effect").
    - "no effect": the 90% CI lies within +-margin * |claimed| (equivalence by two one-sided tests at alpha 0.05;
      a margin set before the runs, not the MDE of an underpowered run), so the claimed effect is ruled out.
    - "smaller or none": not significant, and the CI stops short of the claim: the claimed size is ruled out, but
      the run shows neither a smaller effect nor equivalence.
    - "inconclusive": otherwise (no test possible, or a CI wide enough to hold both 0 and the claim).

    Only the interval's ends are used, never its midpoint, so the rule holds for asymmetric intervals: "reaches"
    asks whether the claimed value lies inside or beyond the interval on the claim's side. "replicates" also needs
    the relative CI to exclude 0, as the t-test and a relative interval can disagree when the latter carries the
    reference mean's noise.
    """
    if rel is None or lo is None or hi is None or p_holm is None:
        return "inconclusive", "no test possible (n < 2, zero variance or no relative CI)"
    significant, same_sign = p_holm < alpha, (rel > 0) == (claimed > 0)
    reaches = lo <= claimed if claimed < 0 else hi >= claimed
    bound = margin * abs(claimed)
    equivalent = lo90 is not None and hi90 is not None and -bound < lo90 and hi90 < bound
    if significant and not same_sign:
        return "opposite effect", "significant effect in the opposite direction"
    holds_zero = lo <= 0 <= hi
    if reaches and significant and not holds_zero:
        return "replicates", "significant, CI reaches the claim"
    if not reaches and significant and not holds_zero:  # real and smaller, even where also within the margin
        return "smaller effect", "significant, but the CI stops short of the claimed effect"
    if equivalent:
        return "no effect", f"90% CI within ±{bound:.3g} ({margin:g} × the claim): equivalent to no effect"
    if not reaches:
        if significant:
            return "smaller effect", "significant, but the CI stops short of the claimed effect"
        return "smaller or none", "the CI excludes the claimed effect; no smaller effect or equivalence shown"
    if significant:
        return "inconclusive", "test significant, but the relative CI holds no effect (the ratio is poorly pinned)"
    if holds_zero:
        return "inconclusive", "CI holds both no effect and the claim"
    return "inconclusive", "CI reaches the claim, but not significant after Holm"


def absolute_verdict(
    claimed: float, mean: float | None, lo: float | None, hi: float | None, band: float = CAPACITY_BAND
) -> tuple[str, str]:
    """For capacity: "replicates" if the mean lies within claim ± band; "below the claim" / "above the claim" if
    the whole CI lies below / above the band; "inconclusive" otherwise (one value only, or a CI reaching into the
    band from outside)."""
    if mean is None or lo is None or hi is None:
        return "inconclusive", "fewer than 2 values"
    if hi < claimed - band:
        return "below the claim", f"CI below {claimed:g} ± {band:g}"
    if lo > claimed + band:
        return "above the claim", f"CI above {claimed:g} ± {band:g}"
    if abs(mean - claimed) <= band:
        return "replicates", f"mean within {claimed:g} ± {band:g}"
    return "inconclusive", f"mean outside {claimed:g} ± {band:g}, CI reaches it"


def _about_text(about: dict | None, variant_label: str = "gate variant") -> str:
    if not about:
        return ""
    parts = []
    if about.get("variants"):
        parts.append(f"{variant_label}: {', '.join(about['variants'])}")
    if about.get("deviations"):
        parts.append(f"deviations: {'; '.join(about['deviations'])}")
    return "; ".join(parts)


def _note(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _rel_row(claim: Claim, c: dict, role: str, alpha: float) -> dict:
    claimed_abs = abs(claim.claimed * c["mean_b"]) if c.get("mean_b") is not None else None
    row = {
        "claim": claim.text,
        "claim_short": claim.short or claim.text,
        "task": claim.task,
        "metric": c["metric"],
        "method": c["label"],
        "reference": c["reference"],
        "role": role,
        "setup": c.get("setup") or "",
        "kind": "relative",
        "claimed": claim.claimed if role == "claim" else None,
        "claim_effect": claim.claimed,
        "measured": c["rel_delta"],
        "ci_low": c.get("rel_ci_low"),
        "ci_high": c.get("rel_ci_high"),
        "ci_method": c.get("rel_ci_method"),
        "n": c["n"],
        "test": c["test"],
        "paired": c["paired"],
        "p": c["p"],
        "p_holm_claims": c.get("p_holm_claims"),
        "p_holm_report": c.get("p_holm_report"),
        "report_family": c.get("holm_family"),
        "preset": c.get("preset"),
        "n_params": c.get("n_params"),
        "direction": c["direction"],
        "delta": c["delta"],
        "mean_reference": c.get("mean_b"),
        "mde": c.get("mde"),
        "mde_rel": c.get("mde_rel"),
        "sd_delta": c.get("sd_delta"),
        "claimed_delta_abs": claimed_abs,
        "seeds_needed_claim": stats.seeds_needed(
            claimed_abs, c.get("sd_delta"), alpha=alpha, power=stats.POWER, paired=c["paired"]
        ),
        "power_note": c.get("power_note"),
        "duty_pairs": [] if role == "claim" else (c.get("duty_pairs") or []),
        "preset_about": c.get("preset_about"),
    }
    row["p_holm"] = row["p_holm_claims"]
    row["duty_compress"], row["phase_switches"] = c.get("duty_compress"), c.get("phase_switches")
    row["margin"] = claim.margin
    if role == "claim":
        row["verdict"], reason = claim_verdict(
            claim.claimed,
            row["measured"],
            row["ci_low"],
            row["ci_high"],
            row["p_holm"],
            alpha,
            c.get("rel_ci90_low"),
            c.get("rel_ci90_high"),
            claim.margin,
        )
    else:
        row["verdict"], reason = stats.verdict(row["delta"], row["p_holm"], row["direction"] == "max", alpha), ""
    row["corpus"] = c.get("corpus")
    row["note"] = _note(
        reason,
        f"corpus: {row['corpus']}" if row["corpus"] and role == "claim" else "",
        _schedule_text(row),
        *(duty_text(p) for p in row["duty_pairs"]),
        _about_text(row["preset_about"]),
    )
    return row


def _schedule_text(row: dict) -> str:
    """The realised schedule of a phase-switching arm; flagged when it compressed under LOW_DUTY of its training
    (then a verdict is one on the gate as configured, which barely compresses, not on compression)."""
    duty, switches = row.get("duty_compress"), row.get("phase_switches")
    if duty is None:
        return ""
    text = f"{row['method']} compressed {duty:.1%} of micro-batches" + (
        f", {switches:.0f} phase switches" if switches is not None else ""
    )
    if duty < LOW_DUTY:
        return f"⚠ {text} (under {LOW_DUTY:.0%}: a verdict on the gate as configured, which barely compresses)"
    return text


def _versus_control(claim_c: dict, control_c: dict, groups: Sequence[dict], alpha: float) -> str:
    """Does the control explain the claimed effect? The claim's method against the control, paired by seed
    (`report["groups"]` holds each group's per-seed values): if the method does no better than the control while
    the control itself moves the metric the same way, the control explains the effect."""

    def values(c: dict, config_hash: str) -> dict:
        g = next(
            (
                g
                for g in groups
                if g["task"] == c["task"] and g["metric"] == c["metric"] and g["config_hash"] == config_hash
            ),
            None,
        )
        return dict(zip(g["seeds"], g["values"])) if g and g.get("seeds") else {}

    m = values(claim_c, claim_c["config_hash"])
    k = values(control_c, control_c["config_hash"])
    seeds = sorted(set(m) & set(k))
    if len(seeds) < 2 or claim_c["metric"] != control_c["metric"]:
        return ""
    res = stats.compare(
        [m[s] for s in seeds], [k[s] for s in seeds], paired=True, higher_is_better=claim_c["direction"] == "max"
    )
    if res["p"] is None or res["rel_delta"] is None:
        return ""
    vs = f"{claim_c['label']} vs {control_c['label']}: {res['rel_delta']:+.1%}, p = {res['p']:.2g} (n={len(seeds)})"
    better = (res["delta"] > 0) == (claim_c["direction"] == "max")
    control_moves = control_c.get("p") is not None and control_c["p"] < alpha
    same_way = control_c.get("delta") is not None and (control_c["delta"] > 0) == (claim_c.get("delta", 0) > 0)
    if res["p"] < alpha and better:
        return f"{vs}: the method beats its control, which does not explain the effect"
    if res["p"] >= alpha and control_moves and same_way:
        return f"{vs}: the control explains the effect (no difference from the method)"
    return f"{vs}: cannot tell whether the control explains the effect"


def _no_runs_row(claim: Claim, reference: str) -> dict:
    return {
        "claim": claim.text,
        "claim_short": claim.short or claim.text,
        "task": claim.task,
        "metric": claim.metric,
        "method": claim.method,
        "reference": reference,
        "role": "claim",
        "setup": claim.precision or "",
        "kind": claim.kind,
        "claimed": claim.claimed,
        "measured": None,
        "ci_low": None,
        "ci_high": None,
        "n": 0,
        "test": None,
        "p": None,
        "p_holm": None,
        "p_holm_claims": None,
        "p_holm_report": None,
        "preset": None,
        "n_params": None,
        "mde": None,
        "seeds_needed_claim": None,
        "verdict": "no runs",
        "note": "",
    }


def _relative_rows(claim: Claim, report: dict, reference: str, alpha: float) -> list[dict]:
    members = claim_members(claim, report["comparisons"], reference, report.get("controls") or {})
    rows = [_rel_row(claim, c, role, alpha) for role, c in members]
    claim_cs = [c for role, c in members if role == "claim"]
    for row, (role, c) in zip(rows, members):
        if role == "claim" or c["method"] == claim.method:  # the centred-MBE control is the same arm
            continue
        match = next((m for m in claim_cs if m.get("setup_hash") == c.get("setup_hash")), None)
        if match is not None:
            row["versus_control"] = _versus_control(match, c, report.get("groups") or [], alpha)
            row["note"] = _note(row["versus_control"], row["note"])
    if not any(role == "claim" for role, _ in members):
        rows.insert(0, _no_runs_row(claim, reference))
    return rows


def _capacity_row(claim: Claim, capacity: dict | None, alpha: float) -> dict:
    """The capacity claim (mean of per-model ratios, as the paper's 3.51/3.83) from `analyse_capacity`, in the
    paper's convention (×S/(S-1)) when the runs carry it, else strict (and labelled so). Runs that failed the
    held-out sanity check are already excluded there; the CI is over seeds."""
    precision = claim.precision or "fp32"
    group = next(
        (
            g
            for g in (capacity or {}).get("groups", [])
            if g["method"] == claim.method and g["precision"] == precision and g["alpha_mean"]["n"]
        ),
        None,
    )
    if group is None:
        return _no_runs_row(claim, claim.method)
    paper_conv = bool(group["alpha_mean_paper_conv"]["n"])
    alpha_d = group["alpha_mean_paper_conv"] if paper_conv else group["alpha_mean"]
    strict = group["alpha_mean"]
    verdict, reason = absolute_verdict(claim.claimed, alpha_d["mean"], alpha_d["ci_low"], alpha_d["ci_high"])
    budget, data_bound = group["n_capacity_runs_budget"], group.get("n_capacity_runs_data_bound", 0)
    if verdict == "below the claim" and (budget or data_bound):
        verdict, reason = (
            "inconclusive",
            (
                f"a lower bound below the claim ({reason}): a run stopped on its step "
                f"budget or memorized ≥{DATA_BOUND:.0%} of its dataset cannot show "
                f"what the model would store with more steps or data"
            ),
        )
    models = group["models"]
    conv = "paper convention (×S/(S−1))" if paper_conv else "strict convention (runs lack mem_bits_paper_conv)"
    sd = alpha_d.get("std")
    return {
        "claim": claim.text,
        "claim_short": claim.short or claim.text,
        "task": claim.task,
        "metric": claim.metric,
        "method": claim.method,
        "reference": None,
        "role": "claim",
        "setup": precision,
        "kind": "absolute",
        "claimed": claim.claimed,
        "measured": alpha_d["mean"],
        "ci_low": alpha_d["ci_low"],
        "ci_high": alpha_d["ci_high"],
        "convention": "paper" if paper_conv else "strict",
        "measured_strict": strict["mean"],
        "ci_strict": [strict["ci_low"], strict["ci_high"]],
        "n": alpha_d["n"],
        "test": None,
        "p": None,
        "p_holm": None,
        "p_holm_claims": None,
        "p_holm_report": None,
        "preset": ",".join(group["presets"]),
        "n_params": mean_of(m.get("n_params") for m in models),
        "mde": stats.mde(sd, alpha_d["n"], alpha=alpha, power=stats.POWER, paired=True),
        "seeds_needed_claim": None,
        "verdict": verdict,
        "n_capacity_runs_budget": budget,
        "n_capacity_runs_data_bound": data_bound,
        "n_capacity_runs": group["n_capacity_runs"],
        "note": _note(
            reason,
            f"measured in the {conv}; strict {_num(strict['mean'])}",
            f"mean of per-model ratios over {len(models)} models, CI over seeds",
            f"{budget} of {group['n_capacity_runs']} capacity runs stopped on the step budget (a lower bound)"
            if budget
            else "",
            f"{data_bound} of {group['n_capacity_runs']} memorized ≥{DATA_BOUND:.0%} of their dataset (a lower bound)"
            if data_bound
            else "",
            _about_text(group.get("preset_about"), "variant"),
        ),
        "models": models,
        "preset_about": group.get("preset_about"),
    }


def _memorization_rows(claim: Claim, mem: dict | None) -> list[dict]:
    """The text-memorization claims from `analyse_memorization`, one row per precision of the claim's method
    (baseline): what was measured, its 95% t-interval over seeds, the scale, and a verdict against a band."""
    groups = [g for g in (mem or {}).get("groups", []) if g["method"] == claim.method and g["models"]]
    if not groups:
        return [_no_runs_row(claim, claim.method)]
    build = {"double_descent_peak_ratio": _dd_row, "mi_law_rms": _mi_law_row, "extraction_gap": _extraction_row}
    rows = []
    for g in groups:
        models = g["models"]
        base = {
            "claim": claim.text,
            "claim_short": claim.short or claim.text,
            "task": claim.task,
            "metric": claim.metric,
            "method": claim.method,
            "reference": None,
            "role": "claim",
            "setup": g["precision"],
            "kind": "absolute",
            "claimed": claim.claimed,
            "test": None,
            "p": None,
            "p_holm": None,
            "p_holm_claims": None,
            "p_holm_report": None,
            "preset": ",".join(g["presets"]),
            "n_params": mean_of(m.get("n_params") for m in models),
            "mde": None,
            "seeds_needed_claim": None,
            "models": [m["label"] for m in models],
            "preset_about": g.get("preset_about"),
        }
        measured, lo, hi, n, verdict, note = build[claim.metric](g)
        about = _about_text(g.get("preset_about"), "variant")
        rows.append(
            {
                **base,
                "measured": measured,
                "ci_low": lo,
                "ci_high": hi,
                "n": n,
                "verdict": verdict,
                "note": _note(note, f"models {', '.join(m['label'] for m in models)}", about),
            }
        )
    return rows


def _dd_row(g: dict) -> tuple:
    """Test-loss peak against the realised data/capacity ratio: the per-model peak of the mean curve (geometric
    mean over models); CI over seeds of each seed's peak (geometric mean over models, t-interval of log2).
    "does not" needs a model that fills its capacity (`_unfilled`); else the row reads "inconclusive", as a
    capacity lower bound below its claim does."""
    dds = [m["double_descent"] for m in g["models"]]
    peaks = [d["peak_ratio"] for d in dds if d.get("peak_ratio")]
    measured = 2 ** (sum(math.log2(p) for p in peaks) / len(peaks)) if peaks else None
    per_seed: dict = {}
    for dd in dds:
        for s in dd.get("per_seed") or []:
            if s.get("peak_ratio"):
                per_seed.setdefault(str(s["seed"]), []).append(math.log2(s["peak_ratio"]))
    d = stats.describe(sum(v) / len(v) for v in per_seed.values())
    lo, hi = (2 ** d["ci_low"], 2 ** d["ci_high"]) if d["ci_low"] is not None else (None, None)
    ranges = [d["ratio_range"] for d in dds if d.get("ratio_range")]
    straddles = bool(ranges) and all(r[0] <= 1.0 <= r[1] for r in ranges)
    located = [d for d in dds if d.get("located")]
    per_model = "; ".join(f"{m['label']}: {m['double_descent'].get('statement', '')}" for m in g["models"])
    if not straddles:
        verdict, reason = "inconclusive", "the measured ratios do not straddle 1"
    elif not located:
        verdict, reason = (
            "does not",
            (
                "no interior test-loss peak in a ratio range that straddles 1 (test loss "
                "is highest at an end of the range)"
            ),
        )
    elif len(located) == len(dds) and all(d["within_factor"] for d in dds):
        verdict, reason = "replicates", f"every model's peak is bracketed and within a factor {DD_FACTOR:g} of 1"
    elif all(not d["within_factor"] for d in located) and hi is not None and (hi < 1 / DD_FACTOR or lo > DD_FACTOR):
        verdict, reason = "does not", f"peaks located outside a factor {DD_FACTOR:g} of 1"
    else:
        verdict, reason = "inconclusive", "peaks located for some models only, or not all near 1"
    unfilled = _unfilled(g)
    if verdict == "does not" and unfilled:
        # the ratio axis is data information over alpha * P: it locates a model's capacity only if the model can
        # fill it. A model that never holds alpha / DD_FACTOR bits per parameter has its real ratio-1 point more
        # than the claim's tolerance away from the axis's 1, so a missing or displaced peak refutes nothing.
        verdict, reason = (
            "inconclusive",
            (f"{unfilled}, so ratio 1 on this axis is not where their capacity is met: {reason}"),
        )
    return (
        measured,
        lo,
        hi,
        d["n"],
        verdict,
        _note(
            reason,
            "measured: geometric mean over models of the ratio with the highest mean test CE; CI: per-seed peaks",
            per_model,
        ),
    )


def _unfilled(g: dict) -> str | None:
    """Why the group's models are too far from capacity for a text claim to be refuted, or None: no model's
    unintended memorization reaches alpha / DD_FACTOR bits per parameter (the paper's text memorization plateaus
    near capacity, so converged models get there)."""
    held = [h for m in g["models"] if (h := (m.get("mem_u") or {}).get("peak_bits_per_param")) is not None]
    alpha = g.get("alpha")
    if not (alpha and held and max(held) < alpha / DD_FACTOR):
        return None
    return (
        f"the models never fill their capacity (the most any model held: {max(held):.2g} bits/param of "
        f"unintended memorization, under alpha/{DD_FACTOR:g} = {alpha / DD_FACTOR:.2g}; train longer)"
    )


def _mi_law_row(g: dict) -> tuple:
    """RMS of (observed F1 − the corrected law at the run's |D|/P), per seed; mean and t-interval over seeds.
    The law describes converged models: F1 below it from models that never fill their capacity (`_unfilled`) is
    what under-training gives, so that reads "inconclusive"; F1 above it still reads "does not"."""
    law = g["mi_law"]
    d = law["rms_over_seeds"]
    verdict, reason = absolute_verdict(0.0, d["mean"], d["ci_low"], d["ci_high"], band=MI_LAW_BAND)
    if verdict == "above the claim":  # the RMS error exceeds the band: the law does not fit
        verdict = "does not"
    unfilled = _unfilled(g)
    if verdict == "does not" and unfilled and (law.get("bias") or 0) < 0:
        verdict, reason = "inconclusive", f"{unfilled}, and F1 falls below the law, as less memorization does: {reason}"
    fit = law.get("fit") if (law.get("fit") or {}).get("ok") else law.get("fit_log10")
    fitted = ""
    if fit and fit.get("ok"):
        ps = fit["params"]
        fitted = (
            f"fitted ({fit['x_scale']} N/P, {fit['n']} runs): c1={ps['c1']:.3g}, a={ps['a']:.3g}, "
            f"b={ps['b']:.3g}, midpoint N/P={_num(fit.get('midpoint_d_over_p'))}, rms {_num(fit['rms'])}"
        )
    elif fit:
        fitted = f"no fitted law: {fit.get('why')}"
    rng = law.get("d_over_p_range") or [None, None]
    return (
        d["mean"],
        d["ci_low"],
        d["ci_high"],
        d["n"],
        verdict,
        _note(reason, f"N/P {_num(rng[0])}–{_num(rng[1])}; paper law bias {_num(law.get('bias'))}", fitted),
    )


def _extraction_row(g: dict) -> tuple:
    """Training minus test extraction rate at each model's largest N (the 32-token prefix, else the longest), each
    run's own gap, per seed averaged over models; mean and t-interval over seeds, judged by
    `memorization.extraction_convergence` (the rule of the report's findings table)."""
    prefixes = g.get("prefixes") or []
    if not prefixes:
        return None, None, None, 0, "inconclusive", "no extraction measured"
    p = 32 if 32 in prefixes else max(prefixes)
    per_seed: dict = {}
    texts, ever = [], 0.0
    for m in g["models"]:
        ex = (m.get("extraction") or {}).get(str(p))
        if not ex:
            continue
        ever = max(ever, ex.get("max_train") or 0.0)
        for seed, gap in (ex.get("gap_by_seed") or {}).items():
            per_seed.setdefault(seed, []).append(gap)
        first = ex["train_by_n"][0]
        texts.append(
            f"{m['label']}: train {_num(first)} at N={m['cells'][0]['n_sequences']} → "
            f"{_num(ex['train_by_n'][-1])} at N={ex['largest_n']}, test {_num(ex['test_by_n'][-1])}"
        )
    d = stats.describe(sum(v) / len(v) for v in per_seed.values())
    convergence, reason = extraction_convergence(d, ever)
    verdict = {"converges": "replicates"}.get(convergence, convergence)
    return d["mean"], d["ci_low"], d["ci_high"], d["n"], verdict, _note(reason, f"{p}-token prefix", *texts)


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def paper_table(report_or_records: dict | Sequence[dict], reference: str = "baseline", alpha: float = ALPHA) -> dict:
    """{"kind": "paper", "rows", "families", ...}: every claim beside the measured effect, controls under it.

    Pass records, or a report from `build_report` (with its task analyses attached under "analyses", if any)."""
    if isinstance(report_or_records, dict):
        report, cap = report_or_records, (report_or_records.get("analyses") or {}).get("capacity")
        mem = (report_or_records.get("analyses") or {}).get("memorization")
        reference = report.get("reference", reference)
    else:
        report = build_report(report_or_records, reference, alpha)
        cap = analyse_capacity(report_or_records, reference=reference)
        mem = analyse_memorization(report_or_records, reference=reference)
    rows: list[dict] = []
    for claim in PAPER_CLAIMS:
        if claim.task == MEMORIZATION_TASK:
            rows += _memorization_rows(claim, mem)
        elif claim.kind == "absolute":
            rows.append(_capacity_row(claim, cap, alpha))
        else:
            rows += _relative_rows(claim, report, reference, alpha)
    methods = unique(r["ci_method"] for r in rows if r.get("ci_method"))
    return clean(
        {
            "kind": "paper",
            "reference": reference,
            "alpha": alpha,
            "families": report.get("families", {}),
            "rel_ci_methods": methods,
            "power": stats.POWER,
            "rows": rows,
        }
    )
