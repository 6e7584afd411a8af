"""The GPU check prepared on CPU: what it would run, its JSON schema and report, and its measuring code end to end on
tiny sizes (the CUDA-only tests themselves are tests/test_gpu.py, marked gpu)."""

from __future__ import annotations

import json

import pytest
import torch

from gapt_bench import cli
from gapt_bench.cli import doctor, gpu_check

pytestmark = pytest.mark.usefixtures("offline_env")

TINY = doctor.Sizes(
    device="cpu",
    gpt2=(2, 64, 4),
    batch=4,
    seq_len=64,
    timed_steps=2,
    warmup_steps=1,
    compile=False,
    capacity_model=(1, 16, 2),
    capacity_batch=64,
    corpus_tokens=100_000,
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_what_it_would_run_and_exits_1(tmp_path, capsys):
    assert cli.main(["doctor", "--gpu", "--out", str(tmp_path / "gpu")]) == 1
    out, err = capsys.readouterr()
    assert "pytest -m gpu" in out and "GPT-2 small" in out and "capacity" in out
    assert err.startswith("gapt-bench: error: no CUDA device") and err.count("\n") == 1
    assert not (tmp_path / "gpu").exists()


@pytest.mark.slow
def test_the_measuring_code_runs_end_to_end_on_tiny_sizes(tmp_path):
    result = doctor.run_check(tmp_path, budget_s=120, sizes=TINY, tests=False)
    assert doctor.schema_problems(result) == []
    thr, cap = result["throughput"], result["capacity"]
    assert thr["error"] is None and cap["error"] is None, (thr.get("traceback"), cap.get("traceback"))
    assert [(r["method"], r["compile"]) for r in thr["runs"]] == [("baseline", False), ("gapt", False), ("gapt", False)]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] is None for r in thr["runs"])  # no peak FLOP/s on CPU
    assert set(thr["gapt_step_ratio"]) == {"paper (rotate 2..L-3, alternate)", "summed, all middle layers"}
    assert cap["steps"] >= 20 and cap["steps_per_s"] > 0 and -1 < cap["bits_per_param"] < 10
    assert cap["bits_per_param_paper_conv"] == pytest.approx(cap["bits_per_param"] * 64 / 63)
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["schema"] == doctor.SCHEMA_ID and doctor.schema_problems(saved) == []
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## Throughput" in md and "## Capacity" in md and "## Targets" in md and "MFU >= 40%: not measured" in md


def test_pytest_summary_parsing():
    text = "....F.s\nFAILED tests/test_gpu.py::test_x - AssertionError\n1 failed, 5 passed, 1 skipped in 3.2s\n"
    assert gpu_check.parse_pytest_summary(text) == {
        "passed": 5,
        "failed": 1,
        "skipped": 1,
        "errors": 0,
        "failures": ["tests/test_gpu.py::test_x"],
    }
    assert gpu_check.parse_pytest_summary("2 errors in 1s")["errors"] == 2


def test_schema_problems_name_what_is_wrong():
    broken = {"schema": 1, "env": {"torch": "2"}}
    problems = doctor.schema_problems(broken)
    assert "schema is int, not str" in problems and "started_at missing" in problems
    assert "env.gpu_name missing" in problems
    assert doctor.schema_problems({"error": "x", "traceback": "y"}, doctor.SCHEMA["capacity"]) == []


def test_targets_from_measured_figures():
    result = {
        "throughput": {
            "runs": [
                {"method": "baseline", "compile": False, "mfu": 0.31},
                {"method": "baseline", "compile": True, "mfu": 0.43},
                {"method": "gapt", "compile": False, "mfu": 0.2},
            ],
            "gapt_step_ratio": {"a": 1.04, "b": 1.12},
        }
    }
    t = doctor.targets(result)
    assert t["mfu"] == {"target_min": 0.4, "best": 0.43, "met": True}
    assert t["gapt_step_ratio"] == {"target_max": 1.1, "worst": 1.12, "met": False}
    assert doctor.targets({})["mfu"]["met"] is None


def test_the_throughput_table_names_a_variant_by_its_own_overrides():
    runs = [
        {
            "method": "gapt",
            "compile": False,
            "overrides": ["reg.layers=middle", *doctor.STAY_COMPRESSING],
            "step_s_median": 0.1,
            "tokens_per_s": 1000.0,
            "mfu": None,
            "warmup_s": 1,
            "peak_memory_gib": None,
        },
        {
            "method": "gapt",
            "compile": False,
            "overrides": list(doctor.STAY_COMPRESSING[:2]),
            "step_s_median": 0.1,
            "tokens_per_s": 1000.0,
            "mfu": None,
            "warmup_s": 1,
            "peak_memory_gib": None,
        },
    ]
    md = doctor.markdown({"throughput": {"runs": runs}, "capacity": {"error": "skipped"}})
    rows = [ln for ln in md.splitlines() if ln.startswith("| gapt")]
    assert rows[0].startswith("| gapt reg.layers=middle | False |") and rows[1].startswith("| gapt | False |")
