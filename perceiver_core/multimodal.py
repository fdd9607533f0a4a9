"""Several modalities in one input array, as the paper's audio+video model (docs/paper.md:
each modality's array is padded to a common channel count with a learned modality-specific
embedding, and the arrays are concatenated along the index dimension).

The inputs arrive packed, so a batch stays one (B, M, C) tensor: modality k owns rows
[M_1 + ... + M_{k-1}, ... + M_k) of the index dimension, its first C_k channels and the
first d_k position dimensions (the rest is zero padding). Each modality gets its own
position features (its own Fourier resolution along its own axes); every modality, the
widest included, gets at least `padding` channels of its learned embedding, so the
latents can always tell the modalities apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from perceiver_core.config import EncodingConfig
from perceiver_core.position import PositionEncoding

MODALITY_PADDING = 4  # embedding channels of the widest modality (a project choice)


class MultimodalEncoding(nn.Module):
    """(B, M, input_channels) packed inputs -> (B, M, input_channels + channels): per
    modality, inputs + position features + learned embedding up to the common width."""

    def __init__(self, cfg: EncodingConfig, modalities: Sequence[tuple[int, Sequence[int]]],
                 input_channels: int, padding: int = MODALITY_PADDING):
        super().__init__()
        self.encodings = nn.ModuleList(PositionEncoding(cfg, shape) for _, shape in modalities)
        self.sizes = [math.prod(shape) for _, shape in modalities]
        self.widths = [channels for channels, _ in modalities]
        self.dims = [len(shape) for _, shape in modalities]
        featured = [c + e.channels for c, e in zip(self.widths, self.encodings, strict=True)]
        common = max(featured) + padding
        self.embeddings = nn.ParameterList(nn.Parameter(torch.empty(common - f)) for f in featured)
        self.reset_parameters()
        self.channels = common - input_channels

    def reset_parameters(self) -> None:
        """(Re)draw the modality embeddings (see Perceiver.reset_parameters)."""
        for embedding in self.embeddings:
            nn.init.trunc_normal_(embedding, std=0.02, a=-0.04, b=0.04)

    def forward(self, inputs: Tensor, positions: Tensor | None) -> Tensor:
        if inputs.shape[-2] != sum(self.sizes):
            raise ValueError(f"{inputs.shape[-2]} inputs, but the modalities hold "
                             f"{' + '.join(map(str, self.sizes))}")
        parts, start = [], 0
        for encoding, embedding, size, width, dims in zip(
                self.encodings, self.embeddings, self.sizes, self.widths, self.dims,
                strict=True):
            rows = slice(start, start + size)
            own = None if positions is None else positions[..., rows, :dims]
            x = encoding(inputs[:, rows, :width], own)
            parts.append(torch.cat([x, embedding.to(x.dtype).expand(*x.shape[:-1], -1)], -1))
            start += size
        return torch.cat(parts, dim=-2)
