"""The environment a run executed in, for the run record: versions, git sha, device, and the machine class.

CPU results are bit-identical per seed on one machine but not across CPU models (different kernels, vector
widths), so every record names its `machine_class`: the CPU model and the ISA extensions that change float
results (e.g. "cpu:Intel(R) Xeon(R) Platinum 8481C [avx2,avx512f,fma]"), or the GPU ("cuda:NVIDIA H200"). The gate
compares results across machine classes statistically, never bit for bit.
"""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

# ISA extensions that select different float kernels (and so different low bits) in torch's CPU backend.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "amx_bf16",
    "amx_tile",
    "asimd",
    "sve",
    "sve2",
)


@lru_cache(maxsize=1)
def _git() -> tuple[str | None, bool | None]:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None, None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, list[str]]:
    """(CPU model name, the ISA_FLAGS it has), from /proc/cpuinfo where there is one."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and value.strip():
                model = value.strip()
            elif key in ("flags", "features"):
                flags |= set(value.split())
    except OSError:
        pass
    return model, [f for f in ISA_FLAGS if f in flags]


def machine_class(device: str = "cpu", gpu_name: str | None = None) -> str:
    """What results are bit-comparable within: the GPU name on CUDA, else the CPU model and its ISA flags."""
    if device.startswith("cuda") and gpu_name:
        return f"cuda:{gpu_name}"
    model, flags = cpu_info()
    return f"cpu:{model} [{','.join(flags)}]"


def capture(device: Any = None) -> dict[str, Any]:
    from importlib import metadata

    import torch

    from gapt_bench import __version__

    sha, dirty = _git()
    dev = str(device) if device is not None else "cpu"
    cpu_model, cpu_flags = cpu_info()
    gpu = driver = None
    if dev.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(dev))
        driver = _nvidia_driver()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "gapt_bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": metadata.version("transformers"),  # the installed version, without the 2-6 s import
        "cuda": torch.version.cuda,
        "device": dev,
        "device_name": gpu or cpu_model,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "gpu_name": gpu,
        "gpu_driver": driver,
        "machine_class": machine_class(dev, gpu),
    }


@lru_cache(maxsize=1)
def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
