"""Params and FLOPs: the paper's tables within 1%, fvcore cross-checked, `flops` command."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from experiments.cli import main
from experiments.config import load_config
from experiments.factory import config_flops
from perceiver_core import EncodingConfig, ModelConfig, build_model, count_flops, grid_positions


def paper(**overrides):
    """The paper-imagenet preset with model.* overrides, counted by the `flops` command."""
    cfg = load_config(overrides={f"model.{k}": v for k, v in overrides.items()},
                      preset="paper-imagenet")
    return config_flops(cfg)


# (overrides, FLOPs, params) from docs/paper.md, "Tables to reproduce": Tables 5, 6, 7.
AT_START = "at_start"
PAPER_ROWS = {
    # Table 6, 1 cross-attend "at start" is listed as 41.1M, but with one cross-attend both
    # placements are the same network (docs/paper.md): this architecture gives 42.1M for both.
    "t6-1-at_start": (dict(num_cross_attends=1, cross_attend_placement=AT_START), 404.3e9, 42.1e6),
    "t6-1-interleaved": (dict(num_cross_attends=1), 404.3e9, 42.1e6),
    "t6-2-at_start": (dict(num_cross_attends=2, cross_attend_placement=AT_START), 447.6e9, 44.9e6),
    "t6-2-interleaved": (dict(num_cross_attends=2), 447.6e9, 44.9e6),
    "t6-4-at_start": (dict(num_cross_attends=4, cross_attend_placement=AT_START), 534.1e9, 44.9e6),
    "t6-4-interleaved": (dict(num_cross_attends=4), 534.1e9, 44.9e6),
    "t6-8-at_start": (dict(num_cross_attends=8, cross_attend_placement=AT_START), 707.2e9, 44.9e6),
    "t6-8-interleaved": (dict(), 707.2e9, 44.9e6),
    "t7-unshared": (dict(share_cross_attends=False, share_latent_blocks=False), 707.2e9, 326.2e6),
    "t5-4-cross-only": (dict(num_blocks=0, num_cross_attends=4, share_cross_attends=False),
                        173.1e9, 12.7e6),
    "t5-8-cross-only": (dict(num_blocks=0, num_cross_attends=8, share_cross_attends=False),
                        346.1e9, 23.8e6),
    "t5-12-cross-only": (dict(num_blocks=0, num_cross_attends=12, share_cross_attends=False),
                         519.2e9, 34.9e6),
}


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_paper_tables_within_one_percent(row):
    overrides, flops, params = PAPER_ROWS[row]
    counts = paper(**overrides)
    assert counts["unsupported_ops"] == {}
    assert counts["flops"] == 2 * counts["macs"]
    assert counts["flops"] == pytest.approx(flops, rel=0.01)
    assert counts["params"] == pytest.approx(params, rel=0.01)


def test_one_cross_attend_and_one_self_attend_cost_what_the_paper_says():
    """docs/paper.md: ~43.2 GFLOP per cross-attend, ~7.5 GFLOP per self-attend layer."""
    one = paper(num_cross_attends=1, num_blocks=1, self_attends_per_block=1)
    two = paper(num_cross_attends=1, num_blocks=1, self_attends_per_block=2)
    assert one["breakdown"]["cross_attends"] == pytest.approx(43.2e9, rel=0.005)
    assert two["flops"] - one["flops"] == pytest.approx(7.5e9, rel=0.005)
    assert one["breakdown"]["head"] == 2 * 1024 * 1000
    assert sum(one["breakdown"].values()) == one["flops"]


def small_model(arch, encoding=None):
    torch.manual_seed(0)
    encoding = encoding or EncodingConfig(num_bands=4)
    cfg = ModelConfig(arch=arch, num_latents=16, latent_channels=32, num_blocks=2,
                      self_attends_per_block=2, num_cross_attends=2, latent_heads=4,
                      num_classes=10, baseline_width=16, vit_depth=2)
    return build_model(cfg, encoding, 3, (8, 8))


@pytest.mark.parametrize("arch", ["perceiver", "resnet", "vit"])
def test_fvcore_agrees_with_torch_flop_counter(arch):
    """torch.utils.flop_counter has no formula for the CPU flash kernel: the math backend
    decomposes attention into matmuls it does count. Eager cross-attends fold their
    projections (perceiver_core.attention.CrossAttend), traced ones do not: unfold them."""
    model = small_model(arch)
    inputs, pos = torch.randn(2, 64, 3), grid_positions((8, 8))
    counts = count_flops(model, inputs, pos)
    for cross in getattr(model, "cross_attends", []):
        cross.foldable = False
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(inputs, pos)
    assert counts["flops"] == counter.get_total_flops() > 0
    assert counts["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["perceiver", "resnet", "vit"])
@pytest.mark.parametrize("encoding", [
    EncodingConfig(kind="learned", num_bands=4), EncodingConfig(kind="none"),
    EncodingConfig(num_bands=4, spacing="log", max_resolution=6, concat_raw_position=False)])
def test_no_op_is_silently_uncounted(arch, encoding):
    counts = count_flops(small_model(arch, encoding), torch.randn(1, 64, 3),
                         grid_positions((8, 8)).expand(1, -1, -1))
    assert counts["unsupported_ops"] == {}
    assert sum(counts["breakdown"].values()) == counts["flops"] > 0


def test_first_query_projection_is_computed_once_per_batch():
    """The learned latents are the same for every example: their first norm and query
    projection run once per batch, everything else once per example."""
    model = small_model("perceiver")  # N=16, D=32, qk = 3 + 2 * (2 * 4 + 1) = 21
    pos = grid_positions((8, 8))
    one, four = (count_flops(model, torch.randn(b, 64, 3), pos)["flops"] for b in (1, 4))
    assert four == 4 * one - 3 * 2 * 16 * 32 * 21


def test_flops_command_json_and_table(capsys):
    assert main(["flops", "model.num_cross_attends=1", "--preset", "paper-imagenet",
                 "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["params"] == 42_135_859 and counts["unsupported_ops"] == {}
    assert set(counts["breakdown"]) >= {"cross_attends", "latent_transformer", "head"}
    assert main(["flops", "--preset", "paper-imagenet"]) == 0
    out = capsys.readouterr().out
    assert "44.9M" in out and "706.3B" in out and "unsupported ops: none" in out
    assert main(["flops", "model.arch=resnet"]) == 0  # Fashion-MNIST default, CNN baseline
    assert "stages" in capsys.readouterr().out


def test_flops_command_rejects_bad_configs(capsys):
    assert main(["flops", "model.arch=vit", "model.vit_patch_size=5"]) == 2
    assert "vit_patch_size=5 must divide" in capsys.readouterr().err
