"""Regenerate results/README.md (the published tables) and results/figures/ from the committed baselines.

    python scripts/publish_results.py [QUICK_RESULTS_FOLDER]

QUICK_RESULTS_FOLDER (optional): the results folder the quick-suite baseline was copied from; its run folders hold
the training curves that the curve figures need (the committed .jsonl alone has none).

Every table is what `gapt-bench paper|leaderboard|report --format md` prints for the committed records; the
provenance lines (date, commit, machine class, run counts, wall time) are read from the records themselves. The
prose around the tables lives in docs/reproduce.md; nothing here is typed by hand.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINES = {
    "verdict": (
        "The verdict tier on CPU",
        "`gapt-bench run --preset cpu-verdict` (each task's tier preset names its methods, controls and seeds; run "
        "task by task, `--tasks T`, and resumable with `--resume`)",
        ROOT / "baselines" / "cpu-verdict.jsonl",
    ),
    "quick": (
        "Quick suite on CPU",
        "`gapt-bench run` (every task x {baseline, gapt} x seeds 0-2, preset `quick`)",
        ROOT / "baselines" / "cpu-quick.jsonl",
    ),
    "forgetting": (
        "The forgetting claim at the author's scale",
        "`gapt-bench run --tasks forgetting_separation "
        "--preset paper --methods baseline,gapt,periodic,mbe --seeds 0-9`",
        ROOT / "baselines" / "cpu-forgetting-paper.jsonl",
    ),
    "capacity": (
        "Capacity on CPU near the paper's range",
        "`gapt-bench run --tasks synthetic_capacity --preset cpu-capacity --methods baseline --seeds 0-2`",
        ROOT / "baselines" / "cpu-capacity.jsonl",
    ),
}
FIGURES = {
    "curve_fineweb_lm_gapt": "fineweb_gapt_curve.png",
    "layers_val_mbe_fineweb_lm": "fineweb_layer_mbe.png",
    "layers_ood_mbe_arithmetic_ood": "arithmetic_layer_mbe.png",
    "capacity_plateau": "capacity_plateau.png",
}


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gapt_bench", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"gapt-bench {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def provenance(path: Path) -> str:
    from gapt_bench.results.store import read_records

    recs = read_records(path, warn=False)
    status = Counter(r["status"] for r in recs)
    machines = sorted({(r.get("env") or {}).get("machine_class", "unknown") for r in recs})
    shas = sorted({((r.get("env") or {}).get("git_sha") or "?")[:7] for r in recs})
    days = sorted({str(r.get("finished_at", ""))[:10] for r in recs})
    wall = sum(r.get("wall_time_s") or 0 for r in recs)
    return (
        f"{len(recs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(status.items()))}), finished "
        f"{' to '.join(dict.fromkeys([days[0], days[-1]]))} at commit {', '.join(shas)} on "
        f"{'; '.join(machines)}; {wall / 60:.0f} worker-minutes of runs in all, {elapsed(recs)}. "
        f"Records: `{path.relative_to(ROOT)}`."
    )


def elapsed(recs: list[dict]) -> str:
    """The wall-clock span of each task's sweep: first start to last finish."""
    import datetime as dt

    spans = []
    for task in sorted({r["task"] for r in recs}):
        times = [(r.get("started_at"), r.get("finished_at")) for r in recs if r["task"] == task]
        starts = [dt.datetime.fromisoformat(a) for a, _ in times if a]
        ends = [dt.datetime.fromisoformat(b) for _, b in times if b]
        if starts and ends:
            spans.append(f"{task} {(max(ends) - min(starts)).total_seconds() / 60:.0f} min")
    return "wall clock per task: " + ", ".join(spans) if spans else "wall clock unknown"


def section(key: str) -> list[str]:
    title, command, path = BASELINES[key]
    if not path.exists():
        return [f"## {title}", "", f"(no records yet: `{path.relative_to(ROOT)}`)", ""]
    rel = str(path.relative_to(ROOT))
    out = [f"## {title}", "", f"{command}. {provenance(path)}", ""]
    out += ["### The papers' claims (`gapt-bench paper --format md`)", "", cli("paper", rel, "--format", "md"), ""]
    out += ["### Leaderboard (`gapt-bench leaderboard --format md`)", "", cli("leaderboard", rel, "--format", "md"), ""]
    out += ["### Per task (`gapt-bench report --format md`)", "", cli("report", rel, "--format", "md"), ""]
    return out


def figures(src: Path) -> list[str]:
    """The quick suite's figures, copied from `gapt-bench plot` into results/figures/ under stable names."""
    if not src.exists():
        return []
    with tempfile.TemporaryDirectory() as tmp:
        cli("plot", str(src), "--out", tmp)
        made = {p.stem: p for p in Path(tmp).glob("*.png")}
        lines = ["## Figures (quick suite)", ""]
        for prefix, name in FIGURES.items():
            match = next((p for stem, p in sorted(made.items()) if stem.startswith(prefix)), None)
            if match is not None:
                shutil.copy(match, ROOT / "results" / "figures" / name)
                lines.append(f"![{name}](figures/{name})")
        return [*lines, ""]


def main(quick_folder: str | None = None) -> None:
    parts = [
        "# Published results",
        "",
        "Generated by `python scripts/publish_results.py` from the committed records; every table is the "
        "suite's own markdown output. CPU scale: these runs test the machinery and show directions; only the "
        "forgetting task runs at its paper's scale here. Reading guide: docs/reproduce.md and docs/statistics.md.",
        "",
    ]
    for key in BASELINES:
        parts += section(key)
    parts += figures(Path(quick_folder) if quick_folder else BASELINES["quick"][2])
    (ROOT / "results" / "README.md").write_text("\n".join(parts))
    print(f"wrote {ROOT / 'results' / 'README.md'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
