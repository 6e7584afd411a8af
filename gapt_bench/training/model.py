"""The causal LM every LM task trains: building it (two families, both transformers models with fresh weights and
no download), counting its parameters, and its FLOPs per token and MFU.

Families (`model.family`):
- ``gpt2``: `GPT2LMHeadModel`, learned absolute positions, LayerNorm, a GELU MLP of width 4d, tied input/output
  embeddings (the capacity paper's models and the suite's default). The tanh-approximate GELU runs as one fused
  kernel (`activation_function="gelu_pytorch_tanh"`: GPT-2's `gelu_new` formula, 19-29% faster steps on CPU; results
  differ from gapt_bench 0.2 in the last bits).
- ``llama``: `LlamaForCausalLM`, rotary positions (RoPE, `model.rope_theta`), RMSNorm, a gated SiLU MLP of width
  `model.intermediate_size` (0: 4d), no biases, tied embeddings unless `model.tie_embeddings` is false. The GAPT
  author's model (modded-nanogpt's GPT) is of this kind: rotary positions, RMS norms, no learned positions.

Parameter counts, one rule for both families: every distinct parameter once (a tied head once), embeddings
included (`param_count`). `paper_param_count` is the closed form of the same count: for gpt2 the capacity paper's
P = 12Ld^2 + 13Ld + (V+S)d + 2d; for llama P = L(4d^2 + 3dI + 2d) + Vd + d (+ Vd when untied).

Hidden states (the MBE input) are captured for either family by `gapt_bench.measures.hidden_states`.

MFU = flops_per_token * tokens_per_s / (peak_flops * world_size), with flops_per_token = 6 * (N_nonemb + V * d) +
12 * L * d * S: N_nonemb the parameters outside the token and position embeddings and the output head, V * d the
output projection, a matmul on every token, and 12 L d S the attention scores and weighted sum (forward and
backward, full S x S as in PaLM's appendix B). `peak_flops` is the dense bf16 peak of the GPU from a table keyed by
the device name (H100 SXM and H200: 989 TFLOP/s, A100: 312); None on CPU or an unknown GPU. A method's extra FLOPs
(the MBE term) are not counted: MFU measures the model's useful work.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from torch import nn

from gapt_bench.measures.hidden_states import blocks, unwrap

FAMILIES = ("gpt2", "llama")


def build_model(
    n_layer: int,
    n_embd: int,
    n_head: int,
    vocab_size: int,
    n_positions: int,
    family: str = "gpt2",
    intermediate_size: int = 0,
    rope_theta: float = 10000.0,
    tie_embeddings: bool = True,
    **overrides: Any,
) -> nn.Module:
    """A freshly initialised causal LM of `family` (see the module docstring). `overrides` go to the transformers
    config (e.g. dropout=0.1)."""
    from transformers.utils import logging as hf_logging

    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is unknown; choose one of {', '.join(FAMILIES)}")
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
    dropout = overrides.pop("dropout", 0.0)
    if family == "gpt2":
        from transformers import GPT2Config as Config
        from transformers import GPT2LMHeadModel as Model

        kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size,
            n_positions=n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            activation_function="gelu_pytorch_tanh",
            tie_word_embeddings=tie_embeddings,
        )
    else:
        from transformers import LlamaConfig as Config
        from transformers import LlamaForCausalLM as Model

        kwargs = dict(
            vocab_size=vocab_size,
            hidden_size=n_embd,
            intermediate_size=intermediate_size or 4 * n_embd,
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            num_key_value_heads=n_head,
            max_position_embeddings=n_positions,
            rope_theta=rope_theta,
            attention_dropout=dropout,
            hidden_act="silu",
            tie_word_embeddings=tie_embeddings,
        )
    # transformers keeps GPT-2's 50256 ids otherwise and warns for small vocabularies
    kwargs.update(bos_token_id=0, eos_token_id=0, pad_token_id=None)
    kwargs.update(overrides)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = Config(**kwargs)
            cfg._attn_implementation = "sdpa"
            model = Model(cfg)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


def build_from_config(m: Any) -> nn.Module:
    """`build_model` from a run's `model` section (a `ModelConfig`)."""
    return build_model(
        n_layer=m.n_layer,
        n_embd=m.n_embd,
        n_head=m.n_head,
        vocab_size=m.vocab_size,
        n_positions=m.n_positions,
        family=m.family,
        intermediate_size=m.intermediate_size,
        rope_theta=m.rope_theta,
        tie_embeddings=m.tie_embeddings,
        dropout=m.dropout,
    )


def param_count(model: nn.Module) -> int:
    """Number of distinct parameters (a tied head is counted once), as the capacity paper counts."""
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def paper_param_count(
    n_layer: int,
    n_embd: int,
    vocab_size: int,
    n_positions: int,
    family: str = "gpt2",
    intermediate_size: int = 0,
    tie_embeddings: bool = True,
) -> int:
    """The closed form of `param_count` for a freshly built model.

    gpt2: P = 12*L*d^2 + 13*L*d + (V+S)*d + 2d (Morris et al. 2025, tied embeddings, S learned positions);
    llama: P = L*(4d^2 + 3*d*I + 2d) + V*d + d, I the MLP width (4d by default), + V*d for an untied head.
    """
    L, d, V = n_layer, n_embd, vocab_size
    if family == "llama":
        width = intermediate_size or 4 * d
        return L * (4 * d * d + 3 * d * width + 2 * d) + V * d + d + (0 if tie_embeddings else V * d)
    untied = 0 if tie_embeddings else V * d
    return 12 * L * d * d + 13 * L * d + (V + n_positions) * d + 2 * d + untied


def paper_param_count_of(m: Any) -> int:
    """`paper_param_count` of a run's `model` section (a `ModelConfig`)."""
    return paper_param_count(
        m.n_layer, m.n_embd, m.vocab_size, m.n_positions, m.family, m.intermediate_size, m.tie_embeddings
    )


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
