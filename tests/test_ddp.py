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

from gapt_bench import distributed
from gapt_bench.cli import main

RUN_ARGS = ["run", "--tasks", "fineweb_lm", "--preset", "tiny", "--methods", "gapt", "--seeds", "0",
            "--no-progress", "--no-report", "--set", "gapt.delta_e=0.5"]  # the gate switches within 32 steps


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "GAPT_BENCH_CACHE": str(tmp_path / "cache"), "HF_DATASETS_CACHE": str(tmp_path / "hf"),
                "TQDM_DISABLE": "1"})
    return env


def _load(out: Path) -> tuple[list[dict], list[Path], list[dict]]:
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    run_dirs = sorted((out / "runs").iterdir())
    curve = [json.loads(line) for line in (run_dirs[0] / "curve.jsonl").read_text().splitlines()]
    return records, run_dirs, curve


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is needed")
def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    env = _env(tmp_path)
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "gapt_bench", *RUN_ARGS, "--out", str(ddp_out)]
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
    from gapt_bench.runtime import resolve_device
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
