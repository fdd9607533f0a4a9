"""Subcommands of `perceiver-ablate`, one module each, found through the
`perceiver_ablate.commands` entry-point group (pyproject.toml). Modules stay light at
import time (heavy imports inside `run`) so `--help` is instant."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.orchestration.executors import DEFAULT, EXECUTORS, Executor

RESULTS = Path("results")  # where commands put their folders unless --out says otherwise


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool = False,
                         preset: bool = False) -> None:
    """[CONFIG.yaml] [key=value ...] (and --preset NAME), shared by train/flops/bench."""
    parser.add_argument("items", nargs="+" if config_required else "*",
                        metavar="CONFIG.yaml | key=value",
                        help="an optional YAML config file, then dotted overrides "
                             "(e.g. model.num_latents=64 train.max_steps=10)")
    if preset:
        parser.add_argument("--preset", help="start from a named preset "
                                             "(experiments/presets/NAME.yaml)")


def config_from_args(args: argparse.Namespace):
    """(RunConfig, path or None) from the positional items of add_config_arguments."""
    from experiments.config import ConfigError, load_config
    from experiments.data.registry import check_config

    items = list(args.items)
    path = None
    if items and "=" not in items[0]:
        path = items.pop(0)
    stray = [item for item in items if "=" not in item]
    if stray:
        raise ConfigError(f"expected key=value overrides after the config file, got {stray}")
    cfg = load_config(path, items, preset=getattr(args, "preset", None))
    check_config(cfg)
    return cfg, path


def add_submission_arguments(parser: argparse.ArgumentParser, config_example: str,
                             cluster_example: str, describe: Callable[[Executor], str]
                             ) -> None:
    """[key=value ...] --executor NAME --cluster PROFILE, shared by sweep and study (after
    their file); `cluster.KEY=value` items are told apart by
    experiments.orchestration.cluster.split_overrides. `describe` says what an executor's
    jobs are to this command, so a new executor needs no edit here."""
    executor_help = "; ".join(f"{name}: {describe(executor)}"
                              + (" (default)" if executor is DEFAULT else "")
                              for name, executor in EXECUTORS.items())
    parser.add_argument("items", nargs="*", metavar="key=value",
                        help=f"overrides of the base config ({config_example}), or of the "
                             f"cluster profile ({cluster_example})")
    parser.add_argument("--executor", choices=tuple(EXECUTORS), default=DEFAULT.name,
                        help=executor_help)
    parser.add_argument("--cluster", default="local", metavar="PROFILE",
                        help="cluster profile: a name in slurm/profiles/ or a YAML path "
                             "(default: local)")


def add_results_out(parser: argparse.ArgumentParser, default: str) -> None:
    """--out, the results folder of a sweep or study (`results_folder`)."""
    parser.add_argument("--out", help=f"results folder (default: {RESULTS}/{default})")


def results_folder(args: argparse.Namespace, name: str) -> Path:
    """--out, or results/NAME."""
    return Path(args.out) if args.out else RESULTS / name


def add_results_dir(parser: argparse.ArgumentParser) -> None:
    """RESULTS_DIR, the sweep's or study's folder a command reads."""
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="a sweep's or study's folder, holding its run folders "
                             "(e.g. results/fig5-latents)")
