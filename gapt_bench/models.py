"""The GPT-2-style causal LM used by every LM task, and the paper's parameter count.

Built from `transformers.GPT2Config` with fresh weights (no download), dropout 0 by default, tied input/output
embeddings and learned positions. `forward_with_hidden` returns the residual-stream output of every block
*before* the final LayerNorm (the tensor the GAPT paper measures MBE on).
"""
from __future__ import annotations

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
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already yields shared tensors once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def paper_param_count(n_layer: int, n_embd: int, vocab_size: int, n_positions: int) -> int:
    """P = 12*L*d^2 + 13*L*d + (V+S)*d + 2d (Morris et al. 2025, with tied embeddings and S learned positions)."""
    L, d = n_layer, n_embd
    return 12 * L * d * d + 13 * L * d + (vocab_size + n_positions) * d + 2 * d


def blocks(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "module", model)  # DDP / compiled wrappers
    inner = getattr(inner, "_orig_mod", inner)
    return inner.transformer.h


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
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
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
