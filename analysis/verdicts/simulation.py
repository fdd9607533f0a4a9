"""How often the verdicts' intervals hold the truth, and how often a report holds a false
`better`/`worse`, measured by simulation (docs/verdicts.md prints the table this module
writes; tests/test_verdicts.py checks its key cells).

Each replication is judged on its own, with its own degrees of freedom, exactly as
analysis/verdicts/judge.py judges one comparison (stats.difference, stats.interval). Seed
noise has unit standard deviation, so effects are in noise units; four noise models:

    normal       N(0, 1)
    skewed       1 - Exp(1): a long tail of bad seeds (skewness -2)
    heavy        Student t with 3 degrees of freedom, scaled to unit variance
    divergence   normal, but 5% of runs collapse to chance (30 noise units below): what a
                 diverged run counted at chance accuracy looks like

Run `python -m analysis.verdicts.simulation [REPLICATIONS]` for the full table
(numpy-vectorised, so thousands of replications per cell are cheap).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from analysis.verdicts import stats
from experiments import sequential
from experiments.power import seeds_needed

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


def adaptive_sweeps(effects, reps: int, first: int = DEMO_SEEDS, round_seeds: int = 2,
                    max_seeds: int = 16, delta: float = 0.4, anytime: bool = True,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulated `sweep --until-resolved` runs: one base and a level per entry of `effects`
    (noise units, normal noise), `first` seeds, then `round_seeds` more to every open
    comparison until all are decided or `max_seeds`, judged as experiments/orchestration/
    adaptive.py judges (anytime: its confidence sequence; else Welch's fixed-n interval at
    every look, the naive rule). Returns (verdicts, level seeds, base seeds) per replication;
    every comparison still open shares the same seeds, so a round judges them together."""
    rng = np.random.default_rng(seed)
    effects = np.asarray(effects, float)
    base = rng.standard_normal((reps, 1, max_seeds))
    level = rng.standard_normal((reps, len(effects), max_seeds)) + effects[:, None]
    alpha = stats.ALPHA / len(effects)
    verdicts = np.full((reps, len(effects)), sequential.OPEN, dtype=object)
    seeds = np.zeros(verdicts.shape, int)
    n = first
    while True:
        still = verdicts == sequential.OPEN
        if anytime:
            _, low, high = sequential.confidence_sequence(base[..., :n], level[..., :n], alpha)
        else:
            low, high = stats.interval(stats.difference(base[..., :n], level[..., :n], False),
                                       alpha)
        verdicts = np.where(still, sequential.decide(low, high, delta), verdicts)
        seeds = np.where(still, n, seeds)
        if n >= max_seeds:
            return verdicts, seeds, seeds.max(axis=1)
        n = min(n + round_seeds, max_seeds)


def adaptive_family_error(reps: int, levels: int = DEMO_LEVELS, anytime: bool = True,
                          seed: int = 0, **rounds) -> float:
    """Share of simulated adaptive sweeps with no true effect that end with a `better` or
    `worse` anywhere: the family-wise error over comparisons and rounds."""
    verdicts, _, _ = adaptive_sweeps(np.zeros(levels), reps, anytime=anytime, seed=seed,
                                     **rounds)
    return float(np.mean(np.isin(verdicts, (sequential.BETTER, sequential.WORSE)).any(axis=1)))


def adaptive_table(reps: int, effects=(0.0, 1.0, 2.0, 3.0, 5.0)) -> str:
    """Markdown: the adaptive rule on the demo's shape (4 levels of one true effect against
    a base, 4 seeds, +2 per round up to 16, --delta 0.4 noise units) against the fixed
    design of equal power (Welch at the family's alpha, experiments/power.py)."""
    lines = ["| true effect (noise sd) | decided better | equivalent | open | false "
             "better/worse | runs (mean) | fixed design: seeds per config for equal power "
             "| its runs |", "|---|---|---|---|---|---|---|---|"]
    for effect in effects:
        verdicts, seeds, base = adaptive_sweeps(np.full(DEMO_LEVELS, effect), reps)
        share = {v: float(np.mean(verdicts == v)) for v in (
            sequential.BETTER, sequential.WORSE, sequential.EQUIVALENT, sequential.OPEN)}
        runs = float(np.mean(base + seeds.sum(axis=1)))
        power_hit = share[sequential.BETTER]
        # equal power; all replications decided is asked as 99.5% (no n has power 1)
        fixed = seeds_needed(1.0, effect, alpha=stats.ALPHA / DEMO_LEVELS,
                             power=min(power_hit, 0.995)) if effect > 0 and power_hit else None
        wrong = share[sequential.WORSE] + (share[sequential.BETTER] if effect == 0 else 0)
        lines.append(f"| {effect:g} | {100 * power_hit:.1f}% | "
                     f"{100 * share[sequential.EQUIVALENT]:.1f}% | "
                     f"{100 * share[sequential.OPEN]:.1f}% | {100 * wrong:.2f}% | {runs:.1f} | "
                     + (f"{fixed} | {(DEMO_LEVELS + 1) * fixed}" if fixed else "- | -") + " |")
    lines += ["", f"Family-wise error under the null, {DEMO_LEVELS} comparisons: anytime-valid "
              f"{100 * adaptive_family_error(reps):.2f}%, naive fixed-n intervals at every "
              f"look {100 * adaptive_family_error(reps, anytime=False):.2f}%"]
    return "\n".join(lines)


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
    print("\nsweep --until-resolved against a fixed design:\n")
    print(adaptive_table(replications))
