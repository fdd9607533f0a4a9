"""The `model.*` and `encoding.*` vocabulary.

Defaults are the paper's ImageNet model (docs/paper.md): every deviation the project offers is
an option whose default is the paper's choice. Validation happens on construction so a bad
sweep point fails before anything is built, submitted or written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

ARCHS = ("perceiver", "resnet", "vit")
PLACEMENTS = ("interleaved", "at_start")
ENCODINGS = ("fourier", "learned", "none")
SPACINGS = ("linear", "log")
POSITIONS = ("crop_relative", "image_relative")


class ConfigError(ValueError):
    """A config value that cannot be built; the message says which key and how to fix it."""


def check_choice(section: str, name: str, value, choices) -> None:
    if value not in choices:
        options = ", ".join(map(str, choices))
        raise ConfigError(f"{section}.{name}={value!r} is not one of {options}")


def check_min(section: str, name: str, value, minimum, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{section}.{name}={value!r} must be a number")
    if not math.isfinite(value):  # NaN compares False with everything: it passes any bound
        raise ConfigError(f"{section}.{name}={value!r} must be a finite number")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ConfigError(f"{section}.{name}={value!r} must be {relation} {minimum}")


def check_types(obj) -> None:
    """Reject values of the wrong type (a YAML typo like `num_latents: 12a`) with the key name."""
    section = type(obj).SECTION
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        optional = kind.endswith("| None")
        base = kind.removesuffix("| None").strip()
        if value is None:
            if not optional:
                raise ConfigError(f"{section}.{f.name} must be set (got null)")
            continue
        if base == "float" and isinstance(value, str):
            try:  # YAML 1.1 reads `1e-3` (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[base]
        is_bool_as_number = base in ("int", "float") and isinstance(value, bool)
        if is_bool_as_number or not isinstance(value, expected):
            raise ConfigError(f"{section}.{f.name}={value!r} must be of type {base}")
        if base == "float":
            if not math.isfinite(value):
                raise ConfigError(f"{section}.{f.name}={value!r} must be a finite number "
                                  "(not nan or inf)")
            object.__setattr__(obj, f.name, float(value))


@dataclass(frozen=True)
class EncodingConfig:
    """How positions are given to the model (paper sec. 3.2, Fig. 6, Table 2)."""

    SECTION = "encoding"

    kind: str = "fourier"
    num_bands: int = 64
    # Highest frequency is max_resolution / 2 (Nyquist when it equals the sampling rate).
    # null means "the input's own resolution along each dimension" (Nyquist).
    max_resolution: float | None = None
    spacing: str = "linear"
    positions: str = "crop_relative"
    concat_raw_position: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        check_choice("encoding", "kind", self.kind, ENCODINGS)
        check_choice("encoding", "spacing", self.spacing, SPACINGS)
        check_choice("encoding", "positions", self.positions, POSITIONS)
        check_min("encoding", "num_bands", self.num_bands, 1)
        if self.max_resolution is not None:
            check_min("encoding", "max_resolution", self.max_resolution, 0, strict=True)


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. Defaults: the paper's ImageNet Perceiver (8 x 6 shared self-attends,
    8 interleaved cross-attends, N=512, D=1024)."""

    SECTION = "model"

    arch: str = "perceiver"
    num_latents: int = 512
    latent_channels: int = 1024
    num_blocks: int = 8
    self_attends_per_block: int = 6
    num_cross_attends: int = 8
    cross_attend_placement: str = "interleaved"
    cross_heads: int = 1
    latent_heads: int = 8
    # q/k/v widths of the cross-attend; null = min(input channels, latent channels) (paper).
    cross_qk_channels: int | None = None
    cross_v_channels: int | None = None
    widening_factor: int = 1
    cross_widening_factor: int = 1
    init_scale: float = 0.02
    share_cross_attends: bool = True
    share_latent_blocks: bool = True
    num_classes: int = 1000
    # Baselines (model.arch=resnet|vit): widths of the small FF CNN / ViT of Table 2.
    baseline_width: int = 64
    vit_patch_size: int = 4
    vit_depth: int = 6
    vit_heads: int = 4

    def __post_init__(self) -> None:
        check_types(self)
        check_choice("model", "arch", self.arch, ARCHS)
        check_choice("model", "cross_attend_placement", self.cross_attend_placement, PLACEMENTS)
        for name in ("num_latents", "latent_channels", "cross_heads", "latent_heads",
                     "widening_factor", "cross_widening_factor", "num_classes",
                     "num_cross_attends", "baseline_width", "vit_patch_size", "vit_depth",
                     "vit_heads"):
            check_min("model", name, getattr(self, name), 1)
        check_min("model", "num_blocks", self.num_blocks, 0)
        check_min("model", "self_attends_per_block", self.self_attends_per_block, 1)
        check_min("model", "init_scale", self.init_scale, 0, strict=True)
        for name in ("cross_qk_channels", "cross_v_channels"):
            if getattr(self, name) is not None:
                check_min("model", name, getattr(self, name), 1)
        if self.latent_channels % self.latent_heads:
            raise ConfigError(
                f"model.latent_channels={self.latent_channels} must be divisible by "
                f"model.latent_heads={self.latent_heads}")
        if self.arch == "vit" and self.baseline_width % self.vit_heads:
            raise ConfigError(
                f"model.baseline_width={self.baseline_width} must be divisible by "
                f"model.vit_heads={self.vit_heads}")
        if (self.num_blocks and self.cross_attend_placement == "interleaved"
                and self.num_cross_attends > self.num_blocks):
            raise ConfigError(
                f"model.num_cross_attends={self.num_cross_attends} > model.num_blocks="
                f"{self.num_blocks}: each cross-attend precedes a latent block, so there can be "
                "at most one per block (set num_blocks=0 for a cross-attention-only stack)")
