"""Optimizers and learning-rate schedules of the `train.*` vocabulary.

LAMB is the paper's optimizer (docs/paper.md: lr 0.004, /10 at epochs 84, 102, 114 of 120). It
comes from the maintained `pytorch-optimizer` package, configured as in the LAMB paper
(You et al. 2020): the weight decay is added to the Adam direction *before* the layer-wise
trust ratio ||w|| / ||update|| is taken. AdamW is torch's. Weight decay applies to matrices
only (ndim >= 2), never to biases and LayerNorm gains, as in nanoGPT.

Every schedule is a pure function of the optimizer step (lr_factor), so a resumed run
follows exactly the curve an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.config import TrainConfig

# The step schedule's milestones as fractions of training: 84/120, 102/120, 114/120.
STEP_MILESTONES = (0.7, 0.85, 0.95)
STEP_GAMMA = 0.1


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices (and the latent array) decay; vectors (biases, norms) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    from pytorch_optimizer import Lamb

    # weight_decouple=False: the decay joins the update inside the trust ratio (LAMB paper,
    # Alg. 2). adam_debias=True: no 1 / (1 - beta1^t) factor outside the trust ratio, which
    # would make the first steps up to 10x larger than lr * ||w||; inside it, Adam's bias
    # corrections are per-tensor scalars that the trust ratio cancels (up to eps and decay).
    # foreach=False: the per-tensor path, the same on every device.
    return Lamb(groups, lr=cfg.lr, weight_decouple=False, adam_debias=True, foreach=False)


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """Multiplier of train.lr for optimizer step `step` (0-based) of `total_steps`.

    A linear warm-up from lr / warmup_steps to lr over the first warmup_steps steps; then
    `constant`, `cosine` (to 0 at the last step) or `step` (x 0.1 at each milestone of
    STEP_MILESTONES, measured on the whole run as in the paper).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        passed = sum(step >= round(f * total_steps) for f in STEP_MILESTONES)
        return STEP_GAMMA ** passed
    raise ValueError(f"unknown schedule {schedule!r}")


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.schedule, cfg.warmup_steps))
