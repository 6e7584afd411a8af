"""text_memorization: the estimators against hand computations on the task's own data, the data pipeline (cut,
exact dedup, member/non-member disjointness), the reference cache and its claim, sizing N, bad input (exit 2 before
anything trains), the paper preset's parameter counts, a tiny end-to-end run, the analysis, its paper rows and plots.
CPU, no network, about a minute."""

from __future__ import annotations

import importlib
import json
import math
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from factories import make_record
from torch import nn

from gapt_bench.cli import main
from gapt_bench.config import ConfigError
from gapt_bench.data import doc_split
from gapt_bench.launch.plan import make_plan
from gapt_bench.measures import memorization as M
from gapt_bench.results.analysis import analyse_memorization, laws, paper_table, render
from gapt_bench.tasks import TASKS
from gapt_bench.training.model import build_model, paper_param_count
from gapt_bench.training.runtime import Interrupted, RunContext

pytestmark = pytest.mark.usefixtures("offline_env")
TASK = "text_memorization"


def task_module(part: str = "task"):
    """A part of the task (task, sequences, references, options), imported by name."""
    return importlib.import_module(f"gapt_bench.tasks.text_memorization.{part}")


def plan(*overrides: str, preset: str = "tiny", method: str = "baseline", seed: int = 0):
    return make_plan([TASK], [method], [seed], preset, list(overrides))


def make_task(*overrides: str, seed: int = 0, ctx=None):
    (cfg,) = plan(*overrides, seed=seed)
    task = TASKS.get(TASK)(cfg)
    task.setup(ctx)
    return task


class SequenceLookupLM(nn.Module):
    """Predicts the next token of any sequence in `known` with certainty (logit `confidence`), and defers to `base`
    (or uniform) anywhere else: an exact memorizer of `known`. Looks like an HF causal LM (`.logits`)."""

    def __init__(self, known: torch.Tensor, vocab: int, base: nn.Module | None = None, confidence: float = 60.0):
        super().__init__()
        self.known = {tuple(s.tolist()) for s in known}
        self.vocab, self.base, self.confidence = vocab, base, confidence
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        b, s = input_ids.shape
        logits = (
            self.base(input_ids=input_ids).logits.float().clone()
            if self.base is not None
            else torch.zeros(b, s, self.vocab)
        )
        for i, row in enumerate(input_ids):
            if tuple(row.tolist()) in self.known:
                logits[i, :-1] = 0.0
                logits[i, torch.arange(s - 1), row[1:]] = self.confidence
        return SimpleNamespace(logits=logits)


# ---------------------------------------------------------------------------------------------------------------
# estimators on the task's own data


def test_sequence_scores_hits_for_several_prefixes_equal_literal_greedy_decoding():
    torch.manual_seed(0)
    model = build_model(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=24)
    # 4 sequences the model continues greedily from 3 tokens, the same with token 20 changed, 3 random ones
    greedy = torch.randint(0, 40, (4, 3), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        while greedy.shape[1] < 24:
            greedy = torch.cat([greedy, model(input_ids=greedy).logits[:, -1].argmax(-1, keepdim=True)], 1)
    changed = greedy.clone()
    changed[:, 20] = (changed[:, 20] + 1) % 40
    x = torch.cat([greedy, changed, torch.randint(0, 40, (3, 24), generator=torch.Generator().manual_seed(2))])
    _, hits = M.sequence_scores(model, x, [3, 12, 23], batch_size=4)  # one pass, batches of 4, 4 and 3
    for p in (3, 12, 23):
        np.testing.assert_array_equal(hits[p], M.greedy_extraction(model, x, p, method="decode"))
    assert hits[3][:4].all() and not hits[3][4:8].any() and not hits[12][4:8].any()
    with pytest.raises(ValueError, match="prefix_len"):
        M.sequence_scores(model, x, [24])


def test_a_memorizer_of_one_sequence_scores_its_reference_code_length_and_zero_elsewhere():
    task = make_task()
    torch.manual_seed(3)
    ref = build_model(n_layer=1, n_embd=16, n_head=2, vocab_size=257, n_positions=32)
    nll_ref = task.score(ref, task.train, "cpu")[0]
    # a model that memorizes sequence 0 exactly (and equals the reference elsewhere) scores its code length
    memorizer = SequenceLookupLM(task.train[:1], 257, base=ref)
    nll_mem = task.score(memorizer, task.train, "cpu")[0]
    per_seq = M.unintended_memorization(nll_mem, nll_ref)
    assert per_seq[0] == pytest.approx(nll_ref[0], rel=1e-6) and nll_ref[0] > 100  # ~5 bits x 31 tokens
    assert np.all(per_seq[1:] == 0.0)
    assert M.total_unintended_memorization(nll_mem, nll_ref) == pytest.approx(nll_ref[0], rel=1e-6)


def test_clipping_is_per_sequence_on_model_code_lengths():
    # two 3-token sequences (2 predicted tokens each); per-token NLL (bits) of a model and a reference
    lookup = {(1, 2): 1.0, (2, 3): 9.0, (4, 5): 6.0, (5, 6): 1.0}
    ref_bits = {(1, 2): 4.0, (2, 3): 4.0, (4, 5): 2.0, (5, 6): 2.0}

    class Bits(nn.Module):
        def __init__(self, table):
            super().__init__()
            self.table = table

        def forward(self, input_ids, use_cache=False):  # puts exactly 2^-bits on the true next token
            b, s = input_ids.shape
            logits = torch.full((b, s, 8), -1e4, dtype=torch.float64)
            for i, row in enumerate(input_ids.tolist()):
                for t in range(s - 1):
                    p = 2.0 ** -self.table[(row[t], row[t + 1])]
                    logits[i, t, row[t + 1]] = math.log(p)
                    others = [v for v in range(8) if v != row[t + 1]]
                    logits[i, t, others] = math.log((1 - p) / len(others)) if p < 1 else -1e4
            return SimpleNamespace(logits=logits)

    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    model, ref = M.sequence_nll_bits(Bits(lookup), x), M.sequence_nll_bits(Bits(ref_bits), x)
    np.testing.assert_allclose(model, [10.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose(ref, [8.0, 4.0], rtol=1e-6)
    # sequence 1 is better on token 1 (1 < 4) but worse overall (10 > 8): 0, not 3; sequence 2 is worse: 0
    # (per-token clipping would report 3 + 1 = 4 bits)
    assert M.total_unintended_memorization(model, ref) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# data: cut, dedup, disjointness


def test_cut_sequences_never_crosses_a_document():
    T = task_module("sequences")
    eot = 99
    tokens = np.array([1, 2, 3, 4, 5, eot, 6, 7, eot, 8, 9, 10, 11, eot, 12, 13, 14])
    chunks = T.cut_sequences(tokens, eot, 2, "chunks")
    np.testing.assert_array_equal(chunks, [[1, 2], [3, 4], [6, 7], [8, 9], [10, 11], [12, 13]])
    first = T.cut_sequences(tokens, eot, 3, "first")
    np.testing.assert_array_equal(first, [[1, 2, 3], [8, 9, 10], [12, 13, 14]])
    assert (T.cut_sequences(tokens, eot, 3, "chunks") != eot).all()


def _write_docs(path: Path, texts: list[str]) -> Path:
    pq.write_table(pa.table({"text": texts}), path)
    return path


def _docs_with_shared_chunk(n_train: int = 60, n_val: int = 12) -> list[str]:
    """Documents whose first 32 bytes are the same block: some land in training, some in held-out; plus a
    document repeated twice (an exact duplicate chunk inside the training split)."""
    shared = "The same opening line, 32 bytes."
    assert len(shared.encode()) == 32
    rng = np.random.default_rng(0)
    train, val = [], []
    i = 0
    while len(train) < n_train or len(val) < n_val:
        body = " ".join(f"w{int(x)}" for x in rng.integers(0, 10_000, 60))
        text = shared + f" doc {i}: " + body
        i += 1
        (train if doc_split(text) == "train" else val).append(text)
    train, val = train[:n_train], val[:n_val]
    return train + val + [train[0]]  # train[0] twice: identical chunks


def test_dedup_and_nonmember_disjointness_on_a_source_with_overlaps(tmp_path):
    src = _write_docs(tmp_path / "docs.parquet", _docs_with_shared_chunk())
    (cfg,) = plan(
        f"data.source={src}",
        "data.val_tokens=100000",
        "data.nonmember_sequences=16",
        "data.pool_sequences=null",
        "data.n_sequences=16",
        "data.mi_sequences=16",
    )
    T = task_module("sequences")
    data = T.prepare_sequences(cfg)
    st = data.stats
    # exact duplicates removed: the shared opening chunk of 59 of the 60 training docs, and every chunk of the
    # repeated document
    assert st["train_duplicates_removed"] >= 59 + 1
    assert st["train_distinct"] == data.pool.shape[0] == len(M.exact_dedup(data.pool))
    # held-out copies of the shared chunk were dropped, and no non-member equals any pool sequence
    assert st["heldout_equal_to_training_removed"] >= 1
    assert st["nonmember_pool_overlap"] == 0
    assert not M.rows_in(data.nonmembers, data.pool).any()


@pytest.mark.parametrize("preset", ["tiny", "quick"])
def test_members_and_nonmembers_never_overlap_on_the_task_data(preset):
    cfgs = make_plan([TASK], ["baseline"], [0], preset)
    T = task_module("sequences")
    data = T.prepare_sequences(cfgs[0])
    assert data.stats["nonmember_pool_overlap"] == 0 and data.nonmembers.shape[0] == cfgs[0].data.nonmember_sequences
    assert not M.rows_in(data.nonmembers, data.pool).any()
    # by brute force too (the pool as a set of rows)
    pool = {r.tobytes() for r in data.pool}
    assert not any(r.tobytes() in pool for r in data.nonmembers)
    assert len(pool) == data.pool.shape[0]  # exactly deduplicated
    task = TASKS.get(TASK)(cfgs[-1])
    task.setup()
    train = {r.tobytes() for r in task.train.numpy().astype(data.pool.dtype)}
    assert train <= pool and len(train) == cfgs[-1].data.n_sequences


def test_rows_in_matches_brute_force():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, (300, 4))
    b = rng.integers(0, 3, (40, 4))
    want = np.array([any((row == other).all() for other in b) for row in a])
    np.testing.assert_array_equal(M.rows_in(a, b), want)
    assert not M.rows_in(a, b[:0]).any()


# ---------------------------------------------------------------------------------------------------------------
# sizing, references, presets


def test_n_is_sized_from_the_ratio_and_the_realised_ratio_is_recorded():
    (cfg,) = plan(
        "data.capacity_ratio=0.5", "data.n_sequences=256", "data.sizing_bits_per_token=3.0", "data.pool_sequences=null"
    )
    p = paper_param_count(1, 16, 257, 32)
    assert cfg.data.n_sequences == round(0.5 * 3.64 * p / (3.0 * 31))
    with pytest.raises(ConfigError, match=r"conflicts with data.capacity_ratio"):
        plan("data.capacity_ratio=0.5", "data.n_sequences=100")


def test_reference_key_is_shared_across_methods_and_sizes_but_not_seeds():
    T = task_module("references")
    cpu = torch.device("cpu")

    def key(*o, seed=0, method="baseline"):
        (cfg,) = plan(*o, seed=seed, method=method)
        return T.reference_key(cfg, "ref", task_module("sequences").prepare_sequences(cfg).key, cpu)

    k = key()
    assert key(method="gapt") == k and key("data.n_sequences=64") == k and key("data.data_seed=5") == k
    assert key("data.mi_sequences=32") == k and key("data.prefixes=[2, 4]") == k
    assert key(seed=1) != k and key("model.n_embd=32") != k and key("train.lr=0.02") != k


def test_reference_is_trained_once_and_claimed_while_training(tmp_path):
    from gapt_bench.data.claims import try_claim

    T = task_module("references")
    (cfg,) = plan()
    task = TASKS.get(TASK)(cfg)
    task.setup()  # data only
    key = T.reference_key(cfg, "ref", task.data.key, torch.device("cpu"))
    root = T.reference_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    # another process holds the claim: this run waits, and a stop request ends the wait without training
    claim, _ = try_claim(root, ("reference", key))
    stops = iter([False, True])
    ctx = RunContext(run_dir=tmp_path, stop_requested=lambda: next(stops), log=lambda m: None)
    with pytest.raises(Interrupted, match="waiting for reference"):
        T.ensure_reference(task, "ref", ctx)
    assert not (root / f"{key}.json").exists()
    claim.release()
    # a waiting run picks up the reference the claimant writes
    claim, _ = try_claim(root, ("reference", key))
    got = {}
    waiter = threading.Thread(
        target=lambda: got.setdefault(
            "ref", T.ensure_reference(task, "ref", RunContext(run_dir=tmp_path, log=lambda m: None))
        )
    )
    waiter.start()
    trained = T._train_reference(task, "ref", key, root, RunContext(run_dir=tmp_path, log=lambda m: None))
    claim.release()
    waiter.join(timeout=60)
    assert got["ref"].meta["cache_hit"] and got["ref"].key == key
    np.testing.assert_array_equal(got["ref"].nonmember_nll, trained.nonmember_nll)
    files = sorted(p.name for p in root.iterdir() if p.is_file())
    assert files == [f"{key}.curve.jsonl", f"{key}.json", f"{key}.npz", f"{key}.pt"]  # one reference, no leftovers


@pytest.mark.parametrize("damage", ["truncate_pt", "drop_npz"])
def test_an_incomplete_cached_reference_is_removed_and_retrained(tmp_path, monkeypatch, damage):
    T = task_module("references")
    task = make_task()
    ctx = RunContext(run_dir=tmp_path, log=lambda m: None)
    first = T.ensure_reference(task, "ref", ctx)
    root = T.reference_dir(task.cfg)
    pt, npz = root / f"{first.key}.pt", root / f"{first.key}.npz"
    if damage == "truncate_pt":
        pt.write_bytes(pt.read_bytes()[:200])
    else:
        npz.unlink()
    loads = []
    real_load = T._load_reference

    def counted_load(*args, **kwargs):  # a run that finds the same unreadable files over and over fails here
        loads.append(1)
        assert len(loads) <= 3, "ensure_reference keeps finding the incomplete reference"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(T, "_load_reference", counted_load)
    said = []
    again = T.ensure_reference(task, "ref", RunContext(run_dir=tmp_path, log=said.append))
    assert not again.meta["cache_hit"] and any("incomplete or unreadable" in m for m in said)
    np.testing.assert_array_equal(again.nonmember_nll, first.nonmember_nll)  # the same recipe, retrained
    assert T._load_reference(task.cfg, root, first.key, "ref", torch.device("cpu")) is not None


@pytest.mark.parametrize("n_embd,expected", [(32, 1_711_968), (64, 3_620_544), (128, 8_027_520), (256, 19_200_768)])
def test_paper_preset_resolves_to_the_papers_text_models(n_embd, expected, monkeypatch):
    T = task_module("sequences")
    monkeypatch.setattr(T, "hub_unreachable_reason", lambda: None)  # a reachable hub: planning defers the count
    cfgs = make_plan([TASK], ["baseline"], [0], "paper")
    mine = [c for c in cfgs if c.model.n_embd == n_embd]
    assert mine and all(
        c.model.n_layer == 8 and c.train.seq_len == 64 and c.model.vocab_size == 50257 and c.data.tokenizer == "gpt2"
        for c in mine
    )
    m = mine[0].model
    assert paper_param_count(m.n_layer, m.n_embd, m.vocab_size, m.n_positions) == expected
    assert len({c.data.n_sequences for c in mine}) == len(mine)  # a grid of sizes per model


def test_paper_preset_names_its_variant_and_the_layers_it_regularises(monkeypatch):
    from gapt_bench.methods import METHODS

    T = task_module("sequences")
    monkeypatch.setattr(T, "hub_unreachable_reason", lambda: None)
    cfg = make_plan([TASK], ["gapt"], [0], "paper")[0]
    pool = METHODS.get("gapt")(cfg, cfg.model.n_layer, matched=None).reg_layers_all()
    variant = cfg.about.get("variant", "")
    assert "plain CE" in variant and f"{pool[0]}-{pool[-1]} of {cfg.model.n_layer}" in variant, variant


# ---------------------------------------------------------------------------------------------------------------
# bad input: exit 2 in one line, before anything trains


def _refused(capsys, out: Path, *argv: str) -> str:
    with warnings.catch_warnings(record=True) as caught:  # a warning would print a second line on stderr
        warnings.simplefilter("always")
        code = main(
            [
                "run",
                "--tasks",
                TASK,
                "--preset",
                "tiny",
                "--seeds",
                "0",
                "--methods",
                "baseline",
                "--out",
                str(out),
                "--no-progress",
                "--no-report",
                *argv,
            ]
        )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not caught, (err, [str(w.message) for w in caught])
    assert not out.exists()  # nothing ran, nothing was written
    return err


def test_a_prefix_longer_than_the_sequence_exits_2(tmp_path, capsys):
    err = _refused(capsys, tmp_path / "out", "--set", "data.prefixes=[4, 40]")
    assert "data.prefixes" in err and "40" in err
    err = _refused(capsys, tmp_path / "out", "--set", "data.prefixes=[32]")
    assert "data.prefixes" in err


def test_a_source_with_too_few_distinct_sequences_exits_2(tmp_path, capsys):
    # 40 copies of one document (deduplicated to its 3 chunks) and 30 short distinct ones
    texts = ["the same text, copied forty times over. " * 3] * 40 + [f"document number {i} " * 6 for i in range(30)]
    src = _write_docs(tmp_path / "small.parquet", texts)
    small = ["--set", f"data.source={src}", "--set", "data.nonmember_sequences=4", "--set", "data.mi_sequences=4"]
    err = _refused(
        capsys, tmp_path / "out", *small, "--set", "data.pool_sequences=null", "--set", "data.n_sequences=200"
    )
    assert "distinct training sequences" in err and "fewer than N = 200" in err
    err = _refused(capsys, tmp_path / "out", *small, "--set", "data.pool_sequences=5000")
    assert "distinct training sequences" in err and "data.pool_sequences=5,000" in err


# ---------------------------------------------------------------------------------------------------------------
# a tiny run end to end


def test_tiny_run_records_every_measure_and_reuses_the_reference(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--tasks",
            TASK,
            "--preset",
            "tiny",
            "--methods",
            "baseline,gapt",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
            "--no-report",
        ]
    )
    assert code == 0, capsys.readouterr()
    recs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in recs] == ["ok", "ok"]
    base = next(r for r in recs if r["method"] == "baseline")
    m, s = base["metrics"], base["summary"]
    for k in (
        "test_ce",
        "train_ce",
        "mem_u_bits",
        "mem_u_nonmember_bits_per_seq",
        "mi_f1",
        "mi_auc",
        "extract_train_p4",
        "extract_test_p16",
        "test_mbe",
        "test_mbe_centered",
    ):
        assert k in m and math.isfinite(m[k]), k
    assert base["primary_metrics"] == ["test_ce"] and 0.0 <= m["mi_f1"] <= 1.0
    z = s["sizing"]
    assert z["n_sequences"] == 32 and z["capacity_ratio"] == pytest.approx(
        z["data_info_bits"] / (3.64 * base["n_params"])
    )
    assert s["data"]["nonmember_pool_overlap"] == 0 and "calibrate" in s["membership_inference"]["method"]
    refs = [r["summary"]["references"]["ref"] for r in recs]
    assert [r["cache_hit"] for r in refs] == [False, True] and refs[0]["key"] == refs[1]["key"]
    assert refs[0]["test_ce"] == refs[1]["test_ce"]  # the same reference, the same code lengths


def test_an_oracle_reference_is_a_second_cached_model(tmp_path, capsys):
    out = tmp_path / "out"
    oracle = [
        "--set",
        "data.oracle_n_layer=1",
        "--set",
        "data.oracle_n_embd=32",
        "--set",
        "data.oracle_n_head=4",
        "--set",
        "data.oracle_tokens=32768",
    ]
    code = main(
        [
            "run",
            "--tasks",
            TASK,
            "--preset",
            "tiny",
            "--methods",
            "baseline",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
            "--no-report",
            *oracle,
        ]
    )
    assert code == 0, capsys.readouterr()
    (rec,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    refs = rec["summary"]["references"]
    assert set(refs) == {"ref", "oracle"} and refs["ref"]["key"] != refs["oracle"]["key"]
    assert refs["oracle"]["arch"] == {"n_layer": 1, "n_embd": 32, "n_head": 4} and refs["oracle"]["tokens"] == 32768
    assert refs["ref"]["tokens"] == 16384 and refs["oracle"]["n_params"] > refs["ref"]["n_params"]
    for k in ("mem_u_oracle_bits", "mem_u_oracle_nonmember_bits_per_seq"):
        assert math.isfinite(rec["metrics"][k]) and rec["metrics"][k] >= 0
    with pytest.raises(ConfigError, match="oracle needs"):
        plan("data.oracle_n_layer=1")


# ---------------------------------------------------------------------------------------------------------------
# the analysis, the paper rows, the plots


def _mem_records(f1s=(1.0, 0.8, 0.55, 0.5), test=(3.0, 3.5, 5.0, 2.5), mem_u=(0.2, 0.6, 0.4, 0.05)) -> list[dict]:
    """Hand-made runs: two models x 4 sizes x 3 seeds, baseline and gapt; mem_U rises then falls (`mem_u` in bits
    per parameter), test CE peaks at ratio 1, extraction falls to the test rate, MI F1 falls from 1 to 0.5."""
    recs = []
    ratios = (0.25, 0.5, 1.0, 4.0)
    for p, d in ((10_000, 16), (20_000, 32)):
        for j, ratio in enumerate(ratios):
            n = int(ratio * 3.64 * p / 200)
            for seed in range(3):
                for method, shift in (("baseline", 0.0), ("gapt", 0.01)):
                    jitter = 0.01 * seed
                    ex = (1.0, 0.3, 0.02, 0.001)[j]
                    metrics = {
                        "test_ce": test[j] + jitter + shift,
                        "train_ce": 1.0 + j * 0.4,
                        "mem_u_bits": mem_u[j] * p + 10 * seed,
                        "mem_u_nonmember_bits_per_seq": 0.1,
                        "mi_f1": f1s[j] - 0.005 * seed,
                        "mi_auc": f1s[j],
                        "test_mbe": 1.0,
                        "test_mbe_centered": 0.5,
                    }
                    for px in (8, 16, 32):
                        metrics[f"extract_train_p{px}"] = ex
                        metrics[f"extract_test_p{px}"] = 0.001
                    sizing = {
                        "n_sequences": n,
                        "n_params": p,
                        "capacity_ratio": ratio * (1 + 0.01 * seed),
                        "capacity_ratio_requested": ratio,
                        "d_over_p": n / p,
                        "alpha": 3.64,
                        "data_info_bits": ratio * 3.64 * p,
                        "capacity_bits": 3.64 * p,
                        "epochs": 10.0,
                    }
                    recs.append(
                        make_record(
                            task=TASK,
                            method=method,
                            seed=seed,
                            metrics=metrics,
                            n_params=p,
                            model={"n_layer": 1, "n_embd": d, "n_head": 2},
                            data={"n_sequences": n, "capacity_ratio": ratio},
                            summary={
                                "sizing": sizing,
                                "data": {
                                    "source": "offline:x",
                                    "tokenizer": "bytes",
                                    "nonmember_pool_overlap": 0,
                                    "pool": 1000,
                                    "nonmembers": 100,
                                },
                                "references": {"ref": {"test_ce": 2.4}},
                            },
                        )
                    )
    return recs


def test_analysis_finds_the_shapes_it_should():
    a = analyse_memorization(_mem_records())
    assert a["kind"] == "memorization" and a["n_usable"] == 48 and not a["excluded"]
    base = next(g for g in a["groups"] if g["method"] == "baseline")
    for m in base["models"]:
        assert m["mem_u"]["rises_then_falls"] and m["mem_u"]["peak_n"] == m["cells"][1]["n_sequences"]
        dd = m["double_descent"]
        assert dd["located"] and dd["within_factor"] and dd["peak_ratio"] == pytest.approx(1.01, rel=0.01)
        assert m["extraction"]["32"]["falls"] and m["extraction"]["32"]["converges_to_test"]
        assert m["mi_falls"]
    law = base["mi_law"]
    assert law["n_points"] == 24 and law["fit"]["n"] == 24 and law["rms_over_seeds"]["n"] == 3
    delta = next(d for d in a["method_deltas"] if d["n_sequences"] == base["models"][0]["cells"][0]["n_sequences"])
    assert delta["test_ce"]["mean"] == pytest.approx(0.01) and delta["mi_f1"]["mean"] == pytest.approx(0.0)
    md = render(a, "md")
    assert "the sweep over N" in md and "findings per model" in md and "paper law" in md


def test_paper_rows_for_text_memorization():
    law = laws.mi_law_paper_corrected
    recs = _mem_records()
    # F1 exactly on the paper's law: the law row replicates; the hand-made F1s do not
    for r in recs:
        r["metrics"]["mi_f1"] = float(law(r["summary"]["sizing"]["d_over_p"]))
    rows = {r["metric"]: r for r in paper_table(recs)["rows"] if r["task"] == TASK}
    assert rows["double_descent_peak_ratio"]["verdict"] == "replicates"
    assert rows["double_descent_peak_ratio"]["measured"] == pytest.approx(1.0, rel=0.02)
    assert rows["mi_law_rms"]["verdict"] == "replicates" and rows["mi_law_rms"]["measured"] == pytest.approx(0)
    ex = rows["extraction_gap"]
    assert ex["verdict"] == "replicates" and ex["measured"] == pytest.approx(0.0) and "32-token" in ex["note"]
    assert all(r["preset"] == "quick" and r["setup"] == "fp32" and r["n"] == 3 for r in rows.values())
    # monotone test loss over a range that straddles 1, models that fill their capacity (3 bits/param of mem_U,
    # above alpha/2): no interior peak, "does not"
    flat = paper_table(_mem_records(test=(9.0, 5.0, 3.5, 2.5), mem_u=(1.0, 3.0, 2.0, 0.5)))
    dd = next(r for r in flat["rows"] if r["metric"] == "double_descent_peak_ratio")
    assert dd["verdict"] == "does not" and "no interior" in dd["note"] and "never fill" not in dd["note"]
    # the same curve from models that never hold alpha/2 bits/param: their capacity is not at ratio 1 of the
    # axis, so the missing peak refutes nothing
    unfilled = paper_table(_mem_records(test=(9.0, 5.0, 3.5, 2.5), mem_u=(0.5, 1.7, 1.0, 0.2)))
    dd = next(r for r in unfilled["rows"] if r["metric"] == "double_descent_peak_ratio")
    assert dd["verdict"] == "inconclusive" and "never fill their capacity" in dd["note"] and "no interior" in dd["note"]
    # ... and their F1 below the converged models' law is what less memorization gives: inconclusive too
    mi = next(r for r in unfilled["rows"] if r["metric"] == "mi_law_rms")
    assert mi["verdict"] == "inconclusive" and "falls below the law" in mi["note"] and mi["measured"] > 0.015
    # F1 above the law (more membership signal than converged models show) refutes it even from unfilled models
    above = paper_table(_mem_records(f1s=(1.0, 1.0, 1.0, 1.0), mem_u=(0.5, 1.7, 1.0, 0.2)))
    mi = next(r for r in above["rows"] if r["metric"] == "mi_law_rms")
    assert mi["verdict"] == "does not" and "never fill" not in mi["note"]
    mi = next(r for r in flat["rows"] if r["metric"] == "mi_law_rms")
    assert mi["verdict"] == "does not" and mi["measured"] > 0.015
    md = render(flat, "md")
    assert "double descent peaks at data/capacity ratio" in md
    # without text-memorization runs the rows read "no runs"
    none = [r for r in paper_table([make_record()])["rows"] if r["task"] == TASK]
    assert len(none) == 3 and {r["verdict"] for r in none} == {"no runs"}


@pytest.mark.parametrize("layout", ["runs.jsonl", "record files only"])
def test_plot_all_draws_the_memorization_figures(tmp_path, layout):
    from gapt_bench.results.plots import plot_all
    from gapt_bench.results.store import RECORDS_DIR, record_file_name

    res = tmp_path / "res"
    res.mkdir()
    if layout == "runs.jsonl":
        (res / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _mem_records()))
    else:  # what the store reads when runs.jsonl is gone (or never written): one file per record
        (res / RECORDS_DIR).mkdir()
        for r in _mem_records():
            (res / RECORDS_DIR / record_file_name(r["run_id"])).write_text(json.dumps(r))
    paths = plot_all(res, tmp_path / "plots")
    names = {p.name for p in paths}
    for name in ("unintended", "double_descent", "extraction", "membership"):
        assert f"text_memorization_{name}.png" in names
        assert (tmp_path / "plots" / f"text_memorization_{name}.png").stat().st_size > 10_000


def test_the_plotted_curve_is_the_lowest_seed_counted_as_a_number():
    from gapt_bench.results.analysis import group_records
    from gapt_bench.results.plots import _representative

    (group,) = group_records([make_record(seed=10), make_record(seed=2), make_record(seed=11)])
    assert _representative(group)["seed"] == 2
