"""What `analysis` reads of `experiments` beyond the run records and the config
vocabulary, in one place: a trained model and the test examples it was trained for (the
attention maps), the index shape of records written before result.json kept it, a data
set's chance accuracy (what a diverged run is judged at), a sweep's declared base config
(the base every verdict compares against) and a results folder's Optuna study (study
figures and importances). Everything else analysis knows comes from the run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from experiments.config import ConfigError, DataConfig, RunConfig, resolve
from experiments.data import Batch, InputSpec, input_spec, load_splits, registry
from experiments.errors import CheckpointError
from experiments.orchestration.study import load_recorded, trial_columns
from experiments.runfolder import CHECKPOINT, RunFolder, read_manifest

__all__ = ["Examples", "chance_accuracy", "index_shape", "load_recorded", "load_trained",
           "sweep_base", "test_examples", "trial_columns"]


def load_trained(path: str | Path) -> tuple[torch.nn.Module, RunConfig]:
    """(eval-mode model with the checkpoint's weights, its RunConfig) from a run folder or
    a checkpoint file."""
    from experiments.factory import build_for

    path = Path(path)
    checkpoint = RunFolder(path).checkpoint_file if path.is_dir() else path
    if not checkpoint.is_file():
        raise CheckpointError(f"no checkpoint at {checkpoint}: pass a run folder holding "
                              f"{CHECKPOINT} (perceiver-ablate train prints it) or the file "
                              "itself")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = RunConfig.from_dict(state["config"])
    model = build_for(cfg, input_spec(cfg.data))
    model.load_state_dict(state["model"])
    return model.eval(), cfg


class Examples(NamedTuple):
    batch: Batch  # the first `count` test examples, in the data set's fixed order
    classes: tuple[str, ...]
    spec: InputSpec


def test_examples(cfg: RunConfig, count: int) -> Examples:
    splits = load_splits(cfg)
    batch = next(splits.test.batches(min(count, len(splits.test)), seed=0, epoch=0,
                                     train=False))
    return Examples(batch, splits.classes, splits.spec)


def index_shape(name: str, image_size: int | None) -> tuple[int, ...]:
    """The input's index shape of data set `name` at `image_size`, for run records written
    before result.json recorded `input.index_shape`."""
    return tuple(input_spec(DataConfig(name=name, image_size=image_size)).index_shape)


def chance_accuracy(name: str, image_size: int | None) -> float | None:
    """Chance accuracy in points of data set `name` at `image_size` (None where it means
    nothing: a multi-label set, an unknown name)."""
    try:
        data = DataConfig(name=name, image_size=image_size)
    except (ConfigError, TypeError, ValueError):
        return None
    return registry.chance_accuracy(data)


def sweep_base(folder: str | Path) -> dict[str, Any] | None:
    """The nested config of the base the sweep in `folder` declares (its latest
    submission's `base:` with its command-line overrides), or None: a study, or a folder
    without a manifest."""
    submissions = read_manifest(folder)["submissions"]
    spec = submissions[-1].get("spec") if submissions else None
    if not isinstance(spec, dict) or not isinstance(spec.get("base", {}), dict):
        return None
    try:
        return resolve(spec.get("base") or {}, submissions[-1].get("overrides") or {}).to_dict()
    except ConfigError:
        return None
