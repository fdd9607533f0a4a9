"""Seed-packed training: the seeds of one config trained together in one process
(`perceiver-ablate sweep --pack-seeds K`; docs/performance.md, "Seed packing").

Every seed of a pack is its own Run (experiments/train.py): its own model, optimizer and
schedule (so LAMB's trust ratios and any gradient clipping are per seed by construction),
its own batch order, its own RNG stream, and its own run folder, records and checkpoint.
Each Run's loop is a coroutine (Run.steps) that yields the batch it wants trained on and
takes back the step's statistics; the pack trains the live seeds' batches one of two
ways (`pack_step`):

- `turns`: one seed's own optimizer step after another, each in its own RNG streams, so
  each seed computes exactly what it computes alone (bit for bit);
- `batched`: one batched model (`Batched`): the seeds' parameters stacked, one
  torch.func.vmap'd forward and one backward over their K batches, then each seed's
  gradient slice through its own optimizer. Equal to a solo run up to the rounding of
  the batched matmuls. Needs the core's cross-attend kernel to be vmap-able
  (perceiver_core/attention.py, InputAttention.vmap); SDPA has no CPU batching rule, so
  on CPU vmap loops over the seeds there.

On a GPU, where small models leave the device idle, the batched step is the point of
packing; on CPU the turns are the default, as the batched step measured no faster
(docs/performance.md, "Seed packing"). Either way a pack killed at any point resumes
every seed from its own checkpoint, as a solo run would, and what the seeds share is the
process, the loaded data set and one scheduler task: on a SLURM cluster K seeds cost one
job, one start-up and one data load instead of K.

A pack is any list of configs that differ only in their seeds (`pack_key`), so a sweep
can add seeds to a config later and train them as a pack of their own.
"""

from __future__ import annotations

import copy
import math
import sys
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.func import functional_call

from experiments.config import RunConfig
from experiments.data import load_splits
from experiments.distributed import init_distributed
from experiments.runfolder import RunFolder
from experiments.train import (
    Run,
    autocast,
    finished_result,
    loss_and_stats,
    record_failure,
    rng_state,
    set_rng_state,
    train_run,
    update,
)
from perceiver_core.config import ConfigError

# The keys that tell the seeds of one config apart.
SEED_KEYS = {"train.seed": 0, "train.data_seed": None, "train.init_seed": None}


def pack_key(cfg: RunConfig) -> str:
    """The run id of cfg with its seeds at their defaults: equal for the seeds of a config."""
    return cfg.replace(SEED_KEYS).run_id


def packs(items: list, size: int, config=lambda item: item) -> list[list]:
    """`items` grouped by the pack_key of config(item), in first-seen order, into packs of
    at most `size`."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(pack_key(config(item)), []).append(item)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


class Seed:
    """One run of a pack, between its steps: its step coroutine (Run.steps), the batch it
    waits to be trained on, and its RNG streams."""

    def __init__(self, run: Run):
        self.run = run
        self.rng = rng_state()
        self.steps = run.steps()
        self.status: str | None = None  # fit's, for a run resumed at its end
        try:
            self.batch = next(self.steps)
        except StopIteration as end:
            self.status = end.value

    def advance(self, stats: list[float]) -> str | None:
        """Hand this seed its step's statistics: it writes the step's records in its own
        RNG streams and draws its next batch. fit's status once the run has ended, else
        None."""
        set_rng_state(self.rng)
        try:
            self.batch = self.steps.send(stats)
        except StopIteration as end:
            return end.value
        finally:
            self.rng = rng_state()
        return None


def turns(seeds: list[Seed]) -> list[list[float] | Exception]:
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
    and schedule (train.update), so that LAMB's trust ratios and the clip are per seed.

    The stack is rebuilt from the seeds' parameters at every step (a copy of the weights,
    small next to a step): the seeds' own models stay the truth that checkpoints,
    evaluation and resumption read, and seeds may join at different steps or leave. The
    copy (`template`) only lends its modules and buffers to functional_call, which does
    not hand tied (shared) parameters back intact. The model draws no random numbers in
    training (no dropout), so the seeds' RNG streams are not touched."""

    def __init__(self):
        self.template: torch.nn.Module | None = None

    def __call__(self, seeds: list[Seed]) -> list[list[float]]:
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


def train_pack(cfgs: list[RunConfig], run_dirs: list[Path], step: str = "auto") -> list[dict]:
    """Train the seeds `cfgs` (one config, seeds apart) into `run_dirs`, each optimizer step
    of the live seeds by `step` (pack_step), and return their result.json in order.
    Finished runs are returned as they are; a seed that fails records `failed` and the
    others train on; a RuntimeError naming the failures is raised at the end. A run folder
    another process trains raises RunBusy before anything is trained."""
    if len(cfgs) != len(run_dirs):
        raise ValueError(f"{len(cfgs)} configs for {len(run_dirs)} run folders")
    if len({pack_key(cfg) for cfg in cfgs}) > 1:
        raise ConfigError("a pack holds the seeds of one config: these configs differ in "
                          "more than train.seed, train.data_seed and train.init_seed")
    run_dirs = [Path(d) for d in run_dirs]
    env = init_distributed()
    take_step = STEPS[pack_step(cfgs[0], env.device, step)]()
    if len(cfgs) == 1:
        return [train_run(cfgs[0], run_dirs[0])]
    results = [finished_result(cfg, d) for cfg, d in zip(cfgs, run_dirs, strict=True)]
    todo = [i for i, result in enumerate(results) if result is None]
    if not todo:
        return results
    splits = load_splits(cfgs[todo[0]])  # the seeds share the data, not its order
    live: dict[int, Seed] = {}
    failures: list[str] = []
    with ExitStack() as locks:
        for i in todo:
            run = Run(cfgs[i], run_dirs[i], env, None, splits)
            if env.is_main:
                locks.enter_context(RunFolder(run_dirs[i]).lock())
            results[i] = finished_result(cfgs[i], run_dirs[i])  # by another process meanwhile
            if results[i] is not None:
                continue
            try:
                run.start()
                seed = Seed(run)
                if seed.status is None:
                    live[i] = seed
                else:
                    results[i] = run.conclude(seed.status)
            except Exception as exc:
                fail(run, exc, failures)
        while live:
            try:
                stats = take_step(list(live.values()))
            except Exception as exc:  # a batched step fails every seed in it
                for i in list(live):
                    fail(live.pop(i).run, exc, failures)
                break
            for i, seed_stats in zip(list(live), stats, strict=True):
                seed = live[i]
                try:
                    if isinstance(seed_stats, Exception):
                        raise seed_stats
                    status = seed.advance(seed_stats)
                    if status is not None:
                        results[i] = seed.run.conclude(status)
                except Exception as exc:
                    fail(seed.run, exc, failures)
                    del live[i]
                    continue
                if status is not None:
                    del live[i]
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(cfgs)} seeds of the pack failed: "
                          f"{'; '.join(failures)}")
    return results


def fail(run: Run, exc: Exception, failures: list[str]) -> None:
    record_failure(run, exc)
    print(f"run {run.run_dir} of the pack failed: {type(exc).__name__}: {exc}",
          file=sys.stderr, flush=True)
    failures.append(f"{run.run_dir.name}: {type(exc).__name__}: {exc}")
