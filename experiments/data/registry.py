"""The one list of data sets: adding a data set means one entry here and a module that
reads it (docs/design.md: every data set yields inputs (M, C) + positions (M, d) in
[-1, 1], its index shape, classes, multi-label flag and metric).

Config validation (`data.name`, `data.augment`), the model's input spec, the sweep
planner's size estimate and the trainer's loader all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from experiments.data import images, point_sets, signals
from experiments.data.common import InputSpec, Splits
from perceiver_core.config import ConfigError

if TYPE_CHECKING:
    from experiments.config import DataConfig, RunConfig


@dataclass(frozen=True)
class DataSet:
    name: str
    family: str  # images | point_sets | signals: which module reads it
    spec: Callable[[DataConfig], InputSpec]  # before reading: the model can be built from it
    splits: Callable[[RunConfig], Splits]  # reads and checks the files; ConfigError if bad
    train_size: int  # nominal size of the training file(s), for sweep --dry-run estimates
    augments: tuple[str, ...] = ("none",)  # the data.augment values it supports
    embedded: bool = False  # present on every machine, no data.root needed


IMAGE_AUGMENTS = ("none", "crop", "randaugment")
REGISTRY = {d.name: d for d in (
    DataSet("fashion_mnist", "images", images.fashion_mnist_spec, images.fashion_mnist_splits,
            60_000, IMAGE_AUGMENTS, embedded=True),
    DataSet("cifar10", "images", images.cifar10_spec, images.cifar10_splits, 50_000,
            IMAGE_AUGMENTS),
    DataSet("imagenet", "images", images.imagenet_spec, images.imagenet_splits, 1_281_167,
            IMAGE_AUGMENTS),
    DataSet("fashion_mnist_points", "point_sets", point_sets.fashion_points_spec,
            point_sets.fashion_points_splits, 60_000, embedded=True),
    DataSet("modelnet40", "point_sets", point_sets.modelnet40_spec,
            point_sets.modelnet40_splits, 9_843, ("none", "scale")),
    DataSet("japanese_vowels", "signals", signals.vowels_spec, signals.vowels_splits, 270,
            embedded=True),
    DataSet("audioset", "signals", signals.audio_spec, signals.audio_splits, 22_160),
)}
AUGMENTS = tuple(dict.fromkeys(a for d in REGISTRY.values() for a in d.augments))


def dataset(name: str) -> DataSet:
    if name not in REGISTRY:
        raise ConfigError(f"data.name={name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def input_spec(data: DataConfig) -> InputSpec:
    """What the model is built for, known without reading the data (the class count of a
    folder-defined data set is its nominal one until load_splits reads the files)."""
    return dataset(data.name).spec(data)


def check_config(cfg: RunConfig) -> None:
    """Combinations of data and model that cannot work, caught before anything is built."""
    entry = dataset(cfg.data.name)
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
