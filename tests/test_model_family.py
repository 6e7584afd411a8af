"""The model families (`model.family`): gpt2 (learned positions) and llama (rotary, RMSNorm, gated MLP), both built
from transformers classes. Each trains, has its hidden states captured before the final norm, counts its
parameters by the documented rule, and resumes from a checkpoint exactly."""

from __future__ import annotations

import pytest
import torch

from gapt_bench.launch.execute import clear_stop, execute, request_stop
from gapt_bench.launch.plan import make_plan
from gapt_bench.measures.hidden_states import blocks, forward_with_hidden
from gapt_bench.results.store import read_records
from gapt_bench.training.model import build_model, flops_per_token, paper_param_count, param_count

pytestmark = pytest.mark.usefixtures("offline_env")


@pytest.mark.parametrize("tie", [True, False])
def test_llama_counts_its_parameters_by_the_documented_rule(tie):
    L, d, h, V, S, width = 3, 32, 4, 50, 16, 96
    model = build_model(L, d, h, V, S, family="llama", intermediate_size=width, tie_embeddings=tie)
    assert type(model).__name__ == "LlamaForCausalLM" and len(blocks(model)) == L
    rule = L * (4 * d * d + 3 * d * width + 2 * d) + V * d + d + (0 if tie else V * d)
    assert param_count(model) == paper_param_count(L, d, V, S, "llama", width, tie) == rule
    # FLOPs: 6 * (N_nonemb + V*d) + 12*L*d*S, the head counted once whether tied or not
    n_nonemb = rule - V * d * (1 if tie else 2)
    assert flops_per_token(model, S) == 6.0 * (n_nonemb + V * d) + 12.0 * L * d * S


def test_gpt2_counts_are_unchanged_and_untied_heads_count_once_more():
    tied, untied = build_model(2, 32, 4, 50, 16), build_model(2, 32, 4, 50, 16, tie_embeddings=False)
    assert param_count(tied) == paper_param_count(2, 32, 50, 16)
    assert param_count(untied) == paper_param_count(2, 32, 50, 16, tie_embeddings=False) == param_count(tied) + 50 * 32


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hidden_states_are_the_block_outputs_before_the_final_norm(family):
    torch.manual_seed(0)
    model = build_model(2, 32, 4, 40, 16, family=family).eval()
    x = torch.randint(0, 40, (3, 16))
    logits, hidden = forward_with_hidden(model, x)
    assert len(hidden) == 2 and all(h.shape == (3, 16, 32) for h in hidden)
    final_norm = model.transformer.ln_f if family == "gpt2" else model.model.norm
    with torch.no_grad():
        again = model.lm_head(final_norm(hidden[-1]))
    torch.testing.assert_close(again, logits, rtol=1e-5, atol=1e-5)  # the last capture is pre-norm
    assert not torch.allclose(final_norm(hidden[-1]), hidden[-1])  # and the norm does change it


def _plan(tmp_path, *overrides):
    sets = ["model.family=llama", "train.tokens=20480", "train.log_every=5", *overrides]
    return make_plan(["fineweb_lm"], ["gapt"], [0], "tiny", sets)[0]


def test_a_llama_run_trains_records_its_family_and_resumes_exactly(tmp_path):
    cfg = _plan(tmp_path)
    ref = execute(cfg, tmp_path / "ref").record
    assert ref["status"] == "ok" and ref["config"]["model"]["family"] == "llama"
    assert ref["n_params"] == paper_param_count(
        cfg.model.n_layer, cfg.model.n_embd, cfg.model.vocab_size, cfg.model.n_positions, "llama"
    )
    assert ref["summary"]["gate_switches"] >= 0 and "val_mbe_layer_0" in ref["metrics"]

    out = tmp_path / "killed"

    def stop_at_step(step: int, total: int) -> None:
        if step == 12:
            request_stop()

    first = execute(cfg, out, checkpoint_every=4, progress=stop_at_step)
    clear_stop()
    assert first.interrupted and list(out.glob("runs/*/checkpoint.pt"))
    resumed = execute(cfg, out, checkpoint_every=4, resume=True)
    assert (
        resumed.record is not None
        and "resumed from step" in (out / "runs" / resumed.record["run_id"] / "log.txt").read_text()
    )
    (rec,) = read_records(out)
    assert rec["metrics"] == ref["metrics"]  # bit-identical on one machine
