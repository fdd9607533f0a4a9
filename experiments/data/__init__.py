"""Data sets as (inputs, positions, labels) batches (docs/design.md, issue 4 and 19).

The contract: every data set yields Batch(inputs (B, M, C), positions (M, d) or (B, M, d)
in [-1, 1], labels) and an InputSpec (channels, index shape, classes, multi-label flag,
metric), and is declared once, as a `DataSet` in its family module's DATA_SETS, which
`registry.py` gathers. Every data set becomes three splits:
train, a validation split carved from train with a fixed seed (never train.seed, so every
run of a sweep validates on the same examples) and test, only for final numbers.

Where things live: `common.py` the shared types and the deterministic batch plan;
`images.py` Fashion-MNIST, CIFAR-10 and ImageFolder trees; `point_sets.py` Fashion-MNIST
as 2D point sets and ModelNet40; `signals.py` JapaneseVowels and audio folders.
"""

from experiments.data.common import Batch, DataSet, InputSpec, Splits, carve, generator
from experiments.data.images import (
    FASHION_MNIST_FILES,
    FASHION_MNIST_ROOT,
    STATS,
    box_positions,
    crop_boxes,
    random_resized_crop,
    read_idx,
)
from experiments.data.registry import REGISTRY, dataset, input_spec, load_splits

__all__ = ["FASHION_MNIST_FILES", "FASHION_MNIST_ROOT", "REGISTRY", "STATS", "Batch",
           "DataSet", "InputSpec", "Splits", "box_positions", "carve", "crop_boxes",
           "dataset", "generator", "input_spec", "load_splits", "random_resized_crop",
           "read_idx"]
