"""Sweep specs: a base config, axes and seeds, expanded into validated runs.

    description: Fig. 5, latent index size N      # optional, shown by --dry-run
    base:                                         # a config file's content (`preset:` allowed)
      preset: fashion-mnist
      train: {epochs: 3}
    grid:                                         # cartesian product, in file order
      model.num_latents: [16, 32, 64, 128]
    zip:                                          # equal-length lists that move together
      model.share_cross_attends: [true, false]
      model.share_latent_blocks: [true, false]
    seeds: [0, 1]                                 # -> train.seed, innermost axis

Expansion is deterministic (zip outermost, then grid keys in file order, then seeds) and
every point is resolved into a RunConfig before anything is submitted or written: one bad
point fails the whole sweep with a message naming it. A point's run id is the hash of its
resolved config (dora's signature idea), so resubmitting a sweep finds its finished runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import (
    ConfigError,
    RunConfig,
    merge,
    parse_overrides,
    read_user_yaml,
    resolve,
)
from experiments.data.registry import check_config

SWEEP_DIR = Path(__file__).parents[1] / "sweeps"
SPEC_KEYS = ("description", "base", "grid", "zip", "seeds")
SEED_KEY = "train.seed"


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its coordinates on the sweep's axes and its resolved config."""

    index: int
    params: dict[str, Any]
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id


@dataclass(frozen=True)
class Sweep:
    name: str  # where its results go by default: results/<name>
    path: Path
    spec: dict[str, Any]  # the file's content, as written
    overrides: dict[str, Any]  # the command line's key=value, applied to the base
    points: tuple[Point, ...]

    @property
    def axes(self) -> list[str]:
        return list(self.points[0].params) if self.points else []


def sweep_path(name_or_path: str | Path) -> Path:
    """A file path, or the name of a shipped sweep (`fig5-latents`,
    `paper-imagenet/fig5-latents`) under experiments/sweeps/."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    shipped = SWEEP_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(str(p.relative_to(SWEEP_DIR).with_suffix("")) for p in SWEEP_DIR.rglob("*.yaml"))
    raise ConfigError(f"sweep {str(name_or_path)!r} is neither a file nor a shipped sweep; "
                      f"shipped: {', '.join(names)}")


def default_name(path: Path) -> str:
    """results/<name>: the file stem, or the path inside experiments/sweeps/ for shipped
    sweeps (so `paper-imagenet/fig5-latents` does not mix with `fig5-latents`)."""
    try:
        return str(path.resolve().relative_to(SWEEP_DIR.resolve()).with_suffix(""))
    except ValueError:
        return path.stem


def load_sweep(name_or_path: str | Path, overrides: Sequence[str] | Mapping = ()) -> Sweep:
    path = sweep_path(name_or_path)
    spec = read_user_yaml(path)
    if not spec:
        raise ConfigError(f"sweep {path}: the file is empty; a sweep needs a `base:` config "
                          "and at least one axis (`grid:`, `zip:` or `seeds:`); nothing was "
                          "submitted")
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    try:
        points = expand(spec, dict(overrides))
    except ConfigError as exc:
        raise ConfigError(f"sweep {path}: {exc}; nothing was submitted") from None
    return Sweep(default_name(path), path, spec, dict(overrides), tuple(points))


def expand(spec: Mapping[str, Any], overrides: Mapping[str, Any] = ()) -> list[Point]:
    """The sweep's points, each resolved into a validated RunConfig."""
    unknown = [key for key in spec if key not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"unknown sweep key(s) {unknown}: a sweep holds {', '.join(SPEC_KEYS)}")
    base = spec.get("base") or {}
    if not isinstance(base, Mapping):
        raise ConfigError(f"base must be a mapping of config sections (and `preset:`), "
                          f"got {base!r}")
    axes = axis_lists(spec)
    clash = sorted(set(overrides) & {key for names, _ in axes for key in names})
    if clash:
        raise ConfigError(f"override(s) {', '.join(clash)} set a key the sweep varies; drop "
                          "them or edit the sweep's axes")
    try:
        check_config(resolve(base, overrides))
    except ConfigError as exc:
        raise ConfigError(f"base: {exc}") from None
    if not axes:
        raise ConfigError("no axes: give `grid:`, `zip:` or `seeds:` at least one key with "
                          "values (for a single run use `perceiver-ablate train`)")
    points, seen = [], {}
    combos = list(itertools.product(*(values for _, values in axes)))
    for index, combo in enumerate(combos):
        params = {key: value for (names, _), row in zip(axes, combo, strict=True)
                  for key, value in zip(names, row, strict=True)}
        label = " ".join(f"{k}={v}" for k, v in params.items())
        point = f"point {index + 1}/{len(combos)} ({label})"
        try:
            config = resolve(base, {**overrides, **params})
            check_config(config)
        except ConfigError as exc:
            raise ConfigError(f"{point}: {exc}") from None
        if config.run_id in seen:
            raise ConfigError(f"{point} resolves to the same config as point {seen[config.run_id]} "
                              f"(run {config.run_id}): an axis value has no effect; remove it")
        seen[config.run_id] = index + 1
        points.append(Point(index, params, config))
    return points


def axis_lists(spec: Mapping[str, Any]) -> list[tuple[tuple[str, ...], list[tuple]]]:
    """[(keys, rows)]: the zip group as one axis with tuples of values, then one axis per
    grid key, then the seeds. Keys are checked against the config vocabulary."""
    axes = []
    zipped = section(spec, "zip")
    if zipped:
        lengths = {key: len(values) for key, values in zipped.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"zip: lists must have equal lengths, got {lengths}")
        axes.append((tuple(zipped), list(zip(*zipped.values(), strict=True))))
    grid = section(spec, "grid")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise ConfigError(f"{', '.join(both)} is in both grid and zip; keep it in one")
    axes += [((key,), [(value,) for value in values]) for key, values in grid.items()]
    seeds = spec.get("seeds")
    if seeds is not None:
        if SEED_KEY in grid or SEED_KEY in zipped:
            raise ConfigError(f"seeds: and a {SEED_KEY} axis both set the seed; keep one")
        if not isinstance(seeds, list) or not seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"seeds: must be a non-empty list of integers, got {seeds!r}")
        axes.append(((SEED_KEY,), [(seed,) for seed in seeds]))
    return axes


def section(spec: Mapping[str, Any], name: str) -> dict[str, list]:
    """grid: or zip:, checked: dotted config keys -> non-empty lists."""
    content = spec.get(name) or {}
    if not isinstance(content, Mapping):
        raise ConfigError(f"{name}: must map dotted config keys to lists, got {content!r}")
    for key, values in content.items():
        try:
            merge({}, {str(key): None})  # the config vocabulary's check, with its hints
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{name}: {key} must be a non-empty list of values, got {values!r}")
    return dict(content)
