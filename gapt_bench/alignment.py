"""Gradient alignment between CE and MBE: the "memorization-compression cycle" probe (gapt-paper.md 2.4).

cos(g_CE, g_MBE) on the *same* batch (the later, global definition), over all parameters and per block. With
g = dLoss/dtheta for both, a positive cosine means a CE descent step also lowers MBE (compression); a negative
one means CE descent raises MBE (memorization/expansion). The measurement never changes the update.
"""
from __future__ import annotations

from typing import Sequence

import torch

from gapt_bench.entropy import matrix_entropy
from gapt_bench.models import blocks


def gradient_alignment(model: torch.nn.Module, ce: torch.Tensor, hidden: Sequence[torch.Tensor], layers: Sequence[int],
                       patch_size: int, alpha: float = 2.0) -> dict[str, float]:
    """Global and per-block cosine between grad(CE) and grad(mean MBE over `layers`). Leaves .grad untouched."""
    params = [p for p in model.parameters() if p.requires_grad]
    mbe = torch.stack([matrix_entropy(hidden[i], alpha, patch_size) for i in layers]).mean()
    g_ce = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    g_mbe = torch.autograd.grad(mbe, params, retain_graph=True, allow_unused=True)
    out = {"align_cos": _cos(g_ce, g_mbe, params, set(range(len(params))))}
    index = {id(p): i for i, p in enumerate(params)}
    for b, block in enumerate(blocks(model)):
        ids = {index[id(p)] for p in block.parameters() if id(p) in index}
        out[f"align_cos_block_{b}"] = _cos(g_ce, g_mbe, params, ids)
    return out


def _cos(ga, gb, params, ids) -> float:
    dot = na = nb = 0.0
    for i in ids:
        a, b = ga[i], gb[i]
        if a is None or b is None:
            continue
        a, b = a.float().flatten(), b.float().flatten()
        dot += float(a @ b)
        na += float(a @ a)
        nb += float(b @ b)
    return dot / (na ** 0.5 * nb ** 0.5) if na > 0 and nb > 0 else float("nan")


def cycle_stats(steps: Sequence[int], cosines: Sequence[float]) -> dict[str, float]:
    """Fraction of logged steps with negative cosine and sign changes per 1k steps."""
    pts = [(s, c) for s, c in zip(steps, cosines) if c == c]
    if len(pts) < 2:
        return {}
    signs = [c < 0 for _, c in pts]
    changes = sum(a != b for a, b in zip(signs, signs[1:]))
    span = max(pts[-1][0] - pts[0][0], 1)
    return {"align_frac_negative": sum(signs) / len(signs), "align_sign_changes_per_1k": 1000.0 * changes / span}
