"""Video clips (T, H, W, C) with 3D space-time positions, decoded with PyAV.

The clips of an AudioSet-style folder (experiments/data/signals.py: the same segment CSVs
and multi-hot labels) under video/<YTID>.mp4 (or any container FFmpeg reads), selected
with data.modality=video. Each clip becomes data.video_frames frames spaced evenly over
the clip, resized to data.image_size x data.image_size (antialiased, once at load time).

Space-time patching (the paper's option for long clips): data.patch_frames x data.patch_size
x data.patch_size blocks of pixels become one input element whose channels are the block's
pixels, so M shrinks by the block volume and C grows by it; the positions are the grid of
block centres, (T / pt, H / p, W / p) in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.data.images import STATS
from experiments.errors import DataError
from perceiver_core.config import ConfigError

if TYPE_CHECKING:
    from experiments.config import DataConfig

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
MEAN, STD = (torch.tensor(s) for s in STATS["imagenet"])  # natural RGB frames


def video_shape(data: DataConfig) -> tuple[tuple[int, int, int], int]:
    """(index shape (T', H', W') after patching, channels per element)."""
    if data.image_size is None:
        raise ConfigError("data.modality=video needs data.image_size: every frame is resized "
                          "to image_size x image_size (e.g. data.image_size=64)")
    pt, p = data.patch_frames, data.patch_size
    if data.video_frames % pt or data.image_size % p:
        raise ConfigError(f"data.video_frames={data.video_frames} must be divisible by "
                          f"data.patch_frames={pt} and data.image_size={data.image_size} by "
                          f"data.patch_size={p}")
    side = data.image_size // p
    return (data.video_frames // pt, side, side), 3 * pt * p * p


def read_frames(path: Path, data: DataConfig) -> Tensor:
    """(video_frames, image_size, image_size, 3) uint8 of one clip."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("it has no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise DataError(f"cannot decode video {path} ({exc}): expected a video file FFmpeg "
                        "reads, e.g. an .mp4") from None
    if len(frames) < 1 or len({f.shape for f in frames}) != 1:
        raise DataError(f"{path}: expected at least one frame, all of one size; got "
                        f"{len(frames)} frames of sizes {sorted({f.shape for f in frames})}")
    picked = np.linspace(0, len(frames) - 1, data.video_frames).round().astype(int)
    clip = torch.from_numpy(np.stack([frames[i] for i in picked])).permute(0, 3, 1, 2)
    size = data.image_size
    clip = F.interpolate(clip.float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
    return clip.round().clamp(0, 255).byte().permute(0, 2, 3, 1)


def patch(clips: Tensor, data: DataConfig) -> Tensor:
    """(N, T, H, W, 3) uint8 -> (N, T', H', W', pt * p * p * 3) float, normalised; each
    element holds its block's pixels in (time, row, column, colour) order."""
    pt, p = data.patch_frames, data.patch_size
    n, t, h, w, c = clips.shape
    x = ((clips.float() / 255 - MEAN) / STD).reshape(n, t // pt, pt, h // p, p, w // p, p, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(n, t // pt, h // p, w // p, pt * p * p * c)
