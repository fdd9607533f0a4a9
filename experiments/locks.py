"""Advisory file locks that keep a results folder consistent under concurrent commands.

Two locks, both `filelock` (flock(2) on Linux: released by the kernel when the holder
dies, so a killed command never leaves a stale lock behind, and shared by hosts that
mount the folder over a file system with working flock, such as NFSv4 or Lustre):

- the folder lock (`<folder>/.submit.lock`): held while a command reads the manifest,
  decides what to submit, submits it and records the submission, so two `sweep` (or
  `study`) commands into one folder take turns: the second sees the first's runs as
  queued and submits only what is still missing (no run twice, no submission lost).
  Waiting is right here: a turn lasts as long as a submission (seconds), and giving up
  after FOLDER_TIMEOUT_S says what is holding it.
- the run lock (`<run folder>/.train.lock`, experiments.runfolder.RunFolder.lock): held
  by the one process that trains the run; a second trainer refuses at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from experiments.records import STORAGE_ERRORS, storage_error
from perceiver_core.config import ConfigError

FOLDER_LOCK = ".submit.lock"
FOLDER_TIMEOUT_S = 120.0


def acquire(lock: FileLock, timeout_s: float) -> None:
    """Acquire `lock`, creating its folder; a file system that refuses either (read-only,
    full) raises RecordWriteError naming it, as a record that cannot be written does."""
    path = Path(lock.lock_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=timeout_s)
    except OSError as exc:
        if exc.errno in STORAGE_ERRORS:
            raise storage_error(path, None, exc) from exc
        raise


@contextmanager
def folder_lock(folder: str | Path, timeout_s: float = FOLDER_TIMEOUT_S) -> Iterator[None]:
    """Hold `folder`'s submission lock (creating the folder) for the `with` block."""
    folder = Path(folder)
    lock = FileLock(folder / FOLDER_LOCK)
    try:
        acquire(lock, timeout_s)
    except Timeout:
        raise ConfigError(
            f"{folder} is locked by another submission for more than {timeout_s:.0f} s "
            f"({folder / FOLDER_LOCK}): another `perceiver-ablate sweep|study|status` into "
            "this folder is still running; wait for it and try again") from None
    try:
        yield
    finally:
        lock.release()
