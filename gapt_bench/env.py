"""The environment a run executed in, for the run record (versions, git sha, device)."""
from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def _git() -> tuple[str | None, bool | None]:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def capture(device: Any = None) -> dict[str, Any]:
    import torch
    import transformers

    from gapt_bench import __version__

    sha, dirty = _git()
    dev = str(device) if device is not None else "cpu"
    name = platform.processor() or platform.machine()
    if dev.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(dev))
    return {
        "git_sha": sha, "git_dirty": dirty, "gapt_bench": __version__, "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "device": dev, "device_name": name, "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }
