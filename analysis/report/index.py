"""Everything `perceiver-ablate figures` writes for one results folder, and its index.

    OUT/index.md            how many runs the folder holds by state, the verdicts
                            (analysis.verdicts.summary: effects with intervals, paper
                            claims, importance, seed plan), then every figure and table below,
                            with captions, then every run by state (analysis.accounting)
                            and the skipped records
    OUT/index.html          the same page, self-contained (figures inline as base64), to
                            open from the file system without a server, mail and open
                            anywhere: values from the run folders are made literal
                            (analysis.markup) and the page runs no script
                            (analysis.report.html)
    OUT/verdicts.md|json    the verdicts alone, after the runs' account
    OUT/results.parquet     load_results(RESULTS_DIR): one row per run
    OUT/results.csv         the same, for spreadsheets
    OUT/<figure>.pdf|png    analysis.report.figures.build_figures (+ study_* when
                            RESULTS_DIR holds an Optuna journal, study.journal)
    OUT/<table>.md|tex      analysis.report.tables.build_tables
"""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import accounting as A
from analysis.markup import literal
from analysis.report.figures import Plot, build_figures, save_plots, study_figures
from analysis.report.html import write_html
from analysis.report.tables import build_tables, to_latex, to_markdown
from analysis.results import accuracy, load_curves, load_results, load_studies
from analysis.verdicts import summary as V
from experiments.records import atomic_write_bytes, atomic_write_text
from perceiver_core.config import ConfigError


def write_study_figures(study, out_dir: str | Path, prefix: str = "",
                        target_name: str | None = None) -> list[tuple[str, Plot, list[Path]]]:
    """The study helper's entry: Optuna's figures of `study` as PREFIX<name>.pdf|png."""
    plots = {prefix + name: plot for name, plot in study_figures(study, target_name).items()}
    return save_plots(plots, out_dir)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Parquet needs one type per column; text stands in for any column mixing types."""
    mixed = [c for c in frame.columns if frame[c].dtype == object
             and frame[c].dropna().map(type).nunique() > 1]
    buffer = io.BytesIO()
    frame.astype({c: str for c in mixed}).to_parquet(buffer, index=False)
    return buffer.getvalue()


CAPTION_LIMIT = 2000  # characters of a caption (it may quote a study's name)


def file_name(text: str) -> str:
    """`text` (a study's name) as a safe part of a file name: no folder, no dot file."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64]


def write_report(results_dir: str | Path, out_dir: str | Path | None = None,
                 metric: str | None = None, delta: float = V.DEFAULT_DELTA,
                 appendix: tuple[str, Sequence[Path]] | None = None) -> Path:
    """Load, judge, draw, tabulate, write; returns the path of index.md (index.html is
    written beside it from the same Markdown). `appendix`: a last section's Markdown and
    the images it shows, which the caller wrote inside the output folder (the demo's
    attention maps)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"results folder {str(results_dir)!r} does not exist")
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        runs = load_results(results_dir)
        curves = load_curves(results_dir, runs) if len(runs) else None
    for warning in skipped:  # shown to the user and listed in the index
        warnings.warn(warning.message, warning.category, stacklevel=2)
    accounting = A.judgeable(runs, results_dir)
    out = Path(out_dir) if out_dir else results_dir / "figures"
    atomic_write_bytes(out / "results.parquet", _parquet_bytes(runs))
    atomic_write_text(out / "results.csv", runs.to_csv(index=False))

    studies = load_studies(results_dir)
    try:
        verdicts = V.build_verdicts(runs, metric, delta, studies)
    except ValueError as exc:  # an unknown metric or a bad delta: the user's to fix
        raise ConfigError(str(exc)) from None
    write_verdicts(verdicts, accounting, out)
    figures = save_plots(build_figures(runs, curves, verdicts), out)
    for study in studies:
        prefix = f"{file_name(study.study_name)}_" if len(studies) > 1 else ""
        figures += write_study_figures(study, out, prefix)
    tables = []
    for name, table in build_tables(runs).items():
        atomic_write_text(out / f"{name}.md", to_markdown(table))
        atomic_write_text(out / f"{name}.tex", to_latex(table, name))
        tables.append((name, table))
    index = out / "index.md"
    text = _index(results_dir, runs, verdicts, accounting, figures, tables, skipped)
    images = [p for _, _, paths in figures for p in paths if p.suffix == ".png"]
    if appendix is not None:
        text = text.rstrip("\n") + "\n\n" + appendix[0]
        images += appendix[1]
    atomic_write_text(index, text)
    write_html(index, images)
    return index


def verdicts_markdown(verdicts: V.Verdicts, accounting: A.Accounting) -> str:
    """What `verdicts` prints and verdicts.md holds: the runs' account, then the verdicts,
    every value from the run folders made literal."""
    return (f"**Runs**: {A.markdown(accounting)}\n"
            + V.markdown(verdicts))


def verdicts_json(verdicts: V.Verdicts, accounting: A.Accounting) -> str:
    return json.dumps({**json.loads(V.to_json(verdicts)), **A.to_records(accounting)},
                      indent=2)


def write_verdicts(verdicts: V.Verdicts, accounting: A.Accounting, out: Path) -> None:
    atomic_write_text(out / "verdicts.md", verdicts_markdown(verdicts, accounting))
    atomic_write_text(out / "verdicts.json", verdicts_json(verdicts, accounting))


def _index(results_dir: Path, runs: pd.DataFrame, verdicts: V.Verdicts,
           accounting: A.Accounting, figures, tables, skipped) -> str:
    _, acc_label = accuracy(runs)
    lines = [f"# Figures and tables: {literal(results_dir)}", "",
             f"{literal(accounting.headline)} (every run is listed by state under Runs, at "
             f"the end). Accuracy is the {acc_label.split(' (')[0]}; figure bars and table "
             "cells are 95% t intervals over seeds, the verdicts' intervals are as their "
             "section says.", "",
             "Data: [results.parquet](results.parquet), [results.csv](results.csv) "
             "(one row per run); verdicts alone: [verdicts.md](verdicts.md), "
             "[verdicts.json](verdicts.json); this page as one self-contained file to open "
             "in a browser: [index.html](index.html).", "", "## Verdicts", "",
             V.markdown(verdicts), "## Figures", ""]
    for name, plot, paths in figures:
        png, pdf = (next(p.name for p in paths if p.suffix == s) for s in (".png", ".pdf"))
        lines += [f"### {name}", "", literal(plot.caption, CAPTION_LIMIT), "",
                  f"![{name}]({png})", "",
                  f"[PDF]({pdf}) · [PNG]({png})", ""]
    if not figures:
        lines += ["No figure: the results hold no ablation axis.", ""]
    lines += ["## Tables", ""]
    for name, table in tables:
        lines += [f"### {name}", "", literal(table.caption, CAPTION_LIMIT), "",
                  to_markdown(table),
                  f"[Markdown]({name}.md) · [LaTeX]({name}.tex)", ""]
    if not tables:
        lines += ["No table: the results hold none of the tables' axes.", ""]
    lines += ["## Runs", "", A.markdown(accounting)]
    if skipped:
        lines += ["## Skipped records", ""]
        lines += [f"- {literal(warning.message)}" for warning in skipped] + [""]
    return "\n".join(lines)
