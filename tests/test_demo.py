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

from analysis import demo as D  # noqa: E402
from experiments.orchestration.sweeps import load_sweep  # noqa: E402
from experiments.records import read_json  # noqa: E402
from perceiver_core.config import ConfigError  # noqa: E402


def test_shipped_demo_sweep_covers_the_promised_ablations():
    sweep = load_sweep(D.DEMO_SWEEP)
    configs = [p.config for p in sweep.points]
    assert {c.train.seed for c in configs} == {0, 1}
    assert all(c.data.name == "fashion_mnist" for c in configs)
    base = configs[0]

    def one_knob(key):
        """Values of `key` among the configs that differ from the base only there."""
        flat = base.flat()
        return {c.flat()[key] for c in configs
                if {k for k, v in c.flat().items() if flat[k] != v} <= {key, "train.seed"}}

    assert len(one_knob("model.num_latents")) >= 3
    assert len(one_knob("encoding.num_bands")) >= 3
    placements = {(c.model.num_cross_attends, c.model.cross_attend_placement) for c in configs
                  if c.model.num_latents == base.model.num_latents
                  and c.encoding.num_bands == base.encoding.num_bands}
    assert {n for n, _ in placements} >= {1, 2, 4}
    assert {p for n, p in placements if n > 1} == {"interleaved", "at_start"}


def test_runs_are_ordered_seed_major_so_local_jobs_balance():
    points = load_sweep(D.DEMO_SWEEP).points
    ordered = D.balanced(points)
    half = len(ordered) // 2
    assert {p.config.train.seed for p in ordered[:half]} == {0}
    assert [p.params for p in ordered[:half]] == [
        {**p.params, "train.seed": 0} for p in ordered[half:]]


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
    demo = D.run_demo(out, sweep=tiny_sweep, executor="debug", images=1, latents=8,
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
    assert f"Run `{best}`" in text
    # Progress was reported while it ran, then where the index is.
    assert any("3 completed of 3" in line and "ETA" in line for line in lines)
    assert str(demo.index) in lines[-1]

    # A second demo reuses every run: nothing is trained again.
    stamps = {run_id: (out / "runs" / run_id / "result.json").stat().st_mtime_ns
              for run_id in runs}
    again: list[str] = []
    D.run_sweep(load_sweep(tiny_sweep), out / "runs", "debug", 0.1, again.append)
    assert "3 completed; 0 to train" in again[0]
    assert stamps == {run_id: (out / "runs" / run_id / "result.json").stat().st_mtime_ns
                      for run_id in runs}


def test_demo_runs_only_on_this_machine(tmp_path):
    with pytest.raises(ConfigError, match="local or debug"):
        D.run_demo(tmp_path, executor="slurm")
