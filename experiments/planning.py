"""How long a run is: the one step count that training, `sweep --dry-run` and the demo's
progress line share, so a plan and the run it plans never disagree."""

from __future__ import annotations

from experiments.config import RunConfig, TrainConfig


def total_steps(train: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of a run: `train.epochs` epochs of `steps_per_epoch` global batches,
    capped by `train.max_steps` (schedules span the capped run)."""
    steps = max(1, round(train.epochs * steps_per_epoch))
    return steps if train.max_steps is None else min(steps, train.max_steps)


def planned_steps(cfg: RunConfig) -> int:
    """A run's steps before its data is read: the registry's nominal training-set size (a
    folder's real size is only known once it is listed), less the validation split."""
    from experiments.data.registry import dataset

    data = cfg.data
    size = data.train_subset or dataset(data.name).train_size - data.val_size
    return total_steps(cfg.train, size // cfg.train.batch_size)


def samples_seen(cfg: RunConfig) -> int:
    """Training examples a run will see (global batch x planned steps)."""
    return planned_steps(cfg) * cfg.train.batch_size
