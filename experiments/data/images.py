"""Images as (inputs, positions, labels) batches: Fashion-MNIST, CIFAR-10, ImageFolder trees.

Fashion-MNIST and CIFAR-10 are parsed once into uint8 tensors and batched in torch;
ImageFolder trees are decoded with Pillow and streamed through a DataLoader. Positions
are built before the optional pixel permutation and permuted with the inputs (docs/paper.md,
Table 2); random-resized crops know where they are (paper Fig. 4).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from experiments.data.common import (
    PERMUTE,
    Batch,
    DataSet,
    InputSpec,
    Split,
    Splits,
    carve,
    generator,
)
from experiments.errors import DataError
from perceiver_core.config import ConfigError
from perceiver_core.position import grid_positions

if TYPE_CHECKING:
    from experiments.config import DataConfig, RunConfig

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".webp")
# Per-channel (mean, std) of the training images in [0, 1] units; fixed so that every
# split and every subset is normalised identically.
STATS = {"fashion_mnist": ((0.2860,), (0.3530,)),
         "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
         "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # aspect ratios of random-resized crops
EVAL_CROP = 0.875  # ImageNet eval: resize the short side to size / 0.875, centre crop


# ---------------------------------------------------------------------------------------
# Random-resized crops that know where they are (paper Fig. 4)


def crop_boxes(uniforms: Tensor, scale_min: float, aspect: float | Tensor = 1.0) -> Tensor:
    """(B, 4) uniforms in [0, 1) -> (B, 4) crop boxes (y0, x0, y1, x1) in the image's [-1, 1]
    frame, covering a fraction in [scale_min, 1] of the area with a width/height ratio in
    [3/4, 4/3] (Inception style). `aspect` is the image's height / width. A side that would
    exceed the image is clipped to it and the other side stretched to keep the area, instead
    of drawing again (so the work is batched and the draws are a fixed 4 per crop)."""
    area = scale_min + (1 - scale_min) * uniforms[:, 0]
    ratio = torch.exp(LOG_RATIO[0] + (LOG_RATIO[1] - LOG_RATIO[0]) * uniforms[:, 1]) * aspect
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the image's sides
    height = (area / width).clamp(max=1.0)
    width = area / height
    top, left = uniforms[:, 2] * (1 - height), uniforms[:, 3] * (1 - width)
    return (torch.stack([top, left, top + height, left + width], dim=1) * 2 - 1).clamp(-1, 1)


def box_positions(boxes: Tensor, index_shape: Sequence[int]) -> Tensor:
    """(B, 4) boxes -> (B, H*W, 2) positions: the grid that spans each box, i.e. where each
    pixel of the resized crop lies in the uncropped image ((y, x), row-major)."""
    steps = [torch.linspace(0.0, 1.0, n) for n in index_shape]
    ys = boxes[:, 0:1] + (boxes[:, 2:3] - boxes[:, 0:1]) * steps[0]  # (B, H)
    xs = boxes[:, 1:2] + (boxes[:, 3:4] - boxes[:, 1:2]) * steps[1]  # (B, W)
    height, width = index_shape
    grid = torch.stack([ys[:, :, None].expand(-1, height, width),
                        xs[:, None, :].expand(-1, height, width)], dim=-1)
    return grid.reshape(len(boxes), height * width, 2)


def mirror(boxes: Tensor) -> Tensor:
    """Boxes (y0, x0, y1, x1) in a left-right mirrored image's frame -> the same regions of
    the unmirrored image, traversed right to left: (y0, -x0, y1, -x1)."""
    return boxes * boxes.new_tensor([1.0, -1.0, 1.0, -1.0])


def random_resized_crop(images: Tensor, scale_min: float,
                        uniforms: Tensor | None = None,
                        rng: torch.Generator | None = None,
                        flips: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batched random-resized crop: (B, C, H, W) float -> same-size crops and their (B, 4)
    boxes. Each output pixel is sampled (bilinearly) exactly at its box_positions, with -1
    and 1 at the centres of the image's edge pixels (align_corners=True). Images where the
    (B,) bool `flips` is set are mirrored left-right first; their boxes are in the mirrored
    image's frame (so image-relative positions are those of the mirrored image)."""
    if uniforms is None:
        uniforms = torch.rand(len(images), 4, generator=rng)
    boxes = crop_boxes(uniforms, scale_min)
    sampled = boxes if flips is None else torch.where(flips[:, None], mirror(boxes), boxes)
    positions = box_positions(sampled, images.shape[-2:])
    grid = positions.flip(-1).reshape(len(images), *images.shape[-2:], 2)  # (x, y) order
    crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                          align_corners=True)
    return crops, boxes


def randaugment():
    """torchvision's RandAugment, or a ConfigError saying how to get it."""
    try:
        from torchvision.transforms import RandAugment
    except ImportError:
        raise ConfigError(
            "data.augment=randaugment needs torchvision, which is not installed: "
            "`pip install torchvision` (the build matching your torch), "
            "or use data.augment=crop") from None
    return RandAugment()


def seeded(transform, image, seed: int):
    """Apply a transform that draws from torch's global RNG, deterministically."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


# ---------------------------------------------------------------------------------------
# From pixels to batches


class Assemble:
    """(B, H, W, C) pixels in [0, 255] (+ crop boxes) -> Batch: normalised, flattened to
    (B, M, C), positions attached, then the fixed pixel permutation applied to both."""

    def __init__(self, cfg: RunConfig, size: int):
        mean, std = (torch.tensor(s) for s in STATS[cfg.data.name])
        self.scale, self.shift = 1 / (255 * std), -mean / std
        self.index_shape = (size, size)
        self.image_relative = cfg.encoding.positions == "image_relative"
        num = size * size
        self.perm = (torch.randperm(num, generator=generator(PERMUTE, cfg.data.permute_seed))
                     if cfg.data.permute else None)
        grid = grid_positions(self.index_shape)
        self.grid = grid if self.perm is None else grid[self.perm]

    def __call__(self, pixels: Tensor, labels: Tensor, boxes: Tensor | None = None) -> Batch:
        inputs = (pixels.float() * self.scale + self.shift).flatten(1, 2)
        if boxes is not None and self.image_relative:
            positions = box_positions(boxes, self.index_shape)
            if self.perm is not None:
                positions = positions[:, self.perm]
        else:
            positions = self.grid
        if self.perm is not None:
            inputs = inputs[:, self.perm]
        return Batch(inputs.contiguous(), positions, labels)

    def collate(self, items: list) -> Batch:
        """DataLoader collate for (pixels (H, W, C) uint8, box or None, label) items."""
        if not items:  # an eval rank with nothing left in the last step
            empty = torch.zeros(0, *self.index_shape, len(self.shift))
            return self(empty, torch.zeros(0, dtype=torch.long))
        pixels, boxes, labels = zip(*items, strict=True)
        boxes = None if boxes[0] is None else torch.stack(boxes)
        return self(torch.stack(pixels), torch.tensor(labels, dtype=torch.long), boxes)


class Draws(NamedTuple):
    """The random numbers of one rank's examples in one step (training only)."""
    crops: Tensor  # (b, 4) uniforms for crop_boxes
    seeds: Tensor  # (b,) int64 seeds for RandAugment
    flips: Tensor  # (b,) bool: mirror left-right (used when data.hflip)


class ImageSplit(Split):
    """A split of images; training draws crop boxes, RandAugment seeds and mirror flips."""

    def __init__(self, labels: Tensor, assemble: Assemble, data: DataConfig):
        super().__init__(labels, data)
        self.assemble = assemble

    @property
    def augments(self) -> bool:
        return self.data.crops or self.data.hflip

    def draw(self, rng: torch.Generator, count: int) -> Draws:
        crops = torch.rand(count, 4, generator=rng)
        seeds = torch.randint(2**62, (count,), generator=rng)
        flips = (torch.rand(count, generator=rng) < 0.5) & self.data.hflip
        return Draws(crops, seeds, flips)


class TensorSplit(ImageSplit):
    """A split held in memory as uint8 (N, H, W, C); batches are built in the calling process."""

    def __init__(self, images: Tensor, labels: Tensor, assemble: Assemble, data: DataConfig):
        super().__init__(labels, assemble, data)
        self.images = images
        self.randaugment = randaugment() if data.augment == "randaugment" else None

    def batches(self, batch_size: int, *, seed: int, epoch: int, train: bool,
                start_batch: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        for indices, draws in self.plan(batch_size, seed=seed, epoch=epoch, train=train,
                                        start_batch=start_batch, rank=rank,
                                        world_size=world_size):
            pixels, labels = self.images[indices], self.labels[indices]
            if draws is None:
                yield self.assemble(pixels, labels)
                continue
            if not self.data.crops:  # mirroring only: the plain grid's positions still hold
                flipped = torch.where(draws.flips[:, None, None, None], pixels.flip(2), pixels)
                yield self.assemble(flipped, labels)
                continue
            crops, boxes = random_resized_crop(pixels.permute(0, 3, 1, 2).float(),
                                               self.data.crop_scale_min, draws.crops,
                                               flips=draws.flips)
            if self.randaugment is not None:  # on uint8 (C, H, W), as torchvision expects
                pixels = crops.round().clamp(0, 255).byte()
                crops = torch.stack([seeded(self.randaugment, image, int(seed)) for image, seed
                                     in zip(pixels, draws.seeds, strict=True)])
            yield self.assemble(crops.permute(0, 2, 3, 1), labels, boxes)


class ImageFiles(torch.utils.data.Dataset):
    """Decodes one image per item (index, crop uniforms or None, seed, flip) with Pillow: an
    Inception-style random-resized crop when uniforms are given, else resize + centre crop;
    then mirrored left-right if flip (a crop box is drawn in the mirrored image's frame).
    Returns (pixels (S, S, 3) uint8, box in the image's [-1, 1] frame or None, label). Pillow
    resamples the box's extent, so box_positions match the pixels to within half an output
    pixel (exactly, for the in-memory crops); eval crops get the plain grid."""

    def __init__(self, files: Sequence[str], labels: Tensor, size: int, data: DataConfig):
        self.files, self.labels, self.size = files, labels, size
        self.scale_min = data.crop_scale_min
        self.randaugment = randaugment() if data.augment == "randaugment" else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item):
        index, uniforms, seed, flip = item
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot decode image {path}: {exc}") from None
        width, height = image.size
        box = None
        if uniforms is None:
            side = EVAL_CROP * min(width, height)
            region = ((width - side) / 2, (height - side) / 2, (width + side) / 2,
                      (height + side) / 2)
        else:
            box = crop_boxes(torch.tensor([uniforms]), self.scale_min, height / width)[0]
            y0, x0, y1, x1 = ((box + 1) / 2).tolist()
            if flip:  # the same region of the unmirrored image
                x0, x1 = 1 - x1, 1 - x0
            region = (x0 * width, y0 * height, x1 * width, y1 * height)
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=region)
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if uniforms is not None and self.randaugment is not None:
            image = seeded(self.randaugment, image, seed)
        return torch.from_numpy(np.array(image)), box, int(self.labels[index])


class FolderSplit(ImageSplit):
    """A split of image files, decoded in data.num_workers DataLoader workers."""

    def __init__(self, files: Sequence[str], labels: Tensor, assemble: Assemble,
                 data: DataConfig):
        super().__init__(labels, assemble, data)
        self.dataset = ImageFiles(files, labels, assemble.index_shape[0], data)

    def batches(self, batch_size: int, *, seed: int, epoch: int, train: bool,
                start_batch: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        crop = self.data.crops
        plan = [[(i, tuple(d.crops[k].tolist()) if d is not None and crop else None,
                  None if d is None else int(d.seeds[k]), d is not None and bool(d.flips[k]))
                 for k, i in enumerate(idx.tolist())]
                for idx, d in self.plan(batch_size, seed=seed, epoch=epoch, train=train,
                                        start_batch=start_batch, rank=rank,
                                        world_size=world_size)]
        workers = self.data.num_workers
        yield from torch.utils.data.DataLoader(
            self.dataset, batch_sampler=plan, num_workers=workers,
            collate_fn=self.assemble.collate, prefetch_factor=4 if workers else None)


# ---------------------------------------------------------------------------------------
# Reading the files


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped), as a uint8 array of its declared shape."""
    try:
        raw = bytearray(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); reinstall the data set"
                        " (apt-get install --reinstall dataset-fashion-mnist)") from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != 0x0800 + dims or len(raw) < 4 + 4 * dims:
        raise DataError(f"{path} is not an IDX file of unsigned bytes with {dims} "
                        f"dimension(s) (expected magic {0x0800 + dims:#010x}, got "
                        f"{magic if magic is None else hex(magic)})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
    if data.size != math.prod(shape):
        raise DataError(f"{path}: the header declares shape {shape} ({math.prod(shape)} "
                        f"bytes) but the file holds {data.size}; it is truncated or corrupt")
    return data.reshape(shape)


@lru_cache(maxsize=4)
def read_fashion_mnist_part(root: str, part: str, stamp: tuple) -> tuple[Tensor, Tensor]:
    """(images (N, 28, 28, 1) uint8, labels (N,) int64); cached per process by file stamp."""
    image_file, label_file = (Path(root) / f for f in FASHION_MNIST_FILES[part])
    images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
    if len(images) != len(labels) or labels.max(initial=0) >= 10:
        raise DataError(f"{image_file} holds {len(images)} images but {label_file} holds "
                        f"{len(labels)} labels (max {labels.max(initial=0)}, need < 10): "
                        "the files do not belong together")
    return torch.from_numpy(images)[..., None], torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(data: DataConfig) -> tuple[dict, tuple[str, ...], Path]:
    root = Path(data.root or FASHION_MNIST_ROOT)
    expected = [root / f for files in FASHION_MNIST_FILES.values() for f in files]
    missing = [p.name for p in expected if not p.is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found: expected {', '.join(missing)} in {root}. Install "
            f"Debian's package (`apt-get install dataset-fashion-mnist`, files land in "
            f"{FASHION_MNIST_ROOT}) or set data.root to a folder holding the four IDX .gz "
            "files from https://github.com/zalandoresearch/fashion-mnist")
    parts = {}
    for part, files in FASHION_MNIST_FILES.items():
        stamp = tuple((s.st_mtime_ns, s.st_size) for s in (os.stat(root / f) for f in files))
        parts[part] = read_fashion_mnist_part(str(root), part, stamp)
    return parts, FASHION_MNIST_CLASSES, root


class CifarUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only the globals they hold, so a bad file cannot run
    code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8
                or data.shape != (len(labels), 3072) or labels.min(initial=0) < 0
                or labels.max(initial=0) >= 10):
            raise ValueError("expected b'data' uint8 (N, 3072) and N b'labels' in 0..9")
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            AttributeError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({exc}); download the "
                        f"python version again from {CIFAR10_URL}") from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(data: DataConfig) -> tuple[dict, tuple[str, ...], Path]:
    how = (f"download the python version from {CIFAR10_URL}, extract it and set "
           "data.root to its cifar-10-batches-py folder")
    if data.root is None:
        raise ConfigError(f"data.name=cifar10 needs data.root: {how}")
    root = Path(data.root)
    if not (root / "test_batch").is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    expected = [f for files in CIFAR10_FILES.values() for f in files]
    missing = [f for f in expected if not (root / f).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 not found: expected {', '.join(missing)} in {root}; {how}")
    parts = {}
    for part, files in CIFAR10_FILES.items():
        images, labels = zip(*(read_cifar_batch(root / f) for f in files), strict=True)
        parts[part] = (torch.from_numpy(np.concatenate(images)),
                       torch.from_numpy(np.concatenate(labels)))
    return parts, CIFAR10_CLASSES, root


def resize(images: Tensor, size: int) -> Tensor:
    """(N, H, W, C) uint8 -> (N, size, size, C) uint8, antialiased; once, at load time."""
    if images.shape[1:3] == (size, size):
        return images
    out = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(size, size),
                        mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous()


def list_image_folder(folder: Path, classes: Sequence[str] | None = None):
    """(files, labels, classes) of an ImageFolder tree folder/<class>/<image>."""
    how = ("expected an ImageFolder tree: data.root/train/<class>/<image>.JPEG and "
           "data.root/val/<class>/<image>.JPEG (for ImageNet, the val images sorted into "
           "class folders, e.g. with the ILSVRC2012 devkit's labels)")
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; {how}")
    found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not found:
        raise DataError(f"{folder} holds no class folders; {how}")
    classes = tuple(found) if classes is None else tuple(classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder} has class folders that train/ lacks: {unknown[:5]}; {how}")
    files, labels = [], []
    for label, name in enumerate(classes):
        if name not in found:
            continue
        images = sorted(e.path for e in os.scandir(folder / name)
                        if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        files += images
        labels += [label] * len(images)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); {how}")
    return files, torch.tensor(labels, dtype=torch.long), classes


def image_spec(data: DataConfig, channels: int, size: int, classes: int) -> InputSpec:
    size = data.image_size or size
    return InputSpec(channels, (size, size), classes)


def in_memory_splits(cfg: RunConfig, spec: InputSpec, parts: dict, classes: tuple[str, ...],
                     root: Path) -> Splits:
    data = cfg.data
    if data.augment == "randaugment":
        randaugment()
    size = spec.index_shape[0]
    assemble = Assemble(cfg, size)
    (images, labels), (test_images, test_labels) = parts["train"], parts["test"]
    train, val = carve(len(images), data, str(root))
    images, test_images = resize(images, size), resize(test_images, size)
    return Splits(TensorSplit(images[train], labels[train], assemble, data),
                  TensorSplit(images[val], labels[val], assemble, data),
                  TensorSplit(test_images, test_labels, assemble, data), spec, classes)


def fashion_mnist_spec(data: DataConfig) -> InputSpec:
    return image_spec(data, 1, 28, 10)


def fashion_mnist_splits(cfg: RunConfig) -> Splits:
    parts, classes, root = load_fashion_mnist(cfg.data)
    return in_memory_splits(cfg, fashion_mnist_spec(cfg.data), parts, classes, root)


def cifar10_spec(data: DataConfig) -> InputSpec:
    return image_spec(data, 3, 32, 10)


def cifar10_splits(cfg: RunConfig) -> Splits:
    parts, classes, root = load_cifar10(cfg.data)
    return in_memory_splits(cfg, cifar10_spec(cfg.data), parts, classes, root)


def imagenet_spec(data: DataConfig) -> InputSpec:
    return image_spec(data, 3, 224, 1000)


def imagenet_splits(cfg: RunConfig) -> Splits:
    """An ImageFolder tree (train/ and val/), decoded in DataLoader workers."""
    data = cfg.data
    if data.augment == "randaugment":
        randaugment()
    spec = imagenet_spec(data)
    assemble = Assemble(cfg, spec.index_shape[0])
    if data.root is None:
        raise ConfigError("data.name=imagenet needs data.root: a folder holding train/ "
                          "and val/ ImageFolder trees (train/<class>/<image>.JPEG)")
    root = Path(data.root)
    files, labels, classes = list_image_folder(root / "train")
    test_files, test_labels, _ = list_image_folder(root / "val", classes)
    train, val = carve(len(files), data, str(root / "train"))

    def split(idx):
        return FolderSplit([files[i] for i in idx.tolist()], labels[idx], assemble, data)

    test = FolderSplit(test_files, test_labels, assemble, data)
    return Splits(split(train), split(val), test,
                  InputSpec(spec.channels, spec.index_shape, len(classes)), classes)


IMAGE_AUGMENTS = ("none", "crop", "randaugment")
DATA_SETS = (
    DataSet("fashion_mnist", "images", fashion_mnist_spec, fashion_mnist_splits, 60_000,
            IMAGE_AUGMENTS, embedded=True),
    DataSet("cifar10", "images", cifar10_spec, cifar10_splits, 50_000, IMAGE_AUGMENTS),
    DataSet("imagenet", "images", imagenet_spec, imagenet_splits, 1_281_167, IMAGE_AUGMENTS),
)
