"""`perceiver-ablate`: one console script, subcommands from entry points (docs/design.md,
"The command line")."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path

from experiments.errors import CheckpointError, DataError
from experiments.records import STORAGE_ERRORS, RecordWriteError, storage_error
from perceiver_core.config import ConfigError

GROUP = "perceiver_ablate.commands"
ORDER = ("train", "sweep", "status", "study", "flops", "bench", "figures", "verdicts",
         "attention", "export", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perceiver-ablate",
        description="Which Perceiver design choices matter? Train, sweep, study, count "
                    "and plot Perceiver ablations (see README.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    for name in sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        command = found[name].load()
        sub_parser = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "items") and all("=" in item for item in extra):
        args.items += extra  # key=value overrides given after an option (--preset NAME ...)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args) or 0
    except (ConfigError, DataError, CheckpointError) as exc:
        print(f"perceiver-ablate {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk: one line naming the path, no traceback
        if exc.errno not in STORAGE_ERRORS:
            raise
        if not isinstance(exc, RecordWriteError):  # refused outside the records' writer
            # a write(2) names no file: name the folder the command writes to
            where = exc.filename or getattr(args, "out", None) or "."
            exc = storage_error(Path(where), None, exc)
        print(f"perceiver-ablate {args.command}: error: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
