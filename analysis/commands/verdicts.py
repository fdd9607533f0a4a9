"""`perceiver-ablate verdicts RESULTS_DIR`: which design choices matter, with intervals."""

from __future__ import annotations

import argparse

from experiments.commands import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from analysis.verdicts.summary import DEFAULT_DELTA

    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="a sweep or study folder (results/<name>/ holding run folders)")
    parser.add_argument("--metric", metavar="KEY",
                        help="result column to judge, e.g. final.test_acc (default), "
                             "final.val_acc, best.val_acc; fractions are shown in points")
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA, metavar="D",
                        help="smallest effect worth resolving, in points: the seed planner's "
                             "target and the equivalence margin (a comparison whose interval "
                             "lies inside ±D is `equivalent`, TOST; the 'alike' claims) "
                             f"(default: {DEFAULT_DELTA})")
    parser.add_argument("--per-comparison", action="store_true",
                        help="judge each comparison at 95%% on its own (unadjusted) instead "
                             "of controlling the family-wise error over the report")
    parser.add_argument("--out", metavar="DIR",
                        help="also write verdicts.md, verdicts.json and the forest plot "
                             "(forest_effects.pdf|png) there")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the Markdown tables")


def run(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    from analysis.accounting import judgeable
    from analysis.report.figures import forest_figure, save_plots
    from analysis.report.index import verdicts_json, verdicts_markdown, write_verdicts
    from analysis.results import load_results, load_studies
    from analysis.verdicts import summary as V
    from perceiver_core.config import ConfigError

    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise ConfigError(f"results folder {str(folder)!r} does not exist")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if args.json else "default")
        runs = load_results(folder)
    accounting = judgeable(runs, folder)  # every run of the folder, by state
    try:
        verdicts = V.build_verdicts(runs, args.metric, args.delta, load_studies(folder),
                                    args.per_comparison)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.out:
        out = Path(args.out)
        write_verdicts(verdicts, accounting, out)
        forest = forest_figure(verdicts.effects, verdicts.metric.label)
        if forest:
            save_plots({"forest_effects": forest}, out)
    print(verdicts_json(verdicts, accounting) if args.json
          else verdicts_markdown(verdicts, accounting))
    return 0


COMMAND = Command("effects with confidence intervals, tests, importance, seed plan and "
                  "paper claims", add_arguments, run)
