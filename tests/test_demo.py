"""The demo (issue 7): the shipped sweep has the ablations it promises, and the demo on a
drastically shrunk sweep runs end to end, writes its index with every figure, table and
attention map, and reuses its runs the second time."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import yaml  # noqa: E402

from analysis.commands import demo as D  # noqa: E402
from experiments.orchestration.executors import EXECUTORS  # noqa: E402
from experiments.orchestration.follow import balanced, train_here  # noqa: E402
from experiments.orchestration.sweeps import load_sweep  # noqa: E402
from experiments.records import read_json  # noqa: E402
from perceiver_core.config import ConfigError  # noqa: E402


def test_shipped_demo_sweep_gives_verdicts_not_trends():
    """At least 3 seeds per config, and one-knob variations around one base whose levels
    are far apart (N 4 vs 32, 1 vs 8 bands, learned vs Fourier positions) plus one cross-attend."""
    sweep = load_sweep(D.DEMO_SWEEP)
    configs = [p.config for p in sweep.points]
    seeds = {c.train.seed for c in configs}
    assert len(seeds) >= 3
    assert all(c.data.name == "fashion_mnist" for c in configs)
    base = configs[0]

    def one_knob(key):
        """Values of `key` among the configs that differ from the base only there."""
        flat = base.flat()
        return {c.flat()[key] for c in configs
                if {k for k, v in c.flat().items() if flat[k] != v} <= {key, "train.seed"}}

    assert one_knob("model.num_latents") == {4, 32}
    assert one_knob("encoding.num_bands") == {1, 8}
    assert one_knob("model.num_cross_attends") == {1, 2}
    assert one_knob("encoding.kind") == {"fourier", "learned"}
    per_config = {}
    for c in configs:
        key = tuple(v for k, v in c.flat().items() if k != "train.seed")
        per_config[key] = per_config.get(key, 0) + 1
    assert set(per_config.values()) == {len(seeds)}  # every config has every seed


def test_runs_are_ordered_seed_major_so_local_jobs_balance():
    points = load_sweep(D.DEMO_SWEEP).points
    ordered = balanced(points)
    seeds = sorted({p.config.train.seed for p in points})
    per_seed = len(ordered) // len(seeds)
    for i, seed in enumerate(seeds):  # seed-major: every config of seed 0, then of seed 1...
        chunk = ordered[i * per_seed:(i + 1) * per_seed]
        assert {p.config.train.seed for p in chunk} == {seed}
        assert [{**p.params, "train.seed": 0} for p in chunk] == [
            {**p.params, "train.seed": 0} for p in ordered[:per_seed]]


@pytest.fixture
def tiny_sweep(tmp_path, tiny_fashion_mnist) -> Path:
    """Three tiny configs (N x cross-attends), a few steps each, on 1024 real images."""
    spec = {
        "base": {"preset": "fashion-mnist",
                 "model": {"latent_channels": 16, "latent_heads": 2, "num_blocks": 2,
                           "self_attends_per_block": 1},
                 "encoding": {"num_bands": 4},
                 "data": {"root": str(tiny_fashion_mnist), "val_size": 100},
                 "train": {"max_steps": 3, "batch_size": 32, "eval_every": 2}},
        "zip": {"model.num_latents": [8, 4, 8], "model.num_cross_attends": [2, 2, 1]},
        "seeds": [0]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_demo_end_to_end_on_a_tiny_sweep(tiny_sweep, tmp_path):
    out = tmp_path / "demo"
    lines: list[str] = []
    demo = D.run_demo(out, sweep=tiny_sweep, executor=EXECUTORS["debug"], images=1, latents=8,
                      poll_s=0.1, log=lines.append)
    assert demo.index == out / "index.md" and demo.failed == []
    runs = {p.name: read_json(p / "result.json") for p in (out / "runs").iterdir()
            if (p / "result.json").is_file()}
    assert len(runs) == 3 and {r["status"] for r in runs.values()} == {"completed"}
    best = max(runs, key=lambda r: runs[r]["final"]["test_acc"])
    assert demo.best == best

    text = demo.index.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert all((out / link).is_file() for link in links)
    linked = {Path(link).name for link in links}
    assert {"fig5_hyperparameters.png", "table6_cross_attends.md", "results.csv",
            "attention_logits_overview_0.png", "attention_logits_closeups_0.png"} <= linked
    assert f"Run {best} (" in text  # a run id is shown as literal text
    assert text.index("## Verdicts") < text.index("## Figures")
    html = (out / "index.html").read_text()  # rewritten after the maps were appended
    assert "Cross-attention maps of the best run" in html and 'src="attention/' not in html
    # it ends by printing the verdict table: N 4 vs 8 and cross-attends 1 vs 2, one seed each
    table = next(line for line in lines if line.startswith("verdicts ("))
    assert "too few seeds (1)" in table and "latents N" in table
    # Progress was reported while it ran, then where the index is.
    assert any("3 completed of 3" in line and "ETA" in line for line in lines)
    assert str(demo.index) in lines[-1]

    # A second demo reuses every run: nothing is trained again.
    stamps = {run_id: (out / "runs" / run_id / "result.json").stat().st_mtime_ns
              for run_id in runs}
    again: list[str] = []
    train_here(load_sweep(tiny_sweep), out / "runs", EXECUTORS["debug"], 0.1, again.append)
    assert "3 completed; 0 to train" in again[0]
    assert stamps == {run_id: (out / "runs" / run_id / "result.json").stat().st_mtime_ns
                      for run_id in runs}


def test_demo_runs_only_on_this_machine(tmp_path):
    with pytest.raises(ConfigError, match="local or debug"):
        D.run_demo(tmp_path, executor=EXECUTORS["slurm"])
