"""`sweep --until-resolved`: the confidence sequence (its closed form against the Bayes
factor it inverts, its simulated family-wise error), a real sweep on tiny data that stops
a planted large effect after the first round and keeps adding seeds to a null, killed in
its second round and resumed, one round on the local SLURM cluster, and bad arguments."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.verdicts import simulation
from experiments import sequential
from experiments.cli import main
from experiments.orchestration.adaptive import STATE
from experiments.orchestration.sweeps import load_sweep
from experiments.orchestration.tracking import run_states
from experiments.runfolder import read_manifest

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = {  # tests/test_sweep.py's tiny model, 40 steps: enough to leave chance behind
    "model": {"num_latents": 8, "latent_channels": 16, "num_blocks": 1,
              "self_attends_per_block": 1, "num_cross_attends": 1, "latent_heads": 1},
    "encoding": {"num_bands": 2},
    "data": {"train_subset": 256, "val_size": 256, "image_size": 14},
    "train": {"max_steps": 40, "batch_size": 64, "eval_every": 20, "epochs": 100,
              "warmup_steps": 0, "lr": 0.02},
}
# base | lr 1e-7 (barely trains: a planted large effect) | eval every 20 (the same model:
# a null, kept open by a --delta too small to call it equivalent)
PLANTED = {"train.lr": [0.02, 1e-7, 0.02], "train.eval_every": [20, 20, 40]}
SLOW, NULL = "train.lr=1e-07 train.eval_every=20", "train.lr=0.02 train.eval_every=40"


def write_sweep(path: Path, seeds=(0, 1, 2, 3), zipped=None, root: Path | None = None) -> Path:
    base = {**TINY_BASE, "data": {**TINY_BASE["data"], **({"root": str(root)} if root else {})}}
    spec = {"base": base, "zip": zipped or PLANTED, "seeds": list(seeds)}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def bayes_factor(t, n1, n2, g):
    m, v = n1 * n2 / (n1 + n2), n1 + n2 - 2
    return (1 + m * g) ** -0.5 * ((1 + t ** 2 / v) / (1 + t ** 2 / (v * (1 + m * g)))) ** (
        (v + 1) / 2)


@pytest.mark.parametrize("n", [4, 6, 10, 30])
def test_the_critical_t_is_where_the_bayes_factor_reaches_one_over_alpha(n):
    alpha = 0.05 / 4
    t = float(sequential.critical_t(n, n, alpha))
    assert np.isfinite(t) and bayes_factor(t, n, n, sequential.PRIOR_SCALE) == \
        pytest.approx(1 / alpha, rel=1e-9)
    # wider than the fixed-n t interval it replaces: the price of looking every round
    from scipy import stats
    assert t > stats.t.ppf(1 - alpha / 2, 2 * n - 2)


def test_too_few_seeds_give_no_finite_interval_and_decisions_follow_the_interval():
    assert sequential.critical_t(2, 2, 0.0125) == np.inf
    effect, low, high = sequential.confidence_sequence([1.0, 2.0], [3.0, 5.0], 0.0125)
    assert effect == 2.5 and low == -np.inf and high == np.inf
    assert list(sequential.decide([1, -3, -0.4, -2], [2, -1, 0.4, 1], 0.5)) == [
        "better", "worse", "equivalent", "open"]
    assert list(sequential.decide([1, -3], [2, -1], 0.5, higher_is_better=False)) == [
        "worse", "better"]


def test_simulated_family_wise_error_under_the_null_is_at_most_five_percent():
    """2,000 simulated adaptive sweeps of the demo's shape (4 levels against one base, no
    true effect): at most 5% hold a `better` or `worse` at any round."""
    error = simulation.adaptive_family_error(reps=2000)
    assert error <= 0.05
    assert simulation.adaptive_family_error(reps=2000, anytime=False) > error  # naive looks


def run_cli(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments", *map(str, argv)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


@pytest.mark.slow  # 14 real runs: 40 s on 2 idle cores, 2 min under load
def test_stops_a_large_effect_keeps_going_on_a_null_and_resumes_after_a_kill(
        tmp_path, capsys, tiny_fashion_mnist):
    """Round 1 (4 seeds x 3 configs) decides lr 1e-7 `worse`; the null stays open, so
    round 2 adds a seed to it and the base only. The driver is killed -9 in round 2; a
    rerun continues the same rounds to the cap and trains no run twice."""
    sweep = write_sweep(tmp_path / "planted.yaml", root=tiny_fashion_mnist)
    out = tmp_path / "out"
    args = ["sweep", sweep, "--until-resolved", "--delta", "0.01", "--max-seeds", "5",
            "--round", "1", "--out", out]
    driver = run_cli(*args)
    deadline = time.time() + 240
    while time.time() < deadline and not (
            (out / STATE).exists() and len(read_manifest(out).get("submissions", [])) == 2):
        assert driver.poll() is None, driver.communicate()[0]
        time.sleep(0.2)
    state = json.loads((out / STATE).read_text())
    assert state["state"] == "running" and len(state["rounds"]) == 1
    assert [(r["level"], r["verdict"]) for r in state["decided"]] == [(SLOW, "worse")]
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    assert main([str(a) for a in args]) == 0
    text = capsys.readouterr().out
    state = json.loads((out / STATE).read_text())
    assert state["state"] == "done" and len(state["rounds"]) == 2, text
    assert [r["seeds"] for r in state["rounds"]] == [
        {"train.lr=0.02 train.eval_every=20": 4, SLOW: 4, NULL: 4},
        {"train.lr=0.02 train.eval_every=20": 5, SLOW: 4, NULL: 5}]
    (slow,) = state["decided"]
    assert slow["level"] == SLOW and slow["round"] == 1 and slow["high"] < 0
    (null,) = state["open"]
    assert null["level"] == NULL and null["seeds"] == 5 and null["low"] < 0 < null["high"]
    assert "still open at --max-seeds 5" in state["reason"]
    # 14 runs: no seed 4 for the decided level, and every run trained to completion once
    states = run_states(out)
    assert len(states) == 14 and {s.state for s in states} == {"completed"}
    assert all(s.result["final"]["test_acc"] > 0 for s in states)
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "--until-resolved (done): 2 round(s)" in shown
    assert f"{SLOW}: worse" in shown and f"{NULL}: open" in shown


def test_a_diverged_level_counts_at_chance_and_is_decided_worse(tmp_path, capsys,
                                                                tiny_fashion_mnist):
    """lr 1e30 diverges at step 2 on all four seeds: the rounds count those runs at chance
    accuracy (10 points for Fashion-MNIST), as the verdicts do, instead of stopping."""
    sweep = write_sweep(tmp_path / "diverging.yaml", seeds=(0, 1, 2, 3),
                        zipped={"train.lr": [0.02, 1e30]}, root=tiny_fashion_mnist)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--until-resolved", "--max-seeds", "4",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    state = json.loads((out / STATE).read_text())
    assert state["state"] == "done", text
    states = {s.run_id: s for s in run_states(out)}
    diverged = sorted(r for r, s in states.items() if s.state == "diverged")
    assert len(diverged) == 4 and sorted(state["rounds"][0]["at_chance"]) == diverged
    (row,) = state["decided"]
    assert row["level"] == "train.lr=1e+30" and row["verdict"] == "worse" and row["seeds"] == 4
    base = [100 * s.result["final"]["test_acc"] for s in states.values()
            if s.state == "completed"]
    assert row["effect"] == pytest.approx(10 - np.mean(base))
    assert "4 diverged run(s) counted at chance accuracy" in text
    assert main(["status", str(out)]) == 0
    assert "4 diverged run(s) counted at chance accuracy" in capsys.readouterr().out


@pytest.mark.slurm
def test_one_round_on_the_slurm_cluster(tmp_path, capsys, slurm_cluster, tiny_fashion_mnist):
    sweep = write_sweep(tmp_path / "two.yaml", seeds=(0, 1, 2),
                        zipped={"train.lr": [0.02, 1e-7]}, root=tiny_fashion_mnist)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--until-resolved", "--max-seeds", "3", "--executor",
                 "slurm", "--cluster", "local", "--out", str(out)]) == 0
    state = json.loads((out / STATE).read_text())
    assert state["state"] == "done" and len(state["rounds"]) == 1
    assert len(run_states(out)) == 6 and all(
        job["job_id"].split("_")[0].isdigit()
        for job in read_manifest(out)["submissions"][0]["jobs"])
    assert main(["status", str(out)]) == 0
    assert "--until-resolved (done): 1 round(s)" in capsys.readouterr().out
    # `verdicts` on such a folder warns that its fixed-n intervals are not valid after
    # stopping on the data, and shows the rounds' anytime-valid verdicts beside them.
    assert main(["verdicts", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "fixed-n intervals are not valid after stopping on the data" in shown
    assert "    --until-resolved (done): 1 round(s)" in shown
    assert main(["verdicts", str(out), "--json"]) == 0
    judged = json.loads(capsys.readouterr().out)
    assert judged["until_resolved"].startswith("--until-resolved (done): 1 round(s)")


@pytest.mark.parametrize("extra, spec, message", [
    (["--round", "0"], {}, "--round 0 must be >= 1"),
    (["--max-seeds", "2"], {}, "--max-seeds 2 must be >= 3"),
    (["--max-seeds", "3"], {}, "--max-seeds 3 is below the sweep's 4 first-round seeds"),
    (["--metric", "final.wall"], {}, "--metric final.wall: --until-resolved judges"),
    (["--dry-run"], {}, "drop --dry-run/--pilot"),
    (["--delta", "0"], {}, "--delta 0.0 must be > 0"),
    ([], {"seeds": (0,)}, "the first round needs >= 2 seeds"),
    ([], {"zipped": {"train.lr": [0.05, 0.03]}}, "the base config (`base:` with its "
                                                 "overrides) must be one of the sweep's points"),
])
def test_bad_arguments_fail_in_one_line_before_anything_is_written(tmp_path, capsys, extra,
                                                                   spec, message):
    sweep = write_sweep(tmp_path / "s.yaml", **spec)
    out = tmp_path / "out"
    code = main(["sweep", str(sweep), "--until-resolved", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_max_seeds_without_until_resolved_is_an_error(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml")
    assert main(["sweep", str(sweep), "--max-seeds", "8", "--out", str(tmp_path / "o")]) == 2
    assert "add it" in capsys.readouterr().err


def test_a_rerun_with_other_settings_is_refused_before_submitting(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml")
    out = tmp_path / "out"
    out.mkdir()
    point = load_sweep(sweep).points[0]
    (out / STATE).write_text(json.dumps({
        "sweep": str(sweep.resolve()), "metric": "final.test_acc", "delta": 0.5, "max_seeds": 16,
        "round_seeds": 2, "overrides": {}, "state": "running", "rounds": []}))
    assert main(["sweep", str(sweep), "--until-resolved", "--delta", "1", "--out",
                 str(out)]) == 2
    assert "with delta=0.5: rerun with the same settings" in capsys.readouterr().err
    assert not (out / point.run_id).exists() and not (out / "sweep.json").exists()
