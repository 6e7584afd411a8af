"""The GPT-2-style causal LM used by every LM task: building it, counting its parameters (as the capacity paper
does), capturing its hidden states, and its FLOPs per token and MFU.

Built from `transformers.GPT2Config` with fresh weights (no download), dropout 0 by default, tied input/output
embeddings and learned positions. `forward_with_hidden` returns the residual-stream output of every block
*before* the final LayerNorm (the tensor the GAPT paper measures MBE on).

MFU = flops_per_token * tokens_per_s / (peak_flops * world_size), with flops_per_token = 6 * (N_nonemb + V * d) +
12 * L * d * S: N_nonemb the parameters outside the token and position embeddings, V * d the (tied) output
projection, a matmul on every token, and 12 L d S the attention scores and weighted sum (forward and backward, full
S x S as in PaLM's appendix B). `peak_flops` is the dense bf16 peak of the GPU from a table keyed by the device
name (H100 SXM and H200: 989 TFLOP/s, A100: 312); None on CPU or an unknown GPU. A method's extra FLOPs (the MBE
term) are not counted: MFU measures the model's useful work.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from torch import nn

from gapt_bench.measures.hidden_states import blocks, unwrap


def build_model(
    n_layer: int, n_embd: int, n_head: int, vocab_size: int, n_positions: int, **overrides: Any
) -> nn.Module:
    """A freshly initialised `GPT2LMHeadModel`. `overrides` go to `GPT2Config` (e.g. dropout=0.1)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    dropout = overrides.pop("dropout", 0.0)
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        # transformers keeps GPT-2's 50256 ids otherwise and warns for small vocabularies
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
        tie_word_embeddings=True,
    )
    kwargs.update(overrides)
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
    cfg = GPT2Config(**kwargs)
    cfg._attn_implementation = "sdpa"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GPT2LMHeadModel(cfg)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


def param_count(model: nn.Module) -> int:
    """Number of distinct parameters (a tied head is counted once), as the capacity paper counts."""
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def paper_param_count(n_layer: int, n_embd: int, vocab_size: int, n_positions: int) -> int:
    """P = 12*L*d^2 + 13*L*d + (V+S)*d + 2d (Morris et al. 2025, with tied embeddings and S learned positions)."""
    L, d = n_layer, n_embd
    return 12 * L * d * d + 13 * L * d + (vocab_size + n_positions) * d + 2 * d


# ---------------------------------------------------------------------------------------------------------------
# FLOPs and MFU

# Dense bf16 peak FLOP/s by device-name model, most specific first. A model matches where it is not followed by a
# letter or digit, so "L4" is not "L40" and "H100" is not "H100X" (a prefix such as GH200's G is allowed).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),  # also GH200
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (HBM3)
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
)
MFU_FORMULA = "6*(N_nonemb + V*d) + 12*L*d*S per token, dense bf16 peak"


def peak_for_name(name: str) -> float | None:
    """Dense bf16 peak FLOP/s for a CUDA device name (first matching PEAK_BF16_FLOPS entry), None if unknown."""
    for key, peak in PEAK_BF16_FLOPS:
        if re.search(rf"{re.escape(key)}(?![0-9a-z])", name, re.IGNORECASE):
            return peak
    return None


def peak_flops(device: torch.device) -> tuple[float | None, str | None]:
    """(dense bf16 peak FLOP/s, device name) of a CUDA device; (None, None) on CPU, (None, name) if unknown."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, None
    name = torch.cuda.get_device_name(device)
    return peak_for_name(name), name


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """6 * (N_nonemb + V * d) + 12 * L * d * S (see the module docstring), for any transformers causal LM.

    N_nonemb excludes the token embeddings, learned position embeddings (GPT-2's `wpe`; rotary models have none)
    and an untied output head; V * d then counts the output projection once, tied or not.
    """
    inner = unwrap(model)
    total = sum(p.numel() for p in inner.parameters())  # a tied head is counted once
    wte = inner.get_input_embeddings().weight
    vocab, n_embd = wte.shape
    excluded = {id(wte)}
    wpe = getattr(getattr(inner, "transformer", None), "wpe", None)
    if wpe is not None:
        excluded.add(id(wpe.weight))
    head = inner.get_output_embeddings()
    if head is not None:
        excluded.add(id(head.weight))
    n_nonemb = total - sum(p.numel() for p in inner.parameters() if id(p) in excluded)
    return 6.0 * (n_nonemb + vocab * n_embd) + 12.0 * len(blocks(inner)) * n_embd * seq_len


def mfu(flops_token: float, tokens_per_s: float | None, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation of `world_size` devices of peak `peak`; None without a peak or a rate."""
    if not peak or not tokens_per_s:
        return None
    return flops_token * tokens_per_s / (peak * max(1, world_size))
