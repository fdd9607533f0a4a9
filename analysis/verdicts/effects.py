"""Every one-knob effect in a results folder against its base, how much of the metric's
variance each knob and the seeds explain, and the seeds each comparison needs: the
effects table of the verdicts, each row judged by analysis/verdicts/judge.py.

Pure functions over the frame of analysis.results.load_results. The base level of a knob
is the sweep's declared base config (its manifest); without one, the level the most
distinct configs share (base_level). docs/verdicts.md explains the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis.results import SEED, Metric, ablation, declared_base, label, row_key, varying
from analysis.verdicts import stats
from analysis.verdicts.judge import (
    Judge,
    Side,
    completed,
    judged_runs,
    level_text,
    searched_jointly,
    side,
    sorted_levels,
)
from experiments.power import POWER, pooled_sd, seeds_needed

IMPORTANCE_SEEDS = 5  # Optuna evaluator seeds (fANOVA's forests vary between calls)


class Comparison(NamedTuple):
    """Level vs base of one knob, seeds pooled: the input of every effect row."""
    knob: str
    group: str  # the other settings that tell this ablation apart ("" when one)
    base: Any
    level: Any
    base_side: Side
    level_side: Side


def _tied(runs: pd.DataFrame, a: str, b: str) -> bool:
    """b and a split the runs the same way (set together by a zip, e.g. both sharings)."""
    return bool((runs.groupby(a, dropna=False)[b].nunique(dropna=False) == 1).all()
                and (runs.groupby(b, dropna=False)[a].nunique(dropna=False) == 1).all())


def knobs(runs: pd.DataFrame) -> list[str]:
    """Varying config columns, seeds aside, one per set of columns tied together."""
    out: list[str] = []
    for column in varying(runs):
        if column != SEED and not any(_tied(runs, kept, column) for kept in out):
            out.append(column)
    return out


def _same(a, b) -> bool:
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return (math.isnan(a) and math.isnan(b)) or a == b
    missing = (a is None or (isinstance(a, float) and math.isnan(a)),
               b is None or (isinstance(b, float) and math.isnan(b)))
    return all(missing) or (not any(missing) and str(a) == str(b))


def base_level(knob: str, levels: list, declared: dict[str, Any], configs: pd.Series):
    """The sweep's declared base value of `knob` when it is one of the levels. Without one
    (a folder without a manifest, a study, a base outside the levels): the level shared by
    the most distinct configs of the folder (`configs`: their count per level), which in
    a one-knob-at-a-time folder is the base every other knob's variations keep; a tie (a
    grid) goes to the first level in sorted order. Configs, not runs, are counted, and a
    failed run's config counts too, so more seeds or failures cannot move the base."""
    if knob in declared:
        found = [v for v in levels if _same(v, declared[knob])]
        if found:
            return found[0]
    return max(levels, key=lambda v: (configs.get(str(v), 0), -levels.index(v)))


def find_comparisons(runs: pd.DataFrame, declared: dict[str, Any] | None = None
                     ) -> list[Comparison]:
    """Every (knob, level) against its base level, in every ablation group of the folder."""
    out = []
    if searched_jointly(runs):
        return out
    columns = [c for c in varying(runs) if c != SEED]
    distinct = runs.assign(_config=row_key(runs, columns)).drop_duplicates("_config")
    for knob in knobs(runs):
        found = ablation(runs, [knob])
        if found is None:
            continue
        rows, groups = found
        configs = row_key(distinct, [knob]).value_counts()
        for _, group in rows.groupby(row_key(rows, groups), sort=False):
            levels = sorted_levels(group[knob])
            base = base_level(knob, levels, declared or {}, configs)
            sides = {str(v): side(group[row_key(group, [knob]) == str(v)]) for v in levels}
            setting = ", ".join(f"{label(c)}={level_text(c, group[c].iloc[0])}"
                                for c in groups)
            out += [Comparison(knob, setting, base, v, sides[str(base)], sides[str(v)])
                    for v in levels if str(v) != str(base)]
    return out


def effect_columns() -> list[str]:
    """The effects table's columns: the comparison, its effect, interval and test, every
    statistic of stats.COMPARISON_STATISTICS, the verdict."""
    return ["knob", "setting", "base", "level", "n_base", "n_level", "runs_base",
            "runs_level", "failed_base", "failed_level", "failure_p", "effect", "low", "high",
            "method", "p", "p_adj", *(c for s in stats.COMPARISON_STATISTICS for c in s.columns),
            "verdict", "seeds_needed", "confidence"]


def effects(frame: pd.DataFrame, judge: Judge) -> pd.DataFrame:
    """One row per (knob, level) vs base, judged by `judge`."""
    runs = judged_runs(frame, judge.metric)
    rows = [{"knob": c.knob, "setting": c.group, "base": level_text(c.knob, c.base),
             "level": level_text(c.knob, c.level), **judge(c.base_side, c.level_side)}
            for c in find_comparisons(runs, declared_base(frame))]
    return pd.DataFrame(rows, columns=effect_columns())


def _designs(runs: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    return {c: pd.get_dummies(row_key(runs, [c]), drop_first=True).to_numpy(float)
            for c in columns}


def importance(frame: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """Share of the metric's variance each knob explains (type-II ANOVA over configs) and
    the seed noise's share, with 95% bootstrap intervals (seeds resampled within configs:
    each config is one sample of scipy's multi-sample bootstrap)."""
    from scipy.stats import bootstrap

    runs = completed(frame, metric)
    columns = knobs(runs)
    if not columns or len(runs) < 3 or searched_jointly(runs):
        return pd.DataFrame(columns=["source", "share", "low", "high"])
    config = row_key(runs, columns)
    codes, _ = pd.factorize(config)
    designs = _designs(runs, columns)
    y = runs["_value"].to_numpy(float)
    shares = stats.variance_shares(y, designs, codes)
    samples = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
    resampled = [s for s in samples if len(s) >= 2]
    low = high = {name: math.nan for name in shares}
    if resampled:
        fixed = np.concatenate([s for s in samples if len(s) < 2] or [np.array([], int)])

        def statistic(*picked):
            rows = np.concatenate([fixed, *[np.asarray(p, int) for p in picked]])
            values = stats.variance_shares(y[rows], {k: d[rows] for k, d in designs.items()},
                                           pd.factorize(codes[rows])[0])
            return np.array(list(values.values()))

        result = bootstrap(resampled, statistic, vectorized=False, n_resamples=499,
                           method="percentile", rng=np.random.default_rng(0))
        low = dict(zip(shares, result.confidence_interval.low, strict=True))
        high = dict(zip(shares, result.confidence_interval.high, strict=True))
    return pd.DataFrame([{"source": name, "share": share, "low": low[name], "high": high[name]}
                         for name, share in shares.items()])


def study_importance(study, seeds: int = IMPORTANCE_SEEDS) -> pd.DataFrame:
    """PED-ANOVA and fANOVA importances of an Optuna study, mean and sd over evaluator
    seeds (fANOVA fits random forests; PED-ANOVA is deterministic, so its sd is 0)."""
    import warnings

    import optuna

    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(trials) < 2 or len(study.directions) > 1:
        return pd.DataFrame(columns=["param", "evaluator", "mean", "sd"])
    evaluators = {"PED-ANOVA": lambda s: optuna.importance.PedAnovaImportanceEvaluator(),
                  "fANOVA": lambda s: optuna.importance.FanovaImportanceEvaluator(seed=s)}
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, make in evaluators.items():
            runs = pd.DataFrame([optuna.importance.get_param_importances(
                study, evaluator=make(seed)) for seed in range(seeds)])
            rows += [{"param": p, "evaluator": name, "mean": runs[p].mean(),
                      "sd": runs[p].std(ddof=1)} for p in runs.columns]
    return pd.DataFrame(rows)


def seed_plan(table: pd.DataFrame, frame: pd.DataFrame, judge: Judge) -> dict[str, Any]:
    """The folder's pooled seed sd and the seeds an unpaired comparison needs to resolve
    delta at the report's family-wise level."""
    runs = completed(frame, judge.metric)
    columns = [c for c in varying(runs) if c != SEED]
    groups = [g["_value"].to_numpy() for _, g in runs.groupby(row_key(runs, columns))]
    sd, dof = pooled_sd(groups)
    return {"delta": judge.delta, "seed_sd": sd, "dof": dof, "alpha": judge.alpha,
            "power": POWER, "seeds_needed": seeds_needed(sd, judge.delta, alpha=judge.alpha),
            "per_comparison": table[["knob", "level", "seeds_needed"]].to_dict("records")}
