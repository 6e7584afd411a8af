"""Plug-ins: a method or a task in one file that every command finds, in parallel workers too; entry points of
installed packages; bad plug-ins refused in one line; the recipes of docs/plugins.md exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gapt_bench import cli
from gapt_bench.config.registry import Registry, RegistryError
from gapt_bench.results.store import read_records

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "docs" / "plugins.md"


def gapt_bench(*args: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gapt_bench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def readme_recipes() -> tuple[dict[str, str], list[str]]:
    """The files (`<!-- recipe: NAME -->` + the next ```python block) and the commands (`<!-- recipe-run -->`)."""
    text = RECIPES.read_text()
    files = {m.group(1): m.group(2) for m in re.finditer(r"<!-- recipe: (\S+) -->\s*```python\n(.*?)```", text, re.S)}
    run = re.search(r"<!-- recipe-run -->\s*```bash\n(.*?)```", text, re.S).group(1)
    commands = [c.strip() for c in run.replace("\\\n", " ").splitlines() if c.strip()]
    return files, commands


def test_readme_recipes_work_exactly_as_written_with_two_workers(tmp_path):
    files, commands = readme_recipes()
    assert set(files) == {"last_layer_mbe.py", "copy_task.py"} and len(commands) == 2
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    for command in commands:
        argv = command.split()
        assert argv[0] == "gapt-bench"
        done = gapt_bench(*argv[1:], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    recs = read_records(tmp_path / "results")
    assert sorted((r["task"], r["method"], r["seed"]) for r in recs) == [
        ("copy", "baseline", 0),
        ("copy", "baseline", 1),
        ("copy", "last_layer_mbe", 0),
        ("copy", "last_layer_mbe", 1),
    ]
    assert all(r["status"] == "ok" and 0 <= r["metrics"]["copy_acc"] <= 1 for r in recs)
    assert all(r["primary_metrics"] == ["copy_acc"] for r in recs)
    assert "copy_acc" in done.stdout and "last_layer_mbe" in done.stdout  # the report


def test_ls_names_where_each_entry_comes_from(tmp_path, capsys):
    files, _ = readme_recipes()
    (tmp_path / "copy_task.py").write_text(files["copy_task.py"])
    assert cli.main(["ls", "--include", str(tmp_path / "copy_task.py")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    origin = {
        lines[i].split()[0]: lines[i + 1].strip()
        for i in range(len(lines) - 1)
        if lines[i].startswith("  ") and lines[i + 1].strip().startswith("from ")
    }
    assert origin["copy"] == f"from include {tmp_path / 'copy_task.py'}"
    assert origin["fineweb_lm"] == "from built-in" and origin["gapt"] == "from built-in"
    assert "[controls: periodic, mbe]" in out


ENTRY_POINT_METHOD = """
from gapt_bench.methods.base import Method, StepInfo


class HalfCE(Method):
    description = "CE / 2 (an installed package's method)"

    def loss(self, ce, hidden, step):
        return 0.5 * ce, StepInfo(ce=float(ce))
"""


def _install_fake_package(root: Path, entry_points: str) -> None:
    """A package on PYTHONPATH with a .dist-info: importlib.metadata sees its entry points as a pip install would."""
    (root / "halfce_plugin").mkdir()
    (root / "halfce_plugin" / "__init__.py").write_text(ENTRY_POINT_METHOD)
    info = root / "halfce_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halfce-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.mark.slow
def test_a_method_from_an_installed_package_entry_point(tmp_path):
    _install_fake_package(tmp_path, "[gapt_bench.methods]\nhalf_ce = halfce_plugin:HalfCE\n")
    env = {"PYTHONPATH": str(tmp_path)}
    listed = gapt_bench("ls", "methods", cwd=tmp_path, extra_env=env)
    assert "half_ce" in listed.stdout and "from entry point halfce-plugin: halfce_plugin:HalfCE" in listed.stdout
    done = gapt_bench(
        "run",
        "--tasks",
        "synthetic_capacity",
        "--preset",
        "tiny",
        "--methods",
        "baseline,half_ce",
        "--seeds",
        "0",
        "--workers",
        "2",
        "--no-report",
        "--out",
        "r",
        cwd=tmp_path,
        extra_env=env,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(r["method"] for r in read_records(tmp_path / "r")) == ["baseline", "half_ce"]


def test_a_broken_entry_point_is_named_in_one_line(tmp_path):
    _install_fake_package(tmp_path, "[gapt_bench.methods]\nbroken = halfce_plugin:NoSuchClass\n")
    env = {"PYTHONPATH": str(tmp_path)}
    done = gapt_bench(
        "run",
        "--tasks",
        "synthetic_capacity",
        "--preset",
        "tiny",
        "--seeds",
        "0",
        "--out",
        "r",
        cwd=tmp_path,
        extra_env=env,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "plug-in 'broken'" in done.stderr and "halfce-plugin" in done.stderr
    assert not (tmp_path / "r").exists()
    listed = gapt_bench("ls", cwd=tmp_path, extra_env=env)
    assert listed.returncode == 0 and "broken plug-in:" in listed.stdout and "gapt" in listed.stdout


BAD_PLUGINS = {
    "syntax": ("def loss(:\n", "failed: SyntaxError"),
    "not_a_method": (
        "from gapt_bench.methods import register_method\n\n@register_method('thing')\nclass Thing:\n    pass\n",
        "must be a subclass of gapt_bench.methods.base.Method",
    ),
    "bad_name": (
        "from gapt_bench.methods.base import Method\nfrom gapt_bench.methods import register_method\n\n"
        "@register_method('Bad Name')\nclass M(Method):\n    pass\n",
        "name 'Bad Name' is invalid",
    ),
    "taken_name": (
        "from gapt_bench.methods.base import Method\nfrom gapt_bench.methods import register_method\n\n"
        "@register_method('gapt')\nclass M(Method):\n    pass\n",
        "'gapt' is already registered (built-in)",
    ),
    "raises": ("raise RuntimeError('no GPU here')\n", "failed: RuntimeError: no GPU here"),
}


@pytest.mark.parametrize("kind", sorted(BAD_PLUGINS))
def test_bad_plugins_are_refused_in_one_line(kind, tmp_path, capsys):
    code, message = BAD_PLUGINS[kind]
    path = tmp_path / f"{kind}.py"
    path.write_text(code)
    out = tmp_path / "out"
    assert (
        cli.main(
            ["run", "--include", str(path), "--tasks", "synthetic_capacity", "--preset", "tiny", "--out", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(path) in err, err
    assert not out.exists()


def test_include_of_a_missing_or_non_python_path(tmp_path, capsys):
    assert cli.main(["ls", "--include", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["ls", "--include", str(tmp_path / "notes.txt")]) == 2
    assert "not a .py file" in capsys.readouterr().err


def test_an_include_folder_loads_every_file(tmp_path, capsys):
    files, _ = readme_recipes()
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    assert cli.main(["ls", "--include", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "copy " in out and "last_layer_mbe" in out


def test_registration_checks():
    from gapt_bench.methods.base import Method

    reg = Registry("method", base=Method)
    with pytest.raises(RegistryError, match="must be a subclass"):
        reg.register("x", int)
    with pytest.raises(RegistryError, match="is invalid"):
        reg.register("X-1", type("M", (Method,), {}))
    good = type("M", (Method,), {})
    reg.register("ok_name", good)
    assert good.name == "ok_name"


def test_every_builtin_task_folder_is_packaged_with_its_presets_and_readme():
    root = ROOT
    pyproject = (root / "pyproject.toml").read_text()
    for folder in sorted(p for p in (root / "tasks").iterdir() if p.is_dir() and not p.name.startswith("__")):
        assert f'"gapt_bench.tasks.{folder.name}"' in pyproject, f"{folder.name} is not listed in pyproject.toml"
        for f in ("task.py", "presets.yaml", "README.md", "__init__.py"):
            assert (folder / f).is_file(), f"tasks/{folder.name}/{f} is missing"
        assert textwrap.dedent((folder / "README.md").read_text()).startswith("# ")
