"""How the command line, tables and figures write counts and durations: one spelling
everywhere."""

from __future__ import annotations

import math


def human(count: float | None) -> str:
    """404.3e9 -> '404.3B', 44.9e6 -> '44.9M', 640 -> '640', None/NaN -> '-': the paper's
    way of writing parameter and FLOP counts."""
    if count is None or math.isnan(count):
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= scale:
            return f"{count / scale:.1f}{suffix}"
    return f"{count:.0f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns for a terminal, as `status` and `sweep --dry-run` print them."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join("  ".join(f"{c:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [headers, *rows])


def duration(seconds: float) -> str:
    """252.6 -> '4m13s', 4500 -> '1h15m': progress lines, ETAs and the demo's timings."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"
