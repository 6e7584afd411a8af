"""Where a site's numbers come from, for the footer of every page: the code that ran the records (version, git
commit, machine class, from each record's `env`), the code that built the site, the date, and the command that
builds it again. A page printed or sent on its own still says all of this.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gapt_bench.results.site.html import esc

UNKNOWN = "unknown"
SHOWN = 6  # distinct values listed per field before "and N more"


@dataclass(frozen=True)
class Provenance:
    suite_version: str
    suite_commit: str  # of the code building the site ("unknown" outside a git checkout)
    record_versions: dict[str, int]  # value -> number of records
    record_commits: dict[str, int]
    machines: dict[str, int]
    first_started: str
    last_finished: str
    generated: str
    command: str
    n_records: int


def current_commit() -> str:
    """The git commit of the installed gapt_bench (with "+dirty" for uncommitted changes to tracked files)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return UNKNOWN
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN


def build_date() -> str:
    """Now, in UTC; SOURCE_DATE_EPOCH (the reproducible-builds convention) pins it for byte-identical rebuilds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch and epoch.isdigit() else datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _commit_of(env: dict) -> str:
    sha = env.get("git_sha")
    if not sha:
        return UNKNOWN
    return str(sha)[:12] + ("+dirty" if env.get("git_dirty") else "")


def collect(records: Sequence[dict], command: str) -> Provenance:
    from gapt_bench import __version__

    envs = [r.get("env") or {} for r in records]
    started = sorted(str(r["started_at"]) for r in records if r.get("started_at"))
    finished = sorted(str(r["finished_at"]) for r in records if r.get("finished_at"))
    return Provenance(
        suite_version=__version__,
        suite_commit=current_commit(),
        record_versions=dict(Counter(str(e.get("gapt_bench") or UNKNOWN) for e in envs).most_common()),
        record_commits=dict(Counter(_commit_of(e) for e in envs).most_common()),
        machines=dict(Counter(str(e.get("machine_class") or UNKNOWN) for e in envs).most_common()),
        first_started=started[0] if started else UNKNOWN,
        last_finished=finished[-1] if finished else UNKNOWN,
        generated=build_date(),
        command=command,
        n_records=len(records),
    )


def _counts(values: dict[str, int], unit: str = "runs") -> str:
    shown = [f"<code>{esc(v)}</code> ({n} {unit})" for v, n in list(values.items())[:SHOWN]]
    rest = len(values) - SHOWN
    return ", ".join(shown) + (f", and {rest} more" if rest > 0 else "")


def footer(p: Provenance) -> str:
    """The provenance block every page ends with."""
    return (
        '<footer class="provenance"><strong>Provenance.</strong> '
        f"{p.n_records} run records, run from {esc(p.first_started)} to {esc(p.last_finished)} by gapt-bench "
        f"{_counts(p.record_versions)} at git commit {_counts(p.record_commits)}, on machine class "
        f"{_counts(p.machines)} (a record without one predates machine classes).<br>"
        f"Site built {esc(p.generated)} by gapt-bench <code>{esc(p.suite_version)}</code> at git commit "
        f"<code>{esc(p.suite_commit)}</code>. Build it again with: "
        f'<code class="command">{esc(p.command)}</code></footer>'
    )
