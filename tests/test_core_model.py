"""perceiver_core: position features, the Perceiver's structure, attention maps, baselines."""

import math

import pytest
import torch

from perceiver_core import (
    ConfigError,
    EncodingConfig,
    ModelConfig,
    attention,
    build_model,
    fourier_features,
    grid_positions,
)
from perceiver_core.model import schedule

SMALL = dict(num_latents=16, latent_channels=32, num_blocks=4, self_attends_per_block=2,
             num_cross_attends=4, latent_heads=4, num_classes=10)
ENC = EncodingConfig(num_bands=4)


def small(seed=0, index_shape=(8, 8), channels=3, encoding=ENC, **overrides):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**SMALL, **overrides})
    return build_model(cfg, encoding, channels, index_shape)


def batch(index_shape=(8, 8), channels=3, size=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(size, math.prod(index_shape), channels, generator=gen), \
        grid_positions(index_shape)


def test_grid_positions_are_row_major_and_span_minus_one_to_one():
    pos = grid_positions((2, 3))
    expected = [[-1, -1], [-1, 0], [-1, 1], [1, -1], [1, 0], [1, 1]]
    assert pos.tolist() == expected
    assert grid_positions((5,)).squeeze(1).tolist() == [-1, -0.5, 0, 0.5, 1]
    assert grid_positions((2, 3, 4)).shape == (24, 3)


def test_fourier_features_match_the_paper_formula():
    pos = torch.tensor([[0.5, -0.25]])
    feats = fourier_features(pos, num_bands=3, max_resolution=[4, 8])
    assert feats.shape == (1, 2 * (2 * 3 + 1))
    freqs = torch.tensor([[1.0, 1.5, 2.0], [1.0, 2.5, 4.0]])  # linspace(1, mu_d / 2, K)
    angles = (math.pi * pos[0, :, None] * freqs).flatten()
    torch.testing.assert_close(feats[0], torch.cat([pos[0], angles.sin(), angles.cos()]))
    log = fourier_features(pos, num_bands=3, max_resolution=16, spacing="log")
    log_angles = math.pi * 0.5 * torch.tensor([1.0, 8 ** 0.5, 8.0])  # geometric 1 .. 8
    torch.testing.assert_close(log[0, 2:5], log_angles.sin())


def test_fourier_features_batch_and_dimension_agnostic():
    pos = torch.rand(3, 10, 3) * 2 - 1  # e.g. point clouds, per example
    feats = fourier_features(pos, 5, 12.0)
    assert feats.shape == (3, 10, 3 * 11)
    torch.testing.assert_close(feats[1], fourier_features(pos[1], 5, 12.0))
    with pytest.raises(ConfigError, match="3 dimensions"):
        fourier_features(pos, 5, [12.0, 12.0])


def test_null_max_resolution_is_the_inputs_own_resolution():
    model = small(index_shape=(6, 10), encoding=EncodingConfig(num_bands=4, max_resolution=None))
    pos = grid_positions((6, 10))
    torch.testing.assert_close(model.position.features(pos),
                               fourier_features(pos, 4, [6.0, 10.0]))


@pytest.mark.parametrize("kind, channels", [("fourier", 2 * 9), ("learned", 2 * 9), ("none", 0)])
def test_position_encodings_concatenate_equal_widths(kind, channels):
    model = small(encoding=EncodingConfig(kind=kind, num_bands=4))
    assert model.position.channels == channels
    inputs, pos = batch()
    assert model.position(inputs, pos).shape == (2, 64, 3 + channels)
    learned = sum(p.numel() for p in model.position.parameters())
    assert learned == (64 * channels if kind == "learned" else 0)
    assert model(inputs, pos).shape == (2, 10)


def test_cross_attend_widths_default_to_the_paper_choice():
    with torch.device("meta"):  # the paper's ImageNet model, shapes only
        model = build_model(ModelConfig(), EncodingConfig(max_resolution=224), 3, (224, 224))
    cross = model.cross_attends[0]
    assert model.position.channels == 258 and cross.input_norm.normalized_shape == (261,)
    assert (cross.q.in_features, cross.q.out_features) == (1024, 261)  # min(261, 1024)
    assert (cross.kv.in_features, cross.kv.out_features) == (261, 2 * 261)
    assert (cross.out.in_features, cross.out.out_features) == (261, 1024)
    assert cross.heads == 1 and model.latent_transformer[0][0].heads == 8
    assert (cross.mlp.fc.out_features, model.latent_transformer[0][0].mlp.fc.out_features) \
        == (1024, 1024)  # widening factor 1
    assert model.latents.shape == (512, 1024) and model.head.out_features == 1000


def test_latents_are_a_truncated_normal_with_the_init_scale():
    model = small(num_latents=512, latent_channels=128, init_scale=0.05)
    latents = model.latents.detach()
    assert latents.abs().max() <= 2 * 0.05
    # std of a normal truncated at +-2 sigma is 0.880 sigma
    assert latents.std().item() == pytest.approx(0.880 * 0.05, rel=0.03)


@pytest.mark.parametrize("overrides, order", [
    (dict(), "C B C B C B C B"),
    (dict(num_cross_attends=2), "C B B C B B"),
    (dict(num_cross_attends=3), "C B C B C B B"),
    (dict(cross_attend_placement="at_start", num_cross_attends=3), "C C C B B B B"),
    (dict(num_blocks=0), "C C C C"),
])
def test_schedule_places_cross_attends(overrides, order):
    cfg = ModelConfig(**{**SMALL, **overrides})
    steps = schedule(cfg)
    assert " ".join(kind[0].upper() for kind, _ in steps) == order
    assert [i for kind, i in steps if kind == "cross"] == list(range(cfg.num_cross_attends))


def test_weight_sharing_reuses_module_objects():
    model = small()
    cross, blocks = model.cross_attends, model.latent_transformer
    assert cross[0] is not cross[1] and cross[1] is cross[2] is cross[3]
    assert all(block is blocks[0] for block in blocks)
    assert blocks[0][0] is not blocks[0][1]  # layers within a block differ
    unshared = small(share_cross_attends=False, share_latent_blocks=False)
    assert len({id(c) for c in unshared.cross_attends}) == 4
    assert len({id(b) for b in unshared.latent_transformer}) == 4
    count = lambda m: sum(p.numel() for p in m.parameters())
    one_cross = count(model.cross_attends[0])
    one_block = count(model.latent_transformer[0])
    assert count(unshared) - count(model) == 2 * one_cross + 3 * one_block


@pytest.mark.parametrize("folded", [True, False])
def test_shared_cross_attends_compute_keys_and_values_once(folded, monkeypatch):
    """Cross-attends 2..4 share weights and inputs: one projection for them, same logits
    and gradients as projecting for every cross-attend. Folded cross-attends attend to the
    parameter-free [n(x), 1]: one for all of them, the unshared first one included."""
    from perceiver_core.attention import CrossAttend

    model = small()
    for cross in model.cross_attends:
        cross.foldable = folded
    inputs, pos = batch()

    def per_layer():  # every cross-attend projects its own keys and values
        x, z = model.position(inputs, pos), model.latents
        for kind, i in model.schedule:
            if kind == "cross":
                cross = model.cross_attends[i]
                z, _ = cross(z, cross.keys_values(x))
            else:
                for layer in model.latent_transformer[i]:
                    z = layer(z)
        return model.head(z.mean(dim=-2))

    expected = per_layer()
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    calls = []
    original = CrossAttend.keys_values
    monkeypatch.setattr(CrossAttend, "keys_values",
                        lambda self, x: calls.append(self) or original(self, x))
    logits = model(inputs, pos)
    modules = model.cross_attends[:1] if folded else model.cross_attends[:2]
    assert [id(c) for c in calls] == [id(c) for c in modules]
    torch.testing.assert_close(logits, expected)
    grads = torch.autograd.grad(logits.square().sum(), list(model.parameters()))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


def test_folded_cross_attends_compute_the_projected_function():
    """One head, qk = v = C: attention over [n(x), 1] with W_k and the input norm's affine
    folded into the query and W_v applied after is the paper's cross-attend: same logits,
    maps and gradients (with weights moved off their init, so the norms' gains and biases
    are not 1 and 0)."""
    model = small().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.3)
    inputs, pos = (t.double() for t in batch())
    assert all(cross.foldable for cross in model.cross_attends)

    def run():
        logits, maps = model(inputs, pos, return_attention=True)
        grads = torch.autograd.grad(model(inputs, pos).square().sum(), list(model.parameters()))
        return logits, [m["logits"] for m in maps], [m["weights"] for m in maps], grads

    folded = run()
    for cross in model.cross_attends:
        cross.foldable = False
    projected = run()
    for got, expected in zip(folded, projected, strict=True):  # key biases' are 0 +- 1e-12
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert not small(cross_heads=3).cross_attends[0].foldable  # per-head widths differ
    assert not small(cross_qk_channels=8).cross_attends[0].foldable  # qk < C: project


def test_the_paper_form_is_the_same_function_and_counting_leaves_the_model_alone():
    """The FLOP count traces paper_form(model), in which cross-attends 2..4 are separate,
    unfolded modules on the model's own weights: it must compute the model's logits, and
    counting must neither copy weights nor change the model (sharing, folding)."""
    from perceiver_core.accounting import count_flops, paper_form

    model = small()
    inputs, pos = batch()
    form = paper_form(model)
    assert len({id(c) for c in model.cross_attends}) == 2
    assert len({id(c) for c in form.cross_attends}) == 4
    assert not any(c.foldable for c in form.cross_attends)
    assert {id(p) for p in form.parameters()} == {id(p) for p in model.parameters()}
    torch.testing.assert_close(form(inputs, pos), model(inputs, pos))
    count_flops(model, inputs, pos)
    assert len({id(c) for c in model.cross_attends}) == 2
    assert all(c.foldable for c in model.cross_attends)


# one block; blocks of one example and 20 of its 64 inputs (a softmax across 4 blocks)
@pytest.mark.parametrize("elements", [1 << 22, 400])
def test_input_attention_is_attention_with_a_gradient_for_the_queries_only(elements,
                                                                          monkeypatch):
    monkeypatch.setattr(attention, "BLOCK_ELEMENTS", elements)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 20, 9, dtype=torch.float64, generator=generator) * 3
    x = torch.randn(3, 1, 64, 9, dtype=torch.float64, generator=generator)
    q.requires_grad_(True)
    got = attention.attend_inputs(q, x, 0.5)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.expand(3, -1, -1, -1), x, x, scale=0.5)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn(got.shape, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(torch.autograd.grad(got, q, grad)[0],
                               torch.autograd.grad(expected, q, grad)[0], rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda q: attention.attend_inputs(q, x, 0.5), (q,))
    # sharp rows (logits hundreds apart): weights under e^-50 count as e^-50, to ~1e-20
    sharp = attention.attend_inputs(q.detach() * 30, x, 1.0)
    torch.testing.assert_close(sharp, torch.nn.functional.scaled_dot_product_attention(
        q.detach().expand(3, -1, -1, -1) * 30, x, x, scale=1.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_mapped", [True, False])
def test_input_attention_under_vmap_is_each_slice_alone(x_mapped):
    """torch.func.vmap over stacked queries (a seed pack's models, experiments/packing.py)
    runs the kernel once with one more leading dim (its vmap rule): the same numbers and
    query gradients as each slice on its own, for inputs mapped or shared."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(4, 3, 1, 20, 9, dtype=torch.float64, generator=generator)
    x = torch.randn(*((4,) if x_mapped else ()), 3, 1, 64, 9, dtype=torch.float64,
                    generator=generator)
    q.requires_grad_(True)
    got = torch.func.vmap(lambda q, x: attention.attend_inputs(q, x, 0.5),
                          in_dims=(0, 0 if x_mapped else None))(q, x)
    alone = torch.stack([attention.attend_inputs(q[k], x[k] if x_mapped else x, 0.5)
                         for k in range(4)])
    torch.testing.assert_close(got, alone, rtol=1e-12, atol=1e-12)
    grad = torch.randn(got.shape, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(torch.autograd.grad(got, q, grad)[0],
                               torch.autograd.grad(alone, q, grad)[0], rtol=1e-12, atol=1e-12)


def test_every_parameter_gets_a_gradient():
    model = small()
    inputs, pos = batch()
    model(inputs, pos).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_permuting_inputs_with_positions_leaves_logits_unchanged():
    model = small()
    inputs, pos = batch()
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    logits = model(inputs, pos)
    torch.testing.assert_close(model(inputs[:, perm], pos[perm]), logits, atol=1e-5, rtol=1e-5)
    scrambled = model(inputs[:, perm], pos)  # pixels moved, positions kept: a new image
    assert (scrambled - logits).abs().max() > 1e-3


def test_per_example_positions_match_shared_positions():
    model = small()
    inputs, pos = batch()
    shifted = torch.stack([pos, pos * 0.5])
    out = model(inputs, shifted)
    torch.testing.assert_close(out[0], model(inputs[:1], pos)[0])
    torch.testing.assert_close(out[1], model(inputs[1:], pos * 0.5)[0])


@pytest.mark.parametrize("index_shape", [(50,), (4, 5, 6)])
def test_any_number_of_position_dimensions(index_shape):
    model = small(index_shape=index_shape, channels=2)
    inputs, pos = batch(index_shape, channels=2)
    assert model.position.channels == len(index_shape) * 9
    assert model(inputs, pos).shape == (2, 10)


def test_attention_maps_are_softmax_rows_and_match_the_fast_path():
    model = small(cross_heads=3, cross_qk_channels=12, cross_v_channels=9)
    inputs, pos = batch()
    logits, maps = model(inputs, pos, return_attention=True)
    torch.testing.assert_close(logits, model(inputs, pos), atol=1e-5, rtol=1e-5)
    assert len(maps) == 4
    for m in maps:
        assert m["logits"].shape == m["weights"].shape == (2, 3, 16, 64)
        torch.testing.assert_close(m["weights"].sum(-1), torch.ones(2, 3, 16))
        torch.testing.assert_close(m["weights"], m["logits"].softmax(-1))
    assert not torch.allclose(maps[0]["weights"], maps[1]["weights"])


def test_bf16_autocast_forward_runs_on_cpu():
    model = small()
    inputs, pos = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs, pos)
        _, maps = model(inputs, pos, return_attention=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), model(inputs, pos), atol=0.05, rtol=0.05)
    assert torch.isfinite(maps[0]["weights"]).all()


def test_same_seed_same_model_and_logits():
    inputs, pos = batch()
    a, b = small(seed=7), small(seed=7)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(a(inputs, pos), b(inputs, pos))
    assert not torch.equal(small(seed=8).latents, a.latents)


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_baselines_see_the_grid_and_are_not_permutation_invariant(arch):
    model = small(arch=arch, baseline_width=16, vit_depth=2)
    inputs, pos = batch()
    logits = model(inputs, pos)
    assert logits.shape == (2, 10)
    assert model.grid(inputs, pos).shape == (2, 3 + 18, 8, 8)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    assert (model(inputs[:, perm], pos[perm]) - logits).abs().max() > 1e-4


@pytest.mark.parametrize("build, message", [
    (lambda: small(arch="resnet", index_shape=(64,)), "needs a 2D index_shape"),
    (lambda: small(arch="vit", index_shape=(3, 4, 5)), "needs a 2D index_shape"),
    (lambda: small(arch="vit", vit_patch_size=3), "vit_patch_size=3 must divide"),
    (lambda: small(cross_heads=2), "21 is not divisible by 2 heads"),
    (lambda: small(cross_heads=2, cross_qk_channels=8, cross_v_channels=5),
     "v channels=5 is not divisible"),
    (lambda: ModelConfig(arch="vit", baseline_width=30, vit_heads=4), "divisible by"),
    (lambda: small(channels=0), "input_channels=0"),
])
def test_unbuildable_models_raise_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()
