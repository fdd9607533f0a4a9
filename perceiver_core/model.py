"""The Perceiver (Jaegle et al., ICML 2021), as specified in docs/paper.md.

A learned latent array (N, D) repeatedly cross-attends to the input array (M, C) -- the
inputs with their position features concatenated -- and is refined between cross-attends by
a latent Transformer whose cost does not depend on M. The classifier averages the latents
and applies one Linear. Weight sharing, placement of the cross-attends and every width are
config options whose defaults are the paper's ImageNet model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from perceiver_core.attention import CrossAttend, SelfAttend, check_heads
from perceiver_core.baselines import ResNet, ViT
from perceiver_core.config import ConfigError, EncodingConfig, ModelConfig
from perceiver_core.multimodal import MultimodalEncoding
from perceiver_core.position import PositionEncoding


def schedule(cfg: ModelConfig) -> list[tuple[str, int]]:
    """Forward order as [("cross", i) | ("block", j), ...].

    `interleaved` spaces the cross-attends evenly among the latent blocks (one before each
    block when there are as many as blocks); `at_start` puts them all before the first
    block; with num_blocks=0 the model is a stack of cross-attends (paper Table 5).
    """
    n, blocks = cfg.num_cross_attends, cfg.num_blocks
    at_start = cfg.cross_attend_placement == "at_start" or blocks == 0
    before = [0 if at_start else i * blocks // n for i in range(n)]  # block each one precedes
    order = []
    for b in range(blocks + 1):
        order += [("cross", i) for i in range(n) if before[i] == b]
        order += [("block", b)] if b < blocks else []
    return order


def shared(make, count: int, share: bool) -> nn.ModuleList:
    """`count` modules from `make()`: all the same object when shared, else independent."""
    if share and count:
        module = make()
        return nn.ModuleList([module] * count)
    return nn.ModuleList([make() for _ in range(count)])


class Perceiver(nn.Module):
    """inputs (B, M, C), positions (M, d) or (B, M, d) in [-1, 1] -> logits (B, classes).

    `cross_attends[i]` is the i-th cross-attend in forward order and `latent_transformer[j]`
    the j-th block (a ModuleList of self-attends); shared weights are the same module object
    at several indices, so parameters() and the optimizer see each weight once.
    `position` replaces the position features of `index_shape` (a MultimodalEncoding).
    """

    def __init__(self, cfg: ModelConfig, encoding: EncodingConfig, input_channels: int,
                 index_shape: Sequence[int], position: nn.Module | None = None):
        super().__init__()
        self.position = position or PositionEncoding(encoding, index_shape)
        channels = input_channels + self.position.channels
        latent = cfg.latent_channels
        qk = cfg.cross_qk_channels or min(channels, latent)
        v = cfg.cross_v_channels or qk
        hint = "set model.cross_qk_channels / model.cross_v_channels or model.cross_heads"
        check_heads("cross-attend qk channels", qk, cfg.cross_heads, hint)
        check_heads("cross-attend v channels", v, cfg.cross_heads, hint)

        self.init_scale = cfg.init_scale
        self.latents = nn.Parameter(torch.empty(cfg.num_latents, latent))
        self.reset_parameters()

        def make_cross():
            return CrossAttend(latent, channels, qk, v, cfg.cross_heads,
                               cfg.cross_widening_factor)

        def make_block():
            return nn.ModuleList([SelfAttend(latent, cfg.latent_heads, cfg.widening_factor)
                                  for _ in range(cfg.self_attends_per_block)])

        # The first cross-attend never shares: sharing it was unstable (paper sec. 2).
        first = make_cross()
        later = shared(make_cross, cfg.num_cross_attends - 1, cfg.share_cross_attends)
        self.cross_attends = nn.ModuleList([first, *later])
        self.latent_transformer = shared(make_block, cfg.num_blocks, cfg.share_latent_blocks)
        self.head = nn.Linear(latent, cfg.num_classes)
        self.schedule = schedule(cfg)

    def reset_parameters(self) -> None:
        """(Re)draw this module's own parameter, the latent array, as nn.Linear's does its
        own: a caller can then re-draw every module from a generator of its own."""
        nn.init.trunc_normal_(self.latents, std=self.init_scale,
                              a=-2 * self.init_scale, b=2 * self.init_scale)

    def forward(self, inputs: Tensor, positions: Tensor | None = None,
                return_attention: bool = False):
        x = self.position(inputs, positions)
        z = self.latents  # (N, D): the first cross-attend broadcasts it over the batch
        maps = []
        # Computed once per cross-attend module (shared ones reuse it); folded ones all
        # attend to the same parameter-free [n(x), 1], so they share one.
        keys_values = {}
        for kind, i in self.schedule:
            if kind == "cross":
                cross = self.cross_attends[i]
                key = "folded" if cross.foldable else id(cross)
                if key not in keys_values:
                    keys_values[key] = cross.keys_values(x)
                z, attention = cross(z, keys_values[key], return_attention)
                maps.append(attention)
            else:
                for layer in self.latent_transformer[i]:
                    z = layer(z)
        logits = self.head(z.mean(dim=-2))
        return (logits, maps) if return_attention else logits


def build_model(model_cfg: ModelConfig, encoding_cfg: EncodingConfig, input_channels: int,
                index_shape: tuple[int, ...],
                modalities: Sequence[tuple[int, Sequence[int]]] = ()) -> nn.Module:
    """The network `model_cfg.arch` names, for inputs of `input_channels` on `index_shape`;
    or, given `modalities` [(channels, index_shape), ...], a Perceiver over their packed
    inputs (perceiver_core/multimodal.py; input_channels is the packed width)."""
    if input_channels < 1:
        raise ConfigError(f"input_channels={input_channels} must be >= 1")
    if modalities:
        if model_cfg.arch != "perceiver":
            raise ConfigError(f"model.arch={model_cfg.arch} takes one image; several "
                              "modalities need model.arch=perceiver")
        position = MultimodalEncoding(encoding_cfg, modalities, input_channels)
        return Perceiver(model_cfg, encoding_cfg, input_channels, tuple(index_shape), position)
    network = {"perceiver": Perceiver, "resnet": ResNet, "vit": ViT}[model_cfg.arch]
    return network(model_cfg, encoding_cfg, input_channels, tuple(index_shape))
