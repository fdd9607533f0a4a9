"""`make bench-packing` (= `python benchmarks/packing.py`): training samples/s of K seeds
packed into one process (experiments/packing.py), by turns and by the batched step,
against the same K seeds trained one after another, in one process, the three arms'
order rotated from repeat to repeat so that load from elsewhere on a shared machine
falls on all of them.

Samples/s is the batch over the median per-seed step time (sequential: one step of one
run, its data and records included; a pack: one step of all its live seeds, RNG swaps,
records and next batches included, over the number of seeds); each packed arm's ratio
to sequential is the geometric mean over repeats of the paired runs' median step times,
with a t interval over the repeats (`summarise`). Every arm trains real Fashion-MNIST
batches through the training loop's own steps (data, forward, backward, LAMB, schedule;
one checkpoint at the end) for --steps steps per seed, one thread, no validation split
(data.val_size=0) and no test pass: what is timed is the training that packing changes.
Building the models and loading the data are outside the timing in every arm (a pack
loads the data once for K seeds, where a sweep of solo runs loads it K times, in K
processes: a saving this benchmark leaves out).

Shapes: `demo` (experiments/sweeps/demo.yaml's base: N=32, D=64, 4 blocks, 2 cross-attends,
batch 64) and `fashion-mnist` (the default preset: 2 blocks, batch 64).

Results: benchmarks/results/packing.json and packing.md (docs/performance.md, "Seed
packing", quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from experiments.config import RunConfig, load_config
from experiments.data import load_splits
from experiments.distributed import Distributed
from experiments.engine import STEPS
from experiments.orchestration.sweeps import load_sweep
from experiments.packing import Seed
from experiments.runfolder import RunFolder
from experiments.train import Run

HERE = Path(__file__).resolve().parent
DEVICE = torch.device("cpu")  # --device
RESULTS = HERE / "results"
SHAPES = ("demo", "fashion-mnist")
BENCH = {"data.val_size": 0, "train.eval_every": None}


def shape_config(shape: str, steps: int) -> RunConfig:
    overrides = {**BENCH, "train.max_steps": steps}
    if shape == "demo":
        return load_sweep("demo").points[0].config.replace(overrides)
    return load_config(None, overrides)


def runs(cfg: RunConfig, seeds: int, root: Path, splits) -> list[Run]:
    env = Distributed(0, 1, DEVICE)
    built = []
    for seed in range(seeds):
        run = Run(cfg.replace({"train.seed": seed}), RunFolder(root / f"seed{seed}"), env, None,
                  splits)
        run.start()
        built.append(run)
    return built


def sequential(cfg: RunConfig, seeds: int, root: Path, splits) -> list[float]:
    """Seconds of each optimizer step of `seeds` runs trained one after another (the
    step, its data and its records)."""
    times = []
    for run in runs(cfg, seeds, root, splits):
        steps = run.steps()
        tick = time.perf_counter()
        batch = next(steps)
        while batch is not None:
            stats = run.train_step(batch)
            try:
                batch = steps.send(stats)
            except StopIteration:
                batch = None
            times.append(time.perf_counter() - tick)
            tick = time.perf_counter()
    return times


def packed(step: str):
    def arm(cfg: RunConfig, seeds: int, root: Path, splits) -> list[float]:
        """Seconds per seed of each optimizer step of `seeds` runs trained as a pack by
        `step`: one step of every live seed (RNG swaps, records and next batches
        included) over the number of seeds."""
        live = [Seed(run) for run in runs(cfg, seeds, root, splits)]
        take_step = STEPS[step]()
        times = []
        while live:
            tick = time.perf_counter()
            stats = take_step(live)
            live = [seed for seed, s in zip(live, stats, strict=True)
                    if seed.advance(s) is None]
            times += [(time.perf_counter() - tick) / len(stats)] * len(stats)
        return times
    return arm


ARMS = {"sequential": sequential, "turns": packed("turns"), "batched": packed("batched")}
PACKED = ("turns", "batched")


def measure(shape: str, seeds: int, steps: int, repeats: int,
            arms: tuple[str, ...] = tuple(ARMS)) -> dict:
    """Per-step times of `arms` (sequential first), each run `repeats` times, their order
    rotated from one repeat to the next (so that none always runs first)."""
    cfg = shape_config(shape, steps)
    splits = load_splits(cfg)
    times: dict[str, list[list[float]]] = {arm: [] for arm in arms}
    for repeat in range(repeats):
        shift = repeat % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            with tempfile.TemporaryDirectory() as root:
                times[arm].append(ARMS[arm](cfg, seeds, Path(root), splits))
    return summarise({"shape": shape, "seeds": seeds, "steps": steps,
                      "batch_size": cfg.train.batch_size, "repeats": repeats,
                      "step_times_s": times})


def summarise(row: dict) -> dict:
    """Samples/s of each arm (the batch over the median per-seed step time of all its
    runs) and each packed arm's ratio to sequential with a 95% interval over the
    repeats: each run's median step time (medians, as load from elsewhere comes in
    bursts), the i-th runs of the arms paired, a t interval of the log ratios. Load that
    covers a whole run moves a run's median, so the interval is over runs, not steps."""
    times = row["step_times_s"]
    medians = {arm: np.array([np.median(run) for run in runs]) for arm, runs in times.items()}
    ratios = {}
    for arm in (arm for arm in PACKED if arm in times):
        logs = np.log(medians["sequential"] / medians[arm])
        low, high = stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
        ratios[arm] = {"ratio": float(np.exp(logs.mean())),
                       "ratio_95": [float(np.exp(low)), float(np.exp(high))]}
    everything = {arm: np.concatenate(runs) for arm, runs in times.items()}
    return {**row,
            "samples_per_s": {arm: row["batch_size"] / float(np.median(t))
                              for arm, t in everything.items()},
            "run_medians_s": {arm: m.tolist() for arm, m in medians.items()},
            "ratios": ratios}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.startswith("Model name")]
    return names[0] if names else platform.processor()


def markdown(report: dict) -> str:
    lines = [f"Seed packing on {report['device']}, {report['threads']} thread, torch "
             f"{report['torch']}, {report['date']}, load average "
             f"{report['load_average'][0]:.1f} -> {report['load_average'][1]:.1f}.", "",
             "| shape | K seeds | steps/seed x repeats | sequential samples/s | "
             "turns samples/s | batched samples/s | turns / sequential [95% CI] | "
             "batched / sequential [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        rates = row["samples_per_s"]
        cells = [f"{rates[arm]:.0f}" if arm in rates else "-" for arm in PACKED]
        cells += [f"{r['ratio']:.3f} [{r['ratio_95'][0]:.3f}, {r['ratio_95'][1]:.3f}]"
                  if r else "-" for r in (row["ratios"].get(arm) for arm in PACKED)]
        lines.append(f"| {row['shape']} | {row['seeds']} | {row['steps']} x {row['repeats']} | "
                     f"{rates['sequential']:.0f} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[4, 8], metavar="K")
    parser.add_argument("--steps", type=int, default=30, help="training steps per seed")
    parser.add_argument("--repeats", type=int, default=4, help="runs of each arm per row")
    parser.add_argument("--packed", nargs="+", choices=PACKED, default=list(PACKED),
                        help="the packed arms measured against sequential")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the seeds' device")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = [measure(shape, k, args.steps, args.repeats, ("sequential", *args.packed))
            for shape in args.shapes for k in args.seeds]
    device = (torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else cpu_name())
    report = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "load_average": [load_before, os.getloadavg()[0]], "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "packing.json").write_text(json.dumps(report, indent=1))
    (args.out / "packing.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
