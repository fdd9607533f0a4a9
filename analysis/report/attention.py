"""Cross-attention maps of a trained Perceiver (paper Fig. 3).

For the first, second and last cross-attends, each latent's attention over the input array
is drawn where the inputs are: an H x W image when the positions form a grid (a permuted
grid is put back in place, so the maps are drawn in image space), else a line over 1D
positions or a scatter over the first two coordinates (point clouds). The paper draws the
pre-softmax logits; the softmax weights are the other `kind`.

With Fourier features the logits are "tartan-like": a latent's query meets keys that are
linear in the position features, which are sums of functions of each coordinate, so its
logit map is close to a row function plus a column function, i.e. plaid. `additive_fraction`
measures that (the share of a map's variance a row + column fit explains) and the close-ups
print it under each map, so the pattern is a number as well as a picture.

    perceiver-ablate attention RUN_DIR [--out DIR] [--images K] [--latents L] [--weights]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from analysis.report import style
from analysis.report.figures import Plot, save_plots
from perceiver_core.config import ConfigError
from perceiver_core.position import grid_positions

KINDS = ("logits", "weights")
CMAP = "viridis"
POOL = 256  # test examples searched for images of distinct classes
GRID_ATOL = 1e-4  # how close positions must be to grid points to count as that grid
GAP = 1  # pixels between the maps of an overview mosaic


def selected(count: int) -> list[int]:
    """The cross-attends drawn, in forward order: the first, second and last (paper Fig. 3)."""
    return sorted({0, min(1, count - 1), count - 1})


@torch.no_grad()
def cross_attention_maps(model: torch.nn.Module, inputs: Tensor, positions: Tensor | None,
                         kind: str = "logits") -> list[Tensor]:
    """One (B, heads * N, M) float tensor per cross-attend application, in forward order.

    Heads are folded into the latent axis (latent-major), so with one cross head (the
    paper's) row n is latent n.
    """
    if kind not in KINDS:
        raise ConfigError(f"attention kind {kind!r} is not one of {', '.join(KINDS)}")
    if not hasattr(model, "cross_attends"):
        raise ConfigError(f"{type(model).__name__} has no cross-attends: attention maps need "
                          "a Perceiver (model.arch=perceiver)")
    was_training = model.training
    model.eval()
    _, maps = model(inputs, positions, return_attention=True)
    model.train(was_training)
    return [m[kind].float().transpose(1, 2).flatten(1, 2) for m in maps]


def additive_fraction(maps: Tensor) -> Tensor:
    """(..., H, W) -> (...): the fraction of each map's variance explained by the best sum
    of a row function and a column function (two-way ANOVA without interaction; on a full
    grid the least-squares fit is row mean + column mean - grand mean). 1 = pure plaid; an
    unstructured map scores about (H + W - 1) / (H W)."""
    centred = maps - maps.mean(dim=(-2, -1), keepdim=True)
    fit = centred.mean(dim=-1, keepdim=True) + centred.mean(dim=-2, keepdim=True)
    total = centred.pow(2).sum(dim=(-2, -1))
    residual = (centred - fit).pow(2).sum(dim=(-2, -1))
    return 1 - residual / total.clamp_min(torch.finfo(total.dtype).tiny)


@dataclass(frozen=True)
class Layout:
    """Where the M inputs sit: `order[k]` is the input at row-major grid cell k of `shape`
    when the positions are a (possibly permuted) 2D grid; otherwise order is None and the
    maps are drawn against `positions` (M, d)."""

    positions: np.ndarray
    shape: tuple[int, int] | None = None
    order: np.ndarray | None = None

    @property
    def is_grid(self) -> bool:
        return self.order is not None

    def image(self, values: np.ndarray) -> np.ndarray:
        """(M, ...) values of the inputs -> (H, W, ...) in image space."""
        return values[self.order].reshape(*self.shape, *values.shape[1:])


def layout(positions: Tensor, index_shape: tuple[int, ...]) -> Layout:
    """The Layout of one example's (M, d) positions on an input of `index_shape`. A video's
    (T, H, W) grid is laid out as its T frames side by side, an (H, T * W) image."""
    points = positions.detach().cpu().double()
    found = Layout(points.numpy())
    if len(index_shape) == 3 and points.shape == (math.prod(index_shape), 3):
        frames, height, width = index_shape
        if not torch.allclose(points, grid_positions(index_shape).double(), atol=GRID_ATOL):
            return found
        cells = np.arange(frames * height * width).reshape(frames, height, width)
        return Layout(found.positions, (height, frames * width),
                      cells.transpose(1, 0, 2).reshape(-1))
    if len(index_shape) != 2 or points.shape[-1] != 2 or points.shape[0] != math.prod(index_shape):
        return found
    height, width = index_shape
    cell = ((points + 1) / 2 * torch.tensor([height - 1, width - 1]).clamp_min(1)).round()
    grid = grid_positions(index_shape).double()
    index = (cell[:, 0] * width + cell[:, 1]).long().clamp(0, height * width - 1)
    on_grid = torch.allclose(points, grid[index], atol=GRID_ATOL)
    if not on_grid or index.unique().numel() != index.numel():
        return found
    return Layout(found.positions, (height, width), torch.argsort(index).numpy())


def normalised(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] along the last axis (each map gets its own colour scale)."""
    low, high = values.min(-1, keepdims=True), values.max(-1, keepdims=True)
    return (values - low) / np.where(high > low, high - low, 1)


def mosaic(maps: np.ndarray, lay: Layout, cols: int) -> np.ndarray:
    """(L, M) maps -> one (rows * (H + GAP), cols * (W + GAP)) image, each map min-max
    scaled, NaN between maps (drawn as background)."""
    height, width = lay.shape
    rows = -(-len(maps) // cols)
    out = np.full((rows * (height + GAP) - GAP, cols * (width + GAP) - GAP), np.nan)
    for i, values in enumerate(normalised(maps)):
        r, c = divmod(i, cols)
        out[r * (height + GAP):r * (height + GAP) + height,
            c * (width + GAP):c * (width + GAP) + width] = lay.image(values)
    return out


def bare(ax) -> None:
    """No ticks, grid or frame: the map is the data (labels stay)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_frame_on(False)


def columns(count: int) -> int:
    """Columns of a grid of `count` maps: about square, without a ragged last row when a
    divisor near the square root allows (32 -> 8 x 4)."""
    side = math.ceil(math.sqrt(count))
    return next((c for c in range(side, 2 * side + 1) if count % c == 0), side)


def draw_map(ax, values: np.ndarray, lay: Layout) -> None:
    """One latent's map: an image on a grid, a line over 1D positions, else a scatter over
    the first two coordinates (row coordinate down, as in an image)."""
    bare(ax)
    if lay.is_grid:
        ax.imshow(lay.image(values), cmap=CMAP, interpolation="nearest")
        return
    points = lay.positions
    if points.shape[1] == 1:
        order = np.argsort(points[:, 0])
        ax.plot(points[order, 0], values[order], linewidth=0.6)
        return
    ax.scatter(points[:, 1], points[:, 0], c=values, cmap=CMAP, s=2, linewidths=0)
    ax.set_aspect("equal")
    ax.invert_yaxis()


def draw_input(ax, inputs: np.ndarray, lay: Layout) -> None:
    """The input itself, min-max scaled per channel: grey or RGB image, or its points
    coloured by the first channel."""
    bare(ax)
    pixels = normalised(inputs.T).T
    if lay.is_grid:
        image = lay.image(pixels)
        if image.shape[-1] == 3:
            ax.imshow(image, interpolation="nearest")
        else:
            ax.imshow(image[..., 0], cmap="gray", interpolation="nearest")
        return
    draw_map(ax, pixels[:, 0], lay)


def _name(cross: int, count: int) -> str:
    # later keys win: with two cross-attends the second is the last
    which = {1: "second", count - 1: "last", 0: "first"}.get(cross) if count > 1 else None
    return f"cross-attend {cross + 1}" + (f" ({which})" if which else "")


def _names(crosses: list[int], count: int) -> str:
    """[0, 1, 7], 8 -> 'cross-attends 1 (first), 2 (second) and 8 (last) of 8'."""
    names = [_name(i, count).removeprefix("cross-attend ") for i in crosses]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"cross-attend{'s' * (len(names) > 1)} {listed} of {count}"


def _latent(row: int, heads: int) -> str:
    return f"latent {row // heads}" + (f", head {row % heads}" if heads > 1 else "")


@style.styled
def overview_figure(maps: dict[int, np.ndarray], lay: Layout, count: int,
                    heads: int = 1) -> Figure:
    """Many latents per cross-attend: {cross-attend index: (L, M) maps} -> one panel each."""
    shown = len(next(iter(maps.values())))
    cols = columns(shown)
    aspect = -(-shown // cols) / cols * (lay.shape[0] / lay.shape[1] if lay.is_grid else 1)
    height = min(4.0, max(1.2, style.FULL_WIDTH / len(maps) * aspect + 0.35))
    fig = Figure(figsize=(style.FULL_WIDTH, height), layout="constrained")
    panels = fig.subfigures(1, len(maps), squeeze=False)[0]
    for panel, (cross, values) in zip(panels, maps.items(), strict=True):
        if lay.is_grid:
            ax = panel.subplots()
            ax.imshow(mosaic(values, lay, cols), cmap=CMAP, interpolation="nearest")
            ax.set_axis_off()
        else:
            rows = -(-len(values) // cols)
            axes = panel.subplots(rows, cols, squeeze=False).ravel()
            for ax in axes[len(values):]:
                ax.set_axis_off()
            for ax, row in zip(axes, values, strict=False):
                draw_map(ax, row, lay)
        panel.suptitle(f"{_name(cross, count)}: {len(values)} "
                       f"{'maps' if heads > 1 else 'latents'}")
    return fig


@style.styled
def closeups_figure(inputs: np.ndarray, maps: dict[int, np.ndarray], rows: list[int],
                    lay: Layout, count: int, heads: int = 1,
                    title: str = "input") -> Figure:
    """The input beside a few latents (`rows` of each (L, M) map) of every cross-attend;
    on a grid each map is labelled with its additive_fraction."""
    fig = Figure(figsize=(style.FULL_WIDTH, 0.35 + 1.25 * len(maps)), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.2, len(rows)])
    draw_input(left.subplots(), inputs, lay)
    left.suptitle(title)
    axes = right.subplots(len(maps), len(rows), squeeze=False)
    for line, (cross, values) in zip(axes, maps.items(), strict=True):
        line[0].set_ylabel(_name(cross, count).replace(" (", "\n("))
        fractions = (additive_fraction(torch.from_numpy(
            np.moveaxis(lay.image(values[rows].T), -1, 0).copy())) if lay.is_grid else None)
        for k, (ax, row) in enumerate(zip(line, rows, strict=True)):
            draw_map(ax, values[row], lay)
            if cross == next(iter(maps)):
                ax.set_title(_latent(row, heads))
            if fractions is not None:
                ax.set_xlabel(f"row+col $R^2$ {fractions[k]:.2f}", fontsize=6)
    return fig


def pick_examples(labels: Tensor, count: int) -> list[int]:
    """`count` example indices, one per class first (the first of each), then the rest."""
    first = {}
    for i, label in enumerate(labels.tolist()):
        first.setdefault(str(label), i)  # a multi-hot label set counts as one class
    picked = list(first.values())[:count]
    return picked + [i for i in range(len(labels)) if i not in picked][:count - len(picked)]


def attention_figures(model: torch.nn.Module, inputs: Tensor, positions: Tensor | None,
                      index_shape: tuple[int, ...], kind: str = "logits",
                      latents: int = 64, closeups: int = 4,
                      titles: list[str] | None = None,
                      modalities: tuple = ()) -> dict[str, Plot]:
    """Overview and close-ups of every example in the batch: {name: Plot}.

    inputs (B, M, C) and positions (M, d) or (B, M, d) as the model takes them; the maps
    are drawn where the positions put each input (the grid of index_shape when None).
    Packed modalities ((channels, index_shape) each, perceiver_core/multimodal.py) are
    drawn one by one, each on its own positions.
    """
    if latents < 1 or closeups < 1:
        raise ConfigError(f"need at least one latent to draw (latents={latents}, "
                          f"closeups={closeups})")
    where = positions if positions is not None else grid_positions(index_shape)
    what = {"logits": "pre-softmax attention logits",
            "weights": "softmax attention weights (each map sums to 1 over the inputs)"}[kind]
    plots = {}
    for b in range(len(inputs)):  # one at a time: a paper-size map is N x 50,176 per head
        own = where[b] if where.dim() == 3 else where
        all_maps = cross_attention_maps(model, inputs[b:b + 1], None if positions is None
                                        else own, kind)
        count, heads = len(all_maps), all_maps[0].shape[1] // model.latents.shape[0]
        maps = {i: all_maps[i][0].numpy() for i in selected(count)}
        del all_maps  # the cross-attends not drawn
        total = len(maps[0])
        rows = np.linspace(0, min(latents, total) - 1, min(closeups, total)).round()
        rows = sorted(set(rows.astype(int).tolist()))
        title = titles[b] if titles else f"example {b}"
        # (file name infix, caption, the modality's inputs, index shape, channels, dims)
        parts = [("", title, slice(None), index_shape, inputs.shape[-1], own.shape[-1])]
        if modalities:
            starts = np.cumsum([0] + [math.prod(shape) for _, shape in modalities])
            parts = [(f"modality{k + 1}_", f"{title}, modality {k + 1} {tuple(shape)}",
                      slice(starts[k], starts[k + 1]), tuple(shape), channels, len(shape))
                     for k, (channels, shape) in enumerate(modalities)]
        for part, named, cols, shape, channels, dims in parts:
            lay = layout(own[cols, :dims], shape)
            own_maps = {i: m[:, cols] for i, m in maps.items()}
            shown = {i: m[:latents] for i, m in own_maps.items()}
            where_text = ("drawn as images over the input grid" if lay.is_grid else
                          "drawn against the inputs' positions")
            plots[f"attention_{kind}_{part}overview_{b}"] = Plot(
                overview_figure(shown, lay, count, heads),
                f"Cross-attention maps ({what}) of {named}: the first {len(shown[0])} "
                f"{'maps' if heads > 1 else 'latents'} "
                f"at {_names(list(maps), count)}, {where_text}; "
                "each map has its own colour scale (low to high). Plaid (tartan) patterns "
                "come from the Fourier position features.")
            plots[f"attention_{kind}_{part}closeups_{b}"] = Plot(
                closeups_figure(inputs[b, cols, :channels].numpy(), own_maps, rows, lay, count,
                                heads, named),
                f"Close-ups of {len(rows)} latents' {what} beside the input ({named}); one "
                "row per cross-attend" + (", each map labelled with the share of its variance "
                                          "a row function + column function explains (1 = "
                                          "pure plaid)." if lay.is_grid else "."))
    return plots


def describe(label: Tensor, classes: tuple[str, ...]) -> str:
    """A class name, or the names of a multi-hot label set joined by '+'."""
    if label.is_floating_point():
        return "+".join(classes[i] for i in label.nonzero()[:, 0].tolist()) or "no label"
    return classes[label]


def write_attention(source: str | Path, out_dir: str | Path | None = None, images: int = 3,
                    latents: int = 64, closeups: int = 4, kind: str = "logits"
                    ) -> list[tuple[str, Plot, list[Path]]]:
    """Maps of the run folder or checkpoint `source` on `images` test images of distinct
    classes, written as PDF + PNG into out_dir (default RUN_DIR/attention)."""
    from experiments.readback import load_trained, test_examples

    if images < 1:
        raise ConfigError(f"--images={images} must be >= 1")
    source = Path(source)
    model, cfg = load_trained(source)
    if cfg.model.arch != "perceiver":
        raise ConfigError(f"{source} is a model.arch={cfg.model.arch} run: attention maps "
                          "need a Perceiver")
    batch, classes, spec = test_examples(cfg, POOL)
    picked = pick_examples(batch.labels, images)
    positions = batch.positions[picked] if batch.positions.dim() == 3 else batch.positions
    titles = [f"test example {i} ({describe(batch.labels[i], classes)})" for i in picked]
    plots = attention_figures(model, batch.inputs[picked], positions, spec.index_shape,
                              kind, latents, closeups, titles, spec.modalities)
    out = Path(out_dir) if out_dir else (source if source.is_dir() else source.parent) / "attention"
    return save_plots(plots, out)
