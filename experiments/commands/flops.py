"""`perceiver-ablate flops`: params and forward FLOPs of one example for a config.

A Perceiver is built on the meta device (shapes only, no memory, no compute), so the
paper's ImageNet model (M = 50,176) is counted in about a second. The CNN/ViT baselines run
one real example on the CPU: torch.jit tracing of convolutions fails on meta tensors.
"""

from __future__ import annotations

import json

from experiments.commands import Command, add_config_arguments, config_from_args


def add_arguments(parser):
    add_config_arguments(parser, preset=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def count(cfg) -> dict:
    """count_flops for one example of cfg's data."""
    import torch

    from experiments.data import input_spec
    from perceiver_core import build_model, count_flops, grid_positions

    spec = input_spec(cfg.data)
    with torch.device("meta" if cfg.model.arch == "perceiver" else "cpu"):
        model = build_model(cfg.model, cfg.encoding, spec.channels, spec.index_shape)
        positions = grid_positions(spec.index_shape)
        inputs = torch.zeros(1, positions.shape[0], spec.channels)
    return count_flops(model, inputs, positions)


def short(n: int) -> str:
    """44912254 -> '44.9M', the paper's way of writing counts."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def table(counts: dict) -> str:
    rows = [("params", counts["params"]), ("MACs (fvcore)", counts["macs"]),
            ("FLOPs (paper, 2 x MACs)", counts["flops"])]
    rows += [(f"  {part}", flops) for part, flops in counts["breakdown"].items()]
    width = max(len(f"{n:,}") for _, n in rows)
    lines = [f"{name:<26}{n:>{width},}  {short(n):>7}" for name, n in rows]
    lines.append(f"unsupported ops: {counts['unsupported_ops'] or 'none'}")
    return "\n".join(lines)


def run(args) -> int:
    cfg, _ = config_from_args(args)
    counts = count(cfg)
    print(json.dumps(counts) if args.json else table(counts))
    return 0


COMMAND = Command("params and FLOPs per example (fvcore; paper convention = 2 x MACs)",
                  add_arguments, run)
