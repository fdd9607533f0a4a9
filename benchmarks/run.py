"""`make bench` (= `python benchmarks/run.py`): this project's Perceiver side by side with
transformers' and perceiver-pytorch's, and its step time against the input size M.

Every figure is experiments/bench.py's measurement (full training steps through the
training loop's own step; MFU against the peak matmul rate measured in the same process),
each in a fresh process so that peak memory is that implementation's alone. Shapes:

  fashion-mnist   the project's default Fashion-MNIST model (experiments/presets/
                  fashion-mnist.yaml, the base of the ablation sweeps), its batch 64
  mid             benchmarks/mid.yaml: 64x64x3, N=256, D=512, 4 interleaved cross-attends,
                  4 blocks x 4 self-attends; batch 8
  paper-imagenet  the paper's ImageNet model (M = 50,176), batch 1
On CUDA the batches are GPU_BATCH's (bf16 autocast, as `train` runs there) and more steps
are timed, as a GPU step takes milliseconds.

Implementations: `ours` (the shape as given), `ours-1x` and `transformers` (both with one
cross-attend: transformers' Perceiver has no interleaved cross-attends, and at one it is
exactly our architecture, same parameter count), `perceiver-pytorch` (the shape as given,
as far as its knobs go: benchmarks/peers.py lists the differences).

Scaling: the mid model at M = 32^2 ... 256^2 (1k to 64k inputs), N and D fixed; the step
time is fitted as t(M) = a + b M^p, a being the latent Transformer's M-independent cost.

Results: benchmarks/results/bench.json and bench.md (the Markdown the README quotes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# name: (config file or None, preset or None, overrides, batch, warmup, steps)
SHAPES = {
    "fashion-mnist": (None, "fashion-mnist", [], 64, 3, 10),
    "mid": (str(HERE / "mid.yaml"), None, [], 8, 1, 5),
    "paper-imagenet": (None, "paper-imagenet", [], 1, 1, 3),
}
IMPLEMENTATIONS = ("ours", "ours-1x", "transformers", "perceiver-pytorch")
ONE_CROSS_ATTEND = ["model.num_cross_attends=1"]
# On CUDA: batches that keep an H100 busy (the paper trained paper-imagenet at 1024 over
# many accelerators), and (warmup, steps).
GPU_BATCH = {"fashion-mnist": 64, "mid": 64, "paper-imagenet": 32}
GPU_STEPS = (3, 10)
SCALING_SIZES = (32, 45, 64, 91, 128, 181, 256)  # M = 1,024 ... 65,536
SCALING_BATCH, SCALING_WARMUP, SCALING_STEPS = 2, 1, 5


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def shape_config(shape: str, implementation: str, extra: list[str] = ()):
    from experiments.config import load_config

    path, preset, overrides, batch, _, _ = SHAPES[shape]
    batch = GPU_BATCH[shape] if on_gpu() else batch
    one = ONE_CROSS_ATTEND if implementation in ("ours-1x", "transformers") else []
    return load_config(path, [*overrides, *one, f"train.batch_size={batch}", *extra],
                       preset=preset)


def forward_flops_by_running(model, cfg) -> int:
    """Matmul FLOPs of one forward of one example (torch's FlopCounterMode, 2 per
    multiply-add: the paper's convention). For the peers, which count_flops cannot trace;
    on real tensors, as transformers' Perceiver calls .item() on its mask."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from experiments.data import input_spec
    from perceiver_core import grid_positions

    spec = input_spec(cfg.data)
    positions = grid_positions(spec.index_shape)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, positions.shape[0], spec.channels), positions)
    return counter.get_total_flops()


def child(implementation: str, shape: str, warmup: int, steps: int, extra: list[str]) -> dict:
    """One measurement in this (fresh) process."""
    from experiments.bench import bench, measure, with_flops
    from experiments.data import input_spec

    cfg = shape_config(shape, implementation, extra)
    if implementation in ("ours", "ours-1x"):
        return bench(cfg, warmup=warmup, steps=steps)
    sys.path.insert(0, str(HERE))
    from peers import PEERS

    result = measure(cfg, warmup=warmup, steps=steps, make_model=PEERS[implementation])
    model = PEERS[implementation](cfg, input_spec(cfg.data))
    return with_flops(result, forward_flops_by_running(model, cfg))


def run_child(*args: str) -> dict:
    """Run `run.py --child ...` in a fresh interpreter; its last stdout line is the JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_exponent(inputs: list[int], times: list[float]) -> dict:
    """t(M) = a + b M^p, least squares on relative errors; p on a fine grid, a and b
    linear for each p (the grid's spacing, 0.001, bounds the error of p)."""
    import numpy as np

    m, t = np.asarray(inputs, float), np.asarray(times, float)
    best = None
    for p in np.arange(0.3, 2.5, 0.001):
        design = np.stack([np.ones_like(m), m**p], axis=1) / t[:, None]
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
        residual = float(np.sum((design @ [a, b] - 1) ** 2))
        if a >= 0 and b > 0 and (best is None or residual < best[0]):
            best = (residual, float(p), float(a), float(b))
    residual, p, a, b = best
    return {"exponent": round(p, 3), "a_s": a, "b_s": b,
            "rms_relative_error": math.sqrt(residual / len(t))}


def machine() -> dict:
    import torch

    from experiments.bench import device_name, pick_device

    device = pick_device()
    return {"device": device.type, "device_name": device_name(device),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def markdown(report: dict) -> str:
    m = report["machine"]
    dtypes = sorted({row["result"]["dtype"] for row in report["runs"]
                     if "dtype" in row["result"]})
    lines = [
        "# Training-step benchmark",
        "",
        f"{m['device_name']} ({m['device']}, {m['threads']} threads), torch {m['torch']}, "
        f"{'/'.join(dtypes) or 'no dtype'}, {m['date']}. `python benchmarks/run.py`; every row "
        "is a fresh process; MFU = achieved FLOP/s (3 x forward FLOPs per example x batch / "
        "median step time) / peak matmul FLOP/s measured in the same process, in the same "
        "dtype. Load = 1-minute load average before / after the timed steps.",
        "",
        "| shape | implementation | batch | params | GFLOP/example (fwd) | samples/s | "
        "step time s (median [IQR]) | GFLOP/s | peak GFLOP/s | MFU | peak memory | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["runs"]:
        r = row["result"]
        if "error" in r:
            lines.append(f"| {row['shape']} | {row['implementation']} | | | | | "
                         f"failed: {r['error']} | | | | | |")
            continue
        q1, q3 = r["step_time_iqr_s"]
        lines.append(
            f"| {row['shape']} | {row['implementation']} | {r['batch_size']} | "
            f"{r['params'] / 1e6:.1f}M | {r['forward_flops_per_example'] / 1e9:.2f} | "
            f"{r['samples_per_s']:.3g} | {r['step_time_s']:.3g} [{q1:.3g}-{q3:.3g}] | "
            f"{r['flops_per_s'] / 1e9:.1f} | {r['peak_flops_per_s'] / 1e9:.1f} | "
            f"{r['mfu']:.2f} | {fmt_bytes(r['peak_memory_bytes'])} | "
            "{:.2f} / {:.2f} |".format(*r["load_average_1m"]))
    if report["versus_transformers"]:
        lines += ["", "Ours vs transformers at identical architecture (one cross-attend; "
                      "same parameter and FLOP counts checked per shape):", "",
                  "| shape | samples/s, ours / transformers | peak memory, ours / transformers "
                  "| same params, same FLOPs |", "|---|---|---|---|"]
        lines += [f"| {shape} | {v['speedup']:.2f}x | {v['memory_ratio']:.2f}x | "
                  f"{'yes' if v['same_params'] else 'NO'}, {'yes' if v['same_flops'] else 'NO'} |"
                  for shape, v in report["versus_transformers"].items()]
    scaling = report.get("scaling")
    if scaling:
        fit = scaling["fit"]
        lines += ["", f"Step time vs input size M (benchmarks/mid.yaml, batch {SCALING_BATCH}"
                      f"; fit t = a + b M^p: p = {fit['exponent']}, a = {fit['a_s']:.3g} s, "
                      f"rms relative error {fit['rms_relative_error']:.3f}):", "",
                  "| M | step time s | MFU | load |", "|---|---|---|---|"]
        lines += [f"| {p['inputs']} | {p['step_time_s']:.3g} | {p['mfu']:.2f} | "
                  "{:.2f} / {:.2f} |".format(*p["load_average_1m"]) for p in scaling["points"]]
    lines += ["", "perceiver-pytorch differs from the paper's architecture where its knobs "
                  "stop (benchmarks/peers.py):", ""]
    from peers import DIFFERENCES

    lines += [f"- {d}" for d in DIFFERENCES["perceiver-pytorch"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS,
                        default=list(IMPLEMENTATIONS))
    parser.add_argument("--scaling", choices=("yes", "no", "only"), default="yes")
    parser.add_argument("--warmup", type=int, help="override every shape's warm-up steps")
    parser.add_argument("--steps", type=int, help="override every shape's timed steps")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where bench.json/.md go")
    parser.add_argument("--child", nargs=2, metavar=("IMPLEMENTATION", "SHAPE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value applied to every config")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    if args.child:
        implementation, shape = args.child
        _, _, _, _, warmup, steps = SHAPES.get(shape, SHAPES["mid"])
        warmup, steps = GPU_STEPS if on_gpu() else (warmup, steps)
        print(json.dumps(child(implementation, shape, args.warmup if args.warmup is not None
                               else warmup, args.steps or steps, args.overrides)))
        return 0

    from experiments.records import atomic_write_text, write_json

    def save() -> None:  # after every row: a benchmark cut short keeps what it measured
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "bench.json", report)
        atomic_write_text(args.out / "bench.md", markdown(report))

    report = {"machine": machine(), "runs": [], "versus_transformers": {}}
    common = [*(["--warmup", str(args.warmup)] if args.warmup is not None else []),
              *(["--steps", str(args.steps)] if args.steps else []), *args.overrides]
    if args.scaling != "only":
        for shape in args.shapes:
            for implementation in args.implementations:
                result = run_child(implementation, shape, *common)
                report["runs"].append({"shape": shape, "implementation": implementation,
                                       "result": result})
                print(f"{shape:15} {implementation:18} " + (
                    f"{result['samples_per_s']:8.3g} samples/s  MFU {result['mfu']:.2f}  "
                    f"{fmt_bytes(result['peak_memory_bytes'])}  load "
                    "{:.2f}/{:.2f}".format(*result["load_average_1m"])
                    if "error" not in result else f"failed: {result['error']}"), flush=True)
                save()
            by = {row["implementation"]: row["result"] for row in report["runs"]
                  if row["shape"] == shape and "error" not in row["result"]}
            if "ours-1x" in by and "transformers" in by:
                ours, theirs = by["ours-1x"], by["transformers"]
                report["versus_transformers"][shape] = {
                    "speedup": ours["samples_per_s"] / theirs["samples_per_s"],
                    "memory_ratio": ours["peak_memory_bytes"] / theirs["peak_memory_bytes"],
                    "same_params": ours["params"] == theirs["params"],
                    "same_flops": (ours["forward_flops_per_example"]
                                   == theirs["forward_flops_per_example"])}
    if args.scaling != "no":
        points = []
        for size in SCALING_SIZES:
            result = run_child("ours", "mid", "--warmup", str(SCALING_WARMUP), "--steps",
                               str(SCALING_STEPS), f"data.image_size={size}",
                               f"encoding.max_resolution={size}",
                               f"train.batch_size={SCALING_BATCH}", *args.overrides)
            if "error" in result:
                print(f"scaling M={size * size}: failed: {result['error']}", flush=True)
                continue
            points.append({"inputs": size * size, **result})
            print(f"scaling M={size * size:6}  {result['step_time_s']:.3g} s  "
                  f"MFU {result['mfu']:.2f}", flush=True)
        fit = fit_exponent([p["inputs"] for p in points], [p["step_time_s"] for p in points])
        report["scaling"] = {"batch": SCALING_BATCH, "points": points, "fit": fit}
        print(f"scaling exponent p = {fit['exponent']} (t = a + b M^p)", flush=True)
    save()
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
