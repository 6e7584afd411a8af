"""DDP: two CPU processes (gloo, launched by torchrun) train the same run as one process with the same global batch,
step for step, and write one record (rank 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gapt_bench.cli import main
from gapt_bench.training import distributed

RUN_ARGS = [
    "run",
    "--tasks",
    "fineweb_lm",
    "--preset",
    "tiny",
    "--methods",
    "gapt",
    "--seeds",
    "0",
    "--no-progress",
    "--no-report",
    "--set",
    "gapt.delta_e=0.5",
]  # the gate switches within 32 steps


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "GAPT_BENCH_CACHE": str(tmp_path / "cache"),
            "HF_DATASETS_CACHE": str(tmp_path / "hf"),
            "TQDM_DISABLE": "1",
        }
    )
    return env


def _load(out: Path) -> tuple[list[dict], list[Path], list[dict]]:
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    run_dirs = sorted((out / "runs").iterdir())
    curve = [json.loads(line) for line in (run_dirs[0] / "curve.jsonl").read_text().splitlines()]
    return records, run_dirs, curve


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is needed",
)
def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    env = _env(tmp_path)
    ddp_out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "gapt_bench",
        *RUN_ARGS,
        "--out",
        str(ddp_out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for k in ("GAPT_BENCH_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(k, env[k])
    one_out = tmp_path / "one"
    assert main([*RUN_ARGS, "--out", str(one_out), "--workers", "1"]) == 0

    (ddp,), ddp_dirs, ddp_curve = _load(ddp_out)
    (one,), _, one_curve = _load(one_out)
    # written once, by rank 0
    assert len(ddp_dirs) == 1 and (ddp_dirs[0] / "log.txt").exists()
    assert ddp["status"] == "ok" and one["status"] == "ok"
    assert ddp["summary"]["world_size"] == 2 and one["summary"]["world_size"] == 1
    assert ddp["config_hash"] == one["config_hash"] and ddp["tokens"] == one["tokens"] == 16384
    # the same training, step by step (the gate saw the same global CE/MBE and switched at the same steps)
    assert len(ddp_curve) == len(one_curve) == 8
    for a, b in zip(ddp_curve, one_curve):
        assert (a["step"], a["phase"]) == (b["step"], b["phase"])
        for key in ("ce", "loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    gate = {k: v for k, v in one["summary"].items() if k.startswith("gate_")}
    assert gate["gate_switches"] >= 1
    assert {k: ddp["summary"][k] for k in gate} == gate
    # and the same evaluation (validation windows split over the ranks, sums all-reduced)
    assert set(ddp["metrics"]) == set(one["metrics"])
    for k, v in one["metrics"].items():
        assert ddp["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_single_process_helpers_are_no_ops(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.setup()
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)
    assert distributed.is_main() and distributed.world_size() == 1
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1, 1, 1]
    assert distributed.mean_step_values([], [1.0], True) is True
    from gapt_bench.training.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto", 0) == torch.device("cpu")
    with distributed.local_main_first():
        pass
    distributed.barrier()
    distributed.teardown()


def test_env_info_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    info = distributed.env_info()
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (3, 4, 1, 2)
    assert distributed.launched() and not info.is_main and not info.is_local_main


MASKED_ARGS = [
    "run",
    "--tasks",
    "arithmetic_ood",
    "--preset",
    "quick",
    "--methods",
    "baseline",
    "--seeds",
    "0",
    "--no-progress",
    "--no-report",
    "--set",
    "data.n_train=2000",
    "--set",
    "data.n_id=50",
    "--set",
    "data.n_ood=50",
    "--set",
    "train.tokens=40960",
    "--set",
    "train.warmup_steps=2",
    "--set",
    "data.train_loss=answer",
    "--set",
    "train.log_every=1",
]


@pytest.mark.slow
@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is needed",
)
def test_masked_targets_and_grad_accum_give_the_same_training_however_the_batch_is_split(tmp_path, monkeypatch):
    """Answer-only loss: micro-batches hold different numbers of loss tokens. 2 ranks x 2 micro-batches, 1 rank x
    4 micro-batches and 1 rank x 1 batch must take the same steps (CE weighted by tokens across the global batch)."""
    env = _env(tmp_path)
    ddp_out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "gapt_bench",
        *MASKED_ARGS,
        "--set",
        "train.grad_accum=2",
        "--out",
        str(ddp_out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    outs = {}
    for accum in (1, 4):
        outs[accum] = tmp_path / f"one{accum}"
        assert (
            main([*MASKED_ARGS, "--set", f"train.grad_accum={accum}", "--out", str(outs[accum]), "--workers", "1"]) == 0
        )
    (ref,), _, ref_curve = _load(outs[1])
    for out in (ddp_out, outs[4]):
        (rec,), _, curve = _load(out)
        assert len(curve) == len(ref_curve) == 20
        for a, b in zip(curve, ref_curve):
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), (out.name, a["step"])
        for k, v in ref["metrics"].items():
            assert rec["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (out.name, k)


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is needed",
)
def test_no_sync_covers_the_forward_so_only_the_last_micro_batch_all_reduces(tmp_path, monkeypatch):
    import socket
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from gapt_bench.launch.plan import make_plan
    from gapt_bench.methods.baseline import Baseline
    from gapt_bench.training.model import build_model
    from gapt_bench.training.runtime import RunContext
    from gapt_bench.training.trainer import optimizer_step

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        (cfg,) = make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["train.grad_accum=2"])
        torch.manual_seed(0)
        model = build_model(n_layer=2, n_embd=32, n_head=4, vocab_size=cfg.model.vocab_size, n_positions=32)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        calls = []

        def counting(state, bucket):
            calls.append(1)
            return allreduce_hook(state, bucket)

        ddp.register_comm_hook(None, counting)
        batch = (torch.randint(0, 64, (16, 32)), torch.randint(0, 64, (16, 32)))
        task = SimpleNamespace(get_batch=lambda step: batch)
        # a rank of a world of 2 (the process group has 1: enough to count the all-reduces of one rank)
        ctx = RunContext(run_dir=tmp_path, world_size=2)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        optimizer_step(ddp, model, task, Baseline(cfg, 2), cfg, ctx, 0, [opt])
        buckets = len(calls)
        calls.clear()
        cfg.train.grad_accum = 1
        optimizer_step(ddp, model, task, Baseline(cfg, 2), cfg, ctx, 0, [opt])
        assert buckets == len(calls) >= 1  # two micro-batches reduce exactly as often as one
    finally:
        dist.destroy_process_group()


COMBINE_ON_RANK = """
import json, os, sys
from gapt_bench.training import distributed
from gapt_bench.methods.base import StepInfo
distributed.setup()
r = distributed.rank()
infos = [StepInfo(ce=[2.0, 4.0][r], mbe={0: [1.0, 3.0][r]}), StepInfo(ce=[float("nan"), 5.0][r], mbe={0: 1.0})]
losses = [[1.0, 2.0][r]]
stop = distributed.mean_step_values(infos, losses, r == 1, tokens=[[10, 30][r], [0, 7][r]])
print(json.dumps([[i.ce, i.mbe[0]] for i in infos] + [losses, stop]))
distributed.teardown()
"""


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is needed",
)
def test_step_values_become_those_of_the_global_micro_batch(tmp_path):
    """CE weighted by each rank's loss tokens (a rank with none, CE NaN, does not poison it), MBE and loss averaged,
    stop shared."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path)
    env.update(
        {
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "GAPT_BENCH_ALL_RANKS_PRINT": "1",
            "GAPT_BENCH_DIST_BACKEND": "gloo",
        }
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COMBINE_ON_RANK],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    want = [[(10 * 2.0 + 30 * 4.0) / 40, 2.0], [5.0, 1.0], [1.5], True]
    assert [json.loads(o) for o, _ in outs] == [want, want]
