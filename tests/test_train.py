"""The training loop, its records, resume, divergence, DDP and the optimizers (issue 4).

Runs are real but tiny: 20 steps of a small Perceiver on a subset of the real
Fashion-MNIST files (1000 training and 1000 test images, so evaluation is quick).
"""

import contextlib
import gzip
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from experiments.cli import main
from experiments.config import RunConfig, load_config
from experiments.distributed import export_slurm_env, leave_distributed
from experiments.optim import build_optimizer, lr_factor, param_groups
from experiments.readback import load_trained
from experiments.records import read_json, read_jsonl
from experiments.runfolder import CHECKPOINT, CONFIG, LOCK, METRICS, RESULT
from experiments.tensorboard import EVENTS
from experiments.train import RunStopped, train_run

SUBSET = 1000  # images kept from each of the train and test files
TINY = {"model.num_latents": 8, "model.latent_channels": 16, "model.num_blocks": 1,
        "model.self_attends_per_block": 1, "model.num_cross_attends": 1,
        "model.latent_heads": 2, "encoding.num_bands": 4, "data.train_subset": 320,
        "data.val_size": 193, "train.batch_size": 32, "train.epochs": 2, "train.lr": 0.05,
        "train.eval_every": 4, "train.warmup_steps": 2}
RESULT_KEYS = {"run_id", "status", "step", "epoch", "final", "best", "metric", "params", "macs",
               "flops", "flops_breakdown", "wall_time_s", "samples_per_s", "versions", "host",
               "nodes", "sessions", "started_at", "updated_at", "heartbeat", "error", "input",
               "planned", "split_sizes"}
ROW_KEYS = {"step", "epoch", "time_s", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
            "samples_per_s"}
TIMING = ("time_s", "samples_per_s")  # the only fields of a metrics row that may differ


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine two
    spinning threads are several times slower. Subprocesses get OMP_NUM_THREADS=1 too, so
    a run resumed here computes exactly what the killed one would have."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory, fashion_mnist_root) -> Path:
    """The first SUBSET images of each real Fashion-MNIST IDX file, as IDX files again."""
    root = tmp_path_factory.mktemp("fashion-subset")
    for path in sorted(fashion_mnist_root.glob("*-ubyte.gz")):
        raw = gzip.decompress(path.read_bytes())
        dims = raw[3]  # IDX: magic (0, 0, dtype, dims), then one big-endian uint32 per dim
        start = 4 + 4 * dims
        item = math.prod(int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in range(2, dims + 1))
        header = raw[:4] + SUBSET.to_bytes(4, "big") + raw[8:start]
        (root / path.name).write_bytes(
            gzip.compress(header + raw[start:start + SUBSET * item], compresslevel=1))
    return root


@pytest.fixture(scope="module")
def base(fashion_subset) -> dict:
    """TINY on the subset, as dotted overrides."""
    return {**TINY, "data.root": str(fashion_subset)}


def items(overrides: dict) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


def curve(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING}
            for row in read_jsonl(run_dir / METRICS)]


@pytest.fixture(scope="module")
def completed(tmp_path_factory, base):
    """One uninterrupted tiny run through the CLI: (config, run folder, stdout)."""
    run_dir = tmp_path_factory.mktemp("runs") / "complete"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", *items(base), "--out", str(run_dir)]) == 0
    return load_config(None, base), run_dir, out.getvalue()


def test_a_run_completes_and_writes_every_record(completed):
    cfg, run_dir, stdout = completed
    assert stdout.strip().splitlines()[-1] == str(run_dir)
    assert {p.name for p in run_dir.iterdir()} == {CONFIG, METRICS, RESULT, CHECKPOINT, LOCK,
                                                    EVENTS}
    assert RunConfig.from_dict(yaml.safe_load((run_dir / CONFIG).read_text())) == cfg

    result = read_json(run_dir / RESULT)
    assert set(result) == RESULT_KEYS
    assert result["status"] == "completed" and result["error"] is None
    assert result["metric"] == "acc"  # single-label: accuracy (multi-label sets record mAP)
    assert result["run_id"] == cfg.run_id
    steps = 2 * (320 // 32)
    assert result["step"] == steps and result["epoch"] == 2.0
    # What analysis needs without the data set: the input, the plan, the splits.
    assert result["input"] == {"index_shape": [28, 28], "channels": 1}
    assert result["planned"] == {"steps": steps, "examples": steps * 32}
    assert result["split_sizes"] == {"train": 320, "val": 193, "test": SUBSET}
    (session,) = result["sessions"]  # trained by one process, this one
    assert session["pid"] == os.getpid() and session["from_step"] == 0 and session["job"] is None
    assert result["flops"] == 2 * result["macs"] > 0 and result["params"] > 0
    assert sum(result["flops_breakdown"].values()) == result["flops"]
    assert set(result["versions"]) == {"torch", "python", "package", "git_commit"}
    assert result["versions"]["torch"] == torch.__version__
    assert result["nodes"] == [socket.gethostname()]  # one process: this host
    (session,) = result["sessions"]
    assert {k: session[k] for k in ("from_step", "to_step", "nodes", "status")} == \
        {"from_step": 0, "to_step": steps, "nodes": result["nodes"], "status": "completed"}

    rows = read_jsonl(run_dir / METRICS)
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20]
    assert all(set(r) == ROW_KEYS for r in rows)
    final, best = result["final"], result["best"]
    assert {k: final[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")} == \
        {k: rows[-1][k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")}
    assert best["val_acc"] == max(r["val_acc"] for r in rows)
    assert best["step"] == next(r["step"] for r in rows if r["val_acc"] == best["val_acc"])
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learns: well above chance (0.1,
    assert final["test_acc"] > 0.15  # std 0.01 on 1000 images) after 20 tiny steps

    # The checkpoint loads without pickle and reproduces the test accuracy.
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert state["step"] == steps and isinstance(state["rng"]["torch"], torch.Tensor)
    model, loaded_cfg = load_trained(run_dir)
    assert loaded_cfg == cfg and not model.training
    from experiments.data import load_splits

    correct = 0
    with torch.no_grad():
        for batch in load_splits(cfg).test.batches(500, seed=0, epoch=0, train=False):
            correct += (model(batch.inputs, batch.positions).argmax(-1) == batch.labels).sum()
    assert correct.item() / SUBSET == pytest.approx(final["test_acc"], abs=1e-4)


def test_a_finished_run_is_returned_not_trained_again(completed):
    cfg, run_dir, _ = completed
    before = (run_dir / RESULT).read_text()
    stamp = (run_dir / CHECKPOINT).stat().st_mtime_ns
    assert train_run(cfg, run_dir) == json.loads(before)
    assert (run_dir / RESULT).read_text() == before
    assert (run_dir / CHECKPOINT).stat().st_mtime_ns == stamp


def test_a_folder_of_another_config_is_refused(completed, base):
    _, run_dir, _ = completed
    assert main(["train", *items(base), "train.seed=1", "--out", str(run_dir)]) == 2


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from experiments.config import load_config
    from experiments.train import train_run

    def kill(row):
        if row["step"] == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

    train_run(load_config(None, {overrides!r}), Path(sys.argv[1]), on_eval=kill)
""")


def test_resume_after_sigkill_gives_identical_final_metrics(completed, base, tmp_path):
    """A real SIGKILL mid-run, after the checkpoint of step 10 and the evaluation of step
    12 (whose row must be dropped and computed again on resume)."""
    _, reference, _ = completed
    overrides = {**base, "train.checkpoint_every": 5}
    cfg = load_config(None, overrides)
    run_dir = tmp_path / "killed"
    script = KILLER.format(kill_at=12, overrides=overrides)
    proc = subprocess.run([sys.executable, "-c", script, str(run_dir)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert read_json(run_dir / RESULT)["status"] == "running"
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["step"] == 10
    assert [r["step"] for r in read_jsonl(run_dir / METRICS)] == [4, 8, 12]

    result = train_run(cfg, run_dir)
    assert result["status"] == "completed"
    assert result["final"] == read_json(reference / RESULT)["final"]
    assert curve(run_dir) == curve(reference)
    assert [s["from_step"] for s in result["sessions"]] == [0, 10]  # two processes trained it
    assert result["run_id"] == read_json(reference / RESULT)["run_id"]  # checkpoint cadence


def test_resume_after_an_exception_and_failed_status(completed, tmp_path, monkeypatch,
                                                     capsys):
    """A run that raised is recorded failed and resumes to the uninterrupted run's
    metrics, printing a progress line after every step from the step it resumed at (the
    interval is 15 s in real runs, so tiny runs would print none)."""
    cfg, reference, _ = completed
    monkeypatch.setattr("experiments.train.LOG_INTERVAL_S", 0.0)

    def explode(row):
        if row["step"] == 8:
            raise RuntimeError("boom")

    run_dir = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="boom"):
        train_run(cfg, run_dir, on_eval=explode)
    failed = read_json(run_dir / RESULT)
    assert failed["status"] == "failed" and failed["step"] == 8
    assert "RuntimeError: boom" in failed["error"] and "explode" in failed["error"]

    capsys.readouterr()
    result = train_run(cfg, run_dir)
    assert result["status"] == "completed"
    assert result["final"] == read_json(reference / RESULT)["final"]
    assert curve(run_dir) == curve(reference)
    assert [(s["from_step"], s["to_step"], s["status"], s.get("error"))
            for s in result["sessions"]] == [(0, 8, "failed", "RuntimeError: boom"),
                                            (8, 20, "completed", None)]

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"resumed {run_dir} at step 8/20"
    line = re.compile(r"step (\d+)/20 \(epoch (\d\.\d\d)\) loss \d+\.\d{4} acc \d+\.\d\d% "
                      r"lr \d\.\d\de-\d\d \| \d+ samples/s \| ETA \d+m\d\ds$")
    progress = [m for m in map(line.match, lines) if m]
    # every step but the evaluated ones (12, 16, 20), which print their evaluation instead
    assert [int(m[1]) for m in progress] == [9, 10, 11, 13, 14, 15, 17, 18, 19]
    assert all(float(m[2]) == int(m[1]) / 10 for m in progress)


def test_run_stopped_records_pruned_and_propagates(tmp_path, base):
    def prune(row):
        raise RunStopped("pruned", "trial pruned at step 4")

    with pytest.raises(RunStopped):
        train_run(load_config(None, base), tmp_path / "pruned", on_eval=prune)
    result = read_json(tmp_path / "pruned" / RESULT)
    assert result["status"] == "pruned" and result["step"] == 4
    assert result["error"] == "trial pruned at step 4"


def test_nan_loss_gives_diverged_with_the_last_finite_metrics(tmp_path, base):
    # LAMB scales every layer by ~(1 + lr) per step: lr=1e3 overflows within a few steps
    # (here the training loss of step 4, after a finite evaluation at step 2).
    cfg = load_config(None, {**base, "train.lr": 1000.0, "train.eval_every": 2,
                             "train.schedule": "constant", "train.warmup_steps": 0})
    result = train_run(cfg, tmp_path / "nan")
    assert result["status"] == "diverged" and result["error"] is None
    assert 2 <= result["step"] < 20
    rows = read_jsonl(tmp_path / "nan" / METRICS)
    assert rows and all(math.isfinite(v) for r in rows for v in r.values())
    assert result["final"] == {k: rows[-1][k] for k in result["final"]}
    assert "test_acc" not in result["final"]
    assert train_run(cfg, tmp_path / "nan") == result  # finished: not trained again


@pytest.mark.parametrize("bad", [
    ["train.lr=-1"],
    ["train.nonsense=1"],
    ["data.root=/nonexistent/fashion"],
    ["data.train_subset=16"],  # fewer examples than one batch of 32
    ["model.num_classes=7"],
])
def test_bad_input_fails_before_anything_is_written(tmp_path, capsys, base, bad):
    run_dir = tmp_path / "run"
    assert main(["train", *items(base), *bad, "--out", str(run_dir)]) == 2
    assert not run_dir.exists()
    assert "error:" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world_size: int, port: int, overrides: dict, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train_run(load_config(None, overrides), Path(run_dir))
    leave_distributed()  # without it, about one run in twelve aborted at teardown


def test_ddp_with_two_gloo_processes_matches_one_process(completed, base, tmp_path):
    """Same config (global batch 32) on 2 processes x 16; val_size=193 leaves one
    example for the last evaluation step, so one rank gets an empty batch."""
    _, reference, _ = completed
    mp.spawn(ddp_worker, args=(2, free_port(), base, str(tmp_path / "ddp")), nprocs=2)
    one, two = read_json(reference / RESULT), read_json(tmp_path / "ddp" / RESULT)
    assert two["status"] == "completed" and two["step"] == one["step"]
    for key in ("train_loss", "val_loss", "test_loss"):
        assert two["final"][key] == pytest.approx(one["final"][key], rel=1e-3)
    for key in ("train_acc", "val_acc", "test_acc"):
        assert two["final"][key] == pytest.approx(one["final"][key], abs=0.01)
    weights = [torch.load(d / CHECKPOINT, weights_only=True)["model"]
               for d in (reference, tmp_path / "ddp")]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-3, atol=1e-4)


def test_slurm_tasks_become_torch_distributed_variables(monkeypatch):
    # export() writes os.environ: give it a copy, so nothing leaks into later tests.
    torch_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                  "SUBMITIT_EXECUTOR")
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in torch_vars})
    os.environ.update(SLURM_JOB_ID="42", SLURM_NTASKS="4", SLURM_STEP_NUM_TASKS="4",
                      SLURM_PROCID="3", SLURM_LOCALID="1", SLURM_NODEID="1",
                      SLURM_JOB_NODELIST="gpu[07-08]", SLURM_JOB_NUM_NODES="2")
    export_slurm_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"],
            os.environ["MASTER_ADDR"]) == ("3", "4", "1", "gpu07")
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000


# ------------------------------------------------------------------ optimizers and schedules


def test_step_schedule_is_the_papers_and_warmup_is_linear():
    factors = [lr_factor(epoch, 120, "step") for epoch in range(120)]
    assert factors[83] == 1 and factors[84] == pytest.approx(0.1)
    assert factors[101] == pytest.approx(0.1) and factors[102] == pytest.approx(0.01)
    assert factors[113] == pytest.approx(0.01) and factors[114] == pytest.approx(0.001)
    assert [lr_factor(s, 100, "cosine", 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, "cosine", 4) == 1.0
    assert lr_factor(52, 100, "cosine", 4) == pytest.approx(0.5)
    assert lr_factor(99, 100, "cosine", 4) < 0.01
    assert lr_factor(50, 100, "constant", 4) == 1.0


def test_lamb_follows_the_update_formula():
    """Two steps of LAMB (You et al. 2020, Alg. 2) on a 2x3 weight, without Adam's bias
    corrections (per-tensor scalars that the trust ratio cancels, up to eps and decay)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2, bias=False)
    cfg = load_config(None, {"train.lr": 0.1, "train.weight_decay": 0.01}).train
    optimizer = build_optimizer(layer, cfg)
    beta1, beta2, eps, lr, wd = 0.9, 0.999, 1e-6, 0.1, 0.01
    w, m, v = layer.weight.detach().clone(), torch.zeros(2, 3), torch.zeros(2, 3)
    for _ in range(2):
        g = torch.randn(2, 3)
        layer.weight.grad = g.clone()
        optimizer.step()
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        r = m / (v.sqrt() + eps) + wd * w
        w = w - lr * w.norm() / (r.norm() + eps) * r
        torch.testing.assert_close(layer.weight.detach(), w)


def test_weight_decay_skips_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [(4, 4)] and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
    adamw = build_optimizer(model, load_config(None, {"train.optimizer": "adamw"}).train)
    assert isinstance(adamw, torch.optim.AdamW)


def test_cpu_training_keeps_freed_memory_instead_of_page_faulting_it_back():
    """keep_freed_memory (called by prepare_training on CPU): a freed 64 MiB tensor's memory
    is reused instead of being unmapped and faulted in again (steady state: posix_memalign
    slack can make the first few blocks new heap memory)."""
    script = """
import resource, torch
from experiments.host import keep_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        block = torch.ones(64 * 2**20 // 4)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = faults()
keep_freed_memory()
for _ in range(3):  # new heap memory until freed blocks coalesce into reusable ones
    faults()
print(default, faults())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    default, kept = map(int, out.split())
    assert default > 5 * 10_000  # 64 MiB = 16,384 pages, faulted in for every block
    assert kept < 1_000
