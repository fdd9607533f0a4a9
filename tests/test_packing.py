"""Seed-packed training (experiments/packing.py) and common random numbers
(train.data_seed / train.init_seed / train.coupled_init, experiments/seeding.py): a pack's
seeds equal the same seeds trained alone (metrics, curves, checkpoints), by turns bit for
bit and by the batched step within BATCHED_RTOL, also after a kill -9, under DDP and
through `sweep --pack-seeds` on the local and SLURM executors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from experiments.cli import main
from experiments.config import ConfigError, load_config
from experiments.data import input_spec
from experiments.distributed import leave_distributed
from experiments.engine import pack_step
from experiments.factory import build_for, initial_model
from experiments.packing import pack_key, packs, train_pack
from experiments.records import read_json, read_jsonl, write_json
from experiments.runfolder import CHECKPOINT, METRICS, RESULT, read_manifest
from experiments.train import train_run

# Per-seed optimizer maths are exercised: LAMB with weight decay, and a gradient clip low
# enough to bind (a clip over the stacked seeds would give other numbers).
# Two shared latent blocks and two cross-attends: the batched step must hand tied weights
# their gradients from both places they are used.
TINY = {"model.num_latents": 8, "model.latent_channels": 16, "model.num_blocks": 2,
        "model.self_attends_per_block": 1, "model.num_cross_attends": 2,
        "model.latent_heads": 2, "encoding.num_bands": 4, "data.train_subset": 320,
        "data.val_size": 193, "train.batch_size": 32, "train.epochs": 2, "train.lr": 0.05,
        "train.eval_every": 4, "train.warmup_steps": 2, "train.weight_decay": 0.01,
        "train.grad_clip": 0.5, "train.checkpoint_every": 5}
SEEDS = (0, 1)
TIMING = ("time_s", "samples_per_s")
# The batched step's matmuls run over a stacked seed dimension, so they round otherwise
# than a solo run's: the bar on final metrics in fp32 on CPU, also held by the
# curves; weights after 20 steps agree to a few float32 ulps of their scale.
BATCHED_RTOL = 1e-5
WEIGHTS_RTOL, WEIGHTS_ATOL = 1e-4, 1e-6


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def base(tiny_fashion_mnist) -> dict:
    return {**TINY, "data.root": str(tiny_fashion_mnist)}


def configs(base: dict, seeds=SEEDS) -> list:
    return [load_config(None, {**base, "train.seed": s}) for s in seeds]


@pytest.fixture(scope="module")
def solo(tmp_path_factory, base) -> list[Path]:
    """Each seed trained alone: the reference."""
    root = tmp_path_factory.mktemp("solo")
    dirs = [root / f"seed{s}" for s in SEEDS]
    for cfg, run_dir in zip(configs(base), dirs, strict=True):
        assert train_run(cfg, run_dir)["status"] == "completed"
    return dirs


def curve(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING}
            for row in read_jsonl(run_dir / METRICS)]


def assert_same_run(run_dir: Path, reference: Path, step: str = "turns") -> None:
    """The same metrics, curve, final weights and optimizer state: bit for bit by turns,
    within BATCHED_RTOL (weights: WEIGHTS_RTOL) by the batched step."""
    one, two = read_json(reference / RESULT), read_json(run_dir / RESULT)
    assert two["status"] == "completed" and two["run_id"] == one["run_id"]
    ckpts = [torch.load(d / CHECKPOINT, weights_only=True) for d in (reference, run_dir)]
    assert ckpts[1]["step"] == ckpts[0]["step"]
    tensors = [(ckpts[0]["model"], ckpts[1]["model"])] + [
        (state, ckpts[1]["optimizer"]["state"][key])
        for key, state in ckpts[0]["optimizer"]["state"].items()]
    if step == "turns":
        assert two["final"] == one["final"]
        assert curve(run_dir) == curve(reference)
        for reference_state, state in tensors:
            for name, value in reference_state.items():
                assert torch.equal(torch.as_tensor(state[name]), torch.as_tensor(value)), name
        return
    assert two["final"] == pytest.approx(one["final"], rel=BATCHED_RTOL)
    rows = curve(run_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in curve(reference)]
    for row, reference_row in zip(rows, curve(reference), strict=True):
        assert row == pytest.approx(reference_row, rel=BATCHED_RTOL)
    for reference_state, state in tensors:
        for name, value in reference_state.items():
            torch.testing.assert_close(torch.as_tensor(state[name]), torch.as_tensor(value),
                                       rtol=WEIGHTS_RTOL, atol=WEIGHTS_ATOL, msg=str(name))


def test_a_batched_pack_trains_each_seed_as_alone(solo, base, tmp_path):
    """One vmapped forward/backward over both seeds' own batches, each seed's own LAMB
    (weight decay, a binding clip): each seed's run is its solo run within BATCHED_RTOL."""
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    results = train_pack(configs(base), dirs, step="batched")
    assert [r["status"] for r in results] == ["completed"] * len(SEEDS)
    for run_dir, reference in zip(dirs, solo, strict=True):
        assert_same_run(run_dir, reference, "batched")


def test_a_seed_holding_another_seed_s_checkpoint_is_refused_and_left_as_it_was(
        solo, base, tmp_path, capsys):
    """The pack's side of RunFolder.check_checkpoint: seed 1 was interrupted and seed 0's
    checkpoint copied into its folder; the pack names the refusal and writes nothing there."""
    dirs = [tmp_path / d.name for d in solo]
    for source, run_dir in zip(solo, dirs, strict=True):
        shutil.copytree(source, run_dir)
    interrupted = dirs[1]
    write_json(interrupted / RESULT, {**read_json(interrupted / RESULT), "status": "running"})
    shutil.copyfile(dirs[0] / CHECKPOINT, interrupted / CHECKPOINT)
    before = {p.relative_to(interrupted): p.read_bytes() for p in interrupted.rglob("*")
              if p.is_file()}
    cfgs = configs(base)
    with pytest.raises(RuntimeError, match=r"1 of 2 seeds of the pack failed: .*CheckpointError"
                       rf".* written by run {cfgs[0].run_id}, not by this run "
                       rf"\({cfgs[1].run_id}\)"):
        train_pack(cfgs, dirs)
    assert f"run {interrupted} of the pack failed: CheckpointError" in capsys.readouterr().err
    assert {p.relative_to(interrupted): p.read_bytes() for p in interrupted.rglob("*")
            if p.is_file()} == before


def test_pack_step_chooses_and_refuses(base, tmp_path):
    cfg = configs(base)[0]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pack_step(cfg, cpu) == "turns" and pack_step(cfg, cuda) == "batched"
    assert pack_step(cfg, cpu, "batched") == "batched"
    assert pack_step(cfg.replace({"train.compile": True}), cuda) == "turns"
    resnet = cfg.replace({"model.arch": "resnet"})
    assert pack_step(resnet, cuda) == "turns"
    with pytest.raises(ConfigError, match="batched pack step takes model.arch=perceiver"):
        train_pack([resnet, resnet.replace({"train.seed": 1})],
                   [tmp_path / "a", tmp_path / "b"], step="batched")
    with pytest.raises(ConfigError, match="unknown pack step 'vmap'"):
        pack_step(cfg, cpu, "vmap")
    assert not (tmp_path / "a").exists()


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from experiments import train
    from experiments.config import load_config
    from experiments.packing import train_pack

    saved = []
    save = train.Run.save_checkpoint

    def save_then_maybe_die(self):
        save(self)
        saved.append(self.progress.step)
        if len(saved) == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

    train.Run.save_checkpoint = save_then_maybe_die
    cfgs = [load_config(None, {{**{base!r}, "train.seed": s}}) for s in {seeds!r}]
    train_pack(cfgs, [Path(sys.argv[1]) / f"seed{{s}}" for s in {seeds!r}], step={step!r})
""")


@pytest.mark.parametrize("step", ["turns", "batched"])
def test_kill_9_of_a_pack_resumes_every_seed_identically(solo, base, tmp_path, step):
    """SIGKILL right after seed 0's checkpoint of step 10, while seed 1's last is step 5
    (its rows of step 8 must be dropped and computed again): the rerun resumes each seed
    from its own checkpoint to the solo numbers (the batched step: seeds at different
    steps in one stack)."""
    script = KILLER.format(kill_at=3, base=base, seeds=SEEDS, step=step)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    dirs = [tmp_path / f"seed{s}" for s in SEEDS]
    assert [torch.load(d / CHECKPOINT, weights_only=True)["step"] for d in dirs] == [10, 5]
    assert [[r["step"] for r in read_jsonl(d / METRICS)] for d in dirs] == [[4, 8], [4, 8]]
    assert {read_json(d / RESULT)["status"] for d in dirs} == {"running"}

    results = train_pack(configs(base), dirs, step=step)
    for run_dir, reference in zip(dirs, solo, strict=True):
        assert_same_run(run_dir, reference, step)
    assert [[s["from_step"] for s in r["sessions"]] for r in results] == [[0, 10], [0, 5]]


def ddp_pack_worker(rank: int, world_size: int, port: int, base: dict, root: str,
                    step: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train_pack(configs(base), [Path(root) / f"seed{s}" for s in SEEDS], step=step)
    leave_distributed()


@pytest.mark.parametrize("step", ["turns", "batched"])
def test_a_pack_trains_under_ddp(solo, base, tmp_path, step):
    """Two gloo processes, each seed one DDP run of the pack (the batched step averages
    its stacked gradients over the ranks itself): the same numbers as one process up to
    DDP's reduction order (the tolerance of test_train's DDP test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(ddp_pack_worker, args=(2, port, base, str(tmp_path), step), nprocs=2)
    for seed, reference in zip(SEEDS, solo, strict=True):
        one, two = read_json(reference / RESULT), read_json(tmp_path / f"seed{seed}" / RESULT)
        assert two["status"] == "completed" and two["step"] == one["step"]
        assert len(two["sessions"][-1]["nodes"]) == 1 and two["sessions"][-1]["pid"]
        for key in ("train_loss", "val_loss", "test_loss"):
            assert two["final"][key] == pytest.approx(one["final"][key], rel=1e-3)
        for key in ("train_acc", "val_acc", "test_acc"):
            assert two["final"][key] == pytest.approx(one["final"][key], abs=0.01)


def test_a_pack_holds_one_config_and_packs_group_by_config(base, tmp_path):
    a, b = configs(base)
    other = load_config(None, {**base, "model.num_latents": 4})
    with pytest.raises(ConfigError, match="seeds of one config"):
        train_pack([a, other], [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()
    assert pack_key(a) == pack_key(b) == pack_key(a.replace({"train.init_seed": 7}))
    assert pack_key(other) != pack_key(a)
    c = other.replace({"train.seed": 1})
    assert packs([a, other, b, c], 2) == [[a, b], [other, c]]
    assert packs([a, other, b, c], 1) == [[a], [b], [other], [c]]


def test_seed_split_keeps_run_ids_and_selects_order_and_init(base):
    cfg = load_config(None, {**base, "train.seed": 3})
    same = cfg.replace({"train.data_seed": 3, "train.init_seed": 3})
    assert same.run_id == cfg.run_id  # a split equal to train.seed is the same run
    moved = cfg.replace({"train.init_seed": 4})
    assert moved.run_id != cfg.run_id
    assert (moved.train.order_seed, moved.train.weights_seed) == (3, 4)
    spec = input_spec(cfg.data)
    weights = [initial_model(c, spec).state_dict() for c in (cfg, same, moved)]
    torch.manual_seed(3)
    legacy = build_for(cfg, spec).state_dict()  # how every earlier run was initialised
    legacy_rng = torch.get_rng_state()
    initial_model(cfg, spec)
    assert torch.equal(torch.get_rng_state(), legacy_rng)  # training draws on from there
    initial_model(cfg.replace({"train.coupled_init": True}), spec)
    assert torch.equal(torch.get_rng_state(), legacy_rng)  # coupling leaves the stream alone
    for name, tensor in legacy.items():
        assert torch.equal(weights[0][name], tensor) and torch.equal(weights[1][name], tensor)
    assert not torch.equal(weights[2]["latents"], legacy["latents"])


def test_coupled_init_shares_every_parameter_of_the_same_name_and_shape(base):
    """Two configs of the demo's kind (N = 8 vs 4 latents, 1 vs 2 cross-attends) at one init
    seed: with coupling every parameter they share by name and shape starts identical;
    without it, drawn from one stream, the draws after the latents all differ."""
    spec = None
    models = {}
    for coupled in (False, True):
        for latents, crosses in ((8, 2), (4, 2), (8, 1)):
            cfg = load_config(None, {**base, "model.num_blocks": 2,
                                     "model.num_latents": latents,
                                     "model.num_cross_attends": crosses,
                                     "train.coupled_init": coupled})
            spec = spec or input_spec(cfg.data)
            models[coupled, latents, crosses] = dict(initial_model(cfg, spec).named_parameters())
    for coupled in (False, True):
        ref = models[coupled, 8, 2]
        for other in (models[coupled, 4, 2], models[coupled, 8, 1]):
            shared = [n for n, p in other.items() if n in ref and p.shape == ref[n].shape]
            assert "head.weight" in shared and "cross_attends.0.q.weight" in shared
            equal = [n for n in shared if torch.equal(other[n], ref[n])]
            if coupled:
                assert equal == shared
            else:
                assert "head.weight" not in equal
        assert not torch.equal(models[coupled, 4, 2]["latents"], ref["latents"][:4])
    # Coupled draws follow each module's own initialisation: nn.Linear's uniform bound
    # 1/sqrt(fan_in), and LayerNorm's ones.
    coupled = models[True, 8, 2]
    bound = coupled["head.weight"].shape[1] ** -0.5
    assert 0.5 * bound < coupled["head.weight"].abs().max() <= bound
    assert torch.equal(coupled["cross_attends.0.latent_norm.weight"], torch.ones(16))
    # Another init seed draws other weights.
    cfg = load_config(None, {**base, "train.coupled_init": True, "train.init_seed": 1})
    assert not torch.equal(initial_model(cfg, spec).head.weight, coupled["head.weight"])


def test_bad_pack_options_fail_before_anything_is_submitted(tmp_path, capsys, base):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({"base": {}, "seeds": [0, 1]}))
    out = tmp_path / "out"
    items = [f"{k}={v}" for k, v in base.items()]
    assert main(["sweep", str(sweep), *items, "--out", str(out), "--pack-seeds", "0"]) == 2
    assert "--pack-seeds=0 must be >= 1" in capsys.readouterr().err
    assert main(["sweep", str(sweep), *items, "--out", str(out), "--pack-seeds", "2",
                 "--runs-per-job", "1"]) == 2
    assert "drop --runs-per-job" in capsys.readouterr().err
    assert not out.exists()


def pack_sweep(tmp_path: Path, base: dict, executor: str, capsys) -> tuple[Path, dict]:
    """Two configs x two seeds, seeds packed by 2, to completion."""
    sweep = tmp_path / "packed.yaml"
    sweep.write_text(json.dumps({"base": {}, "grid": {"train.label_smoothing": [0, 0.1]},
                                 "seeds": [0, 1]}))
    out = tmp_path / "out"
    items = [f"{k}={v}" for k, v in {**base, "train.epochs": 1}.items()]
    code = main(["sweep", str(sweep), *items, "--out", str(out), "--executor", executor,
                 "--pack-seeds", "2", "--wait"])
    printed, err = capsys.readouterr()
    assert code == 0, printed + err
    assert "seeds packed by up to 2" in printed
    (entry,) = read_manifest(out)["submissions"]
    return out, entry


def check_packed(out: Path, entry: dict, base: dict, jobs: int) -> None:
    assert entry["pack_seeds"] == 2 and len(entry["jobs"]) == jobs
    by_config = {}
    for smoothing in (0, 0.1):
        cfgs = [load_config(None, {**base, "train.epochs": 1,
                                   "train.label_smoothing": smoothing, "train.seed": s})
                for s in (0, 1)]
        by_config[smoothing] = {c.run_id for c in cfgs}
        results = [read_json(out / c.run_id / RESULT) for c in cfgs]
        assert [r["status"] for r in results] == ["completed", "completed"]
        # The two seeds of a config were trained by one process, together.
        assert len({r["sessions"][0]["pid"] for r in results}) == 1
    for job in entry["jobs"]:  # a job holds whole packs
        ids = set(job["run_ids"])
        assert all(ids >= group or not ids & group for group in by_config.values())


def test_sweep_packs_seeds_on_the_local_executor(tmp_path, capsys, base):
    out, entry = pack_sweep(tmp_path, base, "local", capsys)
    check_packed(out, entry, base, jobs=2)  # two packs spread over the two cores


@pytest.mark.slurm
def test_sweep_packs_seeds_on_slurm(tmp_path, capsys, base):
    out, entry = pack_sweep(tmp_path, base, "slurm", capsys)
    check_packed(out, entry, base, jobs=2)  # one array task per pack
