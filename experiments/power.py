"""How many seeds a comparison needs: the seed planner shared by `perceiver-ablate verdicts`
(from a finished folder) and `perceiver-ablate sweep --dry-run --pilot` (before submitting).

It lives in experiments, not analysis, because the sweep command uses it and analysis may
import experiments but never the reverse. The verdicts' intervals
(analysis/verdicts/stats.py) are t intervals (Welch's, or paired), so the power of a t test
(statsmodels) predicts how often they resolve an effect; `verdicts` asks at its family-wise
alpha. tests/test_verdicts.py checks the prediction against simulated verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

ALPHA = 0.05  # 95% confidence
POWER = 0.8
MAX_SEEDS = 10_000  # beyond this the answer is "not with seeds"


def pooled_sd(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """(seed standard deviation pooled over configs, its degrees of freedom): the spread
    that seeds alone cause. Groups with one value carry no information about it."""
    squares, dof = 0.0, 0
    for values in groups:
        values = np.asarray(values, float)
        values = values[np.isfinite(values)]
        if len(values) >= 2:
            squares += float(((values - values.mean()) ** 2).sum())
            dof += len(values) - 1
    return (math.sqrt(squares / dof), dof) if dof else (math.nan, 0)


def seeds_needed(sd: float, delta: float, paired: bool = False, alpha: float = ALPHA,
                 power: float = POWER) -> int | None:
    """Seeds per config to resolve an effect of `delta` (two-sided, level alpha, with
    probability `power`), given the seed standard deviation `sd` (of one config's values, or
    of the per-seed differences when paired). None when sd is unknown; MAX_SEEDS when
    seeds cannot reach it."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if not (delta > 0):
        raise ValueError(f"delta={delta} must be > 0 (the smallest effect worth resolving)")
    if not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    solver = TTestPower() if paired else TTestIndPower()

    def power_at(n: int) -> float:
        value = float(solver.power(delta / sd, n, alpha, alternative="two-sided"))
        return 1.0 if math.isnan(value) else value  # NaN: scipy's nct far in its tail

    if power_at(MAX_SEEDS) < power:
        return MAX_SEEDS
    # the smallest n with enough power: power grows with n, so bisect (statsmodels'
    # solve_power fails to converge for very large or very small effect sizes)
    low, high = 1, MAX_SEEDS
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if power_at(middle) >= power else (middle, high)
    return max(2, high)


def in_points(metric: str, values: np.ndarray) -> np.ndarray:
    """Fractions (accuracy, mean average precision: names ending in acc or map) as
    percentage points; a column already in percent, or any other metric, as it is."""
    values = np.asarray(values, float)
    fraction = metric.rsplit(".", 1)[-1].endswith(("acc", "map"))
    finite = values[np.isfinite(values)]
    return values * 100 if fraction and len(finite) and finite.max() <= 1 else values


def metric_value(result: dict, metric: str):
    """A run record's (result.json) value of a dotted metric (`final.test_acc`), or None."""
    if "." not in metric:
        return result.get(metric)
    section, name = metric.split(".", 1)
    return (result.get(section) or {}).get(name)


def pilot_spread(results_dir, metric: str) -> tuple[float, int, int]:
    """(seed sd in points, degrees of freedom, configs with >= 2 seeds) of `metric` over
    the completed runs of a pilot folder, read from its run records (the results layout)."""
    from pathlib import Path

    import yaml

    from experiments.runfolder import run_folders

    folder = Path(results_dir)
    if not folder.is_dir():
        raise ValueError(f"pilot folder {str(folder)!r} does not exist")
    groups: dict[str, list[float]] = {}
    for run_folder in run_folders(folder):
        try:
            result = run_folder.read_result()
            config = run_folder.read_config()
        except (OSError, ValueError, yaml.YAMLError):
            continue  # not started, or unreadable: it tells nothing about seed noise
        value = metric_value(result, metric)
        if result.get("status") != "completed" or not isinstance(value, (int, float)):
            continue
        config.get("train", {}).pop("seed", None)
        groups.setdefault(yaml.safe_dump(config, sort_keys=True), []).append(float(value))
    if not groups:
        raise ValueError(f"pilot folder {folder} holds no completed run with {metric!r}; "
                         "point --pilot at a finished sweep or study, or pick --metric")
    scaled = [in_points(metric, np.array(v)) for v in groups.values()]
    sd, dof = pooled_sd(scaled)
    return sd, dof, sum(len(v) >= 2 for v in groups.values())
