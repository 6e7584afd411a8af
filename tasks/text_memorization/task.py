"""Text memorization (Morris et al. 2025, sections 4-5; capacity-paper.md sections 1, 3 and 3.5).

How much of a text training set does a model memorize beyond what it generalizes, and can it be extracted or
detected? A sweep over training-set size N per model size, every method at the same token budget.

Data (every choice the paper leaves open is a `data.*` field, recorded in each run):

* Text from the source the suite already reads (`gapt_bench.data`): ``offline`` (the bundled public-domain corpus;
  the CPU presets), a local parquet/jsonl with a ``text`` column (FineWeb on disk), or a hub id
  (``HuggingFaceFW/fineweb``, streamed; then ``data.read_tokens`` bounds what is read). Tokenised once into the
  token cache. Documents are split by a keyed hash of their text (`doc_split`, ``data.val_fraction``): training
  candidates and held-out candidates never share a document.
* Sequences of S = ``train.seq_len`` tokens cut from each document (``data.cut``: ``chunks`` = every
  non-overlapping S-token chunk inside a document, the tail dropped; ``first`` = the first S tokens of each
  document, the paper's "truncation"). Never across document boundaries, no EOT inside a sequence.
* Exact deduplication (``data.dedup``; `memorization.exact_dedup`) of the training candidates and, separately, of
  the held-out candidates; then every held-out sequence equal to *any* distinct training sequence is dropped
  (`memorization.rows_in`), so no non-member occurs in the pool, and the check is repeated on the final sets and
  recorded (``summary.data.nonmember_pool_overlap`` = 0 and how many were dropped).
* The **pool**: ``data.pool_sequences`` distinct training sequences (null: all of them), drawn by a fixed
  permutation (the same for every seed). The reference models train on the whole pool.
* The **training set** of a run: the first N sequences of a permutation of the pool seeded by ``data.data_seed``
  (null: the run seed), so the sets of one seed are nested across N.
* **Non-members**: ``data.nonmember_sequences`` held-out sequences (a fixed permutation): the test loss,
  extraction and membership inference read them. They are disjoint from the training set and from the
  references' data by construction and by the check above.

Sizing N: ``data.n_sequences`` directly, or ``data.capacity_ratio``: N = round(ratio * alpha * P /
(sizing_bits_per_token * (S - 1))), with P the paper's parameter count and ``data.sizing_bits_per_token`` an
estimate of the reference's code length per predicted token (N must be known while planning, before any reference
exists). Each run records the requested ratio and the realised one, Σ -log2 p(x | θ_ref) over its training set /
(alpha * P), measured with the trained reference.

Reference models, trained once per (data, architecture, recipe, seed, device, precision) and cached under
``<cache>/text_memorization/references/<key>.{pt,npz,json}`` (``<cache>``: ``data.cache_dir``, else
``$GAPT_BENCH_CACHE``, else ``~/.cache/gapt_bench``: the token cache's home, so a new results folder reuses them):

* (a) ``ref``: the run's architecture trained on the whole pool with the run's recipe (CE only) for
  ``data.ref_tokens`` tokens (null: ``train.tokens``). The paper's main reference.
* (b) ``oracle`` (optional, ``data.oracle_n_layer`` > 0): a larger model, same recipe and pool, for
  ``data.oracle_tokens`` tokens (null: the reference's budget).

A run that needs a reference which is not cached claims it (`store.try_claim` on the reference's key: an
exclusive-create claim file with a heartbeat; a dead owner's claim is taken over), trains it, writes its weights
(``.pt``), its per-sequence code lengths on the non-members (``.npz``), its training curve (``.curve.jsonl``) and
its provenance (``.json``, written last: its presence marks a complete reference), and releases the claim; a run
that finds it claimed waits for the files. So a parallel or resumed sweep trains each reference once. Each run
scores its own training set with the loaded reference (one forward pass). The reference never sees a non-member.
The sequence data (pool and non-members) are cached beside them under ``<cache>/text_memorization/sequences/``.

Measured per run (bits are log2; code lengths use the strict first-token convention of `gapt_bench.measures.memorization`,
token 1 of a sequence is context only):

* ``train_ce`` / ``test_ce``: mean next-token CE (nats) on the training set / the non-members.
* ``mem_u_bits``: total unintended memorization of the training set against the reference,
  Σ_i max(0, log2 p(x_i | θ̂) − log2 p(x_i | θ_ref)), the max taken per *sequence*;
  ``mem_u_nonmember_bits_per_seq``: the same per non-member sequence (what the model knows beyond the reference on
  text it never saw: the floor). ``mem_u_oracle_*`` against the oracle when there is one.
* ``extract_train_p<k>`` / ``extract_test_p<k>``: fraction of training / non-member sequences whose remaining S − k
  tokens greedy decoding reproduces exactly from their first k tokens, for k in ``data.prefixes``.
* ``mi_f1`` (0.5 = chance) and ``mi_auc``: loss-threshold membership inference (Yeom et al. 2018) on a balanced set
  of up to ``data.mi_sequences`` members (training sequences) and as many non-members; the score is the mean NLL
  per predicted token; the threshold is chosen on a calibration split (``data.mi_calib_fraction`` of each, by
  ``data.mi_rule``) and F1 is scored on the other part only, so the threshold never sees the members it scores
  (`memorization.membership_inference`; the record's summary states the split).
* ``test_mbe`` / ``test_mbe_centered``: MBE of the non-members' hidden states (every method reports it).

The primary metric is ``test_ce``: at matched budgets, does a method generalize better to held-out text? The
memorization measures are diagnostics of the task's question (does compression change what is memorized,
extractable or detectable?), and for them lower is "better" in the privacy sense. N, P, the dataset information,
alpha * P, the realised ratio and |D|/P are properties of the setup, not of the method: they are in the record's
summary (``summary.sizing``), where the memorization analysis (`gapt_bench.results.analysis.text_memorization`) reads them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from gapt_bench.config import ConfigError
from gapt_bench.data import (
    DataError,
)
from gapt_bench.measures import membership
from gapt_bench.measures import memorization as M
from gapt_bench.measures.entropy import layer_entropies
from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.tasks.base import (
    EpochOrder,
    Evaluation,
    LMTask,
    mbe_metrics,
    next_token_targets,
    register_task,
    size_vocab_for_tokenizer,
)
from gapt_bench.tasks.text_memorization.options import (
    _N_DEFAULT,
    ESTIMATOR_TEXT,
    SCORE_CHUNK,
    TASK_NAME,
    TASK_VERSION,
    TextMemorizationOptions,
)
from gapt_bench.tasks.text_memorization.references import Reference, ensure_reference
from gapt_bench.tasks.text_memorization.sequences import _source_countable, prepare_sequences
from gapt_bench.training.model import paper_param_count_of, param_count
from gapt_bench.training.runtime import (
    autocast_context,
    resolve_precision,
)


@register_task(TASK_NAME)
class TextMemorization(LMTask):
    version = TASK_VERSION
    description = (
        "unintended memorization, double descent, extraction and membership inference on text (Morris et al. 2025)"
    )
    Options = TextMemorizationOptions
    metrics: ClassVar[dict[str, str]] = {
        "test_ce": "min",
        "train_ce": "min",
        "mem_u_bits": "min",
        "mem_u_nonmember_bits_per_seq": "min",
        "mem_u_oracle_bits": "min",
        "mem_u_oracle_nonmember_bits_per_seq": "min",
        "extract_train_p*": "min",
        "extract_test_p*": "min",
        "mi_f1": "min",
        "mi_auc": "min",
        "test_mbe": "min",
        "test_mbe_centered": "min",
    }
    primary = ("test_ce",)

    # -- planning ----------------------------------------------------------------------------------------------
    @classmethod
    def finalize(cls, cfg) -> None:
        d, t = cfg.data, cfg.train
        S = t.seq_len
        size_vocab_for_tokenizer(cfg)
        if not d.prefixes:
            raise ConfigError("data.prefixes is empty; give extraction prefix lengths such as [8, 16, 32]")
        for p in d.prefixes:
            if not 1 <= p < S:
                raise ConfigError(
                    f"data.prefixes has {p}: an extraction prefix must be at least 1 token and shorter "
                    f"than the {S}-token sequences (train.seq_len) it is cut from; use prefixes "
                    f"below {S}"
                )
        if len(set(d.prefixes)) != len(d.prefixes):
            raise ConfigError(f"data.prefixes={d.prefixes} lists a length twice")
        if not 0.0 < d.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={d.val_fraction} must be in (0, 1)")
        if not 0.0 < d.mi_calib_fraction < 1.0:
            raise ConfigError(f"data.mi_calib_fraction={d.mi_calib_fraction} must be in (0, 1)")
        oracle = (d.oracle_n_layer, d.oracle_n_embd, d.oracle_n_head)
        if any(oracle) and not all(oracle):
            raise ConfigError(
                f"the oracle needs data.oracle_n_layer, oracle_n_embd and oracle_n_head all > 0 "
                f"(got {oracle}); or set all three to 0 for no oracle"
            )
        if all(oracle) and d.oracle_n_embd % d.oracle_n_head:
            raise ConfigError(
                f"data.oracle_n_embd={d.oracle_n_embd} is not divisible by data.oracle_n_head={d.oracle_n_head}"
            )
        if d.capacity_ratio is not None:
            if d.capacity_ratio <= 0 or d.alpha <= 0 or d.sizing_bits_per_token <= 0:
                raise ConfigError(
                    "data.capacity_ratio, data.alpha and data.sizing_bits_per_token must be > 0 to "
                    "size N; or set data.n_sequences"
                )
            n = sized_n(cfg)
            if d.n_sequences not in (n, _N_DEFAULT):
                raise ConfigError(
                    f"data.n_sequences={d.n_sequences} conflicts with data.capacity_ratio="
                    f"{d.capacity_ratio} (which gives N={n}); set data.capacity_ratio=null to fix N"
                )
            d.n_sequences = max(n, 1)
        if d.n_sequences < 4:
            raise ConfigError(
                f"N = {d.n_sequences} training sequences: membership inference needs at least 4 "
                f"(2 to calibrate, 2 to score); raise data.capacity_ratio or data.n_sequences"
            )
        if d.pool_sequences is not None and d.n_sequences > d.pool_sequences:
            raise ConfigError(
                f"N = {d.n_sequences:,} training sequences exceed data.pool_sequences="
                f"{d.pool_sequences:,}; the training set is drawn from the pool: raise the pool or "
                f"lower N"
            )
        if _source_countable(cfg):
            data = prepare_sequences(cfg)  # DataError when the source is too small for the pool/non-members
            if d.n_sequences > data.pool.shape[0]:
                raise DataError(
                    f"data.source={d.source!r} gives {data.pool.shape[0]:,} distinct training sequences "
                    f"of {S} tokens (after exact dedup), fewer than N = {d.n_sequences:,}; lower N "
                    f"(data.capacity_ratio / data.n_sequences) or use a larger source"
                )

    @classmethod
    def plan_summary(cls, cfg) -> str:
        d = cfg.data
        ratio = (
            f" (ratio {d.capacity_ratio:g} at {d.sizing_bits_per_token:g} bits/token)"
            if d.capacity_ratio is not None
            else ""
        )
        return f"{super().plan_summary(cfg)} N={d.n_sequences:,}{ratio}"

    # -- data --------------------------------------------------------------------------------------------------
    def setup(self, ctx=None) -> None:
        if ctx is not None and ctx.world_size > 1:
            raise ConfigError(
                "text_memorization runs on one device (its references are trained inside the run); "
                "run it without torchrun"
            )
        d = self.cfg.data
        self.data = prepare_sequences(self.cfg)
        n = d.n_sequences
        if n > self.data.pool.shape[0]:
            raise DataError(f"N = {n} exceeds the {self.data.pool.shape[0]} pool sequences")
        data_seed = self.cfg.seed if d.data_seed is None else d.data_seed
        self.train_idx = np.random.default_rng([data_seed, 0x7E47]).permutation(self.data.pool.shape[0])[:n]
        self.train = torch.from_numpy(self.data.pool[self.train_idx].astype(np.int64))
        self.order = EpochOrder(n, self.cfg.seed)
        self.nonmembers = torch.from_numpy(self.data.nonmembers.astype(np.int64))
        self.refs: dict[str, Reference] = {}
        if ctx is not None:
            self.refs["ref"] = ensure_reference(self, "ref", ctx)
            if d.oracle_n_layer:
                self.refs["oracle"] = ensure_reference(self, "oracle", ctx)

    def get_batch(self, step: int):
        """Sequences [step*B, (step+1)*B) of per-epoch permutations of the N training sequences (pure in step)."""
        x = self.train[self.order.indices(step, self.cfg.train.batch_size)]
        return x, next_token_targets(x)

    # -- measurement -------------------------------------------------------------------------------------------
    def score(self, model, tokens, device) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Per-sequence code lengths (bits) and greedy extraction hits per prefix, at the training precision.
        `tokens`: (n, S) tensor or array, converted to int64 a chunk at a time (a paper-scale pool is large)."""
        dev = torch.device(device)
        nll, hits = [], {p: [] for p in self.cfg.data.prefixes}
        for i in range(0, max(len(tokens), 1), SCORE_CHUNK):
            part = tokens[i : i + SCORE_CHUNK]
            part = torch.from_numpy(np.asarray(part, dtype=np.int64)) if isinstance(part, np.ndarray) else part
            n, h = M.sequence_scores(
                model,
                part,
                self.cfg.data.prefixes,
                batch_size=self.cfg.data.eval_batch,
                device=dev,
                context=lambda: autocast_context(dev, self.cfg.train.precision),
            )
            nll.append(n)
            for p in h:
                hits[p].append(h[p])
        return np.concatenate(nll), {p: np.concatenate(v) for p, v in hits.items()}

    def evaluate(self, model, ctx, trained) -> Evaluation:
        d, S = self.cfg.data, self.cfg.train.seq_len
        ln2 = math.log(2)
        n_params = param_count(model)
        tr_nll, tr_hits = self.score(model, self.train, ctx.device)
        te_nll, te_hits = self.score(model, self.nonmembers, ctx.device)
        metrics: dict[str, float] = {
            "test_ce": float(te_nll.mean() / (S - 1) * ln2),
            "train_ce": float(tr_nll.mean() / (S - 1) * ln2),
        }
        sizing: dict[str, Any] = {}
        refs: dict[str, Any] = {}
        for role, ref in self.refs.items():
            ref_tr, ref_te = self.score(ref.model, self.train, ctx.device)[0], ref.nonmember_nll
            prefix = "mem_u_" if role == "ref" else "mem_u_oracle_"
            metrics[f"{prefix}bits"] = M.total_unintended_memorization(tr_nll, ref_tr)
            metrics[f"{prefix}nonmember_bits_per_seq"] = M.total_unintended_memorization(te_nll, ref_te) / len(te_nll)
            refs[role] = {
                **ref.meta,
                "train_ce": float(ref_tr.mean() / (S - 1) * ln2),
                "test_ce": float(ref_te.mean() / (S - 1) * ln2),
                "mem_u_bits_per_seq": metrics[f"{prefix}bits"] / len(tr_nll),
            }
            if role == "ref":
                info = M.dataset_information_bits(ref_tr)
                sizing = {
                    "n_sequences": int(d.n_sequences),
                    "n_params": n_params,
                    "paper_param_count": paper_param_count_of(self.cfg.model),
                    "alpha": d.alpha,
                    "capacity_bits": d.alpha * n_params,
                    "data_info_bits": info,
                    "info_bits_per_token": info / (len(ref_tr) * (S - 1)),
                    "capacity_ratio": M.capacity_ratio(info, n_params, d.alpha),
                    "capacity_ratio_requested": d.capacity_ratio,
                    "sizing_bits_per_token": d.sizing_bits_per_token if d.capacity_ratio is not None else None,
                    "d_over_p": d.n_sequences / n_params,
                    "epochs": trained.tokens / (d.n_sequences * S),
                }
        for p in d.prefixes:
            metrics[f"extract_train_p{p}"] = float(tr_hits[p].mean())
            metrics[f"extract_test_p{p}"] = float(te_hits[p].mean())
        k = min(d.mi_sequences, len(tr_nll), len(te_nll))
        data_seed = self.cfg.seed if d.data_seed is None else d.data_seed
        mi = membership.membership_inference(
            tr_nll[:k] / (S - 1),
            te_nll[:k] / (S - 1),
            d.mi_calib_fraction,
            data_seed,
            rule=d.mi_rule,
            null_fallback_p=d.mi_null_fallback_p,
        )
        metrics.update({"mi_f1": mi["f1"], "mi_auc": mi["auc"]})
        metrics.update(self._mbe(model, ctx))
        summary = {
            "sizing": sizing,
            "references": refs,
            "membership_inference": {
                **{k2: v for k2, v in mi.items()},
                "members": "the first k training sequences (a random subset: the training set is a seeded draw)",
                "nonmembers": "the first k non-members",
                "k": k,
                "score": "mean NLL bits per predicted token",
            },
            "extraction": {
                "prefixes": list(d.prefixes),
                "rule": "greedy (argmax, teacher-forced check "
                "= exact greedy decoding), success = exact match of the remaining tokens",
                "train_sequences": len(tr_nll),
                "nonmember_sequences": len(te_nll),
                "train_hits": {str(p): int(tr_hits[p].sum()) for p in d.prefixes},
                "test_hits": {str(p): int(te_hits[p].sum()) for p in d.prefixes},
            },
            "mi_precision": mi["precision"],
            "mi_recall": mi["recall"],
        }
        return Evaluation(metrics, summary)

    @torch.no_grad()
    def _mbe(self, model, ctx) -> dict[str, float]:
        mb = self.cfg.mbe
        x = self.nonmembers[:64].to(ctx.device)
        was = model.training
        model.eval()
        try:
            with autocast_context(ctx.device, self.cfg.train.precision):
                _, hidden = forward_with_hidden(model, x)
            hidden = [h.float() for h in hidden]
        finally:
            model.train(was)
        return mbe_metrics(
            "test_",
            layer_entropies(hidden, mb.alpha, mb.patch_size).tolist(),
            layer_entropies(hidden, mb.alpha, mb.patch_size, centered=True).tolist(),
            per_layer=False,
        )

    def summary(self, trained, ctx) -> dict:
        d = self.cfg.data
        return {
            "data": dict(self.data.stats),
            "estimator": ESTIMATOR_TEXT,
            "convention": d.convention,
            "precision": resolve_precision(self.cfg.train.precision, ctx.device),
            "data_seed": self.cfg.seed if d.data_seed is None else d.data_seed,
            "train_sequences": int(d.n_sequences),
        }


def sized_n(cfg) -> int:
    """N from data.capacity_ratio: round(ratio * alpha * P / (sizing_bits_per_token * (S - 1)))."""
    d, m, t = cfg.data, cfg.model, cfg.train
    p = paper_param_count_of(m)
    return round(d.capacity_ratio * d.alpha * p / (d.sizing_bits_per_token * (t.seq_len - 1)))
