"""Following submitted work until it has ended: the one wait loop behind `sweep --wait`,
`study --wait` and the demo, and the demo's progress line.

A run counts as busy while its state is queued or running, while SLURM still lists its
job (a job requeued after a node loss looks failed to its files until the controller
starts it again) and while its job's processes have not exited (a DDP job's other ranks,
a packed job's remaining runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.formatting import duration
from experiments.orchestration.executors import Executor
from experiments.orchestration.sweeps import Point, Sweep
from experiments.orchestration.tracking import (
    ACTIVE,
    DONE,
    job_outcome,
    latest_jobs,
    run_states,
    slurm_queue,
)
from experiments.planning import planned_steps
from experiments.runfolder import read_manifest

POLL_S = 1.0
QUIET_S = 30.0  # longest silence between progress lines while nothing changes


def wait_until(done: Callable[[], bool], poll_s: float = POLL_S,
               on_poll: Callable[[], None] | None = None) -> None:
    """Poll `done` (after `on_poll`, e.g. a progress line) every poll_s seconds until true."""
    while True:
        if on_poll is not None:
            on_poll()
        if done():
            return
        time.sleep(poll_s)


def runs_busy(folder: Path, run_ids: set[str]) -> bool:
    manifest = read_manifest(folder)
    jobs = [job for run_id, job in latest_jobs(manifest).items() if run_id in run_ids]
    queue = slurm_queue(manifest)
    listed = [queue[job["job_id"]] for job, _ in jobs if job["job_id"] in queue]
    return any(s.state in ACTIVE for s in run_states(folder) if s.run_id in run_ids) or \
        any(not q.finished for q in listed) or \
        any(job_outcome(job, submission, folder) in ("queued", "started", "requeued")
            for job, submission in jobs)


def wait_for_runs(folder: Path, run_ids: set[str], poll_s: float = POLL_S,
                  on_poll: Callable[[], None] | None = None) -> None:
    """Until no run of `run_ids` is busy (above)."""
    wait_until(lambda: not runs_busy(folder, run_ids), poll_s, on_poll)


class ProgressLine:
    """Prints which runs of a sweep are done and training, and an ETA, when that changes
    (or every QUIET_S seconds)."""

    def __init__(self, sweep: Sweep, folder: Path, todo: Sequence[Point],
                 log: Callable[[str], None]):
        self.folder, self.log = folder, log
        self.ids = {p.run_id for p in sweep.points}
        self.steps = {p.run_id: planned_steps(p.config) for p in todo}
        self.start = time.time()
        self.last: tuple = ()
        self.last_time = 0.0

    def __call__(self) -> None:
        states = [s for s in run_states(self.folder) if s.run_id in self.ids]
        counts: dict[str, int] = {}
        for s in states:
            counts[s.state] = counts.get(s.state, 0) + 1
        training = [s for s in states if s.state == "running"
                    and s.result.get("status") == "running"]
        done = sum(min(1.0, s.result.get("step", 0) / self.steps[s.run_id])
                   if s.state not in DONE else 1.0 for s in states if s.run_id in self.steps)
        elapsed = time.time() - self.start
        fraction = done / len(self.steps) if self.steps else 1.0
        eta = duration(elapsed * (1 - fraction) / fraction) if fraction > 0 else "-"
        waiting = sum(counts.get(state, 0) for state in ACTIVE) - len(training)
        finished = ", ".join(f"{counts[s]} {s}" for s in (*DONE, "failed", "interrupted")
                             if s in counts)
        running = ", ".join(f"{s.run_id} step {s.result.get('step', 0)}/"
                            f"{self.steps.get(s.run_id, '?')}" for s in training)
        key = (tuple(sorted(counts.items())), running)
        if key != self.last or time.time() - self.last_time >= QUIET_S:
            self.log(f"[{duration(elapsed)}] {finished or '0 finished'} of {len(states)}; "
                     f"training: {running or '-'}; waiting: {waiting}; "
                     f"{100 * fraction:.0f}% of the work done, ETA {eta}")
            self.last, self.last_time = key, time.time()


def balanced(points: Sequence[Point]) -> list[Point]:
    """Seed-major order. The local executor gives each job a contiguous share of the
    points; in this order, with as many seeds as jobs, every job trains one seed of every
    config, so the jobs take the same time and none idles at the end."""
    return sorted(points, key=lambda p: (p.config.train.seed, p.index))


def train_here(sweep: Sweep, folder: Path, executor: Executor, poll_s: float,
               log: Callable[[str], None]) -> None:
    """Train a sweep on this machine (an executor that runs here) and follow it to the end:
    submit what is missing (failed runs again: they resume from their checkpoints), print
    a progress line as runs move, return once nothing of the sweep is busy."""
    from experiments.orchestration.cluster import load_profile
    from experiments.orchestration.submit import plan, submit

    stale = [s.run_id for s in run_states(folder) if s.run_id not in
             {p.run_id for p in sweep.points}]
    if stale:
        log(f"warning: {folder} holds {len(stale)} run(s) of another sweep definition "
            f"({', '.join(stale[:4])}{', ...' if len(stale) > 4 else ''}); they appear in the "
            "figures: delete them or pass another --out")
    todo, kept = plan(sweep, folder, rerun_failed=True)
    reused = ", ".join(f"{len(points)} {state}" for state, points in sorted(kept.items()))
    log(f"sweep {sweep.path}: {len(sweep.points)} runs in {folder} "
        f"({reused or 'none finished yet'}; {len(todo)} to train)")
    if todo:
        entry = submit(sweep, balanced(todo), folder, load_profile("local"), executor=executor)
        log(f"submitted {len(todo)} run(s) as {len(entry['jobs'])} {executor.name} job(s), "
            f"{entry['runs_per_job']} run(s) each; `perceiver-ablate status {folder}` shows "
            "them too")
    wait_for_runs(folder, {p.run_id for p in sweep.points}, poll_s,
                  ProgressLine(sweep, folder, todo, log))
