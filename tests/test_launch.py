"""Sweeps beyond one machine (gapt_bench/launch/): submitit jobs on the local executor (real subprocesses, no
Slurm), the sbatch file of a Slurm GPU sweep, the DDP rendezvous from a job's environment, a store that loses no
record when many writers finish at once (also where flock does nothing), and `gapt-bench status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import submitit  # the [test] extra installs it: a missing one is a broken install, not a skip
from factories import make_record

from gapt_bench import cli
from gapt_bench.data.claims import try_claim
from gapt_bench.launch import cluster, options
from gapt_bench.launch import job as launch_job
from gapt_bench.results.store import RECORDS_DIR, append_record, read_records, read_store
from gapt_bench.training import distributed

TINY = ["--tasks", "synthetic_capacity", "--preset", "tiny"]
QUIET = ["--no-report", "--no-progress"]
LONG = ["--set", "train.tokens=819200"]  # 800 steps: a run long enough to stop in the middle


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def gapt_bench(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gapt_bench", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _metrics(out: Path) -> dict:
    return {(r["task"], r["method"], r["config_hash"], r["seed"]): r["metrics"] for r in read_records(out)}


def _jobs(out: Path) -> list[dict]:
    path = out / "submitit" / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ----------------------------------------------------------------------------------------------------------------
# Options and the Slurm batch file


def test_launcher_options_from_a_file_with_flags_overriding(tmp_path):
    cfg = tmp_path / "launcher.yaml"
    cfg.write_text(
        "launcher: submitit\npartition: gpu\naccount: proj\ntimeout-min: 600\ngpus_per_node: 1\n"
        "slurm:\n  constraint: a100\n  mail_type: END\nsetup: [source /env/bin/activate]\n"
    )
    launcher, opts = options.resolve_launcher(
        None, str(cfg), {"partition": "preempt", "slurm": {"constraint": "h100"}, "array_parallelism": 4, "setup": []}
    )
    assert launcher == "submitit"
    assert (opts.partition, opts.account, opts.timeout_min, opts.gpus_per_node, opts.array_parallelism) == (
        "preempt",
        "proj",
        600,
        1,
        4,
    )
    assert opts.slurm == {"constraint": "h100", "mail-type": "END"} and opts.setup == ["source /env/bin/activate"]
    assert opts.tasks() == 1 and opts.threads() == 1
    assert options.resolve_launcher("submitit-local", str(cfg), {})[0] == "submitit-local"  # the flag wins
    assert options.resolve_launcher(None, None, {}) == ("local", options.LauncherOptions())


BAD_LAUNCHER_INPUT = [
    (["--partition", "gpu"], "applies to --launcher submitit"),  # a cluster option without a cluster launcher
    (["--launcher", "submitit-local", "--workers", "2"], "--array-parallelism"),
    (["--launcher", "submitit-local", "--nodes", "2"], "--nodes must be 1"),
    (["--launcher", "submitit", "--gpus-per-node", "-1"], "gpus_per_node must be >= 0"),
    (["--launcher", "submitit", "--slurm-opt", "constraint"], "KEY=VALUE"),
    (["--launcher-config", "CFG:nope: 1"], "unknown option 'nope'"),
    (["--launcher-config", "CFG:timeout_min: soon"], "timeout_min must be a whole number"),
    (["--launcher-config", "CFG:- a list"], "must be a mapping"),
    (["--dry-run"], "--dry-run applies"),
]


@pytest.mark.parametrize("argv,message", BAD_LAUNCHER_INPUT, ids=[" ".join(a) for a, _ in BAD_LAUNCHER_INPUT])
def test_bad_launcher_input_exits_2_with_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    if argv[0] == "--launcher-config":
        path = tmp_path / "l.yaml"
        path.write_text(argv[1][4:] + "\n")
        argv = ["--launcher-config", str(path)]
    out = tmp_path / "out"
    assert cli.main(["run", *TINY, "--seeds", "0", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gapt-bench: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def _sbatch_lines(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("#SBATCH --")]
    return dict(ln[len("#SBATCH --") :].split("=", 1) if "=" in ln else (ln[len("#SBATCH --") :], True) for ln in lines)


def test_the_sbatch_file_of_a_typical_gpu_sweep(tmp_path):
    """What reaches sbatch: submitit's own SlurmExecutor renders the batch file of the array (nothing submitted)."""
    _, opts = options.resolve_launcher(
        "submitit",
        None,
        {
            "partition": "gpu",
            "account": "lm-proj",
            "timeout_min": 720,
            "gpus_per_node": 1,
            "cpus_per_task": 8,
            "mem_gb": 64,
            "array_parallelism": 4,
            "qos": "high",
            "slurm": {"constraint": "a100", "mail-type": "END"},
            "setup": ["source /shared/venv/bin/activate"],
        },
    )
    ex = cluster.slurm_executor(tmp_path / "submitit", opts, preview=True)
    text = cluster.batch_file_text(ex, n_jobs=12)
    flags = _sbatch_lines(text)
    assert flags["partition"] == "gpu" and flags["account"] == "lm-proj" and flags["qos"] == "high"
    assert flags["time"] == "720" and flags["gpus-per-node"] == "1" and flags["cpus-per-task"] == "8"
    assert flags["mem"] == "64GB" and flags["nodes"] == "1" and flags["ntasks-per-node"] == "1"
    assert flags["array"] == "0-11%4"  # one job per run, at most 4 at once
    assert flags["constraint"] == "a100" and flags["mail-type"] == "END"  # passed through
    assert flags["signal"].startswith("USR2@")  # the preemption/timeout warning the job checkpoints on
    assert flags["job-name"] == "gapt-bench" and flags["output"].endswith("%A_%a_0_log.out")
    assert "source /shared/venv/bin/activate" in text and "submitit.core._submit" in text
    assert "dependency" not in flags
    # the matched controls' array waits for the first array to end
    ctl = _sbatch_lines(
        cluster.batch_file_text(
            cluster.slurm_executor(tmp_path / "submitit", opts, "afterany:4242", preview=True), n_jobs=3
        )
    )
    assert ctl["dependency"] == "afterany:4242" and ctl["array"] == "0-2%3"
    # one large run on 2 x 8 GPUs: one job of 2 nodes, 8 tasks (DDP ranks) per node
    _, big = options.resolve_launcher("submitit", None, {"nodes": 2, "gpus_per_node": 8, "partition": "gpu"})
    flags = _sbatch_lines(cluster.batch_file_text(cluster.slurm_executor(tmp_path / "s", big, preview=True), 1))
    assert (flags["nodes"], flags["gpus-per-node"], flags["ntasks-per-node"]) == ("2", "8", "8")
    assert "array" not in flags


def test_dry_run_prints_the_waves_and_the_sbatch_file(tmp_path, capsys):
    argv = [
        "run",
        *TINY,
        "--methods",
        "gapt,periodic",
        "--seeds",
        "0-1",
        "--out",
        str(tmp_path / "o"),
        "--launcher",
        "submitit",
        "--partition",
        "gpu",
        "--gpus-per-node",
        "1",
        "--array-parallelism",
        "2",
        "--dry-run",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 of 4 runs would be submitted" in out and "wave 2: 2 matched control(s) after wave 1" in out
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --partition=gpu" in out
    assert "#SBATCH --dependency=afterany:WAVE1_ARRAY_ID" in out
    assert not (tmp_path / "o").exists()


def test_a_slurm_submission_prints_job_ids_logs_and_how_to_follow_them(fake_slurm, tmp_path, capsys):
    """Against a stand-in sbatch (and srun, so that submitit picks Slurm): two arrays, the controls' one depending
    on the first; the command returns at once, saying where the jobs and their logs are."""
    out = tmp_path / "r"
    plan = [*TINY, "--methods", "gapt,periodic", "--seeds", "0-1"]
    assert (
        cli.main(
            [
                "run",
                *plan,
                "--out",
                str(out),
                "--launcher",
                "submitit",
                "--partition",
                "gpu",
                "--array-parallelism",
                "1",
                *QUIET,
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "submitted 2 runs as Slurm job array 4101" in text
    assert (
        "submitted 2 matched controls as Slurm job array 4102, after array 4101 ends (--dependency=afterany:4101)"
    ) in text
    assert "squeue -j 4101,4102" in text and f"tail -f {out.absolute()}/submitit/4101_0_0_log.out" in text
    assert f"gapt-bench status {out} --tasks synthetic_capacity --methods gapt,periodic --seeds 0-1" in text
    first, second = (
        _sbatch_lines((tmp_path / "sbatch_4101.sh").read_text()),
        _sbatch_lines((tmp_path / "sbatch_4102.sh").read_text()),
    )
    assert first["array"] == "0-1%1" and first["partition"] == "gpu" and "dependency" not in first
    assert second["dependency"] == "afterany:4101"
    assert [j["job_id"] for j in _jobs(out)] == ["4101_0", "4101_1", "4102_0", "4102_1"]
    assert not (out / "runs.jsonl").exists()  # nothing ran here
    # status names each run's last job and log; the resubmit command keeps the launcher
    assert cli.main(["status", str(out), *plan]) == 1
    text = capsys.readouterr().out
    assert "missing 4" in text and "[last job 4101_0, log " in text and "still queued?" in text
    assert f"--launcher submitit --launcher-config {out}/submitit/launcher.yaml --resume" in text


def test_resubmitting_before_the_jobs_start_queues_nothing_twice(fake_slurm, tmp_path, capsys):
    """Runs whose last job is still in the Slurm queue are left to it: status says "queued", a resubmission sends
    only the others, and its controls wait for the queued runs they copy too. Without squeue, all go again."""
    out = tmp_path / "r"
    plan = [*TINY, "--methods", "gapt,periodic", "--seeds", "0-1"]
    run = ["run", *plan, "--out", str(out), "--launcher", "submitit", "--partition", "gpu", *QUIET]
    assert cli.main(run) == 0  # arrays 4101 (gapt seeds 0, 1) and 4102 (periodic, after 4101)
    capsys.readouterr()
    # seed 0's two jobs still wait in the queue; seed 1's left it without a record (cancelled, a lost node)
    (tmp_path / "queue").write_text("4101_0 PENDING\n4102_0 PENDING\n9999_3 RUNNING\n")
    assert cli.main(["status", str(out), *plan]) == 1
    text = capsys.readouterr().out
    assert "queued 2" in text and "missing 2" in text and "Slurm job 4101_0: PENDING" in text
    assert "resubmit the 2 missing or failed run(s)" in text
    assert cli.main([*run, "--resume"]) == 0
    text = capsys.readouterr().out
    assert "left 2 run(s) to their earlier Slurm jobs, still in the queue: 4101_0, 4102_0" in text
    assert "submitted 1 runs as Slurm job array 4103" in text
    assert "submitted 1 matched controls as Slurm job array 4104, after arrays 4103, 4101 end" in text
    # (submitit sends a one-job array as a plain job: its id has no _index)
    assert [(j["job_id"], j["key"][1], j["key"][3]) for j in _jobs(out)][4:] == [
        ("4103", "gapt", 1),
        ("4104", "periodic", 1),
    ]
    assert _sbatch_lines((tmp_path / "sbatch_4104.sh").read_text())["dependency"] == "afterany:4103:4101"
    # everything submitted is in the queue now: nothing to submit
    (tmp_path / "queue").write_text("4101_0 PENDING\n4102_0 PENDING\n4103 RUNNING\n4104 PENDING\n")
    assert cli.main([*run, "--resume"]) == 0
    text = capsys.readouterr().out
    assert text.count(": queued as Slurm job ") == 4
    assert "skip  synthetic_capacity/periodic/seed1: queued as Slurm job 4104 (PENDING)" in text
    assert not (tmp_path / "sbatch_4105.sh").exists()
    # squeue gone (or failing): nothing is known to be queued, so all four go out again (claims still keep any
    # run from being trained twice)
    (tmp_path / "bin" / "squeue").unlink()
    assert cli.main([*run, "--resume"]) == 0
    assert "submitted 2 runs as Slurm job array 4105" in capsys.readouterr().out


def test_waiting_for_slurm_jobs_looks_every_poll_s(monkeypatch):
    class FakeJob:  # ends after `polls` looks
        def __init__(self, polls: int) -> None:
            self.polls = polls

        def done(self) -> bool:
            self.polls -= 1
            return self.polls < 0

    jobs = [cluster.SubmittedJob(None, f"77_{i}", Path("o"), Path("e"), 1) for i in range(2)]  # type: ignore[arg-type]
    sub = cluster.Submission(
        "submitit", "slurm", Path("f"), Path("o"), jobs=jobs, handles={"77_0": FakeJob(0), "77_1": FakeJob(2)}
    )
    sleeps: list[float] = []
    monkeypatch.setattr(cluster.time, "sleep", sleeps.append)
    monkeypatch.setattr(cluster, "job_outcome", lambda job, s: s.job_id)
    seen: list = []
    cluster._wait_all(sub, lambda cfg, outcome: seen.append(outcome), poll_s=2.5)
    assert sleeps == [2.5, 2.5] and seen == sub.outcomes == ["77_0", "77_1"] and sub.waited


def test_the_job_environment_gives_the_ddp_rendezvous(monkeypatch):
    """Rank 9 of a 2-node x 8-task Slurm job: the torch.distributed variables DDP reads (gapt_bench.training.distributed)."""
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "777",
        "SLURM_NTASKS": "16",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_PROCID": "9",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[003-004]",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    got = launch_job.torch_dist_env()
    assert {k: got[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == {
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu003",
    }
    assert (
        20000 <= int(got["MASTER_PORT"]) <= 60000 and launch_job.torch_dist_env()["MASTER_PORT"] == got["MASTER_PORT"]
    )
    for k, v in got.items():
        monkeypatch.setenv(k, v)
    info = distributed.env_info()
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (9, 16, 1, 8)
    # a one-node job meets on the loopback address
    for k, v in {
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "1",
        "SLURM_JOB_NODELIST": "gpu003",
    }.items():
        monkeypatch.setenv(k, v)
    one = launch_job.torch_dist_env()
    assert (one["MASTER_ADDR"], one["WORLD_SIZE"], one["LOCAL_WORLD_SIZE"]) == ("127.0.0.1", "2", "2")


# ----------------------------------------------------------------------------------------------------------------
# The store on a shared filesystem

WRITER = r"""
import fcntl, os, random, sys, time
out, start, n, nfs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "nfs"
sys.path.insert(0, sys.argv[5])
from factories import make_record
from gapt_bench.results import store
if nfs:  # NFS without working locks: flock does nothing, and appends are not atomic across clients
    fcntl.flock = lambda fd, op: None
    real_open, real_write = os.open, os.write
    rng = random.Random(start)
    def nfs_open(path, flags, mode=0o777, *a, **kw):
        return real_open(path, flags & ~os.O_APPEND, mode, *a, **kw)
    def nfs_write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("runs.jsonl"):
            return real_write(fd, data)
        end = os.fstat(fd).st_size  # the client's idea of the end of the file, soon stale
        time.sleep(rng.uniform(0, 0.003))
        os.lseek(fd, end, os.SEEK_SET)
        half = len(data) // 2
        first = real_write(fd, data[:half])
        time.sleep(rng.uniform(0, 0.002))
        return first + real_write(fd, data[half:])
    os.open, os.write = nfs_open, nfs_write
for i in range(start, start + n):
    rec = make_record(task="t", method="m", seed=i, metrics={"a": float(i)}, data={"pad": "x" * 300})
    store.append_record(out, {**rec, "run_id": f"r{i}", "config_hash": "h"})
"""


def _writers(out: Path, mode: str, procs: int = 8, each: int = 50) -> None:
    tests = str(Path(__file__).parent)
    ps = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(out), str(k * 1000), str(each), mode, tests],
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(procs)
    ]
    for p in ps:
        assert p.wait(timeout=120) == 0, p.stderr.read()


@pytest.mark.parametrize("mode", ["local", "nfs"])
def test_many_writers_finishing_together_lose_no_record(tmp_path, mode):
    """8 processes append 50 records each at once. With flock a no-op and appends landing at stale offsets (what an
    NFS client without locks does), runs.jsonl may lose or tear lines, but every record is also its own file
    (atomic rename): readers lose nothing, and `compact` rewrites runs.jsonl whole."""
    _writers(tmp_path, mode)
    want = {f"r{k * 1000 + i}" for k in range(8) for i in range(50)}
    assert {p.stem for p in (tmp_path / RECORDS_DIR).glob("*.json")} == want
    assert not list(tmp_path.rglob("*.tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if mode == "nfs" else "error")  # torn lines warn; locally none may exist
        contents = read_store(tmp_path)
    assert {r["run_id"] for r in contents.records} == want and len(contents.records) == 400
    assert all(r["metrics"]["a"] == float(r["seed"]) for r in contents.records)  # no record is torn
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    if mode == "local":
        assert len(lines) == 400 and not contents.damaged_lines
    else:
        from gapt_bench.results.store import compact

        assert sum(1 for line in lines if _parses(line)) < 400  # the simulation does lose lines of runs.jsonl
        n, backup = compact(tmp_path)
        assert n == 400 and backup is not None and backup.exists()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(read_records(tmp_path)) == 400
        assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 400


def _parses(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _rec(i: int, **kw) -> dict:
    return {
        **make_record(task="t", method="m", seed=i, metrics={"a": float(i)}),
        "run_id": f"r{i}",
        "config_hash": "h",
        **kw,
    }


def test_record_files_are_read_when_runs_jsonl_lacks_them(tmp_path, monkeypatch):
    from gapt_bench.results import store

    append_record(tmp_path, _rec(1))
    # a writer that died between its rename and its append: the record exists as a file only
    (tmp_path / RECORDS_DIR / "r2.json").write_text(json.dumps(_rec(2)))
    assert [r["run_id"] for r in read_records(tmp_path)] == ["r1", "r2"]
    assert store.finished_keys(tmp_path) == {("t", "m", "h", 1), ("t", "m", "h", 2)}
    # a damaged record file is skipped with a warning naming it
    (tmp_path / RECORDS_DIR / "bad.json").write_text('{"task": "t", "metr')
    with pytest.warns(UserWarning, match=r"bad.json: skipped"):
        assert len(read_records(tmp_path)) == 2
    (tmp_path / RECORDS_DIR / "bad.json").unlink()
    # records without any runs.jsonl still read (and an empty folder is still "no results")
    (tmp_path / "runs.jsonl").unlink()
    assert [r["run_id"] for r in read_records(tmp_path)] == ["r1", "r2"]
    # a failed append of the line takes the record file back: nothing half written
    real_write = os.write

    def fail_on_runs(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("runs.jsonl"):
            return real_write(fd, data[: len(data) // 2])
        return real_write(fd, data)

    monkeypatch.setattr(store.os, "write", fail_on_runs)
    with pytest.raises(store.DiskFullError):
        append_record(tmp_path, _rec(3))
    monkeypatch.setattr(store.os, "write", real_write)
    assert not (tmp_path / RECORDS_DIR / "r3.json").exists() and not list(tmp_path.rglob("*.tmp"))
    assert [r["run_id"] for r in read_records(tmp_path)] == ["r1", "r2"]


def test_a_requeued_job_takes_over_its_own_claim(tmp_path, monkeypatch):
    from gapt_bench.data import claims as run_claims

    key = ("t", "m", "h", 0)
    path = run_claims.claim_path(tmp_path, key)
    path.parent.mkdir(parents=True)
    # an earlier incarnation of job 55_3 on another node, still fresh (heartbeat a moment ago)
    path.write_text(json.dumps({"host": "node-17", "pid": 4242, "job": "55_3", "key": list(key)}))
    assert try_claim(tmp_path, key, heartbeat=False)[0] is None  # another process's claim: live
    monkeypatch.setenv(run_claims.JOB_ENV, "55_3")
    claim, owner = try_claim(tmp_path, key, heartbeat=False)
    assert claim is not None and owner is None
    assert json.loads(path.read_text())["job"] == "55_3"
    claim.release()


# ----------------------------------------------------------------------------------------------------------------
# status


def test_status_lists_every_state_and_the_resubmit_command(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["run", *TINY, "--methods", "baseline", "--seeds", "0", "--out", str(out), *QUIET]) == 0
    done = read_records(out)[0]
    append_record(out, {**done, "seed": 1, "run_id": "done-1"})
    append_record(
        out,
        {
            **done,
            "seed": 2,
            "run_id": "failed-2",
            "status": "failed",
            "metrics": {},
            "error": {"message": "RuntimeError: evaluation exploded"},
        },
    )
    append_record(
        out,
        {
            **done,
            "seed": 3,
            "run_id": "diverged-3",
            "status": "diverged",
            "error": {"message": "diverged at step 3: gradient norm 1e9"},
        },
    )
    key = (done["task"], done["method"], done["config_hash"])
    claim, _ = try_claim(out, (*key, 4), heartbeat=False)  # seed 4 is being trained right now (by this process)
    run_dir = out / "runs" / "interrupted-5"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({"key": [*key, 5], "status": "running"}))
    (run_dir / "checkpoint.pt").write_bytes(b"x")
    capsys.readouterr()
    try:
        assert (
            cli.main(
                ["status", str(out), *TINY, "--methods", "baseline", "--seeds", "0-6", "--set", "train.log_every=10"]
            )
            == 1
        )
    finally:
        claim.release()
    text = capsys.readouterr().out
    assert "7 runs in the plan" in text and "done 2   running 1   queued 0   failed 1   diverged 1   missing 2" in text
    rows = {
        line.split()[3]: line
        for line in text.splitlines()
        if line.split()[:1] in (["done"], ["running"], ["failed"], ["diverged"], ["missing"]) and len(line.split()) > 4
    }
    assert rows["0"].startswith("done") and rows["1"].startswith("done")
    assert rows["2"].startswith("failed") and "evaluation exploded" in rows["2"]
    assert rows["3"].startswith("diverged") and "gradient norm" in rows["3"]
    assert rows["4"].startswith("running") and f"pid {os.getpid()}" in rows["4"]
    assert rows["5"].startswith("missing") and "checkpoint kept" in rows["5"]
    assert rows["6"].startswith("missing") and "not started" in rows["6"]
    assert (
        f"gapt-bench run --tasks synthetic_capacity --methods baseline --seeds 0-6 --preset tiny "
        f"--set train.log_every=10 --out {out} --resume"
    ) in text
    assert "1 diverged run(s) are final" in text
    # complete: exit 0
    assert cli.main(["status", str(out), *TINY, "--methods", "baseline", "--seeds", "0-1"]) == 0
    assert "all runs are done" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------
# Jobs on submitit's local executor (real subprocesses)


def test_a_submitit_local_sweep_lands_every_record_and_a_resubmission_runs_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [
        "run",
        *TINY,
        "--methods",
        "baseline,gapt",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--launcher",
        "submitit-local",
        "--array-parallelism",
        "2",
        *QUIET,
    ]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    recs = read_records(out)
    assert sorted((r["method"], r["status"]) for r in recs) == [("baseline", "ok"), ("gapt", "ok")]
    jobs = _jobs(out)
    assert len(jobs) == 2 and all(Path(j["stdout"]).exists() for j in jobs)
    assert "start job" in stdout and "gapt-bench status" in stdout
    assert (out / "submitit" / "launcher.yaml").exists()
    # the same sweep again: every run is recorded, no job is started
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("already recorded") == 2 and "start job" not in stdout
    assert len(_jobs(out)) == 2 and len((out / "runs.jsonl").read_text().splitlines()) == 2
    assert cli.main(["status", str(out), *TINY, "--methods", "baseline,gapt", "--seeds", "0"]) == 0


@pytest.mark.slow
def test_the_issue_sweep_through_submitit_local_matches_a_plain_run(tmp_path):
    """--tasks synthetic_capacity --preset tiny --methods baseline,gapt --seeds 0-1: every record lands, with the
    metrics of the same sweep run in one process; resubmitting it runs nothing."""
    plan = [*TINY, "--methods", "baseline,gapt", "--seeds", "0-1"]
    out, ref = tmp_path / "jobs", tmp_path / "ref"
    proc = gapt_bench("run", *plan, "--out", str(out), "--launcher", "submitit-local", *QUIET)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr
    assert cli.main(["run", *plan, "--out", str(ref), "--workers", "1", *QUIET]) == 0
    assert _metrics(out) == _metrics(ref) and len(_metrics(out)) == 4
    again = gapt_bench("run", *plan, "--out", str(out), "--launcher", "submitit-local", *QUIET)
    stdout, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and stdout.count("already recorded") == 4 and len(_jobs(out)) == 4


@pytest.mark.slow
def test_matched_controls_start_after_the_run_they_copy(tmp_path):
    out = tmp_path / "m"
    proc = gapt_bench(
        "run",
        *TINY,
        "--methods",
        "gapt,periodic",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--launcher",
        "submitit-local",
        "--array-parallelism",
        "2",
        *QUIET,
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    by = {r["method"]: r for r in read_records(out)}
    assert by["periodic"]["summary"]["matched_to"] == by["gapt"]["run_id"]
    assert by["periodic"]["started_at"] >= by["gapt"]["finished_at"]
    assert [j["wave"] for j in _jobs(out)] == [1, 2]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_preempted_job_checkpoints_is_requeued_and_ends_with_the_uninterrupted_metrics(tmp_path):
    """The preemption signal (USR2, what Slurm sends) to a running job: the run checkpoints at its next step,
    submitit requeues the job, and the requeued job resumes to the same metrics as an uninterrupted run."""
    from gapt_bench.launch.plan import make_plan

    overrides = ["train.tokens=819200"]
    ref = tmp_path / "ref"
    assert (
        cli.main(
            ["run", *TINY, "--methods", "baseline", "--seeds", "0", *LONG, "--out", str(ref), "--workers", "1", *QUIET]
        )
        == 0
    )
    out = tmp_path / "jobs"
    (cfg,) = make_plan(["synthetic_capacity"], ["baseline"], [0], "tiny", overrides)
    opts = options.LauncherOptions(poll_s=0.2)
    ex = submitit.LocalExecutor(folder=out / "submitit")
    ex.update_parameters(timeout_min=30)
    job = ex.submit(
        launch_job.RunJob(),
        launch_job.job_spec(cfg, out, overrides=overrides, includes=[], checkpoint_every=0, opts=opts),
    )
    _wait_for(
        lambda: any(len(p.read_text().splitlines()) >= 3 for p in out.glob("runs/*/curve.jsonl")),
        120,
        "the run to train a few steps",
    )
    assert launch_job.preempt(job)
    result = job.result()
    assert result["record"]["status"] == "ok"
    (run_dir,) = (out / "runs").iterdir()
    log = (run_dir / "log.txt").read_text()
    assert "checkpoint written" in log and "resumed from step" in log
    assert "Requeued job" in job.stdout()  # submitit requeued it (preempted, not timed out)
    assert _metrics(out) == _metrics(ref)
    steps = [json.loads(line)["step"] for line in (run_dir / "curve.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def _task_processes(out: Path) -> list[int]:
    """The job processes (submitit.core._submit) working for results folder `out`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "submitit.core._submit" in text and str(out) in text:
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.slow
def test_a_killed_job_resumes_when_the_sweep_is_submitted_again(tmp_path):
    """SIGKILL of a job's process mid-run (a lost node): the sweep reports it; the same command again resumes the
    run from its last checkpoint to the metrics of an uninterrupted run."""
    plan = [*TINY, "--methods", "baseline", "--seeds", "0", *LONG]
    ref, out = tmp_path / "ref", tmp_path / "jobs"
    assert cli.main(["run", *plan, "--out", str(ref), "--workers", "1", *QUIET]) == 0
    argv = ["run", *plan, "--out", str(out), "--launcher", "submitit-local", "--checkpoint-every", "50", *QUIET]
    proc = gapt_bench(*argv)
    _wait_for(
        lambda: bool(list(out.glob("runs/*/checkpoint.pt"))) or proc.poll() is not None, 120, "a first checkpoint"
    )
    assert proc.poll() is None, "the run ended before it could be killed"
    (pid,) = _task_processes(out)
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "ended without a result" in stdout + stderr, stdout + stderr
    assert not (out / "runs.jsonl").exists()
    capture = subprocess.run(
        [sys.executable, "-m", "gapt_bench", "status", str(out), *plan], env=_env(), capture_output=True, text=True
    )
    assert capture.returncode == 1 and "checkpoint kept" in capture.stdout and "--resume" in capture.stdout
    again = gapt_bench(*argv)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stdout + stderr
    (run_dir,) = (out / "runs").iterdir()
    assert "resumed from step" in (run_dir / "log.txt").read_text()
    assert _metrics(out) == _metrics(ref)


@pytest.mark.slow
@pytest.mark.skipif(
    not (distributed.torch.distributed.is_available() and distributed.torch.distributed.is_gloo_available()),
    reason="needs gloo",
)
def test_one_run_as_a_two_task_ddp_job_on_gloo(tmp_path):
    """`--tasks-per-node 2`: one job, two processes, the rendezvous from the job's environment; the run trains with
    DDP on gloo and ends with the single-process metrics."""
    plan = [*TINY, "--methods", "gapt", "--seeds", "0"]
    out, ref = tmp_path / "ddp", tmp_path / "one"
    proc = gapt_bench("run", *plan, "--out", str(out), "--launcher", "submitit-local", "--tasks-per-node", "2", *QUIET)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    assert cli.main(["run", *plan, "--out", str(ref), "--workers", "1", *QUIET]) == 0
    (rec,), (want,) = read_records(out), read_records(ref)
    (run_dir,) = (out / "runs").iterdir()
    assert "world_size=2" in (run_dir / "log.txt").read_text()
    assert len(list((out / "submitit").glob("*_1_log.out"))) == 1  # the second rank's log
    assert rec["status"] == "ok" and rec["tokens"] == want["tokens"]
    for k, v in want["metrics"].items():
        assert rec["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
