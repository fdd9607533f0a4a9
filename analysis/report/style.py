"""One camera-ready look for every figure: two-column paper widths, serif text, the seaborn
colour-blind palette, PDFs with embedded TrueType fonts (journals reject Type 3) plus PNGs.

Figures are `matplotlib.figure.Figure` objects built without pyplot (no global figure
registry, no backend to pick), inside `context()` so the rc settings apply to every text
object when it is created and to the PDF writer when it is saved.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from unittest import mock

import matplotlib
import matplotlib.style
import seaborn as sns
from cycler import cycler
from matplotlib.figure import Figure

from experiments.records import atomic_write_bytes

COLUMN_WIDTH = 3.25  # inches: one column of a two-column paper
FULL_WIDTH = 6.75  # inches: both columns
PALETTE = sns.color_palette("colorblind")
DIVERGED_COLOR = "#d62728"  # red, used only for diverged runs so it never means anything else
FORMATS = ("pdf", "png")

RC = {
    "font.family": "serif",
    "font.serif": ["Times New Roman", "Nimbus Roman", "STIXGeneral", "DejaVu Serif"],
    "mathtext.fontset": "stix",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "figure.titlesize": 9,
    "axes.prop_cycle": cycler(color=PALETTE.as_hex()),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.4,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "figure.constrained_layout.use": True,
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "pdf.fonttype": 42,  # TrueType, embedded
    "ps.fonttype": 42,
    "image.cmap": "viridis",
}

ARCH_NAMES = {"perceiver": "Perceiver", "resnet": "ResNet", "vit": "ViT"}

T = TypeVar("T")


@contextlib.contextmanager
def context() -> Iterator[None]:
    """The style, active only inside the block (a library must not change global rcParams).

    Optuna's matplotlib plots call `plt.style.use("ggplot")` themselves; inside this block
    that name resolves to this style, so study figures look like the others.
    """
    with matplotlib.rc_context(RC), mock.patch.dict(matplotlib.style.library, {"ggplot": RC}):
        yield


def styled(build: Callable[..., T]) -> Callable[..., T]:
    """Decorator: run a figure builder inside `context()`."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with context():
            return build(*args, **kwargs)
    return wrapper


def new_figure(panels: int = 1, height: float = 2.0, width: float | None = None,
               sharey: bool = False) -> tuple[Figure, list]:
    """A figure with `panels` axes in one row: column width for one panel, else full width."""
    width = width or (COLUMN_WIDTH if panels == 1 else FULL_WIDTH)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, panels, sharey=sharey, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write stem.pdf and stem.png atomically; returns the paths."""
    paths = []
    with context():
        for fmt in FORMATS:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, metadata=_reproducible(fmt))
            path = Path(f"{stem}.{fmt}")
            atomic_write_bytes(path, buffer.getvalue())
            paths.append(path)
    return paths


def _reproducible(fmt: str) -> dict:
    """No timestamps in the files, so rerunning the report on the same results changes nothing."""
    return {"CreationDate": None} if fmt == "pdf" else {}
