"""GitHub Actions: the workflow (.github/workflows/ci.yml) and the composite action (.github/actions/gapt-bench) run
the scripts of scripts/ci/, which hold the commands the README documents (one source of truth); every third-party
action is pinned to a commit; no job holds more permissions than it uses; and the action's script, run here as the
action runs it, passes a method against its own records and fails a planted regression, naming the metric."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from gapt_bench import cli

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / ".github"
WORKFLOW = GITHUB / "workflows" / "ci.yml"
ACTION = GITHUB / "actions" / "gapt-bench" / "action.yml"
SCRIPTS = ROOT / "scripts" / "ci"
README = ROOT / "README.md"
BASELINE = ROOT / "baselines" / "cpu-quick.jsonl"


def load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    if True in data and "on" not in data:  # YAML 1.1 reads the key `on:` as the boolean True
        data["on"] = data.pop(True)
    return data


TEST_COMMAND_MARKER = "<!-- test-command -->"
TEST_COMMAND_INTRO = "The tests (what `.ci/run` runs in CI):"


def readme_test_command(text: str | None = None) -> str:
    """The README's test command: the first fenced block after the marker `<!-- test-command -->` (or, without
    the marker, after the sentence that introduces it). One command; comments and a `$ ` prompt are left out, and
    lines continued with a backslash are joined."""
    text = README.read_text() if text is None else text
    for anchor in (TEST_COMMAND_MARKER, TEST_COMMAND_INTRO):
        start = text.find(anchor)
        if start >= 0:
            break
    else:
        raise AssertionError(
            f"README: no {TEST_COMMAND_MARKER} marker (nor {TEST_COMMAND_INTRO!r}) before the test command's block; "
            "put the marker on the line before the fenced block that holds the command .ci/run runs"
        )
    m = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M).search(text, start)
    assert m, f"README: no fenced code block after {anchor!r}"
    joined = re.sub(r"[ \t]*\\\n\s*", " ", m.group(2))
    lines = [ln.strip().removeprefix("$ ") for ln in joined.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(lines) == 1, f"README: the test command's block should hold one command, not {lines}"
    return lines[0]


def test_the_readme_test_command_is_found_whatever_the_wording_around_it():
    cmd = "python3 -m venv .venv && .venv/bin/pytest"
    for text in (
        f"# Tests\n\n{TEST_COMMAND_MARKER}\n```bash\n{cmd}\n```\n\n```bash\nother\n```\n",
        f"{TEST_COMMAND_MARKER}\nRun this:\n\n~~~sh\n# the tests\n$ python3 -m venv .venv \\\n  && .venv/bin/pytest\n~~~\n",
        f"## Quick start\n\n```bash\nfirst\n```\n\n{TEST_COMMAND_INTRO}\n\n```bash\n{cmd}\n```\n",
    ):
        assert readme_test_command(text) == cmd
    with pytest.raises(AssertionError, match="marker"):
        readme_test_command("```bash\npytest\n```\n")
    assert TEST_COMMAND_MARKER in README.read_text(), "README: keep the marker before the test command's block"


def script_command(name: str) -> str:
    """The one line of scripts/ci/NAME that starts with `python3 -m venv` (the install or test command)."""
    lines = [ln.strip() for ln in (SCRIPTS / name).read_text().splitlines() if ln.startswith("python3 -m venv")]
    assert len(lines) == 1, (name, lines)
    return lines[0]


def workflow_steps(data: dict):
    for job_id, job in data["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


# ---------------------------------------------------------------------------------------------------------------
# (a) one source of truth


def test_the_workflow_runs_the_readme_test_command_through_one_script():
    command = readme_test_command()
    assert script_command("test.sh") == command
    assert f"{script_command('install.sh')} && .venv/bin/pytest" == command
    wf = load_yaml(WORKFLOW)
    test_runs = [s["run"].strip() for s in wf["jobs"]["test"]["steps"] if "run" in s]
    assert test_runs == ["scripts/ci/test.sh"]
    ci_run = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in ci_run if ln and not ln.startswith("#") and not ln.startswith(("set ", "cd "))]
    assert commands and commands[0].startswith("scripts/ci/test.sh"), (
        f".ci/run must run scripts/ci/test.sh first: {commands[:1]}"
    )


def test_ci_run_calls_the_scripts_of_scripts_ci_in_order():
    """.ci/run: the README's test command first, then lint, the workflow lint, browser, speed ratios, the
    regression check, slow tests, the real Slurm, each through the script the workflow runs too."""
    text = (ROOT / ".ci" / "run").read_text()
    called = re.findall(r"^(scripts/ci/[\w-]+\.sh)\b", text, re.M)
    assert called == [
        f"scripts/ci/{name}.sh"
        for name in ("test", "lint", "lint-workflows", "browser", "bench", "regression", "slow", "slurm")
    ]
    for script in called:
        assert os.access(ROOT / script, os.X_OK), f"{script} is missing or not executable"
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_a_plain_pip_install_gets_every_package_of_gapt_bench():
    """The action pip-installs the suite (not editable): every folder of gapt_bench/ with an __init__.py must be
    listed in pyproject.toml, or `import gapt_bench.cli` fails in the method author's job."""
    listed = set(re.findall(r'"(gapt_bench(?:\.\w+)*)"', (ROOT / "pyproject.toml").read_text()))
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gapt_bench").rglob("__init__.py")}
    assert packages and not packages - listed, f"pyproject.toml [tool.setuptools] packages lacks {packages - listed}"


def test_the_test_matrix_is_every_python_the_package_declares():
    requires = re.search(r'requires-python\s*=\s*">=\s*3\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert requires, "pyproject.toml: requires-python is no longer of the form >=3.N"
    wf = load_yaml(WORKFLOW)
    versions = wf["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    assert versions == [f"3.{m}" for m in range(int(requires.group(1)), 13)]


def test_every_run_step_calls_an_executable_script_of_scripts_ci():
    wf = load_yaml(WORKFLOW)
    runs = [s["run"].strip() for _, s in workflow_steps(wf) if "run" in s]
    assert runs, "the workflow runs nothing"
    for run in runs:
        assert re.fullmatch(r"scripts/ci/[\w-]+\.sh", run), f"put this step's logic in a scripts/ci/ script: {run!r}"
        path = ROOT / run
        assert path.is_file() and os.access(path, os.X_OK), f"{run} is missing or not executable"
    jobs = wf["jobs"]
    called = {s["run"].strip() for _, s in workflow_steps(wf) if "run" in s}
    assert {
        "scripts/ci/test.sh",
        "scripts/ci/browser.sh",
        "scripts/ci/bench.sh",
        "scripts/ci/regression.sh",
        "scripts/ci/lint-workflows.sh",
        "scripts/ci/lint.sh",
        "scripts/ci/slow.sh",
    } <= called
    assert "scripts/ci/method-regression.sh" in (SCRIPTS / "regression.sh").read_text()
    bench_json = [
        s
        for j in ("bench-chart", "bench-compare")
        for s in jobs[j]["steps"]
        if "github-action-benchmark" in s.get("uses", "")
    ]
    assert {s["with"]["tool"] for s in bench_json} == {"customBiggerIsBetter", "customSmallerIsBetter"}
    assert all(
        s["with"]["benchmark-data-dir-path"] == "dev/bench" and s["with"]["gh-pages-branch"] == "gh-pages"
        for s in bench_json
    )


def test_the_action_passes_every_input_to_its_one_script():
    action = load_yaml(ACTION)
    steps = action["runs"]["steps"]
    runs = [s for s in steps if "run" in s]
    assert len(runs) == 1 and "scripts/ci/method-regression.sh" in runs[0]["run"]
    env = runs[0]["env"]
    script = (SCRIPTS / "method-regression.sh").read_text()
    for name in env:
        assert name in script, f"the action sets {name}, which method-regression.sh does not read"
    used = " ".join(str(v) for s in steps for v in [*(s.get("env") or {}).values(), *(s.get("with") or {}).values()])
    for name in action["inputs"]:
        assert f"inputs.{name} }}}}" in used, f"input {name!r} reaches no step"
    assert {"tasks", "preset", "methods", "include", "package", "seeds", "baseline", "strict", "python-version"} <= set(
        action["inputs"]
    )
    uploads = [s for s in steps if "upload-artifact" in s.get("uses", "")]
    assert len(uploads) == 2 and all(s.get("if") == "always()" for s in uploads)


# ---------------------------------------------------------------------------------------------------------------
# (c) pinned actions, least permissions, no template injection


def _uses_lines() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(GITHUB.rglob("*.y*ml")):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:-\s+)?uses:\s*(.+)$", line)
            if m:
                out.append((path, m.group(1).strip()))
    return out


def test_every_action_used_is_pinned_to_a_commit_sha():
    uses = _uses_lines()
    assert len(uses) >= 5
    for path, value in uses:
        if value.startswith("./"):
            continue  # an action of this repository, at the same commit
        m = re.fullmatch(r"([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d+(\.\d+)*", value)
        assert m, f"{path.relative_to(ROOT)}: pin to a full commit SHA with a version comment: {value!r}"


def test_no_job_holds_more_permissions_than_it_uses():
    wf = load_yaml(WORKFLOW)
    assert wf["permissions"] == {}
    for job_id, job in wf["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"job {job_id} declares no permissions"
        writes = {k for k, v in perms.items() if v == "write"}
        if job_id == "bench-chart":
            assert writes == {"contents"} and "refs/heads/main" in job["if"] and "push" in job["if"]
        elif job_id == "bench-compare":
            assert writes == {"pull-requests"} and "pull_request" in job["if"]
        else:
            assert not writes, f"job {job_id} can write {writes}"
        for step in job["steps"]:
            if "actions/checkout" in step.get("uses", ""):
                assert step.get("with", {}).get("persist-credentials") is False, f"{job_id}: persist-credentials"
    pushes = [s for _, s in workflow_steps(wf) if str((s.get("with") or {}).get("auto-push")).lower() == "true"]
    assert pushes and all(s in wf["jobs"]["bench-chart"]["steps"] for s in pushes)


def test_no_expression_is_expanded_inside_a_run_script():
    for data in (load_yaml(WORKFLOW), load_yaml(ACTION)):
        steps = [s for _, s in workflow_steps(data)] if "jobs" in data else data["runs"]["steps"]
        for step in steps:
            assert "${{" not in step.get("run", ""), f"pass it through env: instead: {step['run']!r}"


# ---------------------------------------------------------------------------------------------------------------
# --markdown FILE and the `regression` verb


def _forgetting_records(tmp_path: Path) -> Path:
    path = tmp_path / "base.jsonl"
    lines = [ln for ln in BASELINE.read_text().splitlines() if '"forgetting_separation"' in ln]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_regression_and_report_write_their_tables_as_markdown(tmp_path, capsys):
    base = _forgetting_records(tmp_path)
    md = tmp_path / "out" / "regression.md"
    assert (
        cli.main(
            ["regression", "--baseline", str(base), "--candidate", str(base), "--format", "md", "--markdown", str(md)]
        )
        == 0
    )
    assert md.read_text() == capsys.readouterr().out
    assert md.read_text().startswith("### Regression check: exit 0") and "| task | method | metric |" in md.read_text()
    # the deprecated old name takes the new flags too, with its one-line note on stderr
    old = tmp_path / "gate.md"
    assert (
        cli.main(
            ["gate", "--baseline", str(base), "--candidate", str(base), "--format", "json", "--markdown", str(old)]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert json.loads(out)["kind"] == "regression" and old.read_text() == md.read_text()
    assert len(err.strip().splitlines()) == 1 and "`gate` is now `regression`" in err
    rep = tmp_path / "report.md"
    assert cli.main(["report", str(base), "--format", "md", "--markdown", str(rep)]) == 0
    assert rep.read_text() == capsys.readouterr().out and "MDE" in rep.read_text()


def test_markdown_to_an_unwritable_path_is_bad_input(tmp_path, capsys):
    base = _forgetting_records(tmp_path)
    (tmp_path / "file").write_text("")
    assert (
        cli.main(
            [
                "regression",
                "--baseline",
                str(base),
                "--candidate",
                str(base),
                "--markdown",
                str(tmp_path / "file" / "x.md"),
            ]
        )
        == 2
    )
    assert "--markdown" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# (b) the action's script, locally, as the action runs it

METHOD = """
from gapt_bench.methods import Method, StepInfo, register_method


@register_method("my_method")
class MyMethod(Method):
    description = "{description}"

    def loss(self, ce, hidden, step):
        return {loss}, StepInfo(ce=float(ce))
"""
GOOD = METHOD.format(description="CE (the method as committed)", loss="ce")
# The planted bug: every other step climbs the loss instead of descending it; the same name and config, so the
# regression check pairs it with the committed records.
BAD = METHOD.format(description="CE, with every other step reversed", loss="(ce if step % 2 == 0 else -ce)")


def run_action_script(tmp_path: Path, name: str, plugin: str, baseline: Path | None, site: bool):
    (tmp_path / name).mkdir()
    (tmp_path / name / "my_method.py").write_text(textwrap.dedent(plugin))
    summary, output = tmp_path / f"{name}-summary.md", tmp_path / f"{name}-output.txt"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CI": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
        "GAPT_PYTHON": sys.executable,
        "GAPT_TASKS": "fineweb_lm",
        "GAPT_PRESET": "tiny",
        "GAPT_METHODS": "my_method",
        "GAPT_SEEDS": "0-2",
        "GAPT_WORKERS": "1",
        "GAPT_INCLUDE": f"{name}/my_method.py",
        "GAPT_REFERENCE": "my_method",
        "GAPT_OUT": f"{name}-results",
        "GAPT_SITE": f"{name}-site" if site else "",
        "GAPT_BASELINE": str(baseline or ""),
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "method-regression.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done, summary.read_text() if summary.exists() else "", output.read_text() if output.exists() else ""


@pytest.mark.slow
def test_the_action_script_passes_a_method_and_fails_a_planted_regression(tmp_path):
    # No baseline yet: the sweep and the report, nothing gated, exit 0; its records become the baseline.
    done, summary, output = run_action_script(tmp_path, "first", GOOD, None, site=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "No baseline given" in summary and "MDE" in summary and "exit-code=0" in output
    baseline = tmp_path / "baseline.jsonl"
    baseline.write_text((tmp_path / "first-results" / "runs.jsonl").read_text())

    # The same method, run afresh, against its own records: passes, and the summary holds the verdict table.
    done, summary, output = run_action_script(tmp_path, "again", GOOD, baseline, site=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "passed" in summary and "| task | method | metric |" in summary and "| PASS |" in summary
    assert "| REGRESSION |" not in summary and "exit-code=0" in output
    assert (tmp_path / "again-site" / "index.html").is_file()
    assert (tmp_path / "again-results" / "regression.md").is_file()

    # A planted regression: exit 1, the summary names the metric, an error annotation on the log.
    done, summary, output = run_action_script(tmp_path, "worse", BAD, baseline, site=False)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "FAILED, a significant regression" in summary and "exit-code=1" in output
    assert re.search(r"REGRESSION: fineweb_lm / my_method / `val_ce` \+\d", summary)
    assert re.search(r"\| val_ce \| ↓ \|.*\| REGRESSION \|", summary)
    assert "::error title=gapt-bench regression::fineweb_lm/my_method val_ce" in done.stdout


def test_the_documented_workflow_uses_the_action_with_inputs_it_has():
    text = (ROOT / "docs" / "github-actions.md").read_text()
    m = re.search(r"## Add the suite to your method's repository.*?```yaml\n(.*?)```", text, re.S)
    assert m, "docs/github-actions.md: the example workflow is gone"
    example = load_yaml_text(m.group(1))
    steps = example["jobs"]["gapt-bench"]["steps"]
    ours = [s for s in steps if s.get("uses", "").split("@")[0].endswith("gapt_bench/.github/actions/gapt-bench")]
    assert len(ours) == 1 and set(ours[0]["with"]) <= set(load_yaml(ACTION)["inputs"])
    assert example["permissions"] == {"contents": "read"}
    checkout = [s for s in steps if "actions/checkout" in s.get("uses", "")]
    assert checkout and checkout[0]["uses"] in {u.split()[0] for _, u in _uses_lines()}  # the same pin as ours
    assert checkout[0]["with"]["persist-credentials"] is False


def load_yaml_text(text: str) -> dict:
    data = yaml.safe_load(text)
    if True in data and "on" not in data:
        data["on"] = data.pop(True)
    return data
