"""Run records: the interface between `experiments` and `analysis` (docs/design.md,
"Results layout").

    results/<sweep-or-study>/<run-id>/
        config.yaml      the fully resolved RunConfig (nested sections)
        metrics.jsonl    one JSON object per evaluation:
                         {step, epoch, time_s, lr, train_loss, train_acc, val_loss, val_acc,
                          samples_per_s}
        result.json      {run_id, status, step, epoch, final: {...}, best: {...}, params, macs,
                          flops, flops_breakdown, wall_time_s, samples_per_s, versions, host,
                          nodes, started_at, updated_at, heartbeat, error,
                          input: {index_shape, channels}, planned: {steps, examples},
                          split_sizes: {train, val, test}, sessions: [{started_at,
                          from_step, to_step, status, nodes, host, pid, job, restart,
                          error}], trial: {study, number, state, <objective>...}}
                         status is one of STATUSES (pruned: stopped early by a study);
                         `final` holds the last metrics (val_acc, val_loss, test_acc,
                         test_loss, train_loss, train_acc), `best` the best validation
                         accuracy and the step it was reached at. `macs` is fvcore's
                         forward count per example; `flops` = 2 x macs (the paper's convention).
                         `sessions` has one entry per (re)start of training; `trial` is
                         there for a study's runs only.
        checkpoint.pt    {model, optimizer, scheduler, step, ...}; loads with weights_only=True
        tb/<label>/      TensorBoard event files, a view of metrics.jsonl and result.json
                         (experiments/tensorboard.py)
        .train.lock      held by the process training the run (experiments/locks.py)

A record cannot say that its run was killed without a chance to write (SIGKILL, the OOM
killer, a node lost): it keeps saying `running`. `interrupted` tells such a run from a live
one, for every view (status, figures, verdicts): its trainer's process on this host is
gone, or its heartbeat is older than STALE_AFTER_S. Training it again resumes it from its
last checkpoint.

Every write is atomic (temporary file in the same folder + os.replace), so a reader never
sees a half-written record and a killed writer never corrupts the previous one: a full
disk or a read-only folder leaves the last good version in place and raises
RecordWriteError, whose message names the path and the space needed.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

CONFIG, METRICS, RESULT, CHECKPOINT = "config.yaml", "metrics.jsonl", "result.json", "checkpoint.pt"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it
STATUSES = ("completed", "diverged", "failed", "running", "pruned")
# A record saying `running` whose heartbeat (written at every evaluation and checkpoint) is
# older than this, with no trainer alive on this host to vouch for it, was interrupted.
STALE_AFTER_S = 600.0
# Statuses whose metrics are final: such a run is never trained again.
FINAL = ("completed", "diverged")
# The errors of a file system that cannot take a write, as opposed to a bug in the writer.
STORAGE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


class RecordWriteError(OSError):
    """A record could not be written because of the file system (full, over quota, read
    only); the previous version of the file, if any, is intact."""


def storage_error(path: Path, size: int | None, exc: OSError) -> RecordWriteError:
    """The one-line account of a write the file system refused (`size` bytes, if known);
    `path` is the file, or the folder written to when the file is not known."""
    try:
        free = f"{shutil.disk_usage(path if path.is_dir() else path.parent).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    needed = "" if size is None else f"{size:,} bytes needed, "
    return RecordWriteError(
        exc.errno, f"cannot write {path}: {STORAGE_ERRORS[exc.errno]} ({needed}{free}); the "
                   "previous version is intact: make room (or make the folder writable) and "
                   "run the same command again to resume")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        _atomic_write_bytes(path, data)
    except OSError as exc:
        if exc.errno in STORAGE_ERRORS and not isinstance(exc, RecordWriteError):
            raise storage_error(path, len(data), exc) from exc
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; records are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_yaml(path: str | Path) -> Any:
    return yaml.safe_load(Path(path).read_text())


def jsonl_lines(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_bytes(path, jsonl_lines(rows))


def append_jsonl(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one line; rewrite atomically so a crash never leaves a torn last line."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    atomic_write_bytes(path, old + jsonl_lines([row]))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_dirs(results_dir: str | Path) -> Iterator[Path]:
    """Every run folder (one holding config.yaml) below a sweep or study folder."""
    for config in sorted(Path(results_dir).rglob(CONFIG)):
        yield config.parent


def timestamp(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string (records may use either)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.astimezone()
        return stamp.timestamp()
    return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a local executor's job id is the pid
    of its controller process). A zombie is dead: a killed job stays one until the process
    that started it (a `study --wait`, a test) collects it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # /proc/PID/stat: "pid (comm) state ...", and comm may hold spaces or parentheses
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no procfs (not Linux): trust kill(2)
        return True


def heartbeat_age_s(result: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds since the record last showed life (its heartbeat, else its last update)."""
    seconds = timestamp(result.get("heartbeat") or result.get("updated_at"))
    return None if seconds is None else (now or time.time()) - seconds


def interrupted(result: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether a record saying `running` was cut off without a chance to write: the process
    of its last session ran on this host and is gone, or its heartbeat is stale."""
    if result.get("status") != "running":
        return False
    sessions = result.get("sessions")
    last = sessions[-1] if isinstance(sessions, list) and sessions else {}
    pid = last.get("pid") if isinstance(last, Mapping) else None
    if isinstance(pid, int) and last.get("host") == socket.gethostname() \
            and not pid_alive(pid):
        return True
    age = heartbeat_age_s(result, now)
    return age is not None and age > STALE_AFTER_S


def run_status(result: Mapping[str, Any], now: float | None = None) -> str | None:
    """The record's status, `interrupted` for a run that says `running` but is not."""
    return "interrupted" if interrupted(result, now) else result.get("status")
