"""Membership-inference attack scores (loss, reference, zlib, Min-K%, Min-K%++) and their ROC metrics."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from gapt_bench.measures import membership as B
from gapt_bench.measures import memorization as M

VOCAB = 50


def tiny_gpt2(seed: int) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def random_tokens(n: int, s: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, s), generator=torch.Generator().manual_seed(seed))


def brute_auc(m: np.ndarray, nm: np.ndarray) -> float:
    """Every member/non-member pair: 1 if the member scores higher, 1/2 on a tie."""
    diff = m[:, None] - nm[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def brute_tpr(m: np.ndarray, nm: np.ndarray, fpr: float) -> float:
    """Max TPR of "member iff score >= t" over t in the pooled scores (and +inf) with FPR <= fpr."""
    best = 0.0
    for t in np.concatenate([m, nm, [np.inf]]):
        if np.mean(nm >= t) <= fpr:
            best = max(best, float(np.mean(m >= t)))
    return best


# -- roc_metrics -------------------------------------------------------------------------------------------------
def test_auc_matches_pairwise_brute_force_with_ties():
    rng = np.random.default_rng(1)
    for n_m, n_nm in [(7, 11), (40, 25), (1, 3)]:
        m = rng.integers(0, 6, n_m).astype(float) + 0.5  # few distinct values: many ties
        nm = rng.integers(0, 5, n_nm).astype(float)
        nm[: n_nm // 2] += 0.5
        got = B.roc_metrics(m, nm, n_boot=0)
        assert got["auc"] == pytest.approx(brute_auc(m, nm), abs=1e-12)
        assert got["auc_low"] is None and got["auc_high"] is None
        # the loss attack's AUC is the same statistic with the sign flipped (lower loss = member)
        assert B.membership_auc(-m, -nm) == pytest.approx(got["auc"], abs=1e-12)
    assert B.roc_metrics([1.0, 2.0], [1.0, 2.0], n_boot=0)["auc"] == 0.5
    assert B.roc_metrics([3.0, 4.0], [1.0, 2.0], n_boot=0)["auc"] == 1.0


def test_tpr_at_fpr_by_hand_and_by_brute_force():
    nm = np.arange(10.0)  # 0..9
    m = np.array([10.0, 9.5, 8.5, 8.0, 5.0, 3.0])
    got = B.roc_metrics(m, nm, fprs=(0.05, 0.1, 0.2, 0.5), n_boot=0)
    # FPR 5% of 10: no false positive allowed, t > 9 -> {10, 9.5}
    assert got["tpr_at_5%"] == pytest.approx(2 / 6)
    # 10%: one allowed (the 9), t > 8: the member tied with the non-member 8 would cost a second one
    assert got["tpr_at_10%"] == pytest.approx(3 / 6)
    assert got["tpr_at_20%"] == pytest.approx(4 / 6)  # t > 7
    assert got["tpr_at_50%"] == pytest.approx(5 / 6)  # t > 4
    assert (got["n_members"], got["n_nonmembers"]) == (6, 10)
    assert {"tpr_at_0.1%", "tpr_at_1%"} <= set(B.roc_metrics(m, nm, n_boot=0))
    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = rng.integers(0, 8, 30).astype(float) + 1, rng.integers(0, 8, 40).astype(float)
        fprs = (0.01, 0.05, 0.1, 0.25, 0.6)
        res = B.roc_metrics(a, b, fprs=fprs, n_boot=0)
        for f in fprs:
            assert res[f"tpr_at_{100 * f:g}%"] == pytest.approx(brute_tpr(a, b, f))


def test_bootstrap_interval_contains_estimate_narrows_and_is_seeded():
    rng = np.random.default_rng(3)
    small = rng.normal(0.5, 1, 30), rng.normal(0, 1, 30)
    large = rng.normal(0.5, 1, 600), rng.normal(0, 1, 600)
    r_small, r_large = B.roc_metrics(*small, n_boot=500), B.roc_metrics(*large, n_boot=500)
    for r in (r_small, r_large):
        assert r["auc_low"] < r["auc"] < r["auc_high"]
    assert r_large["auc_high"] - r_large["auc_low"] < 0.5 * (r_small["auc_high"] - r_small["auc_low"])
    assert 0.5 < r_large["auc_low"]  # a true AUC of Phi(0.5 / sqrt 2) = 0.64
    assert B.roc_metrics(*small, n_boot=500, seed=7) == B.roc_metrics(*small, n_boot=500, seed=7)
    assert B.roc_metrics(*small, n_boot=500, seed=7)["auc_low"] != B.roc_metrics(*small, n_boot=500, seed=8)["auc_low"]
    narrow = B.roc_metrics(*small, n_boot=500, confidence=0.5)
    assert r_small["auc_low"] <= narrow["auc_low"] <= narrow["auc_high"] <= r_small["auc_high"]


def test_roc_metrics_rejects_bad_input():
    for bad in ([], [1.0, np.nan], [[1.0, 2.0]]):
        with pytest.raises(ValueError):
            B.roc_metrics(bad, [1.0, 2.0])
    with pytest.raises(ValueError):
        B.roc_metrics([1.0], [2.0], fprs=(0.0,))
    with pytest.raises(ValueError):
        B.roc_metrics([1.0], [2.0], confidence=1.0)


# -- attack_scores -----------------------------------------------------------------------------------------------
def hand_stats() -> dict[str, np.ndarray]:
    return {
        "logp": np.array([[-1.0, -2.0, -3.0, -4.0], [-0.5, -1.5, -6.0, -1.0]]),
        "mu": np.array([[-2.0, -2.0, -2.0, -2.0], [-1.0, -1.0, -1.0, -1.0]]),
        "sigma": np.array([[1.0, 2.0, 0.5, 1.0], [0.5, 0.0, 2.0, 1.0]]),
    }


def test_attack_scores_by_hand():
    ref = {"logp": np.array([[-2.0, -2.0, -2.0], [-1.0, -1.0, -4.0]])}  # another tokenizer: T may differ
    got = B.attack_scores(hand_stats(), ref_stats=ref, zlib_bytes=[10, 4], k=0.5)
    assert set(got) == {"loss", "reference", "zlib", "min_k", "min_k_plus_plus"}
    np.testing.assert_allclose(got["loss"], [-2.5, -2.25])
    np.testing.assert_allclose(got["reference"], [-2.5 + 2.0, -2.25 + 2.0])
    np.testing.assert_allclose(got["zlib"], [-10.0 / 10, -9.0 / 4])
    np.testing.assert_allclose(got["min_k"], [(-4 - 3) / 2, (-6 - 1.5) / 2])  # the lowest 2 of 4
    # z = (logp - mu) / sigma: row 0 [1, 0, -2, -2]; row 1 [1, -0.5 / 0 -> 0 (guarded), -2.5, 0]
    np.testing.assert_allclose(got["min_k_plus_plus"], [-2.0, (-2.5 + 0) / 2])
    for v in got.values():
        assert v.dtype == np.float64 and v.shape == (2,)
    assert set(B.attack_scores(hand_stats())) == {"loss", "min_k", "min_k_plus_plus"}
    # k = 0.2 of 4 tokens: floor(0.8) -> at least 1, the single lowest
    np.testing.assert_allclose(B.attack_scores(hand_stats(), k=0.2)["min_k"], [-4.0, -6.0])


def test_min_k_count_and_zlib_length():
    assert B.min_k_count(63, 0.2) == 12  # floor
    assert B.min_k_count(100, 0.29) == 29  # 0.29 * 100 = 28.999... in floats
    assert B.min_k_count(3, 0.2) == 1 and B.min_k_count(5, 1.0) == 5
    with pytest.raises(ValueError):
        B.min_k_count(5, 0.0)
    text = "héllo " * 50
    assert B.zlib_length(text) == len(zlib.compress(text.encode("utf-8")))
    assert B.zlib_length(text) < B.zlib_length("".join(chr(33 + (i * 7919) % 90) for i in range(300)))


def test_attack_scores_rejects_bad_input():
    s = hand_stats()
    cases = [
        {**s, "logp": s["logp"][:, :3]},  # shapes differ
        {**s, "mu": np.where(s["mu"] < -1.5, np.nan, s["mu"])},  # non-finite
        {k: v for k, v in s.items() if k != "sigma"},  # missing key
        {**s, "sigma": -s["sigma"]},
        {k: v[:0] for k, v in s.items()},  # empty
    ]
    for bad in cases:
        with pytest.raises(ValueError):
            B.attack_scores(bad)
    with pytest.raises(ValueError):
        B.attack_scores(s, zlib_bytes=[3])
    with pytest.raises(ValueError):
        B.attack_scores(s, zlib_bytes=[3, 0])
    with pytest.raises(ValueError):
        B.attack_scores(s, ref_stats={"logp": np.zeros((3, 4))})


# -- token_statistics --------------------------------------------------------------------------------------------
def test_token_statistics_matches_direct_computation():
    model = tiny_gpt2(0)
    model.train()
    x = random_tokens(5, 12, seed=1)
    got = M.token_statistics(model, x, batch_size=2)  # batches of 2, 2, 1
    assert model.training  # flag restored
    assert set(got) == {"logp", "mu", "sigma"}
    for v in got.values():
        assert v.shape == (5, 11) and v.dtype == np.float64
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].double()
    ce = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
    np.testing.assert_allclose(got["logp"], -ce.numpy(), atol=1e-5)
    p = torch.softmax(logits, -1)
    lp = torch.log(p)
    mu = (p * lp).sum(-1)
    sigma = (p * (lp - mu[..., None]) ** 2).sum(-1).sqrt()
    np.testing.assert_allclose(got["mu"], mu.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["sigma"], sigma.numpy(), atol=1e-5)
    # an untrained model predicts nearly uniformly: entropy near log V, little spread of log p
    assert np.all(np.abs(got["mu"] + math.log(VOCAB)) < 0.5) and np.all(got["sigma"] < 1.0)
    # the per-sequence sum is the code length of sequence_scores (bits there, nats here)
    np.testing.assert_allclose(-got["logp"].sum(1) / math.log(2), M.sequence_nll_bits(model, x), rtol=1e-5)


# -- the planted case: a model that memorised its members --------------------------------------------------------
def test_memorised_members_are_detected_and_unseen_model_is_at_chance():
    members, nonmembers = random_tokens(32, 16, seed=100), random_tokens(32, 16, seed=101)
    model = tiny_gpt2(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(200):  # full batch: the members' loss falls from ~log 50 = 3.9 to ~1.1 nats per token
        loss = model(input_ids=members, labels=members, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    unseen = tiny_gpt2(1000)  # same shape, never trained: the reference model, and the null
    sm, snm = M.token_statistics(model, members), M.token_statistics(model, nonmembers)
    rm, rnm = M.token_statistics(unseen, members), M.token_statistics(unseen, nonmembers)
    trained = B.roc_metrics(B.attack_scores(sm)["loss"], B.attack_scores(snm)["loss"], n_boot=200)
    assert trained["auc"] > 0.95 and trained["auc_low"] > 0.8
    null = B.roc_metrics(B.attack_scores(rm)["loss"], B.attack_scores(rnm)["loss"], n_boot=0)
    assert abs(null["auc"] - 0.5) < 0.25  # 32 v 32: the null AUC has sd ~0.07

    def text(rows: torch.Tensor) -> list[int]:
        return [B.zlib_length(" ".join(map(str, r.tolist()))) for r in rows]

    rep = B.membership_scores_report(
        sm, snm, member_ref=rm, nonmember_ref=rnm, member_zlib=text(members), nonmember_zlib=text(nonmembers)
    )
    assert (rep["n_calib"], rep["n_eval"], rep["n_members"], rep["n_nonmembers"]) == (16, 16, 32, 32)
    for name in ("loss", "reference", "zlib", "min_k", "min_k_plus_plus"):
        assert rep[name]["auc"] > 0.9 and rep[name]["f1"] > 0.8, (name, rep[name])


# -- membership_scores_report ------------------------------------------------------------------------------------
def test_report_scores_the_evaluation_split_with_a_calibrated_threshold():
    rng = np.random.default_rng(5)

    def stats(n: int, shift: float) -> dict[str, np.ndarray]:
        logp = -np.abs(rng.normal(2 - shift, 1, (n, 9)))
        return {"logp": logp, "mu": np.full_like(logp, -2.0), "sigma": np.full_like(logp, 1.0)}

    sm, snm = stats(40, 1.0), stats(50, 0.0)
    rep = B.membership_scores_report(sm, snm, calib_fraction=0.25, seed=3, n_boot=100)
    assert set(rep) >= {"loss", "min_k", "min_k_plus_plus", "n_calib", "n_eval"}
    assert "reference" not in rep and "zlib" not in rep
    assert (rep["n_calib"], rep["n_eval"], rep["n_members"], rep["n_nonmembers"]) == (10, 30, 40, 50)
    split = B.calibration_split(40, 50, 0.25, 3)
    am, anm = B.attack_scores(sm), B.attack_scores(snm)
    for name in ("loss", "min_k", "min_k_plus_plus"):
        me, nme = am[name][split["member_eval"]], anm[name][split["nonmember_eval"]]
        r = rep[name]
        assert r["auc"] == B.roc_metrics(me, nme, n_boot=0)["auc"]
        # the threshold is in score units, member iff score >= threshold
        tp, fp = int(np.sum(me >= r["threshold"])), int(np.sum(nme >= r["threshold"]))
        assert r["f1"] == pytest.approx(2 * tp / (2 * tp + fp + (me.size - tp)) if tp else 0.0)
    assert rep["loss"]["auc"] > 0.7
    with pytest.raises(ValueError):
        B.membership_scores_report(sm, snm, member_ref={"logp": sm["logp"]})
