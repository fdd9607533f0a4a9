"""The maths of training and evaluation, top to bottom: the precision a step runs in, the
losses, the metrics, the one training step (`train_step`) and the evaluation of a split
(`evaluate`), then the step of a seed pack (`turns` or `Batched`). What a run does around
them (its folder, records, checkpoints, heartbeats) is experiments/train.py; the seeds of a
pack are trained by experiments/packing.py; the model comes from experiments/factory.py.

A step's statistics are [loss * n, correct, n] summed over DDP ranks (experiments/
distributed.py): one copy to the host per step, and a non-finite loss skips the update
(the run is about to stop as diverged).

A pack trains its live seeds' batches one of two ways (`pack_step`):

- `turns`: one seed's own optimizer step after another, each in its own RNG streams, so
  each seed computes exactly what it computes alone (bit for bit);
- `batched`: one batched model (`Batched`): the seeds' parameters stacked, one
  torch.func.vmap'd forward and one backward over their K batches, then each seed's
  gradient slice through its own optimizer. Equal to a solo run up to the rounding of
  the batched matmuls. Needs the core's cross-attend kernel to be vmap-able
  (perceiver_core/attention.py, InputAttention.vmap); SDPA has no CPU batching rule, so
  on CPU vmap loops over the seeds there.

Both take the pack's seeds (experiments/packing.py's Seed): each with its run (`run`:
model, optimizer, scheduler, cfg, env, train_step), the batch it waits to be trained on
(`batch`) and its RNG streams (`rng`).
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.func import functional_call

from experiments.config import RunConfig
from experiments.distributed import Distributed
from experiments.host import keep_freed_memory, use_compile_cache
from experiments.optim import build_optimizer, build_schedule
from experiments.seeding import rng_state, set_rng_state
from perceiver_core.config import ConfigError

# -- precision -------------------------------------------------------------------------


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """bfloat16 when train.precision asks for it, or by default (`auto`) on a GPU with bf16
    in hardware (compute capability 8.0+: A100, H100, ...); None means fp32.

    train.precision=bf16 on a GPU without it (V100, T4) is a ConfigError: torch emulates
    bf16 there (its default is_bf16_supported() even says yes) and other tools quietly
    train in fp32 instead, so the run would not be what its config says. `auto` on such a
    GPU means fp32, and Run says so.
    """
    precision = cfg.train.precision
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        if precision == "bf16":
            raise ConfigError(
                f"train.precision=bf16 but {torch.cuda.get_device_name(device)} has no bf16 "
                "(it needs compute capability 8.0 or later, e.g. A100, H100): set "
                "train.precision=fp32, or auto (fp32 on this GPU)")
        return None
    return torch.bfloat16


def autocast(cfg: RunConfig, device: torch.device):
    """The autocast context of autocast_dtype, or none (fp32)."""
    dtype = autocast_dtype(cfg, device)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


# -- losses and metrics ----------------------------------------------------------------


def loss_and_hits(logits, labels, label_smoothing: float = 0.0, reduction: str = "mean"):
    """(loss, correct predictions or None). Integer labels: softmax cross-entropy and
    accuracy. Multi-hot float labels (multi-label sets such as AudioSet): a sigmoid per
    class with binary cross-entropy summed over classes, and no accuracy (the metric is
    mAP over a whole split, see mean_average_precision)."""
    if labels.is_floating_point():
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(-1)
        return (loss.sum() if reduction == "sum" else loss.mean()), None
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing,
                           reduction=reduction)
    return loss, (logits.argmax(-1) == labels).sum()


def loss_and_stats(logits, labels, cfg: RunConfig, env: Distributed):
    """(loss, [loss * n, correct, n] of this rank as a float64 tensor) of a training batch."""
    loss, hits = loss_and_hits(logits, labels, cfg.train.label_smoothing)
    hits = loss.new_zeros(()) if hits is None else hits  # multi-label: no accuracy
    return loss, torch.stack([loss.detach() * len(labels), hits,
                              torch.tensor(len(labels), device=env.device)]).double()


def mean_average_precision(scores, targets) -> float | None:
    """AudioSet's metric: average precision per class (scikit-learn's), averaged over the
    classes that have a positive example in the split (AP is undefined for the others)."""
    from sklearn.metrics import average_precision_score

    present = targets.sum(0) > 0
    if not present.any():
        return None
    return float(average_precision_score(targets[:, present].numpy(),
                                         scores[:, present].numpy(), average="macro"))


def gather(tensor, env: Distributed):
    """Every rank's (n_r, ...) tensor, concatenated on every rank."""
    if env.world_size == 1:
        return tensor
    parts = [None] * env.world_size
    torch.distributed.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


# -- training ---------------------------------------------------------------------------


def prepare_training(model: torch.nn.Module, cfg: RunConfig, env: Distributed,
                     total_steps: int):
    """(optimizer, scheduler, net, trainer) for a built model: everything a training step
    needs. `net` is the model, compiled when train.compile (evaluation uses it); `trainer`
    is net, wrapped in DDP when there are several processes. The benchmark
    (experiments/bench.py) builds its steps with this too, so it times what runs train."""
    if env.device.type == "cpu":
        keep_freed_memory()
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_schedule(optimizer, cfg.train, total_steps)
    if cfg.train.compile:
        use_compile_cache()
    net = torch.compile(model) if cfg.train.compile else model
    trainer = net
    if env.world_size > 1:
        trainer = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[env.device] if env.device.type == "cuda" else None)
    return optimizer, scheduler, net, trainer


def to_device(batch, device: torch.device):
    return (t.to(device, non_blocking=True) for t in batch)


def train_step(trainer, optimizer, scheduler, batch, cfg: RunConfig,
               env: Distributed) -> list[float]:
    """One optimizer step; returns [loss * n, correct, n] summed over ranks (one copy to the
    host per step). A non-finite loss skips the update (the run is about to stop as
    diverged)."""
    inputs, positions, labels = to_device(batch, env.device)
    with autocast(cfg, env.device):
        logits = trainer(inputs, positions).float()
    loss, stats = loss_and_stats(logits, labels, cfg, env)
    stats = env.all_reduce(stats).tolist()
    if not math.isfinite(stats[0]):
        return stats
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    update(trainer.parameters(), optimizer, scheduler, cfg)
    return stats


def update(parameters, optimizer, scheduler, cfg: RunConfig) -> None:
    """The optimizer step from the gradients in `parameters`: clipped to train.grad_clip
    (over these parameters only: one run's), then the schedule's step."""
    if cfg.train.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(parameters, cfg.train.grad_clip)
    optimizer.step()
    scheduler.step()


# -- evaluation -------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, split, batch_size: int, cfg: RunConfig, env: Distributed):
    """(mean loss, score) over a whole split, or (None, None) for an empty one; the score
    is accuracy, or mAP for a multi-label split."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=env.device)
    scores, targets = [], []
    for batch in split.batches(batch_size, seed=cfg.train.order_seed, epoch=0, train=False,
                               rank=env.rank, world_size=env.world_size):
        if len(batch.labels) == 0:  # this rank's share of the last batch is empty
            continue
        inputs, positions, labels = to_device(batch, env.device)
        with autocast(cfg, env.device):
            logits = model(inputs, positions).float()
        loss, hits = loss_and_hits(logits, labels, reduction="sum")
        if hits is None:
            scores.append(logits.cpu())
            targets.append(labels.cpu())
            hits = loss.new_zeros(())
        sums += torch.stack([loss, hits, torch.tensor(len(labels), device=env.device)]).double()
    model.train(was_training)
    loss, correct, count = env.all_reduce(sums).tolist()
    if split.labels.is_floating_point():  # multi-hot: the score is mAP
        width = split.labels.shape[1]
        score = mean_average_precision(
            gather(torch.cat(scores) if scores else torch.zeros(0, width), env),
            gather(torch.cat(targets) if targets else torch.zeros(0, width), env))
        return (loss / count, score) if count else (None, None)
    return (loss / count, correct / count) if count else (None, None)


# -- the step of a seed pack ------------------------------------------------------------


def turns(seeds: list) -> list[list[float] | Exception]:
    """One optimizer step of each seed, one after another, each in its own RNG streams;
    a seed whose step raises gets its exception in place of its statistics."""
    stats: list[list[float] | Exception] = []
    for seed in seeds:
        set_rng_state(seed.rng)
        try:
            stats.append(seed.run.train_step(seed.batch))
        except Exception as exc:
            stats.append(exc)
        seed.rng = rng_state()
    return stats


class Batched:
    """One optimizer step of every seed through one batched model: the seeds' parameters
    stacked, one vmapped forward of the K batches through a copy of the first seed's
    modules (functional_call) and one backward; then each seed's own gradients (a slice
    of the stacked ones, averaged over ranks as DDP would) go to its own optimizer, clip
    and schedule (update), so that LAMB's trust ratios and the clip are per seed.

    The stack is rebuilt from the seeds' parameters at every step (a copy of the weights,
    small next to a step): the seeds' own models stay the truth that checkpoints,
    evaluation and resumption read, and seeds may join at different steps or leave. The
    copy (`template`) only lends its modules and buffers to functional_call, which does
    not hand tied (shared) parameters back intact. The model draws no random numbers in
    training (no dropout), so the seeds' RNG streams are not touched."""

    def __init__(self):
        self.template: torch.nn.Module | None = None

    def __call__(self, seeds: list) -> list[list[float]]:
        runs = [seed.run for seed in seeds]
        cfg, env = runs[0].cfg, runs[0].env
        if self.template is None:
            self.template = copy.deepcopy(runs[0].model)
        names = [name for name, _ in runs[0].model.named_parameters()]
        stacked = {name: torch.stack([p.detach() for p in params]).requires_grad_()
                   for name, *params in zip(names, *(
                       [p for _, p in run.model.named_parameters()] for run in runs),
                       strict=True)}
        inputs, positions, labels = (torch.stack(list(t)).to(env.device, non_blocking=True)
                                     for t in zip(*(seed.batch for seed in seeds), strict=True))

        def forward(params, inputs, positions):
            return functional_call(self.template, params, (inputs, positions))

        with autocast(cfg, env.device):
            logits = torch.func.vmap(forward)(stacked, inputs, positions).float()
        losses, stats = zip(*(loss_and_stats(logits[k], labels[k], cfg, env)
                              for k in range(len(runs))), strict=True)
        stats = env.all_reduce(torch.stack(stats)).tolist()
        finite = [math.isfinite(s[0]) for s in stats]
        if not any(finite):
            return stats
        # A seed whose loss is not finite (it stops as diverged) adds nothing to the others.
        total = sum(loss for loss, ok in zip(losses, finite, strict=True) if ok)
        grads = torch.autograd.grad(total, list(stacked.values()), allow_unused=True)
        if env.world_size > 1:
            for grad in grads:
                if grad is not None:
                    env.all_reduce(grad).div_(env.world_size)
        for k, (run, ok) in enumerate(zip(runs, finite, strict=True)):
            if not ok:
                continue
            run.optimizer.zero_grad(set_to_none=True)
            for (_, param), grad in zip(run.model.named_parameters(), grads, strict=True):
                param.grad = None if grad is None else grad[k]
            update(run.model.parameters(), run.optimizer, run.scheduler, cfg)
        return stats


STEPS = {"turns": lambda: turns, "batched": Batched}  # name -> a new pack's step


def pack_step(cfg: RunConfig, device: torch.device, step: str = "auto") -> str:
    """The step a pack of cfg's seeds takes, `turns` or `batched` (STEPS). `auto` is
    `batched` on a GPU, where it is the point of packing, and `turns` on a CPU, where
    the batched step measured no faster (docs/performance.md, "Seed packing"). Only the
    Perceiver batches: the ResNet baseline's batch norm updates running statistics,
    which vmap cannot do per seed in place, and a compiled model is compiled for one
    seed's module, not the vmapped function."""
    if step not in (*STEPS, "auto"):
        raise ConfigError(f"unknown pack step {step!r}: choose turns, batched or auto")
    batchable = cfg.model.arch == "perceiver" and not cfg.train.compile
    if step == "batched" and not batchable:
        raise ConfigError("the batched pack step takes model.arch=perceiver without "
                          "train.compile: use the turns step")
    if step == "auto":
        return "batched" if batchable and device.type == "cuda" else "turns"
    return step


