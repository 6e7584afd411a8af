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


def build_model(n_layer: int, n_embd: int, n_head: int, vocab_size: int, n_positions: int, **overrides: Any) -> nn.Module:
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


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def blocks(model: nn.Module) -> nn.ModuleList:
    return unwrap(model).transformer.h


class _Capture:
    """Per-model block-output capture; records only inside `forward_with_hidden`, so plain calls keep nothing."""

    def __init__(self) -> None:
        self.active = False
        self.outputs: list[torch.Tensor] = []

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if self.active:
            self.outputs.append(output[0] if isinstance(output, tuple) else output)


def forward_with_hidden(model: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the per-block residual outputs (list of (B, S, D), pre final LayerNorm).

    The capture hooks are registered once per model (not per call), so a compiled model is not recompiled.
    """
    inner = unwrap(model)
    capture: _Capture | None = getattr(inner, "_gapt_capture", None)
    if capture is None:
        capture = _Capture()
        for b in blocks(inner):
            b.register_forward_hook(capture)
        inner._gapt_capture = capture
    capture.outputs, capture.active = [], True
    try:
        out = model(input_ids=input_ids, use_cache=False)
    finally:
        capture.active = False
    hidden, capture.outputs = capture.outputs, []
    return out.logits, hidden


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
    """6 * (N_nonemb + V * d) + 12 * L * d * S (see the module docstring)."""
    inner = unwrap(model)
    total = sum(p.numel() for p in inner.parameters())
    wte, wpe = inner.transformer.wte.weight, inner.transformer.wpe.weight
    n_layer, n_embd = len(inner.transformer.h), wte.shape[1]
    n_nonemb = total - wte.numel() - wpe.numel()
    return 6.0 * (n_nonemb + wte.shape[0] * n_embd) + 12.0 * n_layer * n_embd * seq_len


def mfu(flops_token: float, tokens_per_s: float | None, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation of `world_size` devices of peak `peak`; None without a peak or a rate."""
    if not peak or not tokens_per_s:
        return None
    return flops_token * tokens_per_s / (peak * max(1, world_size))
