"""Paper-style figures from a results frame (analysis.results.load_results) and its
verdicts (analysis.verdicts.summary: the forest plot of the effects).

Each builder draws what the results hold and returns a `Plot` (figure + caption), or None
when the results do not contain its axes; `build_figures` lists every builder once (an
Optuna study's own figures: `study_figures`), and the report, its HTML page and the
notebook API show what it returns. Accuracy is the
metric analysis.results.pick_metric picks for the verdicts too (test accuracy when any
completed run has one); the axis label says which. Diverged runs are never dropped: they
are drawn as red crosses at the bottom of the panel at their x value.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from analysis.report import style
from analysis.results import (
    SEED,
    ablation,
    config_columns,
    finished,
    label,
    percent,
    row_key,
    varying,
)
from analysis.verdicts.judge import TOO_FEW, VERDICT_COLORS, verdict_kind
from analysis.verdicts.stats import PAIRED_MIN, mean_interval
from experiments.formatting import human

if TYPE_CHECKING:
    from analysis.verdicts.summary import Verdicts

HYPERPARAMETER_AXES = ("model.num_latents", "model.latent_channels",
                       "model.self_attends_per_block", "model.num_cross_attends")  # Fig. 5
POSITION_AXES = ("model.init_scale", "encoding.num_bands", "encoding.max_resolution",
                 "encoding.spacing")  # Fig. 6
MAX_LEGEND_RUNS = 8  # training curves get a per-run legend up to this many runs


class Plot(NamedTuple):
    figure: Figure
    caption: str


class _Colors:
    """The same label gets the same colour in every panel of a figure."""

    def __init__(self) -> None:
        self.assigned: dict[str | None, tuple] = {}

    def __call__(self, key: str | None) -> tuple:
        if key not in self.assigned:
            self.assigned[key] = style.PALETTE[len(self.assigned) % len(style.PALETTE)]
        return self.assigned[key]


def _group_label(groups: list[str], values) -> str | None:
    if not groups:
        return None
    return ", ".join(f"{label(c)}={v}" for c, v in zip(groups, values, strict=True))


def _nyquist(runs: pd.DataFrame) -> pd.Series:
    """Each run's input resolution: `encoding.max_resolution: null` means exactly this.
    result.json records the index shape; records written before it did are recovered
    from the data set's native size."""
    def native(row) -> int:
        recorded = row.get("input.index_shape")
        if isinstance(recorded, str):
            return max(json.loads(recorded))
        from experiments.readback import index_shape

        size = row.get("data.image_size")
        return max(index_shape(row["data.name"], None if pd.isna(size) else int(size)))
    return runs.apply(native, axis=1)


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _format_x(ax: Axes, values: pd.Series, categories: list | None) -> None:
    if categories is not None:
        ax.xaxis.set_major_locator(FixedLocator(range(len(categories))))
        ax.set_xticklabels([str(c) for c in categories])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(-0.5, len(categories) - 0.5)
        return
    unique = np.unique(values.dropna().to_numpy(dtype=float))
    if unique.min() > 0 and unique.max() / unique.min() >= 8:
        powers_of_two = np.allclose(np.log2(unique), np.round(np.log2(unique)))
        ax.set_xscale("log", base=2 if powers_of_two else 10)
    if len(unique) <= 6:
        ax.xaxis.set_major_locator(FixedLocator(unique))
        ax.set_xticklabels([f"{v:g}" for v in unique])
        ax.xaxis.set_minor_locator(NullLocator())


def _panel(ax: Axes, runs: pd.DataFrame, axis: str, colors: _Colors) -> None:
    """Accuracy vs one axis: mean and 95% t interval over seeds per group (the verdicts'
    method for one config), diverged runs as red crosses."""
    rows, groups = ablation(runs, [axis])
    categories = None
    if axis == "encoding.max_resolution":
        nyquist = _nyquist(rows)
        x = pd.to_numeric(rows[axis]).fillna(nyquist)
        for size in sorted(nyquist.unique()):
            ax.axvline(size, color="0.3", linestyle="--", linewidth=0.9, zorder=1,
                       label="Nyquist")
    elif _is_numeric(rows[axis]):
        x = rows[axis].astype(float)
    else:
        categories = sorted(rows[axis].unique(), key=str)
        x = rows[axis].map({c: i for i, c in enumerate(categories)}).astype(float)
    rows = rows.assign(x=x)
    done = rows[rows["status"] == "completed"]
    cells = done.groupby(groups + ["x"], dropna=False)["acc"].apply(
        lambda values: pd.Series(mean_interval(values), index=["mean", "low", "high"]))
    cells = cells.unstack().reset_index() if len(done) else \
        pd.DataFrame(columns=[*groups, "x", "mean", "low", "high"])
    for key, group in (cells.groupby(groups, dropna=False) if groups else [((), cells)]):
        name = _group_label(groups, key)
        below = (group["mean"] - group["low"]).fillna(0).clip(lower=0)
        above = (group["high"] - group["mean"]).fillna(0).clip(lower=0)
        ax.errorbar(group["x"], group["mean"], yerr=[below, above], marker="o",
                    linestyle="none" if categories is not None else "-", color=colors(name),
                    **({"label": name} if name else {}))
    diverged = rows[rows["status"] == "diverged"]
    if len(diverged):  # on the x axis line, below the error bars: "off the chart", not a value
        low, high = (cells["low"].fillna(cells["mean"]).min(),
                     cells["high"].fillna(cells["mean"]).max()) if len(cells) else (0, 1)
        bottom = low - 0.12 * ((high - low) or 1)
        ax.scatter(diverged["x"], np.full(len(diverged), bottom), marker="x", s=30,
                   linewidths=1.2, color=style.DIVERGED_COLOR, zorder=3, label="diverged",
                   clip_on=False)
        ax.set_ylim(bottom=bottom)
    ax.set_xlabel(label(axis))
    _format_x(ax, rows["x"], categories)


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the whole figure, below the panels (never on top of data)."""
    entries = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(text, handle)
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="outside lower center",
                   ncols=min(len(entries), 4))


@style.styled
def ablation_figure(frame: pd.DataFrame, axes: Sequence[str], name: str) -> Plot | None:
    """One panel per axis present in the results (accuracy vs that axis)."""
    runs, acc_label = finished(frame)
    present = [axis for axis in axes if ablation(runs, [axis]) is not None]
    if not present:
        return None
    fig, panels = style.new_figure(len(present), height=2.1)
    colors = _Colors()
    for ax, axis in zip(panels, present, strict=True):
        _panel(ax, runs, axis, colors)
    panels[0].set_ylabel(acc_label)
    _legend(fig, panels)
    caption = (f"{name} analogue: {acc_label} vs {', '.join(label(a) for a in present)}; "
               "mean over completed seeds with its 95% t interval (no bar: one seed, or "
               "seeds that all agree), other settings fixed.")
    if (runs["status"] == "diverged").any():
        caption += " Red crosses: diverged runs."
    return Plot(fig, caption)


def hyperparameter_figure(frame: pd.DataFrame) -> Plot | None:
    """Paper Fig. 5: latents N, channels D, self-attends per block, cross-attends."""
    return ablation_figure(frame, HYPERPARAMETER_AXES, "Fig. 5")


def position_encoding_figure(frame: pd.DataFrame) -> Plot | None:
    """Paper Fig. 6: init scale, Fourier bands, max resolution (Nyquist dashed), spacing."""
    return ablation_figure(frame, POSITION_AXES, "Fig. 6")


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point beats (lower or equal cost and higher value)."""
    cost, value = np.asarray(cost, float), np.asarray(value, float)
    order = np.lexsort((-value, cost))
    front = np.zeros(len(cost), bool)
    best = -math.inf
    for i in order:
        if value[i] > best:
            front[i], best = True, value[i]
    return front


@style.styled
def pareto_figure(frame: pd.DataFrame) -> Plot | None:
    """Accuracy vs FLOPs and vs params, one point per config (mean over seeds)."""
    runs, acc_label = finished(frame)
    runs = runs[(runs["status"] == "completed") & runs["acc"].notna()]
    costs = [c for c in ("flops", "params") if c in runs and (runs[c] > 0).any()]
    if not costs or len(runs) < 2:
        return None
    keys = [c for c in config_columns(runs) if c != SEED]
    configs = runs.assign(key=row_key(runs, keys)).groupby("key").agg(
        acc=("acc", "mean"), arch=("model.arch", "first"), **{c: (c, "median") for c in costs})
    fig, panels = style.new_figure(len(costs), height=2.2)
    colors = _Colors()
    by_arch = "model.arch" in varying(runs)
    for ax, cost in zip(panels, costs, strict=True):
        points = configs[configs[cost] > 0]
        for arch, group in points.groupby("arch") if by_arch else [(None, points)]:
            name = style.ARCH_NAMES.get(arch, arch)
            ax.scatter(group[cost], group["acc"], s=14, color=colors(name), alpha=0.8,
                       **({"label": name} if arch else {}))
        front = points[pareto_front(points[cost], points["acc"])].sort_values(cost)
        ax.plot(front[cost], front["acc"], drawstyle="steps-post", color="0.2", linewidth=0.9,
                marker="o", markersize=5, markerfacecolor="none", label="Pareto front")
        if points[cost].max() / points[cost].min() >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda value, _: human(value).replace(".0", "")))
        ax.set_xlabel({"flops": "FLOPs per example", "params": "parameters"}[cost])
    panels[0].set_ylabel(acc_label)
    _legend(fig, panels)
    return Plot(fig, f"Accuracy vs cost: {acc_label}, one point per configuration (mean over "
                     "seeds); "
                     "the line is the Pareto front (no cheaper configuration is more accurate).")


def _run_labels(frame: pd.DataFrame) -> pd.Series:
    """Short names for runs: their values in the config columns that vary."""
    columns = varying(frame)
    if not columns:
        return frame["run_id"]
    return frame[columns].apply(
        lambda row: ", ".join(f"{label(c)}={row[c]}" for c in columns), axis=1)


@style.styled
def curves_figure(curves: pd.DataFrame, frame: pd.DataFrame) -> Plot | None:
    """Training loss and validation accuracy (or mAP, for multi-label runs) against step,
    one line per run."""
    metrics = [m for m in ("train_loss", "val_acc", "val_map")
               if m in curves and curves[m].notna().any()]
    if curves.empty or not metrics:
        return None
    names = _run_labels(frame.set_index("run_id", drop=False))
    run_ids = [r for r in frame["run_id"] if r in set(curves["run_id"])]
    fig, panels = style.new_figure(len(metrics), height=2.2)
    colors = _Colors()
    legend = len(run_ids) <= MAX_LEGEND_RUNS
    for ax, metric in zip(panels, metrics, strict=True):
        for run_id in run_ids:
            curve = curves[curves["run_id"] == run_id].sort_values("step")
            y = curve[metric] if metric.endswith("loss") else percent(curve[metric])
            diverged = curve["status"].iloc[0] == "diverged"
            color = style.DIVERGED_COLOR if diverged else colors(run_id)
            ax.plot(curve["step"], y, color=color, linewidth=0.9,
                    alpha=0.9 if legend or diverged else 0.5, zorder=3 if diverged else 2,
                    linestyle="--" if diverged else "-",
                    **({"label": names[run_id]} if legend and not diverged else {}))
            if diverged and y.notna().any():
                last = y.last_valid_index()
                ax.plot(curve["step"][last], y[last], "x", color=color, markersize=6,
                        zorder=4, label="diverged")
        ax.set_xlabel("step")
        ax.set_ylabel({"train_loss": "training loss", "val_acc": "val. accuracy (%)",
                       "val_map": "val. mAP (%)"}[metric])
        if metric.endswith("loss") and (curves[metric].dropna() > 0).all():
            ax.set_yscale("log")
    _legend(fig, panels)
    caption = "Training curves, one line per run"
    caption += "." if legend else f" ({len(run_ids)} runs)."
    if (frame["status"] == "diverged").any():
        caption += " Diverged runs dashed red, a cross at their last finite value."
    return Plot(fig, caption)


@style.styled
def forest_figure(effects: pd.DataFrame, metric_label: str) -> Plot | None:
    """One row per (knob, level): its effect against the base with the verdicts' interval
    (the effects table's, at its family-wise confidence), a zero line, colours by verdict
    (analysis.verdicts.effects)."""
    from matplotlib.lines import Line2D

    if effects.empty:
        return None
    names = [f"{label(r.knob)}: {r.level} vs {r.base}" + (f" ({r.setting})" if r.setting else "")
             for r in effects.itertuples(index=False)]
    fig = Figure(figsize=(style.FULL_WIDTH, 0.9 + 0.28 * len(effects)))
    ax = fig.add_subplot()
    y = np.arange(len(effects))[::-1]
    kinds = effects["verdict"].map(verdict_kind)
    for yi, row, kind in zip(y, effects.itertuples(index=False), kinds, strict=True):
        color = VERDICT_COLORS[kind]
        if not math.isnan(row.low):
            ax.plot([row.low, row.high], [yi, yi], color=color, linewidth=2.2,
                    solid_capstyle="butt")
        ax.plot(row.effect, yi, "o" if kind != TOO_FEW else "D", color=color, markersize=5)
    ax.axvline(0, color="0.2", linewidth=0.8, zorder=0)
    ax.set_yticks(y, names)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(f"effect on {metric_label}: level minus base")
    handles = [Line2D([], [], color=VERDICT_COLORS[k], marker="o", linewidth=2.2, label=k)
               for k in VERDICT_COLORS if (kinds == k).any()]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    confidence = effects["confidence"].dropna()
    level = f"{confidence.iloc[0]:.4g}%" if len(confidence) else "no"
    return Plot(fig, f"Effects against the base, one row per knob and level: mean difference "
                     f"of {metric_label} over seeds with the verdicts' {level} Welch t "
                     "interval (simultaneous over the report's comparisons unless "
                     f"--per-comparison; paired t when both configs share >= {PAIRED_MIN} "
                     "seeds); coloured by verdict (an interval holding zero is never an "
                     "ordering).")


def build_figures(frame: pd.DataFrame, curves: pd.DataFrame, verdicts: Verdicts
                  ) -> dict[str, Plot]:
    """Every figure the results support, by file name (no extension), in the report's
    order: the report, the notebook API and the HTML page show what this returns, so a new
    figure is a builder in this module and its entry here."""
    plots = {
        "forest_effects": forest_figure(verdicts.effects, verdicts.metric.label),
        "fig5_hyperparameters": hyperparameter_figure(frame),
        "fig6_position_encoding": position_encoding_figure(frame),
        "accuracy_vs_cost": pareto_figure(frame),
        "training_curves": curves_figure(curves, frame),
    }
    return {name: plot for name, plot in plots.items() if plot is not None}


def save_plots(plots: dict[str, Plot], out_dir: str | Path) -> list[tuple[str, Plot, list[Path]]]:
    """Write each plot as NAME.pdf and NAME.png; returns (name, plot, paths)."""
    return [(name, plot, style.save(plot.figure, Path(out_dir) / name))
            for name, plot in plots.items()]


@style.styled
def study_figures(study, target_name: str | None = None) -> dict[str, Plot]:
    """Optuna's optimisation history, parameter importances and slice plots for a study.

    Parameter importances use PED-ANOVA (Optuna's own; the default fANOVA needs
    scikit-learn). Slice plots come four parameters per figure, most important first.
    """
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    target_name = target_name or (study.metric_names or ["objective"])[0]
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        return {}
    plots = {}

    def keep(name: str, ax, width: float, height: float, caption: str) -> None:
        fig = np.ravel(ax)[0].figure
        plt.close(fig)  # drawn through pyplot by Optuna; keep only our reference
        for each in fig.axes:  # the caption names the figure; papers put no titles on plots
            for loc in ("left", "center", "right"):
                each.set_title("", loc=loc)
        if fig.get_suptitle():
            fig.suptitle("").set_in_layout(False)
        fig.set_size_inches(width, height)
        fig.set_layout_engine("constrained")
        plots[name] = Plot(fig, caption)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(study, target=target, target_name=target_name)
        ax.legend(loc="best")
        keep("study_history", ax, style.COLUMN_WIDTH, 2.2,
             f"Optimisation history of study {study.study_name!r}: {target_name} of every "
             f"trial and the best so far ({len(trials)} completed trials).")
        params = sorted({p for t in trials for p in t.params})
        if len(trials) >= 2 and params:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            importance = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=target)
            params = list(importance) + [p for p in params if p not in importance]
            ax = ovm.plot_param_importances(study, evaluator=evaluator, target=target,
                                            target_name=target_name)
            ax.get_legend().remove()  # one objective: the caption says which
            ax.set_ylabel("")
            ax.set_xlim(0, 1.15)  # importances sum to 1; room for the value labels
            keep("study_importances", ax, style.COLUMN_WIDTH, 0.9 + 0.25 * len(importance),
                 f"Parameter importances (PED-ANOVA) for {target_name}.")
        for start in range(0, len(params), 4):
            chunk = params[start:start + 4]
            ax = ovm.plot_slice(study, params=chunk, target=target, target_name=target_name)
            suffix = f"_{start // 4 + 1}" if len(params) > 4 else ""
            keep(f"study_slice{suffix}", ax,
                 style.COLUMN_WIDTH if len(chunk) == 1 else style.FULL_WIDTH, 2.2,
                 f"Slice plots: {target_name} against {', '.join(chunk)} "
                 "(colour: trial number).")
    return plots
