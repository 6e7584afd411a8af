"""The package's layers, computed from the code: no module imports a higher layer, and no import cycle.

Every import counts, at module level, inside functions and under TYPE_CHECKING (`ast` over every file), so the
layering cannot drift. The layers, lowest first, are the folders of gapt_bench/ (docs/architecture.md draws them);
the deprecated shims at the package root sit above everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gapt_bench

PACKAGE = Path(gapt_bench.__file__).resolve().parent
TASKS = PACKAGE.parent / "tasks"
# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    "config",
    "data",
    "measures",
    "training",
    "methods",
    "integrations",
    "tasks",
    "results",
    "launch",
    "evaluation",
    "cli",
]
TOP = len(LAYERS)  # the package root: the lazy public API, __main__ and the deprecated shims


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(("gapt_bench", *parts)).removesuffix(".__init__")] = path
    for path in TASKS.rglob("*.py"):
        parts = path.relative_to(TASKS).with_suffix("").parts
        out[".".join(("gapt_bench", "tasks", *parts)).removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 3 and module not in {f"gapt_bench.{name}" for name in LAYERS}:
        return TOP  # gapt_bench itself, gapt_bench.__main__, the root shims
    return LAYERS.index(parts[1])


def _imports(module: str) -> set[str]:
    """Every gapt_bench module `module` imports, anywhere in its file."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import name` imports pkg, and pkg.name when that is a module
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    # Every import runs the package root first: it stays light (its public names load lazily), so reading
    # `gapt_bench.__version__` is no dependency on a layer.
    return found - {module, "gapt_bench"}


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS) - {"tasks"}, "a new folder of gapt_bench/ needs its place in LAYERS"


def test_no_module_imports_a_higher_layer():
    def name(layer: int) -> str:
        return LAYERS[layer] if layer < TOP else "root"

    upward = sorted(
        f"{m} ({name(_layer(m))}) imports {d} ({name(_layer(d))})"
        for m, deps in GRAPH.items()
        for d in deps
        if _layer(d) > _layer(m)
    )
    assert upward == []


def test_no_import_cycle():
    """Tarjan's strongly connected components over the module graph; a package's __init__ re-exporting its own
    modules is not a cycle (importing the package runs the __init__, which imports them, in one direction)."""
    graph = {
        m: {d for d in deps if not (m.startswith(d + ".") and MODULES[d].name == "__init__.py")}
        for m, deps in GRAPH.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checks_see_function_level_and_type_checking_imports(tmp_path):
    """The parser counts what a module-level-only check would miss."""
    text = "import typing\nif typing.TYPE_CHECKING:\n    from gapt_bench.cli import main\ndef f():\n    from gapt_bench.results import store\n"
    tree = ast.parse(text)
    seen = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert seen == {"gapt_bench.cli", "gapt_bench.results"}


def test_the_package_root_and_the_cli_start_without_torch():
    """`import gapt_bench` (its public names load lazily) and the CLI's parser stay light: no torch, no
    transformers until a verb needs them (`gapt-bench --help` in well under a second)."""
    import subprocess
    import sys

    code = (
        "import sys, importlib, gapt_bench; importlib.import_module('gapt_bench.cli.main').build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
