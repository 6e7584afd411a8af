"""Gradient alignment between CE and MBE: the "memorization-compression cycle" probe (gapt-paper.md 2.4).

cos(g_CE, g_MBE) on the *same* batch (the later, global definition), with g = dLoss/dtheta for both. A positive
cosine means a CE descent step also lowers MBE (compression); a negative one means CE descent raises MBE
(memorization/expansion). The measurement uses `torch.autograd.grad`, so it never touches `.grad` or the update.

MBE here is the regulariser as configured: the mean MBE (centred if reg.centered) over every layer it may reach
(`Method.reg_layers_all`). Under reg.layers=rotate/rotate_rr, where one of those layers is regularised per step,
that is the regulariser averaged over one rotation, so the logged series does not jump with the rotation; the
trainer records the layers and the centring in the run summary (`align_layers`, `align_centered`). Every method
is probed the same way, the baseline included (the regulariser it would have).

`gradient_alignment` returns, as flat float keys (so they can go straight into a curve row):
- `align_cos`: the global cosine over all trainable parameters, i.e. the cosine of the two fully flattened
  gradient vectors. A parameter a loss does not reach (autograd gives None: for MBE of layer l, the blocks after l
  and the final LayerNorm `ln_f`) has gradient *zero* for that loss, so its CE gradient still counts in ||g_CE||.
  Skipping it would overstate the alignment.
- `align_cos_block_<i>`: the same over the parameters of transformer block i (zeros for None within the block).
- `align_cos_tensor:<name>`: the cosine over one parameter tensor, named as `named_parameters()` of the unwrapped
  model (DDP `.module` / compiled `._orig_mod` removed) names it. NaN (undefined) when either gradient of that
  tensor is None or zero, e.g. every tensor after the last regularised layer.
Any of these is NaN when one of its two gradients is zero over its whole parameter set.

`cycle_stats` summarises the logged global cosines over training: fraction negative, sign changes per 1k steps,
and the autocorrelation period (see its docstring).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

from gapt_bench.measures.entropy import matrix_entropy
from gapt_bench.measures.hidden_states import blocks, unwrap

MIN_PERIOD_POINTS = 8  # fewer logged cosines than this give no autocorrelation period


def gradient_alignment(
    model: torch.nn.Module,
    ce: torch.Tensor,
    hidden: Sequence[torch.Tensor],
    layers: Sequence[int],
    patch_size: int,
    alpha: float = 2.0,
    centered: bool = False,
) -> dict[str, float]:
    """Global, per-block and per-tensor cosines between grad(CE) and grad(mean MBE over `layers`, centred or not).

    Leaves .grad untouched (autograd.grad with retain_graph, so the caller's backward still works).
    """
    inner = unwrap(model)
    named = [(n, p) for n, p in inner.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    mbe = torch.stack([matrix_entropy(hidden[i], alpha, patch_size, centered) for i in layers]).mean()
    g_ce = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    g_mbe = torch.autograd.grad(mbe, params, retain_graph=True, allow_unused=True)
    # per tensor: <a, b>, ||a||^2, ||b||^2 with a None gradient as a zero vector; one device->host transfer
    parts = torch.tensor([[0.0, 0.0, 0.0]] * len(params), dtype=torch.float64)
    rows = [_sums(a, b) for a, b in zip(g_ce, g_mbe)]
    live = [i for i, r in enumerate(rows) if r is not None]
    if live:
        parts[live] = torch.stack([rows[i] for i in live]).double().cpu()
    sums = parts.numpy()
    out = {"align_cos": _cos(sums.sum(axis=0))}
    index = {id(p): i for i, p in enumerate(params)}
    for b, block in enumerate(blocks(inner)):
        ids = sorted({index[id(p)] for p in block.parameters() if id(p) in index})
        out[f"align_cos_block_{b}"] = _cos(sums[ids].sum(axis=0))
    for i, (name, _) in enumerate(named):
        out[f"align_cos_tensor:{name}"] = _cos(sums[i])
    return out


def _sums(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """(<a, b>, ||a||^2, ||b||^2) of one tensor's two gradients, None meaning zero; None if both are None."""
    if a is None and b is None:
        return None
    ref = a if a is not None else b
    zero = torch.zeros((), dtype=torch.float32, device=ref.device)
    af = a.float().flatten() if a is not None else None
    bf = b.float().flatten() if b is not None else None
    dot = af @ bf if af is not None and bf is not None else zero
    return torch.stack([dot, af @ af if af is not None else zero, bf @ bf if bf is not None else zero])


def _cos(s: np.ndarray) -> float:
    """Cosine from (<a, b>, ||a||^2, ||b||^2); NaN when either vector is zero (the angle is undefined)."""
    dot, na, nb = (float(x) for x in s)
    return dot / (math.sqrt(na) * math.sqrt(nb)) if na > 0 and nb > 0 else float("nan")


def cycle_stats(steps: Sequence[int], cosines: Sequence[float]) -> dict[str, float]:
    """Cycle statistics of the logged global cosines (NaN entries dropped), as the spec (gapt-paper.md 2.4) asks.

    - `align_frac_negative`: fraction of logged steps with cos < 0.
    - `align_sign_changes_per_1k`: sign changes between consecutive logged cosines per 1000 training steps.
    - `align_period_steps`: the autocorrelation period, in training steps. The series is first resampled by linear
      interpolation onto a regular grid at the median spacing of `steps` (logging may be irregular, e.g. after a
      resume), and its mean removed. The period is the lag of the first local maximum of its sample
      autocorrelation (ACF) after its first zero crossing, refined by a 3-point parabola through the peak.
      Concretely: after the first lag with ACF <= 0, the next positive lobe of the ACF is found and its highest
      point taken (for a clean cycle this is the first local maximum; on a noisy one, wiggles on the lobe's
      flanks are not mistaken for it), skipping lobes that stay inside the white-noise band
      sqrt(2 ln K) / sqrt(n - k) (K = the number of lags searched; noise around a zero crossing). The ACF is the
      unbiased one (lag-k sums divided by n - k: the biased 1/n form pulls the peak to shorter lags), searched
      up to lag K = 2n/3 (at least 1.5 cycles observed), and the peak must be a local maximum inside that range.
      A monotone trend's ACF dips negative and stays there, so it has no period. Omitted when there is no such
      peak, the series is constant, or there are fewer than MIN_PERIOD_POINTS = 8 points.
    """
    pts = [(s, c) for s, c in zip(steps, cosines) if c == c]
    if len(pts) < 2:
        return {}
    signs = [c < 0 for _, c in pts]
    changes = sum(a != b for a, b in itertools.pairwise(signs))
    span = max(pts[-1][0] - pts[0][0], 1)
    out = {"align_frac_negative": sum(signs) / len(signs), "align_sign_changes_per_1k": 1000.0 * changes / span}
    period = _acf_period([s for s, _ in pts], [c for _, c in pts])
    if period is not None:
        out["align_period_steps"] = period
    return out


def _acf_period(steps: Sequence[float], values: Sequence[float]) -> float | None:
    """Lag (in steps) of the first positive, significant ACF peak after the first zero crossing; else None."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    s, first = np.unique(s, return_index=True)  # a repeated step keeps its first value
    v = v[first]
    if len(s) < MIN_PERIOD_POINTS:
        return None
    dt = float(np.median(np.diff(s)))
    n = math.floor((s[-1] - s[0]) / dt + 1e-9) + 1
    if n < MIN_PERIOD_POINTS:
        return None
    if n > 64 * len(s):
        return None  # one huge gap in the logging: the interpolated series would be mostly straight lines
    x = np.interp(s[0] + dt * np.arange(n), s, v)
    x = x - x.mean()
    energy = float(x @ x) / n
    if energy <= 1e-300:
        return None
    # unbiased: acf[k] = mean_t(x_t x_{t+k}) / mean_t(x_t^2); the biased 1/n form tapers by (n - k) / n, which
    # pulls a peak at lag P towards 0 by several percent. Via FFT (zero-padded, so not circular): O(n log n).
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f), 2 * n)[:n] / (n - np.arange(n)) / energy
    max_lag = min((2 * n) // 3, n - 2)  # at least a third of the series overlaps, i.e. at least 1.5 cycles observed
    nonpos = np.nonzero(acf[: max_lag + 1] <= 0)[0]
    if len(nonpos) == 0:
        return None
    band = math.sqrt(2.0 * math.log(max_lag))  # white noise's lag-k ACF has sd 1/sqrt(n - k); this many sds
    k = int(nonpos[0])  # is rarely crossed by chance anywhere among max_lag lags
    while k <= max_lag:
        while k <= max_lag and acf[k] <= 0:
            k += 1
        start = k  # a positive lobe of the ACF: [start, k)
        while k <= max_lag and acf[k] > 0:
            k += 1
        if start > max_lag:
            return None
        peak = start + int(np.argmax(acf[start:k]))  # its highest point: wiggles on the flanks do not count
        if acf[peak] <= band / math.sqrt(n - peak):
            continue  # a lobe inside white noise's band (noise around a zero crossing): not a peak
        if not (acf[peak] >= acf[peak - 1] and acf[peak] >= acf[peak + 1]):
            return None  # still rising at the search limit: the peak was not observed
        curv = acf[peak - 1] - 2 * acf[peak] + acf[peak + 1]
        shift = 0.5 * (acf[peak - 1] - acf[peak + 1]) / curv if curv < 0 else 0.0
        return float((peak + shift) * dt)
    return None
