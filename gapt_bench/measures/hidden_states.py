"""Hidden states of any transformers causal LM: the residual-stream output of every decoder block, *before* the
final norm (the tensor the GAPT paper measures MBE on).

`blocks(model)` finds the decoder blocks of GPT-2 (`transformer.h`), Llama/Mistral/Qwen (`model.layers`),
GPT-NeoX (`gpt_neox.layers`), OPT (`model.decoder.layers`) and any other model whose base model holds one
`nn.ModuleList` of `config.num_hidden_layers` blocks. Training, evaluation and the gradient-alignment diagnostic all
capture hidden states through `forward_with_hidden`, so a run's MBE and `gapt-bench eval`'s are one code path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_BLOCK_PATHS = (
    "transformer.h",
    "model.layers",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.layers",
    "layers",
    "h",
)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def _attr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM, in order (ValueError naming the model class if none are found)."""
    inner = unwrap(model)
    n_layer = getattr(getattr(inner, "config", None), "num_hidden_layers", None)
    found = None
    for path in _BLOCK_PATHS:
        candidate = _attr_path(inner, path)
        if isinstance(candidate, nn.ModuleList) and (n_layer is None or len(candidate) == n_layer):
            found = candidate
            break
    if found is None and n_layer:
        lists = [m for m in inner.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layer]
        found = lists[0] if len(lists) == 1 else None
    if found is None:
        raise ValueError(
            f"cannot find the decoder blocks of {type(inner).__name__}: expected one nn.ModuleList of "
            f"config.num_hidden_layers blocks (GPT-2 transformer.h, Llama model.layers, ...)"
        )
    return found


class _Capture:
    """Per-model block-output capture; records only inside `forward_with_hidden`, so plain calls keep nothing."""

    def __init__(self) -> None:
        self.active = False
        self.outputs: list[torch.Tensor] = []

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if self.active:
            self.outputs.append(output[0] if isinstance(output, tuple) else output)


def forward_with_hidden(
    model: nn.Module, input_ids: torch.Tensor, **kwargs: Any
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the per-block residual outputs (list of (B, S, D), pre final norm). `kwargs` go to the model
    (e.g. an attention mask).

    The capture hooks are registered once per model (not per call), so a compiled model is not recompiled.
    """
    inner = unwrap(model)
    capture: _Capture | None = getattr(inner, "_gapt_capture", None)
    if capture is None:
        capture = _Capture()
        for b in blocks(inner):
            b.register_forward_hook(capture)
        inner._gapt_capture = capture  # type: ignore[assignment]
    capture.outputs, capture.active = [], True
    try:
        out = model(input_ids=input_ids, use_cache=False, **kwargs)
    finally:
        capture.active = False
    hidden, capture.outputs = capture.outputs, []
    return out.logits, hidden
