"""Data sets: formats, splits, batch order, sharding, permutation, crops, errors (issue 4).

Fixtures are tiny files in the exact on-disk formats (IDX .gz, CIFAR python pickles,
ImageFolder trees). Most Fashion-MNIST fixtures fill each image with its own id, so a
batch says which examples it holds even after cropping.
"""

import gzip
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.config import load_config
from experiments.data import (
    STATS,
    box_positions,
    crop_boxes,
    load_splits,
    random_resized_crop,
)
from experiments.errors import DataError
from perceiver_core.config import ConfigError
from perceiver_core.position import grid_positions

# ------------------------------------------------------------------ fixtures and helpers


def write_idx(path: Path, array: np.ndarray) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion(root: Path, train: np.ndarray, test: np.ndarray) -> Path:
    """Four IDX files; labels are the image's first pixel mod 10."""
    root.mkdir(parents=True, exist_ok=True)
    for part, images in (("train", train), ("t10k", test)):
        write_idx(root / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{part}-labels-idx1-ubyte.gz", images[:, 0, 0] % 10)
    return root


def id_images(first: int, count: int, size: int = 8) -> np.ndarray:
    """Image k is filled with the value first + k."""
    return np.broadcast_to(np.arange(first, first + count)[:, None, None],
                           (count, size, size)).astype(np.uint8)


@pytest.fixture
def fashion(tmp_path):
    """200 training images with ids 0..199, 40 test images with ids 200..239."""
    return write_fashion(tmp_path / "fmnist", id_images(0, 200), id_images(200, 40))


def config(root, **overrides):
    return load_config(overrides={"data.root": str(root), "data.val_size": 30,
                                  "data.image_size": 8, **overrides})


def raw(batch, name="fashion_mnist"):
    """Undo the normalisation: pixel values in [0, 255]."""
    mean, std = (torch.tensor(s) for s in STATS[name])
    return (batch.inputs * std + mean) * 255


def ids(batch):
    return raw(batch).mean(dim=(1, 2)).round().long().tolist()


def all_ids(split, batch_size=16, **kw):
    return [i for b in split.batches(batch_size, **{"seed": 0, "epoch": 0, "train": False, **kw})
            for i in ids(b)]


def same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


# ------------------------------------------------------------------ the real data set


def test_real_fashion_mnist(fashion_mnist_root):
    splits = load_splits(load_config())  # the default root, which the fixture checked
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.spec.channels == 1 and splits.spec.index_shape == (28, 28)
    assert splits.spec.num_classes == len(splits.classes) == 10
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10
    pooled = torch.cat([splits.train.labels, splits.val.labels])
    assert torch.bincount(pooled).tolist() == [6000] * 10
    assert splits.train.num_batches(128, train=True) == 55000 // 128
    assert splits.test.num_batches(128, train=False) == 79
    batch = next(splits.test.batches(128, seed=0, epoch=0, train=False))
    assert batch.inputs.shape == (128, 784, 1) and batch.inputs.dtype == torch.float32
    assert batch.labels.dtype == torch.int64 and batch.labels.shape == (128,)
    assert torch.equal(batch.positions, grid_positions((28, 28)))
    pixels = raw(batch)
    assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3 and pixels.max() > 250
    assert abs(batch.inputs.mean()) < 0.1 and abs(batch.inputs.std() - 1) < 0.1


# ------------------------------------------------------------------ splits and order


def test_splits_are_disjoint_fixed_and_subsettable(fashion):
    splits = load_splits(config(fashion))
    train, val, test = (all_ids(s) for s in (splits.train, splits.val, splits.test))
    assert (len(train), len(val), len(test)) == (170, 30, 40)
    assert sorted(train + val) == list(range(200)) and test == list(range(200, 240))
    assert splits.train.labels.tolist() == [i % 10 for i in train]
    subset = load_splits(config(fashion, **{"data.train_subset": 50, "train.seed": 7}))
    assert all_ids(subset.val) == val  # neither train.seed nor the subset moves it
    assert len(subset.train) == 50 and set(all_ids(subset.train)) < set(train)
    assert all_ids(subset.train) == train[:50]


def test_image_size_resizes_once(fashion):
    splits = load_splits(config(fashion, **{"data.image_size": 4}))
    assert splits.spec.index_shape == (4, 4)
    batch = next(splits.val.batches(8, seed=0, epoch=0, train=False))
    assert batch.inputs.shape == (8, 16, 1) and batch.positions.shape == (16, 2)


def test_eval_keeps_every_example_in_order(fashion):
    val = load_splits(config(fashion)).val
    batches = list(val.batches(8, seed=3, epoch=5, train=False))
    assert [len(b.labels) for b in batches] == [8, 8, 8, 6] and val.num_batches(8, train=False) == 4
    assert torch.equal(torch.cat([b.labels for b in batches]), val.labels)


def test_train_order_is_a_function_of_seed_and_epoch(fashion):
    train = load_splits(config(fashion)).train

    def order(seed, epoch):
        return all_ids(train, 32, seed=seed, epoch=epoch, train=True)

    first = order(0, 0)
    assert len(first) == len(set(first)) == 5 * 32 == train.num_batches(32, train=True) * 32
    assert order(0, 0) == first and order(0, 1) != first and order(1, 0) != first
    assert first != all_ids(train, 32)[:160]  # shuffled


def test_resume_reproduces_the_tail(fashion):
    cfg = config(fashion, **{"data.augment": "crop", "encoding.positions": "image_relative",
                             "data.permute": True, "data.hflip": True})
    train = load_splits(cfg).train
    full = list(train.batches(16, seed=4, epoch=2, train=True))
    tail = list(train.batches(16, seed=4, epoch=2, train=True, start_batch=3))
    assert len(full) == 10 and full[0].positions.shape == (16, 64, 2)
    same(full[3:], tail)
    assert list(train.batches(16, seed=4, epoch=2, train=True, start_batch=10)) == []


def test_ddp_shards_are_disjoint_and_match_one_process(fashion):
    cfg = config(fashion, **{"data.augment": "crop", "encoding.positions": "image_relative",
                             "data.hflip": True})
    splits = load_splits(cfg)
    train, val = splits.train, splits.val
    kw = dict(seed=1, epoch=3, train=True)
    single = list(train.batches(32, **kw))
    ranks = [list(train.batches(16, rank=r, world_size=2, **kw)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == train.num_batches(16, 2, train=True)
    for whole, a, b in zip(single, *ranks, strict=True):
        assert not set(ids(a)) & set(ids(b))
        for field in range(3):  # same examples, same crops, as one process with 2x batch
            assert torch.equal(whole[field], torch.cat([a[field], b[field]]))
    # evaluation: 30 examples over 3 ranks x 4, every example exactly once, equal counts
    shards = [list(val.batches(4, seed=0, epoch=0, train=False, rank=r, world_size=3))
              for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3] == [val.num_batches(4, 3, train=False)] * 3
    seen = [i for s in shards for b in s for i in ids(b)]
    assert sorted(seen) == sorted(all_ids(val))
    # 2 examples left for 4 ranks: equal counts still, so two ranks get an empty last batch
    last = [list(val.batches(7, seed=0, epoch=0, train=False, rank=r, world_size=4))[-1]
            for r in range(4)]
    assert sorted(len(b.labels) for b in last) == [0, 0, 1, 1]
    assert {b.inputs.shape[1:] for b in last} == {(64, 1)}


def test_batch_larger_than_split_is_a_config_error(fashion):
    train = load_splits(config(fashion, **{"data.train_subset": 20})).train
    with pytest.raises(ConfigError, match="fewer than one global batch of 32"):
        next(train.batches(16, seed=0, epoch=0, train=True, world_size=2))


@pytest.mark.parametrize("overrides, message", [
    ({"data.val_size": 200}, "data.val_size=200 leaves none of the 200"),
    ({"data.train_subset": 171}, "data.train_subset=171 exceeds the 170"),
])
def test_split_sizes_are_validated(fashion, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_splits(config(fashion, **overrides))


# ------------------------------------------------------------------ permutation


def test_permutation_moves_inputs_and_positions_together(tmp_path):
    rng = np.random.default_rng(0)
    root = write_fashion(tmp_path, rng.integers(0, 256, (64, 8, 8)),
                         rng.integers(0, 256, (16, 8, 8)))
    cfg = config(root, **{"data.val_size": 8})
    plain, permuted = load_splits(cfg), load_splits(cfg.replace({"data.permute": True}))
    a = next(plain.test.batches(16, seed=0, epoch=0, train=False))
    b = next(permuted.test.batches(16, seed=0, epoch=0, train=False))
    # where each permuted element came from, read off its position
    source = (b.positions[:, None] == a.positions[None]).all(-1).float().argmax(1)
    assert sorted(source.tolist()) == list(range(64)) and source.tolist() != list(range(64))
    assert torch.equal(b.positions, a.positions[source])
    assert torch.equal(b.inputs, a.inputs[:, source])
    # the same permutation on training batches, with per-example crop positions
    crop = {"data.augment": "crop", "encoding.positions": "image_relative"}
    kw = dict(seed=5, epoch=1, train=True)
    c = next(load_splits(cfg.replace(crop)).train.batches(8, **kw))
    d = next(load_splits(cfg.replace({**crop, "data.permute": True})).train.batches(8, **kw))
    assert torch.equal(d.inputs, c.inputs[:, source])
    assert torch.equal(d.positions, c.positions[:, source])
    other = load_splits(cfg.replace({"data.permute": True, "data.permute_seed": 1}))
    e = next(other.test.batches(16, seed=0, epoch=0, train=False))
    assert not torch.equal(e.positions, b.positions)


# ------------------------------------------------------------------ crops


def test_crop_samples_the_image_at_its_positions():
    size = 12
    grid = grid_positions((size, size)).reshape(size, size, 2)
    images = grid.permute(2, 0, 1).expand(64, 2, size, size)  # channels: y and x coordinates
    crops, boxes = random_resized_crop(images, 0.3, rng=torch.Generator().manual_seed(0))
    positions = box_positions(boxes, (size, size))
    assert torch.allclose(crops.permute(0, 2, 3, 1).reshape(64, -1, 2), positions, atol=1e-5)
    assert boxes.min() >= -1 and boxes.max() <= 1
    assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_crop_boxes_follow_scale_and_ratio():
    boxes = crop_boxes(torch.rand(2000, 4, generator=torch.Generator().manual_seed(1)), 0.35)
    height, width = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    area = height * width
    assert area.min() >= 0.35 - 1e-6 and area.max() <= 1 + 1e-6 and area.max() > 0.95
    inside = (height < 1) & (width < 1)
    ratio = width[inside] / height[inside]
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert inside.float().mean() > 0.7  # the rest: large crops clipped to the image


def ramp_fashion(tmp_path):
    """Pixel value = 255 * column / 7: the value says where in the image a pixel came from."""
    images = np.broadcast_to(np.round(np.arange(8) * 255 / 7), (40, 8, 8))
    return write_fashion(tmp_path, images, images[:8])


def test_image_relative_positions_lie_in_the_crop(tmp_path):
    cfg = config(ramp_fashion(tmp_path), **{"data.val_size": 8, "data.augment": "crop",
                                            "encoding.positions": "image_relative"})
    splits = load_splits(cfg)
    batch = next(splits.train.batches(32, seed=0, epoch=0, train=True))
    assert batch.positions.shape == (32, 64, 2)
    grid = batch.positions.reshape(32, 8, 8, 2)
    low, high = grid.amin(dim=(1, 2)), grid.amax(dim=(1, 2))
    assert low.min() >= -1 and high.max() <= 1
    area = (high - low).prod(-1) / 4
    assert area.min() >= 0.35 - 1e-5 and area.max() < 1  # real crops, of the allowed scale
    # a regular grid spanning the box: rows share y, columns share x
    assert torch.equal(grid[..., 0], grid[:, :, :1, 0].expand(-1, -1, 8))
    assert torch.equal(grid[..., 1], grid[:, :1, :, 1].expand(-1, 8, -1))
    # the pixels really come from there: the ramp's value at each position
    expected = 127.5 * (batch.positions[..., 1] + 1)
    assert (raw(batch)[..., 0] - expected).abs().max() < 1.0
    # evaluation is not augmented
    test = next(splits.test.batches(8, seed=0, epoch=0, train=False))
    assert torch.equal(test.positions, grid_positions((8, 8)))
    assert torch.allclose(raw(test)[..., 0], 127.5 * (test.positions[:, 1] + 1), atol=0.5)


def test_crop_relative_positions_are_the_grid(tmp_path):
    cfg = config(ramp_fashion(tmp_path), **{"data.val_size": 8, "data.augment": "crop"})
    batch = next(load_splits(cfg).train.batches(32, seed=0, epoch=0, train=True))
    assert torch.equal(batch.positions, grid_positions((8, 8)))
    # yet the pixels are cropped: a crop narrower than the image spans less of the ramp
    span = raw(batch)[..., 0].amax(1) - raw(batch)[..., 0].amin(1)
    assert span.min() < 200


def test_hflip_mirrors_about_half_the_training_images(tmp_path):
    root = ramp_fashion(tmp_path)
    kw = dict(seed=0, epoch=0, train=True)
    plain = next(load_splits(config(root, **{"data.val_size": 8})).train.batches(32, **kw))
    splits = load_splits(config(root, **{"data.val_size": 8, "data.hflip": True}))
    batch = next(splits.train.batches(32, **kw))
    assert torch.equal(batch.positions, grid_positions((8, 8)))
    images, ramp = raw(batch)[..., 0].reshape(32, 8, 8), raw(plain)[..., 0].reshape(32, 8, 8)
    kept = (images - ramp).abs().amax(dim=(1, 2)) < 1e-3
    mirrored = (images - ramp.flip(2)).abs().amax(dim=(1, 2)) < 1e-3
    assert (kept ^ mirrored).all() and 8 <= mirrored.sum() <= 24
    test = next(splits.test.batches(8, seed=0, epoch=0, train=False))
    assert (raw(test)[..., 0].reshape(8, 8, 8).diff(dim=2) > 0).all()  # evaluation is not


def test_hflip_positions_are_those_of_the_mirrored_image(tmp_path):
    cfg = config(ramp_fashion(tmp_path), **{"data.val_size": 8, "data.augment": "crop",
                                            "encoding.positions": "image_relative",
                                            "data.hflip": True})
    batch = next(load_splits(cfg).train.batches(32, seed=0, epoch=0, train=True))
    x, red = batch.positions[..., 1], raw(batch)[..., 0]
    kept = (red - 127.5 * (x + 1)).abs().amax(1) < 1.0
    mirrored = (red - 127.5 * (1 - x)).abs().amax(1) < 1.0  # the ramp runs the other way
    assert (kept ^ mirrored).all() and 8 <= mirrored.sum() <= 24


def test_randaugment_without_torchvision_says_how_to_get_it(fashion, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ConfigError, match=r"pip install torchvision"):
        load_splits(config(fashion, **{"data.augment": "randaugment"}))


def test_randaugment_is_seeded_per_example(fashion, monkeypatch):
    """With a stand-in for torchvision's RandAugment (it draws from torch's global RNG and
    takes uint8 (C, H, W)): draws are reproducible, resumable and independent of sharding."""

    class RandAugment:
        def __call__(self, image):
            assert image.dtype == torch.uint8 and image.ndim == 3
            return (image.int() + torch.randint(0, 5, ())).clamp(max=255).byte()

    transforms = types.ModuleType("torchvision.transforms")
    transforms.RandAugment = RandAugment
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.transforms", transforms)
    cfg = config(fashion, **{"data.augment": "randaugment"})
    train = load_splits(cfg).train
    kw = dict(seed=0, epoch=0, train=True)
    full = list(train.batches(16, **kw))
    same(full, list(train.batches(16, **kw)))
    same(full[2:], list(train.batches(16, start_batch=2, **kw)))
    half = next(train.batches(8, rank=1, world_size=2, **kw))
    assert torch.equal(half.inputs, full[0].inputs[8:])
    cropped = next(load_splits(cfg.replace({"data.augment": "crop"})).train.batches(16, **kw))
    assert torch.equal(full[0].labels, cropped.labels)
    shifts = (raw(full[0]) - raw(cropped)).round().mean(dim=(1, 2))
    assert shifts.min() >= 0 and shifts.max() <= 4 and len(set(shifts.tolist())) > 1


# ------------------------------------------------------------------ CIFAR-10


def cifar_batch(first: int, count: int) -> dict:
    """R = column * 8, G = row * 8, B = example id; in CIFAR's planar (N, 3072) layout."""
    col, row = np.meshgrid(np.arange(32) * 8, np.arange(32) * 8)
    planes = [np.broadcast_to(col, (count, 32, 32)), np.broadcast_to(row, (count, 32, 32)),
              np.broadcast_to(np.arange(first, first + count)[:, None, None], (count, 32, 32))]
    data = np.stack(planes, axis=1).reshape(count, 3072).astype(np.uint8)
    return {b"batch_label": b"fixture", b"labels": [i % 10 for i in range(first, first + count)],
            b"data": data, b"filenames": [b"x.png"] * count}


@pytest.fixture
def cifar(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(5):
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(cifar_batch(4 * i, 4), 2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(20, 6), 2))
    return folder


def test_cifar10_pickle_batches(cifar):
    splits = load_splits(config(cifar.parent, **{"data.name": "cifar10", "data.val_size": 5,
                                                   "data.image_size": None}))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 5, 6)
    assert splits.spec.channels == 3 and splits.classes[0] == "airplane"
    batch = next(splits.test.batches(6, seed=0, epoch=0, train=False))
    assert batch.inputs.shape == (6, 1024, 3) and batch.positions.shape == (1024, 2)
    pixels = raw(batch, "cifar10").round().reshape(6, 32, 32, 3)
    cols, rows = torch.meshgrid(torch.arange(32) * 8., torch.arange(32) * 8., indexing="xy")
    assert torch.equal(pixels[..., 0], cols.expand(6, -1, -1))  # channel order R, G, B
    assert torch.equal(pixels[..., 1], rows.expand(6, -1, -1))
    assert pixels[..., 2].amax(dim=(1, 2)).tolist() == list(range(20, 26))
    assert batch.labels.tolist() == [i % 10 for i in range(20, 26)]


def test_cifar10_missing_or_malformed(cifar, tmp_path):
    with pytest.raises(ConfigError, match="cifar-10-python.tar.gz"):
        load_splits(load_config(overrides={"data.name": "cifar10"}))
    (cifar / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"expected data_batch_3 in .*cifar-10-batches-py"):
        load_splits(config(cifar, **{"data.name": "cifar10"}))
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (cifar / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR-10 python batch"):
        load_splits(config(cifar, **{"data.name": "cifar10"}))
    assert not marker.exists()
    (cifar / "data_batch_3").write_bytes(pickle.dumps(cifar_batch(0, 4), 2)[:-200])
    with pytest.raises(DataError, match="download the python version again"):
        load_splits(config(cifar, **{"data.name": "cifar10"}))


# ------------------------------------------------------------------ ImageFolder trees


def ramp_image(width: int, height: int, mode: str) -> Image.Image:
    """Red = 255 * x / (width - 1): a pixel's colour says where it was in the image."""
    red = np.broadcast_to(np.round(np.arange(width) * 255 / (width - 1)), (height, width))
    rgb = np.stack([red, np.full_like(red, 40), np.full_like(red, 200)], -1).astype(np.uint8)
    image = Image.fromarray(rgb)
    return image.convert("L") if mode == "L" else image


@pytest.fixture
def folder(tmp_path):
    for part, count in (("train", 4), ("val", 2)):
        for c, name in enumerate(("cat", "dog", "fish")):
            (tmp_path / part / name).mkdir(parents=True)
            for k in range(count):
                image = ramp_image(64 + 8 * k, 48 + 4 * c, "L" if k == 3 else "RGB")
                suffix = ".png" if k % 2 else ".JPEG"
                image.save(tmp_path / part / name / f"{k}{suffix}", quality=95)
    return tmp_path


def image_config(root, **overrides):
    return config(root, **{"data.name": "imagenet", "data.image_size": 16, "data.val_size": 3,
                           **overrides})


def test_image_folder_eval(folder):
    splits = load_splits(image_config(folder))
    assert splits.classes == ("cat", "dog", "fish") and splits.spec.num_classes == 3
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 6)
    batches = list(splits.test.batches(4, seed=0, epoch=0, train=False))
    assert [len(b.labels) for b in batches] == [4, 2]
    batch = batches[0]
    assert batch.inputs.shape == (4, 256, 3) and batch.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(batch.positions, grid_positions((16, 16)))
    pixels = raw(batch, "imagenet")
    assert (pixels[..., 1] - 40).abs().max() < 3 and (pixels[..., 2] - 200).abs().max() < 3
    red = pixels[..., 0].reshape(4, 16, 16)
    assert (red[:, :, 1:] > red[:, :, :-1]).all()  # the ramp survives, left to right
    assert 10 < red[:, :, 0].min() and red[:, :, -1].max() < 245  # centre crop cuts the ends


def test_image_folder_crops_are_deterministic_and_located(folder):
    cfg = image_config(folder, **{"data.augment": "crop", "encoding.positions": "image_relative"})
    kw = dict(seed=2, epoch=1, train=True)
    serial = list(load_splits(cfg).train.batches(4, **kw))
    workers = load_splits(cfg.replace({"data.num_workers": 2})).train.batches(4, **kw)
    same(serial, list(workers))
    same(serial[1:], list(load_splits(cfg).train.batches(4, start_batch=1, **kw)))
    batch = serial[0]
    assert batch.positions.shape == (4, 256, 2)
    assert batch.positions.min() >= -1 and batch.positions.max() <= 1
    assert (batch.positions.amax(1) - batch.positions.amin(1)).prod(-1).min() >= 4 * 0.35 - 1e-5
    # colour says where the pixel was: within a couple of source pixels of its position
    red = raw(batch, "imagenet")[..., 0]
    assert (red - 127.5 * (batch.positions[..., 1] + 1)).abs().max() < 12


def test_image_folder_hflip(folder):
    kw = dict(seed=0, epoch=0, train=True)
    for augment in ("none", "crop"):
        cfg = image_config(folder, **{"data.augment": augment, "data.hflip": True,
                                      "encoding.positions": "image_relative"})
        batches = list(load_splits(cfg).train.batches(4, **kw))
        same(batches, list(load_splits(cfg).train.batches(4, **kw)))
        pixels = torch.cat([raw(b, "imagenet") for b in batches])
        red = pixels[..., 0]
        slope = red.reshape(-1, 16, 16).diff(dim=2)
        mirrored = (slope < 0).all(dim=2).all(dim=1)
        assert ((slope > 0).all(dim=2).all(dim=1) ^ mirrored).all(), augment
        assert 0 < mirrored.sum() < len(red), augment
    # a crop's positions are those of the mirrored image: the ramp runs the other way
    x = torch.cat([b.positions for b in batches])[..., 1]
    expected = torch.where(mirrored[:, None], 127.5 * (1 - x), 127.5 * (x + 1))
    colour = (pixels[..., 1] - 40).abs().amax(1) < 3  # not the greyscale ("L") files
    assert colour.sum() >= 4 and (red - expected)[colour].abs().max() < 12


def test_image_folder_errors(folder, tmp_path):
    with pytest.raises(ConfigError, match="data.name=imagenet needs data.root"):
        load_splits(load_config(overrides={"data.name": "imagenet"}))
    with pytest.raises(DataError, match=r"nowhere/train does not exist.*train/<class>"):
        load_splits(image_config(tmp_path / "nowhere"))
    (folder / "val" / "bird").mkdir()
    with pytest.raises(DataError, match=r"class folders that train/ lacks: \['bird'\]"):
        load_splits(image_config(folder))
    (folder / "val" / "bird").rmdir()
    (folder / "val" / "cat" / "0.JPEG").write_bytes(b"not a jpeg")
    test = load_splits(image_config(folder)).test
    with pytest.raises(DataError, match=r"cannot decode image .*cat/0.JPEG"):
        list(test.batches(4, seed=0, epoch=0, train=False))


# ------------------------------------------------------------------ missing or malformed files


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_splits(config(tmp_path / "empty"))
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "empty") in message


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"plain bytes"), "not a readable gzip file"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(12))),
     r"not an IDX file .* 3 dimension"),
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-10])),
     r"declares shape \(200, 8, 8\) \(12800 bytes\) but the file holds 12790"),
])
def test_malformed_fashion_mnist(fashion, damage, message):
    damage(fashion / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=message):
        load_splits(config(fashion))


def test_mismatched_label_file(fashion):
    write_idx(fashion / "train-labels-idx1-ubyte.gz", np.zeros(199))
    with pytest.raises(DataError, match="200 images but .* 199 labels"):
        load_splits(config(fashion))
