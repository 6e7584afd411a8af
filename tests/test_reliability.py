"""Nothing lost, nothing corrupted: SIGKILL + resume, concurrent writers, corrupted lines, divergence, bad input."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from gapt_bench import cli
from gapt_bench.store import append_record, read_records

SMALL = ["--tasks", "synthetic_capacity", "--preset", "tiny", "--methods", "baseline", "--workers", "1", "--no-report",
         "--set", "train.log_every=10"]


def gapt_bench(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    return subprocess.Popen([sys.executable, "-m", "gapt_bench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    budget = ["--set", "train.tokens=819200"]  # 800 steps of 32 x 32 tokens
    ref = gapt_bench("run", *SMALL, "--seeds", "0", *budget, "--out", str(tmp_path / "ref"))
    assert ref.wait(timeout=300) == 0, ref.stderr.read()

    out = tmp_path / "killed"
    proc = gapt_bench("run", *SMALL, "--seeds", "0", *budget, "--out", str(out), "--checkpoint-every", "50")
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("runs/*/checkpoint.pt")) and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # let it train past the first checkpoint
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "runs.jsonl").exists()

    resumed = gapt_bench("run", *SMALL, "--seeds", "0", *budget, "--out", str(out), "--resume", "--checkpoint-every", "50")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    (want,), got = read_records(tmp_path / "ref"), read_records(out)
    assert len(got) == 1
    assert got[0]["metrics"] == want["metrics"]
    run_dir = out / "runs" / got[0]["run_id"]
    assert "resumed from step" in (run_dir / "log.txt").read_text()
    steps = [json.loads(line)["step"] for line in (run_dir / "curve.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the curve has no duplicated rows after the resume
    # a second --resume skips the finished run
    again = gapt_bench("run", *SMALL, "--seeds", "0", *budget, "--out", str(out), "--resume")
    assert again.wait(timeout=120) == 0
    assert "skip" in again.stdout.read()
    assert len(read_records(out)) == 1


def test_sigterm_checkpoints_and_says_how_to_resume(tmp_path):
    out = tmp_path / "r"
    proc = gapt_bench("run", *SMALL, "--seeds", "0", "--set", "train.tokens=2048000", "--out", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("runs/*/curve.jsonl")):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert "--resume" in proc.stderr.read()
    assert list(out.glob("runs/*/checkpoint.pt")) and not (out / "runs.jsonl").exists()


def _record(i):
    return {"schema_version": 1, "run_id": f"r{i}", "task": "t", "task_version": "1", "method": "m", "seed": i,
            "config": {"pad": "x" * 5000}, "config_hash": "h", "metrics": {"a": float(i)}, "metric_directions": {"a": "min"},
            "status": "ok", "n_params": 1, "tokens": 1, "wall_time_s": 0.0, "tokens_per_s": 0.0, "env": {}}


def _writer(path, start, n):
    for i in range(start, start + n):
        append_record(path, _record(i))


def test_concurrent_appends_land_whole(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k * 1000, 150)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any unreadable line would warn
        recs = read_records(tmp_path)
    assert len(recs) == 450 and len({r["run_id"] for r in recs}) == 450


def test_two_cli_runs_into_one_folder(tmp_path):
    procs = [gapt_bench("run", *SMALL, "--seeds", str(s), "--out", str(tmp_path))
             for s in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert sorted(r["seed"] for r in read_records(tmp_path)) == [0, 1]


def test_corrupted_line_is_skipped_with_warning_and_file_untouched(tmp_path):
    append_record(tmp_path, _record(1))
    with open(tmp_path / "runs.jsonl", "a") as f:
        f.write('{"schema_version": 1, "task": "t", "metr')  # a writer killed mid-line
    append_record(tmp_path, _record(2))  # starts on a fresh line
    with open(tmp_path / "runs.jsonl", "a") as f:
        f.write("not json at all\n")
    before = hashlib.sha256((tmp_path / "runs.jsonl").read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: skipped"):
        recs = read_records(tmp_path)
    assert [r["run_id"] for r in recs] == ["r1", "r2"]
    assert hashlib.sha256((tmp_path / "runs.jsonl").read_bytes()).hexdigest() == before


def test_divergence_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    code = cli.main(["run", *SMALL, "--seeds", "0,1", "--set",
                     "train.diverge_grad_norm=1e-12", "--out", str(tmp_path)])
    assert code == 0
    recs = read_records(tmp_path)
    assert [r["status"] for r in recs] == ["diverged", "diverged"]
    assert recs[0]["error"]["step"] == 0 and "gradient norm" in recs[0]["error"]["message"]


def test_unwritable_output_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["run", *SMALL, "--seeds", "0", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to output folder" in err and err.count("\n") == 1


BAD_INPUTS = [
    ["run", "--tasks", "nope"],
    ["run", "--tasks", ""],
    ["run", "--tasks", "synthetic_capacity,synthetic_capacity"],
    ["run", "--methods", "gaps"],
    ["run", "--seeds", "3-1"],
    ["run", "--seeds", "x"],
    ["run", "--seeds", ""],
    ["run", "--preset", "huge"],
    ["run", "--set", "train.lr=fast"],
    ["run", "--set", "train.batch_size=-4"],
    ["run", "--set", "model.n_layer=1.5"],
    ["run", "--set", "train.nope=1"],
    ["run", "--set", "nosection.x=1"],
    ["run", "--set", "lr"],
    ["run", "--set", "train.precision=fp8"],
    ["run", "--set", "mbe.patch_size=7"],
    ["run", "--set", "model.n_head=5"],
    ["run", "--set", "train.compile=maybe"],
    ["run", "--workers", "0"],
    ["run", "--checkpoint-every", "-1"],
    ["run", "--bogus-flag"],
    ["frobnicate"],
    ["report", "/nonexistent/results"],
    ["gate", "--baseline", "/nonexistent.jsonl", "--candidate", "/nonexistent"],
]


@pytest.mark.parametrize("argv", BAD_INPUTS, ids=[" ".join(a) for a in BAD_INPUTS])
def test_malformed_input_exits_2_with_one_line_and_writes_nothing(argv, tmp_path, capsys):
    out = tmp_path / "out"
    full = [*argv, "--tasks", "synthetic_capacity"] if argv[0] == "run" and "--tasks" not in argv else argv
    if full[0] == "run":
        full = [*full, "--out", str(out)]
    assert cli.main(full) == 2
    err = capsys.readouterr().err
    assert err.startswith("gapt-bench: error: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_report_survives_a_corrupted_results_file(tmp_path, capsys):
    assert cli.main(["run", *SMALL, "--seeds", "0,1", "--methods", "baseline,gapt", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "runs.jsonl", "a") as f:
        f.write('{"task": "synthetic_capacity", "metrics": {"mem_bi')
    before = (tmp_path / "runs.jsonl").read_bytes()
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"runs.jsonl:5: skipped"):
        assert cli.main(["report", str(tmp_path), "--format", "md"]) == 0
    assert "synthetic_capacity" in capsys.readouterr().out
    assert (tmp_path / "runs.jsonl").read_bytes() == before
