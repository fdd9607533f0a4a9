"""Which design choices matter: every one-knob effect in a results folder with its interval,
test and verdict; how much of the metric's variance each knob and the seeds explain; the
seeds each comparison needs; and the paper's claims beside what these results say.

Pure functions over the frame of analysis.results.load_results. A metric is reported in
*points*: percentage points for fractions (accuracy, mean average precision), its own units
otherwise; analysis.results.pick_metric picks it and declares its direction. The base
level of a knob is the sweep's declared base config (its manifest); without one, the level
the most distinct configs share (base_level). Failed runs are counted, never dropped.
docs/verdicts.md explains the statistics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis import stats
from analysis.markup import literal, literal_fields
from analysis.results import (
    SEED,
    Metric,
    ablation,
    declared_base,
    pick_metric,
    row_key,
    varying,
)
from analysis.style import label
from experiments.power import POWER, pooled_sd, seeds_needed
from experiments.readback import class_count

DEFAULT_DELTA = 0.5  # points: the smallest effect the seed planner is asked to resolve
IMPORTANCE_SEEDS = 5  # Optuna evaluator seeds (fANOVA's forests vary between calls)
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


class Comparison(NamedTuple):
    """Level vs base of one knob, seeds pooled: the input of every effect row."""
    knob: str
    group: str  # the other settings that tell this ablation apart ("" when one)
    base: Any
    level: Any
    base_side: Side
    level_side: Side


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


def _tied(runs: pd.DataFrame, a: str, b: str) -> bool:
    """b and a split the runs the same way (set together by a zip, e.g. both sharings)."""
    return bool((runs.groupby(a, dropna=False)[b].nunique(dropna=False) == 1).all()
                and (runs.groupby(b, dropna=False)[a].nunique(dropna=False) == 1).all())


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
    counts = {key: class_count(*key) for key in set(keys)}
    return pd.Series([100 / counts[k] if counts[k] else math.nan for k in keys],
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


def knobs(runs: pd.DataFrame) -> list[str]:
    """Varying config columns, seeds aside, one per set of columns tied together."""
    out: list[str] = []
    for column in varying(runs):
        if column != SEED and not any(_tied(runs, kept, column) for kept in out):
            out.append(column)
    return out


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
        "p_improve": math.nan, "p_improve_low": math.nan, "p_improve_high": math.nan,
        "seeds_needed": None, "confidence": math.nan}
    left_out = base.left_out + level.left_out
    survivors = (f" from survivors ({left_out} of {base.runs + level.runs} runs failed)"
                 if left_out else "")
    n = min(len(b), len(v))
    if n < stats.MIN_SEEDS:
        return row | {"verdict": f"{TOO_FEW} ({n})" + survivors}
    sign = 1 if higher else -1
    row["p_improve"], low, high = stats.improvement_interval(sign * b, sign * v)
    row["p_improve_low"], row["p_improve_high"] = low, high
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


EFFECT_COLUMNS = ["knob", "setting", "base", "level", "n_base", "n_level", "runs_base",
                  "runs_level", "failed_base", "failed_level", "failure_p", "effect", "low",
                  "high", "method", "p", "p_adj", "p_improve", "p_improve_low",
                  "p_improve_high", "verdict", "seeds_needed", "confidence"]


def effects(frame: pd.DataFrame, judge: Judge) -> pd.DataFrame:
    """One row per (knob, level) vs base, judged by `judge`."""
    runs = judged_runs(frame, judge.metric)
    rows = [{"knob": c.knob, "setting": c.group, "base": level_text(c.knob, c.base),
             "level": level_text(c.knob, c.level), **judge(c.base_side, c.level_side)}
            for c in find_comparisons(runs, declared_base(frame))]
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


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


class Verdicts(NamedTuple):
    metric: Metric
    delta: float
    family: int  # distinct comparisons judged in the report
    per_comparison: bool  # judged one at a time (--per-comparison)
    alpha: float  # each interval's alpha: 5% over the family, or 5% per comparison
    effects: pd.DataFrame
    importance: pd.DataFrame
    study_importance: pd.DataFrame
    plan: dict[str, Any]
    claims: pd.DataFrame
    runs: int


def build_verdicts(frame: pd.DataFrame, metric: str | None = None, delta: float = DEFAULT_DELTA,
                   studies: Sequence = (), per_comparison: bool = False) -> Verdicts:
    """Effects, claims, importance and seed plan. The family is every distinct comparison
    the effects and claims tables judge (a first pass counts them), so one verdict
    column controls the error over the whole report."""
    from analysis.claims import paper_claims

    if not (delta > 0):
        raise ValueError(f"--delta {delta} must be > 0 (points)")
    chosen = pick_metric(frame, metric)
    counting = Judge(chosen, delta)
    effects(frame, counting)
    paper_claims(frame, counting)
    judge = Judge(chosen, delta, len(counting.seen), per_comparison)
    table = effects(frame, judge)
    study_rows = [study_importance(s) for s in studies]
    return Verdicts(chosen, delta, judge.family, per_comparison, judge.alpha, table,
                    importance(frame, chosen),
                    pd.concat(study_rows, ignore_index=True) if study_rows else
                    pd.DataFrame(columns=["param", "evaluator", "mean", "sd"]),
                    seed_plan(table, frame, judge), paper_claims(frame, judge),
                    int(len(completed(frame, chosen))))


def interval_text(effect: float, low: float, high: float) -> str:
    if math.isnan(effect):
        return "-"
    if math.isnan(low):
        return f"{effect:+.2f}"
    return f"{effect:+.2f} [{low:+.2f}, {high:+.2f}]"


def p_text(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def confidence_text(v: Verdicts) -> str:
    """"98.75%": the confidence of the report's intervals."""
    return f"{100 * (1 - v.alpha):.4g}%"


def failures_text(r) -> str:
    text = f"{r.failed_level}/{r.runs_level} vs {r.failed_base}/{r.runs_base}"
    return text if math.isnan(r.failure_p) else f"{text} (p {p_text(r.failure_p)})"


def improvement_text(r) -> str:
    if math.isnan(r.p_improve):
        return "-"
    if math.isnan(r.p_improve_low):
        return f"{r.p_improve:.2f}"
    return f"{r.p_improve:.2f} [{r.p_improve_low:.2f}, {r.p_improve_high:.2f}]"


def effects_markdown(v: Verdicts) -> str:
    if v.effects.empty:
        return "No one-knob ablation in these results (no config differs from another in " \
               "one setting only, seeds aside; a study that moves several knobs per trial " \
               "is judged by the Optuna importances below).\n"
    rows = []
    for r in v.effects.itertuples(index=False):
        rows.append({"knob": label(r.knob) + (f" ({r.setting})" if r.setting else ""),
                     "level vs base": f"{r.level} vs {r.base}",
                     "seeds": f"{r.n_level} vs {r.n_base}",
                     "failed (Fisher p)": failures_text(r),
                     f"effect [{confidence_text(v)} CI]": interval_text(r.effect, r.low,
                                                                        r.high),
                     "method": r.method, "p": p_text(r.p),
                     **({} if v.per_comparison else {"p (adj.)": p_text(r.p_adj)}),
                     "P(level better) [95% CI]": improvement_text(r),
                     "verdict": r.verdict,
                     f"seeds for ±{v.delta:g}": "-" if pd.isna(r.seeds_needed)
                     else str(int(r.seeds_needed))})
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) + "\n"


def importance_markdown(v: Verdicts) -> str:
    if v.importance.empty:
        return ("No importance over configs: fewer than 3 completed runs, no knob varies, or "
                "a study that moves several knobs per trial (see the Optuna importances).\n")
    rows = [{"source": r.source if r.source == "seed noise" else label(r.source),
             "share of variance [95% CI]": f"{100 * max(r.share, 0.0):.0f}%" + (
                 "" if math.isnan(r.low) else f" [{100 * r.low:.0f}%, {100 * r.high:.0f}%]")}
            for r in v.importance.itertuples(index=False)]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) + "\n"


def study_importance_markdown(v: Verdicts) -> str:
    if v.study_importance.empty:
        return ""
    wide = v.study_importance.assign(
        cell=[f"{m:.3f} ± {s:.3f}" for m, s in zip(v.study_importance["mean"],
                                                   v.study_importance["sd"], strict=True)]
    ).pivot(index="param", columns="evaluator", values="cell").reset_index()
    wide.columns.name = None
    return wide.to_markdown(index=False, disable_numparse=True) + "\n"


def claims_markdown(v: Verdicts) -> str:
    return v.claims.to_markdown(index=False, disable_numparse=True) + "\n"


def plan_text(v: Verdicts) -> str:
    p = v.plan
    if p["seeds_needed"] is None:
        return ("Seed planner: no config has 2 completed seeds, so the seed noise is "
                "unknown; run at least 2 seeds per config.")
    return (f"Seed planner: the seed standard deviation is {p['seed_sd']:.2f} points "
            f"(pooled over configs, {p['dof']} degrees of freedom); resolving an effect of "
            f"{v.delta:g} points at the report's {confidence_text(v)} confidence with 80% "
            f"power needs {p['seeds_needed']} "
            "seeds per config (unpaired; each row's own need is in the last column).")


def method_text(v: Verdicts) -> str:
    """What the verdict column controls, said where the table is printed."""
    if v.family == 0:
        return "No comparison was judged (see the table below for why)."
    if v.per_comparison:
        return (f"Verdicts per comparison (--per-comparison, unadjusted): each interval is "
                f"95% on its own, so over the report's {v.family} comparisons false "
                "`better`/`worse` verdicts add up.")
    return (f"Verdicts control the family-wise error at 5% over the report's {v.family} "
            f"comparison{'s' * (v.family != 1)} (effects and claims): Bonferroni's "
            f"simultaneous intervals at {confidence_text(v)}, and p (adj.) = "
            f"min(1, {v.family} p), below 0.05 exactly when the interval excludes zero.")


def markdown(v: Verdicts) -> str:
    """The whole verdict section: effects, claims, importance, plan (Markdown), every
    value read from run folders shown as the text it is (analysis/markup.py)."""
    v = literal_fields(v)
    direction = "higher" if v.metric.higher_is_better else "lower"
    lines = [f"Metric: {v.metric.column}, {v.metric.label}, {direction} is better, over "
             f"{v.runs} completed runs. Effect = mean of the level minus mean of the base "
             "over seeds, with Welch's t interval (paired t when both share >= "
             f"{stats.PAIRED_MIN} seeds: the method column) and the t test it inverts. "
             + method_text(v) + " Failed = diverged, failed or collapsed (within "
             f"{COLLAPSE_MARGIN:g} points of chance) runs of all runs, level vs base, with "
             "Fisher's exact p of equal failure rates; a diverged run counts at chance "
             "accuracy, a run with no value to judge is left out and the verdict says "
             f"`from survivors`. `{TOO_FEW} (n)`: fewer than {stats.MIN_SEEDS} seeds on a "
             "side. `equivalent (±d)`: the interval at twice the alpha lies inside ±d (TOST); "
             "`unresolved (±h)`: neither shown, the interval (half-width h) holds zero. "
             "P(level better): probability of improvement with its 95% stratified "
             "bootstrap interval.", ""]
    if v.metric.missing:
        lines += [f"{len(v.metric.missing)} completed run(s) lack {v.metric.column} and are "
                  "not judged: " + ", ".join(literal(r) for r in v.metric.missing) + ".",
                  ""]
    lines += [effects_markdown(v), "", "**Paper claims** (each against these results; "
              f"the interval is the report's {confidence_text(v)} interval, the effects "
              "table's for the same comparison, mirrored):", "", claims_markdown(v), "",
              "**Importance**: share of the metric's variance explained by each knob "
              "(type-II ANOVA over configs) and by seed noise; 95% bootstrap interval over "
              "seeds. The shares need not sum to 100%: the knobs of a one-knob design share "
              "its base config, so their sums of squares overlap.", "",
              importance_markdown(v)]
    if not v.study_importance.empty:
        lines += ["", f"**Optuna importances** (mean ± sd over {IMPORTANCE_SEEDS} evaluator "
                      "seeds):", "", study_importance_markdown(v)]
    lines += ["", plan_text(v), ""]
    return "\n".join(lines)


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def to_json(v: Verdicts) -> str:
    return json.dumps({"metric": v.metric.column, "label": v.metric.label,
                       "higher_is_better": v.metric.higher_is_better, "delta": v.delta,
                       "family": v.family, "per_comparison": v.per_comparison,
                       "confidence": confidence_text(v), "missing": list(v.metric.missing),
                       "runs": v.runs, "effects": _records(v.effects),
                       "importance": _records(v.importance),
                       "study_importance": _records(v.study_importance),
                       "plan": json.loads(pd.Series(v.plan).to_json()),
                       "claims": _records(v.claims)}, indent=2)
