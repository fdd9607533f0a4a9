"""`perceiver-ablate bench [CONFIG.yaml] [--preset NAME] [key=value ...] [--json]
[--steps N] [--warmup N]`: time training steps of a config on this machine.

For sizing a run: the batch size is train.batch_size (e.g. `--preset paper-imagenet
train.batch_size=1`), `train.compile=true` times the compiled model, `train.precision`
picks fp32 or bf16 autocast (the default on CUDA). The device is CUDA when present.
"""

from __future__ import annotations

import json

from experiments.commands import Command, add_config_arguments, config_from_args


def add_arguments(parser):
    add_config_arguments(parser, preset=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first, compilation included (default 2)")


def short(value: float, unit: str) -> str:
    """1.23e11 -> '123.0 G<unit>'."""
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def bench_table(r: dict) -> str:
    q1, q3 = r["step_time_iqr_s"]
    rows = [
        ("device", f"{r['device']} ({r['device_name']}), {r['threads']} threads, {r['dtype']}"
                   f"{', compiled' if r['compile'] else ''}"),
        ("batch size", f"{r['batch_size']} ({r['warmup']} warm-up + {r['steps']} timed steps)"),
        ("samples/s", f"{r['samples_per_s']:.2f}"),
        ("step time", f"median {r['step_time_s']:.3f} s, IQR {q1:.3f}-{q3:.3f} s, "
                      f"min {r['step_time_min_s']:.3f} s, max {r['step_time_max_s']:.3f} s"),
        ("FLOPs per step", f"{short(r['flops_per_step'], 'FLOP')} (3 x forward)"),
        ("achieved", short(r["flops_per_s"], "FLOP/s")),
        ("peak matmul", short(r["peak_flops_per_s"], "FLOP/s")),
        ("MFU", f"{r['mfu']:.3f}"),
        ("peak memory", short(r["peak_memory_bytes"], "B")),
        ("load average", "{:.2f} before, {:.2f} after".format(*r["load_average_1m"])),
    ]
    return "\n".join(f"{name:<16}{value}" for name, value in rows)


def run(args) -> int:
    cfg, _ = config_from_args(args)
    from experiments.bench import bench

    result = bench(cfg, warmup=args.warmup, steps=args.steps)
    print(json.dumps(result) if args.json else bench_table(result))
    return 0


COMMAND = Command("time training steps: samples/s, MFU, peak memory", add_arguments, run)
