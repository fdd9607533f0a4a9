"""`perceiver-ablate export tensorboard|mlflow RESULTS_DIR`: the run folders in the tools
researchers already use (docs/notebook.md). Run folders stay the source of truth; both
exports can be repeated (TensorBoard's files are rebuilt, MLflow gets new or changed runs
only)."""

from __future__ import annotations

import argparse
import sys

from experiments.commands import Command, add_results_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    tensorboard = sub.add_parser(
        "tensorboard", help="write every run's TensorBoard event files from its records "
                            "(runs trained before they were written live)")
    mlflow = sub.add_parser("mlflow", help="one MLflow run per run folder, verdicts and "
                                           "report as artifacts (needs `pip install .[mlflow]`)")
    for target in (tensorboard, mlflow):
        add_results_dir(target)
    mlflow.add_argument("--tracking-uri", metavar="URI",
                        help="the tracking server (e.g. http://127.0.0.1:5000) or store; "
                             "default: MLFLOW_TRACKING_URI, else MLflow's own default")
    mlflow.add_argument("--experiment", metavar="NAME",
                        help="MLflow experiment (default: the results folder's name)")


def export_tensorboard(folder) -> int:
    import yaml

    from experiments.runfolder import RunBusy, run_folders
    from experiments.tensorboard import EVENTS, export_run
    from perceiver_core.config import ConfigError

    folders = list(run_folders(folder))
    if not folders:
        raise ConfigError(f"no run folders under {folder} (expected <run-id>/config.yaml; see "
                          "`perceiver-ablate status`)")
    written = busy = 0
    for run_folder in folders:
        try:
            with run_folder.lock():
                export_run(run_folder)
            written += 1
        except RunBusy:
            busy += 1  # its trainer writes its events live
        except (ConfigError, OSError, ValueError, yaml.YAMLError) as exc:
            print(f"skipping run {run_folder}: {str(exc).splitlines()[0]}", file=sys.stderr)
    print(f"wrote TensorBoard events of {written} run(s) under {folder} (<run>/{EVENTS}/)"
          + (f"; {busy} run(s) being trained write their own" if busy else "")
          + f"\nview them: tensorboard --logdir {folder}")
    return 0 if written + busy == len(folders) else 1


def export_mlflow(args) -> int:
    from experiments.mlflow_export import export_mlflow as export

    counts = export(args.results_dir, args.tracking_uri, args.experiment)
    report = counts["report"] or "none (run `perceiver-ablate figures` first to attach it)"
    print(f"MLflow experiment {counts['experiment']!r} at {counts['tracking_uri']}: "
          f"{counts['new']} new run(s), {counts['updated']} updated, {counts['unchanged']} "
          f"unchanged, {counts['skipped']} without readable records; report: {report}")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from perceiver_core.config import ConfigError

    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise ConfigError(f"results folder {str(folder)!r} does not exist")
    if args.target == "tensorboard":
        return export_tensorboard(folder)
    return export_mlflow(args)


COMMAND = Command("export run folders to TensorBoard event files or an MLflow server",
                  add_arguments, run)
