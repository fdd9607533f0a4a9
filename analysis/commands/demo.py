"""`perceiver-ablate demo [--out DIR]`: the main job on the embedded default (`make demo`)."""

from __future__ import annotations

import argparse

from experiments.commands import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR",
                        help="where the runs (DIR/runs), figures, tables, attention maps and "
                             "index.md go (default: results/demo); a second demo into the "
                             "same folder reuses its finished runs")


def run(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    from analysis.demo import DEFAULT_OUT, run_demo

    return 1 if run_demo(args.out or DEFAULT_OUT).failed else 0


COMMAND = Command("the main job: a small real ablation sweep, its figures and maps",
                  add_arguments, run)
