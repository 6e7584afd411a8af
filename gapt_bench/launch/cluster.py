"""Sweeps beyond one machine: every run of a plan as one submitit job, on Slurm or as local processes.

Options: `gapt_bench.launch.options`; where a sweep stands (`gapt-bench status`): `gapt_bench.launch.status`; what
Slurm's queue says (squeue, and the job states `--wait` follows): `gapt_bench.launch.queue`.

    gapt-bench run <plan> --launcher submitit --partition gpu --gpus-per-node 1 --timeout-min 720   # Slurm
    gapt-bench run <plan> --launcher submitit-local                # the same jobs as processes on this machine
    gapt-bench run <plan> --launcher-config launcher.yaml          # the launcher's options from a file
    gapt-bench status OUT <plan>                       # done / running / queued / failed / diverged / missing

`--launcher submitit` uses Slurm when `srun` is on the PATH (what submitit's AutoExecutor picks) and submitit's
local executor otherwise; `submitit-local` always uses the local executor (real subprocesses, no Slurm).

Submitting. The store decides what runs: finished keys (ok or diverged) are never submitted again, and keys with a
live claim (trained right now by another job or sweep) are left alone, so submitting the same sweep twice runs
nothing twice. On Slurm, runs whose last job (`jobs.jsonl`) is still in the queue (`squeue`: pending, running,
requeued) are left to that job too, so resubmitting a sweep before its jobs start queues nothing twice; without a
working `squeue` they are submitted again, and the claims still keep them from being trained twice. The runs go
out in two waves. Wave 1 holds every run that copies nobody; wave 2 the matched controls
(`plan.reference_config`: e.g. `periodic` copies the duty cycle of the `gapt` run of its seed). On Slurm each wave
is one job array (`executor.map_array`, `%` parallelism cap), and wave 2 is submitted with
`--dependency=afterany:<wave 1's array id>`; the local executor starts wave 2 when wave 1's jobs have ended. On top
of that, a control's job itself waits (polls the store) for the record of the run it copies, up to
`reference_wait_min`, so the order also holds when that run is trained by another sweep. The submission leaves
`OUT/submitit/`: submitit's job files and logs (`<job id>_<task>_log.out|err`), `jobs.jsonl` (which job ran which
run key) and `launcher.yaml` (the launcher options, for the resubmit command `status` prints).
`--wait` follows the jobs' states through submitit (sacct); on a cluster without accounting, where sacct fails,
through squeue instead (one line says so): a job no longer listed has ended.

One job (`RunJob`, a `submitit.helpers.Checkpointable`): loads the submitter's plug-ins (`--include` paths),
rebuilds the run's config from the request and checks its hash, uses one CPU thread (`cpus_per_task` if set), takes
the DDP rendezvous from the job when the job has several tasks (`torch_dist_env`: RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT from `submitit.helpers.TorchDistributedEnvironment`), marks its claims
with its job id (GAPT_BENCH_JOB_ID: a requeued job takes over its own earlier claim at once) and calls
`execute.execute(cfg, OUT, resume=True)`. A run claimed by a live process elsewhere is waited for, not skipped.

Preemption and time limits. Slurm signals the job (`--signal=USR2@<signal_delay_s>`, `--signal-delay-s`, default
90 s, and Slurm may send it up to 60 s earlier: keep it well under `--timeout-min`; the local executor does the
same before its timeout). The job's handler asks the run to stop (`execute.request_stop`): the trainer finishes its
step and writes the suite's own checkpoint; then submitit's handler calls `RunJob.checkpoint` (the same call again)
and requeues the job (`scontrol requeue`; locally, a restart of the task), at most `max_timeouts` times for time
limits (preemptions do not count). The requeued job resumes from the checkpoint and ends with the metrics of an
uninterrupted run. A job killed outright (SIGKILL, a lost node) is not requeued: submit the same command again (or
the one `status` prints); it resumes from the last checkpoint (`--checkpoint-every`), and finished runs are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapt_bench.config import RunConfig
from gapt_bench.data.claims import live_claim
from gapt_bench.launch.job import RunJob, _task_pids, job_spec
from gapt_bench.launch.options import (
    JOBS_FILE,
    LAUNCHER_FILE,
    LOCAL_TIMEOUT_MIN,
    SIGNAL_DELAY_S,
    SLURM_TIMEOUT_MIN,
    SUBMITIT_DIR,
    LauncherOptions,
    LaunchError,
    SubmissionError,
    _signal_too_late,
)
from gapt_bench.launch.queue import _use_squeue_states, queued_runs

# ----------------------------------------------------------------------------------------------------------------
# Executors


def _require_submitit():
    try:
        import submitit
    except ImportError:
        raise LaunchError(
            "the submitit launchers need the submitit package: pip install 'gapt-bench[cluster]' "
            "(or pip install submitit)"
        ) from None
    return submitit


def detect_cluster() -> str:
    """'slurm' where submitit's AutoExecutor would pick Slurm (srun on the PATH), else 'local'."""
    submitit = _require_submitit()
    return "slurm" if submitit.AutoExecutor.which() == "slurm" else "local"


def slurm_parameters(opts: LauncherOptions, dependency: str | None = None) -> dict[str, Any]:
    """The AutoExecutor parameters of a Slurm job array for `opts` (`dependency`: e.g. afterany:123)."""
    extra = dict(opts.slurm)
    timeout_min = opts.timeout_min or SLURM_TIMEOUT_MIN
    if not opts.signal_delay_s and SIGNAL_DELAY_S >= timeout_min * 60:
        raise LaunchError(_signal_too_late(SIGNAL_DELAY_S, timeout_min, default=True))
    if dependency:
        extra["dependency"] = f"{extra['dependency']},{dependency}" if extra.get("dependency") else dependency
    params: dict[str, Any] = {
        "name": "gapt-bench",
        "timeout_min": timeout_min,
        "nodes": opts.nodes,
        "tasks_per_node": opts.tasks(),
        "gpus_per_node": opts.gpus_per_node or None,
        "cpus_per_task": opts.cpus_per_task,
        "mem_gb": opts.mem_gb,
        "slurm_partition": opts.partition,
        "slurm_account": opts.account,
        "slurm_qos": opts.qos,
        "slurm_array_parallelism": opts.array_parallelism,
        "slurm_signal_delay_s": opts.signal_delay_s,
        "slurm_setup": opts.setup or None,
        "slurm_additional_parameters": extra or None,
    }
    return {k: v for k, v in params.items() if v is not None}


@contextlib.contextmanager
def _without_srun_check():
    """Build a SlurmExecutor where there is no Slurm (to render its batch file; nothing is submitted)."""
    from submitit.slurm.slurm import SlurmExecutor

    saved = SlurmExecutor.__dict__["affinity"]
    SlurmExecutor.affinity = classmethod(lambda cls: 2)
    try:
        yield
    finally:
        SlurmExecutor.affinity = saved


def slurm_executor(folder: Path, opts: LauncherOptions, dependency: str | None = None, *, preview: bool = False):
    """submitit's executor for Slurm with `opts` applied (`preview`: also where Slurm is absent, to render only)."""
    submitit = _require_submitit()
    ctx = _without_srun_check() if preview else contextlib.nullcontext()
    params = slurm_parameters(opts, dependency)  # its own refusals are LaunchErrors already
    with ctx:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=opts.max_timeouts)
    try:
        ex.update_parameters(**params)
    except (ValueError, NameError, AssertionError) as e:
        raise LaunchError(f"submitit refused the Slurm options: {str(e).splitlines()[0]}") from e
    return ex


def batch_file_text(executor, n_jobs: int) -> str:
    """The sbatch file submitit would submit for an array of `n_jobs` jobs (nothing is submitted)."""
    inner = getattr(executor, "_executor", executor)
    saved = dict(inner.parameters)
    if n_jobs > 1:
        inner.parameters["map_count"] = n_jobs
    try:
        return inner._make_submission_file_text(inner._submitit_command_str, "preview")
    finally:
        inner.parameters.clear()
        inner.parameters.update(saved)


# ----------------------------------------------------------------------------------------------------------------
# The job


# ----------------------------------------------------------------------------------------------------------------
# Submitting a plan


@dataclass
class SubmittedJob:
    cfg: RunConfig
    job_id: str
    stdout: Path
    stderr: Path
    wave: int


@dataclass
class Submission:
    """What a submission did: its cluster, jobs per wave, the runs it left out, and (when it waited) outcomes."""

    launcher: str
    cluster: str
    folder: Path
    out: Path
    jobs: list[SubmittedJob] = field(default_factory=list)
    array_ids: list[str] = field(default_factory=list)
    dependency: str | None = None
    outcomes: list = field(default_factory=list)
    queued: list[tuple[RunConfig, str, str]] = field(default_factory=list)  # left to an earlier job: (cfg, id, state)
    waited: bool = False
    handles: dict[str, Any] = field(default_factory=dict, repr=False)  # job id -> submitit Job (Slurm, for --wait)

    def describe(self, status_command: str | None = None) -> list[str]:
        """Lines for the person who submitted: job ids, where the logs are, how to follow them."""
        lines = []
        if self.queued:
            ids = ", ".join(sorted({job_id for _, job_id, _ in self.queued}))
            lines.append(f"left {len(self.queued)} run(s) to their earlier Slurm jobs, still in the queue: {ids}")
        if not self.jobs:
            return [*lines, "nothing to submit: every run of the plan is recorded, running or queued"]
        waves = [[j for j in self.jobs if j.wave == w] for w in (1, 2)]
        for w, jobs in enumerate(waves, 1):
            if not jobs:
                continue
            what = "matched controls" if w == 2 else "runs"
            if self.cluster == "slurm":
                array = jobs[0].job_id.split("_")[0]
                after = ""
                if w == 2 and self.dependency:
                    ids = self.dependency.split("afterany:", 1)[-1].split(":")
                    waits_for = f"array {ids[0]} ends" if len(ids) == 1 else f"arrays {', '.join(ids)} end"
                    after = f", after {waits_for} ({self.dependency})"
                lines.append(f"submitted {len(jobs)} {what} as Slurm job array {array}{after}")
            else:
                lines.append(f"ran {len(jobs)} {what} as local submitit jobs (one process each)")
            for j in jobs:
                lines.append(f"  job {j.job_id:<12} {j.cfg.task}/{j.cfg.method}/seed{j.cfg.seed}  log {j.stdout}")
        lines.append(f"logs: {self.folder}/<job id>_<task>_log.out and .err (one pair per job and task)")
        if self.cluster == "slurm":
            ids = ",".join(self.array_ids)
            lines.append(f"follow: squeue -j {ids}   |   tail -f {self.jobs[0].stdout}")
        if status_command:
            lines.append(f"progress: {status_command}")
        return lines


def _key_of(cfg: RunConfig) -> tuple:
    from gapt_bench.launch.plan import run_key

    return run_key(cfg)


def submit_plan(
    plan: list[RunConfig],
    out: Path,
    launcher: str,
    opts: LauncherOptions,
    *,
    overrides: Iterable[str] = (),
    includes: Iterable[str] = (),
    checkpoint_every: int = 0,
    on_done: Callable[[RunConfig, Any], None] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> Submission:
    """Submit every unfinished, unclaimed run of `plan` as one job each (see the module docstring). On Slurm this
    returns once the arrays are submitted (or, with `opts.wait`, when every job has ended); the local executor
    always waits, starting at most `array_parallelism` jobs at once."""
    from gapt_bench.launch.execute import RunOutcome
    from gapt_bench.launch.plan import reference_config
    from gapt_bench.results.store import finished_keys

    submitit = _require_submitit()
    out = Path(out).absolute()
    cluster = "local" if launcher == "submitit-local" else detect_cluster()
    folder = Path(opts.folder).absolute() if opts.folder else out / SUBMITIT_DIR
    sub = Submission(launcher=launcher, cluster=cluster, folder=folder, out=out)
    done = finished_keys(out)
    in_queue = queued_runs(out) if cluster == "slurm" else {}
    todo: list[RunConfig] = []
    after: list[str] = []  # arrays holding queued runs that controls of this submission copy
    for cfg in plan:
        key = _key_of(cfg)
        owner = live_claim(out, key) if key not in done else None
        queued = in_queue.get(key) if key not in done and owner is None else None
        if key in done or owner is not None or queued is not None:
            if queued is not None:
                msg = f"queued as Slurm job {queued[0]} ({queued[1]})"
                sub.queued.append((cfg, *queued))
                if reference_config(cfg) is None and queued[0].split("_")[0] not in after:
                    after.append(queued[0].split("_")[0])
            else:
                msg = "already recorded" if key in done else f"running in pid {owner.get('pid')} on {owner.get('host')}"
            o = RunOutcome(None, skipped=True, message=msg)
            sub.outcomes.append(o)
            if on_done:
                on_done(cfg, o)
        else:
            todo.append(cfg)
    if not todo:
        sub.waited = True
        return sub
    folder.mkdir(parents=True, exist_ok=True)
    (out / SUBMITIT_DIR).mkdir(parents=True, exist_ok=True)
    _write_launcher_file(out / SUBMITIT_DIR, launcher, opts)
    specs = {
        id(c): job_spec(c, out, overrides=overrides, includes=includes, checkpoint_every=checkpoint_every, opts=opts)
        for c in todo
    }
    waves = [[c for c in todo if reference_config(c) is None], [c for c in todo if reference_config(c) is not None]]
    if launcher == "submitit" and cluster == "local":
        say("no Slurm here (no srun on the PATH): the jobs run as local processes (submitit's local executor)")
    if cluster == "slurm":
        _submit_slurm(sub, waves, specs, opts, say, after)
        if opts.wait:
            _wait_all(sub, on_done, opts.poll_s, say)
        return sub
    _run_local(submitit, sub, waves, specs, opts, on_done, say)
    return sub


def _write_launcher_file(folder: Path, launcher: str, opts: LauncherOptions) -> None:
    import yaml

    data = {"launcher": launcher, **opts.to_dict()}
    data.pop("folder", None)
    try:
        (folder / LAUNCHER_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    except OSError:
        pass


def _log_jobs(sub: Submission, jobs: list[SubmittedJob]) -> None:
    lines = "".join(
        json.dumps(
            {
                "job_id": j.job_id,
                "key": list(_key_of(j.cfg)),
                "cluster": sub.cluster,
                "stdout": str(j.stdout),
                "stderr": str(j.stderr),
                "wave": j.wave,
                "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        + "\n"
        for j in jobs
    )
    try:
        with open(sub.out / SUBMITIT_DIR / JOBS_FILE, "a") as f:
            f.write(lines)
    except OSError:
        pass


def _submitted(job, cfg: RunConfig, wave: int) -> SubmittedJob:
    first = job.task(0) if job.num_tasks > 1 else job
    return SubmittedJob(
        cfg=cfg, job_id=str(job.job_id), stdout=first.paths.stdout, stderr=first.paths.stderr, wave=wave
    )


def _submit_slurm(sub: Submission, waves, specs, opts: LauncherOptions, say, queued_arrays: list[str]) -> None:
    """Wave 2 (the controls) waits for wave 1's array and for the arrays of any queued runs it may copy."""
    for wave_no, wave in enumerate(waves, 1):
        if not wave:
            continue
        after = sub.array_ids[:1] + [a for a in queued_arrays if a not in sub.array_ids[:1]]
        dependency = "afterany:" + ":".join(after) if wave_no == 2 and after else None
        ex = slurm_executor(sub.folder, opts, dependency)
        try:
            jobs = ex.map_array(RunJob(), [specs[id(c)] for c in wave])
        except Exception as e:  # sbatch refused (bad partition, account, limits): one line
            reason = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
            if sub.array_ids:  # an earlier array is queued: not a refusal of the input any more
                raise SubmissionError(reason, sub.array_ids, sub.out / SUBMITIT_DIR) from e
            raise LaunchError(f"sbatch refused the array: {reason}") from e
        sub.array_ids.append(str(jobs[0].job_id).split("_")[0])
        if dependency:
            sub.dependency = f"--dependency={dependency}"
        submitted = [_submitted(j, c, wave_no) for j, c in zip(jobs, wave)]
        sub.jobs += submitted
        sub.handles.update({s.job_id: j for s, j in zip(submitted, jobs)})
        _log_jobs(sub, submitted)
        say(f"submitted job array {sub.array_ids[-1]}: {len(wave)} job(s)")


def _wait_all(sub: Submission, on_done, poll_s: float, say: Callable[[str], None] = lambda line: None) -> None:
    """Until every Slurm job has ended, looking at their states every `poll_s` seconds; each outcome to on_done.
    Where sacct does not answer (no accounting), the states come from squeue (`queue._use_squeue_states`)."""
    pending = {s.job_id: (s, sub.handles[s.job_id]) for s in sub.jobs}
    _use_squeue_states([job for _, job in pending.values()], poll_s, say)
    while pending:
        for job_id, (s, job) in list(pending.items()):
            if job.done():
                del pending[job_id]
                o = job_outcome(job, s)
                sub.outcomes.append(o)
                if on_done:
                    on_done(s.cfg, o)
        if pending:
            time.sleep(poll_s)
    sub.waited = True


def job_outcome(job, submitted: SubmittedJob):
    """The RunOutcome of an ended job: its run's record, a skip, or an error naming the job and its log."""
    from gapt_bench.launch.execute import RunOutcome

    first = job.task(0) if job.num_tasks > 1 else job
    where = f"job {submitted.job_id} (log {submitted.stderr})"
    if not first.paths.result_pickle.exists():
        tail = _tail(submitted.stderr)
        return RunOutcome(None, error=True, message=f"{where} ended without a result{': ' + tail if tail else ''}")
    try:
        result = first.result()
    except Exception as e:  # the job raised: the last line of its traceback says why
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("---")]
        cause = next((ln for ln in reversed(lines) if "Error" in ln or "Interrupted" in ln), lines[-1] if lines else "")
        if "JobInterrupted" in cause:  # stopped by a signal, checkpoint kept: resubmitting resumes it
            return RunOutcome(None, interrupted=True, message=f"{where}: {cause.split(':', 1)[-1].strip()[:300]}")
        return RunOutcome(None, error=True, message=f"{where} failed: {cause[:300]}")
    if result.get("record") is not None:
        return RunOutcome(result["record"])
    if result.get("requeued"):
        return RunOutcome(None, interrupted=True, message=f"{where}: {result.get('message')}")
    return RunOutcome(None, skipped=True, message=result.get("message") or "skipped")


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _local_gpus() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    try:
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:
        return []


def _run_local(submitit, sub: Submission, waves, specs, opts: LauncherOptions, on_done, say) -> None:
    """submitit's local executor: one subprocess job per run, at most `array_parallelism` at once (and as many as
    the GPUs allow), wave 2 after wave 1; waits for all. SIGTERM/SIGINT stop starting jobs and ask the running ones
    to checkpoint."""
    ex = submitit.LocalExecutor(folder=sub.folder, max_num_timeout=opts.max_timeouts)
    gpus = _local_gpus() if opts.gpus_per_node else []
    if opts.gpus_per_node and len(gpus) < opts.gpus_per_node:
        raise LaunchError(f"--gpus-per-node {opts.gpus_per_node} but this machine shows {len(gpus)} GPU(s)")
    parallel = opts.array_parallelism or (
        len(gpus) // opts.gpus_per_node if opts.gpus_per_node else max(1, (os.cpu_count() or 1) // opts.tasks())
    )
    base = {"timeout_min": opts.timeout_min or LOCAL_TIMEOUT_MIN, "tasks_per_node": opts.tasks(), "nodes": 1}
    if opts.signal_delay_s:
        base["signal_delay_s"] = opts.signal_delay_s
    if opts.setup:
        base["setup"] = list(opts.setup)
    free = list(gpus)
    stop = {"flag": False}
    running: dict[str, tuple] = {}

    def forward(signum, frame) -> None:
        stop["flag"] = True
        for _, job, _ in running.values():
            for pid in _task_pids(job):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        with contextlib.suppress(ValueError):  # not the main thread: no forwarding
            signal.signal(s, forward)
    try:
        for wave_no, wave in enumerate(waves, 1):
            queue = list(wave)
            while (queue and not stop["flag"]) or running:
                while queue and not stop["flag"] and len(running) < parallel and len(free) >= opts.gpus_per_node:
                    cfg = queue.pop(0)
                    mine = [free.pop(0) for _ in range(opts.gpus_per_node)]
                    ex.update_parameters(**base, gpus_per_node=len(mine), visible_gpus=tuple(mine))
                    job = ex.submit(RunJob(), specs[id(cfg)])
                    s = _submitted(job, cfg, wave_no)
                    sub.jobs.append(s)
                    _log_jobs(sub, [s])
                    running[s.job_id] = (s, job, mine)
                    say(f"start job {s.job_id}: {cfg.task}/{cfg.method}/seed{cfg.seed} (log {s.stdout})")
                for job_id, (s, job, mine) in list(running.items()):
                    if job.done():
                        del running[job_id]
                        free.extend(mine)
                        o = job_outcome(job, s)
                        sub.outcomes.append(o)
                        if on_done:
                            on_done(s.cfg, o)
                time.sleep(0.1)
            if stop["flag"]:
                break
    finally:
        for s, h in old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(s, h)
    sub.waited = True


def dry_run_lines(plan: list[RunConfig], out: Path, launcher: str, opts: LauncherOptions) -> list[str]:
    """What `submit_plan` would submit, and the sbatch file(s) of a Slurm submission; nothing is written."""
    from gapt_bench.launch.plan import reference_config
    from gapt_bench.results.store import finished_keys

    out = Path(out).absolute()
    done = finished_keys(out)
    todo = [c for c in plan if _key_of(c) not in done and live_claim(out, _key_of(c)) is None]
    waves = [[c for c in todo if reference_config(c) is None], [c for c in todo if reference_config(c) is not None]]
    cluster = "local" if launcher == "submitit-local" else detect_cluster()
    lines = [
        f"dry run: {len(todo)} of {len(plan)} runs would be submitted ({len(plan) - len(todo)} recorded or "
        f"running), launcher {launcher} ({'Slurm' if cluster == 'slurm' else 'local executor'} here)"
    ]
    folder = Path(opts.folder).absolute() if opts.folder else out / SUBMITIT_DIR
    for n, wave in enumerate(waves, 1):
        if not wave:
            continue
        lines.append(
            f"wave {n}: {len(wave)} {'matched control' if n == 2 else 'run'}(s)"
            + (" after wave 1 (--dependency=afterany:<wave 1 array>)" if n == 2 and waves[0] else "")
        )
        lines += [f"  {c.task}/{c.method}/seed{c.seed} config {c.config_hash()[:8]}" for c in wave]
        if launcher == "submitit":
            dep = "afterany:WAVE1_ARRAY_ID" if n == 2 and waves[0] else None
            lines.append(f"  sbatch file of wave {n} (on Slurm):")
            text = batch_file_text(slurm_executor(folder, opts, dep, preview=True), len(wave))
            lines += ["    " + ln for ln in text.splitlines()]
    return lines
