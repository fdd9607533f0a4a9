"""`perceiver-ablate demo [--out DIR]`: the main job on the embedded default (`make demo`).

A small but real ablation sweep on Fashion-MNIST (experiments/sweeps/demo.yaml, one knob
at a time around a base, several seeds each) trained here with the local executor, then
what analysis/demo.py concludes from it:

    OUT/index.md        everything below, with captions (the report's index + the maps)
    OUT/index.html      the same, self-contained
    OUT/verdicts.md|json  effects with intervals, paper claims, importance, seed plan
    OUT/runs/           the sweep's run folders and manifest (`perceiver-ablate status`)
    OUT/*.pdf|png|md|tex, OUT/results.parquet|csv     figures, tables, the results frame
    OUT/attention/      cross-attention maps of the best run

It is idempotent: a run id is its config's signature, so a second demo reuses every
finished run and trains only what is missing (a run cut short resumes from its checkpoint).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from experiments.commands import RESULTS, Command
from experiments.orchestration.executors import DEFAULT, EXECUTORS, Executor

DEMO_SWEEP = "demo"  # experiments/sweeps/demo.yaml
DEFAULT_OUT = RESULTS / "demo"
RUNS = "runs"
POLL_S = 5.0


class Demo(NamedTuple):
    index: Path  # OUT/index.md
    best: str | None  # run id of the run whose maps were drawn
    failed: list[str]  # run ids of the sweep's failed runs


def run_demo(out_dir: str | Path = DEFAULT_OUT, sweep: str | Path = DEMO_SWEEP,
             overrides: Mapping | Sequence[str] = (), executor: Executor = DEFAULT,
             images: int = 3, latents: int = 64, poll_s: float = POLL_S,
             log: Callable[[str], None] | None = None) -> Demo:
    """Sweep, report, attention maps of the best run. `sweep`, `overrides` (of its base
    config) and `executor` (one that runs here: local, debug) shrink it for tests."""
    from analysis.demo import conclude
    from experiments.formatting import duration
    from experiments.orchestration.follow import train_here
    from experiments.orchestration.sweeps import load_sweep
    from experiments.orchestration.tracking import run_states
    from perceiver_core.config import ConfigError

    log = log or (lambda text: print(text, flush=True))
    if not executor.runs_here:
        here = " or ".join(name for name, ex in EXECUTORS.items() if ex.runs_here)
        raise ConfigError(f"the demo runs on this machine: executor {executor.name!r} is not "
                          f"{here} (use `perceiver-ablate sweep --executor {executor.name}`)")
    start = time.time()
    out = Path(out_dir)
    spec = load_sweep(sweep, overrides)
    folder = out / RUNS
    train_here(spec, folder, executor, poll_s, log)
    trained = time.time()
    log(f"sweep done in {duration(trained - start)}; drawing figures and tables")
    run_ids = {p.run_id for p in spec.points}
    index, best = conclude(folder, out, run_ids, spec.axes, images, latents, log)
    failed = [s.run_id for s in run_states(folder) if s.state == "failed" and s.run_id in run_ids]
    log(f"demo done in {duration(time.time() - start)} (sweep {duration(trained - start)}, "
        f"figures and maps {duration(time.time() - trained)}): {index} "
        f"(and {index.with_suffix('.html')})"
        + (f"; {len(failed)} run(s) failed, listed there" if failed else ""))
    return Demo(index, best, failed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR",
                        help="where the runs (DIR/runs), figures, tables, attention maps and "
                             "index.md go (default: results/demo); a second demo into the "
                             "same folder reuses its finished runs")


def run(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")

    return 1 if run_demo(args.out or DEFAULT_OUT).failed else 0


COMMAND = Command("the main job: a small real ablation sweep, its figures and maps",
                  add_arguments, run)
