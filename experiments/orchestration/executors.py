"""The executors a sweep's jobs or a study's workers run on, one class each: a new executor
is one class here and its entry in EXECUTORS, and no other module names an executor.

An executor is its name (what `--executor` takes and what a submission in sweep.json
records, so a name never changes), the submitit executor it builds from a cluster profile,
and what submitting, tracking and waiting must know of its jobs: where their submitit files
go, whether they run in this process, how many torch threads a task gets, how a job that
died is told from one that runs, and whether a study's workers may spread over nodes. The
classes wrap submitit's own of the same names (chosen by AutoExecutor's `cluster=`) with
what this project decides on top of them.

This module stays light to import (submitit and the rest inside the methods): the commands'
argument parsers take their `--executor` choices from EXECUTORS, and `--help` is instant.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from experiments.orchestration.cluster import Profile


def cores() -> int:
    return len(os.sched_getaffinity(0))


class Executor:
    """Where jobs run, and what submitting, tracking and waiting ask of it. A subclass sets
    its name and help texts and overrides what differs from these defaults (a base
    instance stands for a recorded executor this version does not know: tracking reads its
    jobs from their files alone)."""

    name: ClassVar[str]
    sweep_help: ClassVar[str]  # what its sweep jobs are, for `sweep --help`
    study_help: ClassVar[str]  # what its study workers are, for `study --help`
    runs_here: ClassVar[bool] = True  # its jobs train on this machine (the demo needs that)
    in_process: ClassVar[bool] = False  # a job runs in this process once waited on: no files
    spreads_over_nodes: ClassVar[bool] = False  # a profile's `nodes` > 1 spreads study workers
    queued_in_slurm: ClassVar[bool] = False  # squeue lists its jobs (tracking asks it)

    def make(self, profile: Profile, folder: str | Path, name: str = "perceiver"):
        """A submitit executor writing its job files to `folder`. On this machine only the
        profile's time limit and requeue budget apply; its resource requests are SLURM's."""
        import submitit

        ex = submitit.AutoExecutor(folder, cluster=self.name,
                                   local_max_num_timeout=profile.max_num_timeout)
        ex.update_parameters(name=name, timeout_min=profile.timeout_min)
        return ex

    def logs(self, folder: Path) -> Path:
        """Where a sweep's jobs or a study's workers write their submitit files: one
        folder for all."""
        return folder / "submitit"

    def runs_per_job(self, units: int, asked: int | None) -> int:
        """How many of `units` runs (or packs of seeds) one job trains; `asked` is
        --runs-per-job."""
        return asked or 1

    def threads(self, profile: Profile, jobs: int) -> int | None:
        """torch threads of each task while `jobs` jobs run at once; None leaves the
        process's own setting."""
        return None

    def layout(self, units: int, asked: int | None, profile: Profile) -> tuple[int, int | None]:
        """(runs per job, threads per task) for a submission of `units` runs or packs."""
        per_job = self.runs_per_job(units, asked)
        return per_job, self.threads(profile, math.ceil(units / per_job))

    def lost(self, job: Mapping[str, Any], submission: Mapping[str, Any]) -> bool:
        """Whether a recorded job (sweep.json) is known to be gone although its files do not
        say it ended; False where only its files or the scheduler can tell."""
        return False

    def ended(self, job) -> bool:
        """Whether a submitit job returned, raised or died, without asking SLURM's
        accounting (sacct), which many clusters and the local one lack: it wrote its
        result file."""
        return job.paths.result_pickle.exists()


class LocalExecutor(Executor):
    """Subprocesses on this machine, every job started at once (submitit's LocalExecutor).
    One task per job: it ignores tasks_per_node. A job's id is the pid of its controller,
    which restarts a preempted job."""

    name = "local"
    sweep_help = "subprocesses on this machine"
    study_help = "worker processes on this machine"

    def runs_per_job(self, units: int, asked: int | None) -> int:
        """By default one job per core, each training its share of the runs with one
        thread (with --pack-seeds, a "run" here is a pack). Independent runs scale almost
        linearly with cores, while one small Perceiver on a CPU gains little from more
        intra-op threads (docs/performance.md, "Threads"), so one thread per run gets the
        most runs done."""
        return asked or math.ceil(units / min(units, cores()))

    def threads(self, profile: Profile, jobs: int) -> int | None:
        """The cores shared out among the jobs: with fewer jobs than cores each job gets
        the spare cores as threads."""
        return max(1, cores() // jobs)

    def lost(self, job: Mapping[str, Any], submission: Mapping[str, Any]) -> bool:
        """Submitted from this host and its controller process no longer exists."""
        from experiments.runfolder import pid_alive

        return submission.get("host") == socket.gethostname() and \
            not pid_alive(int(job["job_id"]))

    def ended(self, job) -> bool:
        """Its process has exited."""
        return job.done()


class SlurmExecutor(Executor):
    """Job arrays on a SLURM cluster (submitit's SlurmExecutor) with the profile's resource
    requests: a real cluster, or the one- or multi-node one of slurm/local-cluster.sh."""

    name = "slurm"
    sweep_help = "job arrays"
    study_help = "a job array of workers"
    runs_here = False
    spreads_over_nodes = True
    queued_in_slurm = True

    def make(self, profile: Profile, folder: str | Path, name: str = "perceiver"):
        """A profile's slurm_conf is exported as SLURM_CONF in this process, so sbatch,
        scontrol and the jobs themselves talk to that cluster; null leaves SLURM_CONF as it
        is."""
        import submitit

        from perceiver_core.config import ConfigError

        if profile.slurm_conf is not None:
            if not Path(profile.slurm_conf).is_file():
                raise ConfigError(
                    f"cluster profile {profile.name!r}: slurm_conf {profile.slurm_conf} does "
                    "not exist; for the local cluster run `slurm/local-cluster.sh start` first")
            os.environ["SLURM_CONF"] = profile.slurm_conf
        try:
            ex = submitit.AutoExecutor(folder, cluster=self.name,
                                       slurm_max_num_timeout=profile.max_num_timeout)
        except RuntimeError:
            raise ConfigError("--executor slurm needs SLURM's client commands (srun, sbatch) "
                              "on PATH; install slurm-client or use --executor local") from None
        ex.update_parameters(
            name=name,
            timeout_min=profile.timeout_min,
            mem_gb=profile.mem_gb,
            cpus_per_task=profile.cpus_per_task,
            **profile.gpu_request(),
            tasks_per_node=profile.ntasks_per_node,
            nodes=profile.nodes,
            slurm_partition=profile.partition,
            slurm_constraint=profile.constraint,
            slurm_account=profile.account,
            slurm_qos=profile.qos,
            slurm_array_parallelism=profile.array_parallelism,
            slurm_signal_delay_s=profile.signal_delay_s,
            slurm_setup=list(profile.setup) or None,
        )
        return ex

    def logs(self, folder: Path) -> Path:
        """One folder per job: arrays can be large."""
        return folder / "submitit" / "%j"

    def threads(self, profile: Profile, jobs: int) -> int | None:
        """The CPUs each task asked for."""
        return profile.cpus_per_task


class DebugExecutor(Executor):
    """In this process, each job when it is waited on (submitit's DebugExecutor), for
    breakpoints; its jobs leave no files, their runs' records say it all."""

    name = "debug"
    sweep_help = "in this process, for breakpoints"
    study_help = "in this process, one after another"
    in_process = True


# In the order `--executor` lists them.
EXECUTORS: dict[str, Executor] = {ex.name: ex for ex in
                                  (LocalExecutor(), SlurmExecutor(), DebugExecutor())}
DEFAULT = EXECUTORS["local"]  # what `--executor` and the demo use unless told otherwise
