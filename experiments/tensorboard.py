"""TensorBoard event files of a run: a view of its records (docs/design.md, "Results layout").

Each run folder gets `tb/<label>/events.out.tfevents.*`, written live by the trainer (rank
0) and rebuilt from the records by `perceiver-ablate export tensorboard`. `tensorboard
--logdir RESULTS_DIR` then names each run `<run-id>/tb/<label>`, the label being the
sweep's knob values and the seed (one file per run: safe with job arrays, no shared
database).

The scalars are metrics.jsonl's numeric keys under the same names at the same steps
(`train_loss`, `lr`, `samples_per_s`, `val_acc` or `val_map`, ...), plus result.json's
test metrics at the run's last step. The HParams plugin's session summaries put the run's
config (dotted keys) beside them, so its dashboard is the ablation table, one row per run.

metrics.jsonl stays the source of truth: whenever a run starts or resumes, its event
files are rewritten from the rows it keeps, so a resumed run has no duplicate step for
any reader (TensorBoard's own purge of orphaned steps is not relied on).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from experiments.config import RunConfig, short_hash
from experiments.records import atomic_write_bytes, read_yaml, timestamp
from experiments.runfolder import STUDY_FILE, RunFolder, read_manifest

EVENTS = "tb"
MAX_LABEL = 200  # bytes; file systems allow 255 per folder name
# How each ending shows in the HParams dashboard's "Status" column (its protocol has no
# "stopped early": a pruned run is neither a success nor a failure).
SESSION_STATUS = {"completed": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE",
                  "failed": "STATUS_FAILURE", "pruned": "STATUS_UNKNOWN"}


def knob_label(params: Mapping[str, Any]) -> str:
    """'num_latents=8 seed=0' from {'model.num_latents': 8, 'train.seed': 0}: the last part
    of each dotted key (the whole key where two share it), no path separator."""
    lasts = [key.rsplit(".", 1)[-1] for key in params]
    parts = [f"{last if lasts.count(last) == 1 else key}={value}"
             for key, last, value in zip(params, lasts, params.values(), strict=True)]
    label = " ".join(parts).replace("/", "_") or "default"
    if len(label.encode()) > MAX_LABEL:  # a folder name: cut, kept unique by a hash
        label = f"{label.encode()[:MAX_LABEL - 16].decode(errors='ignore')} +{short_hash(label)}"
    return label


def searched(folder: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The values of the keys a study searches, when `folder` is a study's (its
    study.yaml lists them); None otherwise."""
    if not (folder / STUDY_FILE).is_file():
        return None
    space, flat = read_yaml(folder / STUDY_FILE).get("space") or {}, cfg.flat()
    return {key: flat[key] for key in space if key in flat}


def run_label(run_folder: RunFolder, cfg: RunConfig) -> str:
    """The readable name of a run: its sweep's knob values (from the sweep's manifest) or
    its study's searched keys, when the run folder is in such a folder; else the keys its
    config sets away from the defaults, data aside. The seed always."""
    try:
        runs = read_manifest(run_folder.path.parent)["runs"]
        params = next((dict(r.get("params") or {}) for r in runs
                       if r.get("run_id") == cfg.run_id), None)
        if params is None:
            params = searched(run_folder.path.parent, cfg)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        params = None  # an unreadable manifest or study file: the config alone names it
    if params is None:
        params = {k: v for k, v in cfg.signature().items() if not k.startswith("data.")}
    params.pop("train.seed", None)
    return knob_label({**params, "train.seed": cfg.train.seed})


def hparams(cfg: RunConfig) -> dict[str, bool | float | int | str]:
    """The config as the HParams plugin takes it: numbers, booleans and text only."""
    out = {}
    for key, value in cfg.flat().items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:  # None, lists: their JSON text, so the column still tells runs apart
            out[key] = json.dumps(value)
    return out


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, by key; the step is where they go."""
    return {k: float(v) for k, v in row.items() if k != "step" and not isinstance(v, bool)
            and isinstance(v, (int, float)) and math.isfinite(v)}


def test_row(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """result.json's test metrics as a metrics row at the run's last step (None if none):
    the test split is evaluated once, after training."""
    tests = {k: v for k, v in (result.get("final") or {}).items() if k.startswith("test_")}
    return {**tests, "step": int(result.get("step") or 0)} if tests else None


def row_time(row: Mapping[str, Any], start: float | None) -> float | None:
    """When a row was written: the run's start plus its `time_s`, when both are known."""
    if start is None or not isinstance(row.get("time_s"), (int, float)):
        return None
    return start + row["time_s"]


def hparams_summary(tag: str, **data):
    """A summary of the HParams plugin (session start or end), built from TensorBoard's
    protocol buffers directly: its own summary helpers import TensorFlow."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(**data)
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(
        content), tensor=metadata.NULL_TENSOR)])


def session_start(cfg: RunConfig, label: str, start: float | None):
    """The run's HParams session; its group (the dashboard's "Trial ID") is the label and
    the run id, so every run is one row that reads as its knobs."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(group_name=f"{label} [{cfg.run_id}]",
                                            start_time_secs=start or 0.0)
    for key, value in hparams(cfg).items():
        field = ("bool_value" if isinstance(value, bool) else
                 "string_value" if isinstance(value, str) else "number_value")
        setattr(info.hparams[key], field, value)
    return hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=info)


def session_end(status: str, end: float | None):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status),
                                          end_time_secs=end or 0.0)
    return hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=info)


def record(event) -> bytes:
    """One event as a TFRecord (length, CRCs, bytes), the framing of event files."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    RecordWriter(buffer).write(event.SerializeToString())
    return buffer.getvalue()


def event(step: int, when: float | None, summary=None, **fields):
    from tensorboard.compat.proto.event_pb2 import Event

    return Event(step=step, wall_time=time.time() if when is None else when, summary=summary,
                 **fields)


def scalar_events(row: Mapping[str, Any], start: float | None,
                  when: float | None = None) -> bytes:
    """One metrics row (or test_row, with the time it was recorded) as scalar events at
    its step."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    when, step = when or row_time(row, start), int(row["step"])
    return b"".join(record(event(step, when, Summary(value=[Summary.Value(
        tag=tag, simple_value=value)]))) for tag, value in scalars(row).items())


class EventLog:
    """The event file of one run: rewritten whole from the rows a run keeps when it starts
    or resumes, then appended to, synchronously, at each evaluation.

    The log is a view: a write the file system refuses (full, read-only) stops it with one
    warning and never fails the run or hides its own error; `perceiver-ablate export
    tensorboard` rebuilds it later from the records. (TensorBoard's own writers write from
    a thread, whose failures would surface late, as tracebacks.)"""

    def __init__(self, run_folder: RunFolder, cfg: RunConfig,
                 rows: Iterable[Mapping[str, Any]], started_at: str | None = None):
        self.run_folder = run_folder
        self.start = timestamp(started_at)
        label = run_label(run_folder, cfg)
        folder = run_folder.path / EVENTS
        self.path: Path | None = folder / label / (
            f"events.out.tfevents.{int(self.start or time.time()):010d}.{socket.gethostname()}")
        data = record(event(0, self.start, file_version="brain.Event:2"))
        data += record(event(0, self.start, session_start(cfg, label, self.start)))
        data += b"".join(scalar_events(row, self.start) for row in rows)
        try:
            shutil.rmtree(folder, ignore_errors=True)  # rebuilt from the records kept
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            self.stop(exc)

    def stop(self, exc: OSError) -> None:
        print(f"warning: TensorBoard events of {self.run_folder} stop here ({exc.strerror or exc});"
              " the records are intact: `perceiver-ablate export tensorboard` rebuilds them",
              file=sys.stderr, flush=True)
        self.path = None

    def append(self, data: bytes) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("ab") as f:
                f.write(data)
        except OSError as exc:
            self.stop(exc)

    def add(self, row: Mapping[str, Any]) -> None:
        """One metrics row, at its step."""
        self.append(scalar_events(row, self.start))

    def close(self, result: Mapping[str, Any]) -> None:
        """Record how the run ended (result.json): its test metrics and its status."""
        tests, end = test_row(result), timestamp(result.get("updated_at"))
        data = scalar_events(tests, self.start, end) if tests else b""
        status = SESSION_STATUS.get(result.get("status"))
        if status:
            data += record(event(int(result.get("step") or 0), end, session_end(status, end)))
        self.append(data)
        self.path = None


def export_run(run_folder: RunFolder) -> None:
    """Rebuild a run's event files from its records (config, metrics.jsonl, result.json)."""
    cfg = RunConfig.from_dict(run_folder.read_config())
    result = run_folder.read_result() if run_folder.result_file.is_file() else {}
    EventLog(run_folder, cfg, run_folder.read_metrics(), result.get("started_at")).close(result)
