"""Unordered point sets: Fashion-MNIST as 2D point sets (embedded) and ModelNet40 (HDF5).

A point set has no grid: each example is M points with their own positions (B, M, d), in
random order, so the model sees a set. The Perceiver's attention is permutation invariant,
so only the position features tell it where a point is (docs/paper.md: the point-cloud
model differs from the image model only in its position features).

Training draws new points (and augmentations) every step from (seed, epoch, step); val
and test use one fixed draw per example, so every evaluation sees the same sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from experiments.data.common import (
    EVAL_DRAWS,
    ArraySplit,
    Batch,
    DataSet,
    InputSpec,
    Splits,
    carve,
    generator,
)
from experiments.data.images import FASHION_MNIST_CLASSES, load_fashion_mnist
from experiments.errors import DataError
from perceiver_core.config import ConfigError

if TYPE_CHECKING:
    from experiments.config import DataConfig, RunConfig

FASHION_POINTS = 256  # default points per Fashion-MNIST image (of 784 pixels)
MODELNET_POINTS = 2048  # points per shape in modelnet40_ply_hdf5_2048
MODELNET_HOW = ("expected the modelnet40_ply_hdf5_2048 release in data.root: train_files.txt "
                "and test_files.txt listing ply_data_{train,test}N.h5 files (each with 'data' "
                "float32 (B, 2048, 3) and 'label' (B, 1)) and shape_names.txt (40 class names)")
# Augment=scale: per-shape anisotropic scaling and translation (PointNet++'s ranges).
SCALE_RANGE, SHIFT_RANGE = (0.8, 1.25), 0.1


class PixelDraws(NamedTuple):
    uniforms: Tensor  # (b, K) in [0, 1): which pixel, by inverse CDF of the intensities
    jitter: Tensor  # (b, K, 2) in [-0.5, 0.5): sub-pixel offset of each point


class FashionPointSplit(ArraySplit):
    """Fashion-MNIST images as sets of K points: pixels drawn with probability proportional
    to intensity (with replacement), at the pixel's (row, column) plus a uniform sub-pixel
    jitter scaled to [-1, 1]; feature = intensity / 255. The points come in draw order,
    which is random: there is no grid order to exploit."""

    augments = True  # every training step draws new points

    def __init__(self, images: Tensor, labels: Tensor, data: DataConfig, num_points: int,
                 stream: int):
        super().__init__(labels, data)
        self.pixels = images.flatten(1)  # (N, H*W) uint8
        self.side = images.shape[1]
        self.num_points = num_points
        self.fixed = self.draw(generator(EVAL_DRAWS, stream), len(self))

    def draw(self, rng: torch.Generator, count: int) -> PixelDraws:
        return PixelDraws(torch.rand(count, self.num_points, generator=rng),
                          torch.rand(count, self.num_points, 2, generator=rng) - 0.5)

    def batch(self, indices: Tensor, draws: PixelDraws | None) -> Batch:
        if draws is None:
            draws = PixelDraws(*(t[indices] for t in self.fixed))
        pixels = self.pixels[indices].float()
        cdf = pixels.cumsum(1)
        # right=True: the first pixel whose cumulative intensity exceeds the draw, so a
        # black pixel (zero weight) is never picked.
        picked = torch.searchsorted(cdf, draws.uniforms * cdf[:, -1:], right=True)
        picked = picked.clamp(max=pixels.shape[1] - 1)
        cells = torch.stack([picked // self.side, picked % self.side], dim=-1).float()
        positions = ((cells + draws.jitter) / (self.side - 1) * 2 - 1).clamp(-1, 1)
        values = pixels.gather(1, picked)[..., None] / 255
        return Batch(values, positions, self.labels[indices])


def fashion_points_spec(data: DataConfig) -> InputSpec:
    return InputSpec(1, (28, 28), 10, num_points=data.num_points or FASHION_POINTS)


def fashion_points_splits(cfg: RunConfig) -> Splits:
    data = cfg.data
    spec = fashion_points_spec(data)
    parts, _, root = load_fashion_mnist(data)
    (images, labels), (test_images, test_labels) = parts["train"], parts["test"]
    if not bool((images.flatten(1).amax(1) > 0).all() and
                (test_images.flatten(1).amax(1) > 0).all()):
        raise DataError(f"{root}: an image is entirely black, so it has no points to draw")
    train, val = carve(len(images), data, str(root))

    def split(x, y, stream):
        return FashionPointSplit(x, y, data, spec.num_points, stream)

    return Splits(split(images[train], labels[train], 0), split(images[val], labels[val], 1),
                  split(test_images, test_labels, 2), spec, FASHION_MNIST_CLASSES)


# ---------------------------------------------------------------------------------------
# ModelNet40 (Wu et al. 2015) as released with PointNet: 2048 points per shape, unit sphere


class ShapeDraws(NamedTuple):
    order: Tensor  # (b, P) a random order of each shape's points; the first K are used
    scale: Tensor  # (b, 1, 3) per-axis scale (ones unless data.augment=scale)
    shift: Tensor  # (b, 1, 3) translation (zeros unless data.augment=scale)


class ShapeSplit(ArraySplit):
    """Shapes as K of their points: xyz are both the positions and the input features (as
    in the paper). Training takes a random K-subset each step (and augments); evaluation
    takes the first K points of each shape (the release stores them in random order)."""

    augments = True

    def __init__(self, points: Tensor, labels: Tensor, data: DataConfig, num_points: int):
        super().__init__(labels, data)
        self.points, self.num_points = points, num_points

    def draw(self, rng: torch.Generator, count: int) -> ShapeDraws:
        order = torch.rand(count, self.points.shape[1], generator=rng).argsort(1)
        scale, shift = torch.ones(count, 1, 3), torch.zeros(count, 1, 3)
        if self.data.augment == "scale":
            low, high = SCALE_RANGE
            scale = low + (high - low) * torch.rand(count, 1, 3, generator=rng)
            shift = SHIFT_RANGE * (2 * torch.rand(count, 1, 3, generator=rng) - 1)
        return ShapeDraws(order, scale, shift)

    def batch(self, indices: Tensor, draws: ShapeDraws | None) -> Batch:
        points = self.points[indices]
        if draws is None:
            xyz = points[:, :self.num_points]
        else:
            chosen = draws.order[:, :self.num_points, None].expand(-1, -1, 3)
            xyz = points.gather(1, chosen) * draws.scale + draws.shift
        xyz = xyz.clamp(-1, 1)  # the contract: positions in [-1, 1]
        return Batch(xyz, xyz, self.labels[indices])


def modelnet40_spec(data: DataConfig) -> InputSpec:
    # index_shape sets the default Fourier resolution: one cell per point along each axis.
    points = data.num_points or MODELNET_POINTS
    return InputSpec(3, (points,) * 3, 40, num_points=points)


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"ModelNet40 not found: {path} is missing; {MODELNET_HOW}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_modelnet_h5(path: Path, num_classes: int) -> tuple[Tensor, Tensor]:
    """(points (B, P, 3) float32, labels (B,) int64) of one ply_data_*.h5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or "label" not in f:
                raise ValueError(f"it holds keys {sorted(f.keys())}, not 'data' and 'label'")
            points, labels = f["data"][()], f["label"][()]
    except OSError as exc:
        raise DataError(f"{path} is not a readable HDF5 file ({exc}); {MODELNET_HOW}") from None
    except ValueError as exc:
        raise DataError(f"{path}: {exc}; {MODELNET_HOW}") from None
    labels = labels.reshape(-1)
    if points.ndim != 3 or points.shape[2] != 3 or len(points) != len(labels):
        raise DataError(f"{path}: 'data' has shape {points.shape} and 'label' "
                        f"{len(labels)} entries; expected (B, P, 3) and B; {MODELNET_HOW}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()} but "
                        f"shape_names.txt names {num_classes} classes")
    return torch.from_numpy(points.astype("float32")), torch.from_numpy(labels.astype("int64"))


def read_modelnet_part(root: Path, part: str, num_classes: int) -> tuple[Tensor, Tensor]:
    """The files train_files.txt / test_files.txt list; the release writes them with a
    prefix (data/modelnet40_ply_hdf5_2048/...), so each is looked up by name in root."""
    names = [Path(line).name for line in read_lines(root / f"{part}_files.txt")]
    if not names:
        raise DataError(f"{root / f'{part}_files.txt'} lists no files; {MODELNET_HOW}")
    parts = [read_modelnet_h5(root / name, num_classes) for name in names]
    points = {p.shape[1] for p, _ in parts}
    if len(points) != 1:
        raise DataError(f"{root}: the {part} files hold different point counts {points}")
    return torch.cat([p for p, _ in parts]), torch.cat([y for _, y in parts])


def modelnet40_splits(cfg: RunConfig) -> Splits:
    data = cfg.data
    if data.root is None:
        raise ConfigError(f"data.name=modelnet40 needs data.root; {MODELNET_HOW}")
    root = Path(data.root)
    classes = tuple(read_lines(root / "shape_names.txt"))
    points, labels = read_modelnet_part(root, "train", len(classes))
    test_points, test_labels = read_modelnet_part(root, "test", len(classes))
    spec = modelnet40_spec(data)
    spec = InputSpec(3, spec.index_shape, len(classes), num_points=spec.num_points)
    available = min(points.shape[1], test_points.shape[1])
    if spec.num_points > available:
        raise ConfigError(f"data.num_points={spec.num_points} exceeds the {available} points "
                          f"per shape in {root}: lower data.num_points")
    train, val = carve(len(points), data, str(root))

    def split(x, y):
        return ShapeSplit(x, y, data, spec.num_points)

    return Splits(split(points[train], labels[train]), split(points[val], labels[val]),
                  split(test_points, test_labels), spec, classes)


DATA_SETS = (
    DataSet("fashion_mnist_points", "point_sets", fashion_points_spec, fashion_points_splits,
            60_000, embedded=True),
    DataSet("modelnet40", "point_sets", modelnet40_spec, modelnet40_splits, 9_843,
            ("none", "scale")),
)
