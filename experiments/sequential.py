"""Anytime-valid intervals for `sweep --until-resolved`: a confidence sequence for the
difference of two configs' mean metric over seeds, with unknown seed variance, that may be
looked at after every round of seeds without inflating its error (docs/verdicts.md,
"Seeds only where the answer is open", says why this one and not a PyPI package's).

The sequence inverts the two-sample t Bayes factor with a normal prior on the standardised
effect (Goenen, Johnson, Lu & Westfall, "The Bayesian two-sample t test", The American
Statistician 59(3), 2005; a right-Haar prior on the common scale and mean):

    E = (1 + m g)^(-1/2) * [(1 + t^2/v) / (1 + t^2/(v (1 + m g)))]^((v + 1)/2),
    m = n1 n2 / (n1 + n2),  v = n1 + n2 - 2,

t being the pooled two-sample t statistic of the shifted difference. Under the null it is
an e-process in the filtration of the data's scale-invariant summaries (Perez-Ortiz, Lardy,
de Heide & Gruenwald, "E-statistics, group invariance and anytime-valid testing", Annals of
Statistics 52(4), 2024), so by Ville's inequality P(E ever >= 1/alpha) <= alpha: the set of
shifts it does not reject is a confidence sequence. E grows with |t|, so the set is the
interval mean difference +- t* se, with t* in closed form (`critical_t`). Bonferroni over a
family of comparisons keeps them simultaneous over comparisons and looks.

It lives in experiments, beside experiments/power.py, because the sweep command's adaptive
loop (experiments/orchestration/adaptive.py) judges with it and experiments never imports
analysis; analysis/verdicts/simulation.py measures its error and its cost in seeds.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05
# The prior's scale g (variance of the standardised effect under the alternative). Larger g
# bets on large effects: the sequence is finite from fewer seeds (it needs (1 + m g)^(v/2) >
# 1/alpha) but wider later. 4 makes it finite from 4 seeds per side against 4 comparisons,
# the demo's family (docs/verdicts.md has the simulated cost of this choice).
PRIOR_SCALE = 4.0
BETTER, WORSE, EQUIVALENT, OPEN = "better", "worse", "equivalent", "open"


def critical_t(n1, n2, alpha: float = ALPHA, g: float = PRIOR_SCALE) -> np.ndarray:
    """The |t| at which the Bayes factor reaches 1/alpha (inf: no finite interval yet)."""
    n1, n2 = np.asarray(n1, float), np.asarray(n2, float)
    m, v = n1 * n2 / (n1 + n2), n1 + n2 - 2
    k = 1 + m * g
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = (np.sqrt(k) / alpha) ** (2 / (v + 1))
        t = np.sqrt(v * (r - 1) / (1 - r / k))
    return np.where((v > 0) & (r < k), t, math.inf)


def confidence_sequence(base, level, alpha: float = ALPHA, g: float = PRIOR_SCALE
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(effect, low, high) of mean(level) - mean(base), seeds on the last axis (leading
    axes are replications), at time-uniform level 1 - alpha; +-inf where no finite
    interval exists yet (too few seeds), NaN bounds where the seeds do not spread."""
    base, level = np.asarray(base, float), np.asarray(level, float)
    n1, n2 = base.shape[-1], level.shape[-1]
    effect = level.mean(axis=-1) - base.mean(axis=-1)
    if n1 + n2 <= 2:
        return effect, np.full_like(effect, -math.inf), np.full_like(effect, math.inf)
    squares = ((base - base.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1) + \
        ((level - level.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    se = np.sqrt(squares / (n1 + n2 - 2) * (1 / n1 + 1 / n2))
    with np.errstate(invalid="ignore"):
        half = critical_t(n1, n2, alpha, g) * np.where(se > 0, se, math.nan)
    return effect, effect - half, effect + half


def decide(low, high, delta: float, higher_is_better: bool = True) -> np.ndarray:
    """better | worse (the interval excludes 0), equivalent (it lies inside +-delta) or
    open, element-wise."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    up, down = low > 0, high < 0
    better, worse = (up, down) if higher_is_better else (down, up)
    return np.select([better, worse, (low >= -delta) & (high <= delta)],
                     [BETTER, WORSE, EQUIVALENT], OPEN)
