import json
import math

import numpy as np
import pytest
import torch

from gapt_bench import cli
from gapt_bench.measures.alignment import cycle_stats, gradient_alignment
from gapt_bench.measures.entropy import matrix_entropy
from gapt_bench.measures.hidden_states import blocks, forward_with_hidden
from gapt_bench.results.store import read_records
from gapt_bench.training.model import build_model


def make_case(n_layer=3, seed=0, vocab=64, seq=32):
    torch.manual_seed(seed)
    model = build_model(n_layer=n_layer, n_embd=32, n_head=4, vocab_size=vocab, n_positions=seq)
    x = torch.randint(0, vocab, (4, seq), generator=torch.Generator().manual_seed(seed + 1))
    logits, hidden = forward_with_hidden(model, x)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), x.reshape(-1))
    return model, ce, hidden


def reference_grads(model, ce, hidden, layers):
    """Independent (name -> (g_ce, g_mbe)) in float64, a gradient autograd does not reach as zeros."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    mbe = torch.stack([matrix_entropy(hidden[i], 2.0, 8) for i in layers]).mean()
    g_ce = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    g_mbe = torch.autograd.grad(mbe, params, retain_graph=True, allow_unused=True)

    def dense(g, p):
        return torch.zeros(p.numel(), dtype=torch.float64) if g is None else g.detach().double().flatten()

    raw = {n: (a, b) for (n, _), a, b in zip(named, g_ce, g_mbe)}
    return {n: (dense(a, p), dense(b, p)) for (n, p), (a, b) in zip(named, zip(g_ce, g_mbe))}, raw


def cos64(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_global_cosine_is_cosine_of_flattened_gradients_with_zeros_for_unused():
    model, ce, hidden = make_case()
    out = gradient_alignment(model, ce, hidden, [1], patch_size=8)
    ref, raw = reference_grads(model, ce, hidden, [1])
    a = torch.cat([ga for ga, _ in ref.values()])
    b = torch.cat([gb for _, gb in ref.values()])
    expected = cos64(a, b)
    assert out["align_cos"] == pytest.approx(expected, abs=1e-5)
    # the old behaviour (drop tensors the MBE gradient does not reach from ||g_CE||) gives a different number
    unreached = [n for n, (_, gb) in raw.items() if gb is None]
    assert "transformer.ln_f.weight" in unreached and any(n.startswith("transformer.h.2.") for n in unreached)
    reached = [n for n in ref if n not in unreached]
    skip = cos64(torch.cat([ref[n][0] for n in reached]), torch.cat([ref[n][1] for n in reached]))
    assert abs(skip - expected) > 1e-3
    assert abs(out["align_cos"] - skip) > 1e-3
    # per block: the same with zeros inside the block; block 2 is not reached by MBE of layer 1 at all
    for i in (0, 1):
        names = [n for n in ref if n.startswith(f"transformer.h.{i}.")]
        block = cos64(torch.cat([ref[n][0] for n in names]), torch.cat([ref[n][1] for n in names]))
        assert out[f"align_cos_block_{i}"] == pytest.approx(block, abs=1e-5)
    assert math.isnan(out["align_cos_block_2"])


def test_per_tensor_cosines():
    model, ce, hidden = make_case()
    out = gradient_alignment(model, ce, hidden, [1], patch_size=8)
    ref, _ = reference_grads(model, ce, hidden, [1])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert {k for k in out if k.startswith("align_cos_tensor:")} == {f"align_cos_tensor:{n}" for n in names}
    block_keys = {f"align_cos_block_{i}" for i in range(3)}
    assert set(out) == {"align_cos", *block_keys, *(f"align_cos_tensor:{n}" for n in names)}
    for n in (
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.h.1.ln_2.bias",
    ):
        assert out[f"align_cos_tensor:{n}"] == pytest.approx(cos64(*ref[n]), abs=1e-5), n
    # not reached by the MBE of layer 1: undefined, not 0
    for n in ("transformer.ln_f.weight", "transformer.ln_f.bias", "transformer.h.2.attn.c_attn.weight"):
        assert math.isnan(out[f"align_cos_tensor:{n}"]), n


def test_cosine_of_a_loss_with_itself_is_one_and_grads_untouched():
    model, ce, hidden = make_case(n_layer=2, vocab=13, seq=16)
    out = gradient_alignment(model, ce, hidden, [0, 1], patch_size=8)
    ref, _ = reference_grads(model, ce, hidden, [0, 1])
    expected = cos64(torch.cat([a for a, _ in ref.values()]), torch.cat([b for _, b in ref.values()]))
    assert out["align_cos"] == pytest.approx(expected, abs=1e-5) and "align_cos_block_1" in out
    assert all(p.grad is None for p in model.parameters())
    # MBE aligned with itself: feed the MBE as the "CE". Every tensor it reaches has cosine 1; ln_f is unreached
    mbe = torch.stack([matrix_entropy(h, patch_size=8) for h in hidden]).mean()
    self_out = gradient_alignment(model, mbe, hidden, [0, 1], patch_size=8)
    assert self_out["align_cos"] == pytest.approx(1.0, abs=1e-5)
    assert self_out["align_cos_block_0"] == pytest.approx(1.0, abs=1e-5)
    assert self_out["align_cos_tensor:transformer.h.1.attn.c_proj.weight"] == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(self_out["align_cos_tensor:transformer.ln_f.weight"])


def test_alignment_leaves_existing_grads_and_the_update_alone():
    model, ce, hidden = make_case()
    twin, ce2, _ = make_case()
    for p in model.parameters():  # a previous micro-batch's accumulated gradient must survive
        p.grad = torch.full_like(p, 0.25)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    gradient_alignment(model, ce, hidden, [0, 1], patch_size=8)
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
    ce.backward()  # the graph is still there for the training backward, and gives the usual gradient
    ce2.backward()
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad - before[n], q.grad, atol=1e-6), n


def test_wrapped_model_names_are_unwrapped():
    class Wrapper(torch.nn.Module):  # stands in for DDP (`.module`) and torch.compile (`._orig_mod`)
        def __init__(self, inner, attr):
            super().__init__()
            setattr(self, attr, inner)

    model, ce, hidden = make_case()
    plain = gradient_alignment(model, ce, hidden, [1], patch_size=8)
    for attr in ("module", "_orig_mod"):
        wrapped = gradient_alignment(Wrapper(model, attr), ce, hidden, [1], patch_size=8)
        assert wrapped.keys() == plain.keys()
        for k in plain:
            assert wrapped[k] == pytest.approx(plain[k], abs=1e-6, nan_ok=True)
    assert len(blocks(Wrapper(model, "module"))) == 3


def test_cycle_stats():
    s = cycle_stats([0, 100, 200, 300, 400], [0.5, -0.2, 0.1, -0.3, -0.1])
    assert s["align_frac_negative"] == pytest.approx(3 / 5)
    assert s["align_sign_changes_per_1k"] == pytest.approx(1000 * 3 / 400)
    assert "align_period_steps" not in s  # too few points for an autocorrelation period
    assert cycle_stats([0], [0.1]) == {}


@pytest.mark.parametrize("period", [130, 730, 1234])
def test_cycle_stats_recovers_the_period_of_a_sine(period):
    steps = np.arange(0, 6000, 10)  # several periods, sampled every 10 steps
    s = cycle_stats(steps.tolist(), np.cos(2 * np.pi * steps / period).tolist())
    assert abs(s["align_period_steps"] - period) <= 10
    # irregular logging (resampled at the median spacing) and noise
    rng = np.random.default_rng(period)
    steps = np.cumsum(rng.integers(5, 16, size=600)).astype(float)
    values = np.cos(2 * np.pi * steps / period) + 0.3 * rng.normal(size=steps.size)
    assert abs(cycle_stats(steps.tolist(), values.tolist())["align_period_steps"] - period) <= 0.05 * period + 10


def test_cycle_stats_has_no_period_without_a_cycle():
    steps = list(range(0, 500, 10))
    for values in (np.linspace(-0.5, 0.8, 50), np.exp(-np.arange(50) / 7.0), np.full(50, 0.3)):
        s = cycle_stats(steps, values.tolist())
        assert "align_period_steps" not in s and "align_frac_negative" in s
    with_nan = np.cos(2 * np.pi * np.arange(50) / 10.0)
    with_nan[::2] = np.nan  # NaN cosines are dropped: 25 points left, still periodic (period 100 steps)
    assert cycle_stats(steps, with_nan.tolist())["align_period_steps"] == pytest.approx(100, abs=10)


def test_alignment_is_logged_to_curve_and_record(tmp_path, tiny_capacity_args):
    assert (
        cli.main(
            [
                "run",
                *tiny_capacity_args,
                "--methods",
                "baseline",
                "--seeds",
                "0",
                "--workers",
                "1",
                "--no-report",
                "--out",
                str(tmp_path),
                "--set",
                "align.every=8",
            ]
        )
        == 0
    )
    (rec,) = read_records(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "runs" / rec["run_id"] / "curve.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "align_cos" in r]
    assert len(logged) == 8 and {"align_frac_negative", "align_sign_changes_per_1k"} <= set(rec["summary"])
    assert all(any(k.startswith("align_cos_tensor:") for k in r) for r in logged)
