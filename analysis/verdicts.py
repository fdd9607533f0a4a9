"""Which design choices matter: every one-knob effect in a results folder with its interval,
test and verdict; how much of the metric's variance each knob and the seeds explain; the
seeds each comparison needs; and the paper's claims beside what these results say.

Pure functions over the frame of analysis.results.load_results. A metric is reported in
*points*: percentage points for fractions (accuracy, mean average precision), its own units
otherwise. The base level of a knob is the level most runs of the folder share (the
sweep's base config, which every one-knob variation leaves in place); a tie (a grid) picks
the first level in sorted order. docs/verdicts.md explains the statistics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis import stats
from analysis.results import SEED, ablation, percent, row_key, varying
from analysis.style import label
from experiments.power import ALPHA, POWER, pooled_sd, seeds_needed

# Without --metric: the first of these that completed runs have (single-label data sets
# record accuracy, multi-label ones mean average precision).
DEFAULT_METRICS = ("final.test_acc", "final.test_map", "final.val_acc", "final.val_map")
DEFAULT_DELTA = 0.5  # points: the smallest effect the seed planner is asked to resolve
IMPORTANCE_SEEDS = 5  # Optuna evaluator seeds (fANOVA's forests vary between calls)
BETTER, WORSE, ONE_SEED = "better", "worse", "one seed: no interval"
VERDICT_COLORS = {BETTER: "#009e73", WORSE: "#d55e00", "unresolved": "#7f7f7f",
                  ONE_SEED: "#c7c7c7"}  # colour-blind safe; keyed by verdict_kind


class Metric(NamedTuple):
    column: str
    values: pd.Series  # in points, NaN where absent
    label: str  # "test accuracy (points)"
    higher_is_better: bool


def pick_metric(frame: pd.DataFrame, metric: str | None = None) -> Metric:
    """The metric in points. Without `metric`: the first of DEFAULT_METRICS that completed
    runs have. A named metric must exist (ValueError says which do)."""
    done = frame[frame["status"] == "completed"] if "status" in frame else frame
    if metric is None:
        metric = next((m for m in DEFAULT_METRICS if m in frame and done[m].notna().any()),
                      DEFAULT_METRICS[0])
    if metric not in frame or not pd.api.types.is_numeric_dtype(frame[metric]):
        known = sorted(c for c in frame.columns if c.startswith(("final.", "best."))
                       and pd.api.types.is_numeric_dtype(frame[c]))
        raise ValueError(f"metric {metric!r} is not a number in these results; pick one of "
                         f"{', '.join(known) or '(none: no run has finished)'}")
    name = metric.rsplit(".", 1)[-1]
    fraction = name.endswith(("acc", "map"))
    values = percent(frame[metric]) if fraction else pd.to_numeric(frame[metric])
    readable = name.replace("_", " ").replace("acc", "accuracy").replace(
        "map", "mean average precision")
    return Metric(metric, values, f"{readable} ({'points' if fraction else 'units'})",
                  "loss" not in name)


class Comparison(NamedTuple):
    """Level vs base of one knob, seeds pooled: the input of every effect row."""
    knob: str
    group: str  # the other settings that tell this ablation apart ("" when one)
    base: Any
    level: Any
    base_values: pd.Series  # indexed by seed
    level_values: pd.Series


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
    runs = frame.assign(_value=metric.values)
    return runs[(runs["status"] == "completed") & runs["_value"].notna()]


def knobs(runs: pd.DataFrame) -> list[str]:
    """Varying config columns, seeds aside, one per set of columns tied together."""
    out: list[str] = []
    for column in varying(runs):
        if column != SEED and not any(_tied(runs, kept, column) for kept in out):
            out.append(column)
    return out


def by_seed(rows: pd.DataFrame) -> pd.Series:
    """One value per seed (seeds repeated within a config are averaged)."""
    return rows.groupby(SEED)["_value"].mean() if SEED in rows else rows["_value"]


def searched_jointly(runs: pd.DataFrame) -> bool:
    """A study whose sampler moves several knobs at once (TPE, random search): a knob that
    takes a new value in every trial looks 'tied' to every other, so its trials hold no
    one-knob ablation however the columns line up; Optuna's importances judge its knobs.
    A grid study repeats every level of every knob and stays an ablation."""
    if "trial.number" not in runs:
        return False
    columns = [c for c in varying(runs) if c != SEED]
    configs = runs[columns].astype(str).drop_duplicates()
    return len(configs) > 2 and any(configs[c].is_unique for c in columns)


def find_comparisons(runs: pd.DataFrame) -> list[Comparison]:
    """Every (knob, level) against its base level, in every ablation group of the folder."""
    out = []
    if searched_jointly(runs):
        return out
    for knob in knobs(runs):
        found = ablation(runs, [knob])
        if found is None:
            continue
        rows, groups = found
        counts = row_key(runs, [knob]).value_counts()
        for _, group in rows.groupby(row_key(rows, groups), sort=False):
            levels = sorted_levels(group[knob])
            base = max(levels, key=lambda v: (counts[str(v)], -levels.index(v)))
            values = {str(v): by_seed(group[row_key(group, [knob]) == str(v)]) for v in levels}
            setting = ", ".join(f"{label(c)}={level_text(c, group[c].iloc[0])}"
                                for c in groups)
            out += [Comparison(knob, setting, base, v, values[str(base)], values[str(v)])
                    for v in levels if str(v) != str(base)]
    return out


def compare(base: pd.Series, level: pd.Series, delta: float, higher_is_better: bool = True
            ) -> dict[str, Any]:
    """Effect, interval, test, P(level > base) and verdict for two sets of seeds."""
    shared = base.index.intersection(level.index)
    paired = len(shared) == len(base) == len(level) and len(shared) >= stats.PAIRED_MIN
    if paired:
        base, level = base.loc[shared], level.loc[shared]
    row: dict[str, Any] = {"n_base": len(base), "n_level": len(level),
                           "effect": float(level.mean() - base.mean())}
    if min(len(base), len(level)) < 2:
        return row | {"low": math.nan, "high": math.nan, "method": "-", "p": math.nan,
                      "p_improve": math.nan, "verdict": ONE_SEED, "seeds_needed": None}
    b, v = base.to_numpy(float), level.to_numpy(float)
    effect = stats.effect_interval(b, v, paired)
    sign = 1 if higher_is_better else -1
    pi = stats.probability_of_improvement(sign * b, sign * v)
    sd = (float(np.std(v - b, ddof=1)) if paired else pooled_sd([b, v])[0])
    return row | {"low": float(effect.low), "high": float(effect.high),
                  "method": effect.method, "p": float(stats.permutation_p(b, v, paired)),
                  "p_improve": float(pi),
                  "verdict": verdict(float(effect.low), float(effect.high), higher_is_better),
                  "seeds_needed": seeds_needed(sd, delta, paired)}


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    if low > 0:
        return BETTER if higher_is_better else WORSE
    if high < 0:
        return WORSE if higher_is_better else BETTER
    return f"unresolved (±{(high - low) / 2:.2f})"


def verdict_kind(text: str) -> str:
    """The verdict without its half-width: a key of VERDICT_COLORS."""
    return "unresolved" if text.startswith("unresolved") else text


def effects(frame: pd.DataFrame, metric: Metric, delta: float = DEFAULT_DELTA) -> pd.DataFrame:
    """One row per (knob, level) vs base, with Holm-adjusted p-values over all rows."""
    runs = completed(frame, metric)
    rows = []
    for c in find_comparisons(runs):
        rows.append({"knob": c.knob, "setting": c.group, "base": level_text(c.knob, c.base),
                     "level": level_text(c.knob, c.level),
                     **compare(c.base_values, c.level_values, delta, metric.higher_is_better)})
    table = pd.DataFrame(rows, columns=["knob", "setting", "base", "level", "n_base", "n_level",
                                        "effect", "low", "high", "method", "p", "p_improve",
                                        "verdict", "seeds_needed"])
    tested = table["p"].notna()
    table["p_holm"] = math.nan
    table.loc[tested, "p_holm"] = stats.holm(table.loc[tested, "p"])
    return table


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


def seed_plan(table: pd.DataFrame, frame: pd.DataFrame, metric: Metric, delta: float
              ) -> dict[str, Any]:
    """The folder's pooled seed sd and the seeds an unpaired comparison needs for delta."""
    runs = completed(frame, metric)
    columns = [c for c in varying(runs) if c != SEED]
    groups = [g["_value"].to_numpy() for _, g in runs.groupby(row_key(runs, columns))]
    sd, dof = pooled_sd(groups)
    return {"delta": delta, "seed_sd": sd, "dof": dof, "alpha": ALPHA, "power": POWER,
            "seeds_needed": seeds_needed(sd, delta), "per_comparison": table[
                ["knob", "level", "seeds_needed"]].to_dict("records")}


class Verdicts(NamedTuple):
    metric: Metric
    delta: float
    effects: pd.DataFrame
    importance: pd.DataFrame
    study_importance: pd.DataFrame
    plan: dict[str, Any]
    claims: pd.DataFrame
    runs: int


def build_verdicts(frame: pd.DataFrame, metric: str | None = None, delta: float = DEFAULT_DELTA,
                   studies: Sequence = ()) -> Verdicts:
    from analysis.claims import paper_claims

    if not (delta > 0):
        raise ValueError(f"--delta {delta} must be > 0 (points)")
    chosen = pick_metric(frame, metric)
    table = effects(frame, chosen, delta)
    study_rows = [study_importance(s) for s in studies]
    return Verdicts(chosen, delta, table, importance(frame, chosen),
                    pd.concat(study_rows, ignore_index=True) if study_rows else
                    pd.DataFrame(columns=["param", "evaluator", "mean", "sd"]),
                    seed_plan(table, frame, chosen, delta), paper_claims(frame, chosen, delta),
                    int(len(completed(frame, chosen))))


def interval_text(effect: float, low: float, high: float) -> str:
    if math.isnan(low):
        return f"{effect:+.2f}"
    return f"{effect:+.2f} [{low:+.2f}, {high:+.2f}]"


def p_text(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.3f}"


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
                     "effect [95% CI]": interval_text(r.effect, r.low, r.high),
                     "method": r.method, "p": p_text(r.p), "p (Holm)": p_text(r.p_holm),
                     "P(level > base)": p_text(r.p_improve), "verdict": r.verdict,
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
            f"{v.delta:g} points at 95% confidence with 80% power needs {p['seeds_needed']} "
            "seeds per config (unpaired; each row's own need is in the last column).")


def markdown(v: Verdicts) -> str:
    """The whole verdict section: effects, claims, importance, plan (Markdown)."""
    lines = [f"Metric: {v.metric.column}, {v.metric.label}, over {v.runs} completed runs. "
             "Effect = mean of the level minus mean of the base over seeds; 95% bootstrap "
             f"interval over seeds (paired by seed when both share >= {stats.PAIRED_MIN} "
             "seeds, else unpaired: the method column); p: "
             "permutation test (exact when small), Holm-adjusted across this table; "
             "P(level > base): probability of improvement. The verdict is the interval's: "
             "`unresolved (±h)` means the interval (half-width h) holds zero.", "",
             effects_markdown(v), "", "**Paper claims** (each against these results; the "
             "interval is 95% bootstrap over seeds):", "", claims_markdown(v), "",
             "**Importance**: share of the metric's variance explained by each knob (type-II "
             "ANOVA over configs) and by seed noise; 95% bootstrap interval over seeds. The "
             "shares need not sum to 100%: the knobs of a one-knob design share its base "
             "config, so their sums of squares overlap.", "",
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
                       "runs": v.runs, "effects": _records(v.effects),
                       "importance": _records(v.importance),
                       "study_importance": _records(v.study_importance),
                       "plan": json.loads(pd.Series(v.plan).to_json()),
                       "claims": _records(v.claims)}, indent=2)
