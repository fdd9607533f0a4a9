"""The main job on the embedded default: `perceiver-ablate demo` (`make demo`).

A small but real ablation sweep on Fashion-MNIST (experiments/sweeps/demo.yaml: latents N,
Fourier bands, number and placement of cross-attends, one knob at a time, four seeds each)
through the local executor, then the report `perceiver-ablate figures` writes (verdicts
first), then the cross-attention maps of the best run; it ends by printing the verdicts,
so the demo concludes what it can and says what it cannot:

    OUT/index.md        everything below, with captions (write_report's index + the maps)
    OUT/index.html      the same, self-contained
    OUT/verdicts.md|json  effects with intervals, paper claims, importance, seed plan
    OUT/runs/           the sweep's run folders and manifest (`perceiver-ablate status`)
    OUT/*.pdf|png|md|tex, OUT/results.parquet|csv     figures, tables, the results frame
    OUT/attention/      cross-attention maps of the best run

It is idempotent: a run id is its config's hash, so a second demo reuses every finished
run and trains only what is missing (a run cut short resumes from its checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from experiments.orchestration.sweeps import SEED_KEY, Point, Sweep, load_sweep
from experiments.records import atomic_write_text
from perceiver_core.config import ConfigError

DEMO_SWEEP = "demo"  # experiments/sweeps/demo.yaml
DEFAULT_OUT = Path("results") / "demo"
RUNS = "runs"
POLL_S = 5.0
QUIET_S = 30.0  # longest silence between progress lines while nothing changes


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def balanced(points: Sequence[Point]) -> list[Point]:
    """Seed-major order. The local executor gives each job a contiguous share of the
    points; in this order, with as many seeds as jobs, every job trains one seed of every
    config, so the jobs take the same time and none idles at the end."""
    return sorted(points, key=lambda p: (p.config.train.seed, p.index))


def total_steps(point: Point) -> int:
    from experiments.commands.sweep import samples_seen

    return samples_seen(point.config) // point.config.train.batch_size


class Progress:
    """Prints which runs are done and running, and an ETA, as they change."""

    def __init__(self, sweep: Sweep, folder: Path, todo: Sequence[Point],
                 log: Callable[[str], None]):
        self.folder, self.log = folder, log
        self.ids = {p.run_id for p in sweep.points}
        self.steps = {p.run_id: total_steps(p) for p in todo}
        self.start = time.time()
        self.last: tuple = ()
        self.last_time = 0.0

    def poll(self) -> bool:
        """Print a line if anything changed (or QUIET_S passed); False once nothing of the
        sweep is queued or running."""
        from experiments.orchestration.tracking import ACTIVE, FINISHED, run_states

        states = [s for s in run_states(self.folder) if s.run_id in self.ids]
        counts: dict[str, int] = {}
        for s in states:
            counts[s.state] = counts.get(s.state, 0) + 1
        training = [s for s in states if s.state == "running"
                    and s.result.get("status") == "running"]
        done = sum(min(1.0, s.result.get("step", 0) / self.steps[s.run_id])
                   if s.state not in FINISHED else 1.0 for s in states if s.run_id in self.steps)
        elapsed = time.time() - self.start
        fraction = done / len(self.steps) if self.steps else 1.0
        eta = duration(elapsed * (1 - fraction) / fraction) if fraction > 0 else "-"
        waiting = sum(counts.get(state, 0) for state in ACTIVE) - len(training)
        finished = ", ".join(f"{counts[s]} {s}" for s in (*FINISHED, "failed") if s in counts)
        running = ", ".join(f"{s.run_id} step {s.result.get('step', 0)}/"
                            f"{self.steps.get(s.run_id, '?')}" for s in training)
        key = (tuple(sorted(counts.items())), running)
        if key != self.last or time.time() - self.last_time >= QUIET_S:
            self.log(f"[{duration(elapsed)}] {finished or '0 finished'} of {len(states)}; "
                     f"training: {running or '-'}; waiting: {waiting}; "
                     f"{100 * fraction:.0f}% of the work done, ETA {eta}")
            self.last, self.last_time = key, time.time()
        return any(s.state in ACTIVE for s in states)


def run_sweep(sweep: Sweep, folder: Path, executor: str, poll_s: float,
              log: Callable[[str], None]) -> None:
    """Submit what is missing (failed runs again: they resume from their checkpoints),
    then follow the runs until none is queued or running."""
    from experiments.commands.sweep import wait
    from experiments.orchestration.cluster import load_profile
    from experiments.orchestration.submit import plan, submit
    from experiments.orchestration.tracking import run_states

    stale = [s.run_id for s in run_states(folder) if s.run_id not in
             {p.run_id for p in sweep.points}]
    if stale:
        log(f"warning: {folder} holds {len(stale)} run(s) of another sweep definition "
            f"({', '.join(stale[:4])}{', ...' if len(stale) > 4 else ''}); they appear in the "
            "figures: delete them or pass another --out")
    todo, kept = plan(sweep, folder, rerun_failed=True)
    reused = ", ".join(f"{len(points)} {state}" for state, points in sorted(kept.items()))
    log(f"demo sweep {sweep.path}: {len(sweep.points)} runs in {folder} "
        f"({reused or 'none finished yet'}; {len(todo)} to train)")
    if todo:
        entry = submit(sweep, balanced(todo), folder, load_profile("local"), executor=executor)
        log(f"submitted {len(todo)} run(s) as {len(entry['jobs'])} {executor} job(s), "
            f"{entry['runs_per_job']} run(s) each; `perceiver-ablate status {folder}` shows "
            "them too")
    progress = Progress(sweep, folder, todo, log)
    while progress.poll():
        time.sleep(poll_s)
    wait(folder, {p.run_id for p in sweep.points})  # the jobs' processes have exited too


def best_run(folder: Path, run_ids: set[str]):
    """The completed Perceiver run of the sweep with the highest accuracy (a load_results
    row), or None."""
    from analysis.results import finished, load_results

    runs, _ = finished(load_results(folder))
    runs = runs[runs["run_id"].isin(run_ids) & (runs["status"] == "completed")
                & (runs["model.arch"] == "perceiver") & runs["acc"].notna()]
    return None if runs.empty else runs.loc[runs["acc"].idxmax()]


def attention_section(best, acc_label: str, axes: Sequence[str], written, out: Path) -> str:
    from analysis.style import label

    setting = ", ".join(f"{label(a)}={best[a]}" for a in axes if a != SEED_KEY)
    lines = ["## Cross-attention maps of the best run", "",
             f"Run `{best['run_id']}` ({setting}, seed {best[SEED_KEY]}): "
             f"{acc_label.removesuffix(' (%)')} {best['acc']:.2f}%. Maps of other runs: "
             f"`perceiver-ablate attention {Path(best['run_dir'])}`.", ""]
    for name, plot, paths in written:
        png, pdf = (next(p for p in paths if p.suffix == s) for s in (".png", ".pdf"))
        png, pdf = png.relative_to(out), pdf.relative_to(out)
        lines += [f"### {name}", "", plot.caption, "", f"![{name}]({png})", "",
                  f"[PDF]({pdf}) · [PNG]({png})", ""]
    return "\n".join(lines)


def verdict_table(verdicts_json: Path) -> str:
    """The effects table of the report's verdicts.json, short enough for a terminal."""
    import json

    import pandas as pd

    from analysis.style import label
    from analysis.verdicts import interval_text

    effects = pd.DataFrame(json.loads(verdicts_json.read_text())["effects"])
    if len(effects):  # JSON null (no interval) back to NaN
        effects[["low", "high"]] = effects[["low", "high"]].astype(float)
    if effects.empty:
        return "(no one-knob ablation among the runs)"
    rows = [{"knob": label(r.knob), "level vs base": f"{r.level} vs {r.base}",
             "seeds": f"{r.n_level} vs {r.n_base}",
             "effect [95% CI] (points)": interval_text(r.effect, r.low, r.high),
             "verdict": r.verdict} for r in effects.itertuples(index=False)]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


class Demo(NamedTuple):
    index: Path  # OUT/index.md
    best: str | None  # run id of the run whose maps were drawn
    failed: list[str]  # run ids of the sweep's failed runs


def run_demo(out_dir: str | Path = DEFAULT_OUT, sweep: str | Path = DEMO_SWEEP,
             overrides: Mapping | Sequence[str] = (), executor: str = "local",
             images: int = 3, latents: int = 64, poll_s: float = POLL_S,
             log: Callable[[str], None] | None = None) -> Demo:
    """Sweep, report, attention maps of the best run. `sweep`, `overrides` (of its base
    config) and `executor` (local | debug) shrink it for tests."""
    from analysis.attention import write_attention
    from analysis.html import write_html
    from analysis.report import write_report
    from analysis.results import accuracy, load_results
    from experiments.orchestration.tracking import run_states

    log = log or (lambda text: print(text, flush=True))
    if executor not in ("local", "debug"):
        raise ConfigError(f"the demo runs on this machine: executor {executor!r} is not "
                          "local or debug (use `perceiver-ablate sweep --executor slurm`)")
    start = time.time()
    out = Path(out_dir)
    spec = load_sweep(sweep, overrides)
    folder = out / RUNS
    run_sweep(spec, folder, executor, poll_s, log)
    trained = time.time()
    log(f"sweep done in {duration(trained - start)}; drawing figures and tables")
    index = write_report(folder, out)
    best = best_run(folder, {p.run_id for p in spec.points})
    if best is None:
        log("no run completed: no attention maps (see the failed runs in the index)")
    else:
        log(f"attention maps of the best run {best['run_id']}")
        written = write_attention(best["run_dir"], out / "attention", images=images,
                                  latents=latents)
        _, acc_label = accuracy(load_results(folder))
        section = attention_section(best, acc_label, spec.axes, written, out)
        atomic_write_text(index, index.read_text().rstrip("\n") + "\n\n" + section)
        write_html(index)
    failed = [s.run_id for s in run_states(folder)
              if s.state == "failed" and s.run_id in {p.run_id for p in spec.points}]
    log("verdicts (every effect against the base, 95% bootstrap interval over seeds; "
        f"{index.with_name('verdicts.md')} has the claims, importance and seed plan):\n"
        + verdict_table(index.with_name("verdicts.json")))
    log(f"demo done in {duration(time.time() - start)} (sweep {duration(trained - start)}, "
        f"figures and maps {duration(time.time() - trained)}): {index} "
        f"(and {index.with_suffix('.html')})"
        + (f"; {len(failed)} run(s) failed, listed there" if failed else ""))
    return Demo(index, None if best is None else best["run_id"], failed)
