"""Cross-attention maps (issue 7, paper Fig. 3): the maps themselves, their plaid structure,
where they are drawn, and `perceiver-ablate attention` on a tiny trained run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from analysis.report import attention as A  # noqa: E402
from experiments.cli import main  # noqa: E402
from experiments.config import load_config  # noqa: E402
from perceiver_core import build_model, grid_positions  # noqa: E402

SHAPE = (28, 28)
TINY = ["model.num_latents=16", "model.latent_channels=32", "model.latent_heads=2",
        "model.num_blocks=2", "model.self_attends_per_block=1", "model.num_cross_attends=2",
        "encoding.num_bands=4"]


def model_at_init(*overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = load_config(None, [*TINY, *overrides])
    return build_model(cfg.model, cfg.encoding, 1, SHAPE)


def pixels(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Inputs with content (normalised-pixel-like values), so plaid is not trivial."""
    return torch.randn(batch, SHAPE[0] * SHAPE[1], 1, generator=torch.Generator().manual_seed(seed))


def plaid(model, positions: torch.Tensor, drawn_at: torch.Tensor | None = None) -> float:
    """Mean additive_fraction of the first cross-attend's maps, laid out where `drawn_at`
    puts each input (array order on the grid when None)."""
    maps = A.cross_attention_maps(model, pixels(), positions)[0]
    order = torch.arange(maps.shape[-1]) if drawn_at is None else torch.from_numpy(
        A.layout(drawn_at, SHAPE).order)
    return A.additive_fraction(maps[..., order].unflatten(-1, SHAPE)).mean().item()


def test_fourier_logits_are_plaid_at_init_and_controls_are_not():
    grid = grid_positions(SHAPE)
    shuffled = grid[torch.randperm(len(grid), generator=torch.Generator().manual_seed(1))]
    fourier = model_at_init()
    # A logit map of a latent is close to row function + column function (tartan) ...
    assert plaid(fourier, grid) > 0.85
    # ... which is the position features' doing: without them, or with the positions
    # scrambled relative to the array, a map is as additive as noise ((28+28-1)/784 ~ 0.07).
    assert plaid(model_at_init("encoding.kind=learned"), grid) < 0.2
    assert plaid(fourier, shuffled) < 0.2
    # Drawn where the shuffled positions put each input, the plaid is back: the model is
    # permutation invariant and the layout undoes the permutation.
    assert plaid(fourier, shuffled, drawn_at=shuffled) > 0.85


def test_additive_fraction_is_one_for_plaid_and_zero_for_interaction():
    rows, cols = torch.randn(5, 1), torch.randn(1, 7)
    assert A.additive_fraction(rows + cols).item() == pytest.approx(1.0, abs=1e-6)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(3, 3)  # pure interaction
    assert A.additive_fraction(checker).item() == pytest.approx(0.0, abs=1e-6)


def test_weights_rows_sum_to_one_and_are_the_softmax_of_the_logits():
    model = model_at_init()
    positions = grid_positions(SHAPE)
    logits = A.cross_attention_maps(model, pixels(), positions, "logits")
    weights = A.cross_attention_maps(model, pixels(), positions, "weights")
    assert len(weights) == 2 and weights[0].shape == (2, 16, 784)
    for logit, weight in zip(logits, weights, strict=True):
        torch.testing.assert_close(weight.sum(-1), torch.ones(2, 16))
        torch.testing.assert_close(weight, logit.softmax(-1))
    assert model.training  # the mode it came in with


def test_heads_are_folded_into_the_latent_axis_latent_major():
    model = model_at_init("model.cross_heads=2", "model.cross_qk_channels=8",
                          "model.cross_v_channels=8")
    positions = grid_positions(SHAPE)
    raw = model(pixels(), positions, return_attention=True)[1][0]["logits"]  # (B, H, N, M)
    folded = A.cross_attention_maps(model, pixels(), positions)[0]
    assert folded.shape == (2, 2 * 16, 784)
    torch.testing.assert_close(folded[:, 5 * 2 + 1], raw[:, 1, 5].detach())
    plots = A.attention_figures(model, pixels(1), positions, SHAPE, latents=4, closeups=2)
    closeups = plots["attention_logits_closeups_0"].figure
    assert "latent 1, head 1" in [ax.get_title() for ax in closeups.get_axes()]


def test_selected_cross_attends_are_first_second_and_last():
    assert A.selected(1) == [0]
    assert A.selected(2) == [0, 1]
    assert A.selected(8) == [0, 1, 7]


def test_layout_recognises_grids_and_leaves_points_alone():
    grid = grid_positions(SHAPE)
    assert np.array_equal(A.layout(grid, SHAPE).order, np.arange(784))
    perm = torch.randperm(784, generator=torch.Generator().manual_seed(0))
    lay = A.layout(grid[perm], SHAPE)
    # Input k sits at grid cell perm[k]: the image puts it back there.
    assert np.array_equal(lay.image(perm.numpy()), np.arange(784).reshape(SHAPE))
    jittered = grid + 0.01 * torch.randn(grid.shape, generator=torch.Generator().manual_seed(0))
    assert not A.layout(jittered, SHAPE).is_grid
    assert not A.layout(torch.rand(784, 3), SHAPE).is_grid


@pytest.mark.parametrize("index_shape", [(300,), (20, 15)])
def test_maps_over_positions_that_are_no_grid_are_drawn_against_them(index_shape):
    """1D inputs and point clouds: a line or a scatter over the explicit positions."""
    count, dims = 300, len(index_shape)
    torch.manual_seed(0)
    cfg = load_config(None, [*TINY])
    model = build_model(cfg.model, cfg.encoding, 1, index_shape)
    positions = torch.rand(count, dims) * 2 - 1
    plots = A.attention_figures(model, torch.randn(1, count, 1), positions, index_shape,
                                latents=6, closeups=2, titles=["a cloud"])
    assert sorted(plots) == ["attention_logits_closeups_0", "attention_logits_overview_0"]
    axes = [ax for plot in plots.values() for ax in plot.figure.get_axes()]
    drawn = [ax for ax in axes if ax.collections or ax.lines]
    assert not any(isinstance(c, AxesImage) for ax in axes for c in ax.images)
    # 2 cross-attends x (6 overview + 2 close-up maps) + the input
    assert len(drawn) == 2 * (6 + 2) + 1
    if dims == 2:
        assert all(isinstance(ax.collections[0], PathCollection) for ax in drawn)
        values = drawn[0].collections[0].get_array()
        assert len(values) == count
    else:
        assert all(len(ax.lines[0].get_xdata()) == count for ax in drawn)
    assert "against the inputs' positions" in plots["attention_logits_overview_0"].caption


def is_pdf(path: Path) -> bool:
    return path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 1000


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_attention_command_on_a_tiny_trained_run(tiny_fashion_mnist, tmp_path, capsys):
    from experiments.readback import load_trained
    from experiments.train import train_run

    cfg = load_config(None, [*TINY, f"data.root={tiny_fashion_mnist}", "data.val_size=100",
                             "train.batch_size=32", "train.max_steps=4", "train.eval_every=4"])
    run_dir = tmp_path / "run"
    assert train_run(cfg, run_dir)["status"] == "completed"

    assert main(["attention", str(run_dir), "--images", "2", "--latents", "9"]) == 0
    printed = [Path(line) for line in capsys.readouterr().out.split()]
    names = {f"attention_logits_{view}_{k}.{fmt}" for view in ("overview", "closeups")
             for k in (0, 1) for fmt in ("pdf", "png")}
    assert {p.name for p in printed} == names
    assert all(p.parent == run_dir / "attention" for p in printed)
    assert all(is_pdf(p) if p.suffix == ".pdf" else is_png(p) for p in printed)

    # The softmax weights instead of the logits (--weights), from the checkpoint file.
    model, cfg = load_trained(run_dir / "checkpoint.pt")
    plots = A.attention_figures(model, pixels(1), grid_positions(SHAPE), SHAPE, "weights")
    assert sorted(plots) == ["attention_weights_closeups_0", "attention_weights_overview_0"]
    assert "softmax" in plots["attention_weights_overview_0"].caption


def test_examples_of_distinct_classes_come_first():
    assert A.pick_examples(torch.tensor([3, 3, 1, 3, 2]), 3) == [0, 2, 4]
    assert A.pick_examples(torch.tensor([3, 3, 1]), 3) == [0, 2, 1]


def test_attention_command_errors_are_clean(tmp_path, capsys):
    assert main(["attention", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    model = build_model(load_config(None, ["model.arch=resnet"]).model,
                        load_config(None, []).encoding, 1, SHAPE)
    with pytest.raises(A.ConfigError, match="Perceiver"):
        A.cross_attention_maps(model, pixels(), grid_positions(SHAPE))
