"""Verdicts (issue 18): results folders with a known truth, written as real run folders,
judged through the CLI; the intervals' coverage, the Holm adjustment and the seed planner
checked against simulation and statsmodels, vectorised over hundreds of replications."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from analysis import stats
from experiments import records
from experiments.cli import main
from experiments.config import resolve
from experiments.power import seeds_needed

BASE = {"model.num_latents": 32, "encoding.num_bands": 8, "train.epochs": 1}
SEEDS = range(5)
NOISE = 0.5  # points of seed noise
TRUTH = {  # knob level -> true effect in points against the base
    ("model.num_latents", 64): 2.0,
    ("encoding.num_bands", 16): 0.0,
}


def write_run(root: Path, overrides: dict, seed: int, test_acc: float) -> None:
    """A completed run folder as train.py leaves it: resolved config.yaml, result.json."""
    config = resolve({}, {**BASE, **overrides, "train.seed": seed})
    run_dir = root / config.run_id
    records.write_yaml(run_dir / records.CONFIG, config.to_dict())
    records.write_json(run_dir / records.RESULT, {
        "run_id": config.run_id, "status": "completed", "step": 100,
        "final": {"test_acc": test_acc, "val_acc": test_acc - 0.01},
        "best": {"val_acc": test_acc - 0.01, "step": 100}, "params": 1000, "macs": 10**6,
        "flops": 2 * 10**6, "wall_time_s": 1.0})


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> Path:
    """One base config and two one-knob variations, 5 seeds each: +2 points and no effect,
    with 0.5-point seed noise (each config's own draw: unpaired noise, shared seeds)."""
    root = tmp_path_factory.mktemp("known") / "sweep"
    rng = np.random.default_rng(7)
    for seed in SEEDS:
        write_run(root, {}, seed, (80 + rng.normal(0, NOISE)) / 100)
        for (knob, level), effect in TRUTH.items():
            write_run(root, {knob: level}, seed, (80 + effect + rng.normal(0, NOISE)) / 100)
    return root


@pytest.fixture(scope="module")
def judged(known) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["verdicts", str(known), "--json", "--delta", "1"]) == 0
    return json.loads(out.getvalue())


def row(judged: dict, knob: str) -> dict:
    (found,) = [r for r in judged["effects"] if r["knob"] == knob]
    return found


def test_known_effect_is_better_with_an_interval_holding_the_truth(judged):
    latents = row(judged, "model.num_latents")
    assert (latents["base"], latents["level"], latents["n_base"], latents["n_level"]) == \
        ("32", "64", 5, 5)
    assert latents["method"] == "unpaired"  # 5 shared seeds: fewer than stats.PAIRED_MIN
    assert latents["verdict"] == "better"
    assert latents["low"] < 2 < latents["high"] and latents["low"] > 0
    assert latents["p_improve"] == 1.0
    # exact permutation test: C(10, 5) splits, only the observed one and its mirror image
    # are as extreme -> p = 2/252
    assert latents["p"] == pytest.approx(2 / 252)


def test_null_effect_is_unresolved_with_its_half_width(judged):
    bands = row(judged, "encoding.num_bands")
    assert bands["low"] < 0 < bands["high"]
    half = (bands["high"] - bands["low"]) / 2
    assert bands["verdict"] == f"unresolved (±{half:.2f})"


def test_holm_equals_statsmodels(judged):
    p = [r["p"] for r in judged["effects"]]
    expected = multipletests(p, alpha=0.05, method="holm")[1]
    np.testing.assert_allclose([r["p_holm"] for r in judged["effects"]], expected)
    assert expected[0] != p[0]  # adjusted: two comparisons


def test_importance_gives_the_knob_its_variance_and_the_noise_a_row(judged):
    shares = {r["source"]: r for r in judged["importance"]}
    assert set(shares) == {"model.num_latents", "encoding.num_bands", "seed noise"}
    latents, bands = shares["model.num_latents"], shares["encoding.num_bands"]
    assert latents["share"] > 0.5 and latents["low"] <= latents["share"] <= latents["high"]
    assert bands["share"] < 0.1 and shares["seed noise"]["share"] < 0.4


def test_claims_table_judges_more_latents_and_bands(judged):
    claims = {c["claim"]: c for c in judged["claims"]}
    assert claims["more latents help"]["verdict"] == "confirmed"
    assert claims["more latents help"]["comparison"] == "64 vs 32"
    assert claims["more Fourier bands help"]["verdict"] == "unresolved at 5 seeds"
    assert claims["weight sharing beats no sharing"]["verdict"].startswith("not measured here")


def test_one_seed_gives_no_interval_and_says_so(tmp_path, capsys):
    for knob_value, acc in ((32, 0.80), (64, 0.82)):
        write_run(tmp_path, {"model.num_latents": knob_value}, 0, acc)
    assert main(["verdicts", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "one seed: no interval" in text and "+2.00 " in text


def test_bad_input_is_a_clear_error(known, tmp_path, capsys):
    assert main(["verdicts", str(known), "--metric", "final.nope"]) == 2
    assert "pick one of" in capsys.readouterr().err
    assert main(["verdicts", str(known), "--delta", "0"]) == 2
    assert "must be > 0" in capsys.readouterr().err
    assert main(["verdicts", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("paired, n", [(False, 5), (True, 10)])
def test_interval_coverage_over_400_replications(paired, n):
    rng = np.random.default_rng(1)
    base = rng.normal(80, NOISE, (400, n))
    level = (base if paired else rng.normal(80, NOISE, (400, n))) + 2 + \
        rng.normal(0, NOISE, (400, n)) * (1 if paired else 0)
    effect = stats.effect_interval(base, level, paired, seed=2, resamples=1999)
    covered = np.mean((effect.low <= 2) & (2 <= effect.high))
    assert 0.92 <= covered <= 0.98


def test_planner_within_one_seed_of_simulated_power():
    sd, delta = 1.0, 1.5
    planned = seeds_needed(sd, delta)
    rng = np.random.default_rng(3)
    power = {}
    for n in range(max(2, planned - 2), planned + 3):
        base = rng.normal(0, sd, (400, n))
        level = rng.normal(delta, sd, (400, n))
        effect = stats.effect_interval(base, level, False, seed=n, resamples=999)
        power[n] = np.mean(effect.low > 0)  # the verdict `better`
    simulated = min(n for n, p in power.items() if p >= 0.8)
    assert abs(simulated - planned) <= 1, (planned, power)


def test_sweep_dry_run_pilot_prints_the_seed_plan(known, capsys):
    assert main(["sweep", "table7-sharing", "--dry-run", "--pilot", str(known),
                 "--delta", "1"]) == 0
    out = capsys.readouterr().out
    groups = {}
    for run_dir in records.run_dirs(known):
        cfg = records.read_yaml(run_dir / records.CONFIG)
        acc = records.read_json(run_dir / records.RESULT)["final"]["test_acc"]
        key = (cfg["model"]["num_latents"], cfg["encoding"]["num_bands"])
        groups.setdefault(key, []).append(100 * acc)
    sd = np.sqrt(np.mean([np.var(v, ddof=1) for v in groups.values()]))
    needed = seeds_needed(sd, 1.0)
    assert f"varies by {sd:.2f} points" in out
    assert f"takes {needed} seeds per config: 2 configs x {needed} = {2 * needed} runs" in out
    assert main(["sweep", "table7-sharing", "--pilot", str(known)]) == 2
    assert "use it with --dry-run" in capsys.readouterr().err


def test_a_study_that_moves_every_knob_per_trial_holds_no_one_knob_ablation():
    """TPE gives every trial new values of several knobs: each knob then looks 'tied' to
    every other, and reading 'N=238 vs N=24' off two trials would credit N with whatever
    else changed. A grid study repeats every level and stays an ablation."""
    import pandas as pd

    from analysis.verdicts import find_comparisons, importance, pick_metric, searched_jointly

    rng = np.random.default_rng(0)
    tpe = pd.DataFrame({"trial.number": range(8), "status": "completed", "train.seed": 0,
                        "model.num_latents": rng.permutation(np.arange(16, 24)),
                        "train.lr": rng.uniform(1e-4, 1e-2, 8),
                        "final.test_acc": rng.uniform(0.6, 0.8, 8)})
    assert searched_jointly(tpe) and find_comparisons(tpe.assign(_value=1.0)) == []
    assert importance(tpe, pick_metric(tpe)).empty
    grid = pd.DataFrame([{"trial.number": i, "status": "completed", "train.seed": 0,
                          "model.num_latents": n, "train.lr": lr, "final.test_acc": 0.7}
                         for i, (n, lr) in enumerate((n, lr) for n in (16, 32)
                                                     for lr in (1e-3, 1e-2))])
    assert not searched_jointly(grid)
    assert {c.knob for c in find_comparisons(grid.assign(_value=0.7))} == \
        {"model.num_latents", "train.lr"}
