"""What every data set shares: the batch and spec types, the train/val carve and the
deterministic batch plan (docs/design.md, "Real components").

The batch order and every random augmentation are pure functions of (seed, epoch, step),
drawn for the global batch and then sharded, so a resumed run (start_batch) sees exactly
the batches an uninterrupted one would, and DDP ranks together see what one process with
the same global batch sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from perceiver_core.config import ConfigError
from perceiver_core.position import grid_positions

if TYPE_CHECKING:
    from experiments.config import DataConfig, RunConfig

VAL_SPLIT_SEED = 1234  # the validation split is fixed per data set, whatever train.seed is
# Purposes mixed into the seeds so order, augmentations, permutation and the fixed
# evaluation draws (point samples of val/test) take independent streams.
ORDER, AUGMENT, PERMUTE, EVAL_DRAWS = 1, 2, 3, 4


@dataclass(frozen=True)
class InputSpec:
    """What the model is built for: channels per input element, the index shape, classes.

    For a grid (image, signal, spectrogram, clip) M = prod(index_shape). For an unordered
    point set M = num_points and index_shape only gives the resolution along each position
    dimension (what `encoding.max_resolution: null` means: the Nyquist frequency)."""

    channels: int
    index_shape: tuple[int, ...]
    num_classes: int
    multi_label: bool = False  # targets are multi-hot; loss is sigmoid BCE, metric mAP
    num_points: int | None = None  # set for unordered point sets
    # Several modalities packed along M ((channels, index_shape) each, in order; see
    # perceiver_core/multimodal.py): channels is then the widest, index_shape (M,).
    modalities: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @property
    def num_inputs(self) -> int:
        return self.num_points or math.prod(self.index_shape)

    @property
    def metric(self) -> str:
        """The key suffix of the split metric: val_acc / test_acc or val_map / test_map."""
        return "map" if self.multi_label else "acc"

    def example_positions(self) -> Tensor:
        """(M, d) positions of the right shape for counting FLOPs or benchmarking: the grid,
        or (for point sets) points spread over [-1, 1] (the cost does not depend on them)."""
        if self.modalities:
            return packed_positions([shape for _, shape in self.modalities])
        if self.num_points is None:
            return grid_positions(self.index_shape)
        return torch.linspace(-1, 1, self.num_points)[:, None].expand(
            -1, len(self.index_shape)).contiguous()


def packed_positions(shapes) -> Tensor:
    """The grids of several index shapes, one after the other along M, each zero-padded to
    the largest number of position dimensions."""
    dims = max(len(shape) for shape in shapes)
    grids = [grid_positions(shape) for shape in shapes]
    return torch.cat([torch.nn.functional.pad(g, (0, dims - g.shape[1])) for g in grids])


class Batch(NamedTuple):
    inputs: Tensor  # (B, M, C) float32, normalised per channel
    positions: Tensor  # (M, d) shared by the batch, or (B, M, d) per example; in [-1, 1]
    labels: Tensor  # (B,) int64, or (B, classes) float multi-hot for multi-label sets


def generator(*key: int) -> torch.Generator:
    """A torch generator that is a pure function of `key`, e.g. (AUGMENT, seed, epoch, step)."""
    words = np.random.SeedSequence([k & (2**64 - 1) for k in key]).generate_state(2)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


class Split:
    """One split. Order: a permutation of the split drawn from (seed, epoch) when training,
    index order otherwise. Step s covers the global batch order[s*G:(s+1)*G], G = batch_size
    * world_size, of which rank r takes the r-th contiguous share. Training drops the last
    incomplete global batch; evaluation keeps every example (its last step is split as
    evenly as possible, so a rank can get an empty batch if fewer than world_size remain).

    A subclass with random training augmentations sets `augments` and draws them for a
    whole global batch in `draw` (a NamedTuple of tensors whose first axis is the example);
    each rank then takes its share of every field."""

    augments = False

    def __init__(self, labels: Tensor, data: DataConfig):
        self.labels, self.data = labels, data

    def __len__(self) -> int:
        return len(self.labels)

    def draw(self, rng: torch.Generator, count: int) -> NamedTuple:
        raise NotImplementedError

    def num_batches(self, batch_size: int, world_size: int = 1, *, train: bool) -> int:
        """Batches per rank (equal on every rank)."""
        global_batch = batch_size * world_size
        return len(self) // global_batch if train else -(-len(self) // global_batch)

    def plan(self, batch_size: int, *, seed: int, epoch: int, train: bool, start_batch: int,
             rank: int, world_size: int) -> Iterator[tuple[Tensor, NamedTuple | None]]:
        """(indices, draws) of this rank's batches from start_batch on."""
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got "
                             f"batch_size={batch_size}, rank={rank}, world_size={world_size}")
        steps = self.num_batches(batch_size, world_size, train=train)
        if train and steps == 0:
            raise ConfigError(
                f"the split has {len(self)} examples, fewer than one global batch of "
                f"{batch_size * world_size} (train.batch_size x world size): lower "
                "train.batch_size or raise data.train_subset")
        if not 0 <= start_batch <= steps:
            raise ValueError(f"start_batch={start_batch} is outside 0..{steps}")
        order = (torch.randperm(len(self), generator=generator(ORDER, seed, epoch)) if train
                 else torch.arange(len(self)))
        augment = train and self.augments
        global_batch = batch_size * world_size
        for step in range(start_batch, steps):
            chunk = order[step * global_batch:(step + 1) * global_batch]
            bounds = np.linspace(0, len(chunk), world_size + 1).round().astype(int)
            share = slice(bounds[rank], bounds[rank + 1])
            draws = None
            if augment:  # drawn for the whole global batch, so sharding does not change them
                drawn = self.draw(generator(AUGMENT, seed, epoch, step), len(chunk))
                draws = type(drawn)(*(t[share] for t in drawn))
            yield chunk[share], draws

    def batches(self, batch_size: int, *, seed: int, epoch: int, train: bool,
                start_batch: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        raise NotImplementedError


class ArraySplit(Split):
    """A split held in memory whose batches a subclass builds from (indices, draws)."""

    def batch(self, indices: Tensor, draws: NamedTuple | None) -> Batch:
        raise NotImplementedError

    def batches(self, batch_size: int, *, seed: int, epoch: int, train: bool,
                start_batch: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        for indices, draws in self.plan(batch_size, seed=seed, epoch=epoch, train=train,
                                        start_batch=start_batch, rank=rank,
                                        world_size=world_size):
            yield self.batch(indices, draws)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    spec: InputSpec
    classes: tuple[str, ...]  # label -> class name


@dataclass(frozen=True)
class DataSet:
    """A data set as its family's module declares it (its DATA_SETS) and the registry
    (registry.py) gathers it."""

    name: str
    family: str  # images | point_sets | signals: which module reads it
    spec: Callable[[DataConfig], InputSpec]  # before reading: the model can be built from it
    splits: Callable[[RunConfig], Splits]  # reads and checks the files; ConfigError if bad
    train_size: int  # nominal size of the training file(s), for sweep --dry-run estimates
    augments: tuple[str, ...] = ("none",)  # the data.augment values it supports
    embedded: bool = False  # present on every machine, no data.root needed


def carve(num: int, data: DataConfig, where: str) -> tuple[Tensor, Tensor]:
    """(train indices, val indices): val_size examples drawn with a fixed seed, then the
    first train_subset of the remaining ones in that same random order."""
    if data.val_size >= num:
        raise ConfigError(f"data.val_size={data.val_size} leaves none of the {num} training "
                          f"examples in {where} for training: lower data.val_size")
    order = torch.randperm(num, generator=generator(VAL_SPLIT_SEED))
    val, train = order[:data.val_size], order[data.val_size:]
    if data.train_subset is not None:
        if data.train_subset > len(train):
            raise ConfigError(f"data.train_subset={data.train_subset} exceeds the {len(train)} "
                              f"training examples left after the validation split of {where}")
        train = train[:data.train_subset]
    return train, val
