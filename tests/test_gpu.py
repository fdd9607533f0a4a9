"""The GPU path (issue 27): bf16, torch.compile, SDPA kernels, NCCL, checkpoints moving
between devices, attention maps and the benchmark on CUDA.

Tests marked `gpu` need CUDA: `pytest -m gpu` on a GPU machine (benchmarks/gpu-check.sh
runs them there). Without CUDA they skip, also under CI=true, as CI has no GPU.
PERCEIVER_GPU_DRY=1 (set by `benchmarks/gpu-check.sh --cpu`) runs them on the CPU instead,
at tiny shapes, so that the tests and the script are proven before a GPU is lent.

The unmarked tests check the GPU-side logic that needs no GPU: bf16 refused on GPUs
without it, the compile cache, the SLURM GPU flags, the conda pins and the script's dry
mode.
"""

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from conftest import REPO, skip_or_fail

from experiments.cli import main
from experiments.config import load_config
from experiments.data import load_splits
from experiments.distributed import Distributed
from experiments.engine import autocast, autocast_dtype, prepare_training, to_device, train_step
from experiments.factory import build_for
from experiments.host import COMPILE_CACHE_ENV, use_compile_cache
from experiments.records import read_json
from experiments.runfolder import CHECKPOINT, RESULT
from perceiver_core.config import ConfigError

DRY = os.environ.get("PERCEIVER_GPU_DRY") == "1"
TINY = {"model.num_latents": 8, "model.latent_channels": 16, "model.num_blocks": 1,
        "model.self_attends_per_block": 1, "model.num_cross_attends": 1,
        "model.latent_heads": 2, "encoding.num_bands": 4, "data.train_subset": 256,
        "data.val_size": 64, "train.batch_size": 32, "train.max_steps": 4,
        "train.eval_every": 2, "train.lr": 0.01}
# bf16 keeps 8 significant bits (relative spacing 2^-8): a loss over a forward pass and
# two optimizer steps stays within 2% of fp32's.
BF16_LOSS_RTOL = 0.02


@pytest.fixture
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if DRY:
        return torch.device("cpu")
    pytest.skip("no CUDA device: run `pytest -m gpu` on a GPU (benchmarks/gpu-check.sh)")


@pytest.fixture
def tiny(tiny_fashion_mnist) -> dict:
    return {**TINY, "data.root": str(tiny_fashion_mnist)}


def items(overrides: dict) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(cuda: bool = True, **extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def first_batches(cfg, count: int):
    splits = load_splits(cfg)
    batches = splits.train.batches(cfg.train.batch_size, seed=0, epoch=0, train=True)
    return splits.spec, list(itertools.islice(batches, count))


# -- GPU tests (skipped without CUDA unless PERCEIVER_GPU_DRY=1) ----------------------------

@pytest.mark.gpu
def test_bf16_training_steps_match_fp32(device, tiny):
    cfgs = {p: load_config(None, {**tiny, "train.precision": p}) for p in ("fp32", "bf16")}
    spec, batches = first_batches(cfgs["fp32"], 3)
    losses = {}
    for precision, cfg in cfgs.items():
        torch.manual_seed(0)
        env = Distributed(0, 1, device)
        optimizer, scheduler, _, trainer = prepare_training(build_for(cfg, spec).to(device),
                                                            cfg, env, len(batches))
        losses[precision] = [train_step(trainer, optimizer, scheduler, b, cfg, env)[0]
                             / len(b.labels) for b in batches]
    assert autocast_dtype(cfgs["bf16"], device) == torch.bfloat16
    assert autocast_dtype(cfgs["fp32"], device) is None
    assert losses["bf16"] != losses["fp32"]  # bf16 did run
    for bf16, fp32 in zip(losses["bf16"], losses["fp32"], strict=True):
        assert bf16 == pytest.approx(fp32, rel=BF16_LOSS_RTOL)


def attention_ops(model, inputs, positions, device) -> dict[str, set[str]]:
    """The attention kernels (SDPA's, or InputAttention) that a forward pass runs inside
    cross- and self-attends."""
    from perceiver_core.attention import CrossAttend, SelfAttend

    ranges = {}

    def enter(name):
        def hook(module, args):
            ranges[module] = torch.profiler.record_function(name)
            ranges[module].__enter__()
        return hook

    def leave(module, args, output):
        ranges.pop(module).__exit__(None, None, None)

    handles = []
    for module in model.modules():
        if isinstance(module, CrossAttend | SelfAttend):
            name = "cross-attend" if isinstance(module, CrossAttend) else "self-attend"
            handles += [module.register_forward_pre_hook(enter(name)),
                        module.register_forward_hook(leave)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(inputs, positions)
    for handle in handles:
        handle.remove()
    found = {"cross-attend": set(), "self-attend": set()}
    for event in prof.events():
        if not re.search("_scaled_dot_product_|InputAttention", event.name):
            continue  # not a kernel (aten::scaled_dot_product_attention only dispatches)
        parent = event.cpu_parent
        while parent is not None and parent.name not in found:
            parent = parent.cpu_parent
        if parent is not None:
            found[parent.name].add(event.name)
    return found


@pytest.mark.gpu
@pytest.mark.parametrize("shape", ["fashion-mnist", "paper-imagenet"])
def test_attends_run_flash_or_memory_efficient_sdpa(device, shape, record_property):
    """With SDPA's math kernel (which materialises the (N, M) attention matrix) disabled,
    forward and backward of both attends still run; the profile names the kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from experiments.data import input_spec

    if device.type == "cpu" and shape == "paper-imagenet":
        pytest.skip("dry mode on a CPU: tiny shapes only")
    cfg = load_config(None, ["train.batch_size=2", "train.precision=bf16"], preset=shape)
    spec = input_spec(cfg.data)
    torch.manual_seed(0)
    model = build_for(cfg, spec).to(device)
    inputs = torch.randn(2, spec.num_inputs, spec.channels, device=device)
    positions = spec.example_positions().to(device)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]), \
            autocast(cfg, device):
        model(inputs, positions).float().sum().backward()
        ops = attention_ops(model, inputs, positions, device)
    record_property("attention_ops", json.dumps({k: sorted(v) for k, v in ops.items()}))
    assert ops["self-attend"] and all(re.search("flash|efficient", op)
                                      for op in ops["self-attend"]), ops
    assert ops["cross-attend"] and all(re.search("flash|efficient", op)
                                       for op in ops["cross-attend"]), ops


DDP_ONE = textwrap.dedent("""
    import json, os, signal, sys
    import torch, torch.distributed as dist
    from experiments.config import load_config
    from experiments.data import load_splits
    from experiments.distributed import Distributed
    from experiments.engine import prepare_training, train_step
    from experiments.factory import build_for

    cfg = load_config(None, {overrides!r})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
    splits = load_splits(cfg)
    env = Distributed(0, 1, device)
    optimizer, scheduler, net, _ = prepare_training(build_for(cfg, splits.spec).to(device),
                                                    cfg, env, 2)
    ddp = torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device] if device.type == "cuda" else None)
    caught = []  # submitit's preemption signal, USR2 (NCCL may take USR1)
    signal.signal(signal.SIGUSR2, lambda signum, frame: caught.append(signum))
    losses = []
    for batch in splits.train.batches(32, seed=0, epoch=0, train=True):
        stats = train_step(ddp, optimizer, scheduler, batch, cfg, env)
        losses.append(stats[0] / stats[2])
        os.kill(os.getpid(), signal.SIGUSR2)
        if len(losses) == 2:
            break
    total = torch.ones(1, device=device)
    dist.all_reduce(total)
    print(json.dumps({{"backend": dist.get_backend(), "losses": losses, "caught": len(caught),
                      "sum": total.item()}}))
    dist.destroy_process_group()
""")


@pytest.mark.gpu
def test_ddp_over_nccl_world_size_one_catches_usr2(device, tiny):
    script = DDP_ONE.format(overrides=tiny, port=free_port())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=child_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == ("nccl" if device.type == "cuda" else "gloo")
    assert out["caught"] == 2 and out["sum"] == 1.0
    assert len(out["losses"]) == 2 and all(0 < loss < 10 for loss in out["losses"])


@pytest.mark.gpu
def test_ddp_two_processes_on_one_gpu(device, tiny, tmp_path):
    run_dir, port = tmp_path / "ddp", str(free_port())
    command = [sys.executable, "-m", "experiments", "train", *items(tiny), "--out", str(run_dir)]
    logs = [tmp_path / f"rank{rank}.log" for rank in range(2)]
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=REPO,
                              env=child_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0",
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                                            NCCL_DEBUG="WARN"))
             for rank, log in enumerate(logs)]
    deadline = time.monotonic() + 300
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.poll() for p in procs):  # one rank failed: its peer would wait in NCCL
            deadline = min(deadline, time.monotonic() + 20)
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    errors = "".join(log.read_text() for log in logs)
    refused = [line for line in errors.splitlines()
               if "Duplicate GPU" in line or "ncclInvalidUsage" in line]
    if refused:
        pytest.skip(f"NCCL refuses two ranks on one GPU: {refused[0].strip()}")
    assert [p.returncode for p in procs] == [0, 0], errors[-3000:]
    result = read_json(run_dir / RESULT)
    assert result["status"] == "completed" and result["step"] == TINY["train.max_steps"]
    assert 0 < result["final"]["test_loss"] < 10


LEG = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from experiments.config import load_config
    from experiments.train import train_run

    def halt(row):
        if row["step"] == {stop}:
            raise RuntimeError("leg over")

    print("cuda" if torch.cuda.is_available() else "cpu")
    try:
        train_run(load_config(None, {overrides!r}), Path(sys.argv[1]), on_eval=halt)
    except RuntimeError as exc:
        if str(exc) != "leg over":
            raise
""")


@pytest.mark.gpu
@pytest.mark.parametrize("first", ["gpu", "cpu"])
def test_checkpoint_moves_between_gpu_and_cpu(device, tiny, tmp_path, first):
    """A run stopped after its step-2 checkpoint on one device resumes on the other."""
    run_dir = tmp_path / "run"
    legs = [first, "cpu" if first == "gpu" else "gpu"]
    seen = []
    for leg, stop in zip(legs, (2, 0), strict=True):
        done = subprocess.run([sys.executable, "-c", LEG.format(stop=stop, overrides=tiny),
                               str(run_dir)], capture_output=True, text=True, timeout=300,
                              cwd=REPO, env=child_env(cuda=leg == "gpu"))
        assert done.returncode == 0, done.stderr[-3000:]
        seen.append(done.stdout.split()[0])
    assert seen == [{"gpu": device.type, "cpu": "cpu"}[leg] for leg in legs]
    result = read_json(run_dir / RESULT)
    assert result["status"] == "completed" and result["step"] == TINY["train.max_steps"]
    assert [(s["from_step"], s["to_step"]) for s in result["sessions"]] == [(0, 2), (2, 4)]
    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == 4 and all(t.device.type == "cpu" for t in state["model"].values())


@pytest.mark.gpu
def test_attention_maps_on_the_device_match_the_cpu(device):
    from analysis.report.attention import cross_attention_maps
    from experiments.data import input_spec

    cfg = load_config(None, ["model.num_latents=16", "model.latent_channels=32"],
                      preset="fashion-mnist")
    spec = input_spec(cfg.data)
    torch.manual_seed(0)
    model = build_for(cfg, spec)
    inputs, positions = torch.randn(2, spec.num_inputs, spec.channels), spec.example_positions()
    on_cpu = cross_attention_maps(model, inputs, positions, kind="weights")
    on_device = cross_attention_maps(model.to(device), inputs.to(device), positions.to(device),
                                     kind="weights")
    assert len(on_device) == len(on_cpu) == cfg.model.num_cross_attends
    for mine, reference in zip(on_device, on_cpu, strict=True):
        assert mine.device.type == device.type
        rows = mine.sum(-1)  # softmax rows over the M inputs
        torch.testing.assert_close(rows, torch.ones_like(rows), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mine.cpu(), reference, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
def test_bench_on_the_device_in_its_compute_dtype(device, record_property):
    from experiments.bench import bench

    cfg = load_config(None, ["train.batch_size=64"], preset="fashion-mnist")
    result = bench(cfg, warmup=2, steps=5, device=device, peak_seconds=0.2)
    record_property("bench", json.dumps({k: result[k] for k in (
        "samples_per_s", "mfu", "peak_memory_bytes", "peak_flops_per_s", "dtype")}))
    assert result["device"] == device.type
    assert result["dtype"] == ("bfloat16" if device.type == "cuda" else "float32")
    assert 0 < result["mfu"] < 1 and result["peak_memory_bytes"] > 0


def samples_per_second(model, cfg, batch, device, warmup: int = 3, steps: int = 10) -> float:
    """Training steps on one batch (so that a compiled model never sees a new shape)."""
    from experiments.bench import synchronize

    env = Distributed(0, 1, device)
    optimizer, scheduler, _, trainer = prepare_training(model, cfg, env, warmup + steps)
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            tick = time.perf_counter()
        train_step(trainer, optimizer, scheduler, batch, cfg, env)
    synchronize(device)
    return steps * len(batch.labels) / (time.perf_counter() - tick)


@pytest.mark.gpu
def test_packed_seeds_match_solo_on_the_device(device, tiny, tmp_path):
    """The batched pack step where it is meant to pay (K small models filling one GPU):
    each seed of a pack of two, trained by one vmapped forward/backward in fp32, ends
    where it ends alone; shared latent blocks and a second cross-attend included. The
    tolerance allows cuBLAS's batched kernels their own rounding over four steps."""
    from experiments.packing import train_pack
    from experiments.train import train_run

    base = {**tiny, "train.precision": "fp32", "model.num_blocks": 2,
            "model.num_cross_attends": 2, "train.grad_clip": 0.5}
    cfgs = [load_config(None, {**base, "train.seed": seed}) for seed in (0, 1)]
    solo = [train_run(cfg, tmp_path / f"solo{i}") for i, cfg in enumerate(cfgs)]
    packed = train_pack(cfgs, [tmp_path / f"packed{i}" for i in range(2)], step="batched")
    assert solo[0]["final"] != solo[1]["final"]
    for mine, reference in zip(packed, solo, strict=True):
        assert mine["status"] == "completed" and mine["step"] == reference["step"] == 4
        for key in ("train_loss", "val_loss", "test_loss"):
            assert mine["final"][key] == pytest.approx(reference["final"][key], rel=1e-4)
        for key in ("train_acc", "val_acc", "test_acc"):  # within one example of 64
            assert mine["final"][key] == pytest.approx(reference["final"][key], abs=1 / 64)


@pytest.mark.gpu
def test_packed_against_sequential_rate_at_the_demo_shape(device, tmp_path, record_property):
    """benchmarks/packing.py on the device: K = 8 and 32 seeds of the demo's model, the
    batched pack step against the same seeds one after another (a CPU dry run: K = 2, two
    steps). The measured rates and ratio are the test's properties (gpu-tests.xml)."""
    seeds, steps = (["2"], "2") if device.type == "cpu" else (["8", "32"], "6")
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "packing.py"), "--shapes", "demo",
         "--seeds", *seeds, "--steps", steps, "--repeats", "2", "--packed", "batched",
         "--device", device.type, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "packing.json").read_text())
    assert [row["seeds"] for row in report["rows"]] == [int(k) for k in seeds]
    for row in report["rows"]:
        rates = row["samples_per_s"]
        record_property(f"packing_k{row['seeds']}", json.dumps(
            {"samples_per_s": rates, **row["ratios"]["batched"]}))
        assert set(rates) == {"sequential", "batched"} and min(rates.values()) > 0
        # every arm trained every step of every seed of every repeat
        assert all(len(run) == row["seeds"] * row["steps"]
                   for runs in row["step_times_s"].values() for run in runs)


@pytest.mark.gpu  # last of the gpu tests: compiling takes longest
def test_compiled_model_matches_eager_and_is_timed(device, tiny, tmp_path, monkeypatch,
                                                   record_property):
    """One compilation (the training graph): outputs against eager, then training steps of
    both; the Fashion-MNIST default on a GPU, the tiny model on a CPU."""
    monkeypatch.setenv(COMPILE_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    shape = tiny if device.type == "cpu" else {"data.root": tiny["data.root"],
                                               "data.train_subset": 256}
    cfgs = {c: load_config(None, {**shape, "train.compile": c}) for c in (False, True)}
    spec, (batch,) = first_batches(cfgs[True], 1)
    torch.manual_seed(0)
    eager = build_for(cfgs[False], spec).to(device)
    torch.manual_seed(0)
    model = build_for(cfgs[True], spec).to(device)
    _, _, compiled, _ = prepare_training(model, cfgs[True], Distributed(0, 1, device), 1)
    inputs, positions, _ = to_device(batch, device)
    with autocast(cfgs[True], device):
        mine, reference = compiled(inputs, positions).float(), eager(inputs, positions).float()
    tolerance = 2e-2 if autocast_dtype(cfgs[True], device) else 1e-4
    torch.testing.assert_close(mine, reference, rtol=tolerance, atol=tolerance)
    assert any((tmp_path / "cache").rglob("*.py")), "Inductor wrote no code to the cache"

    rates = {"eager": samples_per_second(eager, cfgs[False], batch, device),
             "compiled": samples_per_second(model, cfgs[True], batch, device)}
    record_property("samples_per_s", json.dumps(rates))
    record_property("compile_speedup", rates["compiled"] / rates["eager"])
    assert all(rate > 0 for rate in rates.values())


# -- the GPU-side logic, tested without a GPU ------------------------------------------

@pytest.fixture
def v100(monkeypatch):
    """torch.cuda reporting a GPU without bf16 in hardware (a V100): what this test can
    fake, as no GPU exists here. torch's own default would count emulated bf16 as yes."""
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    return asked


def test_bf16_is_refused_on_a_gpu_without_it(v100):
    cuda = torch.device("cuda")
    with pytest.raises(ConfigError, match=r"train\.precision=bf16 but Tesla V100-SXM2-32GB has "
                                          r"no bf16 .*set train\.precision=fp32, or auto"):
        autocast_dtype(load_config(None, ["train.precision=bf16"]), cuda)
    assert v100 == [False]  # native bf16 asked for, not emulation
    assert autocast_dtype(load_config(None, ["train.precision=auto"]), cuda) is None
    assert autocast_dtype(load_config(None, ["train.precision=fp32"]), cuda) is None
    cpu = torch.device("cpu")  # CPUs: bf16 when asked for, fp32 by default
    assert autocast_dtype(load_config(None, ["train.precision=bf16"]), cpu) == torch.bfloat16
    assert autocast_dtype(load_config(None, ["train.precision=auto"]), cpu) is None


def test_bf16_on_an_ampere_or_later_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    for precision in ("auto", "bf16"):
        cfg = load_config(None, [f"train.precision={precision}"])
        assert autocast_dtype(cfg, torch.device("cuda")) == torch.bfloat16


def test_bf16_run_on_a_gpu_without_it_fails_before_writing(v100, monkeypatch, tmp_path, capsys,
                                                           tiny):
    """`perceiver-ablate train train.precision=bf16` on a V100: exit 2 and one line, no run
    folder (the run's device is faked; nothing reaches CUDA before the check)."""
    import experiments.train

    monkeypatch.setattr(experiments.train, "init_distributed",
                        lambda: Distributed(0, 1, torch.device("cuda")))
    run_dir = tmp_path / "run"
    assert main(["train", *items(tiny), "train.precision=bf16", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no bf16" in err and "train.precision=fp32" in err
    assert not run_dir.exists()


def test_compile_cache_is_node_local_and_configurable(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv(COMPILE_CACHE_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # as $TMPDIR would
    default = use_compile_cache()  # Inductor's: torchinductor_USER in the temp folder
    assert default.parent == tmp_path / "tmp" and default.name.startswith("torchinductor_")

    monkeypatch.setenv(COMPILE_CACHE_ENV, str(tmp_path / "mine"))  # overrides Inductor's
    assert use_compile_cache() == tmp_path / "mine"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()

    monkeypatch.delenv(COMPILE_CACHE_ENV)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "users"))  # kept
    assert use_compile_cache() == tmp_path / "users"


def sbatch_lines(**profile_overrides) -> list[str]:
    from experiments.orchestration.cluster import load_profile
    from experiments.orchestration.executors import EXECUTORS

    if not shutil.which("srun"):
        skip_or_fail("SLURM's client commands are not installed: `apt-get install slurm-wlm`")
    profile = load_profile("gpu-example").with_overrides(profile_overrides)
    executor = EXECUTORS["slurm"].make(profile, "/tmp/unused")
    script = executor._executor._make_submission_file_text("true", "uid")
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


@pytest.mark.parametrize("overrides, flag", [
    ({}, "--gpus-per-node=8"),
    ({"gpu_type": "a100"}, "--gpus-per-node=a100:8"),
    ({"gpu_flag": "gres"}, "--gres=gpu:8"),
    ({"gpu_flag": "gres", "gpu_type": "h100", "gpus_per_node": 4}, "--gres=gpu:h100:4"),
])
def test_profile_asks_for_gpus_the_sites_way(overrides, flag):
    lines = sbatch_lines(**overrides)
    assert f"#SBATCH {flag}" in lines
    assert len([line for line in lines if re.search("gpu|gres", line.split("=")[0])]) == 1
    assert "#SBATCH --signal=USR2@120" in lines  # not USR1, which NCCL may take


def test_cpu_profile_asks_for_no_gpus_and_bad_gpu_flag_is_refused():
    assert not [line for line in sbatch_lines(gpus_per_node=0, gpu_flag="gres")
                if re.search("gpu|gres", line.split("=")[0])]
    from experiments.orchestration.cluster import Profile

    with pytest.raises(ConfigError, match="cluster.gpu_flag='gpus' must be one of "
                                          "gpus-per-node, gres"):
        Profile(gpus_per_node=8, gpu_flag="gpus")


# -- benchmarks/gpu-check.sh ---------------------------------------------------------------

GPU_CHECK = REPO / "benchmarks" / "gpu-check.sh"
# What may come back from a device call: at most 8 files, none in a subfolder.
OUT_FILES = {"gpu-check.log", "summary.json", "gpu-tests.xml", "bench.json", "bench.md",
             "demo-verdicts.json"}


def gpu_check(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(GPU_CHECK), *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env(PYTHON=sys.executable))


@pytest.mark.parametrize("args, message", [
    ([], "missing OUT_DIR"),
    (["--stages", "tests,lint", "out"], "unknown stage lint: choose from install,tests"),
    (["--frobnicate", "out"], "unknown option --frobnicate"),
    (["out"], "no CUDA device visible"),
])
def test_gpu_check_refuses_bad_arguments(tmp_path, args, message):
    if args == ["out"] and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = gpu_check(*[str(tmp_path / a) if a == "out" else a for a in args], timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def junit_counts(path: Path) -> dict[str, int]:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}


def test_gpu_check_dry_mode_runs_the_gpu_tests(tmp_path):
    """The script's dry mode on this CPU, narrowed to its tests stage and two gpu tests
    (every stage: test_gpu_check_whole_dry_mode, slow)."""
    out = tmp_path / "out"
    done = gpu_check("--cpu", "--stages", "tests", "--tests", "bf16_training or attention_maps",
                     str(out))
    log = (out / "gpu-check.log").read_text() if (out / "gpu-check.log").exists() else ""
    assert done.returncode == 0, done.stderr[-2000:] + log[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["machine"]["dry_run_on_cpu"]
    assert summary["machine"]["gpu"] is None and summary["machine"]["torch"] == torch.__version__
    assert [(s["stage"], s["exit"]) for s in summary["stages"]] == [("tests", 0)]
    assert junit_counts(out / "gpu-tests.xml") == {"tests": 2, "failures": 0, "errors": 0,
                                                   "skipped": 0}
    assert "test_bf16_training_steps_match_fp32 PASSED" in log
    assert {p.name for p in out.iterdir()} == {"gpu-check.log", "summary.json", "gpu-tests.xml"}


@pytest.mark.slow
def test_gpu_check_whole_dry_mode(tmp_path):
    """Every stage of the dry mode, the carried wheels' install included when
    benchmarks/gpu-carry exists (`--prepare`)."""
    out = tmp_path / "out"
    done = gpu_check("--cpu", str(out))
    assert done.returncode == 0, done.stderr[-2000:] + (out / "gpu-check.log").read_text()[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    stages = [s["stage"] for s in summary["stages"]]
    assert stages == (["install"] if (REPO / "benchmarks" / "gpu-carry").is_dir() else []) + [
        "tests", "bench", "demo"]
    counts = junit_counts(out / "gpu-tests.xml")
    assert counts["failures"] == counts["errors"] == 0 and counts["tests"] >= 10
    bench = json.loads((out / "bench.json").read_text())
    rows = {row["implementation"]: row["result"] for row in bench["runs"]}
    assert set(rows) == {"ours", "ours-1x", "transformers", "perceiver-pytorch"}
    assert all("error" not in r and r["device"] == "cpu" and r["steps"] == 2
               for r in rows.values())
    assert "| fashion-mnist | ours |" in (out / "bench.md").read_text()
    verdicts = json.loads((out / "demo-verdicts.json").read_text())
    assert len(verdicts["runs"]) == 20 and verdicts["metric"] == "final.test_acc"
    assert {e["knob"] for e in verdicts["effects"]} == {
        "model.num_latents", "encoding.num_bands", "encoding.kind", "model.num_cross_attends"}
    assert {p.name for p in out.iterdir()} == OUT_FILES
