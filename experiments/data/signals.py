"""1D signals: the embedded JapaneseVowels time series and audio folders (AudioSet layout).

A signal is a grid in time, so its positions are shared by the batch: (T, 1) for raw
samples or a time series, (frames x mel bands, 2) for a mel spectrogram (paper sec. 4.2:
the same Perceiver, only the position features change).

JapaneseVowels (UCI; Kudo, Toyama and Shimbo 1999: nine speakers, 12 LPC cepstrum
coefficients per frame, 7 to 29 frames per utterance) ships inside the `sktime` wheel
(BSD-3), which the set-up installs, so it is present on every machine with no download.
Its .ts files are read here directly (a plain text format) instead of through sktime's
loader, which returns nested pandas frames and imports all of sktime. Utterances are
resampled linearly to the longest length, 29 frames, so a batch is one (B, 29, 12) array
with one time grid (the Perceiver has no padding mask).

Audio: a folder with AudioSet-style segment CSVs (YTID, start_seconds, end_seconds,
"label,label"), AudioSet's class_labels_indices.csv and the clips as audio/<YTID>.wav or
.flac (already cut to their segment, as the download tools write them). Clips are decoded
with soundfile, mixed to mono, resampled with scipy's polyphase filter when their rate
differs, and cut or zero-padded to data.clip_seconds. Targets are multi-hot.
"""

from __future__ import annotations

import csv
import importlib.metadata
import math
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from experiments.data.common import ArraySplit, Batch, DataSet, InputSpec, Splits, carve
from experiments.data.video import VIDEO_EXTENSIONS, patch, read_frames, video_shape
from experiments.errors import DataError
from perceiver_core.config import ConfigError
from perceiver_core.position import grid_positions

if TYPE_CHECKING:
    from experiments.config import DataConfig, RunConfig

VOWELS = "JapaneseVowels"
VOWELS_IN_SKTIME = f"sktime/datasets/data/{VOWELS}"
VOWELS_FRAMES, VOWELS_CHANNELS, VOWELS_CLASSES = 29, 12, 9
AUDIO_HOW = ("expected data.root to hold class_labels_indices.csv (index,mid,display_name), "
             "train.csv and test.csv in AudioSet's segment layout (YTID, start_seconds, "
             "end_seconds, \"mid,mid\") and the clips as audio/<YTID>.wav or .flac "
             "(data.modality=audio) or video/<YTID>.mp4 (data.modality=video)")
AUDIO_EXTENSIONS = (".wav", ".flac")
AUDIOSET_CLASSES = 527
MEL_WINDOW_S, MEL_HOP_S = 0.025, 0.010  # 25 ms windows every 10 ms, the usual speech/audio frame


class SignalSplit(ArraySplit):
    """In-memory (N, *index_shape, C) arrays on one shared set of positions (by default
    the grid of index_shape)."""

    def __init__(self, inputs: Tensor, labels: Tensor, data: DataConfig,
                 positions: Tensor | None = None):
        super().__init__(labels, data)
        self.inputs = inputs.flatten(1, -2)  # (N, M, C)
        self.positions = grid_positions(inputs.shape[1:-1]) if positions is None else positions

    def batch(self, indices: Tensor, draws: None) -> Batch:
        return Batch(self.inputs[indices], self.positions, self.labels[indices])


# ---------------------------------------------------------------------------------------
# JapaneseVowels


def vowels_spec(data: DataConfig) -> InputSpec:
    return InputSpec(VOWELS_CHANNELS, (VOWELS_FRAMES,), VOWELS_CLASSES)


def vowels_folder(data: DataConfig) -> Path:
    if data.root is not None:
        return Path(data.root)
    try:
        return Path(importlib.metadata.distribution("sktime").locate_file(VOWELS_IN_SKTIME))
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"data.name=japanese_vowels reads {VOWELS} from the sktime package, "
                        "which is not installed: `pip install sktime` (or set data.root to "
                        f"a folder holding {VOWELS}_TRAIN.ts and {VOWELS}_TEST.ts)") from None


def read_ts(path: Path, channels: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(series (T_i, channels) each, their labels, the declared class labels) of a .ts file
    (sktime/aeon's text format: @-headers, then one 'v,v,...:v,v,...:label' line each)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist: expected the {VOWELS} .ts files there "
                        "(reinstall sktime, or fix data.root)")
    series, labels, declared, in_data = [], [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower().startswith("@classlabel"):
                declared = line.split()[2:]
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        try:
            values = [np.array(d.split(","), dtype=np.float32) for d in dims]
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not numbers ({exc})") from None
        if len(values) != channels or len({len(v) for v in values}) != 1:
            raise DataError(f"{path}:{number}: expected {channels} dimensions of one "
                            f"length, got lengths {[len(v) for v in values]}")
        if label not in declared:
            raise DataError(f"{path}:{number}: label {label!r} is not one of the declared "
                            f"@classLabel values {declared}")
        series.append(np.stack(values, axis=1))
        labels.append(label)
    if not series:
        raise DataError(f"{path} holds no series after @data")
    return series, labels, declared


def resample(series: np.ndarray, length: int) -> np.ndarray:
    """(T, C) -> (length, C) by linear interpolation over the same time span."""
    old = np.linspace(0, 1, len(series))
    new = np.linspace(0, 1, length)
    return np.stack([np.interp(new, old, c) for c in series.T], axis=1).astype(np.float32)


def vowels_splits(cfg: RunConfig) -> Splits:
    data, spec = cfg.data, vowels_spec(cfg.data)
    folder = vowels_folder(data)
    parts = {}
    for part in ("TRAIN", "TEST"):
        series, labels, classes = read_ts(folder / f"{VOWELS}_{part}.ts", spec.channels)
        if len(classes) != spec.num_classes:
            raise DataError(f"{folder}: {VOWELS} declares {len(classes)} classes, "
                            f"expected {spec.num_classes}")
        inputs = np.stack([resample(s, spec.index_shape[0]) for s in series])
        parts[part] = (torch.from_numpy(inputs),
                       torch.tensor([classes.index(y) for y in labels]))
    (inputs, labels), (test_inputs, test_labels) = parts["TRAIN"], parts["TEST"]
    # Per-channel standardisation with statistics of the whole training file, so every
    # split and subset is normalised identically.
    mean, std = inputs.mean((0, 1)), inputs.std((0, 1))
    inputs, test_inputs = (inputs - mean) / std, (test_inputs - mean) / std
    train, val = carve(len(inputs), data, str(folder))
    return Splits(SignalSplit(inputs[train], labels[train], data),
                  SignalSplit(inputs[val], labels[val], data),
                  SignalSplit(test_inputs, test_labels, data), spec, tuple(classes))


# ---------------------------------------------------------------------------------------
# Audio folders with AudioSet-style labels


def clip_samples(data: DataConfig) -> int:
    return round(data.clip_seconds * data.sample_rate)


def mel_geometry(data: DataConfig) -> tuple[int, int, int]:
    """(window, hop, frames) of the mel spectrogram of one clip (centred frames)."""
    window = round(MEL_WINDOW_S * data.sample_rate)
    hop = round(MEL_HOP_S * data.sample_rate)
    return window, hop, 1 + clip_samples(data) // hop


def audio_spec(data: DataConfig, classes: int = AUDIOSET_CLASSES) -> InputSpec:
    """The spec of data.modality: audio, video, or both packed along M (audio first)."""
    sound = ((mel_geometry(data)[2], data.mel_bands) if data.audio_features == "mel"
             else (clip_samples(data),))
    if data.modality == "audio":
        return InputSpec(1, sound, classes, multi_label=True)
    index_shape, channels = video_shape(data)
    if data.modality == "video":
        return InputSpec(channels, index_shape, classes, multi_label=True)
    modalities = ((1, sound), (channels, index_shape))
    total = math.prod(sound) + math.prod(index_shape)
    return InputSpec(channels, (total,), classes, multi_label=True, modalities=modalities)


def read_classes(root: Path) -> tuple[list[str], list[str]]:
    """(mids, display names) of class_labels_indices.csv, in index order."""
    path = root / "class_labels_indices.csv"
    if not path.is_file():
        raise DataError(f"{path} is missing; {AUDIO_HOW}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"index", "mid", "display_name"} <= set(rows[0]):
        raise DataError(f"{path}: expected the columns index,mid,display_name; {AUDIO_HOW}")
    rows.sort(key=lambda r: int(r["index"]))
    return [r["mid"] for r in rows], [r["display_name"] for r in rows]


def read_segments(path: Path, mids: list[str]) -> list[tuple[str, list[int]]]:
    """[(YTID, class indices)] of an AudioSet segment CSV ('#' lines are comments)."""
    if not path.is_file():
        raise DataError(f"{path} is missing; {AUDIO_HOW}")
    index = {mid: i for i, mid in enumerate(mids)}
    segments = []
    with open(path, newline="") as f:
        rows = csv.reader((line for line in f if not line.startswith("#")),
                          skipinitialspace=True)
        for number, row in enumerate(rows, 1):
            if not row:
                continue
            if len(row) != 4:
                raise DataError(f"{path}: row {number} has {len(row)} fields, expected 4 "
                                f"(YTID, start_seconds, end_seconds, labels); {AUDIO_HOW}")
            labels = [m.strip() for m in row[3].split(",") if m.strip()]
            unknown = [m for m in labels if m not in index]
            if unknown or not labels:
                raise DataError(f"{path}: row {number} ({row[0]}) names "
                                f"{'unknown classes ' + str(unknown) if unknown else 'no class'}"
                                "; every label must be a mid of class_labels_indices.csv")
            segments.append((row[0], [index[m] for m in labels]))
    if not segments:
        raise DataError(f"{path} lists no segments; {AUDIO_HOW}")
    return segments


def read_clip(path: Path, data: DataConfig) -> np.ndarray:
    """(samples,) float32 mono at data.sample_rate, cut or zero-padded to the clip length."""
    import soundfile
    from scipy.signal import resample_poly

    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"cannot decode {path} ({exc}): expected a WAV or FLAC file") from None
    audio = audio.mean(axis=1)
    if rate != data.sample_rate:
        ratio = Fraction(data.sample_rate, rate)
        audio = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
    samples = clip_samples(data)
    return np.pad(audio[:samples], (0, max(0, samples - len(audio))))


def find_clip(folder: Path, ytid: str, extensions: tuple[str, ...]) -> Path:
    for extension in extensions:
        if (folder / f"{ytid}{extension}").is_file():
            return folder / f"{ytid}{extension}"
    raise DataError(f"no {folder.name} file for segment {ytid}: expected {folder / ytid} "
                    f"with one of the extensions {', '.join(extensions)}")


def log_mel(waves: Tensor, data: DataConfig) -> Tensor:
    """(N, samples) -> (N, frames, mel_bands) log mel spectrogram: torch.stft for the power
    spectrum and librosa's Slaney mel filter bank (torchaudio has no build for this torch)."""
    import librosa

    window, hop, frames = mel_geometry(data)
    n_fft = 2 ** math.ceil(math.log2(window))
    spectrum = torch.stft(waves, n_fft, hop, window, torch.hann_window(window),
                          center=True, return_complex=True).abs() ** 2  # (N, freqs, frames)
    bank = torch.from_numpy(librosa.filters.mel(sr=data.sample_rate, n_fft=n_fft,
                                                n_mels=data.mel_bands))
    mel = torch.einsum("mf,nft->ntm", bank, spectrum)[:, :frames]
    return torch.log(mel + 1e-6)


def audio_features(waves: np.ndarray, data: DataConfig) -> Tensor:
    """(N, samples) waves -> (N, *index_shape, 1) inputs: raw samples, or a log mel
    spectrogram standardised per clip."""
    waves = torch.from_numpy(np.stack(waves)) if len(waves) else torch.zeros(0, 0)
    if data.audio_features == "raw":
        return waves[..., None]
    mel = log_mel(waves, data)
    mel = (mel - mel.mean((1, 2), keepdim=True)) / mel.std((1, 2), keepdim=True).clamp_min(1e-6)
    return mel[..., None]


def audio_splits(cfg: RunConfig) -> Splits:
    data = cfg.data
    if data.root is None:
        raise ConfigError(f"data.name=audioset needs data.root; {AUDIO_HOW}")
    root = Path(data.root)
    mids, names = read_classes(root)
    parts = {}
    for part in ("train", "test"):
        segments = read_segments(root / f"{part}.csv", mids)
        arrays = []  # (N, *index_shape, C) per modality, audio first
        if data.modality in ("audio", "audio+video"):
            waves = [read_clip(find_clip(root / "audio", ytid, AUDIO_EXTENSIONS), data)
                     for ytid, _ in segments]
            arrays.append(audio_features(waves, data))
        if data.modality in ("video", "audio+video"):
            clips = [read_frames(find_clip(root / "video", ytid, VIDEO_EXTENSIONS), data)
                     for ytid, _ in segments]
            arrays.append(patch(torch.stack(clips), data))
        inputs = pack(arrays)
        targets = torch.zeros(len(segments), len(mids))
        for row, (_, classes) in enumerate(segments):
            targets[row, classes] = 1
        parts[part] = (inputs, targets)
    spec = audio_spec(data, len(mids))
    positions = spec.example_positions()  # the grid(s); packed for several modalities
    (inputs, labels), (test_inputs, test_labels) = parts["train"], parts["test"]
    train, val = carve(len(inputs), data, str(root / "train.csv"))
    return Splits(SignalSplit(inputs[train], labels[train], data, positions),
                  SignalSplit(inputs[val], labels[val], data, positions),
                  SignalSplit(test_inputs, test_labels, data, positions), spec, tuple(names))


def pack(arrays: list[Tensor]) -> Tensor:
    """(N, *index_shape_k, C_k) arrays -> (N, sum M_k, max C_k), each zero-padded in C."""
    flat = [a.flatten(1, -2) for a in arrays]
    width = max(a.shape[-1] for a in flat)
    return torch.cat([torch.nn.functional.pad(a, (0, width - a.shape[-1])) for a in flat], 1)


DATA_SETS = (
    DataSet("japanese_vowels", "signals", vowels_spec, vowels_splits, 270, embedded=True),
    DataSet("audioset", "signals", audio_spec, audio_splits, 22_160),
)
