"""Seed-packed training: the seeds of one config trained together in one process
(`perceiver-ablate sweep --pack-seeds K`; docs/performance.md, "Seed packing").

Every seed of a pack is its own Run (experiments/train.py): its own model, optimizer and
schedule (so LAMB's trust ratios and any gradient clipping are per seed by construction),
its own batch order, its own RNG stream, and its own run folder, records and checkpoint.
Each Run's loop is a coroutine (Run.steps) that yields the batch it wants trained on and
takes back the step's statistics. This module keeps the pack's lifecycle: which configs
form a pack (`pack_key`, `packs`), each seed between its steps (`Seed`), and the loop
that trains the live seeds and records each one's end (`train_pack`). The step itself,
one seed after another (`turns`) or one batched model (`Batched`), is experiments/
engine.py's (`pack_step` picks it).

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

import os
import sys
from contextlib import ExitStack

from experiments.config import RunConfig
from experiments.data import load_splits
from experiments.distributed import init_distributed
from experiments.engine import STEPS, pack_step
from experiments.runfolder import RunFolder
from experiments.seeding import rng_state, set_rng_state
from experiments.train import Run, record_failure, train_run
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


def train_pack(cfgs: list[RunConfig], run_folders: list[RunFolder | str | os.PathLike],
               step: str = "auto") -> list[dict]:
    """Train the seeds `cfgs` (one config, seeds apart) into `run_folders` (RunFolders or
    their paths), each optimizer step of the live seeds by `step` (pack_step), and return
    their result.json in order. Finished runs are returned as they are; a seed that fails
    records `failed` (one whose checkpoint is another run's records nothing) and the
    others train on; a RuntimeError naming the failures is raised at the end. A run folder
    another process trains raises RunBusy before anything is trained."""
    if len(cfgs) != len(run_folders):
        raise ValueError(f"{len(cfgs)} configs for {len(run_folders)} run folders")
    if len({pack_key(cfg) for cfg in cfgs}) > 1:
        raise ConfigError("a pack holds the seeds of one config: these configs differ in "
                          "more than train.seed, train.data_seed and train.init_seed")
    folders = [RunFolder(f) for f in run_folders]
    env = init_distributed()
    take_step = STEPS[pack_step(cfgs[0], env.device, step)]()
    if len(cfgs) == 1:
        return [train_run(cfgs[0], folders[0])]
    results = [f.finished_result(cfg) for cfg, f in zip(cfgs, folders, strict=True)]
    todo = [i for i, result in enumerate(results) if result is None]
    if not todo:
        return results
    splits = load_splits(cfgs[todo[0]])  # the seeds share the data, not its order
    live: dict[int, Seed] = {}
    failures: list[str] = []
    with ExitStack() as locks:
        for i in todo:
            run = Run(cfgs[i], folders[i], env, None, splits)
            if env.is_main:
                locks.enter_context(folders[i].lock())
            results[i] = folders[i].finished_result(cfgs[i])  # by another process meanwhile
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
    print(f"run {run.folder} of the pack failed: {type(exc).__name__}: {exc}",
          file=sys.stderr, flush=True)
    failures.append(f"{run.folder.id}: {type(exc).__name__}: {exc}")
