"""CUDA paths, one test each (marked gpu: run by `gapt-bench doctor --gpu`, never in CI). The CPU-runnable halves of
the same paths (bf16 autocast and fused AdamW on CPU, compile on CPU) are the unmarked tests at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from gapt_bench import cli
from gapt_bench.launch.plan import make_plan
from gapt_bench.measures.entropy import matrix_entropy
from gapt_bench.results.store import read_records
from gapt_bench.training.model import build_model, peak_for_name
from gapt_bench.training.trainer import OPTIMIZERS

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CAP = [
    "run",
    "--tasks",
    "synthetic_capacity",
    "--preset",
    "tiny",
    "--methods",
    "baseline",
    "--seeds",
    "0",
    "--workers",
    "1",
    "--no-report",
]


def _run(tmp_path, *extra, name="out"):
    out = tmp_path / name
    assert cli.main([*CAP, "--out", str(out), *extra]) == 0
    (rec,) = read_records(out)
    return rec


def _env() -> dict:
    env = dict(os.environ)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return {**env, "OMP_NUM_THREADS": "1", "CI": "1"}


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["bf16", "bf16-weights", "auto"])
def test_bf16_paths_on_cuda(tmp_path, precision):
    rec = _run(tmp_path, "--set", "train.device=cuda", "--set", f"train.precision={precision}")
    assert rec["status"] == "ok" and rec["env"]["device"].startswith("cuda")
    assert rec["summary"]["precision"] == ("bf16" if precision == "auto" else precision)
    assert all(v == v for v in rec["metrics"].values())  # no NaN
    assert rec["env"]["machine_class"].startswith("cuda:")


@pytest.mark.gpu
@cuda
def test_fused_adamw_is_used_on_cuda():
    (cfg,) = make_plan(["synthetic_capacity"], ["baseline"], [0], "tiny")
    model = build_model(n_layer=1, n_embd=16, n_head=2, vocab_size=16, n_positions=32).cuda()
    (opt,) = OPTIMIZERS["adamw"](model, cfg.train, torch.device("cuda"))
    assert opt.defaults["fused"] is True


@pytest.mark.gpu
@cuda
def test_compile_on_and_off_train_alike(tmp_path):
    base = [
        "--tasks",
        "fineweb_lm",
        "--preset",
        "tiny",
        "--methods",
        "gapt",
        "--seeds",
        "0",
        "--workers",
        "1",
        "--no-report",
        "--set",
        "train.device=cuda",
    ]
    recs = {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        assert cli.main([*base, "--out", str(out), "--set", f"train.compile={flag}"]) == 0
        (recs[flag],) = read_records(out)
    assert recs["true"]["status"] == "ok"
    assert recs["true"]["metrics"]["val_ce"] == pytest.approx(recs["false"]["metrics"]["val_ce"], rel=0.02)


@pytest.mark.gpu
@cuda
def test_mbe_of_bf16_hidden_states_matches_fp32():
    torch.manual_seed(0)
    h = torch.randn(8, 64, 128, device="cuda")
    ref = float(matrix_entropy(h, 2.0, 8))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hb = h @ torch.eye(128, device="cuda")  # a bf16 tensor, as block outputs are under autocast
    assert hb.dtype == torch.bfloat16
    assert float(matrix_entropy(hb, 2.0, 8)) == pytest.approx(ref, rel=5e-3)
    assert float(matrix_entropy(hb, 1.0, 8)) == pytest.approx(float(matrix_entropy(h, 1.0, 8)), rel=5e-3)


@pytest.mark.gpu
@cuda
def test_checkpoint_and_resume_on_cuda(tmp_path):
    args = [*CAP, "--set", "train.device=cuda", "--set", "train.tokens=2048000", "--set", "train.log_every=10"]
    ref = _run(tmp_path, "--set", "train.device=cuda", "--set", "train.tokens=2048000", name="ref")
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gapt_bench", *args, "--out", str(out), "--checkpoint-every", "100"], env=_env()
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("runs/*/checkpoint.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cli.main([*args, "--out", str(out), "--resume"]) == 0
    (rec,) = read_records(out)
    log = (out / "runs" / rec["run_id"] / "log.txt").read_text()
    assert "resumed from step" in log
    for k, v in ref["metrics"].items():  # CUDA kernels are not bit-reproducible: close, not equal
        assert rec["metrics"][k] == pytest.approx(v, rel=2e-2, abs=1e-3), k


@pytest.mark.gpu
@cuda
def test_one_rank_nccl_process_group(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import torch, torch.distributed as dist; dist.init_process_group('nccl'); "
        "torch.cuda.set_device(0); t = torch.ones(4, device='cuda'); dist.all_reduce(t); "
        "assert t.tolist() == [1.0] * 4; dist.barrier(); dist.destroy_process_group(); print('ok')"
    )
    env = {
        **_env(),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    # and the suite's own run under torchrun with one nccl rank
    out = tmp_path / "ddp"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "gapt_bench",
            *CAP,
            "--set",
            "train.device=cuda",
            "--out",
            str(out),
        ],
        env={**_env(), "GAPT_BENCH_DIST_BACKEND": "nccl"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_records(out)[0]["status"] == "ok"


@pytest.mark.gpu
@cuda
def test_mfu_is_recorded_on_a_known_gpu(tmp_path):
    out = tmp_path / "fw"
    assert (
        cli.main(
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
                "--workers",
                "1",
                "--no-report",
                "--set",
                "train.device=cuda",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (rec,) = read_records(out)
    s = rec["summary"]
    if peak_for_name(torch.cuda.get_device_name(0)) is None:
        pytest.skip(f"no peak FLOP/s known for {torch.cuda.get_device_name(0)}")
    assert s["mfu"] == pytest.approx(s["flops_per_token"] * s["tokens_per_s"] / s["peak_flops"])
    assert 0 < s["mfu"] < 1


# ----------------------------------------------------------------------------------------------------------------
# the same paths where a CPU can run them


def test_bf16_autocast_on_cpu(tmp_path):
    rec = _run(tmp_path, "--set", "train.precision=bf16")
    assert rec["status"] == "ok" and rec["summary"]["precision"] == "bf16"
    assert all(v == v for v in rec["metrics"].values())
    ref = _run(tmp_path, name="fp32")
    assert rec["metrics"]["mem_bits"] != ref["metrics"]["mem_bits"]  # autocast really ran


def test_fused_adamw_on_cpu(tmp_path):
    model = build_model(n_layer=1, n_embd=16, n_head=2, vocab_size=16, n_positions=32)
    (cfg,) = make_plan(["synthetic_capacity"], ["baseline"], [0], "tiny", ["train.fused=always"])
    try:
        (opt,) = OPTIMIZERS["adamw"](model, cfg.train, torch.device("cpu"))
    except RuntimeError as e:  # a torch build without the CPU fused kernel
        pytest.skip(f"fused AdamW unavailable on this CPU build: {e}")
    assert opt.defaults["fused"] is True
    fused = _run(tmp_path, "--set", "train.fused=always")
    plain = _run(tmp_path, name="plain")
    assert fused["status"] == "ok"
    assert fused["metrics"]["mem_bits"] == pytest.approx(plain["metrics"]["mem_bits"], rel=1e-3)
    assert fused["config_hash"] == plain["config_hash"]  # an execution choice, not a different experiment


@pytest.mark.slow
def test_compile_on_cpu(tmp_path):
    rec = _run(tmp_path, "--set", "train.compile=true", name="compiled")
    eager = _run(tmp_path, name="eager")
    assert rec["status"] == "ok"
    assert rec["metrics"]["mem_bits"] == pytest.approx(eager["metrics"]["mem_bits"], rel=1e-2)
    assert json.dumps(rec["config"]["train"]["compile"]) == "true"
