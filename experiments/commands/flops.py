"""`perceiver-ablate flops`: params and forward FLOPs of one example for a config
(experiments.factory.config_flops: the count every run records)."""

from __future__ import annotations

import json

from experiments.commands import Command, add_config_arguments, config_from_args


def add_arguments(parser):
    add_config_arguments(parser, preset=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def counts_table(counts: dict) -> str:
    from experiments.formatting import human

    rows = [("params", counts["params"]), ("MACs (fvcore)", counts["macs"]),
            ("FLOPs (paper, 2 x MACs)", counts["flops"])]
    rows += [(f"  {part}", flops) for part, flops in counts["breakdown"].items()]
    width = max(len(f"{n:,}") for _, n in rows)
    lines = [f"{name:<26}{n:>{width},}  {human(n):>7}" for name, n in rows]
    lines.append(f"unsupported ops: {counts['unsupported_ops'] or 'none'}")
    return "\n".join(lines)


def run(args) -> int:
    cfg, _ = config_from_args(args)
    from experiments.factory import config_flops

    counts = config_flops(cfg)
    print(json.dumps(counts) if args.json else counts_table(counts))
    return 0


COMMAND = Command("params and FLOPs per example (fvcore; paper convention = 2 x MACs)",
                  add_arguments, run)
