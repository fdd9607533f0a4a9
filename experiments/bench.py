"""Time full training steps of a config: samples/s, step time, FLOP/s, MFU, peak memory.

The timed step is the training loop's own (experiments/engine.py: `prepare_training` and
`train_step`: forward under the run's autocast, loss, backward, optimizer and schedule),
on a synthetic batch of the config's input shape, so the figures are what
`perceiver-ablate train` reaches without data loading. On CUDA the batch waits in pinned
host memory and the step copies it over, as from a pinned loader.

FLOPs follow the paper's convention (docs/paper.md): a training step counts 3 x the forward
FLOPs of count_flops (backward ~ 2 x forward). MFU divides the achieved rate by the peak
matmul rate measured in the same process, on the same device and in the compute dtype
(fp32, or bf16 under autocast; a loop of large square matmuls), so it says how close the
model runs to what this machine can do, not to a datasheet; the peak is measured before
and after the timed steps and the higher taken, so a burst of load elsewhere on a shared
machine lowers MFU rather than inflating it. Peak memory is the growth of the process's
peak resident set over its size before the model was built (CPU), or
torch.cuda.max_memory_allocated (CUDA): weights, gradients, optimizer state, activations.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from experiments.config import RunConfig
from experiments.data import Batch, InputSpec, input_spec
from experiments.distributed import Distributed
from experiments.engine import autocast, prepare_training, train_step
from experiments.factory import build_for, config_flops
from perceiver_core.config import ConfigError

PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype:
    """The dtype the matmuls of a training step run in: the autocast dtype, else fp32."""
    return getattr(autocast(cfg, device), "fast_dtype", torch.float32)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """The best FLOP/s of square matmuls over ~`seconds` (2 n^3 FLOPs each): large enough
    to run at the BLAS/cuBLAS peak, timed one matmul at a time (ten on a GPU)."""
    n, reps = (8192, 10) if device.type == "cuda" else (2048, 1)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)  # first call: library initialisation
    synchronize(device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tick = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - tick))
    return best


def resident_bytes(field: str) -> int:
    """VmRSS (current) or VmHWM (peak) resident set of this process from /proc; without
    /proc (macOS), the lifetime peak from getrusage stands in for both."""
    if PROC_STATUS.exists():
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim), so that memory the
    process freed earlier cannot be reused unseen by the resident-set measurement."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """How much the process's peak memory grew after start().

    CPU: the kernel's peak-RSS mark is reset to the current RSS (Linux: /proc/self/
    clear_refs), so the peak covers only what came after start(); where that is impossible
    the lifetime peak is used, an upper bound. CUDA: the allocator's peak statistics.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0

    def start(self) -> None:
        gc.collect()
        trim_heap()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            PROC_CLEAR_REFS.write_text("5")
        except OSError:
            pass
        self.base = resident_bytes("VmRSS")

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return resident_bytes("VmHWM") - self.base


def synthetic_batch(cfg: RunConfig, spec: InputSpec, batch_size: int,
                    device: torch.device) -> Batch:
    """Random inputs of the config's shape, its position grid and random labels."""
    positions = spec.example_positions()
    labels = (torch.randint(2, (batch_size, cfg.model.num_classes)).float() if spec.multi_label
              else torch.randint(cfg.model.num_classes, (batch_size,)))
    batch = Batch(torch.randn(batch_size, spec.num_inputs, spec.channels), positions, labels)
    if device.type == "cuda":
        batch = Batch(*(t.pin_memory() for t in batch))
    return batch


def forward_flops(cfg: RunConfig) -> int:
    """Forward FLOPs of one example in the paper's convention (count_flops)."""
    return config_flops(cfg)["flops"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def measure(cfg: RunConfig, *, warmup: int = 2, steps: int = 5,
            device: torch.device | None = None,
            make_model: Callable[[RunConfig, InputSpec], torch.nn.Module] | None = None,
            peak_seconds: float = 1.0) -> dict:
    """Build the model and training state, run `warmup` training steps (compilation
    included), time `steps` more: step times, peak memory and peak matmul rate, no FLOPs.

    `make_model(cfg, spec)` swaps in another implementation taking (inputs, positions) ->
    logits (the side-by-side benchmarks); by default the config's own model.
    """
    if warmup < 0 or steps < 1:
        raise ConfigError(f"need warmup >= 0 and steps >= 1 (got {warmup}, {steps})")
    device = device or pick_device()
    dtype = compute_dtype(cfg, device)
    spec = input_spec(cfg.data)
    batch_size = cfg.train.batch_size
    make_model = make_model or default_model
    with torch.device("meta"):  # imports (model library, optimizer) outside the measurement
        prepare_training(make_model(cfg, spec), cfg, Distributed(0, 1, device), 1)
    load_before = os.getloadavg()[0]
    peak_before = peak_matmul_flops(device, dtype, peak_seconds)

    memory = PeakMemory(device)
    memory.start()
    batch = synthetic_batch(cfg, spec, batch_size, device)
    torch.manual_seed(cfg.train.weights_seed)
    model = make_model(cfg, spec).to(device)
    params = sum(p.numel() for p in model.parameters())  # shared weights once
    env = Distributed(rank=0, world_size=1, device=device)
    optimizer, scheduler, _, trainer = prepare_training(model, cfg, env, warmup + steps)

    def step() -> None:
        train_step(trainer, optimizer, scheduler, batch, cfg, env)
        synchronize(device)

    tick = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_s = time.perf_counter() - tick
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        step()
        times.append(time.perf_counter() - tick)
    peak_memory = memory.peak()
    load_after = os.getloadavg()[0]
    peak = max(peak_before, peak_matmul_flops(device, dtype, peak_seconds))

    median = statistics.median(times)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (median,) * 3
    return {
        "samples_per_s": batch_size / median,
        "step_time_s": median,
        "step_time_iqr_s": [q1, q3],
        "step_time_min_s": min(times),
        "step_time_max_s": max(times),
        "step_times_s": times,
        "warmup_time_s": warmup_s,
        "peak_flops_per_s": peak,
        "peak_memory_bytes": peak_memory,
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "compile": cfg.train.compile,
        "batch_size": batch_size,
        "warmup": warmup,
        "steps": steps,
        "params": params,
        "load_average_1m": [load_before, load_after],
        "torch": torch.__version__,
    }


def with_flops(result: dict, flops_per_example: int) -> dict:
    """Add the FLOP figures to a measurement: a step counts 3 x forward x batch size."""
    flops_per_step = 3 * flops_per_example * result["batch_size"]
    rate = flops_per_step / result["step_time_s"]
    return {**result, "forward_flops_per_example": flops_per_example,
            "flops_per_step": flops_per_step, "flops_per_s": rate,
            "mfu": rate / result["peak_flops_per_s"]}


def bench(cfg: RunConfig, *, warmup: int = 2, steps: int = 5,
          device: torch.device | None = None, peak_seconds: float = 1.0) -> dict:
    """measure() the config's own model, with FLOPs from count_flops (module docstring)."""
    flops = forward_flops(cfg)
    return with_flops(measure(cfg, warmup=warmup, steps=steps, device=device,
                              peak_seconds=peak_seconds), flops)


def default_model(cfg: RunConfig, spec: InputSpec) -> torch.nn.Module:
    return build_for(cfg, spec)
