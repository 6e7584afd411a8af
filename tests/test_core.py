"""Registry, configs, model, determinism, the method plug-in interface and the run record."""

import json

import pytest
import torch

from gapt_bench import cli
from gapt_bench.config import (
    ConfigError,
    apply_overrides,
    parse_override,
    resolve_preset,
)
from gapt_bench.config.registry import Registry, RegistryError
from gapt_bench.launch.local import run_plan
from gapt_bench.launch.plan import make_plan, parse_seeds
from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.methods import METHODS, register_method
from gapt_bench.methods.base import Method, StepInfo
from gapt_bench.results.store import RECORD_FIELDS, read_records
from gapt_bench.tasks import TASKS
from gapt_bench.training.model import build_model, paper_param_count, param_count


def test_registry_duplicate_and_suggestion():
    reg = Registry("thing")
    reg.register("alpha", type("A", (), {}))
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha", type("B", (), {}))
    with pytest.raises(RegistryError, match="did you mean 'alpha'"):
        reg.get("alpah")
    assert "arithmetic_ood" in TASKS and "gapt" in METHODS
    assert "did you mean 'arithmetic_ood'" in TASKS.unknown_message("arithmetic_odd")


@pytest.mark.parametrize("L,d,expected", [(1, 32, 80_352), (2, 128, 667_136)])
def test_param_count_matches_paper_formula(L, d, expected):
    model = build_model(n_layer=L, n_embd=d, n_head=4, vocab_size=2048, n_positions=64)
    assert param_count(model) == paper_param_count(L, d, 2048, 64) == expected


def test_hidden_states_are_pre_final_norm_block_outputs():
    model = build_model(n_layer=3, n_embd=16, n_head=2, vocab_size=11, n_positions=8)
    x = torch.randint(0, 11, (2, 8))
    logits, hidden = forward_with_hidden(model, x)
    assert logits.shape == (2, 8, 11) and len(hidden) == 3
    ref = model(input_ids=x, output_hidden_states=True).hidden_states
    assert torch.allclose(hidden[0], ref[1]) and torch.allclose(hidden[1], ref[2])
    assert torch.allclose(model.transformer.ln_f(hidden[2]), ref[3], atol=1e-6)
    assert model.config.resid_pdrop == 0.0


def test_overrides_are_type_checked():
    assert parse_override("train.lr=3e-3") == (["train", "lr"], 0.003)
    with pytest.raises(ConfigError, match="must be an integer"):
        make_plan(["synthetic_capacity"], ["baseline"], [0], "quick", ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr'.*train.lr"):
        make_plan(["synthetic_capacity"], ["baseline"], [0], "quick", ["train.lrr=1"])
    with pytest.raises(ConfigError, match="must be >= 1"):
        make_plan(["synthetic_capacity"], ["baseline"], [0], "quick", ["model.n_layer=0"])
    with pytest.raises(ConfigError, match="choose one of"):
        make_plan(["synthetic_capacity"], ["baseline"], [0], "quick", ["reg.layers=some"])
    presets = TASKS.get("synthetic_capacity").load_presets()
    sections = apply_overrides(resolve_preset(presets, "synthetic_capacity", "quick"), ["train.lr=0.5"])
    assert sections["train"]["lr"] == 0.5


def test_seeds_parsing():
    assert parse_seeds("0-2") == [0, 1, 2]
    assert parse_seeds("0,3,5-6") == [0, 3, 5, 6]
    for bad in ("", "2-0", "a", "1,1", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_config_hash_excludes_seed_and_setup_hash_excludes_method():
    a, b, c = make_plan(["synthetic_capacity"], ["baseline", "gapt"], [0, 1], "tiny")[:3]
    assert a.config_hash() == b.config_hash()  # seeds 0 and 1 of baseline
    assert a.config_hash() != c.config_hash()  # baseline vs gapt
    assert a.setup_hash() == c.setup_hash()  # ... yet both arms share the setup


def _metrics(out):
    return {(r["method"], r["seed"]): r["metrics"] for r in read_records(out)}


def test_same_seed_identical_and_seeds_differ(tmp_path, tiny_capacity_args):
    for name in ("a", "b"):
        assert (
            cli.main(
                [
                    "run",
                    *tiny_capacity_args,
                    "--methods",
                    "baseline",
                    "--seeds",
                    "0,1",
                    "--workers",
                    "1",
                    "--no-report",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    ma, mb = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert ma == mb
    assert ma[("baseline", 0)]["mem_bits"] != ma[("baseline", 1)]["mem_bits"]


def test_record_is_complete_and_self_describing(tmp_path, tiny_capacity_args):
    assert (
        cli.main(
            [
                "run",
                *tiny_capacity_args,
                "--methods",
                "gapt",
                "--seeds",
                "0",
                "--workers",
                "1",
                "--no-report",
                "--out",
                str(tmp_path),
                "--set",
                "gapt.patience_m=3",
                "--set",
                "gapt.patience_c=3",
                "--set",
                "gapt.delta_e=100",
            ]
        )
        == 0
    )
    (rec,) = read_records(tmp_path)
    assert set(RECORD_FIELDS) <= set(rec)
    assert rec["status"] == "ok" and rec["n_params"] > 0 and rec["tokens"] == 65536 // 1024 * 1024
    assert rec["config"]["gapt"]["spike_reference"] == "phase"  # ambiguity options land in the record
    assert rec["env"]["torch"] == torch.__version__
    assert set(rec["metric_directions"]) == set(rec["metrics"])
    # the gate switched (delta_e is huge, so CE never counts as improving) and the record says so
    assert rec["summary"]["gate_entries_to_compress"] >= 1
    run_dir = tmp_path / "runs" / rec["run_id"]
    curve = [json.loads(line) for line in (run_dir / "curve.jsonl").read_text().splitlines()]
    assert {1, 2} <= {row["phase"] for row in curve}
    assert {"step", "tokens", "ce", "lr", "mbe", "mbe_layer_0"} <= set(curve[0])
    assert json.loads((run_dir / "config.json").read_text())["method"] == "gapt"


class HalfMBE(Method):
    """A user's own method: CE plus a small constant-weight MBE term on the last layer."""

    name = "test_half_mbe"
    description = "CE + 0.5 * MBE of the last layer (test method)"

    def loss(self, ce, hidden, step):
        values = self.mbe_of(hidden, [self.n_layer - 1])
        mbe = values[self.n_layer - 1]
        return ce + 0.5 * mbe, StepInfo(ce=float(ce.detach()), mbe={self.n_layer - 1: float(mbe.detach())})


def test_user_registered_method_runs(tmp_path, tiny_capacity_args):
    if "test_half_mbe" not in METHODS:
        register_method("test_half_mbe")(HalfMBE)
    plan = make_plan(["synthetic_capacity"], ["baseline", "test_half_mbe"], [0], "tiny")
    outcomes = run_plan(plan, tmp_path, workers=1)
    recs = {o.record["method"]: o.record for o in outcomes}
    assert recs["test_half_mbe"]["status"] == "ok"
    assert recs["test_half_mbe"]["metrics"]["mbe"] != recs["baseline"]["metrics"]["mbe"]


def test_bad_task_exits_2_with_suggestion_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "results"
    assert cli.main(["run", "--tasks", "arithmetic_odd", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'arithmetic_ood'" in err
    assert not out.exists()


def test_ls_lists_tasks_and_methods(capsys):
    assert cli.main(["ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    section, listed = None, {"tasks:": [], "methods:": []}
    for line in lines:
        if line in listed:
            section = line
        elif line.startswith("  ") and not line.strip().startswith("from "):
            listed[section].append(line.split()[0])
    assert listed["tasks:"] == [
        "arithmetic_ood",
        "fineweb_lm",
        "forgetting_separation",
        "synthetic_capacity",
        "text_memorization",
    ]
    assert listed["methods:"] == ["baseline", "gapt", "mbe", "periodic"]


def test_validate_resolves_without_training(tmp_path, capsys):
    assert (
        cli.main(
            [
                "validate",
                "--tasks",
                "synthetic_capacity",
                "--preset",
                "tiny",
                "--methods",
                "baseline,gapt",
                "--seeds",
                "0-1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "plan: 4 runs" in out


def test_bf16_weights_precision_runs_and_is_recorded(tmp_path, tiny_capacity_args):
    assert (
        cli.main(
            [
                "run",
                *tiny_capacity_args,
                "--methods",
                "gapt",
                "--seeds",
                "0",
                "--workers",
                "1",
                "--no-report",
                "--out",
                str(tmp_path),
                "--set",
                "train.precision=bf16-weights",
            ]
        )
        == 0
    )
    (rec,) = read_records(tmp_path)
    assert rec["status"] == "ok" and rec["summary"]["precision"] == "bf16-weights"
    assert rec["metrics"]["mem_bits"] == rec["metrics"]["mem_bits"]  # finite, not NaN


def test_flops_per_token_and_mfu():
    from gapt_bench.training.model import (
        flops_per_token,
        mfu,
        peak_flops,
        peak_for_name,
    )

    assert peak_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_for_name("NVIDIA H100 PCIe") == 756e12
    assert peak_for_name("NVIDIA H200") == 989e12
    assert peak_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_for_name("Some Other GPU") is None
    assert peak_flops(torch.device("cpu")) == (None, None)
    L, d, V, S = 12, 768, 50304, 1024
    with torch.device("meta"):
        model = build_model(n_layer=L, n_embd=d, n_head=12, vocab_size=V, n_positions=S)
    n_nonemb = sum(p.numel() for p in model.parameters()) - V * d - S * d
    assert n_nonemb == 12 * L * d * d + 13 * L * d + 2 * d  # GPT-2 blocks with biases and LayerNorms
    fpt = flops_per_token(model, S)
    assert fpt == 6 * (n_nonemb + V * d) + 12 * L * d * S
    # 462k tokens/s per H100 on GPT-2 small is about 40% MFU (modded-nanogpt's 2024 record)
    assert mfu(fpt, 462e3, 989e12) == pytest.approx(fpt * 462e3 / 989e12)
    assert 0.38 < mfu(fpt, 462e3, 989e12) < 0.42
    assert mfu(fpt, 1e5, 989e12, world_size=2) == pytest.approx(mfu(fpt, 1e5, 989e12) / 2)
    assert mfu(fpt, 1e5, None) is None


def test_a_task_refuses_settings_it_does_not_read(capsys):
    with pytest.raises(ConfigError, match=r"does not use train.lr"):
        make_plan(["forgetting_separation"], ["baseline"], [0], "quick", ["train.lr=0.1"])
    make_plan(["forgetting_separation"], ["baseline"], [0], "quick", ["train.threads=2"])  # execution-only: fine


def test_config_hash_covers_only_the_sections_a_method_reads():
    base = make_plan(["synthetic_capacity"], ["baseline", "gapt"], [0], "tiny")
    tweaked = make_plan(["synthetic_capacity"], ["baseline", "gapt"], [0], "tiny", ["gapt.tau=0.3"])
    assert base[0].config_hash() == tweaked[0].config_hash()  # baseline does not read gapt.*
    assert base[1].config_hash() != tweaked[1].config_hash()  # gapt does
    assert {c.setup_hash() for c in base + tweaked} == {base[0].setup_hash()}


def test_overrides_that_collapse_grid_points_give_one_run():
    plan = make_plan(
        ["synthetic_capacity"],
        ["baseline"],
        [0, 1],
        "quick",
        ["model.n_layer=1", "model.n_embd=8", "model.n_head=2", "data.capacity_ratio=2"],
    )
    assert len(plan) == 2 and len({(c.config_hash(), c.seed) for c in plan}) == 2


def test_bf16_on_cpu_uses_the_math_attention_kernel_in_forward_and_backward():
    # torch's CPU flash-attention kernel in bf16 made a bf16 capacity step cost 3x its fp32 step (its backward alone
    # 74%); autocast_context picks the math kernel there, and leaves fp32 and CUDA as they were
    from torch.profiler import ProfilerActivity, profile

    from gapt_bench.training.model import build_model
    from gapt_bench.training.runtime import autocast_context

    torch.manual_seed(0)
    model = build_model(1, 16, 2, 32, 16)
    x = torch.randint(0, 32, (4, 16))

    def kernels(precision: str) -> str:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with autocast_context(torch.device("cpu"), precision):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
        return " ".join(e.key for e in prof.key_averages())

    bf16, fp32 = kernels("bf16"), kernels("fp32")
    assert "flash_attention" not in bf16 and "aten::bmm" in bf16
    assert "flash_attention" in fp32  # fp32 keeps torch's default kernel (fast there)
