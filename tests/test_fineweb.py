"""fineweb_lm: the FineWeb loader path on a local parquet file, split disjointness, token-cache reuse, the offline
hub error, batch determinism, throughput helpers and a short run that learns (CPU, no network, under a minute)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gapt_bench import data as td
from gapt_bench.cli import main
from gapt_bench.data import sources as td_sources
from gapt_bench.launch.plan import make_plan
from gapt_bench.tasks import TASKS

pytestmark = pytest.mark.usefixtures("offline_env")


def _task(overrides: list[str], seed: int = 0, preset: str = "tiny"):
    (cfg,) = make_plan(["fineweb_lm"], ["baseline"], [seed], preset, overrides)
    task = TASKS.get("fineweb_lm")(cfg)
    task.setup()
    return task


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def test_local_parquet_runs_through_the_task(fineweb_parquet, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--tasks",
            "fineweb_lm",
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
            "--set",
            f"data.source={fineweb_parquet}",
            "--set",
            "gapt.delta_e=0.5",
        ]
    )
    assert code == 0, capsys.readouterr()
    recs = _records(out)
    assert [r["status"] for r in recs] == ["ok", "ok"]
    for r in recs:
        m, s = r["metrics"], r["summary"]
        assert set(m) >= {"val_ce", "val_bpb", "val_mbe", "val_mbe_centered", "val_mbe_layer_0", "val_mbe_layer_1"}
        assert all(math.isfinite(v) for v in m.values())
        assert m["val_mbe"] == pytest.approx((m["val_mbe_layer_0"] + m["val_mbe_layer_1"]) / 2)
        assert 0 <= m["val_mbe"] <= math.log(8) + 1e-6  # patch 8
        # bytes tokenizer: EOT is the only token without a byte, so bits/byte ~ bits/token
        assert m["val_bpb"] == pytest.approx(m["val_ce"] / math.log(2) / s["val_bytes_per_token"])
        assert r["tokens"] == 16384 and s["tokenizer"] == "bytes" and s["model_vocab_size"] == 257
        assert s["data_source"].startswith("local:") and s["mfu"] is None and s["tokens_per_s"] > 0
        assert s["val_tokens_evaluated"] == (8192 // 32) * 32
    assert recs[1]["summary"]["gate_switches"] >= 1  # patience 5, delta_e 0.5 on 32 steps: the gate moves
    assert recs[0]["metrics"] != recs[1]["metrics"]


def test_validation_is_disjoint_from_training(fineweb_parquet):
    task = _task([f"data.source={fineweb_parquet}", "data.val_tokens=30000"])
    data = task.data
    assert data.val.n_docs > 0 and data.overlap() == set()
    docs = {d.index: d for d in td.load_texts(str(fineweb_parquet))}
    assert all(docs[i].split == "val" for i in data.val.doc_index)
    assert all(docs[i].split == "train" for i in data.train.doc_index)
    # no validation window occurs in the training stream, nor in any training batch
    train_bytes = np.asarray(data.train.tokens, dtype=np.uint8).tobytes()  # bytes tokenizer: EOT 256 wraps to 0
    val = np.asarray(data.val.tokens)
    S = task.cfg.train.seq_len
    for w in range(0, task.n_val_windows, 7):
        window = val[w * S : (w + 1) * S + 1]
        if (window == data.eot_id).any():
            continue
        assert window.astype(np.uint8).tobytes() not in train_bytes
    val_docs = {docs[i].text for i in data.val.doc_index}
    train_text = "".join(docs[i].text for i in data.train.doc_index)
    assert all(t not in train_text for t in val_docs)
    x, _y = task.get_batch(3)
    for row in x.numpy():
        if (row != data.eot_id).all():
            assert row.astype(np.uint8).tobytes() in train_bytes


def test_token_cache_is_reused(fineweb_parquet, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = td_sources._iter_local

    def counting(src):
        calls["n"] += 1
        return real(src)

    monkeypatch.setattr(td_sources, "_iter_local", counting)
    first = _task([f"data.source={fineweb_parquet}"])
    assert not first.data.cache_hit and calls["n"] == 1
    second = _task([f"data.source={fineweb_parquet}"])
    assert second.data.cache_hit and calls["n"] == 1  # nothing re-read, nothing re-tokenised
    assert np.array_equal(np.asarray(first.data.train.tokens), np.asarray(second.data.train.tokens))
    # and through the CLI: the record says so (two results folders: one folder holds one record per run)
    for out in (tmp_path / "out1", tmp_path / "out2"):
        assert (
            main(
                [
                    "run",
                    "--tasks",
                    "fineweb_lm",
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
                    "--set",
                    f"data.source={fineweb_parquet}",
                ]
            )
            == 0
        )
        assert [r["summary"]["token_cache_hit"] for r in _records(out)] == [True]
    assert calls["n"] == 1


def test_hub_source_offline_fails_fast_writing_nothing(tmp_path, capsys, no_hub_streaming):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--tasks",
            "fineweb_lm",
            "--preset",
            "tiny",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--workers",
            "1",
            "--set",
            "data.source=HuggingFaceFW/fineweb",
            "--set",
            "data.name=sample-10BT",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "unreachable" in err and "data.source=/path/to/fineweb.parquet" in err
    assert not out.exists()


def test_missing_local_path_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--tasks",
            "fineweb_lm",
            "--preset",
            "tiny",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--set",
            f"data.source={tmp_path / 'nope.parquet'}",
        ]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err and not out.exists()


def test_batches_are_a_pure_function_of_seed_and_step(fineweb_parquet):
    a = _task([f"data.source={fineweb_parquet}"])
    b = _task([f"data.source={fineweb_parquet}"])
    c = _task([f"data.source={fineweb_parquet}"], seed=1)
    for step in (0, 5, 999):  # step 999 is in a later epoch
        xa, ya = a.get_batch(step)
        xb, yb = b.get_batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa[:, 1:], ya[:, :-1])  # targets are the inputs shifted by one
        assert xa.dtype == torch.int64 and xa.shape == (16, 32)
    assert not torch.equal(a.get_batch(0)[0], c.get_batch(0)[0])
    # one epoch visits every packed sequence once
    B = a.cfg.train.batch_size
    seen = np.concatenate([a._perm(0)[i * B : (i + 1) * B] for i in range(a.n_seq // B)])
    assert len(set(seen.tolist())) == len(seen)


def test_vocab_and_config_checks():
    from gapt_bench.config import ConfigError

    (cfg,) = make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["data.tokenizer=gpt2", "data.pad_vocab_multiple=64"])
    assert cfg.model.vocab_size == 50304
    (cfg,) = make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["data.tokenizer=bpe512"])
    assert cfg.model.vocab_size == 512
    with pytest.raises(ConfigError, match="tokenizer"):
        make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["data.tokenizer=words"])
    with pytest.raises(ConfigError, match="val_tokens"):
        make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["data.val_tokens=10"])
    for preset in ("quick", "tiny"):
        make_plan(["fineweb_lm"], ["baseline", "gapt"], [0], preset)


def test_short_run_learns_well_below_log_vocab(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--tasks",
            "fineweb_lm",
            "--preset",
            "quick",
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
            "--set",
            "model.n_layer=2",
            "--set",
            "train.tokens=204800",
            "--set",
            "data.val_tokens=32768",
        ]
    )
    assert code == 0, capsys.readouterr()
    (rec,) = _records(out)
    log_v = math.log(rec["config"]["model"]["vocab_size"])
    assert rec["status"] == "ok" and rec["metrics"]["val_ce"] < 0.55 * log_v, rec["metrics"]
