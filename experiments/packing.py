"""Seed-packed training: the seeds of one config trained together in one process
(`perceiver-ablate sweep --pack-seeds K`; docs/performance.md, "Seed packing").

Every seed of a pack is its own Run (experiments/train.py): its own model, optimizer and
schedule (so LAMB's trust ratios and any gradient clipping are per seed by construction),
its own batch order, its own RNG stream (swapped in for each of its steps), and its own
run folder, records and checkpoint. The pack takes turns, one optimizer step of each live
seed at a time, so each seed computes exactly what it computes alone, and a pack killed
at any point resumes every seed from its own checkpoint, as a solo run would. What the
seeds share is the process, the loaded data set and one scheduler task: on a SLURM
cluster K seeds cost one job, one start-up and one data load instead of K.

Why turns and not one batched model (torch.func's stack_module_state + vmap, or an
ensemble dimension in every matmul): on CPU, vmap ran slower than the seeds one after
another, as SDPA and the cross-attend kernel InputAttention have no CPU batching rule; the
measured ratios are in docs/performance.md. A batched step would replace `turns` below;
the seeds' records, folders and resumption would stay as they are.

A pack is any list of configs that differ only in their seeds (`pack_key`), so a sweep
can add seeds to a config later and train them as a pack of their own.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

from experiments.config import RunConfig
from experiments.data import load_splits
from experiments.distributed import init_distributed
from experiments.locks import run_lock
from experiments.train import (
    Run,
    finished_result,
    record_failure,
    rng_state,
    set_rng_state,
    train_run,
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
    """One run of a pack, between its turns: its step generator and its RNG streams."""

    def __init__(self, run: Run):
        self.run = run
        self.steps = run.steps()
        self.rng = rng_state()

    def turn(self) -> str | None:
        """One optimizer step in this seed's RNG streams; fit's status once the run has
        ended, else None."""
        set_rng_state(self.rng)
        try:
            next(self.steps)
        except StopIteration as end:
            return end.value
        self.rng = rng_state()
        return None


def train_pack(cfgs: list[RunConfig], run_dirs: list[Path]) -> list[dict]:
    """Train the seeds `cfgs` (one config, seeds apart) into `run_dirs`, taking turns, and
    return their result.json in order. Finished runs are returned as they are; a seed that
    fails records `failed` and the others train on; a RuntimeError naming the failures is
    raised at the end. A run folder another process trains raises RunBusy before anything
    is trained."""
    if len(cfgs) != len(run_dirs):
        raise ValueError(f"{len(cfgs)} configs for {len(run_dirs)} run folders")
    if len({pack_key(cfg) for cfg in cfgs}) > 1:
        raise ConfigError("a pack holds the seeds of one config: these configs differ in "
                          "more than train.seed, train.data_seed and train.init_seed")
    run_dirs = [Path(d) for d in run_dirs]
    if len(cfgs) == 1:
        return [train_run(cfgs[0], run_dirs[0])]
    results = [finished_result(cfg, d) for cfg, d in zip(cfgs, run_dirs, strict=True)]
    todo = [i for i, result in enumerate(results) if result is None]
    if not todo:
        return results
    env = init_distributed()
    splits = load_splits(cfgs[todo[0]])  # the seeds share the data, not its order
    live: dict[int, Seed] = {}
    failures: list[str] = []
    with ExitStack() as locks:
        for i in todo:
            run = Run(cfgs[i], run_dirs[i], env, None, splits)
            if env.is_main:
                locks.enter_context(run_lock(run_dirs[i]))
            results[i] = finished_result(cfgs[i], run_dirs[i])  # by another process meanwhile
            if results[i] is not None:
                continue
            try:
                run.start()
            except Exception as exc:
                fail(run, exc, failures)
                continue
            live[i] = Seed(run)
        while live:
            for i, seed in list(live.items()):
                try:
                    status = seed.turn()
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
