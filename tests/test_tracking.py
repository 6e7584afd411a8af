"""Curves to TensorBoard, W&B and trackio (`gapt-bench export`, `run --track`): optional, import-guarded, and
refused before training when the package is missing."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
from test_site import make_results

from gapt_bench import cli
from gapt_bench.results import tracking


def _fake_logger(name: str, with_group: bool = True) -> tuple[types.ModuleType, list]:
    """A module with W&B's (and trackio's) init/log/finish that records its calls."""
    calls: list = []
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    if with_group:

        def init(project, name=None, group=None, config=None):
            calls.append(("init", {"project": project, "name": name, "group": group, "config": config}))
    else:

        def init(project, name=None, config=None):
            calls.append(("init", {"project": project, "name": name, "config": config}))

    mod.init = init
    mod.log = lambda values, step=None: calls.append(("log", step, dict(values)))
    mod.finish = lambda: calls.append(("finish",))
    return mod, calls


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("tracking") / "results")


def _records(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_hold_the_curve(results, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert cli.main(["export", str(results), "--tensorboard", str(out)]) == 0
    records = _records(results)
    assert f"tensorboard: {len(records)} runs ({len(records) - 1} with a curve) -> {out}" in capsys.readouterr().out
    assert len(list(out.iterdir())) == len(records)  # one event folder per run (odd run ids made file-name safe)
    rec = next(r for r in records if r["method"] == "gapt" and r["status"] == "ok")
    curve = [json.loads(x) for x in (results / "runs" / rec["run_id"] / "curve.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(out / rec["run_id"]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/ce", "train/mbe", "train/phase", "mbe_layer/0", "mbe_layer/1", "final/val_ce"} <= tags
    ce = acc.Scalars("train/ce")
    assert [e.step for e in ce] == [r["step"] for r in curve]
    assert [e.value for e in ce] == pytest.approx([r["ce"] for r in curve], rel=1e-6)
    assert acc.Scalars("final/val_ce")[0].value == pytest.approx(rec["metrics"]["val_ce"], rel=1e-6)
    # exporting again replaces the run's events rather than doubling them
    assert cli.main(["export", str(results), "--tensorboard", str(out)]) == 0
    assert len(list((out / rec["run_id"]).glob("events.out.tfevents.*"))) == 1


def test_wandb_gets_one_run_per_record(results, monkeypatch, capsys):
    wandb, calls = _fake_logger("wandb")
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    assert cli.main(["export", str(results), "--wandb", "my-project"]) == 0
    records = _records(results)
    inits = [c[1] for c in calls if c[0] == "init"]
    assert len(inits) == len(records) == sum(c[0] == "finish" for c in calls)
    first = inits[0]
    assert first["project"] == "my-project" and first["name"] == records[0]["run_id"]
    assert first["group"] == f"{records[0]['task']}/{records[0]['method']}"
    assert first["config"]["seed"] == records[0]["seed"] and first["config"]["model"] == records[0]["config"]["model"]
    logs = [c for c in calls[: calls.index(("finish",))] if c[0] == "log"]
    assert [c[1] for c in logs[:3]] == [25, 50, 75] and "train/ce" in logs[0][2]
    assert logs[-1][2]["final/val_ce"] == records[0]["metrics"]["val_ce"]
    assert "wandb: " in capsys.readouterr().out


def test_trackio_without_group_argument(results, monkeypatch):
    trackio, calls = _fake_logger("trackio", with_group=False)
    monkeypatch.setitem(sys.modules, "trackio", trackio)
    assert cli.main(["export", str(results), "--trackio", "proj"]) == 0
    assert all("group" not in c[1] for c in calls if c[0] == "init")
    assert sum(c[0] == "init" for c in calls) == len(_records(results))


def test_a_backend_failing_midway_says_how_far_it_got_and_exits_1(results, monkeypatch, capsys):
    wandb, calls = _fake_logger("wandb")
    real_init = wandb.init

    def init(**kwargs):
        if sum(c[0] == "init" for c in calls) == 2:
            raise RuntimeError("wandb.errors.CommError: network is unreachable\n(retry later)")
        real_init(**kwargs)

    wandb.init = init
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    assert cli.main(["export", str(results), "--wandb", "proj"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network is unreachable" in err, err
    assert f"2 of {len(_records(results))} runs exported there" in err and "wandb:proj failed at run" in err


def test_an_unwritable_tensorboard_folder_is_refused_before_exporting(results, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["export", str(results), "--tensorboard", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tensorboard" in err and "must be a folder" in err, err
    assert cli.main(["export", str(results), "--tensorboard", str(blocker / "tb")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_missing_packages_are_refused_before_anything_runs(results, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "tensorboard") else real(name, *a)
    )
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    assert (
        cli.main(
            [
                "run",
                "--tasks",
                "synthetic_capacity",
                "--preset",
                "tiny",
                "--out",
                str(tmp_path / "r"),
                "--track",
                "wandb:proj",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "wandb is not installed" in err and "pip install wandb" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert cli.main(["export", str(results), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "gapt-bench[tracking]" in capsys.readouterr().err
    assert cli.main(["export", str(results)]) == 2  # no destination named
    assert cli.main(["run", "--track", "neptune:x", "--out", str(tmp_path / "r")]) == 2
    assert "KIND:WHERE" in capsys.readouterr().err


def test_run_track_tensorboard_writes_the_sweeps_curves(tmp_path, tiny_capacity_args):

    out, tb = tmp_path / "results", tmp_path / "tb"
    assert (
        cli.main(
            [
                "run",
                *tiny_capacity_args,
                "--methods",
                "baseline",
                "--seeds",
                "0",
                "--workers",
                "1",
                "--out",
                str(out),
                "--no-progress",
                "--no-report",
                "--track",
                f"tensorboard:{tb}",
            ]
        )
        == 0
    )
    runs = [json.loads(x)["run_id"] for x in (out / "runs.jsonl").read_text().splitlines()]
    assert runs and sorted(p.name for p in tb.iterdir()) == sorted(runs)
    assert all(list((tb / r).glob("events.out.tfevents.*")) for r in runs)


def test_scalar_tags():
    assert tracking.tag("ce") == "train/ce" and tracking.tag("mbe_layer_3") == "mbe_layer/3"
    assert tracking.scalars({"step": 5, "ce": 1.0, "phase": 2, "bad": float("nan"), "flag": True, "s": "x"}) == {
        "train/ce": 1.0,
        "train/phase": 2.0,
    }
