"""Submitting a sweep's runs with submitit, and the job that trains them.

The job is a callable object in the style of FAIR's `run_with_submitit.py` (DeiT, MAE,
DINO): submitit pickles it, runs `__call__` on the cluster and, when SLURM signals a
preemption or the time limit, calls `checkpoint()`, which hands back the same object to be
requeued (experiments.orchestration.cluster.Requeueable). Nothing else needs saving: each run
checkpoints itself as it trains and `train_run` resumes from there (or returns at once for
a finished run), so a requeued job simply starts over its list of runs.

One job trains one run, or K runs one after another (`--runs-per-job K`, so that tiny
runs do not flood the scheduler), or packs of up to K seeds of one config, each pack
trained together in one process (`--pack-seeds K`, experiments/packing.py). SLURM jobs go
out as one array, throttled by the profile's `array_parallelism`. A job with several tasks
(`tasks_per_node`, one per GPU) runs `__call__` in every task and `train_run` joins them
into one DDP run.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from experiments.config import RunConfig
from experiments.locks import folder_lock
from experiments.orchestration.cluster import Profile, Requeueable
from experiments.orchestration.executors import Executor
from experiments.orchestration.sweeps import Point, Sweep
from experiments.orchestration.tracking import add_submission, relative, run_states
from experiments.packing import packs
from experiments.runfolder import RunFolder, migrate

SUBMITTABLE = ("new", "failed", "interrupted")


class SweepJob(Requeueable):
    """Trains `packs` ([[(run folder, nested config)]]) one after another, the runs of a
    pack together (a pack of one is a plain run)."""

    def __init__(self, packs: list[list[tuple[str, dict]]], threads: int | None = None):
        self.packs = packs
        self.threads = threads

    def __call__(self) -> dict[str, str]:
        import submitit
        import torch

        from experiments.distributed import leave_distributed
        from experiments.packing import train_pack

        if self.threads:
            torch.set_num_threads(self.threads)
        statuses, failed = {}, []
        for pack in self.packs:
            dirs = [run_dir for run_dir, _ in pack]
            try:
                results = train_pack([RunConfig.from_dict(c) for _, c in pack], dirs)
                statuses.update({d: r["status"] for d, r in zip(dirs, results, strict=True)})
            except submitit.core.utils.UncompletedJobError:
                raise  # out of requeues: this job is over
            except Exception:
                if len(self.packs) == 1:
                    raise
                # train_pack recorded `failed` if it got that far; the job's other runs
                # still get trained, and the job ends in an error that names the failures.
                # One "run DIR failed:" line per run, then the traceback: how tracking's
                # log_error_line finds each run's error in the job's log.
                print("".join(f"run {d} failed:\n" for d in dirs) + traceback.format_exc(),
                      file=sys.stderr, flush=True)
                failed += dirs
        if failed:
            raise RuntimeError(f"{len(failed)} of {sum(map(len, self.packs))} runs failed: "
                               f"{failed}")
        leave_distributed()
        return statuses


def plan(sweep: Sweep, folder: Path, rerun_failed: bool = False
         ) -> tuple[list[Point], dict[str, list[Point]]]:
    """(points to submit, the others by state): a point is submitted unless it finished,
    is queued or running, or failed (unless rerun_failed); an interrupted one is submitted
    again and resumes from its checkpoint. Run folders named by an
    earlier version's ids are renamed first (experiments/runfolder.py, migrate)."""
    states = {}
    if folder.is_dir():  # a new folder is made by the submission, not by looking at it
        with folder_lock(folder):
            migrate(folder)
            states = {s.run_id: s.state for s in run_states(folder)}
    submit, kept = [], {}
    for point in sweep.points:
        state = states.get(point.run_id, "new")
        if state in ("new", "interrupted") or (state == "failed" and rerun_failed):
            submit.append(point)
        else:
            kept.setdefault(state, []).append(point)
    return submit, kept


def submit(sweep: Sweep, points: list[Point], folder: Path, profile: Profile, *,
           executor: Executor, runs_per_job: int | None = None, pack_seeds: int = 1,
           profile_overrides: dict | None = None) -> dict:
    """Submit `points` (as one array on SLURM) and record the submission in the sweep
    folder's manifest; returns the submission entry. An in-process executor (debug) trains
    them here, in this process, after the manifest is written.

    The folder lock is held from reading the runs' states to recording the submission, so
    this claims its runs: a point that another command queued, ran or finished since
    `plan` looked is dropped here, and concurrent submissions into one folder neither
    submit a run twice nor lose each other's manifest entries."""
    effective = profile.with_overrides(profile_overrides or {})  # fails before the lock
    ex = executor.make(effective, executor.logs(folder),
                       name=f"sweep-{sweep.name}".replace("/", "-"))
    with folder_lock(folder):
        states = {s.run_id: s.state for s in run_states(folder)}
        points = [p for p in points if states.get(p.run_id, "new") in SUBMITTABLE]
        if not points:
            return {"submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "jobs": [], "runs_per_job": 0, "threads": None}
        entry, jobs = submit_claimed(sweep, points, folder, ex, effective, executor=executor,
                                     runs_per_job=runs_per_job, pack_seeds=pack_seeds)
    if executor.in_process:
        for job in jobs:
            job.result()
    return entry


def submit_claimed(sweep: Sweep, points: list[Point], folder: Path, ex, effective: Profile,
                   *, executor: Executor, runs_per_job: int | None,
                   pack_seeds: int = 1) -> tuple[dict, list]:
    """(manifest entry, submitit jobs) of points nobody else submits (the lock is held);
    `ex` is the executor made from `effective`, the profile with its overrides. With
    pack_seeds > 1 the unit of a job is a pack of seeds (runs_per_job is then None)."""
    units = (packs(points, pack_seeds, lambda p: p.config) if pack_seeds > 1
             else [[p] for p in points])
    per_job, threads = executor.layout(len(units), runs_per_job, effective)
    job_units = [units[i:i + per_job] for i in range(0, len(units), per_job)]
    groups = [[p for unit in chunk for p in unit] for chunk in job_units]
    jobs = ex.submit_array([SweepJob([[(str(RunFolder.of(folder, p.config).path.resolve()),
                                        p.config.to_dict()) for p in unit] for unit in chunk],
                                     threads) for chunk in job_units])
    entry = {
        "submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sweep_file": str(sweep.path), "spec": sweep.spec, "overrides": sweep.overrides,
        "executor": executor.name, "cluster": effective.name,
        "profile": dataclasses.asdict(effective),
        "runs_per_job": max(map(len, groups)), "pack_seeds": pack_seeds,
        "threads": threads, "host": socket.gethostname(),
        "jobs": [job_entry(job, group, folder, executor.in_process)
                 for job, group in zip(jobs, groups, strict=True)]}
    add_submission(folder, [{"run_id": p.run_id, "params": p.params,
                             "config": p.config.to_dict()} for p in points], entry)
    return entry, jobs


def job_entry(job, group: list[Point], folder: Path, in_process: bool) -> dict:
    paths = None if in_process else job.paths  # task 0's files: the task that writes records
    return {"job_id": str(job.job_id), "run_ids": [p.run_id for p in group],
            "stdout": paths and relative(paths.stdout, folder),
            "stderr": paths and relative(paths.stderr, folder),
            "result": paths and relative(paths.result_pickle, folder)}
