"""`perceiver-ablate study STUDY.yaml`: an Optuna study run by K workers sharing a storage.

`key=value` items apply to the study's base config (`train.max_steps=10` shrinks every
trial); `cluster.KEY=value` items override the cluster profile, as for `sweep`. The
workers (local processes or a SLURM array) outlive the command unless `--wait`; follow
them with `perceiver-ablate status OUT` or `optuna-dashboard <out>/study.journal` (or the
RDB URL). Running the same study again resumes it (raise `--trials` to extend it).
"""

from __future__ import annotations

from pathlib import Path

from experiments.commands import (
    Command,
    add_results_out,
    add_submission_arguments,
    results_folder,
)
from experiments.orchestration.executors import EXECUTORS

POLL_S = 2.0


def add_arguments(parser):
    parser.add_argument("study", metavar="STUDY.yaml",
                        help="a study file (see experiments/studies/)")
    add_submission_arguments(parser, "train.max_steps=10", "cluster.timeout_min=120",
                             lambda executor: executor.study_help)
    parser.add_argument("--workers", type=int, default=1, metavar="K",
                        help="workers sharing the study (default: 1)")
    parser.add_argument("--trials", type=int, metavar="T",
                        help="finished (complete + pruned) trials wanted; overrides `trials:`")
    parser.add_argument("--storage", metavar="URL",
                        help="an RDB URL (postgresql+psycopg2://user@host/db) or a journal "
                             "file path (default: <out>/study.journal)")
    add_results_out(parser, "<study file stem>")
    parser.add_argument("--wait", action="store_true",
                        help="block until the study is finished or its workers ended, then "
                             "print its trials")


def run(args) -> int:
    from experiments.orchestration.cluster import split_overrides
    from experiments.orchestration.study import load_study, study_status, tally

    overrides, cluster_overrides = split_overrides(args.items)
    spec = load_study(args.study, overrides, trials=args.trials, storage=args.storage)
    out = results_folder(args, Path(args.study).stem)
    study = start(spec, out, args, cluster_overrides)
    if study is None:
        return 0
    print(study_status(out))
    return 0 if tally(study)["finished"] >= spec.trials else 1


def start(spec, out: Path, args, cluster_overrides: dict):
    """Launch the workers; with --wait or an in-process executor (debug), return the study
    once it is finished or its workers ended, else None. (The jobs stay inside this
    function: `run`'s frame outlives the call, kept by the traceback of an optional import
    that failed in it, and a submitit job still alive at interpreter exit prints errors
    from __del__.)"""
    from experiments.orchestration.follow import wait_until
    from experiments.orchestration.study import public_url, tally
    from experiments.orchestration.study_workers import launch

    executor = EXECUTORS[args.executor]
    study, url, jobs = launch(spec, out, executor=executor, cluster=args.cluster,
                              workers=args.workers, profile_overrides=cluster_overrides)
    print(f"study {spec.name}: {spec.trials} trials wanted, {args.workers} {args.executor} "
          f"worker(s) ({', '.join(str(j.job_id) for j in jobs)}) on {public_url(url)}")
    print(f"follow it with: perceiver-ablate status {out}")
    print(f"or in a browser: optuna-dashboard {public_url(url)}")
    if executor.in_process:
        for job in jobs:
            job.result()
    elif args.wait:
        wait_until(lambda: tally(study)["finished"] >= spec.trials
                   or all(executor.ended(j) for j in jobs), POLL_S)
    else:
        return None
    return study


COMMAND = Command("an Optuna study over the ablation knobs (local workers or a SLURM array)",
                  add_arguments, run)
