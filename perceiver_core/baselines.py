"""Table 2's "(FF)" baselines: a small ResNet-style CNN and a small ViT.

They get exactly the Perceiver's inputs -- pixels with the same position features
concatenated -- laid out on the 2D grid `index_shape` in array order. A fixed pixel
permutation therefore scrambles their local neighbourhoods (convolutions, patches) while
the Perceiver's global attention does not care: the point of the paper's Table 2.
Scaled down (model.baseline_width, vit_*) so they train on the project's small data sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from perceiver_core.attention import SelfAttend
from perceiver_core.config import ConfigError, EncodingConfig, ModelConfig
from perceiver_core.position import PositionEncoding


class GridInputs(nn.Module):
    """(B, M, C) inputs + positions -> (B, C + position channels, H, W) image."""

    def __init__(self, encoding: EncodingConfig, index_shape: Sequence[int], arch: str):
        super().__init__()
        if len(index_shape) != 2:
            raise ConfigError(f"model.arch={arch} needs a 2D index_shape (an image grid), got "
                              f"{tuple(index_shape)}; use model.arch=perceiver for other inputs")
        self.position = PositionEncoding(encoding, index_shape)
        self.index_shape = tuple(index_shape)

    def forward(self, inputs: Tensor, positions: Tensor) -> Tensor:
        x = self.position(inputs, positions)
        return x.transpose(1, 2).unflatten(2, self.index_shape)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and a residual (ResNet-18/34 style)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem, three stages of two BasicBlocks (width w, 2w, 4w; stride 2 between stages),
    global average pool, Linear: a CIFAR-sized ResNet."""

    def __init__(self, cfg: ModelConfig, encoding: EncodingConfig, input_channels: int,
                 index_shape: Sequence[int]):
        super().__init__()
        self.grid = GridInputs(encoding, index_shape, "resnet")
        w = cfg.baseline_width
        in_channels = input_channels + self.grid.position.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU())
        widths = [w, 2 * w, 4 * w]
        self.stages = nn.Sequential(*[
            nn.Sequential(BasicBlock(prev, width, 1 if i == 0 else 2),
                          BasicBlock(width, width, 1))
            for i, (prev, width) in enumerate(zip([w, *widths[:-1]], widths, strict=True))])
        self.head = nn.Linear(widths[-1], cfg.num_classes)

    def forward(self, inputs: Tensor, positions: Tensor) -> Tensor:
        x = self.stages(self.stem(self.grid(inputs, positions)))
        return self.head(x.mean(dim=(-2, -1)))


class ViT(nn.Module):
    """Non-overlapping p x p patches -> Linear embedding -> pre-LN Transformer (MLP x4) ->
    LayerNorm, mean over tokens, Linear. No learned position embedding: the patches carry
    the concatenated position features, as in the paper's ViT (FF)."""

    def __init__(self, cfg: ModelConfig, encoding: EncodingConfig, input_channels: int,
                 index_shape: Sequence[int]):
        super().__init__()
        self.grid = GridInputs(encoding, index_shape, "vit")
        p, w = cfg.vit_patch_size, cfg.baseline_width
        if any(n % p for n in index_shape):
            raise ConfigError(f"model.vit_patch_size={p} must divide the image size "
                              f"{tuple(index_shape)}")
        in_channels = input_channels + self.grid.position.channels
        self.patch_embed = nn.Conv2d(in_channels, w, p, stride=p)
        self.blocks = nn.Sequential(*[SelfAttend(w, cfg.vit_heads, widening_factor=4)
                                      for _ in range(cfg.vit_depth)])
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, cfg.num_classes)

    def forward(self, inputs: Tensor, positions: Tensor) -> Tensor:
        tokens = self.patch_embed(self.grid(inputs, positions)).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))
