"""How often the verdicts' intervals hold the truth, and how often a report holds a false
`better`/`worse`, measured by simulation (docs/verdicts.md prints the table this module
writes; tests/test_verdicts.py checks its key cells).

Each replication is judged on its own, with its own degrees of freedom, exactly as
analysis/verdicts.py judges one comparison (stats.difference, stats.interval). Seed noise
has unit standard deviation, so effects are in noise units; four noise models:

    normal       N(0, 1)
    skewed       1 - Exp(1): a long tail of bad seeds (skewness -2)
    heavy        Student t with 3 degrees of freedom, scaled to unit variance
    divergence   normal, but 5% of runs collapse to chance (30 noise units below): what a
                 diverged run counted at chance accuracy looks like

Run `python -m analysis.simulation [REPLICATIONS]` for the full table (numpy-vectorised,
so thousands of replications per cell are cheap).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from analysis import stats

COLLAPSE = -30.0  # a collapsed run, in noise units below the mean
DIVERGENCE_RATE = 0.05
SEED_COUNTS = tuple(range(3, 11))
DEMO_LEVELS, DEMO_SEEDS = 4, 4  # experiments/sweeps/demo.yaml: 4 levels against one base


def _normal(rng, shape):
    return rng.standard_normal(shape)


def _skewed(rng, shape):
    return 1 - rng.exponential(1.0, shape)


def _heavy(rng, shape):
    return rng.standard_t(3, shape) / np.sqrt(3)


def _divergence(rng, shape):
    values = rng.standard_normal(shape)
    return np.where(rng.random(shape) < DIVERGENCE_RATE, COLLAPSE, values)


NOISE: dict[str, Callable] = {"normal": _normal, "skewed": _skewed, "heavy": _heavy,
                              "divergence": _divergence}


def draw(noise: str, rng, reps: int, n: int, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """(base, level), each (reps, n), with the same distribution (no true effect); paired
    draws share a per-seed component (a seed's data order), removed by the paired test."""
    base, level = NOISE[noise](rng, (reps, n)), NOISE[noise](rng, (reps, n))
    if paired:
        shared = rng.standard_normal((reps, n))
        base, level = base + shared, level + shared
    return base, level


def coverage(noise: str, n: int, paired: bool, reps: int, seed: int = 0,
             alpha: float = stats.ALPHA) -> float:
    """Share of replications whose 1 - alpha interval holds the true difference (0)."""
    base, level = draw(noise, np.random.default_rng(seed), reps, n, paired)
    low, high = stats.interval(stats.difference(base, level, paired), alpha)
    return float(np.mean((low <= 0) & (0 <= high)))


def unequal_coverage(n: int, reps: int, seed: int = 0) -> float:
    """Coverage of Welch's interval when the two sides differ in shape and spread (a normal
    base, a skewed level with 3 times its spread, equal means): the known weak spot of a
    t interval with few seeds, measured so docs/verdicts.md can say how weak."""
    rng = np.random.default_rng(seed)
    base, level = rng.standard_normal((reps, n)), 3 * _skewed(rng, (reps, n))
    low, high = stats.interval(stats.difference(base, level, False))
    return float(np.mean((low <= 0) & (0 <= high)))


def family_error(noise: str, reps: int, levels: int = DEMO_LEVELS, seeds: int = DEMO_SEEDS,
                 per_comparison: bool = False, seed: int = 0) -> float:
    """Share of simulated reports (`levels` levels against one base, `seeds` seeds each, no
    true effect) with at least one `better`/`worse`: the family-wise error."""
    rng = np.random.default_rng(seed)
    base = NOISE[noise](rng, (reps, 1, seeds))
    level = NOISE[noise](rng, (reps, levels, seeds))
    alpha = stats.ALPHA if per_comparison else stats.ALPHA / levels
    low, high = stats.interval(stats.difference(base, level, False), alpha)
    return float(np.mean(((low > 0) | (high < 0)).any(axis=-1)))


def power(effect: float, noise_sd: float, seeds: int, family: int, reps: int,
          seed: int = 0) -> float:
    """Share of replications in which a true `effect` (points) at `noise_sd` points of
    normal seed noise is judged `better` within a family of `family` comparisons."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, noise_sd, (reps, seeds))
    level = rng.normal(effect, noise_sd, (reps, seeds))
    low, _ = stats.interval(stats.difference(base, level, False), stats.ALPHA / family)
    return float(np.mean(low > 0))


def coverage_table(reps: int) -> str:
    """Markdown: coverage per noise model, pairing and seed count; then the family-wise
    error of the demo's design."""
    header = "| noise | method | " + " | ".join(f"n={n}" for n in SEED_COUNTS) + " |"
    lines = [header, "|---|---|" + "---|" * len(SEED_COUNTS)]
    for name in NOISE:
        for paired in (False, True):
            cells = [coverage(name, n, paired, reps, seed=n) for n in SEED_COUNTS]
            lines.append(f"| {name} | {'paired' if paired else 'Welch'} | "
                         + " | ".join(f"{100 * c:.1f}%" for c in cells) + " |")
    lines.append("| unequal (skewed level, 3x spread) | Welch | " + " | ".join(
        f"{100 * unequal_coverage(n, reps, seed=n):.1f}%" for n in SEED_COUNTS) + " |")
    lines += ["", f"| noise | family-wise (Bonferroni, {DEMO_LEVELS} comparisons) | "
              "per comparison |", "|---|---|---|"]
    for name in NOISE:
        lines.append(f"| {name} | {100 * family_error(name, reps):.1f}% | "
                     f"{100 * family_error(name, reps, per_comparison=True):.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    replications = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    print(f"{replications} replications per cell; simulation error of a 95% cell "
          f"±{100 * 1.96 * np.sqrt(0.95 * 0.05 / replications):.1f} points\n")
    print(coverage_table(replications))
    print(f"\n+4 points at 0.5 points of noise, {DEMO_SEEDS} seeds, family of {DEMO_LEVELS}: "
          f"resolved in {100 * power(4, 0.5, DEMO_SEEDS, DEMO_LEVELS, replications):.1f}%")
