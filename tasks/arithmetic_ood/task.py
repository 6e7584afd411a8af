"""Multiplication with out-of-distribution operand lengths (GAPT paper section 3.b, gapt-paper.md).

Data (as the author's `data/arithmetic.py`):
- A 15-token vocabulary: <bos>=0, <eos>=1, x=2, '='=3, space=4, digits 0-9 = 5-14.
- An example is `<bos>{a} x {b} = {c}<eos>` with c = a*b. Each operand's digit count is drawn uniformly from its
  range, then the number uniformly among the numbers with that many digits (a 1-digit operand is 1-9).
- Train and ID validation use `train_digits`, the OOD test uses `ood_digits`: on both operands (`ood_operands:
  both`, the paper's split, 1-3 -> 4-6 in the `paper` preset), or on one operand only with the other drawn from
  `train_digits` (`one`: which side is random, 50/50). At CPU scale no model extrapolates to two longer operands
  (digit accuracy at chance), so the `cpu-verdict` tier asks the answerable question of one longer operand; the
  `quick` preset uses 1-2 -> 3-4 so a CPU run learns in seconds.
- Everything is generated from `data.data_seed` (default: one fixed seed shared by every run seed, so all arms and
  seeds see the same dataset); the run seed sets the model's initialisation and the order of the training stream.

Disjoint splits. The author samples train and validation independently, so they overlap. Here a fraction
`id_holdout_frac` of the *unordered* operand pairs {a, b} (chosen by a seeded hash, so `a x b` and `b x a` go
together) is reserved for ID validation: training examples are drawn from the training distribution with reserved
pairs rejected, ID examples keep the same uniform digit-count distribution but draw their operands only among the
reserved pairs. OOD pairs have other digit counts (the ranges may not overlap). Disjointness of the three splits is
checked on the pairs after generation.

Training stream (`train_layout`): as in the paper, a pool of `n_train` examples is concatenated into one token
stream and cut into windows of `train.seq_len` tokens (examples straddle windows; attention crosses example
boundaries). Each epoch over the pool uses its own permutation of the examples, seeded by (run seed, epoch), so
`get_batch(step)` is a pure function of (config, step). `packed` instead fills each row greedily with whole examples,
the first at position 0 (no example is cut; the tail of a row is padding without loss). At CPU scale packing
learns much faster (ID exact match 0.50 against 0.26 after 1500 steps of 64 x 32 tokens with a 2-layer d=64
model); this is not an artefact of evaluating examples from position 0: the stream-trained model scores the same
with a preceding example in its context. The `quick` preset packs, the `paper` preset streams.

Training loss (`train_loss`): CE over every token (`all`, the paper's default) or over the answer only (`answer`,
the paper's `--mask_entropy_train`: the space and digits after '=', and here also <eos>, whatever `answer_eos`
says, because a model never trained on <eos> never ends its greedy answer and scores 0 exact match).

Evaluation, only at the end, on fixed sets of `n_id` / `n_ood` examples (never read during training, never seen by
the gate):
- `id_answer_ce`, `ood_answer_ce`: mean CE over the answer targets, teacher-forced, each example on its own from
  position 0. The answer targets are the tokens after '=': the leading space and the digits of c, plus <eos> when
  `answer_eos` is true. The paper's code (`create_result_mask`) excludes <eos> and includes the space; that is the
  default here, and the choice is recorded in the config.
- `id_exact_match`, `ood_exact_match`: greedy decoding after the prompt `<bos>a x b =` (up to len(a)+len(b)+2
  tokens); correct when the tokens up to the first <eos> are exactly ' ' + digits(c) and an <eos> was produced.
- `id_digit_acc`, `ood_digit_acc`: per-digit accuracy of the greedy answer, aligned from the least significant
  digit, pooled over all digits of the true answers (a missing digit is wrong; extra leading digits cost nothing
  here but already fail exact match).
- `ood_mbe_layer_<i>`, `ood_mbe` (their mean), `ood_mbe_centered` (the centred-Gram control), `id_mbe`: MBE of the
  evaluation examples concatenated into a stream and cut into `train.seq_len` windows, patches of `mbe.patch_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from gapt_bench.config import ConfigError, opt
from gapt_bench.measures.entropy import matrix_entropy_per_patch
from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.tasks.base import Evaluation, LMTask, mbe_metrics, register_task

BOS, EOS, TIMES, EQUALS, SPACE, DIGIT0 = 0, 1, 2, 3, 4, 5
VOCAB = ["<bos>", "<eos>", "x", "=", " "] + [str(d) for d in range(10)]
VOCAB_SIZE = len(VOCAB)
_TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}

# roles of stream tokens: which targets count as "answer"
ROLE_OTHER, ROLE_ANSWER, ROLE_EOS = 0, 1, 2


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer


def encode(text: str) -> list[int]:
    """Text -> token ids; '<bos>' and '<eos>' are single tokens, every other character is one token."""
    ids, i = [], 0
    while i < len(text):
        for special in ("<bos>", "<eos>"):
            if text.startswith(special, i):
                ids.append(_TOKEN_ID[special])
                i += len(special)
                break
        else:
            ch = text[i]
            if ch not in _TOKEN_ID:
                raise ValueError(f"character {ch!r} at position {i} is not in the arithmetic vocabulary")
            ids.append(_TOKEN_ID[ch])
            i += 1
    return ids


def decode(ids: Sequence[int]) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def transformers_tokenizer():
    """The arithmetic vocabulary as a transformers tokenizer (saved with a model): one id per character, <bos> and
    <eos> as special tokens; encodes as `encode` does."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(_TOKEN_ID), unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"<bos>|<eos>|[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


def answer_tokens(c: int, eos: bool = True) -> list[int]:
    """The answer targets of an example: ' ' + digits of c (+ <eos>)."""
    return [SPACE] + [DIGIT0 + int(d) for d in str(c)] + ([EOS] if eos else [])


# ----------------------------------------------------------------------------------------------------------------
# Data generation (vectorised numpy; int64 is enough up to 9-digit operands)


def n_digits(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    n = np.ones_like(x)
    t = x // 10
    while np.any(t > 0):
        n += t > 0
        t //= 10
    return n


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping arithmetic)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """An integer naming the unordered pair {a, b} (operands below 10**9)."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    return lo * np.int64(1_000_000_000) + hi


def is_reserved(a: np.ndarray, b: np.ndarray, data_seed: int, frac: float) -> np.ndarray:
    """True for unordered pairs reserved for ID validation (a seeded hash below `frac`)."""
    salt = _mix64(np.array([data_seed % 2**63], dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    u = (_mix64(pair_key(a, b).astype(np.uint64) ^ salt) >> np.uint64(11)).astype(np.float64) / float(2**53)
    return u < frac


def _draw_operands(rng: np.random.Generator, n: int, dmin: int, dmax: int) -> np.ndarray:
    d = rng.integers(dmin, dmax + 1, size=n)
    return rng.integers(10 ** (d - 1), 10**d)


def _redraw_same_digits(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    d = n_digits(x)
    return rng.integers(10 ** (d - 1), 10**d)


def sample_pairs(
    rng: np.random.Generator, n: int, digits: tuple[int, int], data_seed: int, frac: float, reserved: bool | None
) -> tuple[np.ndarray, np.ndarray]:
    """n operand pairs, digit counts uniform in `digits`, then numbers uniform in their count.

    reserved=None: no constraint (OOD). False: reserved pairs are rejected (train). True: only reserved pairs, with
    the digit counts kept (operands are redrawn within their digit counts until the pair is reserved: ID).
    """
    a = _draw_operands(rng, n, *digits)
    b = _draw_operands(rng, n, *digits)
    if reserved is None:
        return a, b
    for _ in range(10_000):
        bad = is_reserved(a, b, data_seed, frac) != reserved
        if not bad.any():
            return a, b
        a[bad] = _redraw_same_digits(rng, a[bad])
        b[bad] = _redraw_same_digits(rng, b[bad])
    raise ConfigError(
        f"could not draw {'reserved' if reserved else 'training'} pairs with digits {digits} "
        f"(data.id_holdout_frac={frac} leaves a digit-count cell empty); change data.data_seed or the fraction"
    )


@dataclass
class Examples:
    a: np.ndarray
    b: np.ndarray

    @property
    def c(self) -> np.ndarray:
        return self.a * self.b

    def __len__(self) -> int:
        return len(self.a)

    def take(self, idx: np.ndarray) -> Examples:
        return Examples(self.a[idx], self.b[idx])

    def keys(self) -> np.ndarray:
        return pair_key(self.a, self.b)


def tokenize(ex: Examples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated token stream (uint8), per-token role (ROLE_*) and example start offsets (len n+1)."""
    a, b, c = ex.a, ex.b, ex.c
    la, lb, lc = n_digits(a), n_digits(b), n_digits(c)
    lengths = 8 + la + lb + lc
    starts = np.zeros(len(a) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    toks = np.empty(int(starts[-1]), dtype=np.uint8)
    roles = np.zeros(int(starts[-1]), dtype=np.uint8)
    s = starts[:-1]
    toks[s] = BOS
    _write_number(toks, s + 1, a, la)
    p = s + 1 + la
    toks[p], toks[p + 1], toks[p + 2] = SPACE, TIMES, SPACE
    _write_number(toks, p + 3, b, lb)
    q = p + 3 + lb
    toks[q], toks[q + 1], toks[q + 2] = SPACE, EQUALS, SPACE
    _write_number(toks, q + 3, c, lc)
    toks[q + 3 + lc] = EOS
    roles[q + 2] = ROLE_ANSWER
    for j in range(int(lc.max(initial=0))):
        m = lc > j
        roles[q[m] + 3 + j] = ROLE_ANSWER
    roles[q + 3 + lc] = ROLE_EOS
    return toks, roles, starts


def _write_number(out: np.ndarray, pos: np.ndarray, x: np.ndarray, nd: np.ndarray) -> None:
    for j in range(int(nd.max(initial=0))):  # j-th digit from the least significant
        m = nd > j
        out[pos[m] + nd[m] - 1 - j] = DIGIT0 + (x[m] // 10**j) % 10


def answer_mask(roles: np.ndarray | torch.Tensor, include_eos: bool):
    """Which targets count as answer tokens, from their roles."""
    mask = roles == ROLE_ANSWER
    return (mask | (roles == ROLE_EOS)) if include_eos else mask


def padded_examples(ex: Examples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each example as its own row from position 0, right-padded with <eos>: (tokens, roles, lengths)."""
    toks, roles, starts = tokenize(ex)
    lengths = np.diff(starts)
    width = int(lengths.max())
    idx = starts[:-1, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] < lengths[:, None]
    idx = np.where(valid, idx, 0)
    rows = np.where(valid, toks[idx], EOS).astype(np.int64)
    rrows = np.where(valid, roles[idx], ROLE_OTHER).astype(np.int64)
    return torch.from_numpy(rows), torch.from_numpy(rrows), torch.from_numpy(lengths)


# ----------------------------------------------------------------------------------------------------------------
# Scoring of greedy answers


def generated_answer(generated: Sequence[int]) -> list[int]:
    """The generated tokens after the prompt, up to (not including) the first <eos>."""
    out = []
    for t in generated:
        if int(t) == EOS:
            break
        out.append(int(t))
    return out


def is_exact(generated: Sequence[int], c: int) -> bool:
    """Exact match: ' ' + digits(c) followed by <eos>."""
    gen = [int(t) for t in generated]
    want = answer_tokens(c, eos=True)
    return gen[: len(want)] == want


def digit_matches(generated: Sequence[int], c: int) -> tuple[int, int]:
    """(correct digits, digits of c), aligned from the least significant digit."""
    ans = generated_answer(generated)
    if ans and ans[0] == SPACE:
        ans = ans[1:]
    truth = [DIGIT0 + int(d) for d in str(c)]
    correct = sum(1 for i in range(1, len(truth) + 1) if i <= len(ans) and ans[-i] == truth[-i])
    return correct, len(truth)


def exact_match(generations: Sequence[Sequence[int]], answers: Sequence[int]) -> float:
    if len(answers) == 0:
        return float("nan")
    return sum(is_exact(g, int(c)) for g, c in zip(generations, answers)) / len(answers)


def digit_accuracy(generations: Sequence[Sequence[int]], answers: Sequence[int]) -> float:
    correct = total = 0
    for g, c in zip(generations, answers):
        k, n = digit_matches(g, int(c))
        correct, total = correct + k, total + n
    return correct / total if total else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# The task


@dataclass
class ArithmeticOptions:
    train_digits: list[int] = opt([1, 3], "operand digit range [min, max] of train and ID validation (paper 1-3)")
    ood_digits: list[int] = opt([4, 6], "operand digit range [min, max] of the OOD test (paper 4-6)")
    ood_operands: str = opt(
        "both",
        "which operands of an OOD example take ood_digits: both (paper) or one (the other from train_digits, "
        "side random)",
        choices=("both", "one"),
    )
    data_seed: int | None = opt(1234, "dataset seed shared by every run seed; null = the run seed")
    n_train: int = opt(1_000_000, "examples in the training pool (paper 10M); epochs reshuffle it", min=1)
    n_id: int = opt(2000, "ID validation examples (paper 10,000)", min=1)
    n_ood: int = opt(2000, "OOD test examples (paper 10,000)", min=1)
    id_holdout_frac: float = opt(0.1, "fraction of unordered operand pairs reserved for ID validation", min=0.0)
    train_layout: str = opt(
        "stream",
        "stream: concatenated examples cut into windows (paper); packed: whole examples per row from <bos>",
        choices=("stream", "packed"),
    )
    train_loss: str = opt(
        "all", "training CE over all tokens (paper) or the answer tokens only", choices=("all", "answer")
    )
    answer_eos: bool = opt(False, "answer CE includes the <eos> target (paper code: excluded; space included)")
    eval_batch: int = opt(256, "examples per evaluation forward pass", min=1)
    mbe_windows: int = opt(256, "max seq_len windows of the ID/OOD streams for the MBE metrics", min=1)


@register_task("arithmetic_ood")
class ArithmeticOOD(LMTask):
    version = "1"
    description = "a*b with short operands in training; answer CE, exact match and digit accuracy on longer ones"
    Options = ArithmeticOptions
    metrics: ClassVar[dict[str, str]] = {
        "id_answer_ce": "min",
        "ood_answer_ce": "min",
        "id_exact_match": "max",
        "ood_exact_match": "max",
        "id_digit_acc": "max",
        "ood_digit_acc": "max",
        "ood_mbe": "min",
        "ood_mbe_centered": "min",
        "ood_mbe_layer_*": "min",
        "id_mbe": "min",
    }
    primary = ("ood_answer_ce", "ood_digit_acc")

    @classmethod
    def finalize(cls, cfg) -> None:
        d, m, t = cfg.data, cfg.model, cfg.train
        for name in ("train_digits", "ood_digits"):
            r = getattr(d, name)
            if len(r) != 2 or not 1 <= r[0] <= r[1] <= 9:
                raise ConfigError(f"data.{name}={r} must be [min, max] with 1 <= min <= max <= 9")
        (tlo, thi), (olo, ohi) = d.train_digits, d.ood_digits
        if not (ohi < tlo or olo > thi):
            raise ConfigError(
                f"data.ood_digits={d.ood_digits} overlaps data.train_digits={d.train_digits}; "
                "OOD operand lengths must lie outside the training range"
            )
        if not 0.0 < d.id_holdout_frac < 1.0:
            raise ConfigError(f"data.id_holdout_frac={d.id_holdout_frac} must be strictly between 0 and 1")
        if t.seq_len % cfg.mbe.patch_size:
            raise ConfigError(
                f"train.seq_len={t.seq_len} is not a multiple of mbe.patch_size={cfg.mbe.patch_size}; "
                "MBE patches must tile the sequence"
            )
        longest = max_example_len(max(thi, ohi))
        if t.seq_len < longest:
            raise ConfigError(
                f"train.seq_len={t.seq_len} is shorter than the longest example ({longest} tokens for "
                f"{max(thi, ohi)}-digit operands); raise train.seq_len"
            )
        m.vocab_size = m.vocab_size or VOCAB_SIZE
        if m.vocab_size != VOCAB_SIZE:
            raise ConfigError(
                f"model.vocab_size={m.vocab_size} must be {VOCAB_SIZE} (the arithmetic vocabulary); leave it 0"
            )
        m.n_positions = m.n_positions or t.seq_len
        if m.n_positions < t.seq_len:
            raise ConfigError(f"model.n_positions={m.n_positions} < train.seq_len={t.seq_len}")

    # -- data ------------------------------------------------------------------------------------------------------
    def transformers_tokenizer(self):
        return transformers_tokenizer()

    def setup(self, ctx=None) -> None:
        d = self.cfg.data
        seed = self.cfg.seed if d.data_seed is None else d.data_seed
        self.data_seed = seed
        rng = np.random.default_rng([seed, 0xA217])
        frac, tr, od = d.id_holdout_frac, tuple(d.train_digits), tuple(d.ood_digits)
        self.train_ex = Examples(*sample_pairs(rng, d.n_train, tr, seed, frac, reserved=False))
        self.id_ex = Examples(*sample_pairs(rng, d.n_id, tr, seed, frac, reserved=True))
        self.ood_ex = Examples(*sample_pairs(rng, d.n_ood, od, seed, frac, reserved=None))
        if d.ood_operands == "one":  # one operand from the training range, on a random side
            short = _draw_operands(rng, d.n_ood, *tr)
            swap = rng.random(d.n_ood) < 0.5
            a, b = self.ood_ex.a.copy(), short
            a[swap], b[swap] = short[swap], self.ood_ex.a[swap]
            self.ood_ex = Examples(a, b)
        self.check_disjoint()
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._row_index: dict[int, np.ndarray] = {}
        toks, _, _ = tokenize(self.train_ex)
        self.epoch_tokens = len(toks)

    def check_disjoint(self) -> None:
        tr, idk, ood = self.train_ex.keys(), self.id_ex.keys(), self.ood_ex.keys()
        for name, keys, other in (("ID", idk, tr), ("OOD", ood, tr), ("OOD", ood, idk)):
            overlap = np.isin(keys, other)
            if overlap.any():
                raise RuntimeError(f"{name} split shares {int(overlap.sum())} operand pairs with another split")

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The training pool in the order of `epoch` (seeded by run seed and epoch): tokens, roles, starts."""
        if epoch not in self._epochs:
            if len(self._epochs) >= 2:
                self._epochs.pop(min(self._epochs))
            perm = np.random.default_rng([self.cfg.seed, epoch, 0x5EED]).permutation(len(self.train_ex))
            self._epochs[epoch] = tokenize(self.train_ex.take(perm))
        return self._epochs[epoch]

    def _stream(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and roles [start, end) of the endless stream of epochs."""
        toks, roles = [], []
        pos = start
        while pos < end:
            epoch, off = divmod(pos, self.epoch_tokens)
            t, r, _ = self._epoch(epoch)
            take = min(end - pos, self.epoch_tokens - off)
            toks.append(t[off : off + take])
            roles.append(r[off : off + take])
            pos += take
        return np.concatenate(toks), np.concatenate(roles)

    def get_batch(self, step: int):
        t, d = self.cfg.train, self.cfg.data
        B, S = t.batch_size, t.seq_len
        if d.train_layout == "packed":
            x, roles = self._packed_rows(step)
        else:
            toks, roles_s = self._stream(step * B * S, (step + 1) * B * S + 1)
            idx = np.arange(B)[:, None] * S + np.arange(S + 1)[None, :]
            rows = toks[idx].astype(np.int64)
            x, roles = torch.from_numpy(rows), torch.from_numpy(roles_s[idx].astype(np.int64))
        y = torch.full_like(x[:, :S], -100)
        y[:] = x[:, 1 : S + 1]
        y[roles[:, 1 : S + 1] < 0] = -100  # padding of packed rows
        if d.train_loss == "answer":  # <eos> always trained: without it greedy answers never stop
            y[~answer_mask(roles[:, 1 : S + 1], include_eos=True)] = -100
        return x[:, :S].contiguous(), y

    def _packed_rows(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of whole examples from <bos>, filled greedily in stream order; padding has role -1.

        Row r of step s starts at the example following the one that row (s*B + r - 1) ended with; the row
        boundaries come from `_row_starts`, a pure function of the epoch orders.
        """
        t = self.cfg.train
        B, S = t.batch_size, t.seq_len
        x = torch.full((B, S + 1), EOS, dtype=torch.int64)
        roles = torch.full((B, S + 1), -1, dtype=torch.int64)
        for r in range(B):
            g = step * B + r
            epoch, first, last = self._packed_row(g)
            toks, rls, starts = self._epoch(epoch)
            a, b = int(starts[first]), int(starts[last])
            n = b - a
            x[r, :n] = torch.from_numpy(toks[a:b].astype(np.int64))
            roles[r, :n] = torch.from_numpy(rls[a:b].astype(np.int64))
        return x, roles

    def _packed_row(self, g: int) -> tuple[int, int, int]:
        """(epoch, first example, end example) of global packed row g: rows never cross an epoch."""
        S = self.cfg.train.seq_len + 1
        epoch, base = 0, 0
        while True:
            bounds = self._row_bounds(epoch, S)
            if g < base + len(bounds) - 1:
                k = g - base
                return epoch, int(bounds[k]), int(bounds[k + 1])
            base += len(bounds) - 1
            epoch += 1

    def _row_bounds(self, epoch: int, width: int) -> np.ndarray:
        """Example indices where the packed rows of `epoch` start (and the end), greedy in stream order."""
        if epoch not in self._row_index:
            starts = self._epoch(epoch)[2]
            n = len(starts) - 1
            bounds, i = [0], 0
            while i < n:
                j = int(np.searchsorted(starts, starts[i] + width, side="right")) - 1
                if j <= i:
                    raise ConfigError(
                        f"an example of {int(starts[i + 1] - starts[i])} tokens does not fit a row of {width}"
                    )
                bounds.append(min(j, n))
                i = bounds[-1]
            self._row_index[epoch] = np.asarray(bounds)
        return self._row_index[epoch]

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer_ce(self, model, ex: Examples, device) -> float:
        rows, roles, _ = padded_examples(ex)
        mask = answer_mask(roles[:, 1:], self.cfg.data.answer_eos)
        total, count = 0.0, 0
        bs = self.cfg.data.eval_batch
        for i in range(0, rows.shape[0], bs):
            x = rows[i : i + bs].to(device)
            m = mask[i : i + bs].to(device)
            logits = model(input_ids=x[:, :-1], use_cache=False).logits.float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none")
            total += float(nll[m.reshape(-1)].sum())
            count += int(m.sum())
        return total / max(count, 1)

    @torch.no_grad()
    def greedy(self, model, ex: Examples, device) -> list[list[int]]:
        """Greedy continuations of `<bos>a x b =`: len(a)+len(b)+2 new tokens per example, in input order."""
        la, lb = n_digits(ex.a), n_digits(ex.b)
        out: list[list[int]] = [[] for _ in range(len(ex))]
        bs = self.cfg.data.eval_batch
        for total in np.unique(la + lb):
            idx = np.nonzero(la + lb == total)[0]
            rows, _, _ = padded_examples(ex.take(idx))
            prompts = rows[:, : int(total) + 6]  # <bos> a ' ' x ' ' b ' ' =
            for i in range(0, len(idx), bs):
                x = prompts[i : i + bs].to(device)
                for _ in range(int(total) + 2):
                    logits = model(input_ids=x, use_cache=False).logits[:, -1]
                    x = torch.cat([x, logits.argmax(-1, keepdim=True)], dim=1)
                for j, gen in zip(idx[i : i + bs], x[:, int(total) + 6 :].tolist()):
                    out[int(j)] = gen
        return out

    @torch.no_grad()
    def stream_mbe(self, model, ex: Examples, device) -> tuple[list[float], list[float]]:
        """Per-layer MBE (plain and centred) of the examples as a stream cut into seq_len windows."""
        S, m = self.cfg.train.seq_len, self.cfg.mbe
        toks, _, _ = tokenize(ex)
        n = min(len(toks) // S, self.cfg.data.mbe_windows)
        if n == 0:
            raise RuntimeError(f"the evaluation stream ({len(toks)} tokens) is shorter than one window of {S}")
        windows = torch.from_numpy(toks[: n * S].astype(np.int64)).reshape(n, S)
        plain: list[list[torch.Tensor]] = []
        centred: list[list[torch.Tensor]] = []
        bs = self.cfg.data.eval_batch
        for i in range(0, n, bs):
            _, hidden = forward_with_hidden(model, windows[i : i + bs].to(device))
            for layer, h in enumerate(hidden):
                if len(plain) <= layer:
                    plain.append([])
                    centred.append([])
                plain[layer].append(matrix_entropy_per_patch(h, m.alpha, m.patch_size).flatten().cpu())
                centred[layer].append(matrix_entropy_per_patch(h, m.alpha, m.patch_size, centered=True).flatten().cpu())
        return ([float(torch.cat(v).mean()) for v in plain], [float(torch.cat(v).mean()) for v in centred])

    def evaluate(self, model, ctx, trained) -> Evaluation:
        was_training = model.training
        model.eval()
        device = ctx.device
        out: dict[str, float] = {}
        for split, ex in (("id", self.id_ex), ("ood", self.ood_ex)):
            out[f"{split}_answer_ce"] = self.answer_ce(model, ex, device)
            gens = self.greedy(model, ex, device)
            answers = ex.c.tolist()
            out[f"{split}_exact_match"] = exact_match(gens, answers)
            out[f"{split}_digit_acc"] = digit_accuracy(gens, answers)
        out.update(mbe_metrics("ood_", *self.stream_mbe(model, self.ood_ex, device)))
        out.update(mbe_metrics("id_", self.stream_mbe(model, self.id_ex, device)[0], per_layer=False))
        model.train(was_training)
        return Evaluation(out)


def max_example_len(digits: int) -> int:
    """Tokens of the longest example with operands of at most `digits` digits."""
    return 8 + 4 * digits
