"""Matrix-based entropy (MBE) of hidden states: the one place the formula lives.

For a patch Z (P tokens x D features) let K = Z Z^T and A = K / tr(K). The matrix-based Renyi alpha-entropy
(Sanchez Giraldo et al. 2015) is S_alpha = log(sum_i lambda_i(A)^alpha) / (1 - alpha), in nats, in [0, log P].
For alpha = 2 it has the closed form S_2 = 2 log tr(K) - log ||K||_F^2 = -log tr(A^2), which needs no
eigendecomposition; alpha -> 1 is the von Neumann entropy -sum lambda log lambda. The GAPT paper uses the linear,
*uncentred* Gram matrix with alpha = 2 and patches of 8 consecutive tokens. `centered=True` subtracts each patch's
mean token first: the control that tells compression from collapse (the uncentred value can be driven to 0 by
making the tokens of a patch collinear, e.g. all equal to a shared offset).

Numerics (alpha = 2: fp32 throughout, whatever the input dtype; alpha != 2: float64 throughout, see the last item;
the returned values are fp32 either way):
- Each patch is divided by its Frobenius norm before the Gram matrix is formed, so tr(A) = 1 exactly and the
  value is scale-invariant at any magnitude (the author's `+1e-5` inside the logs is not: it biases patches with
  small norms). The norm is clamped at TINY_NORM2 = 1e-30 (far below any real hidden state, above fp32's
  smallest normal 1.2e-38) so a zero patch divides by a finite number.
- tr(A^2) is clamped to [PURITY_FLOOR, 1]: 1 because rounding can push a rank-1 patch a hair above it (which
  would give a tiny negative entropy), PURITY_FLOOR = 1e-12 so the log and its gradient stay finite.
- A patch with zero norm has no information and is defined to have entropy 0 (selected with torch.where after
  both branches are finite, so its gradient is 0, never NaN).
- The Gram matrix is built as Z Z^T (P x P) or Z^T Z (D x D), whichever is smaller; they share the non-zero
  spectrum, so S_alpha is identical.
- Eigenvalue path (alpha != 2): the patch is cast to float64 *before* centring, normalising and forming the Gram
  matrix (an fp32 Gram matrix carries eigenvalue noise near 1e-7, which small alpha turns into spurious entropy:
  alpha = 0 would count it as rank), then eigvalsh in float64. Eigenvalues at or below the relative tolerance
  max(P, D) * eps(float64) * lambda_max (eps = 2.2e-16) are set to exactly 0, so alpha = 0 gives log(numerical
  rank) exactly. This is numpy matrix_rank's tolerance applied to the Gram spectrum; in singular values of the
  patch it cuts at sqrt(max(P, D) * eps) of the largest (6e-8 for an 8 x 16 patch: fp32 rounding level).
  Gradients flow through eigvalsh (well defined even for repeated eigenvalues); zeroed eigenvalues get gradient 0.
"""

from __future__ import annotations

import torch

TINY_NORM2 = 1e-30
PURITY_FLOOR = 1e-12


def patches(z: torch.Tensor, patch_size: int, truncate: bool = False) -> torch.Tensor:
    """(B, S, D) -> (B, S // P, P, D). S must be a multiple of P unless `truncate` keeps the last whole patches."""
    if z.dim() != 3:
        raise ValueError(f"expected hidden states of shape (batch, seq, dim), got {tuple(z.shape)}")
    b, s, d = z.shape
    if s % patch_size:
        if not truncate:
            raise ValueError(f"sequence length {s} is not a multiple of patch_size {patch_size}")
        s = (s // patch_size) * patch_size
        if s == 0:
            raise ValueError(f"sequence length {z.shape[1]} is shorter than patch_size {patch_size}")
        z = z[:, -s:]
    return z.reshape(b, s // patch_size, patch_size, d)


def _normalised_gram(
    zp: torch.Tensor, centered: bool, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace-normalised Gram matrix of each patch (smaller of the two forms) and a mask of non-zero patches.

    Everything is computed in `dtype` from the first operation on, so float64 callers get a float64 spectrum.
    """
    zp = zp.to(dtype)
    if centered:
        zp = zp - zp.mean(dim=-2, keepdim=True)
    norm2 = zp.pow(2).sum(dim=(-2, -1))
    nonzero = norm2 > TINY_NORM2
    zn = zp * norm2.clamp_min(TINY_NORM2).rsqrt()[..., None, None]
    p, d = zn.shape[-2], zn.shape[-1]
    gram = zn @ zn.transpose(-1, -2) if p <= d else zn.transpose(-1, -2) @ zn
    return gram, nonzero


def _renyi2(gram: torch.Tensor, nonzero: torch.Tensor) -> torch.Tensor:
    purity = gram.pow(2).sum(dim=(-2, -1)).clamp(PURITY_FLOOR, 1.0)  # tr(A^2) = ||A||_F^2
    return torch.where(nonzero, -torch.log(purity), torch.zeros_like(purity))


def renyi_from_eigenvalues(lam: torch.Tensor, alpha: float) -> torch.Tensor:
    """S_alpha of a normalised spectrum (last dim); alpha == 1 is von Neumann; 0 log 0 := 0."""
    lam = lam.clamp_min(0)
    lam = lam / lam.sum(dim=-1, keepdim=True).clamp_min(TINY_NORM2)
    if abs(alpha - 1.0) < 1e-12:
        return -(torch.where(lam > 0, lam * torch.log(lam.clamp_min(1e-300)), torch.zeros_like(lam))).sum(-1)
    s = torch.where(lam > 0, lam.clamp_min(1e-300) ** alpha, torch.zeros_like(lam)).sum(-1)
    return torch.log(s) / (1.0 - alpha)


def matrix_entropy_per_patch(
    z: torch.Tensor, alpha: float = 2.0, patch_size: int = 8, centered: bool = False, truncate: bool = False
) -> torch.Tensor:
    """MBE of every patch: (B, S, D) -> (B, S // P), in nats, fp32 (alpha != 2 is computed in float64)."""
    zp = patches(z, patch_size, truncate)
    if alpha == 2.0:
        return _renyi2(*_normalised_gram(zp, centered))
    gram, nonzero = _normalised_gram(zp, centered, torch.float64)
    lam = torch.linalg.eigvalsh(gram)
    tol = max(zp.shape[-2], zp.shape[-1]) * torch.finfo(torch.float64).eps * lam[..., -1:].detach()  # ascending order
    lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    ent = renyi_from_eigenvalues(lam, alpha).to(torch.float32)
    return torch.where(nonzero, ent, torch.zeros_like(ent))


def matrix_entropy(
    z: torch.Tensor, alpha: float = 2.0, patch_size: int = 8, centered: bool = False, truncate: bool = False
) -> torch.Tensor:
    """Mean MBE over all patches of all sequences: the scalar MBE_l of one layer (differentiable)."""
    return matrix_entropy_per_patch(z, alpha, patch_size, centered, truncate).mean()


def layer_entropies(
    hidden: list[torch.Tensor], alpha: float = 2.0, patch_size: int = 8, centered: bool = False
) -> torch.Tensor:
    """MBE of each layer's hidden states: list of (B, S, D) -> (L,)."""
    return torch.stack([matrix_entropy(h, alpha, patch_size, centered) for h in hidden])
