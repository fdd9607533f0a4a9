"""A results folder (a sweep's or a study's) as pandas DataFrames, and the ablation axes in it.

`load_results` gives one row per run: every resolved config key as a dotted column
(`model.num_latents`), the run's metrics (`final.val_acc`, `best.val_acc`, `best.step`, ...),
`params`, `macs`, `flops`, `status`, `run_id`, `run_dir`. Records are written atomically
(experiments/records.py), but a folder can still hold a run that has not started, a copy
cut short or a hand-edited file: such a run is skipped with a warning, never a crash.

An *axis* is a config column whose value varies across runs. `ablation` picks the runs in
which only the requested axes vary (seeds aside), so one results folder holding several
one-knob sweeps around a common base config yields one clean slice per knob.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from experiments.config import SECTIONS
from experiments.readback import trial_columns
from experiments.records import (
    CONFIG,
    FINAL,
    METRICS,
    RESULT,
    STATUSES,
    read_json,
    read_jsonl,
    read_yaml,
    run_dirs,
    run_status,
)

SEED = "train.seed"
# result.json entries that are not one number per run.
NOT_COLUMNS = ("flops_breakdown", "sessions")


class RecordWarning(UserWarning):
    """A run folder whose records cannot be read; the run is left out."""


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'num_latents': 8}} -> {'model.num_latents': 8}; lists become JSON text so
    every cell is a hashable scalar (groupby, Parquet)."""
    out = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def run_row(run_dir: Path) -> dict[str, Any]:
    """One row; raises ValueError (with the reason) when the records are unusable."""
    try:
        config = read_yaml(run_dir / CONFIG)
        result = read_json(run_dir / RESULT)
    except FileNotFoundError as exc:
        raise ValueError(f"{Path(exc.filename).name} is missing (not started yet?)") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: JSON, UnicodeDecode
        raise ValueError(f"cannot parse: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, Mapping) or not all(isinstance(config.get(s), Mapping)
                                                   for s in SECTIONS):
        raise ValueError(f"{CONFIG} does not hold the sections {', '.join(SECTIONS)}")
    if not isinstance(result, Mapping) or result.get("status") not in STATUSES:
        raise ValueError(f"{RESULT} has no valid status (one of {', '.join(STATUSES)})")
    extras = {k: v for k, v in result.items() if k not in NOT_COLUMNS}
    return {**flatten({s: config[s] for s in SECTIONS}), **flatten(extras),
            "status": run_status(result),  # `interrupted`: says running, but nothing trains it
            "run_id": result.get("run_id") or run_dir.name, "run_dir": str(run_dir)}


def load_results(results_dir: str | Path) -> pd.DataFrame:
    """One row per readable run below `results_dir` (any mix of statuses)."""
    rows = []
    for run_dir in run_dirs(results_dir):
        try:
            rows.append(run_row(run_dir))
        except ValueError as exc:
            warnings.warn(f"skipping run {run_dir}: {exc}", RecordWarning, stacklevel=2)
    frame = pd.DataFrame(rows)
    trials = trial_columns(results_dir)  # a study's trial number/state/value per run
    if trials is not None and len(frame):  # the storage's trial columns over the records'
        stale = [c for c in trials.columns if c != "run_id" and c in frame]
        frame = frame.drop(columns=stale).merge(trials, on="run_id", how="left")
    leading = [c for c in ("run_id", "status") if c in frame]
    return frame[leading + [c for c in frame.columns if c not in leading]]


def load_curves(results_dir: str | Path, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """metrics.jsonl of every run (or of `runs`, a load_results frame): one row per
    evaluation, with `run_id` and `status` (so diverged curves can be drawn apart)."""
    runs = load_results(results_dir) if runs is None else runs
    frames = []
    for run in runs.itertuples(index=False):
        path = Path(run.run_dir) / METRICS
        try:
            rows = read_jsonl(path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"skipping curves of {run.run_dir}: {exc}", RecordWarning, stacklevel=2)
            continue
        if rows:
            frames.append(pd.DataFrame(rows).assign(run_id=run.run_id, status=run.status))
    columns = ["run_id", "status", "step"]
    if not frames:
        return pd.DataFrame(columns=columns)
    curves = pd.concat(frames, ignore_index=True)
    return curves[columns + [c for c in curves.columns if c not in columns]]


def config_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.split(".", 1)[0] in SECTIONS]


def varying(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> list[str]:
    """The columns (config columns by default) holding more than one value."""
    columns = config_columns(frame) if columns is None else columns
    return [c for c in columns if c in frame and frame[c].nunique(dropna=False) > 1]


def percent(values: pd.Series) -> pd.Series:
    """Accuracies in %: records store fractions; a column already in percent is kept."""
    values = pd.to_numeric(values, errors="coerce")
    return values * 100 if values.max() <= 1 else values


def accuracy(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """(accuracy in %, its label): test accuracy when every completed run has one, else
    validation accuracy; for multi-label data sets (runs that record only mAP) the mean
    average precision in their place."""
    done = frame[frame["status"] == "completed"]
    metric = "map" if "final.val_map" in frame and "final.val_acc" not in frame else "acc"
    what = {"acc": "accuracy", "map": "mAP"}[metric]
    name, label = f"final.val_{metric}", f"val. {what} (%)"
    test = f"final.test_{metric}"
    if test in frame and len(done) and done[test].notna().all():
        name, label = test, f"test {what} (%)"
    if name not in frame:
        return pd.Series(math.nan, index=frame.index), label
    return percent(frame[name]), label


def finished(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Completed and diverged runs with their accuracy in column `acc`, and its label."""
    acc, acc_label = accuracy(frame)
    runs = frame.assign(acc=acc)
    return runs[runs["status"].isin(FINAL)], acc_label


def ablation(frame: pd.DataFrame, axes: Sequence[str], min_points: int = 2
             ) -> tuple[pd.DataFrame, list[str]] | None:
    """The runs in which only `axes` vary, and the columns that tell their groups apart.

    Every other varying config column (seeds excepted) either is tied to the axes (a function
    of them, e.g. heads set together with channels: ignored) or splits the runs into groups;
    a group is kept when it holds at least `min_points` distinct axis values. Returns None
    when the axes are absent or no group qualifies.
    """
    axes = list(axes)
    if frame.empty or not all(axis in frame for axis in axes):
        return None
    others = [c for c in varying(frame) if c not in axes and c != SEED]
    by_axes = frame.groupby(axes, dropna=False)
    groups = [c for c in others if by_axes[c].nunique(dropna=False).max() > 1]
    point = row_key(frame, axes)
    group = row_key(frame, groups)
    rows = frame[point.groupby(group).transform("nunique") >= min_points]
    return (rows, varying(rows, groups)) if len(rows) else None


def row_key(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string per row naming its values in `columns` (NaN-safe, hashable)."""
    if not columns:
        return pd.Series("", index=frame.index)
    key = frame[columns[0]].map(str)
    for column in columns[1:]:  # column by column: a row-wise apply is 100x slower
        key = key + "|" + frame[column].map(str)
    return key.astype(object)
