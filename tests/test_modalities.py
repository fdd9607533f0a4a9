"""Every modality of the registry: embedded point sets and 1D series, and ModelNet40 HDF5
and AudioSet-style audio folders written here in their exact formats, each read back and
trained for a few steps from the CLI."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from experiments.cli import main
from experiments.config import load_config
from experiments.data import REGISTRY, input_spec, load_splits
from experiments.data.common import packed_positions
from experiments.engine import mean_average_precision
from experiments.errors import DataError
from perceiver_core import build_model
from perceiver_core.config import ConfigError

TINY = ["model.num_latents=8", "model.latent_channels=16", "model.latent_heads=2",
        "model.num_blocks=1", "model.self_attends_per_block=1", "model.num_cross_attends=1",
        "encoding.num_bands=4", "train.batch_size=8", "train.warmup_steps=0"]
KW = dict(seed=0, epoch=0)


def train_cli(tmp_path, *items: str, preset: str | None = None) -> dict:
    out = tmp_path / "run"
    args = ["train", *(["--preset", preset] if preset else []), *TINY, *items, "--out", str(out)]
    assert main(args) == 0
    return json.loads((out / "result.json").read_text())


def attention_cli(tmp_path) -> list[str]:
    """The attention command on train_cli's run: the PNG files it wrote."""
    assert main(["attention", str(tmp_path / "run"), "--images", "1", "--latents", "4",
                 "--out", str(tmp_path / "maps")]) == 0
    return sorted(p.name for p in (tmp_path / "maps").glob("*.png"))


def test_every_registered_data_set_validates_and_builds_a_model():
    for name, entry in REGISTRY.items():
        cfg = load_config(None, {"data.name": name})
        spec = input_spec(cfg.data)
        assert spec == entry.spec(cfg.data)
        positions = spec.example_positions()
        assert positions.shape == (spec.num_inputs, len(spec.index_shape))
        assert positions.abs().max() <= 1
    with pytest.raises(ConfigError, match="fashion_mnist_points.*modelnet40"):
        load_splits(load_config(None, {"data.name": "mnist"}))
    with pytest.raises(ConfigError, match="data.augment='crop' does not apply"):
        load_splits(load_config(None, {"data.name": "japanese_vowels", "data.augment": "crop"}))
    with pytest.raises(ConfigError, match="data.num_points=64 applies to point sets"):
        load_splits(load_config(None, {"data.num_points": 64}))
    with pytest.raises(ConfigError, match="data.modality=video selects the clips"):
        load_splits(load_config(None, {"data.modality": "video"}))


# ---------------------------------------------------------------------------------------
# Fashion-MNIST as 2D point sets (embedded)


def points_config(root, *items):
    return load_config(None, [f"data.root={root}", "data.val_size=100", *items],
                       preset="fashion-mnist-points")


def test_fashion_points_sample_bright_pixels_with_jitter_in_no_grid_order(tiny_fashion_mnist):
    splits = load_splits(points_config(tiny_fashion_mnist, "data.num_points=64"))
    assert splits.spec.num_points == 64 and splits.spec.index_shape == (28, 28)
    batch = next(splits.test.batches(16, train=False, **KW))
    assert batch.inputs.shape == (16, 64, 1) and batch.positions.shape == (16, 64, 2)
    assert batch.positions.abs().max() <= 1 and batch.inputs.min() > 0  # never a black pixel
    # Each point lies within half a pixel of the pixel whose intensity it carries.
    images = splits.test.pixels[:16].reshape(16, 28, 28).float() / 255
    cells = ((batch.positions + 1) / 2 * 27).round().long()
    assert torch.equal(images[torch.arange(16)[:, None], cells[..., 0], cells[..., 1]],
                       batch.inputs[..., 0])
    offsets = (batch.positions + 1) / 2 * 27 - cells
    assert offsets.abs().max() <= 0.5 and offsets.std() > 0.2  # sub-pixel jitter
    rows = cells[..., 0] * 28 + cells[..., 1]
    assert not all(bool((r.diff() >= 0).all()) for r in rows)  # not in raster order
    # Evaluation sets are fixed; training draws new points every step.
    again = next(splits.test.batches(16, train=False, **KW))
    assert torch.equal(again.positions, batch.positions)
    first, second = list(splits.train.batches(16, train=True, **KW))[:2]
    redo = next(splits.train.batches(16, train=True, **KW))
    assert torch.equal(redo.positions, first.positions)
    assert not torch.equal(first.positions, second.positions)


def test_shuffling_the_points_leaves_the_logits_equal(tiny_fashion_mnist):
    cfg = points_config(tiny_fashion_mnist, "data.num_points=64", *TINY)
    splits = load_splits(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.encoding, splits.spec.channels,
                        splits.spec.index_shape).eval()
    batch = next(splits.test.batches(8, train=False, **KW))
    shuffle = torch.randperm(64)
    with torch.no_grad():
        logits = model(batch.inputs, batch.positions)
        shuffled = model(batch.inputs[:, shuffle], batch.positions[:, shuffle])
    torch.testing.assert_close(shuffled, logits, rtol=1e-5, atol=1e-5)
    assert logits.std(0).max() > 0  # the examples differ, so the check is not vacuous


def test_points_train_from_the_cli(tiny_fashion_mnist, tmp_path):
    result = train_cli(tmp_path, f"data.root={tiny_fashion_mnist}", "data.val_size=100",
                       "data.num_points=64", "train.max_steps=30", "train.lr=0.01",
                       preset="fashion-mnist-points")
    assert result["status"] == "completed" and result["metric"] == "acc"
    assert result["final"]["test_acc"] > 0.2  # chance is 0.1
    # Points are drawn as a scatter coloured by each latent's attention logit.
    assert attention_cli(tmp_path) == ["attention_logits_closeups_0.png",
                                       "attention_logits_overview_0.png"]


def test_learned_positions_are_refused_for_point_sets(tiny_fashion_mnist, tmp_path, capsys):
    assert main(["train", "--preset", "fashion-mnist-points", f"data.root={tiny_fashion_mnist}",
                 "encoding.kind=learned", "--out", str(tmp_path / "run")]) == 2
    assert "unordered point set" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# JapaneseVowels (embedded through the sktime wheel)


def test_japanese_vowels_is_read_from_the_installed_wheel():
    splits = load_splits(load_config(preset="japanese-vowels"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (220, 50, 370)
    assert splits.classes == tuple("123456789")
    batch = next(splits.test.batches(370, train=False, **KW))
    assert batch.inputs.shape == (370, 29, 12) and batch.positions.shape == (29, 1)
    assert torch.bincount(batch.labels).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    train = next(splits.train.batches(220, train=False, **KW)).inputs
    assert train.mean().abs() < 0.2 and 0.8 < train.std() < 1.2  # standardised


def test_japanese_vowels_train_from_the_cli(tmp_path):
    result = train_cli(tmp_path, "train.max_steps=40", "train.lr=0.01",
                       preset="japanese-vowels")
    assert result["status"] == "completed"
    assert result["final"]["test_acc"] > 0.5  # chance is about 0.11
    assert len(attention_cli(tmp_path)) == 2  # maps drawn as lines over time


def test_malformed_ts_file_names_the_line(tmp_path):
    for part in ("TRAIN", "TEST"):
        (tmp_path / f"JapaneseVowels_{part}.ts").write_text(
            "@classLabel true 1 2\n@data\n" + ",".join(["0.5"] * 4) + ":3\n")
    with pytest.raises(DataError, match=r"JapaneseVowels_TRAIN.ts:3: expected 12 dim"):
        load_splits(load_config(None, [f"data.root={tmp_path}"], preset="japanese-vowels"))


# ---------------------------------------------------------------------------------------
# ModelNet40 in the modelnet40_ply_hdf5_2048 layout


def shapes(count: int, points: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Points on a sphere (class 0), a cube's surface (1) or a segment (2), in [-1, 1]."""
    labels = rng.integers(0, 3, count)
    out = rng.normal(size=(count, points, 3))
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    cube = out / np.abs(out).max(-1, keepdims=True)
    segment = np.zeros_like(out)
    segment[..., 0] = rng.uniform(-1, 1, (count, points))
    data = np.where(labels[:, None, None] == 0, out, np.where(labels[:, None, None] == 1,
                                                            cube, segment))
    return (0.9 * data).astype(np.float32), labels.astype(np.uint8)[:, None]


@pytest.fixture
def modelnet(tmp_path):
    import h5py

    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    rng = np.random.default_rng(0)
    files = {"train": ["ply_data_train0.h5", "ply_data_train1.h5"], "test": ["ply_data_test0.h5"]}
    written = {}
    for part, names in files.items():
        for name in names:
            data, label = shapes(48, 64, rng)
            with h5py.File(root / name, "w") as f:
                f["data"], f["label"] = data, label
            written[name] = (data, label)
        (root / f"{part}_files.txt").write_text(
            "".join(f"data/modelnet40_ply_hdf5_2048/{n}\n" for n in names))
    (root / "shape_names.txt").write_text("".join(f"shape{i}\n" for i in range(40)))
    return root, written


def test_modelnet40_is_read_back_and_trains_from_the_cli(modelnet, tmp_path):
    root, written = modelnet
    items = [f"data.root={root}", "data.val_size=16", "data.num_points=32"]
    splits = load_splits(load_config(None, [*items, *TINY], preset="modelnet40"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 16, 48)
    assert len(splits.classes) == 40 and splits.spec.num_points == 32
    test = next(splits.test.batches(48, train=False, **KW))
    data, label = written["ply_data_test0.h5"]
    assert torch.equal(test.positions, torch.from_numpy(data[:, :32]))  # the first 32 points
    assert torch.equal(test.inputs, test.positions)  # xyz are features and positions
    assert test.labels.tolist() == label[:, 0].tolist()
    first, second = (next(splits.train.batches(8, train=True, seed=0, epoch=e))
                     for e in (0, 1))
    assert first.positions.shape == (8, 32, 3) and not torch.equal(first.positions,
                                                                   second.positions)
    result = train_cli(tmp_path, *items, "train.max_steps=6", "data.augment=scale",
                       "train.epochs=1", preset="modelnet40")
    assert result["status"] == "completed" and 0 <= result["final"]["test_acc"] <= 1


@pytest.mark.parametrize("damage, message", [
    ("keys", r"train1.h5: it holds keys \['label', 'points'\], not 'data' and 'label'"),
    ("list", r"train_files.txt is missing"),
    ("labels", r"train1.h5: labels span 0..41 but shape_names.txt names 40 classes"),
    ("garbage", r"train1.h5 is not a readable HDF5 file"),
])
def test_malformed_modelnet40_is_an_error_before_training(modelnet, tmp_path, damage, message,
                                                          capsys):
    import h5py

    root, _ = modelnet
    target = root / "ply_data_train1.h5"
    if damage == "keys":
        with h5py.File(target, "w") as f:
            f["points"], f["label"] = np.zeros((2, 64, 3), np.float32), np.zeros((2, 1))
    elif damage == "list":
        (root / "train_files.txt").unlink()
    elif damage == "labels":
        with h5py.File(target, "w") as f:
            f["data"], f["label"] = np.zeros((2, 64, 3), np.float32), np.array([[0], [41]])
    else:
        target.write_bytes(b"not hdf5")
    out = tmp_path / "run"
    assert main(["train", "--preset", "modelnet40", f"data.root={root}", "data.val_size=16",
                 "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# Audio folders with AudioSet-style labels; multi-label mAP


def test_mean_average_precision_matches_hand_computed_values():
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.float)
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.2], [0.1, 0.7, 0.9], [0.5, 0.3, 0.1]])
    # class 0: positives ranked 1st and 4th -> (1 + 2/4) / 2; class 1: ranked 1st, 2nd -> 1;
    # class 2 has no positive and is left out.
    assert mean_average_precision(scores, targets) == pytest.approx(((1 + 2 / 4) / 2 + 1) / 2)
    assert mean_average_precision(scores, torch.zeros(4, 3)) is None


CLASSES = [("/m/tone_a", "Low tone"), ("/m/tone_b", "High tone"), ("/m/noise", "Noise")]


@pytest.fixture
def audio_folder(tmp_path):
    """Clips of a low tone, a high tone and/or noise at 8 kHz, 0.25 s, labelled in
    AudioSet's CSV layout (comment header, quoted label lists)."""
    import soundfile

    root = tmp_path / "audioset"
    (root / "audio").mkdir(parents=True)
    with open(root / "class_labels_indices.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([i, mid, name] for i, (mid, name) in enumerate(CLASSES))
    rng = np.random.default_rng(0)
    time = np.arange(2000) / 8000
    for part, count in (("train", 40), ("test", 12)):
        lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
                 f"# num_ytids={count}, num_segs={count}",
                 "# YTID, start_seconds, end_seconds, positive_labels"]
        for i in range(count):
            ytid = f"{part}{i:03d}"
            chosen = [c for c in range(3) if rng.random() < 0.5] or [2]
            wave = sum({0: np.sin(2 * np.pi * 440 * time), 1: np.sin(2 * np.pi * 2000 * time),
                        2: rng.normal(0, 0.3, len(time))}[c] for c in chosen)
            soundfile.write(root / "audio" / f"{ytid}.wav", (0.3 * wave).astype(np.float32),
                            8000, subtype="PCM_16")
            labels = ",".join(CLASSES[c][0] for c in chosen)
            lines.append(f'{ytid}, 30.000, 40.000, "{labels}"')
        (root / f"{part}.csv").write_text("\n".join(lines) + "\n")
    return root


AUDIO = ["data.sample_rate=8000", "data.clip_seconds=0.25", "data.val_size=8",
         "model.num_classes=3"]


def test_audio_folder_is_read_back_multi_hot(audio_folder):
    import soundfile

    splits = load_splits(load_config(None, [f"data.root={audio_folder}", *AUDIO, *TINY],
                                     preset="audioset"))
    assert splits.spec.multi_label and splits.spec.metric == "map"
    assert splits.classes == ("Low tone", "High tone", "Noise")
    test = next(splits.test.batches(12, train=False, **KW))
    assert test.inputs.shape == (12, 2000, 1) and test.positions.shape == (2000, 1)
    wave, _ = soundfile.read(audio_folder / "audio" / "test000.wav", dtype="float32")
    torch.testing.assert_close(test.inputs[0, :, 0], torch.from_numpy(wave))
    row = next(r for r in open(audio_folder / "test.csv") if r.startswith("test000"))
    expected = [float(mid in row) for mid, _ in CLASSES]
    assert test.labels[0].tolist() == expected
    # A clip at another rate is resampled: 16 kHz doubles the samples, 0.5 s is zero-padded.
    padded = load_splits(load_config(None, [f"data.root={audio_folder}", *AUDIO,
                                            "data.sample_rate=16000", "data.clip_seconds=0.5"],
                                     preset="audioset"))
    inputs = next(padded.test.batches(1, train=False, **KW)).inputs[0, :, 0]
    assert inputs.shape == (8000,) and inputs[4000:].abs().max() == 0


@pytest.mark.parametrize("features", ["raw", "mel"])
def test_audio_trains_from_the_cli_with_map(audio_folder, tmp_path, features):
    result = train_cli(tmp_path, f"data.root={audio_folder}", *AUDIO,
                       f"data.audio_features={features}", "data.mel_bands=16",
                       "train.max_steps=8", "train.eval_every=4", preset="audioset")
    assert result["status"] == "completed" and result["metric"] == "map"
    final = result["final"]
    assert 0 < final["val_map"] <= 1 and 0 < final["test_map"] <= 1
    assert final["train_acc"] is None and "test_acc" not in final
    assert result["best"]["val_map"] >= final["val_map"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [4, 8] and all("val_map" in r for r in rows)
    assert main(["figures", str(tmp_path), "--out", str(tmp_path / "figures")]) == 0
    assert "Accuracy is the test mAP" in (tmp_path / "figures" / "index.md").read_text()
    assert (tmp_path / "figures" / "training_curves.png").is_file()


def test_mel_spectrogram_has_time_by_frequency_positions(audio_folder):
    cfg = load_config(None, [f"data.root={audio_folder}", *AUDIO, "data.audio_features=mel",
                             "data.mel_bands=16"], preset="audioset")
    splits = load_splits(cfg)
    assert splits.spec.index_shape == (26, 16)  # 1 + 2000 // 80 frames of 10 ms, 16 bands
    batch = next(splits.test.batches(4, train=False, **KW))
    assert batch.inputs.shape == (4, 26 * 16, 1) and batch.positions.shape == (26 * 16, 2)
    # The high tone's energy sits in higher mel bands than the low tone's.
    image = batch.inputs[..., 0].reshape(4, 26, 16).mean(1)
    low = [i for i in range(4) if batch.labels[i].tolist() == [1, 0, 0]]
    high = [i for i in range(4) if batch.labels[i].tolist() == [0, 1, 0]]
    for i in low:
        assert image[i].argmax() < 8
    for i in high:
        assert image[i].argmax() >= 8


@pytest.mark.parametrize("damage, message", [
    ("decode", "cannot decode .*train000.wav"),
    ("label", r"row 2 \(train001\) names unknown classes \['/m/cat'\]"),
    ("missing", "no audio file for segment train002"),
])
def test_malformed_audio_is_an_error_before_training(audio_folder, tmp_path, damage, message,
                                                     capsys):
    if damage == "decode":
        (audio_folder / "audio" / "train000.wav").write_bytes(b"RIFF not really a wave")
    elif damage == "label":
        text = (audio_folder / "train.csv").read_text().splitlines()
        text[4] = 'train001, 0.000, 10.000, "/m/cat"'
        (audio_folder / "train.csv").write_text("\n".join(text) + "\n")
    else:
        (audio_folder / "audio" / "train002.wav").unlink()
    out = tmp_path / "run"
    assert main(["train", "--preset", "audioset", f"data.root={audio_folder}", *AUDIO,
                 "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# Video clips (PyAV) with 3D positions and space-time patching


@pytest.fixture
def video_folder(audio_folder):
    """The audio fixture's segments as 6-frame 24x32 mp4 clips: a red clip for the low
    tone, a bright one for the high tone, a frame-by-frame brightening one for noise."""
    import av

    (audio_folder / "video").mkdir()
    for part in ("train", "test"):
        for line in (audio_folder / f"{part}.csv").read_text().splitlines():
            if line.startswith("#"):
                continue
            ytid, labels = line.split(",")[0], line.partition('"')[2]
            with av.open(str(audio_folder / "video" / f"{ytid}.mp4"), "w") as container:
                stream = container.add_stream("mpeg4", rate=6)
                stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
                for t in range(6):
                    frame = np.full((24, 32, 3), 40, np.uint8)
                    frame[..., 0] += 160 * ("/m/tone_a" in labels)
                    frame += np.uint8(100 * ("/m/tone_b" in labels))
                    frame[:, :, 1] += np.uint8(20 * t * ("/m/noise" in labels))
                    image = av.VideoFrame.from_ndarray(frame, format="rgb24")
                    for packet in stream.encode(image):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    return audio_folder


VIDEO = ["data.modality=video", "data.image_size=8", "data.video_frames=4", "data.val_size=8",
         "model.num_classes=3"]


def test_video_clips_are_read_back_with_space_time_positions(video_folder):
    cfg = load_config(None, [f"data.root={video_folder}", *VIDEO], preset="audioset")
    splits = load_splits(cfg)
    test = next(splits.test.batches(12, train=False, **KW))
    assert test.inputs.shape == (12, 4 * 8 * 8, 3) and test.positions.shape == (256, 3)
    assert test.positions[0].tolist() == [-1, -1, -1] and test.positions[-1].tolist() == [1, 1, 1]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    rgb = (test.inputs * std + mean) * 255  # back to pixels
    red = test.labels[:, 0] == 1
    assert (rgb[red, :, 0].mean(1) > 150).all() and (rgb[~red, :, 0].mean(1) < 180).all()
    noise = (test.labels[:, 2] == 1) & (test.labels[:, 1] == 0)
    green = rgb[noise].reshape(-1, 4, 64, 3)[..., 1].mean(-1)  # per frame: brightening
    assert (green.diff(dim=1) > 10).all()
    patched = load_splits(cfg.replace({"data.patch_size": 4, "data.patch_frames": 2}))
    blocks = next(patched.test.batches(12, train=False, **KW))
    assert blocks.inputs.shape == (12, 2 * 2 * 2, 2 * 4 * 4 * 3)
    assert blocks.positions.shape == (8, 3)
    # The first block holds frames 0-1, rows 0-3, columns 0-3 of the unpatched clip.
    first = test.inputs.reshape(12, 4, 8, 8, 3)[:, :2, :4, :4].reshape(12, -1)
    torch.testing.assert_close(blocks.inputs[:, 0], first)


def test_video_trains_from_the_cli(video_folder, tmp_path):
    result = train_cli(tmp_path, f"data.root={video_folder}", *VIDEO, "data.patch_size=2",
                       "train.max_steps=4", preset="audioset")
    assert result["status"] == "completed" and 0 < result["final"]["test_map"] <= 1
    assert len(attention_cli(tmp_path)) == 2


def test_video_maps_are_drawn_as_frames_side_by_side():
    from analysis.report.attention import layout
    from perceiver_core.position import grid_positions

    lay = layout(grid_positions((3, 2, 4)), (3, 2, 4))
    assert lay.shape == (2, 12)  # 3 frames of 2 x 4, left to right
    frames = lay.image(np.arange(24))
    assert frames[:, 4:8].tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]  # frame 1


def test_video_errors_name_the_clip_and_the_fix(video_folder, tmp_path, capsys):
    with pytest.raises(ConfigError, match="needs data.image_size"):
        input_spec(load_config(None, [*VIDEO, "data.image_size=null"], preset="audioset").data)
    with pytest.raises(ConfigError, match="must be divisible by data.patch_frames=3"):
        input_spec(load_config(None, [*VIDEO, "data.patch_frames=3"], preset="audioset").data)
    (video_folder / "video" / "train003.mp4").write_bytes(b"\x00" * 64)
    assert main(["train", "--preset", "audioset", f"data.root={video_folder}", *VIDEO,
                 "--out", str(tmp_path / "run")]) == 2
    assert re.search(r"cannot decode video .*train003.mp4", capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# Audio + video: one Perceiver over both modalities


def test_multimodal_encoding_pads_with_modality_embeddings_and_counts_flops_exactly():
    from perceiver_core import count_flops
    from perceiver_core.config import EncodingConfig, ModelConfig
    from perceiver_core.multimodal import MultimodalEncoding
    from perceiver_core.position import PositionEncoding

    model_cfg = ModelConfig(num_latents=8, latent_channels=16, latent_heads=2, num_blocks=2,
                            self_attends_per_block=1, num_cross_attends=2, num_classes=5)
    encoding = EncodingConfig(num_bands=3)
    modalities = ((1, (40,)), (12, (2, 4, 4)))  # audio samples; 2x4x4 video patches of 12
    torch.manual_seed(0)
    model = build_model(model_cfg, encoding, 12, (72,), modalities)
    positions = packed_positions([(40,), (2, 4, 4)])
    inputs = torch.randn(2, 72, 12)
    inputs[:, :40, 1:] = 0  # audio has one channel; the rest is padding
    assert isinstance(model.position, MultimodalEncoding)
    x = model.position(inputs, positions)
    # audio: 1 + 1*(2*3+1) = 8 channels; video: 12 + 3*(2*3+1) = 33; common = 33 + 4.
    assert x.shape == (2, 72, 37)
    audio = PositionEncoding(encoding, (40,))(inputs[:, :40, :1], positions[:40, :1])
    torch.testing.assert_close(x[:, :40, :8], audio)
    assert torch.equal(x[0, :40, 8:], x[1, 39:40, 8:].expand(40, -1))  # one learned embedding
    assert torch.equal(x[:, 40:, 33:], model.position.embeddings[1].expand(2, 32, 4))
    counts = count_flops(model, inputs[:1], positions)
    assert counts["unsupported_ops"] == {}
    # After the encoding the model is a plain Perceiver over (72, 37): the same FLOPs.
    plain = build_model(model_cfg, EncodingConfig(kind="none"), 37, (72,))
    assert counts["flops"] == count_flops(plain, x[:1].detach(), positions)["flops"]
    embeddings = sum(p.numel() for p in model.position.parameters())
    assert counts["params"] == sum(p.numel() for p in plain.parameters()) + embeddings


def test_audio_and_video_train_as_one_input_from_the_cli(video_folder, tmp_path):
    items = [f"data.root={video_folder}", *VIDEO, *AUDIO, "data.modality=audio+video",
             "data.patch_size=2"]
    splits = load_splits(load_config(None, items, preset="audioset"))
    assert splits.spec.modalities == ((1, (2000,)), (12, (4, 4, 4)))
    batch = next(splits.test.batches(3, train=False, **KW))
    assert batch.inputs.shape == (3, 2064, 12) and batch.positions.shape == (2064, 3)
    assert batch.inputs[:, :2000, 1:].abs().max() == 0  # audio zero-padded to 12 channels
    assert batch.positions[:2000, 1:].abs().max() == 0
    result = train_cli(tmp_path, *items, "train.max_steps=4", preset="audioset")
    assert result["status"] == "completed" and 0 < result["final"]["test_map"] <= 1
    assert result["flops"] > 0
    assert attention_cli(tmp_path) == [  # each modality on its own positions
        f"attention_logits_modality{k}_{kind}_0.png" for k in (1, 2)
        for kind in ("closeups", "overview")]
