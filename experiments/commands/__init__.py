"""Subcommands of `perceiver-ablate`, one module each, found through the
`perceiver_ablate.commands` entry-point group (pyproject.toml). Modules stay light at
import time (heavy imports inside `run`) so `--help` is instant."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


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
