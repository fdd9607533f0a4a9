"""Cluster profiles (`slurm/profiles/NAME.yaml`), their `cluster.KEY=value` overrides, and
the base of the job callables that run under them (`Requeueable`).

A profile holds everything about *where* runs go (partition, GPUs, time limit, requeue
budget, setup lines) so sweep and study specs only say *what* to run. The same profile
drives `--executor slurm` on a real cluster, on the (one- or multi-node) cluster of
`slurm/local-cluster.sh`, or is mostly ignored by `--executor local|debug`, which run on
this machine (each executor builds its submitit executor from a profile:
experiments/orchestration/executors.py). Bad profiles raise ConfigError before anything is
submitted.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import signal
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from experiments.config import read_user_yaml
from perceiver_core.config import ConfigError, check_min

PROFILE_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"
# Where slurm/local-cluster.sh keeps its state unless PERCEIVER_SLURM_DIR says otherwise.
LOCAL_CLUSTER_DIR = "/tmp/perceiver-slurm"
GPU_FLAGS = ("gpus-per-node", "gres")
CLUSTER_PREFIX = "cluster."  # command-line items that override the cluster profile


@dataclass(frozen=True)
class Profile:
    """One cluster's submission settings; field names are the YAML keys."""

    name: str = "custom"  # the file's stem; not a YAML key
    partition: str | None = None
    gpus_per_node: int = 0
    gpu_flag: str = "gpus-per-node"  # how sbatch is asked for them: --gpus-per-node or --gres
    gpu_type: str | None = None  # a GPU type the site names, e.g. a100: gpu:a100:8
    cpus_per_task: int = 1
    mem_gb: float | None = None  # null = the partition's default memory
    timeout_min: int = 60
    constraint: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 256  # array tasks running at once
    signal_delay_s: int = 90  # USR2 this long before the time limit, to checkpoint + requeue
    max_num_timeout: int = 3  # requeues after time-outs before a run is given up
    setup: tuple[str, ...] = ()  # shell lines run in the batch script before the job
    tasks_per_node: int | None = None  # null = gpus_per_node, or 1 without GPUs
    nodes: int = 1
    slurm_conf: str | None = None  # SLURM_CONF for the client commands; $VARS expand

    def __post_init__(self) -> None:
        for name in ("partition", "constraint", "account", "qos", "slurm_conf", "gpu_type"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"cluster.{name}={value!r} must be a string or null")
        for name, minimum in (("gpus_per_node", 0), ("cpus_per_task", 1), ("timeout_min", 1),
                              ("array_parallelism", 1), ("signal_delay_s", 0),
                              ("max_num_timeout", 0), ("nodes", 1), ("tasks_per_node", 1)):
            value = getattr(self, name)
            if value is None and name == "tasks_per_node":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"cluster.{name}={value!r} must be an integer >= {minimum}")
            check_min("cluster", name, value, minimum)
        if self.gpu_flag not in GPU_FLAGS:
            raise ConfigError(f"cluster.gpu_flag={self.gpu_flag!r} must be one of "
                              f"{', '.join(GPU_FLAGS)} (whichever your site's sbatch accepts)")
        if self.mem_gb is not None:
            check_min("cluster", "mem_gb", self.mem_gb, 0, strict=True)
            object.__setattr__(self, "mem_gb", float(self.mem_gb))
        setup = () if self.setup is None else self.setup
        if not isinstance(setup, (list, tuple)) or not all(isinstance(s, str) for s in setup):
            raise ConfigError(f"cluster.setup={setup!r} must be a list of shell lines (strings)")
        object.__setattr__(self, "setup", tuple(setup))
        if self.slurm_conf is not None:
            defaults = {"PERCEIVER_SLURM_DIR": LOCAL_CLUSTER_DIR, **os.environ}
            expanded = string.Template(self.slurm_conf).safe_substitute(defaults)
            object.__setattr__(self, "slurm_conf", str(Path(expanded).expanduser()))

    def gpu_request(self) -> dict[str, Any]:
        """submitit's parameters asking for gpus_per_node GPUs the site's way: sites
        differ in which of --gpus-per-node (SLURM's newer flag) and --gres=gpu:N they
        accept or account correctly, so the profile names one; none on CPU clusters (no
        --gpus-per-node=0)."""
        if not self.gpus_per_node:
            return {}
        count = f"{self.gpu_type}:{self.gpus_per_node}" if self.gpu_type else self.gpus_per_node
        if self.gpu_flag == "gres":
            return {"slurm_gres": f"gpu:{count}"}
        return {"slurm_gpus_per_node": count}  # not submitit's gpus_per_node: an int only

    def with_overrides(self, overrides: Mapping[str, Any]) -> Profile:
        """This profile with `overrides` (a command line's cluster.KEY=value items) in place
        of its keys, validated like the file's."""
        unknown = sorted(set(overrides) - set(PROFILE_KEYS))
        if unknown:
            raise ConfigError(f"unknown cluster profile key(s) {unknown}; "
                              f"valid keys are {', '.join(PROFILE_KEYS)}")
        try:
            return dataclasses.replace(self, **overrides)
        except ConfigError as exc:
            raise ConfigError(f"cluster profile {self.name!r} override: {exc}") from None

    @property
    def ntasks_per_node(self) -> int:
        """tasks_per_node, or one task per GPU (FAIR launcher style), or 1 without GPUs."""
        return self.tasks_per_node or max(1, self.gpus_per_node)


PROFILE_KEYS = [f.name for f in fields(Profile) if f.name != "name"]


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_path(name_or_path: str | Path) -> Path:
    """A name means slurm/profiles/NAME.yaml; anything that looks like a file is a path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text or Path(text).is_file():
        return Path(text)
    path = PROFILE_DIR / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown cluster profile {text!r}; available: "
                          f"{', '.join(profiles())} (in {PROFILE_DIR}), or give a YAML path")
    return path


def load_profile(name_or_path: str | Path) -> Profile:
    path = profile_path(name_or_path)
    content = read_user_yaml(path)
    for key in content:
        if key not in PROFILE_KEYS:
            close = difflib.get_close_matches(str(key), PROFILE_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"valid keys are {', '.join(PROFILE_KEYS)}"
            raise ConfigError(f"{path}: unknown cluster profile key {key!r}; {hint}")
    try:
        return Profile(name=path.stem, **content)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


class Requeueable:
    """Base of a submitit job callable that requeues itself on preemption or time-out.

    submitit's signal handler calls `checkpoint()`, pickles what it returns and runs
    `scontrol requeue`. The requeue makes slurmstepd SIGTERM every process of the job,
    scontrol included: if scontrol has not exited yet it dies, and submitit raises
    CalledProcessError into the training loop, which records the run as failed although
    it was requeued (seen about once in ten preemptions on the local cluster). SIGTERM is
    therefore ignored from here on; scontrol inherits that across exec. The job process
    only logged SIGTERM anyway (submitit's "Bypassing signal"), and it exits right after
    the requeue."""

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def split_overrides(items: list[str]) -> tuple[dict, dict]:
    """A command line's `key=value` items as (config overrides, cluster profile overrides,
    the `cluster.KEY=value` ones), both typed like YAML values."""
    from experiments.config import ConfigError, parse_overrides

    stray = [item for item in items if "=" not in item]
    if stray:
        raise ConfigError("expected key=value overrides after the sweep or study file, got "
                          f"{stray}")
    overrides = parse_overrides(items)
    cluster = {k.removeprefix(CLUSTER_PREFIX): v for k, v in overrides.items()
               if k.startswith(CLUSTER_PREFIX)}
    return {k: v for k, v in overrides.items() if not k.startswith(CLUSTER_PREFIX)}, cluster
