"""`perceiver-ablate figures RESULTS_DIR [--out DIR]`: paper-style figures and tables."""

from __future__ import annotations

import argparse

from experiments.commands import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="a sweep or study folder (results/<name>/ holding run folders)")
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
