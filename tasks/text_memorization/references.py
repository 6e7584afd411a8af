"""Reference models: trained once per (data, architecture, recipe, seed, device, precision), cached, and claimed
while training so a parallel or resumed sweep trains each once."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapt_bench.config import EXECUTION_FIELDS
from gapt_bench.data import (
    cache_root,
)
from gapt_bench.tasks.base import (
    EpochOrder,
    LMTask,
    next_token_targets,
)
from gapt_bench.tasks.text_memorization.options import (
    REF_FORMAT,
    REF_SEED_OFFSET,
    TASK_NAME,
    TASK_VERSION,
    WAIT_POLL_S,
    _digest,
)
from gapt_bench.tasks.text_memorization.sequences import _save_npz
from gapt_bench.training.model import build_from_config, param_count
from gapt_bench.training.runtime import (
    Interrupted,
    RunContext,
    resolve_precision,
)


@dataclass
class Reference:
    role: str  # "ref" | "oracle"
    key: str
    model: torch.nn.Module  # the trained reference (eval mode), scored on each run's training set
    nonmember_nll: np.ndarray  # bits per non-member sequence (strict convention), computed once
    meta: dict[str, Any]


class _PoolBatches:
    """The references' data order: per-epoch permutations of the whole pool (a pure function of the step)."""

    def __init__(self, pool: np.ndarray, batch_size: int, seed: int) -> None:
        self.pool, self.b = pool, batch_size
        self.order = EpochOrder(pool.shape[0], seed)

    def get_batch(self, step: int):
        x = torch.from_numpy(self.pool[self.order.indices(step, self.b).numpy()].astype(np.int64))
        return x, next_token_targets(x)

    def check(self, model, step, ctx) -> bool:
        return False


def reference_arch(cfg, role: str) -> dict:
    d, m = cfg.data, cfg.model
    if role == "ref":
        return {"n_layer": m.n_layer, "n_embd": m.n_embd, "n_head": m.n_head}
    return {"n_layer": d.oracle_n_layer, "n_embd": d.oracle_n_embd, "n_head": d.oracle_n_head}


def reference_tokens(cfg, role: str) -> int:
    d = cfg.data
    ref = d.ref_tokens if d.ref_tokens is not None else cfg.train.tokens
    return ref if role == "ref" else (d.oracle_tokens if d.oracle_tokens is not None else ref)


def reference_key(cfg, role: str, data_key: str, device: torch.device) -> str:
    """Everything the reference depends on: the sequences, its architecture and recipe, the seed, device type and
    precision (not the method, N, the training-set seed or the measurement options)."""
    train = dataclasses.asdict(cfg.train)
    for name in EXECUTION_FIELDS.get("train", ()):
        train.pop(name, None)
    train.update(
        tokens=reference_tokens(cfg, role),
        eval_every=0,
        device=device.type,
        precision=resolve_precision(cfg.train.precision, device),
    )
    m = cfg.model
    return _digest(
        {
            "v": REF_FORMAT,
            "task_version": TASK_VERSION,
            "role": role,
            "data": data_key,
            "arch": {
                **reference_arch(cfg, role),
                "vocab_size": m.vocab_size,
                "n_positions": m.n_positions,
                "dropout": m.dropout,
            },
            "train": train,
            "seed": cfg.seed,
            "convention": cfg.data.convention,
        },
        24,
    )


def reference_dir(cfg) -> Path:
    return cache_root(cfg.data.cache_dir) / TASK_NAME / "references"


def _build_arch(cfg, arch: dict) -> torch.nn.Module:
    return build_from_config(
        dataclasses.replace(cfg.model, n_layer=arch["n_layer"], n_embd=arch["n_embd"], n_head=arch["n_head"])
    )


def _load_reference(cfg, root: Path, key: str, role: str, device: torch.device) -> Reference | None:
    meta_p, npz_p, pt_p = root / f"{key}.json", root / f"{key}.npz", root / f"{key}.pt"
    if not (meta_p.is_file() and npz_p.is_file() and pt_p.is_file()):
        return None
    try:
        meta = json.loads(meta_p.read_text())
        with np.load(npz_p) as z:
            nm = z["nonmember_nll"]
        state = torch.load(pt_p, map_location=device, weights_only=True)
        model = _build_arch(cfg, meta["arch"])
        model.load_state_dict(state)
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
        return None
    model.to(device).eval()
    return Reference(role, key, model, nm, meta)


def ensure_reference(task: LMTask, role: str, ctx: RunContext) -> Reference:
    """The cached reference of this config and role, training it first if no process has (see the module)."""
    from gapt_bench.data.claims import try_claim

    cfg = task.cfg
    root = reference_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    key = reference_key(cfg, role, task.data.key, ctx.device)
    waited, said = 0.0, False
    while True:
        found = _load_reference(cfg, root, key, role, ctx.device)
        if found is not None:
            found.meta = {**found.meta, "cache_hit": True, "waited_s": round(waited, 1)}
            return found
        claim, owner = try_claim(root, ("reference", key))
        if claim is None:
            if ctx.stop_requested():
                raise Interrupted(f"stopped while waiting for reference {key}")
            if not said:
                ctx.log(f"waiting for reference {role} {key}: being trained by pid {(owner or {}).get('pid')}")
                said = True
            time.sleep(WAIT_POLL_S)
            waited += WAIT_POLL_S
            continue
        try:
            if (root / f"{key}.json").is_file():  # finished between the check and the claim, or left incomplete
                found = _load_reference(cfg, root, key, role, ctx.device)
                if found is not None:
                    found.meta = {**found.meta, "cache_hit": True, "waited_s": round(waited, 1)}
                    return found
                _remove_reference(root, key, ctx)
            return _train_reference(task, role, key, root, ctx)
        finally:
            claim.release()


def _remove_reference(root: Path, key: str, ctx: RunContext) -> None:
    """Delete a reference whose provenance exists but whose weights or code lengths do not load (a truncated or
    missing .pt/.npz): holding its claim, the caller retrains it instead of finding the same files forever."""
    names = [f"{key}{suffix}" for suffix in (".json", ".pt", ".npz", ".curve.jsonl")]
    ctx.log(f"reference {key} in {root} is incomplete or unreadable; removing {', '.join(names)} and retraining")
    for name in names:
        (root / name).unlink(missing_ok=True)


def _train_reference(task: LMTask, role: str, key: str, root: Path, ctx: RunContext) -> Reference:
    from gapt_bench.methods import METHODS
    from gapt_bench.training.trainer import train_lm

    cfg = task.cfg
    arch = reference_arch(cfg, role)
    rcfg = copy.deepcopy(cfg)
    rcfg.method = "baseline"
    rcfg.method_sections = tuple(METHODS.get("baseline").config_sections)
    rcfg.model.n_layer, rcfg.model.n_embd, rcfg.model.n_head = arch["n_layer"], arch["n_embd"], arch["n_head"]
    rcfg.train.tokens = reference_tokens(cfg, role)
    rcfg.train.eval_every = 0
    rcfg.align.every = 0
    seed = cfg.seed + REF_SEED_OFFSET
    torch.manual_seed(seed)
    m = rcfg.model
    model = _build_arch(cfg, arch)
    pool = task.data.pool
    work = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp"
    work.mkdir(parents=True)
    ctx.log(
        f"training reference {role} {key}: L{m.n_layer}/d{m.n_embd} on {pool.shape[0]:,} pool sequences, "
        f"{rcfg.train.tokens:,} tokens"
    )
    try:
        progress = ctx.progress
        rctx = RunContext(
            run_dir=work,
            device=ctx.device,
            log=ctx.log,
            stop_requested=ctx.stop_requested,
            progress=(lambda step, total: progress(step, total, "reference")) if progress else None,
        )
        method = METHODS.get("baseline")(rcfg, m.n_layer, matched=None)
        out = train_lm(model, _PoolBatches(pool, rcfg.train.batch_size, seed), method, rcfg, rctx)
        nm_nll = task.score(out.model, task.data.nonmembers, ctx.device)[0]
        S = cfg.train.seq_len
        meta = {
            "role": role,
            "key": key,
            "arch": arch,
            "n_params": param_count(out.model),
            "tokens": out.tokens,
            "steps": out.steps,
            "train_time_s": out.summary.get("train_time_s"),
            "seed": seed,
            "pool_sequences": int(pool.shape[0]),
            "epochs": out.tokens / (pool.shape[0] * S),
            "nonmember_bits_per_token": float(nm_nll.mean() / (S - 1)),
            "device": ctx.device.type,
            "precision": resolve_precision(cfg.train.precision, ctx.device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp_pt = root / f".{key}.{os.getpid()}.pt.tmp"
        torch.save(out.model.state_dict(), tmp_pt)
        os.replace(tmp_pt, root / f"{key}.pt")
        _save_npz(root / f"{key}.npz", nonmember_nll=nm_nll)
        if (work / "curve.jsonl").is_file():  # the reference's training curve, kept for inspection
            os.replace(work / "curve.jsonl", root / f"{key}.curve.jsonl")
        tmp_meta = root / f".{key}.{os.getpid()}.json.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_meta, root / f"{key}.json")  # written last: its presence marks a complete reference
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    out.model.eval()
    return Reference(role, key, out.model, nm_nll, {**meta, "cache_hit": False, "waited_s": 0.0})
