"""Sweeps: spec expansion and validation, the shipped paper sweeps, run states without
sacct, and real sweeps on the local executor and on the local SLURM cluster (arrays,
preemption + requeue + resume, idempotent resubmission, a 2-task DDP run)."""

import pickle
import socket
import subprocess
import time
from pathlib import Path

import pytest
import submitit
import yaml

from experiments.cli import main
from experiments.config import ConfigError, load_config
from experiments.orchestration import executors
from experiments.orchestration.cluster import load_profile
from experiments.orchestration.executors import EXECUTORS
from experiments.orchestration.sweeps import SWEEP_DIR, load_sweep
from experiments.orchestration.tracking import (
    add_submission,
    job_outcome,
    read_manifest,
    run_states,
)
from experiments.records import read_json, read_jsonl, write_json, write_yaml
from experiments.runfolder import METRICS, RESULT

# A model small enough that a run (load data, count FLOPs, 20 steps, test on 10,000
# 14x14 images) takes a few seconds on one core.
TINY_BASE = {
    "model": {"num_latents": 8, "latent_channels": 16, "num_blocks": 1,
              "self_attends_per_block": 1, "num_cross_attends": 1, "latent_heads": 1},
    "encoding": {"num_bands": 2},
    "data": {"train_subset": 256, "val_size": 256, "image_size": 14},
    "train": {"max_steps": 20, "batch_size": 64, "eval_every": 10, "epochs": 100,
              "warmup_steps": 0},
}


def write_sweep(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump({"base": TINY_BASE, **spec}, sort_keys=False))
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def states(folder) -> dict[str, str]:
    return {s.run_id: s.state for s in run_states(folder)}


# -- specs ---------------------------------------------------------------------------------

def test_expansion_is_zip_then_grid_then_seeds_with_overrides_on_the_base(tmp_path):
    path = write_sweep(
        tmp_path / "s.yaml",
        zip={"model.share_cross_attends": [True, False],
             "model.share_latent_blocks": [True, False]},
        grid={"model.num_cross_attends": [1, 2], "model.cross_attend_placement":
              ["at_start", "interleaved"]},
        seeds=[0, 1])
    sweep = load_sweep(path, ["train.lr=0.01", "model.num_blocks=2"])
    assert len(sweep.points) == 2 * 2 * 2 * 2
    assert sweep.axes == ["model.share_cross_attends", "model.share_latent_blocks",
                          "model.num_cross_attends", "model.cross_attend_placement",
                          "train.seed"]
    first, second, last = sweep.points[0], sweep.points[1], sweep.points[-1]
    assert list(first.params.values()) == [True, True, 1, "at_start", 0]
    assert list(second.params.values()) == [True, True, 1, "at_start", 1]
    assert list(last.params.values()) == [False, False, 2, "interleaved", 1]
    cfg = last.config
    assert (cfg.model.share_cross_attends, cfg.model.num_cross_attends, cfg.train.seed) == \
        (False, 2, 1)
    assert (cfg.train.lr, cfg.model.num_blocks, cfg.model.num_latents) == (0.01, 2, 8)
    assert cfg == load_config(overrides={**{f"{s}.{k}": v for s, sec in TINY_BASE.items()
                                            for k, v in sec.items()},
                                         "train.lr": 0.01, "model.num_blocks": 2,
                                         **last.params})
    again = load_sweep(path, {"train.lr": 0.01, "model.num_blocks": 2})
    assert [p.run_id for p in again.points] == [p.run_id for p in sweep.points]
    assert len({p.run_id for p in sweep.points}) == 16


@pytest.mark.parametrize("spec, match", [
    ({"grid": {"model.latent_channels": [16, 30]}, "base": {"model": {"latent_heads": 4}}},
     r"point 2/2 \(model.latent_channels=30\): model.latent_channels=30 must be divisible by "
     r"model.latent_heads=4"),
    ({"grid": {"model.num_latnts": [8]}}, r"grid: unknown config key 'model.num_latnts'; "
                                         r"did you mean model.num_latents"),
    ({"zip": {"model.num_latents": [8, 16], "train.lr": [0.1]}},
     r"zip: lists must have equal lengths"),
    ({"grid": {"model.num_latents": 8}}, r"grid: model.num_latents must be a non-empty list"),
    ({"grid": {"model.num_latents": [8, 8]}}, r"point 2/2 .* same config as point 1"),
    ({"grids": {"model.num_latents": [8]}}, r"unknown sweep key\(s\) \['grids'\]"),
    ({"seeds": [0, "one"]}, r"seeds: must be a non-empty list of integers"),
    ({"seeds": [0], "grid": {"train.seed": [1]}}, r"seeds: and a train.seed axis"),
    ({"base": {"preset": "nope"}}, r"base: unknown preset 'nope'"),
    ({}, r"no axes: give `grid:`, `zip:` or `seeds:`"),
    ({"grid": {}, "zip": None}, r"no axes"),
    ({"grid": {"train.lr": [0.001, float("nan")]}},
     r"point 2/2 \(train.lr=nan\): train.lr=nan must be a finite number"),
    # the data sets' check (experiments/data/registry.py), on the base and on every point
    ({"base": {"data": {"name": "mnist"}}}, r"base: data.name='mnist' is not one of"),
    ({"grid": {"data.augment": ["none", "bogus"]}},
     r"point 2/2 \(data.augment=bogus\): data.augment='bogus' is not one of none, crop"),
    ({"grid": {"data.name": ["fashion_mnist", "japanese_vowels"], "data.augment": ["crop"]}},
     r"point 2/2 .*: data.augment='crop' does not apply to data.name=japanese_vowels"),
])
def test_a_bad_sweep_names_what_is_wrong(tmp_path, spec, match):
    path = tmp_path / "bad.yaml"
    base = {**TINY_BASE, **spec.pop("base", {})}
    path.write_text(yaml.safe_dump({"base": base, **spec}))
    with pytest.raises(ConfigError, match=match) as error:
        load_sweep(path)
    assert str(path) in str(error.value) and "nothing was submitted" in str(error.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_sweep_file_is_rejected_before_anything_is_written(tmp_path, capsys, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "sweep", path, "--out", out)
    assert code == 2 and not out.exists()
    assert f"sweep {path}: the file is empty" in err and "nothing was submitted" in err


def test_an_override_of_a_swept_key_is_an_error(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", grid={"model.num_latents": [8, 16]})
    with pytest.raises(ConfigError, match="model.num_latents set a key the sweep varies"):
        load_sweep(path, ["model.num_latents=4"])


def test_shipped_sweeps_cover_the_paper_ablations_on_both_scales():
    # demo.yaml is `make demo`'s composite sweep, not one paper ablation
    fashion = sorted(p.stem for p in SWEEP_DIR.glob("*.yaml") if p.stem != "demo")
    imagenet = sorted(p.stem for p in (SWEEP_DIR / "paper-imagenet").glob("*.yaml"))
    assert fashion == imagenet
    assert len(fashion) == 13
    values = {}
    for name in fashion + [f"paper-imagenet/{n}" for n in imagenet]:
        sweep = load_sweep(name)
        assert sweep.name == name and len(sweep.points) >= 2
        data = {p.config.data.name for p in sweep.points}
        assert data == ({"imagenet"} if name.startswith("paper-") else {"fashion_mnist"})
        values[name] = {axis: [p.params[axis] for p in sweep.points] for axis in sweep.axes}
    for scale in ("", "paper-imagenet/"):
        scales = values[f"{scale}fig6-init-scale"]["model.init_scale"]
        assert 0.1 in scales and max(scales) >= 1
        assert set(values[f"{scale}fig6-spacing"]["encoding.spacing"]) == {"linear", "log"}
        assert set(values[f"{scale}table6-cross-attends"]["model.cross_attend_placement"]) == \
            {"at_start", "interleaved"}
        assert set(values[f"{scale}table2-permuted"]["model.arch"]) == \
            {"perceiver", "resnet", "vit"}
        assert set(values[f"{scale}table2-permuted"]["data.permute"]) == {False, True}
        assert set(values[f"{scale}table7-sharing"]["model.share_latent_blocks"]) == {True, False}
        assert set(values[f"{scale}table2-position-encoding"]["encoding.kind"]) == \
            {"fourier", "learned"}
        only = load_sweep(f"{scale}table5-cross-attend-only").points
        assert {(p.config.model.num_blocks, p.config.model.share_cross_attends) for p in only} \
            == {(0, False)}
        for name, knob in (("fig5-latents", "model.num_latents"),
                           ("fig5-channels", "model.latent_channels"),
                           ("fig5-self-attends", "model.self_attends_per_block"),
                           ("fig5-cross-attends", "model.num_cross_attends")):
            assert len(values[f"{scale}{name}"][knob]) >= 3
        assert len(values[f"{scale}fig6-bands"]["encoding.num_bands"]) >= 4
        assert len(values[f"{scale}fig6-max-resolution"]["encoding.max_resolution"]) >= 4


def test_dry_run_prints_params_flops_and_compute_and_writes_nothing(tmp_path, capsys):
    from experiments.factory import config_flops
    from experiments.formatting import human

    path = write_sweep(tmp_path / "s.yaml", grid={"model.num_latents": [8, 32]})
    out = tmp_path / "out"
    code, text, _ = cli(capsys, "sweep", path, "--out", out, "--dry-run", "train.max_steps=7")
    assert code == 0 and not out.exists()
    for point in load_sweep(path, ["train.max_steps=7"]).points:
        counts = config_flops(point.config)
        row = next(line.split() for line in text.splitlines() if point.run_id in line)
        flops = counts["flops"]
        assert row[2:] == [str(point.params["model.num_latents"]), human(counts["params"]),
                           human(flops), "448", f"{3 * flops * 7 * 64:.2e}"]
    assert "2 runs" in text and "nothing submitted" in text


def test_local_executor_spreads_runs_over_cores(monkeypatch):
    local, slurm, debug = EXECUTORS.values()  # --executor's choices, the default first
    assert (local.name, slurm.name, debug.name) == ("local", "slurm", "debug")
    profile = load_profile("local").with_overrides({"cpus_per_task": 3})
    monkeypatch.setattr(executors, "cores", lambda: 2)
    assert local.layout(4, None, profile) == (2, 1)  # 2 jobs at once, 1 thread each
    assert local.layout(5, None, profile) == (3, 1)
    assert local.layout(1, None, profile) == (1, 2)  # one run gets both cores
    assert local.layout(6, 1, profile) == (1, 1)  # --runs-per-job 1: 6 jobs at once
    assert local.threads(profile, 3) == 1  # a study's 3 workers on 2 cores
    monkeypatch.setattr(executors, "cores", lambda: 4)
    assert local.layout(3, 3, profile) == (3, 4)
    # SLURM: one run per array task unless asked, each with the CPUs its task asked for;
    # debug: this process's own thread setting.
    assert slurm.layout(5, None, profile) == (1, 3) and slurm.layout(5, 2, profile) == (2, 3)
    assert debug.layout(5, None, profile) == (1, None)
    # A SLURM array may be large: one log folder per job; local jobs share one.
    folder = Path("sweep")
    assert (local.logs(folder), slurm.logs(folder), debug.logs(folder)) == \
        (folder / "submitit", folder / "submitit" / "%j", folder / "submitit")


# -- run states from records and submitit files, never sacct ---------------------------------

def fake_job(folder: Path, job_id: str, run_ids: list, out: str = "", err: str = "",
             result=None) -> dict:
    """A job folder as submitit leaves it: logs and, at the end, the result pickle."""
    logs = folder / "submitit" / job_id
    logs.mkdir(parents=True)
    names = {k: f"submitit/{job_id}/{job_id}_0_{k}" for k in ("log.out", "log.err", "result.pkl")}
    (folder / names["log.out"]).write_text(out)
    (folder / names["log.err"]).write_text(err)
    if result is not None:
        (folder / names["result.pkl"]).write_bytes(pickle.dumps(result))
    return {"job_id": job_id, "run_ids": run_ids, "stdout": names["log.out"],
            "stderr": names["log.err"], "result": names["result.pkl"]}


def test_states_come_from_records_manifest_heartbeat_and_job_files(tmp_path, capsys):
    folder = tmp_path / "sweep"
    start = "submitit INFO (2026-01-01 10:00:00,000) - Starting with JobEnvironment(job_id=1)\n"
    requeue = "submitit INFO (2026-01-01 10:05:00,000) - Requeued job 1 (2 remaining timeouts)\n"
    cancel = "slurmstepd: error: *** JOB 5 ON vm CANCELLED AT 2026-01-01T10:00:00 ***\n"
    by_requeue = "slurmstepd: error: *** JOB 3 ON vm CANCELLED AT 2026-01-01T10:00:00 DUE " \
                 "TO JOB REQUEUE ***\n"
    dead = subprocess.Popen(["true"])
    dead.wait()
    records = {"running": "running", "requeued": "running", "resumed": "running",
               "error": "running", "cancelled": "running", "done": "completed",
               "diverged": "diverged", "lost": "running", "gone": None, "pending": None}
    for run, status in records.items():
        write_yaml(folder / run / "config.yaml", load_config(
            overrides={"model.num_latents": len(run)}).to_dict())
        if status:
            write_json(folder / run / RESULT, {
                "status": status, "step": 10, "heartbeat": time.time() - 30, "flops": 2e6,
                "final": {"val_acc": 0.5, "test_acc": 0.25} if status == "completed" else {}})
    slurm = [fake_job(folder, "1_0", ["pending"]),
             fake_job(folder, "1_1", ["running"], out=start),
             fake_job(folder, "1_2", ["requeued"], out=start + requeue, err=by_requeue),
             fake_job(folder, "1_3", ["resumed"], out=start + requeue + start),
             fake_job(folder, "1_4", ["error", "done"], out=start,
                      result=("error", "Traceback ...\nRuntimeError: boom")),
             fake_job(folder, "5", ["cancelled"], out=start, err=cancel),
             fake_job(folder, "6", ["gone", "diverged"], out=start, result=("success", {}))]
    local = [fake_job(folder, str(dead.pid), ["lost"], out=start)]
    runs = [{"run_id": run, "params": {}, "config": None} for run in records]
    for executor, jobs in (("slurm", slurm), ("local", local)):
        add_submission(folder, runs, {"executor": executor, "host": socket.gethostname(),
                                      "jobs": jobs})
    (folder / "stray").mkdir()  # not a run: no config.yaml
    write_yaml(folder / "trained" / "config.yaml", load_config().to_dict())  # `train --out`
    write_json(folder / "trained" / RESULT, {"status": "failed", "error": "x\nValueError: y"})

    found = {s.run_id: s for s in run_states(folder)}
    assert {run: s.state for run, s in found.items()} == {
        "running": "running", "requeued": "requeued", "resumed": "running",
        "error": "failed", "cancelled": "interrupted", "done": "completed",
        "diverged": "diverged", "lost": "interrupted", "gone": "new", "pending": "pending",
        "trained": "failed"}
    assert found["error"].log == folder / "submitit/1_4/1_4_0_log.err"
    assert found["cancelled"].note.startswith("job cancelled")
    assert found["lost"].note == "job process gone without a result"
    assert found["trained"].note == "ValueError: y"
    assert 29 < found["running"].heartbeat_age_s() < 60

    code, text, _ = cli(capsys, "status", folder)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in text.splitlines()}
    assert rows["run"][:3] == ["run", "state", "model.num_latents"]
    assert rows["done"][1:] == ["completed", "4", "10", "50.00", "25.00", "2.0M", "-", "1_4",
                                "-"]  # no nodes recorded
    assert rows["running"][6] == "2.0M" and rows["running"][8] == "ago"
    assert 29 <= int(rows["running"][7].removesuffix("s")) < 60
    assert "11 runs: 1 completed, 1 diverged, 2 failed, 2 interrupted, 1 pending, 2 running, " \
           "1 requeued, 1 new" in text
    failed, interrupted = (text.split(f"{kind} runs (log, last error line):\n")[1].splitlines()
                           for kind in ("failed", "interrupted"))
    assert f"  error: {folder / 'submitit/1_4/1_4_0_log.err'}" in failed
    assert f"  lost: {folder / 'submitit' / str(dead.pid) / f'{dead.pid}_0_log.err'}  " \
           "[job process gone without a result]" in interrupted
    assert f"  trained: {folder / 'trained' / RESULT}  [ValueError: y]" in failed


def test_only_a_local_job_is_known_lost_by_its_pid(tmp_path):
    """A local job whose controller process is gone is lost; a job of another executor, or
    of one this version does not know (a later version's record), only by its files."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    start = "submitit INFO (2026-01-01 10:00:00,000) - Starting with JobEnvironment(job_id=1)\n"
    job = fake_job(tmp_path, str(dead.pid), ["run"], out=start)
    outcomes = {executor: job_outcome(job, {"executor": executor, "host": socket.gethostname()},
                                      tmp_path) for executor in ("local", "slurm", "cloud")}
    assert outcomes == {"local": "lost", "slurm": "started", "cloud": "started"}
    elsewhere = {"executor": "local", "host": f"not-{socket.gethostname()}"}
    assert job_outcome(job, elsewhere, tmp_path) == "started"


def test_status_of_a_folder_without_runs_is_a_clean_error(tmp_path, capsys):
    code, _, err = cli(capsys, "status", tmp_path)
    assert code == 2 and "holds no runs" in err


# -- real sweeps -----------------------------------------------------------------------------

def test_local_executor_sweep_with_a_failing_run(tmp_path, capsys, fashion_mnist_root):
    """Two runs packed into one local job; one asks for more training images than the
    data set holds (found only once the data is read). The other still trains, `status`
    points at the log, and only --rerun-failed submits the failed one."""
    path = write_sweep(tmp_path / "s.yaml", grid={"data.train_subset": [256, 1_000_000]})
    out = tmp_path / "out"
    good, bad = (p.run_id for p in load_sweep(path).points)
    code, text, _ = cli(capsys, "sweep", path, "--out", out, "--runs-per-job", "2", "--wait")
    assert code == 1, text
    assert "submitted 2 run(s)" in text and "as 1 local job(s)" in text
    assert states(out) == {good: "completed", bad: "failed"}
    result = read_json(out / good / RESULT)
    assert result["step"] == 20 and 0 < result["final"]["test_acc"] < 1
    code, text, _ = cli(capsys, "status", out)
    (log,) = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith(f"  {bad}")]
    assert "data.train_subset=1000000 exceeds the" in Path(log.split("  [")[0]).read_text()

    code, text, _ = cli(capsys, "sweep", path, "--out", out)
    assert "1 run(s) completed" in text and "1 run(s) failed" in text
    assert "nothing to submit" in text and len(read_manifest(out)["submissions"]) == 1
    code, text, _ = cli(capsys, "sweep", path, "--out", out, "--rerun-failed", "--wait")
    assert code == 1 and "submitted 1 run(s)" in text
    assert read_manifest(out)["submissions"][-1]["jobs"][0]["run_ids"] == [bad]


def test_debug_executor_trains_in_this_process(tmp_path, capsys, fashion_mnist_root):
    path = write_sweep(tmp_path / "one.yaml", seeds=[0])
    out = tmp_path / "out"
    code, text, _ = cli(capsys, "sweep", path, "--executor", "debug", "--out", out)
    assert code == 0 and "as 1 debug job(s)" in text
    (job,) = read_manifest(out)["submissions"][0]["jobs"]
    assert job["stderr"] is None  # no job files: the run's record is the whole story
    assert states(out) == {job["run_ids"][0]: "completed"}  # done before the command returned


@pytest.fixture(scope="module")
def array_sweep(tmp_path_factory, slurm_cluster, fashion_mnist_root):
    """A 4-run sweep submitted to the local SLURM cluster as one array, waited for."""
    folder = tmp_path_factory.mktemp("array")
    path = write_sweep(folder / "array.yaml", grid={"model.num_latents": [8, 16]},
                       seeds=[0, 1])
    out = folder / "results"
    start = time.time()
    code = main(["sweep", str(path), "--executor", "slurm", "--cluster", "local",
                 "--out", str(out), "--wait"])
    elapsed = time.time() - start
    walls = [read_json(out / p.run_id / RESULT)["wall_time_s"] for p in load_sweep(path).points]
    print(f"\narray sweep: 4 runs in {elapsed:.1f}s (submit to all completed); run wall "
          f"times {', '.join(f'{w:.1f}s' for w in walls)}")
    return path, out, code


@pytest.mark.slurm
def test_array_sweep_completes_and_status_shows_metrics(array_sweep, capsys):
    path, out, code = array_sweep
    assert code == 0
    (submission,) = read_manifest(out)["submissions"]
    array_id = submission["jobs"][0]["job_id"].split("_")[0]
    assert [j["job_id"] for j in submission["jobs"]] == [f"{array_id}_{i}" for i in range(4)]
    assert submission["executor"] == "slurm" and submission["profile"]["partition"] == "debug"
    code, text, _ = cli(capsys, "status", out)
    rows = [line.split() for line in text.splitlines()[1:5]]
    assert [r[0] for r in rows] == [p.run_id for p in load_sweep(path).points]
    for row in rows:
        assert row[1] == "completed" and row[4] == "20"  # state, step
        assert 0 < float(row[5]) < 100 and 0 < float(row[6]) < 100  # val, test acc (%)
    assert "4 runs: 4 completed" in text


@pytest.mark.slurm
def test_resubmission_submits_only_what_is_missing(array_sweep, capsys):
    path, out, _ = array_sweep
    code, text, _ = cli(capsys, "sweep", path, "--executor", "slurm", "--out", out)
    assert code == 0 and "4 run(s) completed" in text and "nothing to submit" in text
    assert len(read_manifest(out)["submissions"]) == 1

    target = load_sweep(path).points[2].run_id
    before = read_json(out / target / RESULT)
    (out / target / RESULT).unlink()
    assert states(out)[target] == "new"
    code, text, _ = cli(capsys, "sweep", path, "--executor", "slurm", "--out", out, "--wait")
    assert code == 0 and "submitted 1 run(s)" in text
    last = read_manifest(out)["submissions"][-1]
    assert [j["run_ids"] for j in last["jobs"]] == [[target]]
    assert set(states(out).values()) == {"completed"}
    assert read_json(out / target / RESULT)["final"] == before["final"]


@pytest.mark.slurm
def test_preempted_job_is_requeued_and_resumes_to_the_same_metrics(tmp_path, capsys):
    """The same 200-step run twice, side by side on the cluster: one is preempted after
    its first checkpoint, requeued by its checkpoint() and resumed; both end identical."""
    spec = {"base": {**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 100,
                                             "max_steps": 200, "eval_every": 20}},
            "seeds": [0]}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(spec))
    out, reference = tmp_path / "preempted", tmp_path / "reference"
    for folder in (out, reference):
        assert cli(capsys, "sweep", path, "--executor", "slurm", "--out", folder)[0] == 0
    (job,) = read_manifest(out)["submissions"][0]["jobs"]
    (run_id,) = job["run_ids"]
    deadline = time.time() + 90
    while not (out / run_id / "checkpoint.pt").exists():  # the first of 10 checkpoints
        assert time.time() < deadline, (out / job["stderr"]).read_text()
        time.sleep(0.1)
    submitit.SlurmJob(out / "submitit" / "%j", job["job_id"])._interrupt()
    seen = [states(out)[run_id]]
    while seen[-1] not in ("completed", "failed") or states(reference)[run_id] != "completed":
        assert time.time() < deadline, seen
        time.sleep(0.2)
        if states(out)[run_id] != seen[-1]:
            seen.append(states(out)[run_id])
    assert seen[-1] == "completed" and "requeued" in seen, seen
    assert "Requeued job" in (out / job["stdout"]).read_text()
    assert "resumed" in (out / job["stderr"]).read_text()  # from its checkpoint
    resumed, uninterrupted = (read_json(d / run_id / RESULT) for d in (out, reference))
    assert resumed["step"] == uninterrupted["step"] == 200
    assert resumed["final"] == uninterrupted["final"]
    assert resumed["best"] == uninterrupted["best"]
    learned = ("step", "lr", "train_loss", "train_acc", "val_loss", "val_acc")  # not timings
    curves = [[{k: row[k] for k in learned} for row in read_jsonl(d / run_id / METRICS)]
              for d in (out, reference)]
    assert [row["step"] for row in curves[0]] == list(range(20, 201, 20))
    assert curves[0] == curves[1]


@pytest.mark.slurm
def test_two_task_ddp_run_through_the_cluster(array_sweep, tmp_path, capsys):
    """tasks_per_node=2 (one task per GPU on a GPU cluster) starts two gloo ranks that
    train one run; with the same global batch it matches the array's 1-process run."""
    _, array_out, _ = array_sweep
    path = write_sweep(tmp_path / "one.yaml", seeds=[0])
    out = tmp_path / "ddp"
    code, text, _ = cli(capsys, "sweep", path, "cluster.tasks_per_node=2", "--executor",
                        "slurm", "--out", out, "--wait")
    assert code == 0, text
    (job,) = read_manifest(out)["submissions"][0]["jobs"]
    (run_id,) = job["run_ids"]
    rank1 = (out / job["stdout"].replace("_0_log", "_1_log")).read_text()
    assert "global_rank=1(2)" in rank1
    ddp, single = (read_json(d / run_id / RESULT) for d in (out, array_out))
    assert ddp["status"] == "completed" and ddp["step"] == 20
    for key, value in single["final"].items():
        assert ddp["final"][key] == pytest.approx(value, rel=1e-4), key


@pytest.mark.slurm
def test_an_invalid_sweep_submits_nothing_and_says_why(tmp_path, capsys):
    path = write_sweep(tmp_path / "bad.yaml",
                       grid={"model.num_latents": [8, 16], "model.latent_heads": [1, 3]})
    out = tmp_path / "out"
    code, _, err = cli(capsys, "sweep", path, "--executor", "slurm", "--out", out)
    assert code == 2 and not out.exists()
    assert "point 2/4 (model.num_latents=8 model.latent_heads=3): model.latent_channels=16 " \
           "must be divisible by model.latent_heads=3" in err
    assert "nothing was submitted" in err
    queue = subprocess.run(["squeue", "--noheader", "--name", "sweep-bad"],
                           capture_output=True, text=True, check=True)
    assert queue.stdout == ""

