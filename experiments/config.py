"""A run's full configuration: `model.*`, `encoding.*`, `data.*`, `train.*`
(docs/design.md, "Config vocabulary").

A config is built in layers, each validated: a preset (the project's small Fashion-MNIST
default unless a file says `preset: NAME`), then a YAML file, then `key=value` overrides.
Unknown keys and invalid values raise ConfigError before anything runs. A run is
identified by a signature of what determines its result (`RunConfig.run_id`), so the same
run is never trained twice and a later version that adds a key renames nothing
(docs/run-identity.md).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from perceiver_core.config import (
    ConfigError,
    EncodingConfig,
    ModelConfig,
    check_choice,
    check_min,
    check_types,
)

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "fashion-mnist"
OPTIMIZERS = ("lamb", "adamw")
SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
AUDIO_FEATURES = ("raw", "mel")
MODALITIES = ("audio", "video", "audio+video")


@dataclass(frozen=True)
class DataConfig:
    SECTION = "data"

    name: str = "fashion_mnist"  # one of experiments/data/registry.py's data sets
    root: str | None = None  # null = the data set's standard location
    permute: bool = False  # one fixed pixel permutation, applied after positions (Table 2)
    permute_seed: int = 0
    train_subset: int | None = None  # use only this many training images
    val_size: int = 5000  # carved from train with a fixed seed; test is for final numbers
    image_size: int | None = None  # null = native resolution
    # crop = random-resized crop (returns its box, paper Fig. 4); scale = per-shape scaling
    # and translation of a point cloud; which apply is per data set (the registry says)
    augment: str = "none"
    crop_scale_min: float = 0.35
    hflip: bool = False  # mirror training images left-right with probability 1/2
    num_workers: int = 0
    num_points: int | None = None  # points per example of a point set; null = its default
    sample_rate: int = 16000  # audio: clips are resampled to this rate (Hz)
    clip_seconds: float = 10.0  # audio: clips are cut or zero-padded to this length
    audio_features: str = "raw"  # raw samples (1D positions) or mel (time x frequency, 2D)
    mel_bands: int = 64
    # audioset folders: audio clips, video clips (3D positions) or both in one input array
    modality: str = "audio"
    video_frames: int = 16  # frames taken evenly over each clip (resized to image_size)
    patch_size: int = 1  # video: p x p pixels per input element (space-time patching)
    patch_frames: int = 1  # video: frames per input element

    @property
    def crops(self) -> bool:
        """Training images get random-resized crops (augment=crop, and under RandAugment)."""
        return self.augment in ("crop", "randaugment")

    def __post_init__(self) -> None:
        # data.name and data.augment are checked against the data sets by
        # experiments/data/registry.py's check_config: the data reads configs, not back.
        check_types(self)
        check_choice("data", "audio_features", self.audio_features, AUDIO_FEATURES)
        check_min("data", "sample_rate", self.sample_rate, 1)
        check_min("data", "clip_seconds", self.clip_seconds, 0, strict=True)
        check_choice("data", "modality", self.modality, MODALITIES)
        for name in ("mel_bands", "video_frames", "patch_size", "patch_frames"):
            check_min("data", name, getattr(self, name), 1)
        check_min("data", "val_size", self.val_size, 0)
        check_min("data", "num_workers", self.num_workers, 0)
        check_min("data", "crop_scale_min", self.crop_scale_min, 0, strict=True)
        if self.crop_scale_min > 1:
            raise ConfigError(f"data.crop_scale_min={self.crop_scale_min} must be <= 1")
        for name in ("train_subset", "image_size", "num_points"):
            if getattr(self, name) is not None:
                check_min("data", name, getattr(self, name), 1)


@dataclass(frozen=True)
class TrainConfig:
    SECTION = "train"

    epochs: float = 10
    max_steps: int | None = None  # caps the run's steps; schedules span the capped run
    batch_size: int = 128  # the global batch, split evenly over DDP processes
    lr: float = 1e-3
    optimizer: str = "lamb"
    weight_decay: float = 0.0
    schedule: str = "cosine"  # step = the paper's lr/10 at 70%, 85%, 95% of training
    warmup_steps: int = 0
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    seed: int = 0
    # Common random numbers (docs/verdicts.md, "Paired seeds"): the seed splits into the
    # batch order's seed and the initialisation's; null = train.seed for both.
    data_seed: int | None = None
    init_seed: int | None = None
    # Each parameter drawn from a generator of (init seed, its name, its shape), so configs
    # that share a parameter by name and shape start it identical; off = the modules' own
    # initialisation from one stream, which every earlier run used.
    coupled_init: bool = False
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    eval_every: int | None = None  # steps between evaluations; null = once per epoch
    checkpoint_every: int | None = None  # steps between checkpoints; null = at evaluations

    def __post_init__(self) -> None:
        check_types(self)
        check_choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train", "schedule", self.schedule, SCHEDULES)
        check_choice("train", "precision", self.precision, PRECISIONS)
        check_min("train", "epochs", self.epochs, 0, strict=True)
        check_min("train", "batch_size", self.batch_size, 1)
        check_min("train", "lr", self.lr, 0, strict=True)
        check_min("train", "weight_decay", self.weight_decay, 0)
        check_min("train", "warmup_steps", self.warmup_steps, 0)
        check_min("train", "label_smoothing", self.label_smoothing, 0)
        for name in ("max_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                check_min("train", name, getattr(self, name), 1)
        if self.grad_clip is not None:
            check_min("train", "grad_clip", self.grad_clip, 0, strict=True)

    @property
    def order_seed(self) -> int:
        """The seed of the batch order and augmentations."""
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def weights_seed(self) -> int:
        """The seed of the initial weights."""
        return self.seed if self.init_seed is None else self.init_seed


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "encoding": EncodingConfig, "data": DataConfig, "train": TrainConfig}

# Keys that cannot change any recorded metric, so they stay out of the run id: how the data
# is loaded (batches are a pure function of seed and epoch, not of the loader's workers),
# where the same data set lives (results rsynced from a cluster keep their ids), and how
# often a checkpoint is taken (resuming is exact). tests/test_identity.py trains each one
# both ways and compares the metrics.
NON_SEMANTIC = ("data.num_workers", "data.root", "train.checkpoint_every")
# Seeds that default to train.seed: one set to train.seed's value is the default run.
SEED_ALIASES = ("train.data_seed", "train.init_seed")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, e.g. {'model.num_latents': 64, ...}."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def signature(self) -> dict[str, Any]:
        """What the run id hashes: the semantic keys whose values differ from the
        vocabulary's defaults. A key added later with a default leaves every id as it was."""
        defaults, values = type(self)().flat(), self.flat()
        for key in SEED_ALIASES:
            if values[key] == values["train.seed"]:
                values[key] = None
        return {key: value for key, value in values.items()
                if key not in NON_SEMANTIC and value != defaults[key]}

    @property
    def run_id(self) -> str:
        return short_hash(self.signature())

    def replace(self, overrides: Mapping[str, Any]) -> RunConfig:
        return from_dict(merge(self.to_dict(), overrides))

    @classmethod
    def from_dict(cls, nested: Mapping[str, Any]) -> RunConfig:
        return from_dict(nested)


def short_hash(obj: Any) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else \
        f"; valid keys are {', '.join(valid_keys())}"
    return ConfigError(f"unknown config key {key!r}{hint}")


def from_dict(nested: Mapping[str, Any]) -> RunConfig:
    """Validated RunConfig from {'model': {...}, ...}; unknown keys are errors."""
    sections = {}
    for name, values in nested.items():
        if name not in SECTIONS:
            raise _unknown(name)
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section {name!r} must be a mapping, got {values!r}")
        known = {f.name for f in fields(SECTIONS[name])}
        for key in values:
            if key not in known:
                raise _unknown(f"{name}.{key}")
        sections[name] = SECTIONS[name](**values)
    return RunConfig(**sections)


def merge(nested: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply overrides, given dotted ({'model.num_latents': 8}) or nested, to a nested dict."""
    out = copy.deepcopy(dict(nested))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and "." not in key:
            if key not in SECTIONS:
                raise _unknown(key)
            out.setdefault(key, {}).update(value)
            continue
        section, _, name = key.partition(".")
        if section not in SECTIONS or name not in {f.name for f in fields(SECTIONS[section])}:
            raise _unknown(key)
        out.setdefault(section, {})[name] = value
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['model.num_latents=64', 'train.lr=1e-3'] -> dotted dict with YAML-typed values."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value "
                              "(e.g. model.num_latents=64)")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from None
    return out


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_user_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file a user wrote (config, sweep, study, profile): a mapping, or a
    ConfigError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: must hold a mapping of config sections, got {content!r}")
    return content


def preset_dict(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(presets())}")
    content = read_user_yaml(path)
    content.pop("preset", None)
    return content


def resolve(content: Mapping[str, Any], overrides: Mapping[str, Any] = (),
            preset: str | None = None) -> RunConfig:
    """preset (explicit, or content's `preset:` key, or the default) <- content <- overrides."""
    content = dict(content)
    name = preset or content.pop("preset", None) or DEFAULT_PRESET
    content.pop("preset", None)
    layered = merge(preset_dict(name), content)
    return from_dict(merge(layered, dict(overrides)))


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping = (),
                preset: str | None = None) -> RunConfig:
    """The CLI's entry: optional YAML file, `key=value` strings (or a dict), optional preset."""
    content = read_user_yaml(path) if path else {}
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    return resolve(content, overrides, preset)
