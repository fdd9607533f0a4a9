"""The verdicts of a results folder in one summary: every one-knob effect with its
interval, test and verdict (analysis/verdicts/effects.py) and the paper's claims beside
what these results say (analysis/verdicts/claims.py), judged as one family so that one
verdict column controls the error over the whole report; how much of the metric's
variance each knob and the seeds explain; the seeds each comparison needs; and all of it
as the Markdown and JSON that `verdicts` prints. Failed runs are counted, never dropped.
docs/verdicts.md explains the statistics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import pandas as pd

from analysis.markup import literal, literal_fields
from analysis.results import Metric, label, pick_metric
from analysis.verdicts import stats
from analysis.verdicts.claims import paper_claims
from analysis.verdicts.effects import (
    IMPORTANCE_SEEDS,
    effects,
    importance,
    seed_plan,
    study_importance,
)
from analysis.verdicts.judge import COLLAPSE_MARGIN, TOO_FEW, Judge, completed
from analysis.verdicts.stats import interval_text

DEFAULT_DELTA = 0.5  # points: the smallest effect the seed planner is asked to resolve


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


def p_text(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def confidence_text(v: Verdicts) -> str:
    """"98.75%": the confidence of the report's intervals."""
    return f"{100 * (1 - v.alpha):.4g}%"


def failures_text(r) -> str:
    text = f"{r.failed_level}/{r.runs_level} vs {r.failed_base}/{r.runs_base}"
    return text if math.isnan(r.failure_p) else f"{text} (p {p_text(r.failure_p)})"


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
                     **{s.header: s.text(*(getattr(r, c) for c in s.columns))
                        for s in stats.COMPARISON_STATISTICS},
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
