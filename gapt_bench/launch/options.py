"""The launcher's options: `--launcher local|submitit|submitit-local`, the Slurm settings (flags or a
`--launcher-config` YAML file), their validation, and the names of the files a submission leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHERS = ("local", "submitit", "submitit-local")
SUBMITIT_DIR = "submitit"
JOBS_FILE = "jobs.jsonl"
LAUNCHER_FILE = "launcher.yaml"
SIGNAL_DELAY_S = 90  # submitit's default on Slurm: the stop signal this long before the time limit
SLURM_TIMEOUT_MIN = 240  # a Slurm job's default time limit (longer runs are requeued, or pass --timeout-min)
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # the local executor kills a job at its timeout: keep it out of the way
STATES = ("done", "running", "queued", "failed", "diverged", "missing")


class LaunchError(ValueError):
    """Bad launcher input or an unusable launcher. str() is one line naming the problem and the fix."""


class SubmissionError(RuntimeError):
    """Slurm refused an array after an earlier one was queued: not bad input (exit 1), and the queued jobs run on.
    str() is one line naming the refusal and the arrays already queued."""

    def __init__(self, reason: str, queued: list[str], folder: Path) -> None:
        self.reason, self.queued, self.folder = reason, list(queued), folder
        super().__init__(
            f"sbatch refused the matched controls' array ({reason}); job array(s) "
            f"{', '.join(self.queued)} already queued (listed in {folder / JOBS_FILE})"
        )


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
    signal_delay_s: int | None = _o(None, "--signal-delay-s", 1)  # stop signal this long before the limit (90)
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
            raise LaunchError(
                f"--launcher-config {path}: unknown option '{k}'; known: launcher, " + ", ".join(OPTION_FIELDS)
            )
        out[key] = v
    return out


def resolve_launcher(
    launcher: str | None, config_file: str | None, given: dict[str, Any]
) -> tuple[str, LauncherOptions]:
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
            raise LaunchError(
                f"{', '.join(names)} appl{'ies' if len(names) == 1 else 'y'} to --launcher submitit or "
                "submitit-local; add one, or drop the launcher options"
            )
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
    if opts.signal_delay_s and opts.timeout_min and opts.signal_delay_s >= opts.timeout_min * 60:
        raise LaunchError(_signal_too_late(opts.signal_delay_s, opts.timeout_min))
    if chosen == "submitit-local" and opts.nodes > 1:
        raise LaunchError(
            "--launcher submitit-local runs on this one machine: --nodes must be 1 (use --launcher "
            "submitit on a Slurm cluster for several nodes)"
        )
    return chosen, opts


def _signal_too_late(delay_s: int, timeout_min: int, default: bool = False) -> str:
    """The one line refusing a stop signal delay that is not shorter than the time limit."""
    what = f"the default stop signal delay ({delay_s} s)" if default else f"--signal-delay-s {delay_s}"
    return (
        f"{what} is not shorter than --timeout-min {timeout_min} ({timeout_min * 60} s): every job would be told "
        "to stop as it starts; pass a shorter --signal-delay-s (Slurm may signal up to 60 s before it)"
    )


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, str]:
    """['constraint=a100', 'mail-type=END'] -> {'constraint': 'a100', 'mail-type': 'END'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LaunchError(f"{flag} {item!r}: use KEY=VALUE, e.g. {flag} constraint=a100")
        out[key.strip()] = value
    return out
