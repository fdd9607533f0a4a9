"""Position features concatenated to the inputs (paper sec. 3.2, Fig. 6, Table 2).

The Perceiver's attention is permutation invariant: everything it knows about where an
input element sits comes from the features built here. Positions are coordinates in
[-1, 1] per index dimension (1D audio, 2D images, 3D video or point clouds), passed in
explicitly so crops, permutations and point clouds need no special case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from perceiver_core.config import ConfigError, EncodingConfig


def grid_positions(index_shape: Sequence[int], device=None) -> Tensor:
    """(M, d) coordinates of a regular grid, row-major, each axis linspace(-1, 1)."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in index_shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))


def fourier_features(positions: Tensor, num_bands: int,
                     max_resolution: float | Sequence[float],
                     spacing: str = "linear") -> Tensor:
    """[x_d, sin(f_k pi x_d), cos(f_k pi x_d)]: (..., M, d) -> (..., M, d * (2K + 1)).

    The K frequencies of dimension d run from 1 to max_resolution_d / 2 (the Nyquist
    frequency of a signal sampled max_resolution_d times over [-1, 1]), linearly or
    log-spaced. Channel order: the d raw positions, then the d*K sines, then the d*K cosines.
    """
    dims = positions.shape[-1]
    if isinstance(max_resolution, (int, float)):
        max_resolution = [float(max_resolution)] * dims
    if len(max_resolution) != dims:
        raise ConfigError(f"max_resolution has {len(max_resolution)} entries but the "
                          f"positions have {dims} dimensions")
    kw = dict(device=positions.device, dtype=torch.float32)
    if spacing == "linear":
        bands = [torch.linspace(1.0, r / 2, num_bands, **kw) for r in max_resolution]
    elif spacing == "log":
        bands = [torch.logspace(0.0, math.log10(r / 2), num_bands, **kw) for r in max_resolution]
    else:
        raise ConfigError(f"spacing={spacing!r} is not one of linear, log")
    freqs = torch.stack(bands)  # (d, K)
    angles = (math.pi * positions.float().unsqueeze(-1) * freqs).flatten(-2)  # (..., M, d*K)
    return torch.cat([positions.float(), angles.sin(), angles.cos()], dim=-1)


class PositionEncoding(nn.Module):
    """Concatenates position features to the inputs: (B, M, C) -> (B, M, C + channels).

    `fourier`: features computed from the given positions, once per call for positions
    (M, d) shared by the batch (broadcast, not per example), or per example for (B, M, d).
    `learned`: a learned (M, channels) table indexed by array position (positions are
    ignored). It has as many channels as the Fourier features of the same config, so the
    two encodings feed the cross-attend the same widths and cost the same FLOPs (Table 2).
    `none`: the inputs unchanged (the model sees an unordered set).
    """

    def __init__(self, cfg: EncodingConfig, index_shape: Sequence[int]):
        super().__init__()
        self.kind = cfg.kind
        self.index_shape = tuple(index_shape)
        dims = len(self.index_shape)
        if dims < 1 or min(self.index_shape) < 1:
            raise ConfigError(f"index_shape={self.index_shape} must have >= 1 dimension, "
                              "each of size >= 1")
        self.num_bands, self.spacing = cfg.num_bands, cfg.spacing
        resolution = cfg.max_resolution
        self.max_resolution = (list(map(float, self.index_shape)) if resolution is None
                               else [resolution] * dims)
        self.raw = cfg.concat_raw_position
        fourier_channels = dims * (2 * cfg.num_bands + int(cfg.concat_raw_position))
        self.channels = {"fourier": fourier_channels, "learned": fourier_channels,
                         "none": 0}[cfg.kind]
        if cfg.kind == "learned":
            self.table = nn.Parameter(torch.empty(math.prod(self.index_shape), self.channels))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re)draw the learned table, if any (see Perceiver.reset_parameters)."""
        if self.kind == "learned":
            nn.init.trunc_normal_(self.table, std=0.02, a=-0.04, b=0.04)

    def features(self, positions: Tensor | None) -> Tensor | None:
        """(M, channels) or (B, M, channels) features, None for kind `none`."""
        if self.kind == "learned":
            return self.table
        if self.kind == "none":
            return None
        if positions is None:
            raise ValueError("Fourier position features need positions (M, d) or (B, M, d); "
                             "grid_positions(index_shape) gives the regular grid")
        feats = fourier_features(positions, self.num_bands, self.max_resolution, self.spacing)
        return feats if self.raw else feats[..., positions.shape[-1]:]

    def forward(self, inputs: Tensor, positions: Tensor | None) -> Tensor:
        feats = self.features(positions)
        if feats is None:
            return inputs
        if feats.shape[-2] != inputs.shape[-2]:
            raise ValueError(f"{feats.shape[-2]} position features for {inputs.shape[-2]} "
                             f"inputs (index_shape={self.index_shape})")
        feats = feats.to(inputs.dtype).expand(*inputs.shape[:-1], self.channels)
        return torch.cat([inputs, feats], dim=-1)
