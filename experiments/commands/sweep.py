"""`perceiver-ablate sweep`: expand a sweep file, then submit the runs it still needs.

`key=value` items apply to the sweep's base config (so any sweep shrinks to a smoke test:
`train.max_steps=10 data.train_subset=256`); `cluster.KEY=value` items override the
cluster profile for this submission (`cluster.tasks_per_node=2`).
"""

from __future__ import annotations

from pathlib import Path

from experiments.commands import Command

RESULTS = Path("results")


def add_arguments(parser):
    parser.add_argument("sweep", metavar="SWEEP.yaml",
                        help="a sweep file, or the name of a shipped one (fig5-latents, "
                             "paper-imagenet/fig5-latents; see experiments/sweeps/)")
    parser.add_argument("items", nargs="*", metavar="key=value",
                        help="overrides of the base config (model.num_latents=64), or of the "
                             "cluster profile (cluster.tasks_per_node=2)")
    parser.add_argument("--executor", choices=("local", "slurm", "debug"), default="local",
                        help="local: subprocesses on this machine (default); slurm: job "
                             "arrays; debug: in this process, for breakpoints")
    parser.add_argument("--cluster", default="local", metavar="PROFILE",
                        help="cluster profile: a name in slurm/profiles/ or a YAML path "
                             "(default: local)")
    parser.add_argument("--out", help="results folder (default: results/<sweep name>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the runs with params, FLOPs and compute; submit nothing")
    parser.add_argument("--pilot", metavar="RESULTS_DIR",
                        help="with --dry-run: from a finished pilot folder's seed noise, the "
                             "seeds each config needs to resolve --delta, and their compute")
    parser.add_argument("--metric", default="final.test_acc", metavar="KEY",
                        help="the pilot's metric (default: final.test_acc)")
    parser.add_argument("--delta", type=float, default=0.5, metavar="D",
                        help="smallest effect worth resolving, in points (default: 0.5)")
    parser.add_argument("--wait", action="store_true",
                        help="block until every submitted run has ended, then print a summary")
    parser.add_argument("--runs-per-job", type=int, metavar="K",
                        help="train K runs one after another in each job (default: 1 on "
                             "SLURM; on the local executor, spread the runs over the cores)")
    parser.add_argument("--pack-seeds", type=int, default=1, metavar="K",
                        help="train up to K seeds of each config together in one process, "
                             "one task per pack (default: 1, no packing); the local "
                             "executor spreads the packs over the cores")
    parser.add_argument("--rerun-failed", action="store_true",
                        help="also resubmit runs that failed")
    parser.add_argument("--until-resolved", action="store_true",
                        help="train the sweep's seeds, judge every config against the base "
                             "with anytime-valid intervals, and add --round seeds only to "
                             "configs whose comparison is neither better, worse nor "
                             "equivalent (within --delta), until all are decided or "
                             "--max-seeds is reached; waits, and a rerun continues")
    parser.add_argument("--max-seeds", type=int, default=16, metavar="S",
                        help="with --until-resolved: most seeds per config (default: 16)")
    parser.add_argument("--round", type=int, default=2, metavar="K",
                        help="with --until-resolved: seeds added per round to each open "
                             "config and the base (default: 2)")


def dry_run(sweep) -> float:
    """Print the runs and their compute; returns the total compute in FLOPs."""
    from experiments.factory import config_flops
    from experiments.formatting import human, table
    from experiments.planning import samples_seen

    counts = {}
    rows, total = [], 0
    for point in sweep.points:
        cfg = point.config
        key = (cfg.model, cfg.encoding, cfg.data.name, cfg.data.image_size)
        counts[key] = counts.get(key) or config_flops(cfg)
        samples = samples_seen(cfg)
        compute = 3 * counts[key]["flops"] * samples
        total += compute
        rows.append([str(point.index + 1), point.run_id, *map(str, point.params.values()),
                     human(counts[key]["params"]), human(counts[key]["flops"]),
                     human(samples), f"{compute:.2e}"])
    if sweep.spec.get("description"):
        print(sweep.spec["description"])
    print(table(["#", "run", *sweep.axes, "params", "FLOPs", "samples", "compute"], rows))
    print(f"{len(sweep.points)} runs, {total:.2e} FLOPs of training in total "
          "(compute = 3 x forward FLOPs x samples seen; FLOPs in the paper's convention, "
          "1 multiply-add = 2); nothing submitted")
    return total


def pilot_noise(pilot: str, metric: str) -> tuple[float, int, int]:
    """The pilot folder's seed noise (experiments.power.pilot_spread), or a ConfigError
    saying why it has none, before anything is printed or submitted."""
    from experiments.config import ConfigError
    from experiments.power import pilot_spread

    try:
        sd, dof, configs_used = pilot_spread(pilot, metric)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not dof:
        raise ConfigError(f"pilot folder {pilot} has no config with 2 completed seeds of "
                          f"{metric}: the seed noise is unknown; run a pilot with >= 2 seeds")
    return sd, dof, configs_used


def seed_plan(sweep, total: float, pilot: str, noise: tuple[float, int, int], metric: str,
              delta: float) -> None:
    """What resolving `delta` would cost this sweep, from a pilot folder's seed noise."""
    from experiments.orchestration.sweeps import SEED_KEY
    from experiments.power import ALPHA, POWER, seeds_needed

    sd, dof, configs_used = noise
    needed = seeds_needed(sd, delta)
    configs = len({tuple(sorted((k, str(v)) for k, v in p.params.items() if k != SEED_KEY))
                   for p in sweep.points})
    seeds = len(sweep.points) / configs
    cost = total / seeds * needed
    print(f"seed plan from pilot {pilot}: {metric} varies by {sd:.2f} points between seeds "
          f"(pooled sd over {configs_used} configs, {dof} degrees of freedom). Resolving "
          f"an effect of {delta:g} points at {100 * (1 - ALPHA):.0f}% confidence with "
          f"{100 * POWER:.0f}% power takes {needed} seeds per config: {configs} configs x "
          f"{needed} = {configs * needed} runs, {cost:.2e} FLOPs "
          f"({cost / total:.1f}x this sweep's {seeds:g} seed(s), {total:.2e} FLOPs)")


def check_adaptive(args) -> None:
    """--until-resolved's arguments, checked before anything is written or submitted."""
    from experiments.config import ConfigError
    from experiments.orchestration.adaptive import higher_is_better

    if args.dry_run or args.pilot:
        raise ConfigError("--until-resolved trains and judges in rounds; drop --dry-run/--pilot "
                          "(plan its seeds with `sweep --dry-run --pilot` first if you like)")
    if args.max_seeds < 3:
        raise ConfigError(f"--max-seeds {args.max_seeds} must be >= 3 (no interval below 3 "
                          "seeds)")
    if args.round < 1:
        raise ConfigError(f"--round {args.round} must be >= 1 (seeds added per round)")
    higher_is_better(args.metric)


def until_resolved(args, sweep, folder: Path, profile, cluster_overrides: dict) -> int:
    """Rounds of seeds until every comparison is decided (experiments/orchestration/
    adaptive.py); 1 when a run failed."""
    from experiments.orchestration.adaptive import Settings, run_until_resolved, summary

    settings = Settings(args.metric, args.delta, args.max_seeds, args.round)
    state = run_until_resolved(sweep, folder, settings, profile, executor=args.executor,
                               runs_per_job=args.runs_per_job, pack_seeds=args.pack_seeds,
                               profile_overrides=cluster_overrides,
                               log=lambda text: print(text, flush=True))
    print(summary(folder))
    return 1 if state["state"] == "failed" else 0


def run(args) -> int:
    from experiments.config import ConfigError
    from experiments.orchestration.cluster import load_profile, split_overrides
    from experiments.orchestration.follow import wait_for_runs
    from experiments.orchestration.status import report
    from experiments.orchestration.submit import plan, submit
    from experiments.orchestration.sweeps import load_sweep

    config_overrides, cluster_overrides = split_overrides(args.items)
    sweep = load_sweep(args.sweep, config_overrides)
    if args.pilot and not args.dry_run:
        raise ConfigError("--pilot plans seeds before submitting: use it with --dry-run")
    if not (args.delta > 0):
        raise ConfigError(f"--delta {args.delta} must be > 0 (points)")
    if args.until_resolved:
        check_adaptive(args)
    elif args.max_seeds != 16 or args.round != 2:
        raise ConfigError("--max-seeds and --round set the rounds of --until-resolved; add it")
    if args.dry_run:
        noise = pilot_noise(args.pilot, args.metric) if args.pilot else None
        total = dry_run(sweep)
        if noise:
            seed_plan(sweep, total, args.pilot, noise, args.metric, args.delta)
        return 0
    if args.runs_per_job is not None and args.runs_per_job < 1:
        raise ConfigError(f"--runs-per-job={args.runs_per_job} must be >= 1")
    if args.pack_seeds < 1:
        raise ConfigError(f"--pack-seeds={args.pack_seeds} must be >= 1 (1 = no packing)")
    if args.pack_seeds > 1 and args.runs_per_job is not None:
        raise ConfigError("--runs-per-job and --pack-seeds both set what a job trains: with "
                          "--pack-seeds each job trains whole packs; drop --runs-per-job")
    profile = load_profile(args.cluster)
    folder = Path(args.out) if args.out else RESULTS / sweep.name
    if args.until_resolved:
        return until_resolved(args, sweep, folder, profile, cluster_overrides)
    todo, kept = plan(sweep, folder, args.rerun_failed)
    for state, points in sorted(kept.items()):
        hint = " (--rerun-failed resubmits them)" if state == "failed" else ""
        print(f"{len(points)} run(s) {state}, not resubmitted{hint}")
    if not todo:
        print(f"nothing to submit: every run of {sweep.path} in {folder} is finished, queued, "
              "running or failed")
    else:
        entry = submit(sweep, todo, folder, profile, executor=args.executor,
                       runs_per_job=args.runs_per_job, pack_seeds=args.pack_seeds,
                       profile_overrides=cluster_overrides)
        jobs = entry["jobs"]
        submitted = sum(len(job["run_ids"]) for job in jobs)
        if submitted < len(todo):
            print(f"{len(todo) - submitted} run(s) were submitted by another command into "
                  f"{folder} meanwhile, not submitted again")
        packed = (f", seeds packed by up to {args.pack_seeds}" if args.pack_seeds > 1 else "")
        print(f"submitted {submitted} run(s) of {sweep.path} as {len(jobs)} {args.executor} "
              f"job(s) (up to {entry['runs_per_job']} run(s) per job{packed}, "
              f"{entry['threads'] or 'default'} thread(s) each) at {entry['submitted_at']}:")
        for job in jobs:
            print(f"  job {job['job_id']}: {' '.join(job['run_ids'])}")
        print(f"follow them with: perceiver-ablate status {folder}")
    if not args.wait:
        return 0
    wait_for_runs(folder, {p.run_id for p in sweep.points})
    text, failed = report(folder, {p.run_id for p in sweep.points})
    print(text)
    return 1 if failed else 0


COMMAND = Command("run an ablation sweep (local processes or SLURM arrays)", add_arguments, run)
