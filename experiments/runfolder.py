"""One run folder: its id, its files, its state and its lock, owned by one type (dora's
`XP` is the model: signature + folder + state). The trainer, every command, the
orchestration and analysis reach a run's records through `RunFolder`, never by joining
file names by hand (docs/design.md, "Results layout").

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
        checkpoint.pt    {model, optimizer, scheduler, step, config, ...}; loads with
                         weights_only=True; its `config` names the run that wrote it
        tb/<label>/      TensorBoard event files, a view of metrics.jsonl and result.json
                         (experiments/tensorboard.py)
        .train.lock      held by the process training the run (RunFolder.lock)

The id is the signature of the run's config (experiments.config.RunConfig.run_id). A
folder named by an earlier id scheme is recognised by its config.yaml and renamed in
place (RunFolder.migrate, docs/run-identity.md).

A record cannot say that its run was killed without a chance to write (SIGKILL, the OOM
killer, a node lost): it keeps saying `running`. `interrupted` tells such a run from a live
one, for every view (status, figures, verdicts): its trainer's process on this host is
gone, or its heartbeat is older than STALE_AFTER_S. Training it again resumes it from its
last checkpoint, once the checkpoint is shown to be this run's (check_checkpoint).

The files are written with experiments/records.py's atomic writes.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from experiments.config import RunConfig
from experiments.errors import CheckpointError
from experiments.locks import acquire
from experiments.records import (
    append_jsonl,
    atomic_write_bytes,
    read_json,
    read_jsonl,
    read_yaml,
    timestamp,
    write_json,
    write_jsonl,
    write_yaml,
)
from perceiver_core.config import ConfigError

CONFIG, METRICS, RESULT, CHECKPOINT = "config.yaml", "metrics.jsonl", "result.json", "checkpoint.pt"
LOCK = ".train.lock"
# Beside the run folders of a results folder: a sweep's manifest (its runs with their
# params, its submissions; experiments/orchestration/tracking.py writes it) and a study's
# effective spec (experiments/orchestration/study.py writes it).
MANIFEST, STUDY_FILE = "sweep.json", "study.yaml"
STATUSES = ("completed", "diverged", "failed", "running", "pruned")
# Statuses whose metrics are final: such a run is never trained again.
FINAL = ("completed", "diverged")
# A record saying `running` whose heartbeat (written at every evaluation and checkpoint) is
# older than this, with no trainer alive on this host to vouch for it, was interrupted.
STALE_AFTER_S = 600.0
RUN_ID = re.compile(r"[0-9a-f]{12}")


class RunBusy(ConfigError):
    """Another process is training this run folder right now."""


def current_id(nested: Mapping[str, Any]) -> str | None:
    """The run id of a recorded config, or None if this version cannot read it."""
    try:
        return RunConfig.from_dict(nested).run_id
    except (ConfigError, TypeError, AttributeError):
        return None


class RunFolder:
    """The folder of one run: `RunFolder.of(results_dir, cfg)` for a config's own folder,
    `RunFolder(path)` for one found on disk. Its `id` is its name; its files are read and
    written here; `lock()` makes its trainer the only one."""

    __slots__ = ("path", "config_file", "result_file", "metrics_file", "checkpoint_file",
                 "lock_file")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_file, self.result_file, self.metrics_file, self.checkpoint_file, \
            self.lock_file = (self.path / name for name in (CONFIG, RESULT, METRICS,
                                                           CHECKPOINT, LOCK))

    @classmethod
    def of(cls, results_dir: str | os.PathLike, cfg: RunConfig) -> RunFolder:
        return cls(Path(results_dir) / cfg.run_id)

    def __fspath__(self) -> str:  # so RunFolder(run_folder) and Path(run_folder) take one
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def id(self) -> str:
        """The run id the folder is named by (an earlier scheme's until migrated)."""
        return self.path.name

    # -- records ----------------------------------------------------------------------

    def read_config(self) -> Any:
        """config.yaml as written (nested sections); raises OSError or yaml.YAMLError."""
        return read_yaml(self.config_file)

    def read_result(self) -> Any:
        """result.json; raises OSError or ValueError."""
        return read_json(self.result_file)

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows ([] before the first evaluation)."""
        return read_jsonl(self.metrics_file)

    def records(self) -> tuple[dict, dict]:
        """(config, result); {} for what is not there yet, or is torn or hand-edited beyond
        reading (a view shows such a run as not started, never crashes on it)."""
        def load(path: Path, reader) -> dict:
            try:
                return (reader(path) if path.is_file() else {}) or {}
            except (OSError, ValueError, yaml.YAMLError):
                return {}
        return load(self.config_file, read_yaml), load(self.result_file, read_json)

    def write_config(self, cfg: RunConfig) -> None:
        write_yaml(self.config_file, cfg.to_dict())

    def write_result(self, result: Mapping[str, Any]) -> None:
        write_json(self.result_file, result)

    def write_metrics(self, rows: Iterable[Mapping[str, Any]]) -> None:
        write_jsonl(self.metrics_file, rows)

    def append_metrics(self, row: Mapping[str, Any]) -> None:
        append_jsonl(self.metrics_file, row)

    def write_checkpoint(self, data: bytes) -> None:
        atomic_write_bytes(self.checkpoint_file, data)

    # -- whose run it is ----------------------------------------------------------------

    def check_config(self, cfg: RunConfig) -> None:
        """Raise ConfigError if config.yaml is another run's: a run folder holds exactly one
        run (its config may differ from `cfg` in non-semantic keys, e.g. data.num_workers,
        and still be it)."""
        if self.config_file.is_file():
            stored = RunConfig.from_dict(self.read_config())
            if stored.run_id != cfg.run_id:
                raise ConfigError(f"{self} holds another run (run id {stored.run_id}; this "
                                  f"config is {cfg.run_id}): choose another --out folder")

    def check_checkpoint(self, checkpoint: Mapping[str, Any], cfg: RunConfig) -> None:
        """Raise CheckpointError if `checkpoint` (checkpoint.pt as loaded) was written by
        another run than `cfg`'s, e.g. copied in from another lr's folder: resuming from it
        would record that run's weights under this run's id. The writer is known by the
        config every checkpoint holds, read under this version's ids (as migrate reads
        config.yaml); a checkpoint whose config this version cannot read resumes as before."""
        written_by = current_id(checkpoint.get("config") or {})
        if written_by is not None and written_by != cfg.run_id:
            raise CheckpointError(
                f"{self.checkpoint_file} was written by run {written_by}, not by this run "
                f"({cfg.run_id}): resuming from it would record that run's weights as this "
                f"one's; move it to {written_by}'s folder, or delete it to train "
                f"{cfg.run_id} from its start")

    def finished_result(self, cfg: RunConfig) -> dict | None:
        """result.json of a finished run of `cfg` here, if any (check_config first)."""
        self.check_config(cfg)
        if self.result_file.is_file():
            result = self.read_result()
            if result.get("status") in FINAL:
                return result
        return None

    # -- the trainer's lock -------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the trainer's lock (creating the folder), or raise RunBusy at once: the
        holder may train for hours, and a job that waited would hold a cluster slot for
        nothing, then find the run finished anyway. flock(2), so a killed trainer never
        leaves it behind (experiments/locks.py)."""
        lock = FileLock(self.lock_file)
        try:
            acquire(lock, 0)
        except Timeout:
            raise RunBusy(
                f"{self} is being trained by another process right now (it holds "
                f"{self.lock_file}); this one ({socket.gethostname()}) leaves it alone: wait "
                "for that run to end (perceiver-ablate status shows it), or stop it "
                "first") from None
        try:
            yield
        finally:
            lock.release()

    # -- an earlier id scheme -----------------------------------------------------------

    def migrate(self) -> str | None:
        """Rename a folder named by a run id other than its config's current one to the
        current id, leaving its old name as a symbolic link to it (so every path recorded
        elsewhere still works); returns the current id if renamed.

        Versions before the signature named a run folder by a hash of every key of its
        config. Keys added since take their defaults, which leave the signature unchanged,
        so config.yaml alone tells the current id. Nothing is trained again and nothing is
        deleted: result.json's `run_id` stays the old one until the run is trained further.
        A folder whose current name is already taken (the run was trained again under its
        new id) stays where it is."""
        if self.path.is_symlink() or not RUN_ID.fullmatch(self.id) or \
                not self.config_file.is_file():
            return None
        try:
            run_id = current_id(self.read_config())
        except (OSError, yaml.YAMLError):
            return None
        target = self.path.parent / str(run_id)
        if run_id is None or run_id == self.id or target.exists() or target.is_symlink():
            return None
        os.rename(self.path, target)
        os.symlink(run_id, self.path)
        return run_id


def run_folders(results_dir: str | os.PathLike) -> Iterator[RunFolder]:
    """Every run folder (one holding config.yaml) below a sweep or study folder."""
    for config in sorted(Path(results_dir).rglob(CONFIG)):
        yield RunFolder(config.parent)


def migrate(results_dir: str | os.PathLike) -> dict[str, str]:
    """Migrate the run folders directly below `results_dir` (RunFolder.migrate); returns
    {old id: current id} of the renamed ones. Callers hold the folder lock
    (experiments.locks.folder_lock), so two commands never rename the same folder."""
    results_dir, renamed = Path(results_dir), {}
    if not results_dir.is_dir():
        return renamed
    for path in sorted(results_dir.iterdir()):
        run_id = RunFolder(path).migrate()
        if run_id is not None:
            renamed[path.name] = run_id
    return renamed


# -- the state a record shows ----------------------------------------------------------


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


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """A sweep folder's manifest (empty without one), its run ids migrated to the current
    scheme like the run folders themselves."""
    path = Path(folder) / MANIFEST
    manifest = read_json(path) if path.is_file() else {"runs": [], "submissions": []}
    renamed, runs = {}, {}
    for run in manifest["runs"]:
        run_id = current_id(run["config"]) or run["run_id"]
        if run_id != run["run_id"]:
            renamed[run["run_id"]] = run_id
            run = {**run, "run_id": run_id, "legacy_run_id": run["run_id"]}
        runs.setdefault(run_id, run)  # legacy runs that differed only in non-semantic keys
    manifest["runs"] = list(runs.values())
    for submission in manifest["submissions"]:
        for job in submission["jobs"]:
            job["run_ids"] = [renamed.get(run_id, run_id) for run_id in job["run_ids"]]
    return manifest
