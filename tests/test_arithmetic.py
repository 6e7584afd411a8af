"""arithmetic_ood: tokenizer, data, splits, masks, scoring and an end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gapt_bench.config import ConfigError
from gapt_bench.launch.plan import make_plan
from gapt_bench.tasks.arithmetic_ood.task import (
    BOS,
    DIGIT0,
    EOS,
    EQUALS,
    SPACE,
    VOCAB_SIZE,
    ArithmeticOOD,
    Examples,
    answer_mask,
    answer_tokens,
    decode,
    digit_accuracy,
    digit_matches,
    encode,
    exact_match,
    is_exact,
    n_digits,
    padded_examples,
    tokenize,
)

SMALL = ["data.n_train=3000", "data.n_id=200", "data.n_ood=200"]
METRICS = {
    "id_answer_ce",
    "ood_answer_ce",
    "id_exact_match",
    "ood_exact_match",
    "id_digit_acc",
    "ood_digit_acc",
    "ood_mbe",
    "ood_mbe_centered",
    "id_mbe",
}


def make_task(*overrides: str, seed: int = 0, preset: str = "quick") -> ArithmeticOOD:
    cfg = make_plan(["arithmetic_ood"], ["baseline"], [seed], preset, [*SMALL, *overrides])[0]
    task = ArithmeticOOD(cfg)
    task.setup()
    return task


def parse(text: str) -> tuple[int, int, int]:
    assert text.startswith("<bos>") and text.endswith("<eos>")
    lhs, rhs = text[len("<bos>") : -len("<eos>")].split(" = ")
    a, b = lhs.split(" x ")
    return int(a), int(b), int(rhs)


def test_tokenizer_round_trips():
    assert VOCAB_SIZE == 15
    for text in ["<bos>12 x 34 = 408<eos>", "<bos>0 x 9 = 0<eos><bos>7 x 7 = 49<eos>", " x =0123456789"]:
        ids = encode(text)
        assert decode(ids) == text
        assert encode(decode(ids)) == ids
    assert encode("<bos>1 x 2 = 2<eos>") == [0, 6, 4, 2, 4, 7, 4, 3, 4, 7, 1]
    with pytest.raises(ValueError):
        encode("1 + 2")


def test_generated_examples_decode_to_correct_products():
    task = make_task()
    for ex, digits in ((task.train_ex, (1, 2)), (task.id_ex, (1, 2)), (task.ood_ex, (3, 4))):
        rows, _, lengths = padded_examples(ex.take(np.arange(50)))
        for row, n, a, b in zip(rows.tolist(), lengths.tolist(), ex.a[:50], ex.b[:50]):
            pa, pb, pc = parse(decode(row[:n]))
            assert (pa, pb) == (a, b) and pc == pa * pb
            assert digits[0] <= len(str(pa)) <= digits[1] and digits[0] <= len(str(pb)) <= digits[1]
    # the training stream is whole examples back to back
    toks, _, _starts = tokenize(task.train_ex.take(np.arange(20)))
    text = decode(toks)
    for piece in text.split("<eos>")[:-1]:
        a, b, c = parse(piece + "<eos>")
        assert c == a * b


def test_digit_counts_uniform_then_number_uniform():
    task = make_task("data.n_train=40000")
    a = task.train_ex.a
    counts = np.bincount(n_digits(a))[1:]
    assert abs(counts[0] / counts.sum() - 0.5) < 0.02  # 1 and 2 digits equally likely
    assert a.min() == 1 and a.max() == 99  # a 1-digit operand is 1-9 (the author's generator)


def test_splits_are_disjoint_and_deterministic():
    task = make_task()
    tr, idk, ood = task.train_ex.keys(), task.id_ex.keys(), task.ood_ex.keys()
    assert not np.isin(idk, tr).any() and not np.isin(ood, tr).any() and not np.isin(ood, idk).any()
    # a x b and b x a belong to the same split
    flipped = Examples(task.id_ex.b, task.id_ex.a).keys()
    assert not np.isin(flipped, tr).any()
    # the dataset is fixed by data.data_seed, not by the run seed; the run seed changes the data order
    other = make_task(seed=1)
    assert np.array_equal(task.train_ex.a, other.train_ex.a) and np.array_equal(task.ood_ex.b, other.ood_ex.b)
    x0, y0 = task.get_batch(3)
    x0b, y0b = make_task().get_batch(3)
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b)
    assert not torch.equal(x0, other.get_batch(3)[0])
    # an overlapping OOD range is refused
    with pytest.raises(ConfigError, match="overlaps"):
        make_plan(["arithmetic_ood"], ["baseline"], [0], "quick", ["data.ood_digits=[2, 3]"])


@pytest.mark.parametrize("eos", [False, True])
def test_answer_mask_covers_exactly_the_answer(eos):
    ex = Examples(np.array([12, 7, 99]), np.array([34, 3, 99]))
    rows, roles, _lengths = padded_examples(ex)
    mask = answer_mask(roles[:, 1:], include_eos=eos)  # aligned with targets rows[:, 1:]
    for row, m, c in zip(rows.tolist(), mask.tolist(), ex.c.tolist()):
        targets = row[1:]
        picked = [t for t, keep in zip(targets, m) if keep]
        assert picked == answer_tokens(c, eos=eos)
        first = m.index(True)
        assert targets[first - 1] == EQUALS and targets[first] == SPACE  # starts right after '='


def test_training_targets_all_tokens_or_answer_only():
    task = make_task()
    x, y = task.get_batch(0)
    assert x.shape == y.shape == (64, 32)
    packed = y == -100
    # packed rows: start at <bos>, whole examples; every real token after the first is a target
    assert (x[:, 0] == BOS).all()
    assert torch.equal(y[:, :-1][~packed[:, :-1]], x[:, 1:][~packed[:, :-1]])
    stream = make_task("data.train_layout=stream")
    xs, ys = stream.get_batch(5)
    assert (ys != -100).all() and torch.equal(ys[:, :-1], xs[:, 1:])
    # consecutive windows continue the stream, also across an epoch boundary
    B, S = 64, 32
    per_epoch = stream.epoch_tokens // (B * S)
    a, _ = stream.get_batch(per_epoch)
    b, _ = stream.get_batch(per_epoch + 1)
    assert a.shape == b.shape == (B, S)
    ans = make_task("data.train_loss=answer")
    _xa, ya = ans.get_batch(0)
    kept = ya[ya != -100]
    assert set(kept.tolist()) <= {SPACE, EOS, *range(5, 15)}
    assert (kept == EOS).any()  # <eos> is trained so greedy answers can stop


def test_seq_len_must_be_a_multiple_of_the_patch():
    with pytest.raises(ConfigError, match=r"multiple of mbe.patch_size"):
        make_plan(["arithmetic_ood"], ["baseline"], [0], "quick", ["train.seq_len=36"])
    with pytest.raises(ConfigError, match="longest example"):
        make_plan(["arithmetic_ood"], ["baseline"], [0], "quick", ["train.seq_len=16"])


def test_exact_match_and_digit_accuracy_on_hand_made_answers():
    def gen(text: str) -> list[int]:
        return encode(text)

    c = 408
    assert is_exact(gen(" 408<eos>"), c)
    assert is_exact(gen(" 408<eos>12"), c)  # what follows <eos> is ignored
    assert not is_exact(gen(" 408"), c)  # never stopped
    assert not is_exact(gen(" 4080<eos>"), c)
    assert not is_exact(gen("408<eos>"), c)  # the space is part of the answer
    assert digit_matches(gen(" 408<eos>"), c) == (3, 3)
    assert digit_matches(gen(" 998<eos>"), c) == (1, 3)  # aligned from the least significant digit
    assert digit_matches(gen(" 08<eos>"), c) == (2, 3)  # a missing leading digit
    assert digit_matches(gen(" 1408<eos>"), c) == (3, 3)
    assert digit_matches(gen(" 4 8<eos>"), c) == (2, 3)
    gens = [gen(" 408<eos>"), gen(" 999<eos>"), gen(" 12<eos>")]
    answers = [408, 408, 12]
    assert exact_match(gens, answers) == pytest.approx(2 / 3)
    assert digit_accuracy(gens, answers) == pytest.approx((3 + 0 + 2) / 8)


class _PartialOracle(torch.nn.Module):
    """A stand-in LM that knows the products but gets answer token j of a x b wrong when (a + 3b + j) % 5 == 0."""

    def forward(self, input_ids, use_cache=False):
        from types import SimpleNamespace

        B, S = input_ids.shape
        logits = torch.zeros(B, S, VOCAB_SIZE)
        for i, row in enumerate(input_ids.tolist()):
            for t in range(S):
                nxt = BOS
                if EQUALS in row[: t + 1]:
                    eq = t - row[: t + 1][::-1].index(EQUALS)  # position of the last '='
                    a, b = (int(v) for v in decode(row[row[:eq].index(BOS) + 1 : eq]).rstrip().split(" x "))
                    j = t - eq  # answer token j is predicted at this position
                    want = answer_tokens(a * b, eos=True)
                    if j < len(want):
                        nxt = want[j] if (a + 3 * b + j) % 5 else DIGIT0 + (want[j] - DIGIT0 + 1) % 10
                logits[i, t, nxt] = 1.0
        return SimpleNamespace(logits=logits)


def test_greedy_decoding_agrees_with_teacher_forced_argmax():
    """Greedy decoding follows the answer exactly as far as the teacher-forced argmax is right, and no further."""
    task = make_task()
    ex = task.id_ex.take(np.arange(60))
    rows, roles, _ = padded_examples(ex)
    m = answer_mask(roles[:, 1:], include_eos=True)
    model = _PartialOracle()
    gens = task.greedy(model, ex, torch.device("cpu"))
    pred = model(input_ids=rows[:, :-1]).logits.argmax(-1)
    seen = set()
    for i, (gen, c) in enumerate(zip(gens, ex.c.tolist())):
        want = answer_tokens(c, eos=True)
        forced = (pred[i] == rows[i, 1:])[m[i]].tolist()
        k_forced = forced.index(False) if False in forced else len(want)
        k_greedy = next((j for j, (g, w) in enumerate(zip(gen, want)) if g != w), min(len(gen), len(want)))
        assert k_greedy == k_forced
        assert is_exact(gen, c) == (k_forced == len(want))
        seen.add(k_forced)
    assert len(seen) >= 3  # answers followed for different lengths, some to the end


def test_end_to_end_run_lands_all_metrics(tmp_path):
    from gapt_bench.cli import main

    rc = main(
        [
            "run",
            "--tasks",
            "arithmetic_ood",
            "--methods",
            "baseline,gapt",
            "--seeds",
            "0",
            "--out",
            str(tmp_path),
            "--workers",
            "1",
            "--no-progress",
            "--no-report",
            "--set",
            "train.tokens=40960",
            "--set",
            "train.warmup_steps=5",
            "--set",
            "gapt.patience_m=3",
            "--set",
            "gapt.patience_c=3",
            "--set",
            "gapt.delta_e=1.0",
            *[x for o in SMALL for x in ("--set", o)],
        ]
    )
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["method"] for r in recs] == ["baseline", "gapt"]
    for r in recs:
        assert r["status"] == "ok", r["error"]
        m = r["metrics"]
        assert METRICS <= set(m) and {"ood_mbe_layer_0", "ood_mbe_layer_1"} <= set(m)
        assert all(np.isfinite(v) for v in m.values())
        assert 0 <= m["ood_exact_match"] <= 1 and 0 <= m["ood_digit_acc"] <= 1
        assert r["steps"] == 20 and r["tokens"] == 40960
        assert r["config"]["data"]["answer_eos"] is False and r["config"]["data"]["ood_digits"] == [3, 4]
    assert recs[0]["setup_hash"] == recs[1]["setup_hash"]  # same data, model, budget for both arms
    assert recs[1]["summary"]["gate_switches"] >= 1


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_the_presets_recorded_variant_names_the_layers_that_are_regularised(preset):
    """reg.layers=middle on a model too shallow for a middle falls back to every layer: the `about:` text that goes
    into each record must say so rather than claim "the middle layers"."""
    from gapt_bench.methods import METHODS

    cfg = make_plan(["arithmetic_ood"], ["gapt"], [0], preset, [])[0]
    pool = METHODS.get("gapt")(cfg, cfg.model.n_layer, matched=None).reg_layers_all()
    variant = cfg.about["variant"]
    if pool == list(range(cfg.model.n_layer)) and cfg.reg.layers != "all":
        assert "middle layers" not in variant and "all layers are regularised" in variant, variant
