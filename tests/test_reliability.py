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
from factories import make_record

from gapt_bench import cli
from gapt_bench.results.store import append_record, read_records

SMALL = [
    "--tasks",
    "synthetic_capacity",
    "--preset",
    "tiny",
    "--methods",
    "baseline",
    "--workers",
    "1",
    "--no-report",
    "--set",
    "train.log_every=10",
]


def gapt_bench(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "gapt_bench", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
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

    resumed = gapt_bench(
        "run", *SMALL, "--seeds", "0", *budget, "--out", str(out), "--resume", "--checkpoint-every", "50"
    )
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
    rec = make_record(task="t", method="m", seed=i, metrics={"a": float(i)}, data={"pad": "x" * 5000})
    return {**rec, "run_id": f"r{i}", "config_hash": "h"}


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
    procs = [gapt_bench("run", *SMALL, "--seeds", str(s), "--out", str(tmp_path)) for s in (0, 1)]
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


def test_divergence_is_recorded_the_sweep_goes_on_and_the_command_fails(tmp_path, capsys):
    code = cli.main(["run", *SMALL, "--seeds", "0,1", "--set", "train.diverge_grad_norm=1e-12", "--out", str(tmp_path)])
    assert code == 1  # a CI job running the suite must go red
    assert "2 run(s) did not finish ok" in capsys.readouterr().err
    recs = read_records(tmp_path)
    assert [r["status"] for r in recs] == ["diverged", "diverged"]
    assert recs[0]["error"]["step"] == 0 and "gradient norm" in recs[0]["error"]["message"]
    # diverging is deterministic: --resume does not train those runs again
    assert (
        cli.main(
            [
                "run",
                *SMALL,
                "--seeds",
                "0,1",
                "--set",
                "train.diverge_grad_norm=1e-12",
                "--out",
                str(tmp_path),
                "--resume",
            ]
        )
        == 0
    )
    assert "already recorded" in capsys.readouterr().out
    assert len(list((tmp_path / "runs.jsonl").read_text().splitlines())) == 2


def test_failed_run_exits_1(tmp_path, capsys, monkeypatch):
    from gapt_bench.tasks.synthetic_capacity.task import SyntheticCapacity

    def boom(self, model, ctx, trained):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(SyntheticCapacity, "evaluate", boom)
    assert cli.main(["run", *SMALL, "--seeds", "0", "--out", str(tmp_path)]) == 1
    (rec,) = read_records(tmp_path)
    assert rec["status"] == "failed" and "evaluation exploded" in rec["error"]["message"]


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
    ["regression", "--baseline", "/nonexistent.jsonl", "--candidate", "/nonexistent"],
    # values that must not reach training
    ["run", "--set", "train.lr=.nan"],
    ["run", "--set", "train.lr=.inf"],
    ["run", "--set", "train.lr=1e400"],
    ["run", "--set", "train.grad_clip=.nan"],
    ["run", "--set", "mbe.alpha=.nan"],
    ["run", "--set", "train.beta1=1.0"],
    ["run", "--set", "train.beta2=1.5"],
    ["run", "--set", "model.dropout=1.5"],
    ["run", "--set", "train.min_lr_ratio=1.5"],
    ["run", "--set", "gapt.smoothing=1.0"],
    ["run", "--seeds", "9223372036854775808"],
    ["run", "--seeds", "0-1000000000"],
    ["run", "--set", "train.device=cuda:abc"],
    ["run", "--set", "train.device=tpu"],
    ["run", "--set", "train.lr.foo=1"],
    ["run", "--out-is-jsonl"],
]


@pytest.mark.parametrize("argv", BAD_INPUTS, ids=[" ".join(a) for a in BAD_INPUTS])
def test_malformed_input_exits_2_with_one_line_and_writes_nothing(argv, tmp_path, capsys):
    out = tmp_path / "out"
    if argv == ["run", "--out-is-jsonl"]:
        argv, out = ["run"], tmp_path / "x.jsonl"
    full = [*argv, "--tasks", "synthetic_capacity"] if argv[0] == "run" and "--tasks" not in argv else argv
    if full[0] == "run":
        full = [*full, "--out", str(out)]
    assert cli.main(full) == 2
    err = capsys.readouterr().err
    assert err.startswith("gapt-bench: error: ") and err.count("\n") == 1, err
    assert not out.exists()


def _bad_source(tmp_path, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = (
        tmp_path
        / {
            "empty": "e.parquet",
            "textless": "t.parquet",
            "malformed": "m.jsonl",
            "not-parquet": "n.parquet",
            "no-rows": "r.parquet",
        }[kind]
    )
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "textless":
        pq.write_table(pa.table({"body": ["hello world"] * 4}), path)
    elif kind == "no-rows":
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    elif kind == "malformed":
        path.write_text("{not json\n")
    else:
        path.write_text("this is not parquet")
    return path


BAD_SOURCES = ["empty", "textless", "malformed", "not-parquet", "no-rows"]


@pytest.mark.parametrize("kind", BAD_SOURCES)
def test_a_bad_data_source_is_refused_before_training(kind, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "run",
        "--tasks",
        "fineweb_lm",
        "--preset",
        "tiny",
        "--methods",
        "baseline",
        "--seeds",
        "0",
        "--set",
        f"data.source={_bad_source(tmp_path, kind)}",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gapt-bench: error: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_cuda_device_without_cuda_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli.main(["run", *SMALL, "--seeds", "0", "--set", "train.device=cuda", "--out", str(tmp_path / "o")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [["--tolerance", "-1"], ["--alpha", "5"], ["--alpha", "0"], ["--min-n", "0"]])
def test_gate_arguments_are_checked(argv, capsys):
    assert cli.main(["regression", "--baseline", "x", "--candidate", "y", *argv]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_report_reference_must_exist(tmp_path, capsys):
    append_record(tmp_path, _record(1))
    assert cli.main(["report", str(tmp_path), "--reference", "nosuch"]) == 2
    assert "has no runs" in capsys.readouterr().err


def test_huge_seed_ranges_are_refused_before_any_list_is_built(monkeypatch):
    from gapt_bench.config import ConfigError
    from gapt_bench.launch import plan

    built = []
    real_range = range
    monkeypatch.setattr(plan, "range", lambda *a: built.append(a) or real_range(*a), raising=False)
    with pytest.raises(ConfigError, match="at most 10,000"):
        plan.parse_seeds("0-1000000000")
    assert built == []  # refused from the span arithmetic alone


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


# ----------------------------------------------------------------------------------------------------------------
# One record per run


def test_duplicate_lines_count_once_and_the_reader_says_so(tmp_path):
    append_record(tmp_path, _record(1))
    append_record(tmp_path, _record(2))
    line = (tmp_path / "runs.jsonl").read_text().splitlines()[0]
    with open(tmp_path / "runs.jsonl", "a") as f:  # a byte-identical duplicate, and another record of key 2
        f.write(line + "\n")
        f.write(json.dumps({**_record(2), "run_id": "r2-again", "metrics": {"a": 99.0}}) + "\n")
    with pytest.warns(UserWarning, match="2 duplicate record"):
        recs = read_records(tmp_path)
    assert [(r["run_id"], r["metrics"]["a"]) for r in recs] == [("r1", 1.0), ("r2", 2.0)]


def test_a_finished_record_supersedes_a_failed_one(tmp_path):
    append_record(tmp_path, {**_record(1), "status": "failed", "metrics": {}})
    append_record(tmp_path, {**_record(1), "run_id": "retry"})
    with pytest.warns(UserWarning, match="1 duplicate"):
        (rec,) = read_records(tmp_path)
    assert rec["run_id"] == "retry" and rec["status"] == "ok"


def test_a_seed_written_as_a_string_is_the_same_seed(tmp_path):
    append_record(tmp_path, _record(7))
    append_record(tmp_path, {**_record(7), "seed": "7", "run_id": "as-string"})
    with pytest.warns(UserWarning, match="1 duplicate"):
        recs = read_records(tmp_path)
    assert [r["seed"] for r in recs] == [7]


def test_rerun_without_resume_does_not_append_again(tmp_path, capsys):
    args = ["run", *SMALL, "--seeds", "0", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    assert "already recorded" in capsys.readouterr().out
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 1


def test_two_resume_sweeps_of_one_plan_train_each_run_once(tmp_path):
    args = ["run", *SMALL, "--seeds", "0-5", "--out", str(tmp_path), "--resume"]
    procs = [gapt_bench(*args) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = read_records(tmp_path)
    assert sorted(r["seed"] for r in recs) == list(range(6))
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 6  # nothing to de-duplicate: each trained once
    assert len(list((tmp_path / "runs").iterdir())) == 6
    assert sum(o.count("running in pid") + o.count("already recorded") for o, _ in outs) == 6


def test_a_stale_claim_of_a_dead_process_is_taken_over(tmp_path):
    from gapt_bench.data.claims import claim_path, try_claim

    key = ("t", "m", "h", 0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = claim_path(tmp_path, key)
    path.parent.mkdir(parents=True)
    import socket

    path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "pid_start": "1"}))
    claim, owner = try_claim(tmp_path, key, heartbeat=False)
    assert claim is not None and owner is None
    again, owner = try_claim(tmp_path, key, heartbeat=False)  # now held by a live process: this one
    assert again is None and owner["pid"] == os.getpid()
    claim.release()
    assert not path.exists()


# ----------------------------------------------------------------------------------------------------------------
# Failures that fail


def test_a_closed_stdout_pipe_does_not_stop_the_sweep(tmp_path):
    proc = gapt_bench("run", *SMALL, "--seeds", "0-2", "--methods", "baseline,gapt", "--out", str(tmp_path))
    proc.stdout.readline()
    proc.stdout.close()  # `gapt-bench run ... | head -1`
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert len(read_records(tmp_path)) == 6


@pytest.mark.slow
def test_workers_die_with_their_parent_and_append_nothing(tmp_path):
    proc = gapt_bench(
        "run",
        *SMALL,
        "--seeds",
        "0-3",
        "--workers",
        "2",
        "--set",
        "train.tokens=2048000",
        "--out",
        str(tmp_path),
        "--checkpoint-every",
        "50",
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("runs/*/curve.jsonl"))) < 2:
        time.sleep(0.05)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(c) for c in children if "spawn_main" in open(f"/proc/{c}/cmdline").read().replace("\0", " ")]
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(
        os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z" for w in workers
    ):
        time.sleep(0.1)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"]
    assert not alive, f"workers {alive} outlived their parent"
    assert not (tmp_path / "runs.jsonl").exists()
    # what they left resumes
    resumed = gapt_bench(
        "run",
        *SMALL,
        "--seeds",
        "0-3",
        "--workers",
        "2",
        "--set",
        "train.tokens=2048000",
        "--out",
        str(tmp_path),
        "--resume",
    )
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert sorted(r["seed"] for r in read_records(tmp_path)) == [0, 1, 2, 3]


def test_a_corrupt_checkpoint_says_how_to_restart_the_run(tmp_path, capsys):

    budget = ["--set", "train.tokens=819200"]
    proc = gapt_bench("run", *SMALL, "--seeds", "0", *budget, "--out", str(tmp_path), "--checkpoint-every", "20")
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("runs/*/checkpoint.pt")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (ckpt,) = tmp_path.glob("runs/*/checkpoint.pt")
    ckpt.write_bytes(b"not a checkpoint")
    assert cli.main(["run", *SMALL, "--seeds", "0", *budget, "--out", str(tmp_path), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "cannot be read" in err and f"rm -r {ckpt.parent}" in err
    assert ckpt.exists() and not (tmp_path / "runs.jsonl").exists()  # nothing recorded, nothing deleted


def test_gate_with_nothing_compared_is_not_a_pass(tmp_path, capsys):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps(_record(1)) + "\n")
    b.write_text(json.dumps({**_record(1), "task": "other"}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli.main(["regression", "--baseline", str(a), "--candidate", str(b)]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert cli.main(["regression", "--baseline", str(a), "--candidate", str(empty)]) == 2
    assert cli.main(["regression", "--baseline", str(empty), "--candidate", str(a), "--strict"]) == 2
    assert cli.main(["compare", str(a), str(b)]) == 2


# ----------------------------------------------------------------------------------------------------------------
# Readers that do not crash


DAMAGED = [
    {"schema_version": "1"},
    {"metrics": "x"},
    {"task": None},
    {"task": 3},
    {"method": None},
    {"config_hash": None},
    {"status": "weird"},
    {"seed": -1},
    {"seed": 1.5},
    {"config": "x"},
    {"metrics": {"a": "high"}},
]


def test_hand_edited_lines_are_skipped_and_every_reader_works(tmp_path, capsys):
    assert cli.main(["run", *SMALL, "--seeds", "0,1", "--methods", "baseline,gapt", "--out", str(tmp_path)]) == 0
    good = read_records(tmp_path)[0]
    with open(tmp_path / "runs.jsonl", "a") as f:
        for change in DAMAGED:
            rec = {**good, "seed": 9, **change}
            f.write(json.dumps(rec) + "\n")
        f.write(json.dumps({k: v for k, v in good.items() if k != "method"}) + "\n")
    capsys.readouterr()
    for verb in (
        ["report", str(tmp_path)],
        ["leaderboard", str(tmp_path)],
        ["paper", str(tmp_path)],
        ["report", str(tmp_path), "--format", "json"],
    ):
        with pytest.warns(UserWarning, match="skipped an unreadable record"):
            assert cli.main(verb) == 0, verb
    assert len(read_records(tmp_path, warn=False)) == 4


@pytest.mark.parametrize("verb", ["report", "leaderboard", "paper", "plot"])
def test_readers_on_empty_missing_or_folder_results_exit_2(tmp_path, capsys, verb):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "runs.jsonl").write_text("")
    folder = tmp_path / "folder"
    (folder / "runs.jsonl").mkdir(parents=True)
    for where in (empty, folder, tmp_path / "missing"):
        assert cli.main([verb, str(where)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gapt-bench: error: ") and err.count("\n") == 1, err


def test_plots_into_an_unwritable_place_exit_2(tmp_path, capsys):
    assert cli.main(["run", *SMALL, "--seeds", "0", "--out", str(tmp_path / "r")]) == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (
        ["plot", str(tmp_path / "r"), "--out", str(blocker / "plots")],
        ["report", str(tmp_path / "r"), "--plots", str(blocker / "plots")],
    ):
        capsys.readouterr()
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and err.strip().count("\n") == 0


# ----------------------------------------------------------------------------------------------------------------
# Full disk


def test_a_short_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from gapt_bench.results import store

    append_record(tmp_path, _record(1))
    before = (tmp_path / "runs.jsonl").read_bytes()
    real_write = os.write
    monkeypatch.setattr(store.os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(store.DiskFullError, match="disk full"):
        append_record(tmp_path, _record(2))
    monkeypatch.setattr(store.os, "write", real_write)
    assert (tmp_path / "runs.jsonl").read_bytes() == before
    append_record(tmp_path, _record(3))
    assert [r["run_id"] for r in read_records(tmp_path)] == ["r1", "r3"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 300 KB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_says_so_in_one_line_and_leaves_no_debris(tiny_disk):
    out = tiny_disk / "r"
    proc = gapt_bench("run", *SMALL, "--seeds", "0-19", "--out", str(out), "--checkpoint-every", "10")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err.count("\n") == 1 and "disk full" in err and "--resume" in err, err
    assert not list(tiny_disk.rglob("*.tmp"))
    text = (out / "runs.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
    for state in out.glob("runs/*/state.json"):  # a folder left "running" must be resumable
        if json.loads(state.read_text())["status"] == "running":
            assert (state.parent / "checkpoint.pt").exists()


def test_a_control_whose_reference_diverged_leaves_no_record_and_the_command_fails(tmp_path, capsys):
    # gapt diverges in wave 1; its matched periodic control has no schedule to copy: it is not run and not recorded
    # as failed (a later --resume is refused by the plan check with the reason, rather than training it blind)
    args = ["run", *SMALL, "--methods", "gapt,periodic", "--seeds", "0", "--set", "train.diverge_grad_norm=1e-12"]
    code = cli.main([*args, "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "periodic seed 0 not run: the gapt run it is matched to has no ok record" in err
    assert [(r["method"], r["status"]) for r in read_records(tmp_path)] == [("gapt", "diverged")]
    assert cli.main([*args, "--out", str(tmp_path), "--resume"]) == 2
    assert "recorded as diverged" in capsys.readouterr().err


def test_a_control_whose_reference_trains_in_a_concurrent_sweep_is_left_to_that_sweep(tmp_path, capsys):
    # another sweep holds the gapt run's claim: this sweep skips it, and skips its matched control too (the other
    # sweep's second wave runs it) instead of failing or recording it as failed
    from gapt_bench.data.claims import try_claim
    from gapt_bench.launch.plan import make_plan, run_key

    plan = make_plan(["synthetic_capacity"], ["gapt", "periodic"], [0], "tiny")
    gapt = next(c for c in plan if c.method == "gapt")
    claim, _ = try_claim(tmp_path, run_key(gapt), heartbeat=False)
    assert claim is not None
    try:
        args = ["run", *SMALL, "--methods", "gapt,periodic", "--seeds", "0", "--workers", "1", "--no-progress"]
        assert cli.main([*args, "--out", str(tmp_path)]) == 0
    finally:
        claim.release()
    out = capsys.readouterr().out
    assert "waits for its gapt run, training in pid" in out
    assert not (tmp_path / "runs.jsonl").exists() or read_records(tmp_path) == []
