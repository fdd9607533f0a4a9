"""The peer Perceivers, wrapped to this project's interface so they train through the very
same step as ours (experiments/engine.py): `model(inputs (B, M, C), positions) -> logits`.

Both peers build their own Fourier features from the image grid, so `positions` (the same
linspace(-1, 1) grid) is not passed on.

- `transformers`: PerceiverModel + PerceiverImagePreprocessor(prep_type="pixels") with
  Fourier features + the mean of the latents + one Linear. Configured as this project's
  Perceiver with one cross-attend: q/k/v widths of the cross-attend = the input channels
  (cross_attention_shape_for_attention="kv", as min(C, D) = C here), widening factors,
  heads, blocks x shared self-attends. It has exactly our parameter count (checked in
  benchmarks/run.py). It has no interleaved cross-attends, so it is compared with ours at
  model.num_cross_attends=1.
- `perceiver-pytorch` (lucidrains): depth = the number of cross-attends, each followed by
  self_per_cross_attn self-attends, layers 2..depth weight-tied. DIFFERENCES lists where
  its knobs cannot match the paper's architecture.
"""

from __future__ import annotations

from torch import Tensor, nn

from experiments.config import RunConfig
from experiments.data import InputSpec

DIFFERENCES = {
    "transformers": [
        "latent array expanded per example before the query LayerNorm and projection "
        "(ours: once per batch)",
        "separate q, k, v projections (ours: fused kv / qkv; same parameters)",
        "eager attention: softmax(q k^T) materialised and kept for backward",
        "Fourier features rebuilt and copied per example every forward",
    ],
    "perceiver-pytorch": [
        "MLPs are GEGLU with a fixed x4 widening (D -> 8D -> gate -> 4D -> D), not the "
        "paper's GELU MLP with widening factor 1: ~12x the MLP FLOPs and parameters",
        "q/k/v projections have no bias",
        "weight tying shares cross-attend AND latent block 2..depth; the first latent block "
        "is separate (paper: all latent blocks shared, cross-attends 2..8 shared)",
        "head: mean, LayerNorm, Linear (paper: mean, Linear)",
        "latents initialised N(0, 1) (paper: truncated normal, std 0.02)",
    ],
}


def cross_channels(cfg: RunConfig, spec: InputSpec) -> int:
    """Our cross-attend's q/k/v width: min(input channels with positions, D) (docs/paper.md)."""
    e = cfg.encoding
    channels = spec.channels + len(spec.index_shape) * (2 * e.num_bands
                                                        + int(e.concat_raw_position))
    return cfg.model.cross_qk_channels or min(channels, cfg.model.latent_channels)


def max_resolution(cfg: RunConfig, spec: InputSpec) -> tuple[float, ...]:
    res = cfg.encoding.max_resolution
    return tuple(float(n) for n in spec.index_shape) if res is None else (res,) * len(
        spec.index_shape)


class TransformersPerceiver(nn.Module):
    """transformers' PerceiverModel as this project's Perceiver with one cross-attend."""

    def __init__(self, cfg: RunConfig, spec: InputSpec):
        super().__init__()
        from transformers import PerceiverConfig, PerceiverModel
        from transformers.models.perceiver.modeling_perceiver import PerceiverImagePreprocessor

        m, e = cfg.model, cfg.encoding
        if m.num_cross_attends != 1 or m.cross_widening_factor != m.widening_factor:
            raise ValueError("transformers' Perceiver has one cross-attend and one widening "
                             "factor: use model.num_cross_attends=1")
        if not e.concat_raw_position or e.spacing != "linear" or e.kind != "fourier":
            raise ValueError("transformers' Perceiver needs linear Fourier features with the "
                             "raw positions")
        if cross_channels(cfg, spec) != spec.channels + len(spec.index_shape) * (
                2 * e.num_bands + 1):
            raise ValueError("transformers' cross-attend width is the input width: needs "
                             "model.latent_channels >= the input channels")
        config = PerceiverConfig(
            num_latents=m.num_latents, d_latents=m.latent_channels, num_blocks=m.num_blocks,
            num_self_attends_per_block=m.self_attends_per_block,
            num_self_attention_heads=m.latent_heads, num_cross_attention_heads=m.cross_heads,
            qk_channels=None, v_channels=None, cross_attention_shape_for_attention="kv",
            self_attention_widening_factor=m.widening_factor,
            cross_attention_widening_factor=m.cross_widening_factor, hidden_act="gelu",
            attention_probs_dropout_prob=0.0, use_query_residual=True)
        preprocessor = PerceiverImagePreprocessor(
            config, prep_type="pixels", spatial_downsample=1, in_channels=spec.channels,
            position_encoding_type="fourier", fourier_position_encoding_kwargs=dict(
                num_bands=e.num_bands, max_resolution=max_resolution(cfg, spec),
                concat_pos=True, sine_only=False))
        self.index_shape = spec.index_shape
        self.perceiver = PerceiverModel(config, input_preprocessor=preprocessor)
        self.head = nn.Linear(m.latent_channels, m.num_classes)

    def forward(self, inputs: Tensor, positions: Tensor | None = None) -> Tensor:
        images = inputs.transpose(1, 2).unflatten(-1, self.index_shape)  # (B, C, H, W)
        latents = self.perceiver(inputs=images).last_hidden_state
        return self.head(latents.mean(dim=1))


class LucidrainsPerceiver(nn.Module):
    """perceiver-pytorch's Perceiver at this config's sizes, as far as its knobs go."""

    def __init__(self, cfg: RunConfig, spec: InputSpec):
        super().__init__()
        from perceiver_pytorch import Perceiver

        m, e = cfg.model, cfg.encoding
        if m.num_cross_attends != m.num_blocks or m.cross_attend_placement != "interleaved":
            raise ValueError("perceiver-pytorch puts one cross-attend before each latent "
                             "block: needs model.num_cross_attends == model.num_blocks")
        resolution = set(max_resolution(cfg, spec))
        if len(resolution) != 1:
            raise ValueError("perceiver-pytorch has one max frequency for every axis")
        qk = cross_channels(cfg, spec)
        self.index_shape = spec.index_shape
        self.net = Perceiver(
            num_freq_bands=e.num_bands, max_freq=resolution.pop(), depth=m.num_cross_attends,
            input_channels=spec.channels, input_axis=len(spec.index_shape),
            num_latents=m.num_latents, latent_dim=m.latent_channels,
            cross_heads=m.cross_heads, cross_dim_head=qk // m.cross_heads,
            latent_heads=m.latent_heads, latent_dim_head=m.latent_channels // m.latent_heads,
            num_classes=m.num_classes, weight_tie_layers=m.share_latent_blocks,
            self_per_cross_attn=m.self_attends_per_block)

    def forward(self, inputs: Tensor, positions: Tensor | None = None) -> Tensor:
        return self.net(inputs.unflatten(1, self.index_shape))  # (B, H, W, C), a view


PEERS = {"transformers": TransformersPerceiver, "perceiver-pytorch": LucidrainsPerceiver}
