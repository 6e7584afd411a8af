import json

import pytest
import torch

from gapt_bench import cli
from gapt_bench.alignment import cycle_stats, gradient_alignment
from gapt_bench.models import build_model, forward_with_hidden
from gapt_bench.store import read_records


def test_cosine_of_a_loss_with_itself_is_one_and_grads_untouched():
    torch.manual_seed(0)
    model = build_model(n_layer=2, n_embd=16, n_head=2, vocab_size=13, n_positions=16)
    x = torch.randint(0, 13, (4, 16))
    logits, hidden = forward_with_hidden(model, x)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 13), x.reshape(-1))
    out = gradient_alignment(model, ce, hidden, [0, 1], patch_size=8)
    assert -1.0 <= out["align_cos"] <= 1.0 and "align_cos_block_1" in out
    assert all(p.grad is None for p in model.parameters())
    # MBE of a layer aligned with itself: feed the MBE as the "CE"
    from gapt_bench.entropy import matrix_entropy

    mbe = torch.stack([matrix_entropy(h, patch_size=8) for h in hidden]).mean()
    assert gradient_alignment(model, mbe, hidden, [0, 1], patch_size=8)["align_cos"] == pytest.approx(1.0, abs=1e-5)


def test_cycle_stats():
    s = cycle_stats([0, 100, 200, 300, 400], [0.5, -0.2, 0.1, -0.3, -0.1])
    assert s["align_frac_negative"] == pytest.approx(3 / 5)
    assert s["align_sign_changes_per_1k"] == pytest.approx(1000 * 3 / 400)


def test_alignment_is_logged_to_curve_and_record(tmp_path, tiny_capacity_args):
    assert cli.main(["run", *tiny_capacity_args, "--methods", "baseline", "--seeds", "0", "--workers", "1",
                     "--no-report", "--out", str(tmp_path), "--set", "align.every=8"]) == 0
    (rec,) = read_records(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "runs" / rec["run_id"] / "curve.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "align_cos" in r]
    assert len(logged) == 8 and {"align_frac_negative", "align_sign_changes_per_1k"} <= set(rec["summary"])
