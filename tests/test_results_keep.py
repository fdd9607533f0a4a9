"""Results that keep: concurrent submissions into one folder, one trainer per run folder,
and a disk that fills up mid-run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import fill, tmpfs

from experiments.cli import main
from experiments.orchestration.follow import wait_for_runs
from experiments.orchestration.sweeps import load_sweep
from experiments.records import read_json
from experiments.runfolder import CHECKPOINT, CONFIG, RESULT, read_manifest
from experiments.train import Run

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = {
    "model": {"num_latents": 4, "latent_channels": 8, "num_blocks": 1,
              "self_attends_per_block": 1, "num_cross_attends": 1, "latent_heads": 1},
    "data": {"train_subset": 64, "val_size": 32, "image_size": 7},
    "train": {"max_steps": 4, "eval_every": 2, "batch_size": 16, "epochs": 100,
              "warmup_steps": 0},
}
SWEEPS = 8


def concurrent_sweeps(tmp_path: Path, data_root: Path, *options: str) -> tuple[Path, list]:
    """SWEEPS `sweep` commands started at once into one folder (as a shell loop with `&`
    does), sweep i over encoding.num_bands [i, i + 1] (mod SWEEPS): every run is in two
    sweeps. Returns once every run has ended."""
    base = {**TINY_BASE, "data": {**TINY_BASE["data"], "root": str(data_root)}}
    out, paths = tmp_path / "shared", []
    for i in range(SWEEPS):
        path = tmp_path / f"s{i}.yaml"
        path.write_text(yaml.safe_dump({"base": base, "grid": {
            "encoding.num_bands": [i + 1, (i + 1) % SWEEPS + 1]}}))
        paths.append(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "experiments", "sweep", str(path),
                               "--out", str(out), *options], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for path in paths]
    outputs = [proc.communicate(timeout=500) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stdout + stderr
    sweeps = [load_sweep(path) for path in paths]
    wait_for_runs(out, {p.run_id for sweep in sweeps for p in sweep.points})
    return out, sweeps


def assert_each_run_trained_once(out: Path, sweeps: list, capsys) -> None:
    run_ids = {p.run_id for sweep in sweeps for p in sweep.points}
    assert len(run_ids) == SWEEPS
    manifest = read_manifest(out)
    assert {run["run_id"] for run in manifest["runs"]} == run_ids
    jobs = [job for submission in manifest["submissions"] for job in submission["jobs"]]
    submitted = [run_id for job in jobs for run_id in job["run_ids"]]
    assert sorted(submitted) == sorted(run_ids)  # every run submitted exactly once
    job_of = {run_id: job["job_id"] for job in jobs for run_id in job["run_ids"]}
    trained_by = {}
    for run_id in run_ids:
        result = read_json(out / run_id / RESULT)
        assert result["status"] == "completed" and result["step"] == 4
        trained_by[run_id] = [session["job"] for session in result["sessions"]]
        assert trained_by[run_id] == [job_of[run_id]]  # by one job: the one submitted
    with capsys.disabled():
        print(f"\n{SWEEPS} concurrent sweeps: {len(manifest['submissions'])} submissions, "
              f"{len(jobs)} jobs, {len(submitted)} runs submitted; jobs that trained each "
              f"run: {sorted(len(v) for v in trained_by.values())}")
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"{SWEEPS} runs: {SWEEPS} completed" in status


def test_concurrent_sweeps_into_one_folder_train_every_run_once(tmp_path, tiny_fashion_mnist,
                                                                capsys):
    out, sweeps = concurrent_sweeps(tmp_path, tiny_fashion_mnist, "--executor", "local",
                                    "--runs-per-job", "2")
    assert_each_run_trained_once(out, sweeps, capsys)


@pytest.mark.slurm
def test_concurrent_sweeps_on_the_slurm_cluster_train_every_run_once(
        tmp_path, tiny_fashion_mnist, capsys):
    out, sweeps = concurrent_sweeps(tmp_path, tiny_fashion_mnist, "--executor", "slurm",
                                    "--cluster", "local")
    assert_each_run_trained_once(out, sweeps, capsys)


def test_a_second_trainer_of_a_run_folder_refuses_before_writing(tmp_path, tiny_fashion_mnist,
                                                                 capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from experiments.runfolder import RunFolder\n"
         "with RunFolder(sys.argv[1]).lock():\n    print('held', flush=True); sys.stdin.read()",
         str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        items = [f"{section}.{key}={value}" for section, values in TINY_BASE.items()
                 for key, value in values.items()] + [f"data.root={tiny_fashion_mnist}"]
        assert main(["train", *items, "--out", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"{run_dir} is being trained by another process right now" in err
        assert not (run_dir / CONFIG).exists() and not (run_dir / RESULT).exists()
    finally:
        holder.communicate("")
    assert main(["train", *items, "--out", str(run_dir)]) == 0  # released: it trains


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted for the test."""
    with tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount


def test_fill_leaves_exactly_what_it_is_asked_whatever_space_was_free(small_disk):
    """The soak's flake in CI: fill() itself raised ENOSPC when the free space left a short
    last write. Every page offset of the free space must fill, then free `leave`."""
    for used_pages in range(18):
        (small_disk / "used").write_bytes(bytes(4096 * used_pages))
        filler = fill(small_disk, 8192)
        assert shutil.disk_usage(small_disk).free == 8192, used_pages
        filler.unlink()


def test_a_full_disk_mid_run_fails_clearly_and_the_run_resumes(small_disk, tiny_fashion_mnist,
                                                              monkeypatch, capsys):
    run_dir = small_disk / "run"
    items = [f"{section}.{key}={value}" for section, values in TINY_BASE.items()
             for key, value in values.items()] + [f"data.root={tiny_fashion_mnist}",
                                                  "train.max_steps=6"]
    evaluate = Run.evaluate_and_record
    filler = []

    def evaluate_then_fill(self, lr):  # the disk fills up after step 4's evaluation
        row = evaluate(self, lr)
        if self.progress.step == 4 and not filler:
            filler.append(fill(small_disk, leave=16384))
        return row

    monkeypatch.setattr(Run, "evaluate_and_record", evaluate_then_fill)
    assert main(["train", *items, "--out", str(run_dir)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith(f"perceiver-ablate train: error: cannot write "
                                f"{run_dir / CHECKPOINT}: no space left on device (")
    assert "bytes needed" in errors[0] and "bytes free" in errors[0]
    result = read_json(run_dir / RESULT)
    assert result["status"] == "failed" and "no space left on device" in result["error"]
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["step"] == 2  # the last good one
    assert not list(run_dir.glob(".*.tmp"))  # no half-written checkpoint left behind

    filler[0].unlink()  # space is back: the same command resumes and completes
    assert main(["train", *items, "--out", str(run_dir)]) == 0
    assert f"resumed {run_dir} at step 2/6" in capsys.readouterr().err
    result = read_json(run_dir / RESULT)
    assert result["status"] == "completed" and result["step"] == 6
    assert [s["from_step"] for s in result["sessions"]] == [0, 2]


def test_analysis_reads_the_input_shape_from_the_record_with_a_fallback_for_old_ones():
    import pandas as pd

    from analysis.report.figures import _nyquist

    runs = pd.DataFrame([  # a record of today's, then one written before `input` existed
        {"data.name": "fashion_mnist", "data.image_size": None, "input.index_shape": "[20, 20]"},
        {"data.name": "fashion_mnist", "data.image_size": None, "input.index_shape": None},
        {"data.name": "cifar10", "data.image_size": 16.0, "input.index_shape": None}])
    assert _nyquist(runs).tolist() == [20, 28, 16]


def test_a_read_only_folder_is_one_clear_line_per_command(small_disk, tiny_fashion_mnist, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    items = [f"{section}.{key}={value}" for section, values in TINY_BASE.items()
             for key, value in values.items()] + [f"data.root={tiny_fashion_mnist}"]
    sweep = REPO / "tests" / "fixtures" / "legacy-sweep.yaml"
    for argv, path in ((["train", *items, "--out", str(small_disk / "run")],
                        small_disk / "run" / ".train.lock"),
                       (["sweep", str(sweep), "--out", str(small_disk / "sweep")],
                        small_disk / "sweep")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith(
            f"perceiver-ablate {argv[0]}: error: cannot write {path}: read-only file system (")
        assert "Traceback" not in err
    assert list(small_disk.iterdir()) == []
