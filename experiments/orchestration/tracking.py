"""What was submitted to a results folder, and what state each of its runs is in.

A sweep folder holds a manifest, `sweep.json`, next to its run folders:

    {"runs": [{"run_id", "params": {axis: value}, "config": {...nested RunConfig...}}],
     "submissions": [{"submitted_at", "sweep_file", "spec", "overrides", "executor",
                      "cluster", "profile", "host", "folder",
                      "jobs": [{"job_id", "run_ids", "stdout", "stderr", "result"}]}]}

(paths relative to the sweep folder), so `status` and a resubmission need nothing else.
Writers hold the folder lock (experiments/locks.py). A manifest written before run ids
became signatures is read with each run under its current id (the old one kept as
`legacy_run_id`), as its run folders are renamed (experiments/runfolder.py, migrate).

A run's state comes from its run folder (RunFolder.records, run_status: result.json's
status and heartbeat), the latest job that
ran it (manifest) and that job's submitit files (result pickle, log). SLURM's accounting
(`sacct`) is never asked: many clusters lack it, and the local one has none. `squeue` is,
for SLURM jobs still in the queue: only the controller knows that a job whose node died
was requeued (its surviving ranks' files say they failed) and waits to run again.

    pending    submitted, not started yet (queued)
    running    its job has started (and the record's heartbeat says how recently it spoke)
    requeued   preempted or timed out, checkpointed, waiting in the queue to resume
    completed / diverged / pruned   finished; its record holds the final metrics
    failed     the run or its job ended without finishing it (the log path says why)
    interrupted  the record says running, but the run was cut off without a chance to
               write (SIGKILL, the OOM killer, a node lost, its job cancelled): its
               process on this host is gone or its heartbeat is stale
               (experiments/runfolder.py); submitted again, it resumes from its checkpoint
    new        nothing is queued or running for it and it has not finished: (re)submittable
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.orchestration.executors import EXECUTORS, Executor
from experiments.records import timestamp, write_json
from experiments.runfolder import (
    FINAL,
    MANIFEST,
    RunFolder,
    heartbeat_age_s,
    read_manifest,
    run_folders,
    run_status,
)

DONE = (*FINAL, "pruned")  # states a sweep does not submit again
ACTIVE = ("pending", "running", "requeued")
STATE_ORDER = (*DONE, "failed", "interrupted", *ACTIVE, "new")  # how states are listed
# submitit's log lines (stdout: submitit.core.submission, JobEnvironment._requeue) and
# slurmstepd's line (stderr) when it kills a job: scancel, or the time limit without a
# requeue (a requeue says "CANCELLED AT ... DUE TO JOB REQUEUE").
STARTED, REQUEUED = "Starting with JobEnvironment", "Requeued job"
CANCELLED = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ (\*\*\*|DUE TO (?!JOB REQUEUE))")


def add_submission(folder: str | Path, runs: list[dict], submission: dict) -> None:
    """Record runs ({run_id, params, config}, new ones appended in order) and one
    submission; atomic, so a reader never sees half of it. The caller holds the folder
    lock, or a concurrent submission's entry could be lost."""
    manifest = read_manifest(folder)
    known = {run["run_id"] for run in manifest["runs"]}
    manifest["runs"] += [run for run in runs if run["run_id"] not in known]
    manifest["submissions"].append(submission)
    write_json(Path(folder) / MANIFEST, manifest)


def relative(path: str | Path, folder: str | Path) -> str:
    """A path inside the sweep folder relative to it (the folder can be moved, e.g.
    rsynced from the cluster); anything else absolute."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


@dataclass
class RunState:
    run_id: str
    run_folder: RunFolder
    state: str
    config: dict[str, Any] = field(default_factory=dict)  # nested sections
    result: dict[str, Any] = field(default_factory=dict)  # result.json, or {}
    job_id: str | None = None
    log: Path | None = None  # the log of the job that ran it, shown for failed runs
    note: str = ""

    def heartbeat_age_s(self, now: float | None = None) -> float | None:
        return heartbeat_age_s(self.result, now)


def latest_jobs(manifest: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """run_id -> (job, submission) of the last submission that included it."""
    out = {}
    for submission in manifest["submissions"]:
        for job in submission["jobs"]:
            for run_id in job["run_ids"]:
                out[run_id] = (job, submission)
    return out


def recorded_executor(submission: dict) -> Executor:
    """The executor a submission went to; one this version does not know (a later
    version's) is read as the base Executor, whose jobs only their files speak for."""
    return EXECUTORS.get(submission["executor"], Executor())


def job_outcome(job: dict, submission: dict, folder: Path) -> str:
    """success | error | cancelled | lost | requeued | started | queued, from the job's
    submitit files. In-process (debug) jobs leave none: their runs' records say it all."""
    if not job.get("stderr"):
        return "success"
    result = folder / job["result"]
    if result.is_file():
        try:
            with result.open("rb") as f:
                return "success" if pickle.load(f)[0] == "success" else "error"
        except Exception:  # a result we cannot read is not a success
            return "error"
    out, err = (read_text(folder / job[name]) for name in ("stdout", "stderr"))
    if CANCELLED.search(err):
        return "cancelled"
    if recorded_executor(submission).lost(job, submission):
        return "lost"
    if out.rfind(REQUEUED) > out.rfind(STARTED):
        return "requeued"
    return "started" if STARTED in out else "queued"


@dataclass(frozen=True)
class Queued:
    """A SLURM job as squeue lists it."""

    state: str  # PENDING, RUNNING, COMPLETING, ...
    start: float | None  # when its current attempt started (or is expected to)
    reason: str  # why it is pending

    @property
    def finished(self) -> bool:
        """Over for good; squeue keeps listing such jobs for MinJobAge."""
        return self.state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                              "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE")


def slurm_queue(manifest: dict[str, Any]) -> dict[str, Queued]:
    """job id -> Queued, for this folder's SLURM jobs that squeue still lists (one
    call, this user's jobs, array tasks one per line); {} where squeue cannot answer (no
    SLURM client here, a results folder copied off the cluster)."""
    submissions = [s for s in manifest["submissions"]
                   if recorded_executor(s).queued_in_slurm and "profile" in s]  # its cluster
    if not submissions or shutil.which("squeue") is None:
        return {}
    wanted = {job["job_id"] for s in submissions for job in s["jobs"]}
    conf = submissions[-1]["profile"].get("slurm_conf")
    env = {**os.environ, "SLURM_CONF": conf} if conf and Path(conf).is_file() else None
    try:
        listed = subprocess.run(["squeue", "--me", "--array", "--noheader",
                                 "--format=%i|%T|%S|%r"], env=env, capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = (line.split("|", 3) for line in listed.stdout.splitlines() if line.count("|") >= 3)
    return {job: Queued(state, timestamp(start), reason)
            for job, state, start, reason in rows if job in wanted}


def read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


LOG_TAIL_BYTES = 1 << 20  # a job's error is near the end of its log; logs can be huge


def log_error_line(log: Path | None, run_id: str) -> str:
    """The last error line a job's log gives for one of its runs: the exception of the
    block SweepJob printed for that run ("run DIR failed:" and its traceback), else the
    log's last line (a one-run job's traceback ends it). Bytes that are not UTF-8 are
    shown as \\xNN, never dropped."""
    if log is None or not log.is_file():
        return ""
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
        lines = f.read().decode("utf-8", errors="backslashreplace").splitlines()
    starts = [i for i, line in enumerate(lines)
              if line.startswith("run ") and line.endswith(f"{run_id} failed:")]
    found = exception_line(lines[starts[-1] + 1:]) if starts else ""
    lines = [line for line in lines if line.strip()]
    return found or (lines[-1].strip() if lines else "")


def exception_line(lines: list[str]) -> str:
    """The first line of the exception that the traceback at the start of `lines` ends
    with (of a chain of tracebacks, the last one's)."""
    found, inside = "", False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            inside = True
        elif inside and line.strip() and not line[0].isspace():
            found, inside = line.strip(), False
        elif found and line.strip() and not line.startswith(("During handling", "The above")):
            break
    return found


def interruption(result: dict) -> str:
    """Why a record that says `running` is taken for interrupted (the note status shows)."""
    age = heartbeat_age_s(result)
    silent = "no heartbeat" if age is None else f"last heartbeat {age:.0f} s ago"
    return f"interrupted: {silent}, no trainer left (killed?); submit again to resume"


def run_state(run_id: str, run_folder: RunFolder, job_info: tuple[dict, dict] | None,
              folder: Path, config: dict | None = None,
              queued: Queued | None = None) -> RunState:
    """`queued`: the job as squeue lists it, if it does."""
    on_disk, result = run_folder.records()
    status = result.get("status")
    state = RunState(run_id, run_folder, "new", config or on_disk, result)
    if job_info is None:  # not submitted from here (a `train` run, a study trial)
        state.state = run_status(result) or "new"
        state.note = interruption(result) if state.state == "interrupted" else \
            last_line(result.get("error"))
        return state
    job, submission = job_info
    state.job_id = job["job_id"]
    if job.get("stderr"):
        state.log = folder / job["stderr"]
    if status in DONE:
        state.state = status
        return state
    outcome = job_outcome(job, submission, folder)
    if queued is not None:
        # Live beats files: a job requeued by the controller (its node died) keeps the
        # files of its previous attempt, which may say `error`, until it runs again.
        failed_now = status == "failed" and queued.start is not None \
            and (state.heartbeat_age_s(queued.start) or 0) <= 0  # in the current attempt
        if queued.state.startswith("REQUEUE") or (queued.state == "PENDING"
                                                  and outcome != "queued"):
            state.state, state.note = "requeued", f"waiting to run again: {queued.reason}"
            return state
        if queued.state == "PENDING" or (queued.state in ("RUNNING", "CONFIGURING")
                                         and not failed_now):
            state.state = "pending" if queued.state == "PENDING" else "running"
            return state
    if outcome in ("error", "cancelled", "lost") or (status == "failed" and outcome != "queued"):
        # A run cut off while its record said `running` is resumable, not broken.
        state.state = "interrupted" if status == "running" and outcome != "error" \
            else "failed"
        state.note = {"cancelled": "job cancelled (scancel or time limit)",
                      "lost": "job process gone without a result"}.get(outcome) or \
            last_line(result.get("error")) or log_error_line(state.log, run_id)
    elif outcome == "success":
        state.state = "new"  # the job finished but the record is gone: submit it again
    else:
        state.state = {"requeued": "requeued", "started": "running", "queued": "pending"}[outcome]
        if state.state == "running" and run_status(result) == "interrupted":
            state.state, state.note = "interrupted", interruption(result)
    return state


def headline(states: list[RunState]) -> str:
    """"8 runs: 4 completed, 4 failed": every run counted by state, the first thing a
    reader of a results folder needs to know (status, figures, verdicts alike)."""
    counts: dict[str, int] = {}
    for state in sorted(states, key=lambda s: STATE_ORDER.index(s.state)
                        if s.state in STATE_ORDER else len(STATE_ORDER)):
        counts[state.state] = counts.get(state.state, 0) + 1
    return f"{len(states)} run{'s' * (len(states) != 1)}: " + \
        ", ".join(f"{n} {state}" for state, n in counts.items())


def run_states(folder: str | Path) -> list[RunState]:
    """Every run of a results folder: the manifest's (in submission order), then any other
    run folder with records below it."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    jobs = latest_jobs(manifest)
    queue = slurm_queue(manifest)
    states = []
    for run in manifest["runs"]:
        job_info = jobs.get(run["run_id"])
        queued = queue.get(job_info[0]["job_id"]) if job_info else None
        states.append(run_state(run["run_id"], RunFolder(folder / run["run_id"]), job_info,
                                folder, run["config"], queued))
    known = {s.run_folder.path.resolve() for s in states}
    for found in run_folders(folder):
        if found.path.resolve() not in known:
            states.append(run_state(found.id, found, None, folder))
    return states
