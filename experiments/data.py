"""Data sets as (inputs, positions, labels) batches (DESIGN.md, issue 4).

Skeleton: `input_spec` is the contract others build on (no file access); the loaders land
with the data work.
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.config import DataConfig

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class InputSpec:
    """What the model is built for: channels per input element, the index grid, classes."""

    channels: int
    index_shape: tuple[int, ...]
    num_classes: int


def input_spec(cfg: DataConfig) -> InputSpec:
    native = {"fashion_mnist": (1, 28, 10), "cifar10": (3, 32, 10), "imagenet": (3, 224, 1000)}
    channels, size, classes = native[cfg.name]
    size = cfg.image_size or size
    return InputSpec(channels, (size, size), classes)
