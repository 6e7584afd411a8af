"""The README a newcomer reads first: short, every link resolves, the two quick-start commands are the ones CI
runs, and every command and snippet in it works as written (commands are parsed, `run` plans validated, the
Python snippet executed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gapt_bench import cli
from gapt_bench.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICK_START = (
    "python3 -m venv .venv && .venv/bin/pip install -q -c constraints/cpu.txt -e . && .venv/bin/gapt-bench run"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -c constraints/cpu.txt -e '.[test]' && .venv/bin/pytest"
)
PENDING: set[str] = set()  # pages linked before they are written (none now)
LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def commands(text: str) -> list[list[str]]:
    """Every `gapt-bench ...` line of the bash blocks, continuations joined and comments dropped, as argv."""
    out = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "gapt-bench":
                out.append(argv[1:])
    return out


def test_readme_fits_a_first_read():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"
    assert all(len(line) <= 120 for line in lines if not line.startswith(("|", "![", "- [", "http")))


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_every_link_resolves(page):
    path = ROOT / page
    missing = []
    for target, _ in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        resolved = (path.parent / target).resolve()
        rel = str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)
        if not resolved.exists() and rel not in PENDING:
            missing.append(target)
    assert not missing, f"{page}: links to missing files {missing}"


def test_readme_links_every_docs_page():
    text = README.read_text()
    linked = {m for m, _ in LINK.findall(text) if m.startswith("docs/")}
    wanted = {
        "docs/methods.md",
        "docs/tasks.md",
        "docs/statistics.md",
        "docs/cluster.md",
        "docs/gpu.md",
        "docs/api.md",
        "docs/evaluate.md",
        "docs/benchmarks.md",
        "docs/reproduce.md",
        "docs/plugins.md",
        "docs/usage.md",
        "docs/architecture.md",
    }
    assert wanted <= linked, wanted - linked
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")}
    assert on_disk <= linked, f"docs pages the README does not link: {on_disk - linked}"


def test_the_two_setup_commands_are_the_ones_ci_runs():
    text = README.read_text()
    bash = [b.strip() for b in blocks(text, "bash")]
    assert bash[0] == QUICK_START
    after_marker = re.search(r"<!-- test-command -->\s*```bash\n(.*?)```", text, re.S)
    assert after_marker and after_marker.group(1).strip() == TEST_COMMAND
    ci = [p for p in (ROOT / ".ci" / "run", *(ROOT / "scripts" / "ci").glob("*"), *(ROOT / ".github").rglob("*.y*ml"))]
    ci_text = "".join(p.read_text() for p in ci if p.is_file())
    assert TEST_COMMAND in ci_text, "CI no longer runs the README's test command"


def test_every_command_and_snippet_works_as_written(tmp_path, monkeypatch):
    """Each command parses; each `run` plan validates (no training), the Python snippet saved under the name the
    command includes, so loading it (and registering its method) is part of the check."""
    text = README.read_text()
    (snippet,) = [b for b in blocks(text, "python") if "register_method" in b]  # the plug-in recipe
    (tmp_path / "last_layer_mbe.py").write_text(snippet)
    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    runs = 0
    for argv in commands(text):
        args = parser.parse_args(argv)
        if args.verb != "run":
            continue
        plan = ["--tasks", args.tasks, "--methods", args.methods, "--seeds", args.seeds, "--preset", args.preset]
        plan += [x for o in args.overrides for x in ("--set", o)] + [x for i in args.include for x in ("--include", i)]
        assert cli.main(["validate", *plan]) == 0, argv
        runs += 1
    assert runs >= 2 and any("last_layer_mbe.py" in argv for argv in commands(text))
