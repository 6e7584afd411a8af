"""One evaluation, end to end: load the model, read the corpus, measure, write the record (`gapt-bench eval`).

An evaluation record lives in the same store and schema as a training run (`results.store.RunRecord`) with
``kind: "evaluation"``: ``task`` "evaluation", ``method`` the model's label, ``seed`` 0 (an evaluation has no
replicates; comparisons between models are per model, not paired), ``config`` the model's identity and the
evaluation settings, ``config_hash`` their hash (the same model and settings: the same key, so `--resume` skips
it), ``setup_hash`` the hash of the settings alone (models measured alike). With ``log_samples`` the per-example
numbers go to ``runs/<run_id>/samples.jsonl`` beside the record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapt_bench.config import stable_hash
from gapt_bench.evaluation.load import ModelArgs, ModelError, load_model
from gapt_bench.results.store import SCHEMA_VERSION, append_record, finished_keys

MEASURES = ("ce", "bpb", "mbe", "memorization")
EVALUATION_TASK = "evaluation"


@dataclass
class EvalConfig:
    """Everything that decides an evaluation's numbers (all of it recorded, and hashed with the model)."""

    measures: tuple[str, ...] = ("ce", "bpb", "mbe")
    data: str = "offline"  # as `run`'s data.source: offline, a local parquet/jsonl file or folder, a hub id
    data_name: str | None = None
    split: str = "val"  # all | train | val: the suite's keyed-hash document split (val: what runs never train on)
    val_fraction: float = 0.1  # the split's share of validation candidates (a run's data.val_fraction)
    seq_len: int = 256
    batch_size: int = 8
    max_tokens: int = 65_536
    windowing: str = "chunks"  # chunks | rolling | both (evaluation/language.py)
    alpha: float = 2.0
    patch_size: int = 8
    mbe_windows: int = 64
    members: str | None = None
    nonmembers: str | None = None
    member_tokens: int = 64
    prefix_lengths: tuple[int, ...] = (8, 16, 32)
    min_k: float = 0.2
    calib_fraction: float = 0.5
    split_seed: int = 0
    n_boot: int = 1000
    reference: dict[str, Any] | None = field(default=None)  # the reference model's arguments (ModelArgs fields)


def read_text_set(path: str, flag: str) -> list[str]:
    """Texts of a member/non-member file: .txt (one text per line) or parquet/jsonl with a `text` column."""
    from gapt_bench.data.sources import load_texts, resolve_source

    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{flag} {path} does not exist; pass a .txt (one text per line) or a .jsonl/.parquet file")
    if p.suffix == ".txt":
        return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [d.text for d in load_texts(resolve_source(str(p)))]


_IDENTITY_KEYS = ("pretrained", "revision", "content_hash", "dtype", "tokenizer")


def evaluation_key(identity: dict, cfg: EvalConfig, reference: dict | None = None) -> tuple[str, str, str, int]:
    """(task, method, config_hash, seed) of an evaluation: the model's and the reference's identity and every
    setting (the same model measured alike has the same key, so `--resume` skips it)."""
    settings = dataclasses.asdict(cfg)
    model_id = {k: identity.get(k) for k in _IDENTITY_KEYS}
    ref_id = {k: reference.get(k) for k in _IDENTITY_KEYS} if reference else None
    return (
        EVALUATION_TASK,
        identity["label"],
        stable_hash({"model": model_id, "reference": ref_id, "settings": settings}),
        0,
    )


def _tokens_evaluated(summary: dict) -> int:
    corpus = summary.get("corpus") or {}
    return int(corpus.get("chunk_tokens") or corpus.get("rolling_tokens") or 0)


def run_evaluation(
    model_args: ModelArgs,
    cfg: EvalConfig,
    out: Path,
    *,
    resume: bool = False,
    log_samples: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    env: dict | None = None,
) -> tuple[dict | None, str]:
    """(record or None when skipped under `resume`, a one-line note). Bad input raises ModelError/ValueError
    before anything is written."""
    from gapt_bench.data.sources import load_texts, resolve_source

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    members = nonmembers = None
    if "memorization" in cfg.measures:
        if not cfg.members or not cfg.nonmembers:
            raise ValueError("--measure memorization needs --members FILE and --non-members FILE")
        members = read_text_set(cfg.members, "--members")
        nonmembers = read_text_set(cfg.nonmembers, "--non-members")
        if set(members) & set(nonmembers):
            raise ValueError(
                f"{len(set(members) & set(nonmembers))} texts are both members and non-members; "
                f"membership is undefined for them: remove them from one file"
            )
    loaded = load_model(model_args)
    context = loaded.identity.get("context_length")
    for flag, length in (("--seq-len", cfg.seq_len), ("--member-tokens", cfg.member_tokens)):
        used = flag == "--seq-len" and any(m in cfg.measures for m in ("ce", "bpb", "mbe"))
        used = used or (flag == "--member-tokens" and "memorization" in cfg.measures)
        if used and context is not None and length > context:
            raise ModelError(
                f"{flag} {length} is longer than the model's context ({context} tokens); pass {flag} <= {context}"
            )
    reference = ref_identity = None
    if cfg.reference is not None and "memorization" in cfg.measures:
        ref_args = {"device": model_args.device, "dtype": model_args.dtype, **cfg.reference}
        ref = load_model(ModelArgs(**ref_args), role="reference")
        ref_identity = ref.identity
        if ref.tokenizer.get_vocab() != loaded.tokenizer.get_vocab():
            raise ModelError(
                "the reference model's tokenizer differs from the model's; unintended memorization compares code "
                "lengths of the same tokens: pass a reference trained with the same tokenizer"
            )
        reference = ref.model
    key = evaluation_key(loaded.identity, cfg, ref_identity)
    if resume and key in finished_keys(out):
        return None, f"{loaded.label}: already evaluated with these settings in {out} (skipped under --resume)"
    metrics: dict[str, float] = {}
    summary: dict[str, Any] = {"model": loaded.identity, "reference": ref_identity}
    samples: list[dict] = []
    language = [m for m in cfg.measures if m in ("ce", "bpb", "mbe")]
    if language:
        from gapt_bench.evaluation.language import language_metrics, take_documents

        split = None if cfg.split == "all" else cfg.split
        src = resolve_source(cfg.data, cfg.data_name)
        texts = (d.text for d in load_texts(src, split=split, val_fraction=cfg.val_fraction))
        docs = take_documents(texts, loaded.tokenizer, cfg.max_tokens)
        windowing = cfg.windowing if ("ce" in language or "bpb" in language) else "none"
        lm, lsum, lsamples = language_metrics(
            loaded.model,
            loaded.tokenizer,
            docs,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            max_tokens=cfg.max_tokens,
            windowing=windowing,
            mbe="mbe" in language,
            alpha=cfg.alpha,
            patch_size=cfg.patch_size,
            mbe_windows=cfg.mbe_windows,
            progress=(lambda d, t: progress("language", d, t)) if progress else None,
        )
        metrics.update(lm)
        summary["corpus"] = {"source": src.identity(), "split": cfg.split, **lsum}
        samples += lsamples
    if members is not None and nonmembers is not None:
        from gapt_bench.evaluation.memorization import memorization_metrics

        if progress:
            progress("memorization", 0, 1)
        mm, msum, msamples = memorization_metrics(
            loaded.model,
            loaded.tokenizer,
            members,
            nonmembers,
            reference=reference,
            seq_len=cfg.member_tokens,
            prefix_lengths=cfg.prefix_lengths,
            batch_size=cfg.batch_size,
            k=cfg.min_k,
            calib_fraction=cfg.calib_fraction,
            seed=cfg.split_seed,
            n_boot=cfg.n_boot,
        )
        metrics.update(mm)
        summary["memorization"] = msum
        samples += msamples
        if progress:
            progress("memorization", 1, 1)
    wall = time.perf_counter() - t0
    task, label, config_hash, seed = key
    run_id = f"eval-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)[:40]}-{config_hash[:8]}-{uuid.uuid4().hex[:6]}"
    settings = dataclasses.asdict(cfg)
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "evaluation",
        "run_id": run_id,
        "task": task,
        "task_version": "1",
        "method": label,
        "seed": seed,
        "preset": "eval",
        "config": {"model": loaded.identity, "reference": ref_identity, "evaluation": settings},
        "config_hash": config_hash,
        "setup_hash": stable_hash(settings),
        "metrics": metrics,
        "metric_directions": {k: "min" for k in metrics},
        "primary_metrics": [m for m in ("bpb", "bpb_rolling", "ce", "mbe") if m in metrics][:1],
        "controls": [],
        "status": "ok",
        "error": None,
        "n_params": loaded.identity["n_params"],
        "tokens": _tokens_evaluated(summary),
        "steps": None,
        "stop_reason": None,
        "wall_time_s": round(wall, 3),
        "tokens_per_s": None,
        "summary": summary,
        "env": env or {},
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    run_dir = out / "runs" / run_id
    try:  # the folder first, the record last (the commit point); a failure in between leaves neither
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / "config.json").write_text(json.dumps(record["config"], indent=2, default=str) + "\n")
        if log_samples:
            with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as f:
                for row in samples:
                    f.write(json.dumps(row) + "\n")
        append_record(out, record)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return record, f"{label}: evaluated in {wall:.1f} s -> {out}/runs.jsonl"
