"""What a run records of the machine it ran on, and how it tunes that machine's memory and
compile cache: kept apart from the training maths (experiments/engine.py) and the run's
lifecycle (experiments/train.py), which both use it but are about neither.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

COMPILE_CACHE_ENV = "PERCEIVER_COMPILE_CACHE"  # where train.compile keeps its kernels
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def versions() -> dict:
    try:
        package = version("perceiver-ablate")
    except PackageNotFoundError:
        package = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"torch": torch.__version__, "python": platform.python_version(),
            "package": package, "git_commit": commit or None}


def use_compile_cache() -> Path:
    """The folder where torch.compile keeps its kernels (Inductor's generated code, with
    Triton's compiled kernels below it): $PERCEIVER_COMPILE_CACHE when set, which then
    overrides TORCHINDUCTOR_CACHE_DIR; else Inductor's own choice, TORCHINDUCTOR_CACHE_DIR
    or torchinductor_USER under $TMPDIR. Keep it node-local: a cache on an NFS home eats
    its inode quota, and slow reads there can stall one rank past its peers' NCCL
    time-out. (TORCHINDUCTOR_CACHE_DIR cannot tell the user's setting from Inductor's:
    Inductor exports its default there once imported.)"""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    folder = os.environ.get(COMPILE_CACHE_ENV)
    if folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return Path(cache_dir())


def keep_freed_memory() -> None:
    """Make glibc serve large blocks from its heap and keep freed memory for reuse.

    By default glibc maps every block above its mmap threshold (at most 32 MiB) fresh from
    the OS and unmaps it when freed, so each such tensor is page-faulted in again on every
    step, a large share of a CPU training step at large M (docs/performance.md, "Scaling
    in M"). The cost: freed memory stays resident for reuse. A no-op without glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    largest = 2**31 - 1  # the parameters are C ints
    mallopt(M_MMAP_THRESHOLD, largest)
    mallopt(M_TRIM_THRESHOLD, largest)
