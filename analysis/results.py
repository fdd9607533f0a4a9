"""A results folder (a sweep's or a study's) as pandas DataFrames, and the ablation axes in it.

`load_results` gives one row per run: every resolved config key as a dotted column
(`model.num_latents`), the run's metrics (`final.val_acc`, `best.val_acc`, `best.step`, ...),
`params`, `macs`, `flops`, `status`, `run_id`, `run_dir`; `declared_base(frame)` gives the
base config the folder's sweep declares (its manifest), the base of every verdict. Records
are written atomically (experiments/runfolder.py), but a folder can still hold a run that
has not started, a copy cut short or a hand-edited file: such a run is skipped with a
warning, never a crash.

An *axis* is a config column whose value varies across runs. `ablation` picks the runs in
which only the requested axes vary (seeds aside), so one results folder holding several
one-knob sweeps around a common base config yields one clean slice per knob; `label` names
an axis for people (in the verdicts, figures and tables alike), and `pick_metric` picks
the metric every verdict and figure shows. `load_studies` gives the folder's Optuna study.

This is the floor of analysis: the verdicts (analysis/verdicts/) and the report
(analysis/report/) both read the runs through it.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from experiments.config import SECTIONS
from experiments.readback import load_recorded, sweep_base, trial_columns
from experiments.runfolder import (
    CONFIG,
    FINAL,
    RESULT,
    STATUSES,
    RunFolder,
    run_folders,
    run_status,
)

SEED = "train.seed"
BASE = "sweep_base"  # frame.attrs key: the base config the sweep declares (declared_base)
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


def run_row(run_folder: RunFolder) -> dict[str, Any]:
    """One row; raises ValueError (with the reason) when the records are unusable."""
    try:
        config = run_folder.read_config()
        result = run_folder.read_result()
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
            "run_id": result.get("run_id") or run_folder.id, "run_dir": str(run_folder)}


def load_results(results_dir: str | Path) -> pd.DataFrame:
    """One row per readable run below `results_dir` (any mix of statuses)."""
    rows = []
    for run_folder in run_folders(results_dir):
        try:
            rows.append(run_row(run_folder))
        except ValueError as exc:
            warnings.warn(f"skipping run {run_folder}: {exc}", RecordWarning, stacklevel=2)
    frame = pd.DataFrame(rows)
    trials = trial_columns(results_dir)  # a study's trial number/state/value per run
    if trials is not None and len(frame):  # the storage's trial columns over the records'
        stale = [c for c in trials.columns if c != "run_id" and c in frame]
        frame = frame.drop(columns=stale).merge(trials, on="run_id", how="left")
    leading = [c for c in ("run_id", "status") if c in frame]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    try:
        base = sweep_base(results_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a torn or hand-edited manifest
        warnings.warn(f"cannot read the sweep manifest of {results_dir} ({exc}); verdicts "
                      "take as base the level most configs share", RecordWarning, stacklevel=2)
        base = None
    frame.attrs[BASE] = json.dumps({} if base is None else flatten({s: base[s] for s in SECTIONS}))
    return frame


def declared_base(frame: pd.DataFrame) -> dict[str, Any]:
    """The flattened base config the folder's sweep declares ({}: none), from load_results.
    Kept as JSON text in frame.attrs: pandas deep-copies attrs on every operation."""
    return json.loads(frame.attrs.get(BASE, "{}"))


def load_studies(results_dir: Path) -> list:
    """The Optuna study recorded in results_dir (journal file or RDB URL), if any."""
    study = load_recorded(results_dir)
    return [study] if study is not None else []


def load_curves(results_dir: str | Path, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """metrics.jsonl of every run (or of `runs`, a load_results frame): one row per
    evaluation, with `run_id` and `status` (so diverged curves can be drawn apart)."""
    runs = load_results(results_dir) if runs is None else runs
    frames = []
    for run in runs.itertuples(index=False):
        try:
            rows = RunFolder(run.run_dir).read_metrics()
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


# Without --metric: the first of these that a completed run has (single-label data sets
# record accuracy, multi-label ones mean average precision; test before validation).
DEFAULT_METRICS = ("final.test_acc", "final.test_map", "final.val_acc", "final.val_map")
# Each metric's direction, declared once, by the end of its name: True when higher is better.
DIRECTIONS = {"acc": True, "map": True, "loss": False, "error": False, "time_s": False}
FRACTIONS = ("acc", "map")  # recorded as fractions, shown in percentage points


class Metric(NamedTuple):
    """The metric every figure, table and verdict of a report judges (pick_metric)."""
    column: str
    values: pd.Series  # in points for fractions, NaN where absent
    label: str  # "test accuracy (points)"
    axis_label: str  # "test accuracy (%)"
    higher_is_better: bool
    missing: tuple[str, ...]  # run ids of completed runs that lack it


def direction(column: str) -> bool:
    """True when a higher value of `column` is better (DIRECTIONS; ValueError otherwise)."""
    name = column.rsplit(".", 1)[-1]
    for suffix, higher in DIRECTIONS.items():
        if name.endswith(suffix):
            return higher
    raise ValueError(f"metric {column!r} has no declared direction: names ending in "
                     f"{', '.join(s for s, h in DIRECTIONS.items() if h)} are maximised, in "
                     f"{', '.join(s for s, h in DIRECTIONS.items() if not h)} minimised "
                     "(analysis/results.py DIRECTIONS)")


def pick_metric(frame: pd.DataFrame, metric: str | None = None) -> Metric:
    """The one metric picker of figures, tables and verdicts. Without `metric`: the first
    of DEFAULT_METRICS that any completed run has; completed runs without it are listed
    in `missing`, never dropped silently. A named metric must be a number in these
    results with a declared direction (ValueError says which are)."""
    done = frame[frame["status"] == "completed"] if "status" in frame else frame
    default = metric is None
    if default:
        present = [m for m in DEFAULT_METRICS if m in frame]
        metric = next((m for m in present if done[m].notna().any()),
                      present[0] if present else DEFAULT_METRICS[0])
    if default and metric not in frame:  # no run recorded one yet: an empty metric
        values = pd.Series(math.nan, index=frame.index)
    elif metric not in frame or not pd.api.types.is_numeric_dtype(frame[metric]):
        known = sorted(c for c in frame.columns if c.startswith(("final.", "best."))
                       and pd.api.types.is_numeric_dtype(frame[c]))
        raise ValueError(f"metric {metric!r} is not a number in these results; pick one of "
                         f"{', '.join(known) or '(none: no run has finished)'}")
    else:
        values = pd.to_numeric(frame[metric])
    higher = direction(metric)
    name = metric.rsplit(".", 1)[-1]
    fraction = name.endswith(FRACTIONS)
    if fraction:
        values = percent(values)
    split, _, what = name.partition("_")
    readable = {"acc": "accuracy", "map": "mean average precision"}.get(what, what.replace(
        "_", " ")) if what else split
    short = {"acc": "accuracy", "map": "mAP"}.get(what, readable)
    where = {"test": "test", "val": "val.", "train": "train"}.get(split, split)
    missing = done.loc[values[done.index].isna(), "run_id"] if "run_id" in done else ()
    return Metric(metric, values,
                  f"{split} {readable} ({'points' if fraction else 'units'})",
                  f"{where} {short}" + (" (%)" if fraction else ""), higher,
                  tuple(str(r) for r in missing))


def accuracy(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """(the default metric in points, its axis label): pick_metric's choice, so figures
    and tables judge what the verdicts judge."""
    metric = pick_metric(frame)
    return metric.values, metric.axis_label


def finished(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Completed and diverged runs with the default metric in column `acc`, and its label."""
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


LABELS = {
    "model.arch": "model",
    "model.num_latents": "latents N",
    "model.latent_channels": "latent channels D",
    "model.self_attends_per_block": "self-attends per block",
    "model.num_cross_attends": "cross-attends",
    "model.cross_attend_placement": "placement",
    "model.num_blocks": "blocks",
    "model.init_scale": "latent init scale",
    "model.share_cross_attends": "share cross-attends",
    "model.share_latent_blocks": "share latent blocks",
    "encoding.num_bands": "Fourier bands",
    "encoding.max_resolution": "max resolution",
    "encoding.spacing": "band spacing",
    "encoding.kind": "position encoding",
    "data.permute": "permuted",
    "train.seed": "seed",
}


def label(column: str) -> str:
    """How a config column (a knob) is named for people: in the verdicts, on a figure, in a
    table."""
    return LABELS.get(column, column.split(".", 1)[-1].replace("_", " "))
