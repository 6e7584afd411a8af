"""First contact: the end of `run` fits one screen, per-run tables tell runs apart, progress shows an ETA from the
work left (a live display on a terminal, one line per run elsewhere), reading verbs work without the reference
method, a damaged store line is one line on stderr."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from factories import make_record

from gapt_bench.launch.plan import make_plan, run_key
from gapt_bench.launch.progress import SweepProgress
from gapt_bench.results import analysis
from gapt_bench.results.analysis.render import fit_columns
from gapt_bench.results.store import read_records

SWEEP = ["--tasks", "synthetic_capacity,text_memorization", "--preset", "tiny", "--seeds", "0-1"]
FINISHED_LINE = re.compile(
    r"^ok    (synthetic_capacity|text_memorization)/(baseline|gapt)/seed[01] \(\d+s\)(: .+)?  \[\d/8, ETA .+\]$"
)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "COLUMNS", "LINES", "TQDM_DISABLE")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny two-task sweep as CI runs it: not a terminal, COLUMNS=100, progress lines every second."""
    out = tmp_path_factory.mktemp("sweep") / "results"
    done = subprocess.run(
        [sys.executable, "-m", "gapt_bench", "run", *SWEEP, "--out", str(out), "--workers", "2"],
        env=_env(CI="1", COLUMNS="100", GAPT_BENCH_PROGRESS_EVERY_S="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out, done


def test_the_end_of_a_run_fits_one_screen(sweep):
    _, done = sweep
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    end = lines[lines.index("") + 1 :]  # the summary follows the per-run lines after one blank line
    assert 10 <= len(end) <= 60, "\n".join(end)
    text = "\n".join(end)
    for part in (
        "Primary metrics against baseline",
        "test_ce",
        "The papers' claims",
        "Leaderboard",
        "gapt-bench report",
    ):
        assert part in text, part
    assert done.stderr == ""


def test_lines_off_a_terminal(sweep):
    """One line per finished run (with the count and the ETA), and a periodic line for a long run."""
    _, done = sweep
    lines = done.stdout.splitlines()
    finished = [line for line in lines if line.startswith("ok ")]
    assert len(finished) == 8 and all(FINISHED_LINE.match(line) for line in finished), finished
    assert re.search(r"\[8/8, ETA 0s\]$", finished[-1])
    periodic = [line for line in lines if line.startswith("...   ")]
    assert periodic, "no periodic line although runs took longer than GAPT_BENCH_PROGRESS_EVERY_S"
    shape = re.compile(r"^\.\.\.   \S+: (step \d+/\d+ \(\d+%\)|reference \d+/\d+|starting).*, \S+  \[\d/8, ETA .+\]$")
    assert all(shape.match(line) for line in periodic), periodic


def test_per_run_tables_tell_runs_apart_at_100_columns(sweep):
    out, _ = sweep
    records = read_records(out) + [
        make_record("forgetting_separation", m, s, data={"batch_layout": lay}, metrics={"retained_l1": 1.0 + s})
        for m in ("baseline", "gapt")
        for s in (0, 1)
        for lay in ("grouped", "shuffled")
    ]
    tables = analysis.tables_of(analysis.runs_table(records))
    assert len(tables) == 3
    for table in tables:
        cols, _, _ = fit_columns(table, 100)
        keys = [k for k, _ in cols if not k.startswith("m:") and k != "status"]
        seen = [tuple(r.get(k, "") for k in keys) for r in table.rows]
        assert len(seen) == len(set(seen)), (table.title, keys)
    forgetting = next(t for t in tables if t.title.startswith("forgetting_separation"))
    assert ("data.batch_layout", "layout") in forgetting.columns


def test_summary_markdown_keeps_full_names(sweep):
    out, _ = sweep
    md = analysis.render(analysis.summary(read_records(out), results=str(out)), "md")
    assert "| task / metric |" in md and "text: membership law" in md and f"gapt-bench report {out}" in md


# ---------------------------------------------------------------------------------------------------------------
# progress


def test_eta_is_the_work_left_over_the_measured_speed():
    """Three 10-step runs and one of 1000 steps, 1 s a step: after the first short run the ETA is the 1020 steps
    left, not three more runs like the first; a run that stops early leaves none of its budget; work reported
    inside a run (a reference model) adds to it."""
    plan = make_plan(["synthetic_capacity"], ["baseline", "gapt"], [0, 1], "tiny")
    now = [0.0]
    tracker = SweepProgress(plan, workers=1, clock=lambda: now[0])
    runs = [tracker.runs[run_key(c)] for c in plan]
    for r, planned in zip(runs, (10, 10, 10, 1000)):
        r.planned = planned
    assert tracker.eta() is None  # nothing measured yet
    tracker.step(plan[0], 0, 0)
    for step in range(1, 11):
        now[0] += 1.0
        tracker.step(plan[0], step, 10)
    tracker.finish(plan[0], "ok", 10)
    assert tracker.eta() == pytest.approx(1020, rel=0.01)
    tracker.step(plan[1], 0, 0)
    for step in range(1, 5):
        now[0] += 1.0
        tracker.step(plan[1], step, 10)
    tracker.finish(plan[1], "ok", 4)  # stopped early (converged)
    assert tracker.eta() == pytest.approx(1010, rel=0.01)
    tracker.step(plan[2], 0, 0)
    tracker.step(plan[2], 5, 100, "reference")
    assert runs[2].total_steps == 110 and runs[2].stage == "reference"
    assert tracker.eta() == pytest.approx(1105, rel=0.02)
    assert tracker.counts() == (2, 1, 4)


def _pty_run(argv: list[str], cwd: Path, columns: int = 100) -> tuple[int, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=_env(TERM="xterm"), close_fds=True
    )
    os.close(slave)
    out, deadline = b"", time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


def test_live_progress_on_a_terminal(tmp_path):
    argv = [sys.executable, "-m", "gapt_bench", "run", "--tasks", "synthetic_capacity", "--preset", "tiny"]
    rc, text = _pty_run([*argv, "--seeds", "0-1", "--out", str(tmp_path / "r"), "--workers", "2"], tmp_path)
    assert rc == 0, text[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    heads = re.findall(r"runs (\d)/4 done, \d running, ETA (\S+)", plain)
    assert {int(d) for d, _ in heads} >= {0, 1, 2, 3}, "the display was not redrawn after every run"
    assert any(eta != "?" for _, eta in heads)
    assert re.search(r"synthetic_capacity/(baseline|gapt)/seed[01]  step \d+/\d+ \(\d+%\)", plain)
    assert "Primary metrics against baseline" in plain


def test_quiet_and_no_progress(tmp_path):
    base = [sys.executable, "-m", "gapt_bench", "run", "--tasks", "synthetic_capacity", "--preset", "tiny"]
    base += ["--seeds", "0", "--methods", "baseline", "--out", str(tmp_path / "r")]
    quiet = subprocess.run([*base, "--quiet"], env=_env(CI="1"), capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert "gapt-bench run:" not in quiet.stdout and not re.search(r"^ok ", quiet.stdout, re.M)
    assert "Primary metrics against baseline" in quiet.stdout
    plain = subprocess.run([*base, "--no-progress"], env=_env(CI="1"), capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0 and "skip  synthetic_capacity/baseline/seed0: already recorded" in plain.stdout


# ---------------------------------------------------------------------------------------------------------------
# reading verbs


def _write(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_report_without_the_reference_method(tmp_path, capsys):
    from gapt_bench import cli

    folder = _write(tmp_path / "r", [make_record("fineweb_lm", "gapt", s, metrics={"val_ce": 2 + s}) for s in range(3)])
    for argv in (["report"], ["paper"], ["leaderboard"], ["report", "--summary"]):
        assert cli.main([*argv, str(folder)]) == 0, argv
        out = capsys.readouterr().out
        assert "no 'baseline' runs in these results: tables against 'gapt'" in out, argv
    assert cli.main(["report", str(folder)]) == 0
    assert "val_ce" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "empty")]) == 2  # nothing at all to show


def test_a_damaged_store_line_is_one_line_on_stderr(tmp_path):
    good = [make_record("fineweb_lm", m, s, metrics={"val_ce": 2 + s}) for m in ("baseline", "gapt") for s in (0, 1)]
    folder = _write(tmp_path / "r", good)
    with open(folder / "runs.jsonl", "a") as f:
        f.write('{"run_id": "torn", "task": \n')
    done = subprocess.run(
        [sys.executable, "-m", "gapt_bench", "report", str(folder), "--summary"],
        env=_env(CI="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert ".py:" not in lines[0] and "Traceback" not in done.stderr
    assert f"{folder / 'runs.jsonl'}:5: skipped an unreadable record" in lines[0]
    debug = subprocess.run(
        [sys.executable, "-m", "gapt_bench", "report", str(folder), "--summary", "--debug"],
        env=_env(CI="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert debug.returncode == 0 and "store.py:" in debug.stderr  # --debug: Python's own warning
