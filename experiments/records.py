"""The file layer under the run records (experiments/runfolder.py owns the run folder and
its layout; analysis/ and the orchestration write their own files with the same calls).

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
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it
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
