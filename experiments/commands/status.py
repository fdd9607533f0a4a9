"""`perceiver-ablate status RESULTS_DIR`: the state and key metrics of every run.

Works for any results folder with run records (a sweep, a study, runs of `train`); a
sweep's manifest adds the runs that have not started and the logs of its jobs
(experiments/orchestration/status.py draws the table). Run folders named by an earlier
version's ids are renamed first (experiments/runfolder.py, migrate).
"""

from __future__ import annotations

import os
from pathlib import Path

from experiments.commands import Command, add_results_dir


def add_arguments(parser):
    add_results_dir(parser)


def run(args) -> int:
    from experiments.locks import folder_lock
    from experiments.orchestration.status import report
    from experiments.orchestration.study import study_status
    from experiments.runfolder import migrate

    folder = Path(args.results_dir)
    if folder.is_dir() and os.access(folder, os.W_OK):  # a folder we may only read: as it is
        with folder_lock(folder):
            for old, new in migrate(folder).items():
                print(f"run {old} is {new} under this version's run ids: renamed (the old "
                      "name links to it)")
    trials = study_status(args.results_dir)  # a study's folder: its trials, best marked *
    if trials is not None:
        print(trials)
    text, _ = report(args.results_dir)
    print(text)
    return 0


COMMAND = Command("state of every run of a sweep or study", add_arguments, run)
