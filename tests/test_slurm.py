"""The submitit launcher against a real one-node Slurm (tests/slurm_cluster.py, scripts/slurm-up): sweeps, status from
the real squeue, preemption and time limits requeued by submitit, failures, array parallelism and a DDP job, all
through the CLI as a user runs it. Opt-in: `pytest -m slurm` (a few minutes; CI runs scripts/ci/slurm.sh).

The runs are the tiny synthetic_capacity ones (64 steps). `slow_baseline`, a plug-in loaded with --include, is the
baseline that sleeps $GAPT_TEST_STEP_SLEEP_S after each step: the sleep sets how long a job runs without costing
CPU or changing a number, so its reference metrics come from the same config run at full speed on this machine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster_fixture  # noqa: F401  (the session fixture slurm_cluster)

pytestmark = pytest.mark.slurm

TINY = ["--tasks", "synthetic_capacity", "--preset", "tiny"]
QUIET = ["--no-report", "--no-progress"]

PLUGIN = """
import os
import time

from gapt_bench.methods import register_method
from gapt_bench.methods.baseline import Baseline


@register_method("slow_baseline")
class SlowBaseline(Baseline):
    description = "the baseline, asleep $GAPT_TEST_STEP_SLEEP_S seconds after each step (tests)"

    def observe(self, infos, step):
        time.sleep(float(os.environ.get("GAPT_TEST_STEP_SLEEP_S") or 0))


@register_method("broken")
class Broken(Baseline):
    description = "raises at step 2 (tests)"

    def loss(self, ce, hidden, step):
        if step >= 2:
            raise RuntimeError("broken on purpose at step 2")
        return super().loss(ce, hidden, step)
"""

# The time-limit job: a 2-minute limit and the stop signal 30 s before it. Slurm checks limits every 30 s and may
# signal up to that much earlier, so the signal comes 60-90 s into the job; at 1.4 s a step the run (64 steps,
# ~90 s plus ~20 s of start-up) is still training then, and resumes in the requeued job.
TIME_LIMIT = ["--timeout-min", "2", "--signal-delay-s", "30", "--max-timeouts", "5"]
TIME_LIMIT_STEP_S = "1.4"


# ----------------------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def env(slurm_cluster) -> dict:
    e = {
        **os.environ,
        "SLURM_CONF": slurm_cluster,
        "OMP_NUM_THREADS": "1",
        "CI": "1",
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    for var in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "GAPT_TEST_STEP_SLEEP_S",
    ):
        e.pop(var, None)
    return e


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The module's folder: the plug-in, the launcher config (look at the jobs every second), results."""
    d = tmp_path_factory.mktemp("slurm_tests")
    (d / "slurm_methods.py").write_text(PLUGIN)
    (d / "launcher.yaml").write_text("poll_s: 1\n")
    return d


def slurm_args(work: Path) -> list[str]:
    return ["--launcher", "submitit", "--partition", "debug", "--launcher-config", str(work / "launcher.yaml")]


def plugin(work: Path) -> list[str]:
    return ["--include", str(work / "slurm_methods.py")]


def gapt_bench(env: dict, *args: str, sleep: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    e = {**env, **({"GAPT_TEST_STEP_SLEEP_S": sleep} if sleep else {})}
    return subprocess.run(
        [sys.executable, "-m", "gapt_bench", *args], env=e, capture_output=True, text=True, timeout=timeout
    )


def gapt_bench_bg(env: dict, *args: str, sleep: str | None = None) -> subprocess.Popen:
    e = {**env, **({"GAPT_TEST_STEP_SLEEP_S": sleep} if sleep else {})}
    return subprocess.Popen(
        [sys.executable, "-m", "gapt_bench", *args], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def records(out: Path) -> list[dict]:
    path = out / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def jobs(out: Path) -> list[dict]:
    path = out / "submitit" / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def squeue(env: dict, *args: str) -> list[list[str]]:
    done = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines() if line.strip()]


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def curve_steps(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.glob("runs/*/curve.jsonl"))


def task_processes(out: Path) -> list[int]:
    """The pids of the job's Python processes (submitit.core._submit, not the srun that started them) working for
    results folder `out`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "submitit.core._submit" in text and str(out) in text and not text.split()[0].endswith("srun"):
            pids.append(int(cmdline.parent.name))
    return pids


def no_scheduler_noise(text: str) -> None:
    """Without accounting: one line says where the job states come from; no sacct error or warning per poll."""
    assert "sacct error" not in text, text
    assert not any(line.strip() == "Slurm accounting storage is disabled" for line in text.splitlines()), text
    assert text.count("job states come from squeue") == 1, text
    assert text.count("job logs: ") <= 1, text


def selected(request, prefix: str) -> bool:
    return any(item.name.startswith(prefix) for item in request.session.items)


@pytest.fixture(scope="module", autouse=True)
def background(request, env, work):
    """Started with the module, run beside its tests (when theirs are selected): the time-limit sweep (minutes,
    mostly asleep), waited for by the module's last test, and the uninterrupted reference run."""
    procs = {}
    if selected(request, "test_a_job_hitting_its_time_limit"):
        out = work / "time_limit"
        procs["time_limit"] = (
            gapt_bench_bg(
                env,
                "run",
                *TINY,
                *plugin(work),
                "--methods",
                "slow_baseline",
                "--seeds",
                "0",
                "--out",
                str(out),
                *slurm_args(work),
                *TIME_LIMIT,
                "--wait",
                *QUIET,
                sleep=TIME_LIMIT_STEP_S,
            ),
            out,
        )
    if selected(request, "test_a_job_hitting_its_time_limit") or selected(request, "test_a_preempted_job"):
        out = work / "reference"
        procs["reference"] = (
            gapt_bench_bg(
                env,
                "run",
                *TINY,
                *plugin(work),
                "--methods",
                "slow_baseline",
                "--seeds",
                "0",
                "--out",
                str(out),
                "--workers",
                "1",
                *QUIET,
            ),
            out,
        )
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def reference(background) -> dict:
    """The metrics of slow_baseline seed 0 (the preemption and time-limit runs' config), uninterrupted, here."""
    proc, out = background["reference"]
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    (rec,) = records(out)
    return rec["metrics"]


# ----------------------------------------------------------------------------------------------------------------
# A sweep: every record, status done, and a resubmission submits nothing


@pytest.fixture(scope="module")
def sweep(env, work):
    out = work / "sweep"
    plan = [*TINY, "--methods", "baseline,gapt", "--seeds", "0"]
    done = gapt_bench(env, "run", *plan, "--out", str(out), *slurm_args(work), "--wait", *QUIET)
    return plan, out, done


def test_a_sweep_lands_every_record_and_status_says_done(sweep, env):
    plan, out, done = sweep
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted((r["method"], r["status"]) for r in records(out)) == [("baseline", "ok"), ("gapt", "ok")]
    assert "submitted job array" in done.stdout and len(jobs(out)) == 2
    no_scheduler_noise(done.stdout + done.stderr)
    status = gapt_bench(env, "status", str(out), *plan)
    assert status.returncode == 0 and "done 2" in status.stdout and "all runs are done" in status.stdout, status.stdout


def test_resubmitting_a_finished_sweep_submits_nothing(sweep, env, work):
    plan, out, _ = sweep
    before = {job_id for job_id, _ in squeue(env)}
    again = gapt_bench(env, "run", *plan, "--out", str(out), *slurm_args(work), "--wait", *QUIET)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already recorded") == 2 and "submitted job array" not in again.stdout
    assert len(jobs(out)) == 2 and len(records(out)) == 2
    assert {job_id for job_id, _ in squeue(env)} <= before  # no new job reached Slurm


# ----------------------------------------------------------------------------------------------------------------
# status from the real queue; --array-parallelism 1


@pytest.fixture(scope="module")
def serial_sweep(env, work):
    """Two slow runs as one array of at most one job at a time, submitted without --wait; `status` every second
    until it says done."""
    out = work / "serial"
    plan = [*TINY, *plugin(work), "--methods", "slow_baseline", "--seeds", "1-2"]
    sub = gapt_bench(
        env, "run", *plan, "--out", str(out), *slurm_args(work), "--array-parallelism", "1", *QUIET, sleep="0.1"
    )
    assert sub.returncode == 0, sub.stdout + sub.stderr
    snapshots: list[tuple[int, str, list]] = []

    def finished() -> bool:
        st = gapt_bench(env, "status", str(out), *plan)
        snapshots.append((st.returncode, st.stdout, squeue(env)))
        return st.returncode == 0

    wait_for(finished, 300, "status to say done", every=1.0)
    return plan, out, sub, snapshots


def test_status_reads_the_real_squeue(serial_sweep):
    _, out, sub, snapshots = serial_sweep
    assert "submitted 2 runs as Slurm job array" in sub.stdout and "squeue -j" in sub.stdout
    array = jobs(out)[0]["job_id"].split("_")[0]
    texts = [text for _, text, _ in snapshots]
    # the second job waits in the queue (the array's limit) while the first runs
    assert any(re.search(rf"queued .* Slurm job {array}_1: PENDING", t) for t in texts), texts[:3]
    assert any(re.search(r"^running .*slow_baseline .* job " + array + "_0", t, re.M) for t in texts), texts
    assert any("queued 1" in t and "running 1" in t for t in texts), texts
    assert all(code == 1 for code, _, _ in snapshots[:-1]) and snapshots[-1][0] == 0
    assert "done 2" in texts[-1] and "all runs are done" in texts[-1]
    assert all("nothing to resubmit" in t or "resubmit the" not in t for t in texts[:-1])  # queued: not missing


def test_array_parallelism_1_never_runs_two_jobs_at_once(serial_sweep):
    _, out, _, snapshots = serial_sweep
    # the queue never showed two of the array's jobs running
    array = jobs(out)[0]["job_id"].split("_")[0]
    for _, _, queue in snapshots:
        assert sum(1 for job_id, state in queue if job_id.startswith(array + "_") and state == "RUNNING") <= 1
    # the records: one started after the other finished
    first, second = sorted(records(out), key=lambda r: r["started_at"])
    assert first["status"] == second["status"] == "ok" and second["started_at"] >= first["finished_at"]
    # the job logs (submitit's timestamps, to the millisecond): job 1 started after job 0 ended
    stamp = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - (Starting with|Exiting after)")
    spans = []
    for log in sorted((out / "submitit").glob(f"{array}_*_0_log.out")):
        marks = stamp.findall(log.read_text())
        starts = [t for t, what in marks if what == "Starting with"]
        ends = [t for t, what in marks if what == "Exiting after"]
        assert len(starts) == 1 and len(ends) == 1, log.read_text()
        spans.append((starts[0], ends[0]))
    assert len(spans) == 2
    (_, e0), (s1, _) = sorted(spans)
    assert e0 <= s1, spans


# ----------------------------------------------------------------------------------------------------------------
# Failures


def test_a_failing_job_shows_its_error_in_status_and_exits_non_zero(env, work):
    out = work / "broken"
    plan = [*TINY, *plugin(work), "--methods", "broken", "--seeds", "0"]
    done = gapt_bench(env, "run", *plan, "--out", str(out), *slurm_args(work), "--wait", *QUIET)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "did not finish ok" in done.stderr and "broken on purpose at step 2" in done.stdout + done.stderr
    no_scheduler_noise(done.stdout + done.stderr)
    status = gapt_bench(env, "status", str(out), *plan)
    assert status.returncode == 1 and "failed 1" in status.stdout, status.stdout
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("failed "))
    assert "RuntimeError: broken on purpose at step 2" in line and "[last job" in line, line
    assert "resubmit the 1 missing or failed run(s)" in status.stdout


def test_a_killed_job_ends_the_wait_and_status_says_how_to_resume(env, work):
    """A running job killed outright (SIGKILL, as the OOM killer or a lost node): it leaves no result file, so only
    the queue can tell it ended. --wait sees it leave the queue (squeue: sacct has no accounting to read) and exits
    1 naming the job; status lists the run as missing, with the command that resumes it."""
    out = work / "killed"
    plan = [*TINY, *plugin(work), "--methods", "slow_baseline", "--seeds", "3"]
    proc = gapt_bench_bg(
        env,
        "run",
        *plan,
        "--out",
        str(out),
        *slurm_args(work),
        "--checkpoint-every",
        "10",
        "--wait",
        *QUIET,
        sleep="0.5",
    )
    try:
        wait_for(lambda: list(out.glob("runs/*/checkpoint.pt")), 180, "the run's first checkpoint")
        (job,) = jobs(out)
        (pid,) = task_processes(out)
        os.kill(pid, signal.SIGKILL)  # the job's Python process, as the OOM killer or a lost node would
        t0 = time.time()
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stdout + stderr
    assert time.time() - t0 < 60
    assert f"job {job['job_id']} (log " in stdout + stderr and "ended without a result" in stdout + stderr
    no_scheduler_noise(stdout + stderr)
    status = gapt_bench(env, "status", str(out), *plan)
    assert status.returncode == 1 and "missing 1" in status.stdout, status.stdout
    assert "interrupted, checkpoint kept" in status.stdout and "--resume" in status.stdout, status.stdout


# ----------------------------------------------------------------------------------------------------------------
# Preemption and time limits: requeued by submitit, resumed to the uninterrupted metrics


def test_a_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_metrics(env, work, reference):
    out = work / "preempted"
    plan = [*TINY, *plugin(work), "--methods", "slow_baseline", "--seeds", "0"]
    proc = gapt_bench_bg(env, "run", *plan, "--out", str(out), *slurm_args(work), "--wait", *QUIET, sleep="0.2")
    try:
        wait_for(lambda: curve_steps(out) >= 1, 180, "the run to train 10 steps")
        (job,) = jobs(out)
        subprocess.run(["scancel", "--signal=USR2", "--full", job["job_id"]], env=env, check=True, timeout=30)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    (rec,) = records(out)  # exactly one record
    assert rec["status"] == "ok" and rec["metrics"] == reference
    (run_dir,) = (out / "runs").iterdir()
    log = (run_dir / "log.txt").read_text()
    assert "checkpoint written" in log and "resumed from step" in log, log
    job_log = (out / "submitit" / f"{job['job_id']}_0_log.out").read_text()
    assert "this job is preempted" in job_log and f"Requeued job {job['job_id']}" in job_log, job_log
    assert len(jobs(out)) == 1
    no_scheduler_noise(stdout + stderr)


# ----------------------------------------------------------------------------------------------------------------
# One run as a two-task DDP job


def test_a_ddp_job_through_slurm_matches_torchrun(env, work):
    plan = [*TINY, "--methods", "gapt", "--seeds", "0"]
    out, ref = work / "ddp", work / "torchrun"
    job = gapt_bench_bg(
        env, "run", *plan, "--out", str(out), *slurm_args(work), "--tasks-per-node", "2", "--wait", *QUIET
    )
    torchrun = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "gapt_bench",
            "run",
            *plan,
            "--out",
            str(ref),
            *QUIET,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stdout + stderr
    assert torchrun.returncode == 0, torchrun.stdout[-3000:] + torchrun.stderr[-3000:]
    (rec,), (want,) = records(out), records(ref)
    assert rec["status"] == want["status"] == "ok"
    assert rec["config_hash"] == want["config_hash"] and rec["tokens"] == want["tokens"]
    (submitted,) = jobs(out)
    assert (out / "submitit" / f"{submitted['job_id']}_1_log.out").exists()  # the second task's own log
    for folder in (out, ref):
        (run_dir,) = (folder / "runs").iterdir()
        assert "world_size=2" in (run_dir / "log.txt").read_text()
    assert set(rec["metrics"]) == set(want["metrics"])
    for k, v in want["metrics"].items():
        assert rec["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


# ----------------------------------------------------------------------------------------------------------------
# Last: the time-limit job submitted when the module started


def test_a_job_hitting_its_time_limit_is_requeued_and_resumes(background, reference):
    proc, out = background["time_limit"]
    stdout, stderr = proc.communicate(timeout=480)
    assert proc.returncode == 0, stdout + stderr
    (rec,) = records(out)
    assert rec["status"] == "ok" and rec["metrics"] == reference
    (run_dir,) = (out / "runs").iterdir()
    log = (run_dir / "log.txt").read_text()
    assert "checkpoint written" in log and "resumed from step" in log, log
    (job,) = jobs(out)
    job_log = (out / "submitit" / f"{job['job_id']}_0_log.out").read_text()
    assert "this job is timed-out" in job_log and f"Requeued job {job['job_id']}" in job_log, job_log
    sbatch = next((out / "submitit").glob("*_submission.sh")).read_text()
    assert "#SBATCH --time=2" in sbatch and "#SBATCH --signal=USR2@30" in sbatch
    no_scheduler_noise(stdout + stderr)
