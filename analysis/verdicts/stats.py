"""The statistics behind every interval the suite prints or draws (docs/verdicts.md
explains the choices and gives their measured coverage).

One comparison has one method, whose interval and test agree: Welch's t for two sets of
seeds (the paired t on per-seed differences when both sides ran the same seeds, enough of
them). The interval excludes zero exactly when the test rejects at the interval's level,
and both are closed-form, so a number never moves with a bootstrap seed. (An expanded
bootstrap percentile interval asked scipy for percentiles so far out that a handful of
resamples set each end, so its ends moved with the bootstrap seed; and its exact
permutation test cannot go below 2 over the number of splits, 2/70 at 4 vs 4 seeds.)

A report holds many comparisons, so verdicts are judged at the family-wise level by
default: Bonferroni's simultaneous intervals at 1 - alpha/m, whose verdicts equal those of
the Bonferroni-adjusted p-values printed beside them (Holm's step-down test rejects more,
but has no interval that says the same).

Every function takes arrays whose last axis holds the seeds and accepts leading axes, so
the simulations (analysis/verdicts/simulation.py) run thousands of replications in one
call.

What a comparison reports beside its effect, interval and test is listed in one place,
COMPARISON_STATISTICS: the judge computes each entry and the effects table (JSON and
Markdown) shows it, so a new statistic is its function and its entry here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
RESAMPLES = 9999
# Seed-aligned values are compared paired from this many seeds on: the paired t has n - 1
# degrees of freedom against Welch's up to 2n - 2, and the per-seed correlation between
# configs measured on this suite's runs is often near zero or negative, so pairing only
# pays with many seeds (docs/verdicts.md).
PAIRED_MIN = 6
# Fewer seeds than this on either side give no interval and no `better`/`worse`. Coverage
# is measured from here on (analysis/verdicts/simulation.py: at least 93% for every noise model,
# paired and unpaired); below it each side's spread rests on one degree of freedom, and
# one collapsed seed of two leaves nothing to judge (docs/verdicts.md).
MIN_SEEDS = 3


class Difference(NamedTuple):
    """level - base: the effect, its standard error and the t distribution's degrees of
    freedom (NaN standard error: a side with fewer than 2 values)."""
    effect: np.ndarray
    se: np.ndarray
    dof: np.ndarray
    method: str  # "paired" | "unpaired" (Welch)


def difference(base, level, paired: bool) -> Difference:
    """The difference of means, paired (per-seed differences: seeds aligned on the last
    axis) or unpaired (Welch: each side's own variance)."""
    base, level = np.asarray(base, float), np.asarray(level, float)
    nb, nl = base.shape[-1], level.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        if paired:
            if nb != nl:
                raise ValueError("a paired comparison needs as many base as level values")
            diffs = level - base
            se = diffs.std(axis=-1, ddof=1) / math.sqrt(nl) if nl > 1 else \
                np.full(diffs.shape[:-1], math.nan)
            return Difference(diffs.mean(axis=-1), se, np.full(se.shape, nl - 1.0), "paired")
        vb = base.var(axis=-1, ddof=1) / nb if nb > 1 else np.full(base.shape[:-1], math.nan)
        vl = level.var(axis=-1, ddof=1) / nl if nl > 1 else np.full(level.shape[:-1], math.nan)
        se = np.sqrt(vb + vl)
        dof = (vb + vl) ** 2 / (vb ** 2 / (nb - 1) + vl ** 2 / (nl - 1))
    return Difference(level.mean(axis=-1) - base.mean(axis=-1), se, dof, "unpaired")


def interval(d: Difference, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided 1 - alpha interval of the effect (NaN where the standard error is 0 or
    unknown: no spread, no interval)."""
    with np.errstate(invalid="ignore"):
        half = stats.t.ppf(1 - alpha / 2, d.dof) * np.where(d.se > 0, d.se, math.nan)
    return d.effect - half, d.effect + half


def p_value(d: Difference) -> np.ndarray:
    """Two-sided p of the t test the interval inverts: p < alpha exactly when the 1 - alpha
    interval excludes zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = d.effect / np.where(d.se > 0, d.se, math.nan)
    return 2 * stats.t.sf(np.abs(t), d.dof)


def adjusted(p, family: int) -> np.ndarray:
    """Bonferroni-adjusted p over a family of `family` comparisons: below alpha exactly when
    the simultaneous (1 - alpha/family) interval excludes zero."""
    return np.minimum(1.0, np.asarray(p, float) * max(family, 1))


def probability_of_improvement(base, level) -> np.ndarray:
    """P(X > Y) as rliable defines it (Agarwal et al. 2021): the chance that a random seed of
    `level` beats a random seed of `base`, ties counting one half (the Mann-Whitney U
    statistic over the number of pairs)."""
    base, level = np.asarray(base, float), np.asarray(level, float)
    above = level[..., :, None] > base[..., None, :]
    tied = level[..., :, None] == base[..., None, :]
    return (above + 0.5 * tied).mean(axis=(-1, -2))


def improvement_interval(base, level, seed: int = 0) -> tuple[float, float, float]:
    """(P(level > base), low, high): the 95% stratified bootstrap interval as rliable
    reports it (each side's seeds resampled on their own); a percentile interval at 95%
    over RESAMPLES resamples, so hundreds of resamples lie beyond each end and the ends
    barely move with the bootstrap seed (tests/test_verdicts.py checks them)."""
    base, level = np.asarray(base, float), np.asarray(level, float)
    point = float(probability_of_improvement(base, level))
    if min(len(base), len(level)) < 2:
        return point, math.nan, math.nan
    result = stats.bootstrap((base, level), lambda b, v, axis=-1: probability_of_improvement(
        np.moveaxis(b, axis, -1), np.moveaxis(v, axis, -1)), vectorized=True,
        n_resamples=RESAMPLES, confidence_level=CONFIDENCE, method="percentile",
        rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return point, float(low), float(high)



def interval_text(value: float, low: float, high: float, spec: str = "+.2f") -> str:
    """"+1.20 [+0.10, +2.30]": a value with its interval in format `spec` ("-" without a
    value, the value alone without an interval)."""
    if math.isnan(value):
        return "-"
    if math.isnan(low):
        return f"{value:{spec}}"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


class Statistic(NamedTuple):
    """A statistic of one comparison, shown beside its effect, interval and test: one or
    more columns of the effects table (verdicts.json, the effects frame) and one cell of
    its Markdown. `compute(base, level)` gets each side's seeds oriented so that higher is
    better and returns one value per column; `text` writes those values as the cell."""
    columns: tuple[str, ...]
    header: str
    compute: Callable[[np.ndarray, np.ndarray], tuple[float, ...]]
    text: Callable[..., str]


# Every statistic a comparison reports beyond its interval and test, in column order; it is
# computed wherever both sides have MIN_SEEDS seeds. A new statistic is one entry here.
COMPARISON_STATISTICS = (
    Statistic(("p_improve", "p_improve_low", "p_improve_high"), "P(level better) [95% CI]",
              improvement_interval, functools.partial(interval_text, spec=".2f")),
)

def mean_interval(values) -> tuple[float, float, float]:
    """(mean, low, high) of one config's seeds: the 95% t interval of the mean, the one-
    sample counterpart of the comparisons' interval. NaN bounds with fewer than 2 finite
    values or none of spread (no interval can be read off identical values)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2 or np.ptp(values) == 0:
        return mean, math.nan, math.nan
    half = stats.t.ppf(1 - ALPHA / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(
        len(values))
    return mean, mean - half, mean + half


def proportion_interval(successes: int, trials: int) -> tuple[float, float]:
    """95% Clopper-Pearson interval of a rate (e.g. of diverged runs)."""
    ci = stats.binomtest(successes, trials).proportion_ci(CONFIDENCE, method="exact")
    return float(ci.low), float(ci.high)


def failure_p(failed: int, runs: int, base_failed: int, base_runs: int) -> float:
    """Two-sided Fisher's exact p that a level fails at the base's rate."""
    table = [[failed, runs - failed], [base_failed, base_runs - base_failed]]
    return float(stats.fisher_exact(table).pvalue)


def variance_shares(y: np.ndarray, designs: dict[str, np.ndarray], config: np.ndarray
                    ) -> dict[str, float]:
    """Share of the metric's total sum of squares explained by each knob (type-II ANOVA:
    what the knob adds to a least-squares main-effects model of every other knob), and
    the seed noise's share (the spread between seeds of one config). `designs` maps each
    knob to its dummy-coded columns; `config` gives each row's config index. Shares need
    not sum to 1: type-II sums of squares of unbalanced designs do not add up."""
    y = np.asarray(y, float)
    total = float(((y - y.mean()) ** 2).sum())
    intercept = np.ones((len(y), 1))

    def ssr(names) -> float:
        x = np.hstack([intercept, *[designs[n] for n in names]])
        fitted = x @ np.linalg.lstsq(x, y, rcond=None)[0]
        return float(((y - fitted) ** 2).sum())

    full = ssr(list(designs))
    shares = {name: (ssr([n for n in designs if n != name]) - full) / total if total else 0.0
              for name in designs}
    means = np.bincount(config, weights=y) / np.bincount(config)
    shares["seed noise"] = float(((y - means[config]) ** 2).sum()) / total if total else 0.0
    return shares
