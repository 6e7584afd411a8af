"""gapt_bench.measures.memorization: the text-memorization estimators (capacity-paper.md sections 1, 3, 3.5)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from gapt_bench.measures import membership
from gapt_bench.measures import memorization as M
from gapt_bench.results.analysis import laws
from gapt_bench.training.model import build_model

TINY = dict(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16)


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(**TINY)


def random_tokens(n: int, s: int, seed: int = 0, vocab: int = 32) -> torch.Tensor:
    return torch.randint(0, vocab, (n, s), generator=torch.Generator().manual_seed(seed))


# -- code lengths and unintended memorization ----------------------------------------------------------------------
def test_sequence_nll_bits_matches_hand_loop_over_positions():
    model = tiny_model(0)
    model.train()
    x = random_tokens(5, 9, seed=1)
    got = M.sequence_nll_bits(model, x, batch_size=2)  # batches of 2, 2, 1
    assert model.training  # flag restored
    assert got.shape == (5,) and got.dtype == np.float64
    model.eval()
    want = np.zeros(5)
    with torch.no_grad():
        for i in range(5):
            for t in range(1, 9):  # token 0 is never predicted (strict convention)
                logits = model(input_ids=x[i : i + 1, :t], use_cache=False).logits[0, -1]  # prefix only
                want[i] -= float(torch.log_softmax(logits.double(), -1)[x[i, t]]) / math.log(2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # order of magnitude: an untrained model codes ~log2(32) = 5 bits per predicted token
    assert np.all(np.abs(got / 8 - 5) < 1.5)


def test_sequence_nll_bits_rejects_single_token_sequences():
    with pytest.raises(ValueError):
        M.sequence_nll_bits(tiny_model(0), random_tokens(2, 1))


def test_model_equal_to_reference_scores_zero_unintended_memorization():
    x = random_tokens(12, 10, seed=3)
    nll_model = M.sequence_nll_bits(tiny_model(7), x)
    nll_ref = M.sequence_nll_bits(tiny_model(7), x)
    assert np.array_equal(M.unintended_memorization(nll_model, nll_ref), np.zeros(12))
    assert M.total_unintended_memorization(nll_model, nll_ref) == 0.0
    # the check can fail: a differently initialised model is better than it on some sequences
    other = M.sequence_nll_bits(tiny_model(8), x)
    assert M.total_unintended_memorization(other, nll_ref) > 0.0


def test_memorised_sequence_scores_its_reference_code_length_and_clipping_is_per_sequence():
    # per-token code lengths (bits) of 3 sequences of 2 predicted tokens
    model_tok = np.array([[0.0, 0.0], [5.0, 25.0], [20.0, 30.0]])
    ref_tok = np.array([[15.0, 25.0], [15.0, 5.0], [25.0, 35.0]])
    nll_model, nll_ref = model_tok.sum(1), ref_tok.sum(1)  # [0, 30, 50] and [40, 20, 60]
    mem = M.unintended_memorization(nll_model, nll_ref)
    # seq 0 memorised exactly: its whole reference code length; seq 1 worse than the reference: 0, not -10
    np.testing.assert_array_equal(mem, [40.0, 0.0, 10.0])
    assert M.total_unintended_memorization(nll_model, nll_ref) == 50.0
    per_token = np.maximum(0.0, ref_tok - model_tok).sum(1)  # the wrong estimator
    np.testing.assert_array_equal(per_token, [40.0, 10.0, 10.0])
    assert M.total_unintended_memorization(nll_model, nll_ref) != per_token.sum()
    with pytest.raises(ValueError):
        M.unintended_memorization([1.0, 2.0], [1.0])


def test_dataset_information_and_capacity_ratio():
    assert M.dataset_information_bits([40.0, 20.0, 60.0]) == 120.0
    assert M.capacity_ratio(3.64e6, 1_000_000) == pytest.approx(1.0)
    assert M.capacity_ratio(7.0e6, 1_000_000, alpha=3.5) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        M.capacity_ratio(1.0, 0)


# -- extraction ----------------------------------------------------------------------------------------------------
class LookupLM(nn.Module):
    """Deterministic bigram "LM": the next token after t is table[t]. Looks like an HF model (`.logits`)."""

    def __init__(self, table: list[int], vocab: int) -> None:
        super().__init__()
        self.register_buffer("table", torch.tensor(table))
        self.vocab = vocab

    def forward(self, input_ids, use_cache=False):
        logits = 10.0 * one_hot(self.table[input_ids], self.vocab)
        return SimpleNamespace(logits=logits)


def one_hot(idx: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(idx, vocab).float()


@pytest.mark.parametrize("method", ["teacher_forced", "decode"])
def test_greedy_extraction_with_a_lookup_model(method):
    vocab = 12
    model = LookupLM([(t + 1) % vocab for t in range(vocab)], vocab)  # continues 0 1 2 3 ...
    x = torch.tensor(
        [
            [0, 1, 2, 3, 4, 5, 6, 7],  # the known continuation: extracted
            [0, 1, 2, 3, 9, 5, 6, 7],  # diverges after the prefix
            [0, 1, 2, 3, 4, 5, 6, 0],  # only the last token differs: still not an exact match
            [5, 6, 0, 1, 2, 3, 4, 5],
        ]
    )  # wrong *inside* the prefix, right after it: extracted
    got = M.greedy_extraction(model, x, prefix_len=3, batch_size=3, method=method)
    np.testing.assert_array_equal(got, [True, False, False, True])
    assert M.extraction_rate(model, x, 3, method=method) == 0.5
    assert M.greedy_extraction(model, x, prefix_len=7, method=method).tolist() == [True, True, False, True]
    for bad in (8, 9, 0, -1):
        with pytest.raises(ValueError, match="prefix_len"):
            M.greedy_extraction(model, x, prefix_len=bad, method=method)


def test_teacher_forced_extraction_equals_literal_greedy_decoding():
    model = tiny_model(2)
    prefix, seq_len = 3, 10
    # sequences the model itself continues greedily, decoded by hand one token at a time
    ctx = random_tokens(6, prefix, seed=4)
    with torch.no_grad():
        for _ in range(seq_len - prefix):
            nxt = model(input_ids=ctx, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ctx = torch.cat([ctx, nxt], 1)
    corrupted = ctx.clone()
    corrupted[:, -2] = (corrupted[:, -2] + 1) % 32
    x = torch.cat([ctx, corrupted, random_tokens(6, seq_len, seed=5)])
    tf = M.greedy_extraction(model, x, prefix, batch_size=4)
    dec = M.greedy_extraction(model, x, prefix, batch_size=4, method="decode")
    np.testing.assert_array_equal(tf, dec)
    assert tf[:6].all() and not tf[6:12].any()


# -- membership inference ------------------------------------------------------------------------------------------
def test_membership_f1_hand_computation_and_balancing():
    # members [1, 2.5, 3] (a 4th, 0.5, is dropped to balance), non-members [2.5, 4, 5]; threshold 2.5 (inclusive)
    res = membership.membership_f1([1.0, 2.5, 3.0, 0.5], [2.5, 4.0, 5.0], 2.5)
    assert res["n"] == 3 and (res["tp"], res["fp"], res["fn"]) == (2, 1, 1)
    assert res["precision"] == pytest.approx(2 / 3) and res["recall"] == pytest.approx(2 / 3)
    assert res["f1"] == pytest.approx(2 / 3)
    assert membership.membership_f1([1.0], [2.0], 0.0)["f1"] == 0.0  # nothing predicted a member
    assert membership.membership_f1([1.0, 2.0], [3.0, 4.0], 10.0)["f1"] == pytest.approx(2 / 3)  # all "member": 2/3


def test_choose_threshold_rules():
    assert membership.choose_threshold([1.0, 2.0], [3.0, 4.0]) == 2.5
    assert membership.choose_threshold([1.0, 2.0], [3.0, 4.0], rule="median") == 2.5
    # all members below 3.5 except one outlier: max balanced accuracy cuts at 3.5
    members, nonmembers = [1.0, 2.0, 3.0, 9.0], [4.0, 5.0, 6.0, 7.0]
    assert membership.choose_threshold(members, nonmembers, null_fallback_p=None) == 3.5
    with pytest.raises(ValueError):
        membership.choose_threshold(members, nonmembers, rule="accuracy")


def test_perfectly_separated_losses_give_f1_one():
    rng = np.random.default_rng(0)
    res = membership.membership_inference(rng.uniform(0, 1, 400), rng.uniform(2, 3, 500), seed=1)
    assert res["f1"] == 1.0 and res["auc"] == 1.0
    assert 1.0 < res["threshold"] < 2.0
    assert res["n_calib"] == res["n_eval"] == 200 and "calibrate" in res["method"]


def test_identical_distributions_give_chance_f1():
    rng = np.random.default_rng(0)
    res = membership.membership_inference(rng.normal(3.0, 0.5, 4000), rng.normal(3.0, 0.5, 4000), seed=0)
    assert abs(res["f1"] - 0.5) < 0.05
    assert abs(res["auc"] - 0.5) < 0.03
    # the F1-maximising rule does not read 0.5 at chance: everything "member" scores 2/3
    f1_rule = membership.membership_inference(rng.normal(3.0, 0.5, 4000), rng.normal(3.0, 0.5, 4000), rule="f1")
    assert f1_rule["f1"] > 0.6


def test_threshold_never_sees_the_evaluation_members():
    n = 400
    split = membership.calibration_split(n, n, 0.5, seed=3)
    rng = np.random.default_rng(0)
    members = np.empty(n)
    nonmembers = rng.normal(3.0, 0.1, n)
    members[split["member_calib"]] = rng.normal(1.0, 0.1, split["member_calib"].size)
    members[split["member_eval"]] = rng.normal(2.6, 0.1, split["member_eval"].size)
    res = membership.membership_inference(members, nonmembers, seed=3)
    # calibration sees members near 1 and non-members near 3: a cut near 2, which misses the evaluation members
    assert 1.2 < res["threshold"] < 2.4 and res["f1"] < 0.1
    # peeking at the evaluation members would have cut near 2.8 and scored almost 1
    peek = membership.choose_threshold(members[split["member_eval"]], nonmembers[split["nonmember_eval"]])
    assert (
        membership.membership_f1(members[split["member_eval"]], nonmembers[split["nonmember_eval"]], peek)["f1"] > 0.9
    )
    # the evaluation members can change arbitrarily without moving the threshold
    members[split["member_eval"]] = rng.normal(-5.0, 1.0, split["member_eval"].size)
    again = membership.membership_inference(members, nonmembers, seed=3)
    assert again["threshold"] == res["threshold"] and again["f1"] == 1.0


def test_calibration_split_is_disjoint_balanced_and_seeded():
    a = membership.calibration_split(10, 7, 0.5, seed=0)
    assert all(v.size in (3, 4) for v in a.values())
    assert a["member_calib"].size == a["nonmember_calib"].size and a["member_eval"].size == a["nonmember_eval"].size
    assert not set(a["member_calib"]) & set(a["member_eval"])
    assert not set(a["nonmember_calib"]) & set(a["nonmember_eval"])
    b = membership.calibration_split(10, 7, 0.5, seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError):
        membership.calibration_split(1, 5)


# -- the membership-inference law ----------------------------------------------------------------------------------
XL_P = 1_556_075_200
XL_D = np.array([170_654_583, 76_795_021, 18_851_574])
TARGETS = np.array([0.55, 0.75, 0.95])
SMALL_P = 123_702_528
SMALL_D = np.array([13_566_442, 6_104_935, 1_498_634])


def test_corrected_law_reproduces_the_validation_table():
    np.testing.assert_allclose(laws.mi_law_paper_corrected(XL_D / XL_P, c1=1.336), TARGETS, atol=0.002)
    np.testing.assert_allclose(laws.mi_law_paper_corrected(SMALL_D / SMALL_P, c1=1.336), TARGETS, atol=0.002)
    np.testing.assert_allclose(laws.mi_law_inverse(TARGETS, c1=1.336), XL_D / XL_P, rtol=0.01)
    # the printed law at the same sizes is nowhere near the targets
    assert np.max(np.abs(laws.mi_law_printed(XL_D / XL_P) - TARGETS)) > 0.2


def test_corrected_law_limits_and_printed_law_is_inverted():
    big, small = laws.mi_law_paper_corrected([1.0, 100.0]), laws.mi_law_paper_corrected([1e-6, 0.0])
    np.testing.assert_allclose(big, 0.5, atol=1e-6)
    assert np.all(small > 0.99)
    assert np.all(np.diff(laws.mi_law_paper_corrected(np.geomspace(1e-3, 1, 20))) < 0)  # falls with |D|/P
    printed = laws.mi_law_printed([1e2, 1e4, 1e6])
    np.testing.assert_allclose(printed, 1.006, atol=0.002)  # ~1.01 for large |D|, above 1
    assert np.all(printed > 1.0)
    assert np.all(np.diff(laws.mi_law_printed(np.geomspace(1e-3, 1e3, 20))) >= 0)  # rises with |D|


def test_fit_mi_law_recovers_parameters():
    r = np.geomspace(0.003, 0.5, 14)
    noise = np.random.default_rng(0).normal(0, 0.003, r.size)
    fit = laws.fit_mi_law(r, laws.mi_law_paper_corrected(r) + noise)
    assert fit["ok"] and fit["n"] == 14 and fit["rms"] < 0.005
    truth = {"c1": 1.34, "a": -0.034 * 977.0, "b": -0.034 * -33.14}
    for name, value in truth.items():  # within 3 standard errors, and the errors are small
        assert abs(fit["params"][name] - value) < 3 * fit["stderr"][name]
        assert fit["stderr"][name] < 0.1 * abs(value)
    pe = fit["paper_equivalent"]
    assert pe["c1"] == pytest.approx(1.34, abs=0.1)
    assert pe["c2"] == pytest.approx(-0.034, rel=0.1)
    assert pe["c3"] == pytest.approx(-33.14, rel=0.15)

    u = np.log10(r)
    y = 0.5 * (1 + 1.1 / (1 + np.exp(-(-4.0 * u - 6.0)))) + noise
    flog = laws.fit_mi_law(r, y, x_scale="log10")
    assert flog["ok"]
    assert flog["params"]["c1"] == pytest.approx(1.1, abs=0.03)
    assert flog["params"]["a"] == pytest.approx(-4.0, rel=0.1)
    assert flog["params"]["b"] == pytest.approx(-6.0, rel=0.1)
    assert flog["midpoint_d_over_p"] == pytest.approx(10**-1.5, rel=0.1)


def test_fit_mi_law_on_a_flat_f1_does_not_overflow():
    # every run at F1 = 1 (all members found): the log10 fit's midpoint runs off far past the data, where
    # 10**midpoint overflowed a float and crashed `gapt-bench paper`
    r = np.repeat([0.0045, 0.0091, 0.0182, 0.0728, 0.00455, 0.0091, 0.0182, 0.0728], 3)
    f1 = np.tile([1.0, 0.995, 0.99], 8)  # no trend in N/P: three seeds a little apart, two models
    flog = laws.fit_mi_law(r, f1, x_scale="log10")
    mid = flog.get("midpoint_d_over_p")
    assert mid is None or math.isfinite(mid)
    assert not flog["ok"] or flog["rms"] < 0.01


def test_fit_mi_law_needs_more_points_than_parameters():
    r = XL_D / XL_P
    short = laws.fit_mi_law(r, TARGETS)
    assert not short["ok"] and short["params"] is None and "need at least 4" in short["why"]
    fixed = laws.fit_mi_law(r, TARGETS, c1=1.336)  # 2 free parameters, 3 points
    assert fixed["ok"] and fixed["params"]["c1"] == 1.336
    assert fixed["paper_equivalent"]["c3"] == pytest.approx(-33.14, rel=0.02)


# -- data and double descent ---------------------------------------------------------------------------------------
def test_exact_dedup_removes_exact_duplicates_only_in_first_occurrence_order():
    x = np.array([[5, 1, 2], [0, 1, 2], [5, 1, 2], [0, 1, 3], [0, 1, 2], [9, 9, 9]])
    idx = M.exact_dedup(x)
    np.testing.assert_array_equal(idx, [0, 1, 3, 5])
    np.testing.assert_array_equal(M.exact_dedup(torch.as_tensor(x)), idx)
    assert M.exact_dedup(np.zeros((0, 64), dtype=np.int64)).size == 0


def test_double_descent_peak():
    ratios = [0.25, 0.25, 0.5, 1.0, 1.003, 2.0, 4.0]  # 1.0 and 1.003: two seeds of one size
    losses = [5.0, 5.2, 6.0, 7.0, 9.0, 6.5, 5.5]
    res = laws.double_descent_peak(ratios, losses)
    assert res["peak_ratio"] == pytest.approx(1.0015) and res["peak_loss"] == pytest.approx(8.0)
    assert res["located"] and res["within_factor"] is True and len(res["per_ratio"]) == 5
    far = laws.double_descent_peak([0.5, 4.0, 8.0, 16.0], [1.0, 3.0, 2.0, 1.0])
    assert far["located"] and far["within_factor"] is False and far["peak_ratio"] == 4.0
    assert laws.double_descent_peak([0.5, 4.0, 8.0, 16.0], [1.0, 3.0, 2.0, 1.0], factor=4)["within_factor"] is True
    edge = laws.double_descent_peak([0.5, 1.0, 2.0], [3.0, 2.0, 1.0])
    assert not edge["located"] and edge["within_factor"] is None and "not bracketed" in edge["statement"]
    per = laws.double_descent_peaks([0.5, 1.0, 2.0, 0.5, 1.0, 2.0], [1, 3, 2, 1, 2, 3], ["a"] * 3 + ["b"] * 3)
    assert per["a"]["peak_ratio"] == 1.0 and not per["b"]["located"]
