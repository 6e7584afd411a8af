"""Loading a model to evaluate: `--model hf --model-args pretrained=DIR_OR_NAME,dtype=...,device=...,revision=...`,
as lm-evaluation-harness spells it, safely.

Safe by default: no code from the model is executed (`trust_remote_code` stays off unless the user passes
`trust_remote_code=true`), weights come from safetensors, and a folder with only pickled weights
(`pytorch_model.bin`) is read with `torch.load(weights_only=True)` first, which refuses any payload that is more than
tensors. The model's identity (path or hub id, revision, a content hash of its weight files, parameter count,
dtype) goes into the evaluation record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_KINDS = ("hf",)
MODEL_ARGS = ("pretrained", "dtype", "device", "revision", "tokenizer", "trust_remote_code", "label")
DTYPES = ("auto", "float32", "bfloat16", "float16")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# A folder holds a tokenizer when it has one of these (fast tokenizer, or the slow ones' vocab files).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tokenizer_config.json",
)


class ModelError(ValueError):
    """The model or its arguments cannot be used: one line naming the problem and the fix (exit 2)."""


@dataclass
class ModelArgs:
    pretrained: str
    dtype: str = "auto"  # auto: the dtype the model was saved in
    device: str = "cpu"
    revision: str | None = None
    tokenizer: str | None = None  # default: the model's own folder or hub id
    trust_remote_code: bool = False
    label: str | None = None  # the name tables show (default: the folder name or hub id)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.identity["label"])


def parse_model_args(text: str, flag: str = "--model-args") -> ModelArgs:
    """`pretrained=DIR,dtype=bfloat16,...` -> ModelArgs (ModelError naming the bad key)."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ModelError(f"{flag}: {part!r} is not KEY=VALUE (e.g. pretrained=path/to/model,dtype=bfloat16)")
        if key not in MODEL_ARGS:
            raise ModelError(f"{flag}: unknown key {key!r}; known: {', '.join(MODEL_ARGS)}")
        values[key] = value
    if "pretrained" not in values:
        raise ModelError(f"{flag} needs pretrained=DIR_OR_NAME (a save_pretrained folder or a hub id)")
    if values.get("dtype", "auto") not in DTYPES:
        raise ModelError(f"{flag}: dtype={values['dtype']!r} is not one of {', '.join(DTYPES)}")
    if "trust_remote_code" in values:
        flag_value = values["trust_remote_code"].lower()
        if flag_value not in ("true", "false"):
            raise ModelError(f"{flag}: trust_remote_code must be true or false, got {values['trust_remote_code']!r}")
        values["trust_remote_code"] = flag_value == "true"
    return ModelArgs(**values)


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def content_hash(folder: Path) -> str:
    """SHA-256 (16 hex) over the names and bytes of a folder's weight, config and tokenizer files: the same model,
    the same hash (a changed config or tokenizer is another model)."""
    h = hashlib.sha256()
    extra = [folder / n for n in ("config.json", *TOKENIZER_FILES, "merges.txt") if (folder / n).is_file()]
    for path in sorted({*_weight_files(folder), *extra}):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def check_folder(folder: Path) -> None:
    """A local model folder is a transformers folder whose weights load without executing anything."""
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder; pass pretrained= a folder written by save_pretrained or a hub id")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json: not a transformers model folder (save it with save_pretrained)")
    weights = _weight_files(folder)
    if not weights:
        raise ModelError(f"{folder} has no weight files (*.safetensors or pytorch_model.bin); save the model there")
    if any(p.suffix == ".safetensors" for p in weights):
        return
    import pickle

    import torch

    for path in weights:
        try:
            torch.load(path, map_location="meta", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, ValueError, EOFError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"{path} is not a plain tensor file (torch.load(weights_only=True) refused it: {first[:120]}); "
                f"it is not loaded, since a pickle can run code: re-save the model as safetensors"
            ) from None


def load_model(args: ModelArgs, *, role: str = "model") -> LoadedModel:
    """The model and its tokenizer, on `args.device` in `args.dtype`, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress display: ours

    local = Path(args.pretrained).expanduser()
    is_local = local.exists()
    if is_local:
        check_folder(local)
    elif args.pretrained.startswith((".", "/", "~")) or args.pretrained.count("/") > 1:
        raise ModelError(f"{role}: {args.pretrained} does not exist; pass a folder written by save_pretrained")
    source = str(local) if is_local else args.pretrained
    dtype: Any = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    kwargs: dict[str, Any] = {"revision": args.revision, "trust_remote_code": args.trust_remote_code}
    if is_local and any(p.suffix == ".safetensors" for p in _weight_files(local)):
        kwargs["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{role}: cannot load {source} as a causal LM ({_first_line(e)})") from None
    tok_source = args.tokenizer or source
    tok_folder = Path(tok_source).expanduser()
    if tok_folder.is_dir() and not any((tok_folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(
            f"{role}: {tok_source} has no tokenizer (no tokenizer.json or vocab files); save one there with "
            f"tokenizer.save_pretrained, or pass tokenizer=PATH in the model arguments"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            tok_source, revision=args.revision, trust_remote_code=args.trust_remote_code
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(
            f"{role}: {tok_source} has no usable tokenizer ({_first_line(e)}); save one there with "
            f"tokenizer.save_pretrained, or pass tokenizer=PATH in the model arguments"
        ) from None
    n_embed = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
    if len(tokenizer) > n_embed:
        raise ModelError(
            f"{role}: the tokenizer of {tok_source} has {len(tokenizer)} ids but the model only {n_embed} "
            f"embeddings: they do not belong together; pass the model's own tokenizer (tokenizer=PATH)"
        )
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{role}: the tokenizer of {tok_source} has no eos token (documents are separated by it)")
    try:
        model.to(args.device)  # type: ignore[arg-type]
    except (RuntimeError, AssertionError) as e:
        raise ModelError(f"{role}: cannot put the model on device={args.device} ({_first_line(e)})") from None
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    identity = {
        "label": args.label or (_folder_label(local) if is_local else args.pretrained),
        "pretrained": str(local.resolve()) if is_local else args.pretrained,
        "revision": args.revision,
        "content_hash": content_hash(local) if is_local else None,
        "model_type": getattr(model.config, "model_type", None),
        "architecture": type(model).__name__,
        "n_params": params,
        "n_layer": getattr(model.config, "num_hidden_layers", None),
        "context_length": context_length(model.config),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": args.device,
        "tokenizer": tok_source if args.tokenizer else "own",
        "vocab_size": len(tokenizer),
    }
    return LoadedModel(model, tokenizer, identity)


def context_length(config: Any) -> int | None:
    """The longest sequence the model was built for (learned positions) or trained at (rotary), if the config says."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _folder_label(folder: Path) -> str:
    """A folder's name; a run's saved model (runs/<run id>/model) is named by its run id."""
    folder = folder.resolve()
    return folder.parent.name if folder.name == "model" and folder.parent.parent.name == "runs" else folder.name


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]
