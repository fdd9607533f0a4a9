"""Paper-style tables (Tables 2, 5, 6, 7) from a results frame, as Markdown and LaTeX.

A table is one row per configuration: the knobs it is about, then any other setting that
differs between its rows, then accuracy as the mean over completed seeds with its 95% t
interval in brackets (analysis/verdicts/stats.py mean_interval: the verdicts' method for one
config), FLOPs and params in the paper's units (404.3B, 44.9M). A configuration whose
every seed diverged shows "diverged" instead of a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import pandas as pd

from analysis.markup import markdown_table
from analysis.report.style import ARCH_NAMES
from analysis.results import ablation, finished, label, percent
from analysis.verdicts.stats import mean_interval
from experiments.formatting import human


class Table(NamedTuple):
    frame: pd.DataFrame  # formatted cells (strings)
    caption: str


def mean_ci(values: pd.Series) -> str:
    """"84.2 [83.1, 85.0]": mean over seeds and its 95% t interval (one seed, or seeds
    that all agree: the value alone, no interval)."""
    mean, low, high = mean_interval(values)
    if pd.isna(mean):
        return "-"
    return f"{mean:.1f}" if pd.isna(low) else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def _cell(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return ARCH_NAMES.get(value, value.replace("_", " "))
    return str(value)


def summarise(rows: pd.DataFrame, keys: list[str], metrics: dict[str, pd.Series]
              ) -> pd.DataFrame:
    """One formatted row per configuration of `keys` (seeds pooled)."""
    done = rows["status"] == "completed"
    data = rows[keys].assign(
        _done=done, _diverged=rows["status"] == "diverged",
        **{f"_m{i}": values[rows.index].where(done) for i, values in enumerate(metrics.values())},
        _flops=rows.get("flops", math.nan), _params=rows.get("params", math.nan))
    out = []
    for key, group in data.groupby(keys, dropna=False, sort=True):
        completed, diverged = int(group["_done"].sum()), int(group["_diverged"].sum())
        row = {label(k): _cell(v) for k, v in zip(keys, key, strict=True)}
        for i, name in enumerate(metrics):
            values = group[f"_m{i}"]
            row[name] = mean_ci(values.dropna()) if completed else "diverged"
        row["FLOPs"] = human(group["_flops"].median())
        row["params"] = human(group["_params"].median())
        row["seeds"] = str(completed) + (f" (+{diverged} diverged)" if diverged else "")
        out.append(row)
    return pd.DataFrame(out)


def _percent(runs: pd.DataFrame, column: str) -> pd.Series:
    return percent(runs[column]) if column in runs else pd.Series(math.nan, index=runs.index)


def _perceivers(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["model.arch"] == "perceiver"]


def _table(runs: pd.DataFrame, keys: Sequence[str], metrics: dict[str, pd.Series],
           caption: str, min_points: int = 2) -> Table | None:
    found = ablation(runs, keys, min_points=min_points)
    if found is None:
        return None
    rows, groups = found
    return Table(summarise(rows, groups + list(keys), metrics), caption)


def cross_attend_table(frame: pd.DataFrame) -> Table | None:
    """Table 6: accuracy, FLOPs, params for placement x number of cross-attends."""
    runs, acc_label = finished(frame)
    runs = _perceivers(runs)
    return _table(runs[runs["model.num_blocks"] > 0],
                  ["model.num_cross_attends", "model.cross_attend_placement"],
                  {acc_label: runs["acc"]},
                  f"Table 6 analogue: {acc_label}, FLOPs per example and parameters by number "
                  "and placement of cross-attends (interleaved: one before each latent block; "
                  "at start: all before the first block).")


def cross_attend_only_table(frame: pd.DataFrame) -> Table | None:
    """Table 5: stacks of cross-attends with no latent Transformer (model.num_blocks == 0)."""
    runs, acc_label = finished(frame)
    runs = _perceivers(runs)
    return _table(runs[runs["model.num_blocks"] == 0], ["model.num_cross_attends"],
                  {acc_label: runs["acc"]},
                  f"Table 5 analogue: models made only of cross-attends (no latent "
                  f"Transformer): {acc_label}, FLOPs per example, parameters.", min_points=1)


def sharing_table(frame: pd.DataFrame) -> Table | None:
    """Table 7: weight sharing on/off: params, training and held-out accuracy."""
    runs, acc_label = finished(frame)
    runs = _perceivers(runs)
    metrics = {"train acc. (%)": _percent(runs, "final.train_acc"),
               "val. acc. (%)": _percent(runs, "final.val_acc")}
    if acc_label.startswith("test"):
        metrics["test acc. (%)"] = runs["acc"]
    table = _table(runs, ["model.share_cross_attends", "model.share_latent_blocks"], metrics,
                   "Table 7 analogue: weight sharing of the cross-attends (after the first) "
                   "and of the latent blocks; a train accuracy far above the held-out "
                   "accuracy means overfitting.")
    return table and Table(table.frame.drop(columns="FLOPs"), table.caption)


def permutation_table(frame: pd.DataFrame) -> Table | None:
    """Table 2: raw vs permuted pixels per architecture (one column each)."""
    runs, acc_label = finished(frame)
    found = ablation(runs, ["model.arch", "data.permute"])
    if found is None or runs["data.permute"].nunique() < 2:
        return None
    rows, groups = found
    long = summarise(rows, groups + ["model.arch", "data.permute"], {acc_label: runs["acc"]})
    index = [label(c) for c in groups + ["model.arch"]]
    wide = long.pivot(index=index, columns=label("data.permute"), values=acc_label)
    wide = wide.rename(columns={"off": "raw", "on": "permuted"}).reset_index()
    wide.columns.name = None
    return Table(wide, f"Table 2 analogue: {acc_label} on raw and permuted pixels (one fixed "
                       "permutation, position features computed before permuting). The paper "
                       "finds global attention permutation invariant and convolutions and "
                       "patches not; the claims table tests that on these results.")


CI_NOTE = " Cells: mean over seeds [95% t confidence interval]."


def build_tables(frame: pd.DataFrame) -> dict[str, Table]:
    """Every table the results support, by file name (no extension); every caption says
    what its cells' brackets are."""
    tables = {
        "table2_permutation": permutation_table(frame),
        "table5_cross_attend_only": cross_attend_only_table(frame),
        "table6_cross_attends": cross_attend_table(frame),
        "table7_weight_sharing": sharing_table(frame),
    }
    return {name: Table(table.frame, table.caption + CI_NOTE)
            for name, table in tables.items() if table is not None}


def to_markdown(table: Table) -> str:
    """The table as Markdown; cells and headers hold run values, made literal."""
    return markdown_table(table.frame)


LATEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}",
                                                     "^": r"\textasciicircum{}"}


def to_latex(table: Table, name: str) -> str:
    """A booktabs table; cells are escaped by pandas, the caption here (pandas leaves it)."""
    caption = "".join(LATEX_SPECIALS.get(c, c) for c in table.caption)
    text = table.frame.to_latex(index=False, escape=True, caption=caption,
                                label=f"tab:{name}", position="t")
    return text.replace("±", r"$\pm$")
