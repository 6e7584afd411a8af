"""Regression tests of the trainer, runner, store and method fixes: each fails on the code before its fix."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

from gapt_bench.launch.plan import make_plan
from gapt_bench.training.model import build_model
from gapt_bench.training.runtime import RunContext


def lm_setup(*overrides: str, method: str = "baseline"):
    """A tiny fineweb_lm config, model and a task whose batches are a pure function of the step."""
    (cfg,) = make_plan(
        ["fineweb_lm"],
        [method],
        [0],
        "tiny",
        ["train.tokens=4096", "train.warmup_steps=2", "train.log_every=1", *overrides],
    )
    torch.manual_seed(0)
    m = cfg.model
    model = build_model(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=64, n_positions=32)

    def get_batch(step: int):
        g = torch.Generator().manual_seed(step)
        x = torch.randint(0, 64, (cfg.train.batch_size, cfg.train.seq_len), generator=g)
        return x, torch.roll(x, -1, dims=1)

    return cfg, model, SimpleNamespace(get_batch=get_batch)


def method_for(cfg, n_layer: int):
    from gapt_bench.methods import METHODS

    return METHODS.get(cfg.method)(cfg, n_layer)


# ---------------------------------------------------------------------------------------------------------------
# train.py


def test_a_resume_without_a_checkpoint_starts_the_curve_over(tmp_path):
    from gapt_bench.training.trainer import train_lm

    cfg, model, task = lm_setup()
    stale = [{"step": s, "ce": 9.0} for s in (1, 2, 3)]  # an earlier attempt that died before its first checkpoint
    (tmp_path / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    ctx = RunContext(run_dir=tmp_path, resume=True, log=lambda m: None)
    out = train_lm(model, task, method_for(cfg, cfg.model.n_layer), cfg, ctx)
    steps = [json.loads(line)["step"] for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert steps == list(range(1, out.steps + 1))


# ---------------------------------------------------------------------------------------------------------------
# store.py: taking over a stale claim


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def _stale_claim(out, key):
    import socket

    from gapt_bench.data.claims import claim_path

    path = claim_path(out, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "pid_start": "1"}))
    return path


def test_two_takers_of_one_stale_claim_never_both_own_the_run(tmp_path, monkeypatch):
    """P2 judges the dead owner's claim stale; before it acts, P1 (judging the same) takes it over and claims the
    run. P2 must then see P1's fresh claim, not remove it."""
    from gapt_bench.data import claims as run_claims

    key = ("t", "m", "h", 0)
    path = _stale_claim(tmp_path, key)
    judge = run_claims._stale
    first_owner = {}

    def p1_overtakes(p, owner):
        stale = judge(p, owner)
        if p == path and stale and not first_owner:  # P2 has just judged it stale: P1 runs to completion now
            first_owner["claim"] = None
            first_owner["claim"] = run_claims.try_claim(tmp_path, key, heartbeat=False)[0]
        return stale

    monkeypatch.setattr(run_claims, "_stale", p1_overtakes)
    p2, owner = run_claims.try_claim(tmp_path, key, heartbeat=False)
    p1 = first_owner["claim"]
    assert p1 is not None and path.exists()
    assert p2 is None and owner["pid"] == os.getpid()  # P2 sees the run held by a live owner (P1)
    assert [f.name for f in path.parent.iterdir()] == [path.name]  # no take-over locks left behind
    p1.release()


def _take_over_lock(path, k: int = 0):
    """The lock a taker of the claim now at `path` holds (see run_claims._remove_stale)."""
    from gapt_bench.data import claims as run_claims

    digest = run_claims.hashlib.sha256(repr(run_claims._identity(path)).encode()).hexdigest()[:16]
    return path.with_name(f"{path.name}.take-{digest}-{k}")


def test_a_taker_that_died_mid_take_over_does_not_block_the_claim(tmp_path):
    import socket

    from gapt_bench.data import claims as run_claims

    key = ("t", "m", "h", 1)
    path = _stale_claim(tmp_path, key)
    lock = _take_over_lock(path)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "pid_start": "1"}))
    claim, owner = run_claims.try_claim(tmp_path, key, heartbeat=False)
    assert claim is not None and owner is None
    assert [f.name for f in path.parent.iterdir()] == [path.name]
    claim.release()


def test_a_live_take_over_lock_makes_other_takers_wait(tmp_path):
    from gapt_bench.data import claims as run_claims

    key = ("t", "m", "h", 2)
    path = _stale_claim(tmp_path, key)
    judged = run_claims._identity(path)
    lock = _take_over_lock(path)
    lock.write_text(json.dumps({"host": run_claims.socket.gethostname(), "pid": os.getpid()}))  # a live taker, mid-way
    run_claims._remove_stale(path, judged, b"{}")
    assert run_claims._identity(path) == judged and lock.exists()  # left to the lock's holder


# ---------------------------------------------------------------------------------------------------------------
# the gradient-alignment probe


def test_the_alignment_probe_measures_the_regulariser_as_configured(tmp_path):
    import torch.nn.functional as F

    from gapt_bench.measures.alignment import gradient_alignment
    from gapt_bench.measures.hidden_states import forward_with_hidden
    from gapt_bench.training.trainer import optimizer_step, train_lm

    cfg, model, task = lm_setup(
        "align.every=1", "reg.centered=true", "reg.layers=rotate", "model.n_layer=3", method="mbe"
    )
    method = method_for(cfg, 3)
    res = optimizer_step(
        model, model, task, method, cfg, RunContext(run_dir=tmp_path), 0, [torch.optim.SGD(model.parameters(), lr=0.0)]
    )
    x, y = task.get_batch(0)
    logits, hidden = forward_with_hidden(model, x)
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    want = {c: gradient_alignment(model, ce, hidden, [1], 8, 2.0, centered=c)["align_cos"] for c in (True, False)}
    assert abs(want[True] - want[False]) > 1e-3
    assert res.align["align_cos"] == pytest.approx(want[True], abs=1e-6)
    out = train_lm(model, task, method, cfg, RunContext(run_dir=tmp_path, log=lambda m: None))
    assert out.summary["align_layers"] == [1] and out.summary["align_centered"] is True


# ---------------------------------------------------------------------------------------------------------------
# gradient accumulation with masked targets


def _masked_step(accum: int, tmp_path):
    """One optimizer step of the mbe method on a batch whose rows hold very different numbers of loss tokens."""
    from gapt_bench.training.trainer import curve_row, optimizer_step

    cfg, model, task = lm_setup(f"train.grad_accum={accum}", method="mbe")
    x, y = task.get_batch(0)
    for r in range(y.shape[0]):
        y[r, : (r * 5) % y.shape[1]] = -100  # 0 .. 31 masked positions per row
    batch = SimpleNamespace(get_batch=lambda step: (x, y))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    res = optimizer_step(
        model, model, batch, method_for(cfg, cfg.model.n_layer), cfg, RunContext(run_dir=tmp_path), 0, [opt]
    )
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    return params, curve_row(1, 0, res, cfg, 1.0)


def test_masked_targets_train_the_same_however_the_batch_is_split_into_micro_batches(tmp_path):
    """CE is the token mean of the global batch, the MBE term the mean over micro-batches (as over one batch): the
    update and the logged CE do not depend on grad_accum. Before, the MBE term was token-weighted too."""
    whole, whole_row = _masked_step(1, tmp_path)
    for accum in (2, 4):
        split, row = _masked_step(accum, tmp_path)
        assert torch.allclose(split, whole, rtol=1e-5, atol=1e-6), accum
        assert row["ce"] == pytest.approx(whole_row["ce"], rel=1e-6), accum


# ---------------------------------------------------------------------------------------------------------------
# runner.py: planning


def test_warmup_may_end_one_step_before_a_rounded_up_budget():
    from gapt_bench.config import ConfigError
    from gapt_bench.training.runtime import steps_for_budget

    # 16 x 32 tokens a step: 5000 tokens are 10 steps (the last one partly past the budget), so 9 warmup steps fit
    (cfg,) = make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["train.tokens=5000", "train.warmup_steps=9"])
    assert steps_for_budget(cfg) == 10
    with pytest.raises(ConfigError, match="warmup_steps=10 is not below"):
        make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["train.tokens=5000", "train.warmup_steps=10"])


@pytest.mark.parametrize("methods", ["periodic", "gapt,periodic"])
def test_a_control_matched_to_a_diverged_run_is_refused_at_planning(tmp_path, capsys, methods):
    """A diverged gapt run counts as finished (never trained again) but has no schedule to copy: the periodic run
    would be recorded failed. Refused before anything runs."""
    from factories import make_record

    from gapt_bench import cli
    from gapt_bench.results.store import append_record, read_records

    pin = ["--set", "data.batch_layout=grouped"]  # one point of the preset's grid
    (gapt,) = make_plan(["forgetting_separation"], ["gapt"], [0], "quick", pin[1:])
    append_record(
        tmp_path, make_record("forgetting_separation", "gapt", 0, status="diverged", config_hash=gapt.config_hash())
    )
    assert (
        cli.main(
            [
                "run",
                "--tasks",
                "forgetting_separation",
                "--methods",
                methods,
                "--seeds",
                "0",
                "--out",
                str(tmp_path),
                *pin,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "recorded as diverged" in err and "set periodic.match=none" in err and err.count("\n") == 1
    assert len(read_records(tmp_path)) == 1 and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------
# models.py


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA L400X", None),
    ],
)
def test_the_mfu_table_tells_an_l4_from_an_l40(name, peak):
    from gapt_bench.training.model import peak_for_name

    assert peak_for_name(name) == peak


def test_muon_on_a_torch_without_it_is_refused_at_planning(monkeypatch):
    from gapt_bench.config import ConfigError

    make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["train.optimizer=muon"])  # this torch has it

    class OldMuon:  # an early Muon without adjust_lr_fn
        def __init__(self, params, lr=1e-3):
            pass

    for old in (OldMuon, None):
        monkeypatch.setattr(torch.optim, "Muon", old, raising=False)
        with pytest.raises(ConfigError, match=r"needs torch.optim.Muon .*torch >= 2.9.*train.optimizer=adamw"):
            make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["train.optimizer=muon"])


# ---------------------------------------------------------------------------------------------------------------
# runner.py: the pool of workers and signals


class _FakePool:
    """Stands in for ProcessPoolExecutor: runs nothing, and lets a test act while runs are being submitted."""

    on_submit = None

    def __init__(self, **kwargs) -> None:
        self._processes = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._processes = None  # as after shutdown

    def submit(self, fn, unit, *args):  # a unit of the plan: a run alone or a batched group
        from concurrent.futures import Future

        if _FakePool.on_submit:
            _FakePool.on_submit()
        fut = Future()
        fut.set_result([cfg.seed for cfg in unit])
        return fut


def test_the_pool_forwards_signals_only_while_it_runs(monkeypatch):
    import concurrent.futures
    import signal

    from gapt_bench.launch import execute, local

    plan = make_plan(["fineweb_lm"], ["baseline"], [0, 1], "tiny")
    seen = []

    def signal_while_submitting():  # a SIGTERM before every run is submitted; what SIGINT does meanwhile
        seen.append(signal.getsignal(signal.SIGINT))
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _FakePool)
    monkeypatch.setattr(_FakePool, "on_submit", staticmethod(signal_while_submitting))
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    execute.install_signal_handlers()
    installed = {s: signal.getsignal(s) for s in before}
    try:
        assert sorted(local._run_pool([[c] for c in plan], "out", 2, 0, False, None)) == [0, 1]
        assert execute.stop_requested()
        assert seen[0] is not installed[signal.SIGINT]  # SIGINT is forwarded to the workers too
        assert {s: signal.getsignal(s) for s in before} == installed  # run_plan's handlers are back
    finally:
        execute.clear_stop()
        for s, h in before.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------------------------
# config.py


def test_inf_can_be_given_on_the_command_line_where_a_field_allows_it():
    import math

    from gapt_bench.config import ConfigError

    for spelling in ("inf", ".inf"):
        (cfg,) = make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", [f"train.diverge_grad_norm={spelling}"])
        assert cfg.train.diverge_grad_norm == math.inf
    with pytest.raises(ConfigError, match=r"train.lr=inf is not a finite number"):
        make_plan(["fineweb_lm"], ["baseline"], [0], "tiny", ["train.lr=inf"])
