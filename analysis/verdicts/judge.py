"""How one comparison is judged: the machinery that the effects table (effects.py) and the
paper's claims (claims.py) share, so both judge a comparison of the same runs alike.

`judged_runs` picks the runs a comparison counts (failures are counted, never dropped),
`side` one level's side of it (one value per seed), and a `Judge` turns two sides into an
effect with its interval and test (stats.py), the statistics of stats.COMPARISON_STATISTICS
and a verdict, at the report's family-wise level. A metric is judged in *points*:
percentage points for fractions (accuracy, mean average precision), its own units
otherwise (analysis.results.pick_metric). docs/verdicts.md explains the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis.results import SEED, Metric, varying
from analysis.verdicts import stats
from experiments.power import pooled_sd, seeds_needed
from experiments.readback import chance_accuracy

# A completed run this close to chance accuracy (points) has collapsed: a failure.
COLLAPSE_MARGIN = 5.0
FAILED_STATES = ("diverged", "failed")
BETTER, WORSE, EQUIVALENT = "better", "worse", "equivalent"
TOO_FEW, NO_SPREAD = "too few seeds", "no spread between seeds: no interval"
VERDICT_COLORS = {BETTER: "#009e73", WORSE: "#d55e00", EQUIVALENT: "#0072b2",
                  "unresolved": "#7f7f7f", TOO_FEW: "#c7c7c7",
                  NO_SPREAD: "#c7c7c7"}  # colour-blind safe; keyed by verdict_kind


class Side(NamedTuple):
    """One level's runs in a comparison: the values judged (one per seed, NaN-free), how
    many runs it has, how many failed (diverged, failed or collapsed) and how many of
    those have no value to judge (left out: the verdict then says `from survivors`)."""
    values: pd.Series  # indexed by seed
    runs: int
    failed: int
    left_out: int
    run_ids: frozenset


def level_text(knob: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "Nyquist" if knob == "encoding.max_resolution" else "default"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sorted_levels(values: pd.Series) -> list:
    levels = list(values.drop_duplicates())
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                  for v in levels)
    return sorted(levels, key=(lambda v: (math.isnan(v), v)) if numeric else str)


def completed(frame: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Completed runs that have the metric, in column `_value`."""
    runs = frame.assign(_value=metric.values)
    return runs[(runs["status"] == "completed") & runs["_value"].notna()]


def _chance(runs: pd.DataFrame, metric: Metric) -> pd.Series:
    """Each run's chance accuracy in points (NaN: not an accuracy, or classes unknown)."""
    if not metric.column.endswith("acc") or "data.name" not in runs:
        return pd.Series(math.nan, index=runs.index)
    sizes = runs["data.image_size"] if "data.image_size" in runs else \
        pd.Series(None, index=runs.index, dtype=object)
    keys = [(name, None if pd.isna(size) else int(size))
            for name, size in zip(runs["data.name"], sizes, strict=True)]
    chance = {key: chance_accuracy(*key) for key in set(keys)}
    return pd.Series([math.nan if chance[k] is None else chance[k] for k in keys],
                     index=runs.index, dtype=float)


def judged_runs(frame: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """The runs every comparison counts: completed, diverged and failed, with `_value`
    (the value judged: a diverged run at chance accuracy, the documented choice; NaN for
    a failed run, or a diverged one where chance means nothing, or a completed one
    without the metric) and `_failed` (diverged, failed, or collapsed to within
    COLLAPSE_MARGIN of chance)."""
    runs = frame[frame["status"].isin(("completed", *FAILED_STATES))]
    values = metric.values[runs.index]
    chance = _chance(runs, metric)
    diverged = runs["status"] == "diverged"
    collapsed = (runs["status"] == "completed") & (values <= chance + COLLAPSE_MARGIN)
    value = values.where(runs["status"] == "completed", chance.where(diverged))
    missing = (runs["status"] == "completed") & values.isna()
    return runs[~missing].assign(_value=value[~missing],
                                 _failed=runs["status"].isin(FAILED_STATES) | collapsed)


def by_seed(rows: pd.DataFrame) -> pd.Series:
    """One value per seed (seeds repeated within a config are averaged), NaN-free."""
    rows = rows[rows["_value"].notna()]
    return rows.groupby(SEED)["_value"].mean() if SEED in rows else rows["_value"]


def side(rows: pd.DataFrame) -> Side:
    failed = int(rows["_failed"].sum()) if "_failed" in rows else 0
    return Side(by_seed(rows), len(rows), failed, int(rows["_value"].isna().sum()),
                frozenset(rows["run_id"]) if "run_id" in rows else frozenset(rows.index))


def searched_jointly(runs: pd.DataFrame) -> bool:
    """A study whose sampler moves several knobs at once (TPE, random search): a knob that
    takes a new value in every trial looks 'tied' to every other, so its trials hold no
    one-knob ablation however the columns line up; Optuna's importances judge its knobs.
    A grid study repeats every level of every knob and stays an ablation, and a study of
    one knob is one whatever its sampler."""
    if "trial.number" not in runs:
        return False
    columns = [c for c in varying(runs) if c != SEED]
    configs = runs[columns].astype(str).drop_duplicates()
    return len(columns) > 1 and len(configs) > 2 and any(configs[c].is_unique
                                                         for c in columns)


@dataclass
class Judge:
    """Judges comparisons at one family-wise level: `family` comparisons share alpha
    (Bonferroni); `seen` collects the comparisons judged, by their runs, so a first pass
    over the report can count its family."""
    metric: Metric
    delta: float
    family: int = 1
    per_comparison: bool = False
    seen: set = field(default_factory=set)

    @property
    def size(self) -> int:
        """How many comparisons share the 5% (1: per comparison)."""
        return 1 if self.per_comparison else max(self.family, 1)

    @property
    def alpha(self) -> float:
        return stats.ALPHA / self.size

    def __call__(self, base: Side, level: Side) -> dict[str, Any]:
        return compare(base, level, self)


def _direction_word(positive: bool, higher_is_better: bool) -> str:
    return BETTER if positive == higher_is_better else WORSE


def compare(base: Side, level: Side, judge: Judge) -> dict[str, Any]:
    """Effect, interval, test, P(level better), failures and verdict of two sides."""
    b_values, l_values = base.values, level.values
    shared = b_values.index.intersection(l_values.index)
    paired = len(shared) == len(b_values) == len(l_values) and len(shared) >= stats.PAIRED_MIN
    if paired:
        b_values, l_values = b_values.loc[shared], l_values.loc[shared]
    b, v = b_values.to_numpy(float), l_values.to_numpy(float)
    higher = judge.metric.higher_is_better
    failures = base.failed + level.failed
    row: dict[str, Any] = {
        "n_base": len(b), "n_level": len(v), "runs_base": base.runs, "runs_level": level.runs,
        "failed_base": base.failed, "failed_level": level.failed,
        "failure_p": stats.failure_p(level.failed, level.runs, base.failed, base.runs)
        if failures and min(base.runs, level.runs) else math.nan,
        "effect": float(v.mean() - b.mean()) if len(b) and len(v) else math.nan,
        "low": math.nan, "high": math.nan, "method": "-", "p": math.nan, "p_adj": math.nan,
        **{c: math.nan for s in stats.COMPARISON_STATISTICS for c in s.columns},
        "seeds_needed": None, "confidence": math.nan}
    left_out = base.left_out + level.left_out
    survivors = (f" from survivors ({left_out} of {base.runs + level.runs} runs failed)"
                 if left_out else "")
    n = min(len(b), len(v))
    if n < stats.MIN_SEEDS:
        return row | {"verdict": f"{TOO_FEW} ({n})" + survivors}
    sign = 1 if higher else -1
    for statistic in stats.COMPARISON_STATISTICS:
        row.update(zip(statistic.columns, statistic.compute(sign * b, sign * v), strict=True))
    if np.ptp(b) == 0 or np.ptp(v) == 0 or (paired and np.ptp(v - b) == 0):
        return row | {"verdict": NO_SPREAD + survivors}
    judge.seen.add(frozenset((base.run_ids, level.run_ids)))
    d = stats.difference(b, v, paired)
    low, high = (float(x) for x in stats.interval(d, judge.alpha))
    p = float(stats.p_value(d))
    eq_low, eq_high = stats.interval(d, 2 * judge.alpha)
    if low > 0 or high < 0:
        verdict = _direction_word(low > 0, higher)
    elif -judge.delta <= eq_low and eq_high <= judge.delta:
        verdict = f"{EQUIVALENT} (±{judge.delta:g})"
    else:
        verdict = f"unresolved (±{(high - low) / 2:.2f})"
    sd = float(np.std(v - b, ddof=1)) if paired else pooled_sd([b, v])[0]
    return row | {"low": low, "high": high, "method": d.method, "p": p,
                  "confidence": 100 * (1 - judge.alpha),
                  "p_adj": float(stats.adjusted(p, judge.size)),
                  "verdict": verdict + survivors,
                  "seeds_needed": seeds_needed(sd, judge.delta, paired, alpha=judge.alpha)}


def verdict_kind(text: str) -> str:
    """The verdict without its numbers: a key of VERDICT_COLORS."""
    return next((k for k in VERDICT_COLORS if text.startswith(k)), text)
