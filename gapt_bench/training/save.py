"""A trained model as a folder that others can load (`gapt-bench run --save-model`, i.e. `train.save_model`).

A transformers model (the LM tasks) becomes a transformers folder: `config.json`, `model.safetensors` and, where
the task has a text tokenizer, its tokenizer files, so `AutoModelForCausalLM.from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)` load it anywhere and `gapt-bench eval --model-args pretrained=folder`
measures it. Any other module (the forgetting task's MLP) saves its state dict as `model.safetensors` beside a
`gapt_bench_model.json` naming its class and the run's config. Weights are never pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

MODEL_FOLDER = "model"  # inside the run folder: OUT/runs/<run_id>/model/
PLAIN_MODEL_FILE = "gapt_bench_model.json"


def save_trained(model: nn.Module, folder: Path, *, tokenizer: Any = None, run_config: dict | None = None) -> Path:
    """Write `model` (and `tokenizer`, a transformers tokenizer, if given) to `folder`; returns `folder`."""
    from gapt_bench.measures.hidden_states import unwrap

    model = unwrap(model)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
    else:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        about = {"class": f"{type(model).__module__}.{type(model).__qualname__}", "run_config": run_config}
        (folder / PLAIN_MODEL_FILE).write_text(json.dumps(about, indent=1, default=str) + "\n", encoding="utf-8")
    return folder
