"""`perceiver-ablate train [CONFIG.yaml] [key=value ...] [--out DIR]`: one run.

Progress goes to stderr; the run folder is the last line on stdout, so scripts can do
`run=$(perceiver-ablate train ... | tail -n1)`. Under torchrun or a multi-task SLURM step
every process runs this command; rank 0 writes the records and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments.commands import RESULTS, Command, add_config_arguments, config_from_args

DEFAULT_ROOT = RESULTS / "train"


def add_arguments(parser):
    add_config_arguments(parser, preset=True)
    parser.add_argument("--out", type=Path,
                        help=f"the run folder (default: {DEFAULT_ROOT}/<run id>); a run "
                             "already there is resumed, or returned if it finished")


def run(args) -> int:
    cfg, _ = config_from_args(args)
    from experiments.distributed import init_distributed, leave_distributed
    from experiments.runfolder import RunFolder
    from experiments.train import train_run

    if args.out:
        run_folder = RunFolder(args.out)
    else:  # a folder of an earlier version's run id is this run's: rename it, train nothing
        from experiments.locks import folder_lock
        from experiments.runfolder import migrate

        if DEFAULT_ROOT.is_dir():
            with folder_lock(DEFAULT_ROOT):
                migrate(DEFAULT_ROOT)
        run_folder = RunFolder.of(DEFAULT_ROOT, cfg)
    result = train_run(cfg, run_folder)
    if init_distributed().is_main:
        final = result["final"]
        metric = result.get("metric", "acc")  # accuracy, or mAP for multi-label sets
        test = final.get(f"test_{metric}")
        summary = f"test {metric} {100 * test:.2f}%" if test is not None else "no test metrics"
        print(f"{result['status']} at step {result['step']}: {summary}", file=sys.stderr)
        print(run_folder)
    leave_distributed()
    return 0


COMMAND = Command("one run; prints its run folder", add_arguments, run)
