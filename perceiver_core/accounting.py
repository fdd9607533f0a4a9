"""Params and FLOPs with fvcore, in the paper's convention (PAPER.md, "How the paper counts").

The paper counts matmuls only, 1 multiply-add = 2 FLOPs. fvcore counts 1 multiply-add as 1
(`macs` here) and traces the model with torch.jit, but it silently counts ops it has no
handle for as 0 -- including `aten::scaled_dot_product_attention`, i.e. all of attention.
So every op the models emit gets an explicit handle: SDPA its two matmuls, and the
elementwise / normalisation / data-movement ops zero (fvcore's own LayerNorm and BatchNorm
estimates are replaced too, so `flops` is matmuls only, as in the paper, and agrees
exactly with torch.utils.flop_counter). An op nobody thought of lands in
`unsupported_ops`, which the tests require to be empty for every architecture.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

# Ops the models emit that cost no matmul FLOPs in the paper's convention (fvcore already
# ignores pure data movement such as view, transpose, cat, expand, relu).
ZERO_COST_OPS = (
    "aten::add", "aten::add_", "aten::mul", "aten::mean", "aten::gelu",  # elementwise
    "aten::sin", "aten::cos", "aten::linspace", "aten::logspace",  # Fourier features
    "aten::layer_norm", "aten::batch_norm",  # fvcore's estimates replaced: the paper counts none
    "aten::unflatten",  # a view
)


def sdpa_macs(inputs: list, outputs: list) -> int:
    """q (..., L, E), k (..., S, E), v (..., S, Ev): q k^T then weights v, L*S*(E+Ev) MACs
    per batch-and-head (batch dims broadcast, read off the output (..., L, Ev))."""
    q, k, out = (value.type().sizes() for value in (inputs[0], inputs[1], outputs[0]))
    return math.prod(out[:-2]) * q[-2] * k[-2] * (q[-1] + out[-1])


def zero_macs(inputs: list, outputs: list) -> int:
    return 0


def human(count: float | None) -> str:
    """404.3e9 -> '404.3B', 44.9e6 -> '44.9M', 640 -> '640', None/NaN -> '-': the paper's
    way of writing parameter and FLOP counts."""
    if count is None or math.isnan(count):
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= scale:
            return f"{count / scale:.1f}{suffix}"
    return f"{count:.0f}"


def count_params(model: nn.Module) -> int:
    """Each parameter once, however many times it is shared."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: Tensor, positions: Tensor) -> dict[str, Any]:
    """{params, macs, flops = 2 * macs, unsupported_ops, breakdown (FLOPs per top-level part)}
    for one forward pass on `inputs` (any device, including meta; the CNN baseline needs
    real tensors, as torch.jit cannot trace convolutions on meta)."""
    with warnings.catch_warnings():  # fvcore.nn jit-scripts a loss at import: deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
    analysis = FlopCountAnalysis(model, (inputs, positions))
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
    analysis.set_op_handle(**{op: zero_macs for op in ZERO_COST_OPS})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        macs = analysis.total()
        per_module = analysis.by_module()
    return {
        "params": count_params(model),
        "macs": int(macs),
        "flops": 2 * int(macs),
        "unsupported_ops": dict(analysis.unsupported_ops()),
        "breakdown": {name: 2 * int(per_module[name]) for name, _ in model.named_children()},
    }
