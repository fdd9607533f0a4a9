"""The notebook API: a results folder as pandas DataFrames, verdicts and matplotlib
figures (docs/notebook.md has a worked example).

    from analysis import load_results, load_curves, load_verdicts, make_figures

These are the functions the `figures` and `verdicts` commands are built from, reached
from one place. Importing this package stays light (pandas and matplotlib load on the
first call), because every `analysis` module and command imports it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from analysis.verdicts.summary import Verdicts

__all__ = ["load_results", "load_curves", "load_verdicts", "make_figures"]


def load_results(results_dir: str | Path) -> pd.DataFrame:
    """One row per run below `results_dir`: config keys as dotted columns, `status`,
    `final.*` and `best.*` metrics, `params`, `flops`, `run_id`, `run_dir`."""
    from analysis.results import load_results as load

    return load(results_dir)


def load_curves(results_dir: str | Path) -> pd.DataFrame:
    """Every run's metrics.jsonl, one row per evaluation, with `run_id` and `status`."""
    from analysis.results import load_curves as load

    return load(results_dir)


def load_verdicts(results_dir: str | Path, metric: str | None = None,
                  delta: float | None = None, per_comparison: bool = False) -> Verdicts:
    """What `perceiver-ablate verdicts` prints, as DataFrames: `.effects` (one row per knob
    level against its base, the effect with its confidence interval and verdict),
    `.importance`, `.study_importance`, `.claims` (the paper's claims), `.plan` (seeds
    to add) and `.metric`. The verdicts control the family-wise error over the report
    unless `per_comparison` (docs/verdicts.md)."""
    from analysis.results import load_results as load
    from analysis.results import load_studies
    from analysis.verdicts import summary as V

    runs = load(results_dir)
    if runs.empty:
        raise ValueError(f"no readable run records under {results_dir}")
    return V.build_verdicts(runs, metric, V.DEFAULT_DELTA if delta is None else delta,
                            load_studies(Path(results_dir)), per_comparison)


def make_figures(results_dir: str | Path) -> dict[str, Figure]:
    """The figures `perceiver-ablate figures` draws from this folder, by file name without
    extension (`forest_effects`, `fig5_hyperparameters`, `training_curves`, ...)."""
    from analysis.report.figures import build_figures
    from analysis.results import load_curves as curves_of
    from analysis.results import load_results as load

    runs = load(results_dir)
    plots = build_figures(runs, curves_of(results_dir, runs), load_verdicts(results_dir))
    return {name: plot.figure for name, plot in plots.items()}
