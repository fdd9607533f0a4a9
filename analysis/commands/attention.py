"""`perceiver-ablate attention RUN_DIR_OR_CHECKPOINT`: cross-attention maps (paper Fig. 3)."""

from __future__ import annotations

import argparse

from experiments.commands import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a trained Perceiver's run folder, or its checkpoint.pt")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write the figures (default: RUN_DIR/attention)")
    parser.add_argument("--images", type=int, default=3, metavar="K",
                        help="test images to draw, of distinct classes (default: 3)")
    parser.add_argument("--latents", type=int, default=64, metavar="L",
                        help="latents per cross-attend in the overview grids (default: 64)")
    parser.add_argument("--weights", action="store_true",
                        help="draw the softmax weights instead of the pre-softmax logits "
                             "(the paper draws logits)")


def run(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    from analysis.report.attention import write_attention

    written = write_attention(args.source, args.out, images=args.images, latents=args.latents,
                              kind="weights" if args.weights else "logits")
    for _, _, paths in written:
        for path in paths:
            print(path)
    return 0


COMMAND = Command("cross-attention maps of a trained run (paper Fig. 3)", add_arguments, run)
