"""Language modelling on FineWeb (GAPT paper section 3.a, gapt-paper.md): GPT-2 pretraining, validation CE and MBE.

Data (through :mod:`gapt_bench.data`; the docstrings of its modules sources, tokenizers and cache have the
details):

* ``data.source``: ``offline`` (the public-domain corpus that ships with the package; the quick preset), a local
  ``.parquet``/``.jsonl`` file or folder with a ``text`` column (FineWeb on disk or from a mirror), or a hub id
  (``HuggingFaceFW/fineweb`` with ``data.name: sample-10BT``, streamed). A hub source is checked while planning:
  with ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` set or the hub unreachable the run is refused at once (exit 2)
  with a message naming the local-path option, unless its token files are already in the cache.
* ``data.tokenizer``: ``bytes`` (V = 257, the CPU default), ``bpe<N>`` (a byte-level BPE trained on the source's
  training documents and cached) or ``gpt2`` (the real GPT-2 BPE, hash-checked; V = 50,257, padded to
  ``data.pad_vocab_multiple``, e.g. 50,304 on GPU). The record's summary names the tokenizer.
* Documents are split by a keyed hash of their text (`gapt_bench.data.doc_split`): validation takes candidates
  until ``data.val_tokens`` (the paper: 10,485,760); training never sees a validation candidate. Both splits are
  token files in the cache (``data.cache_dir``, else ``$GAPT_BENCH_CACHE``, else ``~/.cache/gapt_bench``), so a second
  run does not re-tokenise. Under DDP the first rank of each node builds them while the others wait.
* Training reads ``data.train_tokens`` tokens (null: the whole offline corpus, else ``train.tokens``: one pass),
  cut into packed sequences: sequence j is tokens [j*S, j*S + S] (S inputs, targets shifted by one; documents are
  joined by EOT and attention crosses their boundaries, as in nanoGPT). Each epoch over the sequences has its own
  permutation seeded by (run seed, epoch), so ``get_batch(step)`` is a pure function of (config, step) and every
  sequence is seen once per epoch. When the budget exceeds the data the sequences repeat; the summary records
  ``epochs``.

Metrics, all on the validation split, only at the end of training:

* ``val_ce``: mean next-token CE in nats over ``(min(n_val - 1, val_tokens) // S)`` windows of S tokens.
* ``val_bpb``: bits per UTF-8 byte, ``val_ce / ln 2 * n_val_tokens / n_val_bytes`` (the split's token/byte ratio,
  EOT tokens counted as tokens): comparable across tokenizers.
* ``val_mbe_layer_<i>``: matrix-based entropy (alpha ``mbe.alpha``, patches of ``mbe.patch_size``: the training
  settings) of block i's residual output, averaged over the patches of the first ``mbe.eval_batches`` evaluation
  batches of ``data.eval_batch_size`` windows; ``val_mbe`` is the mean over layers and ``val_mbe_centered`` the
  mean of the centred-Gram control (the collapse check).

Throughput, in the record's ``summary`` (not in ``metrics``: it measures the machine, not the method):

* ``tokens_per_s``: training tokens (all ranks) per second, timed after the first few steps (warm-up, compile).
* ``mfu``: model FLOPs utilisation against the GPU's dense bf16 peak (formula and peak table in
  :mod:`gapt_bench.training.model`); null on CPU or an unknown GPU. The MBE regulariser's FLOPs are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from gapt_bench.config import ConfigError, opt
from gapt_bench.data import (
    LOCAL_FIX,
    DataError,
    TokenCache,
    cached_without_streaming,
    check_local_source,
    hub_unreachable_reason,
    resolve_source,
)
from gapt_bench.data.options import name_option, source_option, tokenizer_option
from gapt_bench.measures.entropy import matrix_entropy_per_patch
from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.tasks.base import (
    Evaluation,
    LMTask,
    mbe_metrics,
    register_task,
    size_vocab_for_tokenizer,
)
from gapt_bench.training.model import (
    MFU_FORMULA,
    build_from_config,
    flops_per_token,
    mfu,
    peak_flops,
)
from gapt_bench.training.runtime import autocast_context, resolve_precision


@dataclass
class FineWebOptions:
    source: str = source_option()
    name: str | None = name_option()
    tokenizer: str = tokenizer_option()
    val_tokens: int = opt(131_072, "validation tokens (whole documents; the paper: 10,485,760)", min=1)
    val_bytes: int | None = opt(
        None, "if set, the validation budget in UTF-8 bytes instead (same documents for every tokenizer)", min=1
    )
    val_fraction: float = opt(0.1, "fraction of documents that are validation candidates (keyed hash)", min=0.0)
    train_tokens: int | None = opt(
        None,
        "training tokens to tokenise and cycle over; null = the whole offline corpus, else train.tokens (one pass)",
        min=1,
    )
    pad_vocab_multiple: int = opt(1, "pad model.vocab_size up to a multiple of this (64 on GPU: 50257 -> 50304)", min=1)
    eval_batch_size: int = opt(32, "validation windows per forward pass", min=1)
    cache_dir: str | None = opt(None, "token cache root (null: $GAPT_BENCH_CACHE or ~/.cache/gapt_bench)")


@register_task("fineweb_lm")
class FineWebLM(LMTask):
    version = "1"
    description = "GPT-2 language modelling on FineWeb (or the bundled offline corpus): val CE, bits/byte, MBE"
    Options = FineWebOptions
    metrics: ClassVar[dict[str, str]] = {
        "val_ce": "min",
        "val_bpb": "min",
        "val_mbe": "min",
        "val_mbe_centered": "min",
        "val_mbe_layer_*": "min",
    }
    primary = ("val_ce",)

    # -- planning ----------------------------------------------------------------------------------------------
    @classmethod
    def finalize(cls, cfg) -> None:
        d, t = cfg.data, cfg.train
        size_vocab_for_tokenizer(cfg)
        if d.val_bytes is None and d.val_tokens < t.seq_len + 1:
            raise ConfigError(
                f"data.val_tokens={d.val_tokens} is less than one validation window "
                f"(train.seq_len + 1 = {t.seq_len + 1}); raise it"
            )
        if not 0.0 < d.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={d.val_fraction} must be in (0, 1)")
        check_source(cfg)

    # -- data --------------------------------------------------------------------------------------------------
    def setup(self, ctx=None) -> None:
        from gapt_bench.training import distributed

        self._pin = ctx is not None and ctx.device.type == "cuda"  # pinned host batches on CUDA
        d, t = self.cfg.data, self.cfg.train
        src = resolve_source(d.source, d.name)
        train_tokens = d.train_tokens if d.train_tokens is not None else (None if src.kind == "offline" else t.tokens)
        with distributed.local_main_first():  # DDP: build the token files once per node, then load them
            data = TokenCache(d.cache_dir).get(
                src,
                d.tokenizer,
                val_tokens=d.val_tokens,
                val_bytes=d.val_bytes,
                train_tokens=train_tokens,
                val_fraction=d.val_fraction,
            )
        if data.vocab_size > self.cfg.model.vocab_size:
            raise ConfigError(
                f"tokenizer {data.tokenizer.name} has {data.vocab_size} ids but model.vocab_size="
                f"{self.cfg.model.vocab_size}"
            )
        S = t.seq_len
        self.data = data
        self.train_tokens = data.train.tokens
        self.n_seq = (data.train.n_tokens - 1) // S
        if self.n_seq < 1:
            raise ConfigError(f"only {data.train.n_tokens} training tokens: fewer than one sequence of {S + 1}")
        self.val_tokens = data.val.tokens
        n_val = data.val.n_tokens if d.val_bytes is not None else min(data.val.n_tokens, d.val_tokens + 1)
        self.n_val_windows = (n_val - 1) // S
        if self.n_val_windows < 1:
            raise ConfigError(f"only {data.val.n_tokens} validation tokens: fewer than one window of {S + 1}")
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self._offsets = np.arange(S + 1, dtype=np.int64)

    # Not task.EpochOrder: that draws torch.randperm from seed * 1_000_003 + epoch, this numpy PCG64 from (seed,
    # epoch, 0x6657); switching would change every fineweb_lm batch and so the committed baselines.
    def _perm(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.Generator(np.random.PCG64([self.cfg.seed, epoch, 0x6657]))
            self._perm_cache = (epoch, rng.permutation(self.n_seq))
        return self._perm_cache[1]

    def _rows(self, tokens: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        idx = starts[:, None] + self._offsets[None, :]
        return torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))

    def get_batch(self, step: int):
        """Sequences [step*B, (step+1)*B) of the endless stream of per-epoch permutations (pure in (seed, step))."""
        b, S = self.cfg.train.batch_size, self.cfg.train.seq_len
        pos, ids = step * b, []
        while len(ids) < b:
            epoch, k = divmod(pos + len(ids), self.n_seq)
            ids.extend(self._perm(epoch)[k : k + b - len(ids)].tolist())
        rows = self._rows(self.train_tokens, np.asarray(ids, dtype=np.int64) * S)
        x, y = rows[:, :-1], rows[:, 1:]
        if self._pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, ctx, trained) -> Evaluation:
        """Validation CE, bits/byte and per-layer MBE; under DDP each rank takes windows rank::world_size and the
        sums are all-reduced, so the numbers equal a single process's."""
        from gapt_bench.training import distributed

        S, d, mb = self.cfg.train.seq_len, self.cfg.data, self.cfg.mbe
        L = self.cfg.model.n_layer
        device = ctx.device
        world, rank = max(1, ctx.world_size), ctx.rank
        mbe_windows = min(self.n_val_windows, mb.eval_batches * d.eval_batch_size)
        mine = np.arange(rank, self.n_val_windows, world, dtype=np.int64)
        # sums: [nll, n_targets, mbe_layer_0..L-1, mbe_centred_0..L-1, n_patches]
        acc = torch.zeros(3 + 2 * L, dtype=torch.float64)
        was_training = model.training
        model.eval()
        try:
            for i in range(0, len(mine), d.eval_batch_size):
                w = mine[i : i + d.eval_batch_size]
                rows = self._rows(self.val_tokens, w * S).to(device)
                x, y = rows[:, :-1], rows[:, 1:]
                with autocast_context(device, self.cfg.train.precision):
                    logits, hidden = forward_with_hidden(model, x)
                acc[0] += float(
                    F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
                )
                acc[1] += y.numel()
                keep = torch.from_numpy(w < mbe_windows).to(device)
                if bool(keep.any()):
                    for li, h in enumerate(hidden):
                        h = h[keep]
                        acc[2 + li] += float(matrix_entropy_per_patch(h, mb.alpha, mb.patch_size).double().sum())
                        acc[2 + L + li] += float(
                            matrix_entropy_per_patch(h, mb.alpha, mb.patch_size, centered=True).double().sum()
                        )
                    acc[2 + 2 * L] += int(keep.sum()) * (S // mb.patch_size)
                del logits, hidden
        finally:
            model.train(was_training)
        acc = distributed.all_reduce_sum(acc) if world > 1 else acc
        val_ce = float(acc[0] / acc[1])
        n_patches = float(acc[2 + 2 * L])
        plain = [float(acc[2 + li]) / n_patches for li in range(L)]
        centred = [float(acc[2 + L + li]) / n_patches for li in range(L)]
        out = {"val_ce": val_ce, "val_bpb": val_ce / math.log(2) / self.data.val.bytes_per_token}
        out.update(mbe_metrics("val_", plain, centred))
        return Evaluation(
            out,
            {"val_windows": self.n_val_windows, "val_tokens_evaluated": int(acc[1]), "val_mbe_windows": mbe_windows},
        )

    # -- provenance and throughput ------------------------------------------------------------------------------
    def summary(self, trained, ctx) -> dict:
        m, t = self.cfg.model, self.cfg.train
        data = self.data
        out = {
            "tokenizer": data.tokenizer.name,
            "tokenizer_vocab_size": data.vocab_size,
            "model_vocab_size": m.vocab_size,
            "data_source": data.source,
            "train_tokens_available": data.train.n_tokens,
            "train_sequences": self.n_seq,
            "epochs": trained.tokens / (self.n_seq * t.seq_len),
            "val_tokens_split": data.val.n_tokens,
            "val_docs": data.val.n_docs,
            "val_bytes_per_token": data.val.bytes_per_token,
            "token_cache_hit": data.cache_hit,
            "world_size": ctx.world_size,
            "precision": resolve_precision(t.precision, ctx.device),
        }
        return {**out, **self.throughput(trained, ctx)}

    def throughput(self, trained, ctx) -> dict:
        """tokens_per_s (all ranks) and MFU against the GPU's dense bf16 peak (null on CPU / unknown GPUs)."""
        s, m, t = trained.summary, self.cfg.model, self.cfg.train
        if s.get("steady_time_s"):
            tokens, seconds = s["steady_tokens"], s["steady_time_s"]
        else:
            tokens, seconds = trained.tokens, s.get("train_time_s") or 0.0
        tps = tokens / seconds if seconds else None
        with torch.device("meta"):
            shell = build_from_config(m)
        fpt = flops_per_token(shell, t.seq_len)
        peak, gpu = peak_flops(ctx.device)
        return {
            "tokens_per_s": tps,
            "mfu": mfu(fpt, tps, peak, ctx.world_size),
            "flops_per_token": fpt,
            "peak_flops": peak,
            "gpu_name": gpu,
            "mfu_formula": MFU_FORMULA,
        }


def check_source(cfg) -> None:
    """Refuse a hub source at planning time when the hub cannot be reached (DataError -> exit 2), unless both
    token files are already cached; a missing, empty or text-less local source raises DataError too. Local sources
    never touch the network."""
    d = cfg.data
    src = resolve_source(d.source, d.name)
    if src.kind == "local":
        check_local_source(src)
    if src.kind != "hub":
        return
    label = src.hub_id + (f" (config {src.hub_name})" if src.hub_name else "")
    why = hub_unreachable_reason()
    if why is None or _hub_tokens_cached(cfg, src):
        return
    raise DataError(
        f"the Hugging Face hub is unreachable ({why}), so {label} cannot be streamed and its tokens "
        f"are not cached; {LOCAL_FIX}"
    )


def _hub_tokens_cached(cfg, src) -> bool:
    d = cfg.data
    return cached_without_streaming(
        src,
        d.tokenizer,
        d.cache_dir,
        val_tokens=d.val_tokens,
        val_bytes=d.val_bytes,
        val_fraction=d.val_fraction,
        train_tokens=d.train_tokens if d.train_tokens is not None else cfg.train.tokens,
    )
