"""The one list of data sets, gathered from the family modules: each family (images.py,
point_sets.py, signals.py) declares its own data sets in its DATA_SETS (docs/design.md:
every data set yields inputs (M, C) + positions (M, d) in [-1, 1], its index shape,
classes, multi-label flag and metric), so a new data set of a family is one file, and a
new family is one module plus its line in FAMILIES.

Config checks of the data (`check_config`: data.name, data.augment and the combinations
of data and model that cannot work), the model's input spec, the sweep planner's size
estimate and the trainer's loader all read this table. experiments/config.py only says
what the keys are: it imports nothing of the data, which reads configs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from experiments.data import images, point_sets, signals
from experiments.data.common import DataSet, InputSpec, Splits
from perceiver_core.config import ConfigError, check_choice

if TYPE_CHECKING:
    from experiments.config import DataConfig, RunConfig

FAMILIES = (images, point_sets, signals)
REGISTRY: dict[str, DataSet] = {d.name: d for family in FAMILIES for d in family.DATA_SETS}
AUGMENTS = tuple(dict.fromkeys(a for d in REGISTRY.values() for a in d.augments))


def dataset(name: str) -> DataSet:
    if name not in REGISTRY:
        raise ConfigError(f"data.name={name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def input_spec(data: DataConfig) -> InputSpec:
    """What the model is built for, known without reading the data (the class count of a
    folder-defined data set is its nominal one until load_splits reads the files)."""
    return dataset(data.name).spec(data)


def chance_accuracy(data: DataConfig) -> float | None:
    """Chance accuracy in points of the data set `data` names, what a diverged run is judged
    at (docs/verdicts.md); None for a multi-label set or an unknown name, where chance
    accuracy means nothing."""
    try:
        spec = input_spec(data)
    except (ConfigError, TypeError, ValueError):
        return None
    return None if spec.multi_label else 100 / spec.num_classes


def check_config(cfg: RunConfig) -> None:
    """cfg's data checked against the data sets: data.name and data.augment are known, and
    no combination of data and model that cannot work is asked for. Every path that takes
    a config from a user calls it before anything is built, written or submitted (the
    commands' config_from_args, a sweep's points, a study's space and trials, the model
    factory, load_splits)."""
    entry = dataset(cfg.data.name)
    check_choice("data", "augment", cfg.data.augment, AUGMENTS)
    if cfg.data.augment not in entry.augments:
        raise ConfigError(f"data.augment={cfg.data.augment!r} does not apply to "
                          f"data.name={entry.name}: use one of {', '.join(entry.augments)}")
    if cfg.data.hflip and entry.family != "images":
        raise ConfigError(f"data.hflip mirrors images; data.name={entry.name} is not one")
    if cfg.data.modality != "audio" and entry.name != "audioset":
        raise ConfigError(f"data.modality={cfg.data.modality} selects the clips of an "
                          f"audioset folder; data.name={entry.name} has no other modality")
    spec = entry.spec(cfg.data)
    if cfg.data.num_points is not None and spec.num_points is None:
        raise ConfigError(f"data.num_points={cfg.data.num_points} applies to point sets; "
                          f"data.name={entry.name} is not one: drop it")
    if spec.num_points is not None and cfg.encoding.kind == "learned":
        raise ConfigError(f"encoding.kind=learned indexes a table by array position, but "
                          f"data.name={entry.name} is an unordered point set: use "
                          "encoding.kind=fourier (or none)")
    if spec.num_points is not None and cfg.model.arch != "perceiver":
        raise ConfigError(f"model.arch={cfg.model.arch} needs an image grid; "
                          f"data.name={entry.name} is a point set: use model.arch=perceiver")
    if cfg.data.permute and entry.family != "images":
        raise ConfigError("data.permute shuffles image pixels (Table 2); "
                          f"data.name={entry.name} is not an image data set")


def load_splits(cfg: RunConfig) -> Splits:
    """Read the data set named by cfg.data (raises ConfigError if it is missing or
    malformed, before anything else happens)."""
    check_config(cfg)
    return dataset(cfg.data.name).splits(cfg)
