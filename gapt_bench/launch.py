"""Sweeps beyond one machine: every run of a plan as one submitit job, on Slurm or as local processes.

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
(`runner.reference_config`: e.g. `periodic` copies the duty cycle of the `gapt` run of its seed). On Slurm each wave
is one job array (`executor.map_array`, `%` parallelism cap), and wave 2 is submitted with
`--dependency=afterany:<wave 1's array id>`; the local executor starts wave 2 when wave 1's jobs have ended. On top
of that, a control's job itself waits (polls the store) for the record of the run it copies, up to
`reference_wait_min`, so the order also holds when that run is trained by another sweep. The submission leaves
`OUT/submitit/`: submitit's job files and logs (`<job id>_<task>_log.out|err`), `jobs.jsonl` (which job ran which
run key) and `launcher.yaml` (the launcher options, for the resubmit command `status` prints).

One job (`RunJob`, a `submitit.helpers.Checkpointable`): loads the submitter's plug-ins (`--include` paths),
rebuilds the run's config from the request and checks its hash, uses one CPU thread (`cpus_per_task` if set), takes
the DDP rendezvous from the job when the job has several tasks (`torch_dist_env`: RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT from `submitit.helpers.TorchDistributedEnvironment`), marks its claims
with its job id (GAPT_BENCH_JOB_ID: a requeued job takes over its own earlier claim at once) and calls
`runner.execute(cfg, OUT, resume=True)`. A run claimed by a live process elsewhere is waited for, not skipped.

Preemption and time limits. Slurm signals the job (`--signal=USR2@<signal_delay_s>`; the local executor does the
same before its timeout). The job's handler asks the run to stop (`runner.request_stop`): the trainer finishes its
step and writes the suite's own checkpoint; then submitit's handler calls `RunJob.checkpoint` (the same call again)
and requeues the job (`scontrol requeue`; locally, a restart of the task), at most `max_timeouts` times for time
limits (preemptions do not count). The requeued job resumes from the checkpoint and ends with the metrics of an
uninterrupted run. A job killed outright (SIGKILL, a lost node) is not requeued: submit the same command again (or
the one `status` prints); it resumes from the last checkpoint (`--checkpoint-every`), and finished runs are skipped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gapt_bench.config import RunConfig
from gapt_bench.store import CHECKPOINT, JOB_ENV, has_results, iter_raw_records, live_claim, read_store

try:  # the base class of the job: submitit's when installed (it always is where a job runs)
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only without the cluster extra
    class _Checkpointable:  # type: ignore[no-redef]
        pass

LAUNCHERS = ("local", "submitit", "submitit-local")
SUBMITIT_DIR = "submitit"
JOBS_FILE = "jobs.jsonl"
LAUNCHER_FILE = "launcher.yaml"
SLURM_TIMEOUT_MIN = 240          # a Slurm job's default time limit (longer runs are requeued, or pass --timeout-min)
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # the local executor kills a job at its timeout: keep it out of the way
STATES = ("done", "running", "queued", "failed", "diverged", "missing")


class LaunchError(ValueError):
    """Bad launcher input or an unusable launcher. str() is one line naming the problem and the fix."""


class SubmissionError(RuntimeError):
    """Slurm refused an array after an earlier one was queued: not bad input (exit 1), and the queued jobs run on.
    str() is one line naming the refusal and the arrays already queued."""

    def __init__(self, reason: str, queued: list[str], folder: Path) -> None:
        self.reason, self.queued, self.folder = reason, list(queued), folder
        super().__init__(f"sbatch refused the matched controls' array ({reason}); job array(s) "
                         f"{', '.join(self.queued)} already queued (listed in {folder / JOBS_FILE})")


# ----------------------------------------------------------------------------------------------------------------
# Options


def _o(default: Any, flag: str | None = None, min: float | None = None) -> Any:
    """A field with its `gapt-bench run` flag (for error messages) and lowest allowed value (checked in `_coerce`)."""
    meta = {"flag": flag, "min": min}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class LauncherOptions:
    """What a submitit launcher needs; keys of `--launcher-config FILE.yaml` and flags of `gapt-bench run` (whose
    --help describes each)."""

    partition: str | None = _o(None, "--partition")
    account: str | None = _o(None, "--account")
    qos: str | None = _o(None, "--qos")
    timeout_min: int | None = _o(None, "--timeout-min", 1)  # default SLURM_TIMEOUT_MIN on Slurm; longer: requeued
    nodes: int = _o(1, "--nodes", 1)  # one run on several nodes is one DDP job
    gpus_per_node: int = _o(0, "--gpus-per-node", 0)
    tasks_per_node: int | None = _o(None, "--tasks-per-node", 1)  # DDP ranks per node; default one per GPU, else 1
    cpus_per_task: int | None = _o(None, "--cpus-per-task", 1)  # also the run's torch threads (default 1)
    mem_gb: float | None = _o(None, "--mem-gb", 0.001)  # per node
    array_parallelism: int | None = _o(None, "--array-parallelism", 1)  # local default: the cores, or GPUs per job
    slurm: dict = _o({}, "--slurm-opt")  # any other sbatch option, passed through
    setup: list = _o([], "--setup")  # shell lines run before each job
    max_timeouts: int = _o(3, "--max-timeouts", 0)  # requeues after a time limit (preemptions do not count)
    signal_delay_s: int | None = _o(None, None, 1)  # seconds between the stop signal and the kill (submitit: 90)
    reference_wait_min: float = _o(120.0, None, 0)  # how long a matched control's job waits for the run it copies
    poll_s: float = _o(10.0, None, 0.05)  # seconds between looks at the store (a job) or at the jobs (--wait)
    wait: bool = _o(False, "--wait")  # Slurm: stay until every job has ended (local: always)
    folder: str | None = _o(None)  # submitit's folder for job files and logs (default OUT/submitit)

    def tasks(self) -> int:
        return self.tasks_per_node or (self.gpus_per_node if self.gpus_per_node > 0 else 1)

    def threads(self) -> int:
        return self.cpus_per_task or 1

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, [])}


OPTION_FIELDS = {f.name: f for f in dataclasses.fields(LauncherOptions)}


def _coerce(name: str, value: Any) -> Any:
    f = OPTION_FIELDS[name]
    kind = str(f.type)
    where = f"launcher option {name}"
    if value is None:
        return None
    if name == "slurm":
        if not isinstance(value, dict):
            raise LaunchError(f"{where} must be a mapping of sbatch options (e.g. constraint: a100)")
        out = {}
        for k, v in value.items():
            if not isinstance(v, (str, int, float, bool)) or isinstance(k, (dict, list)):
                raise LaunchError(f"{where}: {k} must be a plain value, not {type(v).__name__}")
            out[str(k).lstrip("-").replace("_", "-")] = v
        return out
    if name == "setup":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise LaunchError(f"{where} must be a list of shell lines")
        return list(value)
    if "bool" in kind:
        if not isinstance(value, bool):
            raise LaunchError(f"{where} must be true or false, not {value!r}")
        return value
    if "int" in kind:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise LaunchError(f"{where} must be a whole number, not {value!r}")
    elif "float" in kind:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise LaunchError(f"{where} must be a number, not {value!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise LaunchError(f"{where} must be a finite number, not {value!r}")
    elif "str" in kind:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise LaunchError(f"{where} must be a string, not {value!r}")
        value = str(value)
        if not value.strip():
            raise LaunchError(f"{where} is empty")
        return value
    lo = f.metadata.get("min")
    if lo is not None and value < lo:
        raise LaunchError(f"{where} must be >= {lo:g}, got {value}")
    return value


def read_launcher_config(path: str | Path) -> dict:
    """The launcher options of a YAML file (a mapping; `-` and `_` alike in keys; `launcher:` names the launcher)."""
    import yaml

    p = Path(path).expanduser()
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise LaunchError(f"--launcher-config {path}: cannot read it ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise LaunchError(f"--launcher-config {path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LaunchError(f"--launcher-config {path}: must be a mapping of launcher options, e.g. `partition: gpu`")
    out = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key != "launcher" and key not in OPTION_FIELDS:
            raise LaunchError(f"--launcher-config {path}: unknown option '{k}'; known: launcher, "
                              + ", ".join(OPTION_FIELDS))
        out[key] = v
    return out


def resolve_launcher(launcher: str | None, config_file: str | None,
                     given: dict[str, Any]) -> tuple[str, LauncherOptions]:
    """(launcher, options) from the CLI's values (None = not given), over the config file's, over the defaults.
    `slurm` options merge key by key (the CLI's win); `setup` lines given on the CLI replace the file's."""
    file_values = read_launcher_config(config_file) if config_file else {}
    chosen = launcher or file_values.pop("launcher", None) or ("submitit" if config_file else "local")
    file_values.pop("launcher", None)
    if chosen not in LAUNCHERS:
        raise LaunchError(f"unknown launcher '{chosen}'; use one of {', '.join(LAUNCHERS)}")
    given = {k: v for k, v in given.items() if v not in (None, [], {})}
    unknown = set(given) - set(OPTION_FIELDS)
    if unknown:
        raise LaunchError(f"unknown launcher option(s) {sorted(unknown)}")
    if chosen == "local":
        if given or config_file:
            names = sorted(OPTION_FIELDS[k].metadata.get("flag") or k for k in given) or ["--launcher-config"]
            raise LaunchError(f"{', '.join(names)} appl{'ies' if len(names) == 1 else 'y'} to --launcher submitit or "
                              "submitit-local; add one, or drop the launcher options")
        return chosen, LauncherOptions()
    values: dict[str, Any] = {}
    for source in (file_values, given):
        for k, v in source.items():
            v = _coerce(k, v)
            if k == "slurm" and v is not None:
                values["slurm"] = {**values.get("slurm", {}), **v}
            else:
                values[k] = v
    opts = LauncherOptions(**values)
    if chosen == "submitit-local" and opts.nodes > 1:
        raise LaunchError("--launcher submitit-local runs on this one machine: --nodes must be 1 (use --launcher "
                          "submitit on a Slurm cluster for several nodes)")
    return chosen, opts


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, str]:
    """['constraint=a100', 'mail-type=END'] -> {'constraint': 'a100', 'mail-type': 'END'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LaunchError(f"{flag} {item!r}: use KEY=VALUE, e.g. {flag} constraint=a100")
        out[key.strip()] = value
    return out


# ----------------------------------------------------------------------------------------------------------------
# Executors


def _require_submitit():
    try:
        import submitit
    except ImportError:
        raise LaunchError("the submitit launchers need the submitit package: pip install 'gapt-bench[cluster]' "
                          "(or pip install submitit)") from None
    return submitit


def detect_cluster() -> str:
    """'slurm' where submitit's AutoExecutor would pick Slurm (srun on the PATH), else 'local'."""
    submitit = _require_submitit()
    return "slurm" if submitit.AutoExecutor.which() == "slurm" else "local"


def slurm_parameters(opts: LauncherOptions, dependency: str | None = None) -> dict[str, Any]:
    """The AutoExecutor parameters of a Slurm job array for `opts` (`dependency`: e.g. afterany:123)."""
    extra = dict(opts.slurm)
    if dependency:
        extra["dependency"] = f"{extra['dependency']},{dependency}" if extra.get("dependency") else dependency
    params: dict[str, Any] = {
        "name": "gapt-bench", "timeout_min": opts.timeout_min or SLURM_TIMEOUT_MIN, "nodes": opts.nodes,
        "tasks_per_node": opts.tasks(), "gpus_per_node": opts.gpus_per_node or None,
        "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb, "slurm_partition": opts.partition,
        "slurm_account": opts.account, "slurm_qos": opts.qos, "slurm_array_parallelism": opts.array_parallelism,
        "slurm_signal_delay_s": opts.signal_delay_s, "slurm_setup": opts.setup or None,
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
    with ctx:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=opts.max_timeouts)
    try:
        ex.update_parameters(**slurm_parameters(opts, dependency))
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


def job_spec(cfg: RunConfig, out: Path, *, overrides: Iterable[str], includes: Iterable[str], checkpoint_every: int,
             opts: LauncherOptions) -> dict[str, Any]:
    """Everything a job needs, as plain data: the run's request (rebuilt and hash-checked in the job), where its
    results go, its plug-ins and how it waits."""
    from gapt_bench.runner import run_key

    return {"out": str(Path(out).absolute()), "includes": [str(Path(p).absolute()) for p in includes],
            "task": cfg.task, "method": cfg.method, "seed": cfg.seed, "preset": cfg.preset,
            "overrides": list(overrides), "config_hash": cfg.config_hash(), "key": list(run_key(cfg)),
            "checkpoint_every": checkpoint_every, "threads": opts.threads(),
            "reference_wait_s": opts.reference_wait_min * 60, "poll_s": opts.poll_s}


def config_of(spec: dict) -> RunConfig:
    """The run a job trains, planned again from its request; LaunchError if the hash differs from the submitter's
    (other code, presets or plug-ins on the job's machine)."""
    from gapt_bench.runner import make_plan

    plan = make_plan([spec["task"]], [spec["method"]], [spec["seed"]], spec["preset"], spec["overrides"])
    for cfg in plan:
        if cfg.config_hash() == spec["config_hash"]:
            cfg.train.threads = int(spec.get("threads") or 1)
            return cfg
    raise LaunchError(f"run {spec['task']}/{spec['method']}/seed{spec['seed']} (config {spec['config_hash']}) is not "
                      "in the plan rebuilt in the job: the code, presets or plug-ins differ from the submitter's")


def torch_dist_env() -> dict[str, str]:
    """The torch.distributed variables of the current submitit job's task (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), from submitit's TorchDistributedEnvironment. A single-node job
    meets on 127.0.0.1; several nodes on the job's first node."""
    from submitit.helpers import TorchDistributedEnvironment

    d = TorchDistributedEnvironment()
    addr = "127.0.0.1" if d._job_env.num_nodes == 1 else d.master_addr
    return {"MASTER_ADDR": str(addr), "MASTER_PORT": str(d.master_port), "RANK": str(d.rank),
            "WORLD_SIZE": str(d.world_size), "LOCAL_RANK": str(d.local_rank),
            "LOCAL_WORLD_SIZE": str(d.local_world_size)}


_JOB: dict[str, Any] = {"preempted": None, "stopped": None, "handler": None}


class JobInterrupted(RuntimeError):
    """A job stopped by a signal that does not requeue it; its run's checkpoint is kept."""


def _job_environment():
    try:
        from submitit import JobEnvironment

        return JobEnvironment()
    except Exception:  # not inside a submitit job (a test calling the job directly)
        return None


def _usr_signal() -> int:
    try:
        from submitit.core.job_environment import JobEnvironment

        return JobEnvironment._usr_sig()
    except Exception:
        return signal.SIGUSR2


class RunJob(_Checkpointable):
    """One run as a submitit job; requeued (checkpoint, then the same call again) on preemption and time limits.

    Stateless on purpose: everything is in the spec (`job_spec`), so the requeued call is the same call."""

    def __call__(self, spec: dict) -> dict:
        from gapt_bench import runner
        from gapt_bench.registry import load_plugins

        threads = str(int(spec.get("threads") or 1))
        os.environ.setdefault("OMP_NUM_THREADS", threads)
        os.environ.setdefault("MKL_NUM_THREADS", threads)
        env = _job_environment()
        rank = 0
        if env is not None:
            os.environ[JOB_ENV] = str(env.job_id)
            if env.num_tasks > 1:
                os.environ.update(torch_dist_env())
            rank = env.global_rank
        self._install_signals()
        load_plugins(spec.get("includes") or [])
        cfg = config_of(spec)
        out = Path(spec["out"])
        poll = float(spec.get("poll_s") or 10.0)
        self._wait_for_reference(cfg, out, spec, poll)
        while True:
            outcome = runner.execute(cfg, out, checkpoint_every=int(spec.get("checkpoint_every") or 0), resume=True,
                                     quiet=False)  # the run's log lines also go to the job's log
            if not (outcome.skipped and outcome.message.startswith("running in")):
                break
            self._idle(poll)  # trained elsewhere right now: wait for its record (or for its claim to go stale)
        if outcome.interrupted:
            self._after_stop(outcome.message, rank)
            return {"key": spec["key"], "record": None, "skipped": False, "requeued": True,
                    "message": outcome.message}
        if outcome.error:
            raise RuntimeError(outcome.message)
        return {"key": spec["key"], "record": outcome.record, "skipped": outcome.skipped,
                "message": outcome.message, "requeued": False}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on preemption/timeout, once the run has written its checkpoint (see `_after_stop`):
        the requeued job is this same call, which resumes from that checkpoint."""
        from gapt_bench import runner

        runner.request_stop()  # in case a caller reaches here first: the trainer checkpoints at its next step
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(type(self)(), *args, **kwargs)

    # -- signals: the run stops at a step boundary, then submitit requeues ------------------------------------------

    @staticmethod
    def _install_signals() -> None:
        from gapt_bench import runner

        runner.clear_stop()
        usr = _usr_signal()
        _JOB["handler"] = signal.getsignal(usr)  # submitit's checkpoint-and-requeue handler

        def preempted(signum, frame) -> None:
            _JOB["preempted"] = signum
            runner.request_stop()

        def stopped(signum, frame) -> None:
            _JOB["stopped"] = signum
            runner.request_stop()

        signal.signal(usr, preempted)
        signal.signal(signal.SIGTERM, stopped)
        signal.signal(signal.SIGINT, stopped)

    def _after_stop(self, message: str, rank: int) -> None:
        """The run has checkpointed: requeue through submitit (rank 0; the other ranks just end), or fail loudly."""
        signum, handler = _JOB["preempted"], _JOB["handler"]
        if signum is not None and callable(handler):
            handler(signum, None)  # submitit: has it timed out? checkpoint() -> requeue -> exit; returns on rank > 0
            if rank != 0:
                return
        how = signal.Signals(_JOB["stopped"] or signum or signal.SIGTERM).name
        raise JobInterrupted(f"stopped by {how}: {message}; submit the same command again to resume it")

    def _idle(self, seconds: float) -> None:
        from gapt_bench import runner

        end = time.time() + seconds
        while time.time() < end:
            if runner.stop_requested():
                self._after_stop("stopped while waiting (nothing to checkpoint)", _rank())
                raise JobInterrupted("requeued by the main task")
            time.sleep(min(0.2, seconds))

    def _wait_for_reference(self, cfg: RunConfig, out: Path, spec: dict, poll: float) -> None:
        """A matched control starts after the run it copies has a record (any status: a failed one fails it)."""
        from gapt_bench.runner import reference_config, run_key

        ref = reference_config(cfg)
        if ref is None:
            return
        key = run_key(ref)
        deadline = time.time() + float(spec.get("reference_wait_s") or 0)
        while not (has_results(out) and any(_key(r) == key for r in iter_raw_records(out, warn=False))):
            if time.time() > deadline:
                raise LaunchError(f"no record of the {ref.method} run (seed {ref.seed}) that this {cfg.method} run "
                                  f"copies appeared in {out} within {spec.get('reference_wait_s', 0) / 60:g} min; "
                                  "submit the sweep again once it has finished")
            self._idle(poll)


def _key(rec: dict) -> tuple:
    return (rec["task"], rec["method"], rec["config_hash"], rec["seed"])


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def preempt(job) -> list[int]:
    """Simulate a preemption of a running local submitit job: send its task processes the signal Slurm sends
    (USR2 by default). (submitit's LocalJob._interrupt signals the job's controller, which does not forward it.)
    Returns the signalled pids."""
    pids = _task_pids(job)
    for pid in pids:
        os.kill(pid, _usr_signal())
    return pids


def _task_pids(job) -> list[int]:
    """The task processes of a local job: the children of its controller process."""
    controller = int(job.job_id)
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == controller:
            pids.append(int(stat.parent.name))
    return pids


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
            return lines + ["nothing to submit: every run of the plan is recorded, running or queued"]
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
            lines.append(f"follow: squeue -j {ids}   |   tail -f {self.jobs[0].stdout}   |   sacct -j {ids}")
        if status_command:
            lines.append(f"progress: {status_command}")
        return lines


def _key_of(cfg: RunConfig) -> tuple:
    from gapt_bench.runner import run_key

    return run_key(cfg)


def submit_plan(plan: list[RunConfig], out: Path, launcher: str, opts: LauncherOptions, *,
                overrides: Iterable[str] = (), includes: Iterable[str] = (), checkpoint_every: int = 0,
                on_done: Callable[[RunConfig, Any], None] | None = None,
                say: Callable[[str], None] = lambda line: None) -> Submission:
    """Submit every unfinished, unclaimed run of `plan` as one job each (see the module docstring). On Slurm this
    returns once the arrays are submitted (or, with `opts.wait`, when every job has ended); the local executor
    always waits, starting at most `array_parallelism` jobs at once."""
    from gapt_bench.runner import RunOutcome, reference_config
    from gapt_bench.store import finished_keys

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
                msg = ("already recorded" if key in done
                       else f"running in pid {owner.get('pid')} on {owner.get('host')}")
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
    specs = {id(c): job_spec(c, out, overrides=overrides, includes=includes, checkpoint_every=checkpoint_every,
                             opts=opts) for c in todo}
    waves = [[c for c in todo if reference_config(c) is None], [c for c in todo if reference_config(c) is not None]]
    if launcher == "submitit" and cluster == "local":
        say("no Slurm here (no srun on the PATH): the jobs run as local processes (submitit's local executor)")
    if cluster == "slurm":
        _submit_slurm(sub, waves, specs, opts, say, after)
        if opts.wait:
            _wait_all(sub, on_done, opts.poll_s)
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
    lines = "".join(json.dumps({"job_id": j.job_id, "key": list(_key_of(j.cfg)), "cluster": sub.cluster,
                                "stdout": str(j.stdout), "stderr": str(j.stderr), "wave": j.wave,
                                "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
                    for j in jobs)
    try:
        with open(sub.out / SUBMITIT_DIR / JOBS_FILE, "a") as f:
            f.write(lines)
    except OSError:
        pass


def _submitted(job, cfg: RunConfig, wave: int) -> SubmittedJob:
    first = job.task(0) if job.num_tasks > 1 else job
    return SubmittedJob(cfg=cfg, job_id=str(job.job_id), stdout=first.paths.stdout, stderr=first.paths.stderr,
                        wave=wave)


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


def _wait_all(sub: Submission, on_done, poll_s: float) -> None:
    """Until every Slurm job has ended, looking at their states every `poll_s` seconds; each outcome to on_done."""
    pending = {s.job_id: (s, sub.handles[s.job_id]) for s in sub.jobs}
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
    from gapt_bench.runner import RunOutcome

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
    parallel = opts.array_parallelism or (len(gpus) // opts.gpus_per_node if opts.gpus_per_node else
                                          max(1, (os.cpu_count() or 1) // opts.tasks()))
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


# ----------------------------------------------------------------------------------------------------------------
# Status of a plan


@dataclass
class RunState:
    cfg: RunConfig
    state: str      # done | running | queued | failed | diverged | missing
    detail: str
    job: dict | None = None  # the last job submitted for this run (OUT/submitit/jobs.jsonl)


def slurm_queue() -> dict[str, str] | None:
    """{job id: state} of this user's jobs in the Slurm queue, one line per array task (`squeue -r`); None when
    squeue is missing or fails (then nothing is known to be queued)."""
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, KeyError, subprocess.SubprocessError):  # no squeue, no user name, a hung controller
        return None
    if done.returncode != 0:
        return None
    return dict(line.split(None, 1) for line in done.stdout.splitlines() if len(line.split(None, 1)) == 2)


def queued_runs(out: Path, last_jobs: dict[tuple, dict] | None = None) -> dict[tuple, tuple[str, str]]:
    """{run key: (job id, state)} for the runs whose last Slurm job (`jobs.jsonl`, or `last_jobs` already read from
    it) is still in the queue."""
    if last_jobs is None:
        last_jobs = _last_jobs(Path(out) / SUBMITIT_DIR)
    jobs = {k: j for k, j in last_jobs.items() if j.get("cluster") == "slurm"}
    queue = slurm_queue() if jobs else None
    if not queue:
        return {}
    return {k: (str(j["job_id"]), queue[str(j["job_id"])]) for k, j in jobs.items() if str(j["job_id"]) in queue}


def _last_jobs(folder: Path) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    try:
        text = (folder / JOBS_FILE).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            out[tuple(rec["key"])] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return out


def plan_status(plan: list[RunConfig], out: Path) -> list[RunState]:
    """The state of every run of `plan` in the results folder `out`."""
    from gapt_bench.runner import find_unfinished

    out = Path(out)
    records = {_key(r): r for r in read_store(out, warn=False).records} if has_results(out) else {}
    jobs = _last_jobs(out / SUBMITIT_DIR)
    in_queue = queued_runs(out, jobs)
    states = []
    for cfg in plan:
        key = _key_of(cfg)
        rec = records.get(key)
        job = jobs.get(key)
        if rec is not None and rec["status"] == "ok":
            states.append(RunState(cfg, "done", rec["run_id"], job))
            continue
        if rec is not None and rec["status"] == "diverged":
            states.append(RunState(cfg, "diverged", _error(rec), job))
            continue
        owner = live_claim(out, key)
        if owner is not None:
            where = f"pid {owner.get('pid')} on {owner.get('host')}"
            if owner.get("job"):
                where += f", job {owner['job']}"
            states.append(RunState(cfg, "running", f"{where} since {owner.get('since', '?')}", job))
            continue
        if key in in_queue:
            states.append(RunState(cfg, "queued", f"Slurm job {in_queue[key][0]}: {in_queue[key][1]}", job))
            continue
        if rec is not None:
            states.append(RunState(cfg, "failed", _error(rec), job))
            continue
        folder = find_unfinished(out, cfg) if (out / "runs").is_dir() else None
        if folder is not None and (folder / CHECKPOINT).exists():
            detail = f"interrupted, checkpoint kept in {folder}"
        elif folder is not None:
            detail = f"interrupted before its first checkpoint ({folder})"
        elif job is not None and not Path(str(job.get("stdout"))).exists():
            detail = f"not started (job {job.get('job_id')} has no log yet: still queued?)"
        else:
            detail = "not started"
        states.append(RunState(cfg, "missing", detail, job))
    return states


def _error(rec: dict) -> str:
    err = rec.get("error") or {}
    return f"{rec['run_id']}: {str(err.get('message', ''))[:160]}".rstrip(": ")


def status_lines(states: list[RunState], out: Path, resubmit: str) -> list[str]:
    """The report `gapt-bench status` prints: counts, one line per run, and what to do next."""
    counts = {s: sum(1 for x in states if x.state == s) for s in STATES}
    lines = [f"gapt-bench status: {len(states)} runs in the plan, results in {out}",
             "  " + "   ".join(f"{s} {counts[s]}" for s in STATES)]
    width = max([len(s.cfg.task) for s in states] + [4])
    mwidth = max([len(s.cfg.method) for s in states] + [6])
    lines.append(f"{'state':<9} {'task':<{width}} {'method':<{mwidth}} {'seed':>4}  {'config':<8}  detail")
    for s in states:
        detail = s.detail
        if s.state != "done" and s.job:
            detail += f"  [last job {s.job.get('job_id')}, log {s.job.get('stderr')}]"
        lines.append(f"{s.state:<9} {s.cfg.task:<{width}} {s.cfg.method:<{mwidth}} {s.cfg.seed:>4}  "
                     f"{s.cfg.config_hash()[:8]:<8}  {detail}")
    redo = counts["missing"] + counts["failed"]
    queued = sum(1 for x in states if x.state == "missing" and "still queued?" in x.detail)
    if queued:
        lines.append(f"{queued} missing run(s) have a submitted job without a log yet: check `squeue` before "
                     "resubmitting them (a duplicate job would only wait for, or skip, what the first one does)")
    if redo:
        lines.append(f"resubmit the {redo} missing or failed run(s) (finished runs are skipped, running ones left "
                     "alone, interrupted ones resume from their checkpoint):")
        lines.append(f"  {resubmit}")
    elif counts["running"] or counts["queued"]:
        lines.append(f"{counts['running']} run(s) still running and {counts['queued']} queued; nothing to resubmit")
    if counts["diverged"]:
        lines.append(f"{counts['diverged']} diverged run(s) are final (deterministic); change the config to run "
                     "them differently")
    if counts["done"] == len(states):
        lines.append("all runs are done")
    return lines


def plan_argv(tasks: str, methods: str, seeds: str, preset: str, overrides: Iterable[str] = (),
              includes: Iterable[str] = ()) -> list[str]:
    """The plan's arguments as `gapt-bench run` and `status` take them."""
    argv = ["--tasks", tasks, "--methods", methods, "--seeds", seeds, "--preset", preset]
    for o in overrides:
        argv += ["--set", o]
    for path in includes:
        argv += ["--include", path]
    return argv


def dry_run_lines(plan: list[RunConfig], out: Path, launcher: str, opts: LauncherOptions) -> list[str]:
    """What `submit_plan` would submit, and the sbatch file(s) of a Slurm submission; nothing is written."""
    from gapt_bench.runner import reference_config
    from gapt_bench.store import finished_keys

    out = Path(out).absolute()
    done = finished_keys(out)
    todo = [c for c in plan if _key_of(c) not in done and live_claim(out, _key_of(c)) is None]
    waves = [[c for c in todo if reference_config(c) is None], [c for c in todo if reference_config(c) is not None]]
    cluster = "local" if launcher == "submitit-local" else detect_cluster()
    lines = [f"dry run: {len(todo)} of {len(plan)} runs would be submitted ({len(plan) - len(todo)} recorded or "
             f"running), launcher {launcher} ({'Slurm' if cluster == 'slurm' else 'local executor'} here)"]
    folder = Path(opts.folder).absolute() if opts.folder else out / SUBMITIT_DIR
    for n, wave in enumerate(waves, 1):
        if not wave:
            continue
        lines.append(f"wave {n}: {len(wave)} {'matched control' if n == 2 else 'run'}(s)"
                     + (" after wave 1 (--dependency=afterany:<wave 1 array>)" if n == 2 and waves[0] else ""))
        lines += [f"  {c.task}/{c.method}/seed{c.seed} config {c.config_hash()[:8]}" for c in wave]
        if launcher == "submitit":
            dep = "afterany:WAVE1_ARRAY_ID" if n == 2 and waves[0] else None
            lines.append(f"  sbatch file of wave {n} (on Slurm):")
            text = batch_file_text(slurm_executor(folder, opts, dep, preview=True), len(wave))
            lines += ["    " + ln for ln in text.splitlines()]
    return lines


def resubmit_command(plan_argv: list[str], out: Path) -> str:
    """`gapt-bench run <plan args> --out OUT --resume`, plus the last submission's launcher (OUT/submitit)."""
    argv = ["gapt-bench", "run", *plan_argv, "--out", str(out)]
    launcher_file = Path(out) / SUBMITIT_DIR / LAUNCHER_FILE
    if launcher_file.is_file():
        try:
            launcher = read_launcher_config(launcher_file).get("launcher", "submitit")
        except LaunchError:
            launcher = "submitit"
        argv += ["--launcher", str(launcher), "--launcher-config", str(launcher_file)]
    argv.append("--resume")
    return shlex.join(argv)


__all__ = ["LAUNCHERS", "LaunchError", "SubmissionError", "LauncherOptions", "resolve_launcher", "read_launcher_config",
           "parse_key_values", "detect_cluster", "slurm_parameters", "slurm_executor", "batch_file_text", "job_spec",
           "config_of", "torch_dist_env", "RunJob", "JobInterrupted", "preempt", "submit_plan", "Submission",
           "SubmittedJob", "job_outcome", "plan_status", "RunState", "status_lines", "resubmit_command", "STATES",
           "plan_argv", "dry_run_lines"]
