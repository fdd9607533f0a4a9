"""The statistics behind every interval the suite prints or draws, from scipy.stats and
statsmodels (docs/verdicts.md explains the choices).

Intervals are bootstrap percentile intervals over seeds, *expanded* for small samples
(Hesterberg 2015, "What teachers should know about the bootstrap"): a plain percentile
interval of a mean over n values is too narrow by sqrt((n-1)/n) and uses normal instead of
t quantiles, so with a handful of seeds it covers far less than it claims. The expansion
asks scipy for the percentile interval at the confidence level whose normal quantile
equals sqrt(n/(n-1)) t_{n-1}; the interval stays a bootstrap interval (no normality is
assumed for its shape) and keeps its nominal coverage with the seed counts the suite
runs (measured in docs/verdicts.md, checked by tests/test_verdicts.py).

Every function takes arrays whose last axis holds the seeds and accepts leading axes, so the
tests can check coverage and power over hundreds of simulated replications in one call.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
# Seed-aligned values are compared paired from this many seeds on: below it the bootstrap
# of n differences has too few distinct resamples to reach its nominal coverage, while the
# unpaired interval, resampling both sides, has enough (docs/verdicts.md).
PAIRED_MIN = 6


class Effect(NamedTuple):
    effect: np.ndarray  # mean(level) - mean(base)
    low: np.ndarray  # 95% bootstrap interval
    high: np.ndarray
    method: str  # "paired" | "unpaired"


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(0 if seed is None else seed)


def expanded_level(widening: float, dof: float, confidence: float = CONFIDENCE) -> float:
    """Percentile level whose normal quantile is `widening` times the t quantile (widening:
    the ratio of the unbiased standard error to the bootstrap's, sqrt(n/(n-1)) for a mean)."""
    t = stats.t.ppf(0.5 + confidence / 2, dof)
    return float(1 - 2 * stats.norm.sf(widening * t))


def _mean_widening(n: int) -> float:
    return math.sqrt(n / (n - 1))


def _difference(base, level, axis=-1):
    return np.mean(level, axis=axis) - np.mean(base, axis=axis)


def effect_interval(base: np.ndarray, level: np.ndarray, paired: bool,
                    seed: int | None = None, resamples: int = RESAMPLES) -> Effect:
    """Difference of means level - base and its 95% bootstrap interval over seeds: paired
    (resampling seeds, i.e. per-seed differences) when the values are seed-aligned, else
    unpaired (each config's seeds resampled on their own). Needs >= 2 values per side."""
    base, level = np.asarray(base, float), np.asarray(level, float)
    nb, nl = base.shape[-1], level.shape[-1]
    if min(nb, nl) < 2:
        raise ValueError("an interval needs at least 2 seeds on each side")
    if paired:
        if nb != nl:
            raise ValueError("paired comparison needs as many base as level values")
        diffs = level - base
        level_ = expanded_level(_mean_widening(nb), nb - 1)
        result = stats.bootstrap((diffs,), np.mean, axis=-1, vectorized=True,
                                 confidence_level=level_, n_resamples=resamples,
                                 method="percentile", rng=_rng(seed))
        effect = diffs.mean(axis=-1)
    else:
        # Welch's degrees of freedom, and the small-sample factor for equal variances.
        vb = base.var(axis=-1, ddof=1) / nb
        vl = level.var(axis=-1, ddof=1) / nl
        with np.errstate(invalid="ignore", divide="ignore"):
            dof = (vb + vl) ** 2 / (vb ** 2 / (nb - 1) + vl ** 2 / (nl - 1))
        dof = np.nan_to_num(dof, nan=nb + nl - 2)
        widening = math.sqrt((1 / nb + 1 / nl) / ((nb - 1) / nb ** 2 + (nl - 1) / nl ** 2))
        level_ = expanded_level(widening, float(np.min(dof)))
        result = stats.bootstrap((base, level), _difference, axis=-1, vectorized=True,
                                 confidence_level=level_, n_resamples=resamples,
                                 method="percentile", rng=_rng(seed))
        effect = _difference(base, level)
    low, high = result.confidence_interval
    return Effect(np.asarray(effect), np.asarray(low), np.asarray(high),
                  "paired" if paired else "unpaired")


def permutation_p(base: np.ndarray, level: np.ndarray, paired: bool,
                  seed: int | None = None) -> np.ndarray:
    """Two-sided permutation-test p-value of the difference of means (exact, i.e. every
    permutation, whenever there are fewer than RESAMPLES of them: scipy's rule)."""
    base, level = np.asarray(base, float), np.asarray(level, float)
    kind = "samples" if paired else "independent"
    result = stats.permutation_test((base, level), _difference, axis=-1,
                                    vectorized=True, permutation_type=kind,
                                    n_resamples=RESAMPLES, alternative="two-sided",
                                    rng=_rng(seed))
    return np.asarray(result.pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values over all comparisons of one report (statsmodels)."""
    from statsmodels.stats.multitest import multipletests

    pvalues = np.asarray(pvalues, float)
    if pvalues.size == 0:
        return pvalues
    return multipletests(pvalues, alpha=1 - CONFIDENCE, method="holm")[1]


def probability_of_improvement(base: np.ndarray, level: np.ndarray) -> np.ndarray:
    """P(X > Y) as rliable defines it (Agarwal et al. 2021): the chance that a random seed of
    `level` beats a random seed of `base`, ties counting one half, i.e. the Mann-Whitney U
    statistic over the number of pairs (scipy computes U)."""
    base, level = np.asarray(base, float), np.asarray(level, float)
    u = stats.mannwhitneyu(level, base, axis=-1, method="asymptotic").statistic
    return np.asarray(u) / (base.shape[-1] * level.shape[-1])


def mean_interval(values, seed: int | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of one config's seeds: 95% expanded bootstrap interval of the mean;
    NaN bounds with fewer than 2 finite values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2 or np.ptp(values) == 0:
        return (mean, math.nan, math.nan) if len(values) < 2 else (mean, mean, mean)
    result = stats.bootstrap((values,), np.mean, vectorized=True, n_resamples=RESAMPLES,
                             confidence_level=expanded_level(_mean_widening(len(values)),
                                                               len(values) - 1),
                             method="percentile", rng=_rng(seed))
    low, high = result.confidence_interval
    return mean, float(low), float(high)


def proportion_interval(successes: int, trials: int) -> tuple[float, float]:
    """95% Clopper-Pearson interval of a rate (e.g. of diverged runs)."""
    ci = stats.binomtest(successes, trials).proportion_ci(CONFIDENCE, method="exact")
    return float(ci.low), float(ci.high)


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
