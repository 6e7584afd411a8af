import math

import numpy as np
import pytest
import torch

from gapt_bench.measures.entropy import (
    matrix_entropy,
    matrix_entropy_per_patch,
    renyi_from_eigenvalues,
)


def orthonormal_rows(p, d, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q[:p].float()


def test_orthonormal_equal_norm_rows_give_log_p():
    z = (orthonormal_rows(8, 32) * 5.0).unsqueeze(0)
    assert matrix_entropy(z).item() == pytest.approx(math.log(8), abs=1e-5)
    for alpha in (0.5, 1.0, 3.0):
        assert matrix_entropy(z, alpha=alpha).item() == pytest.approx(math.log(8), abs=1e-5)


def test_rank_one_patch_gives_zero():
    z = torch.randn(1, 1, 16) * torch.randn(1, 8, 1)
    assert matrix_entropy(z).item() == pytest.approx(0.0, abs=1e-6)
    assert matrix_entropy(z, alpha=1.0).item() == pytest.approx(0.0, abs=1e-5)


def test_zero_patch_is_zero_with_finite_gradient():
    z = torch.zeros(2, 16, 8, requires_grad=True)
    value = matrix_entropy(z)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(z.grad).all()
    r = (torch.randn(1, 1, 8) * torch.randn(1, 8, 1)).requires_grad_()
    matrix_entropy(r).backward()
    assert torch.isfinite(r.grad).all()


def test_invariant_to_scale_and_rotation():
    z = torch.randn(3, 16, 24)
    q = orthonormal_rows(24, 24, seed=1)
    base = matrix_entropy_per_patch(z)
    assert torch.allclose(matrix_entropy_per_patch(z * 1e-3), base, atol=1e-5)
    assert torch.allclose(matrix_entropy_per_patch(z * 1e4), base, atol=1e-5)
    assert torch.allclose(matrix_entropy_per_patch(z @ q), base, atol=1e-5)


def test_gram_forms_agree():
    # D < P uses Z^T Z, D > P uses Z Z^T: embedding the same patch in more dims must not change the value.
    z = torch.randn(2, 16, 4)
    padded = torch.cat([z, torch.zeros(2, 16, 28)], dim=-1)
    assert torch.allclose(matrix_entropy_per_patch(z), matrix_entropy_per_patch(padded), atol=1e-5)
    for alpha in (1.0, 2.0, 3.0):
        assert torch.allclose(
            matrix_entropy_per_patch(z, alpha=alpha), matrix_entropy_per_patch(padded, alpha=alpha), atol=1e-4
        )


def test_closed_form_equals_eigenvalue_form_and_float64_reference():
    z = torch.randn(4, 32, 16, generator=torch.Generator().manual_seed(3))
    closed = matrix_entropy_per_patch(z, alpha=2.0)
    eig = matrix_entropy_per_patch(z, alpha=2.0 + 1e-9)  # forces the eigenvalue path
    assert torch.allclose(closed, eig, atol=1e-5)
    # independent float64 computation with numpy
    zp = z.double().numpy().reshape(4, 4, 8, 16)
    for b in range(4):
        for p in range(4):
            k = zp[b, p] @ zp[b, p].T
            lam = np.linalg.eigvalsh(k / np.trace(k))
            ref = -math.log(np.sum(np.clip(lam, 0, None) ** 2))
            assert abs(closed[b, p].item() - ref) < 1e-5


def test_alpha_one_continuity():
    z = torch.randn(2, 16, 12)
    at_one = matrix_entropy(z, alpha=1.0).item()
    assert matrix_entropy(z, alpha=1.0 + 1e-4).item() == pytest.approx(at_one, abs=1e-3)
    assert matrix_entropy(z, alpha=1.0 - 1e-4).item() == pytest.approx(at_one, abs=1e-3)


def test_range_and_centering_control():
    z = torch.randn(2, 64, 32) + 50.0  # a big shared offset: uncentred patches look rank one
    plain, centred = matrix_entropy(z).item(), matrix_entropy(z, centered=True).item()
    assert 0 <= plain < 0.1 < centred <= math.log(8) + 1e-6
    lam = torch.tensor([0.5, 0.5, 0.0])
    assert renyi_from_eigenvalues(lam, 1.0).item() == pytest.approx(math.log(2), abs=1e-6)


def test_patch_size_must_divide_sequence():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        matrix_entropy(torch.randn(1, 12, 4), patch_size=8)
    assert matrix_entropy(torch.randn(1, 12, 4), patch_size=8, truncate=True).item() > 0


def rank3_patch(dtype=torch.float64, seed=0):
    """An 8 x 16 patch of exact rank 3 (in float64): (8 x 3) @ (3 x 16)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(8, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, 16, generator=g, dtype=torch.float64)
    return (a @ b).to(dtype)


def numpy_renyi(z, alpha, rank):
    """Independent float64 reference: the `rank` largest eigenvalues of the exact trace-normalised Gram matrix."""
    zn = z.double().numpy()
    k = zn @ zn.T
    lam = np.sort(np.linalg.eigvalsh(k / np.trace(k)))[-rank:]
    assert lam.min() > 1e-3  # the three genuine eigenvalues, well separated from the numerical zeros
    lam = lam / lam.sum()
    if alpha == 1.0:
        return float(-np.sum(lam * np.log(lam)))
    return float(np.log(np.sum(lam**alpha)) / (1.0 - alpha))


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_deficient_patch_small_alpha_matches_float64_reference(seed):
    z = rank3_patch(seed=seed)
    for alpha in (0.1, 0.5, 1.0, 3.0):
        got = matrix_entropy(z[None], alpha=alpha)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(numpy_renyi(z, alpha, 3), abs=1e-6), alpha
    # alpha = 0 counts the non-zero eigenvalues: log(rank) exactly (float64), compared at fp32 resolution
    assert matrix_entropy(z[None], alpha=0.0).item() == pytest.approx(math.log(3), abs=1e-6)
    # an fp32 input rounds the rank-3 product; the float64 path treats that rounding as zero eigenvalues
    zf = z.float()[None]
    assert matrix_entropy(zf, alpha=0.0).item() == pytest.approx(math.log(3), abs=1e-6)
    assert matrix_entropy(zf, alpha=0.1).item() == pytest.approx(numpy_renyi(z, 0.1, 3), abs=1e-5)


def test_rank_deficient_patch_in_a_batch_and_with_centering():
    # rank 3 stays rank 3 next to a full-rank patch, and centring a rank-3 patch leaves rank <= 3 (here exactly 3)
    z = torch.cat([rank3_patch(), torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))])
    per = matrix_entropy_per_patch(z[None], alpha=0.0)
    assert per[0, 0].item() == pytest.approx(math.log(3), abs=1e-6)
    assert per[0, 1].item() == pytest.approx(math.log(8), abs=1e-6)
    centred = matrix_entropy_per_patch(z[None], alpha=0.0, centered=True)
    assert centred[0, 0].item() == pytest.approx(math.log(3), abs=1e-6)
    assert centred[0, 1].item() == pytest.approx(math.log(7), abs=1e-6)  # centring removes one dimension


def test_eigenvalue_path_gradients_are_finite_and_match_finite_differences():
    z = torch.randn(2, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(7), requires_grad=True)
    matrix_entropy(z.float(), alpha=1.0).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0

    # the float64 path is differentiable end to end: compare with central differences on a float64 input
    def f(t):
        return matrix_entropy(t, alpha=1.0)

    zz = z.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(zz), zz)
    d = torch.randn(zz.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    h = 1e-4
    fd = (f(z.detach() + h * d).double() - f(z.detach() - h * d).double()) / (2 * h)
    assert float((grad * d).sum()) == pytest.approx(float(fd), abs=2e-3)
    # a rank-deficient patch also gets finite gradients (zeroed eigenvalues contribute 0)
    r = rank3_patch().requires_grad_()
    matrix_entropy(r[None], alpha=0.5).backward()
    assert torch.isfinite(r.grad).all()
