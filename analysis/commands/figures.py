"""`perceiver-ablate figures RESULTS_DIR [--out DIR]`: paper-style figures and tables."""

from __future__ import annotations

import argparse

from experiments.commands import Command, add_results_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_results_dir(parser)
    parser.add_argument("--out", metavar="DIR",
                        help="where to write figures, tables and index.md "
                             "(default: RESULTS_DIR/figures)")


def run(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    from analysis.report.index import write_report

    print(write_report(args.results_dir, args.out))
    return 0


COMMAND = Command("paper-style figures and tables from a results folder", add_arguments, run)
