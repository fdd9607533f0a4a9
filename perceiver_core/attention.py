"""Pre-LayerNorm residual attention layers: the Perceiver's cross-attend and self-attend.

Both are `x + Attention(LN(x), ...)` followed by `x + MLP(LN(x))` (paper sec. 2, appendix).
Attention never keeps an (N, M) matrix for backward: it runs through
`F.scaled_dot_product_attention` (fused flash / memory-efficient kernels, which recompute
the weights in backward), or, for a folded cross-attend on CPU, through InputAttention,
which does the same in chunks of BLAS calls. The explicit path that materialises the
attention maps runs only when they are asked for.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceiver_core.config import ConfigError


def attend(q: Tensor, k: Tensor, v: Tensor, return_attention: bool = False,
           scale: float | None = None):
    """softmax(q k^T * scale) v over (..., heads, len, d) tensors -> (out, maps or None);
    scale defaults to 1/sqrt(d).

    q may lack the leading batch dims of k and v (the learned latents, shared by the
    batch). maps = {"logits": pre-softmax scores, "weights": softmax rows}, each
    (..., heads, Nq, Nk).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not return_attention:
        return sdpa(q.expand(*k.shape[:-2], *q.shape[-2:]), k, v, scale), None
    logits = (q @ k.transpose(-2, -1)) * scale
    weights = logits.float().softmax(dim=-1)  # fp32 under autocast too: maps are for analysis
    return weights.to(v.dtype) @ v, {"logits": logits, "weights": weights}


def sdpa(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """F.scaled_dot_product_attention. On CUDA, head widths are zero-padded to a multiple of
    8, which the flash and memory-efficient kernels need: the paper's 261-channel
    cross-attend would otherwise take the math kernel, which materialises the (N, M)
    attention matrix."""
    width, v_width = q.shape[-1], v.shape[-1]
    if q.device.type != "cuda" or (width % 8 == 0 and v_width % 8 == 0):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    q, k = (F.pad(t, (0, -width % 8)) for t in (q, k))
    out = F.scaled_dot_product_attention(q, k, F.pad(v, (0, -v_width % 8)), scale=scale)
    return out[..., :v_width]


# InputAttention works in blocks: all N query rows of a group of examples against up to
# BLOCK_ELEMENTS // N of their inputs (a softmax carried across blocks, as in flash
# attention), so a block's weights stay within BLOCK_ELEMENTS (16 MiB in fp32) and every
# input is read from memory once per pass whatever M: time linear in M.
BLOCK_ELEMENTS = 1 << 22
# Logits more than FLOOR below their row's maximum count as FLOOR: weights under e^-50
# (< 2e-22, a relative error below M x 2e-22 in the output) would otherwise end as
# subnormal floats, which x86 handles far slower in exp, GEMMs and products
# (docs/performance.md, "Subnormals").
FLOOR = -50.0


def blocks(q: Tensor, x: Tensor) -> list[tuple[slice, list[slice]]]:
    """[(example slice, [input slices])] covering q (G, N, d) against x (G, M, d)."""
    (examples, n, _), m = q.shape, x.shape[1]
    cols = min(m, max(1, BLOCK_ELEMENTS // n))
    group = max(1, BLOCK_ELEMENTS // (n * cols))
    inputs = [slice(c, c + cols) for c in range(0, m, cols)]
    return [(slice(e, e + group), inputs) for e in range(0, examples, group)]


def floored_exp_(logits: Tensor, shift: Tensor) -> Tensor:
    return logits.sub_(shift).clamp_min_(FLOOR).exp_()


class InputAttention(torch.autograd.Function):
    """softmax(q x^T) x for inputs x (..., M, d) that need no gradient, as in a folded
    cross-attend (x = [normalised inputs, 1]); q (..., N, d) has x's leading dims and
    carries the scale. On CPU this beats SDPA's flash kernel, which keeps no weights either
    but runs its own small-tile loops and computes gradients for x: here each block (see
    `blocks`) is a few BLAS calls (forward: logits, weights @ x; backward recomputes the
    weights from the saved row log-sum-exps, then dP = dout x^T and dq += dS x). What that
    gains over SDPA, at which shapes: docs/performance.md, "InputAttention"."""

    @staticmethod
    def forward(q: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(out, lse): lse, the rows' log-sum-exps, is an output only so that backward
        can have it (setup_context sees inputs and outputs, which vmap needs)."""
        shape = (*q.shape[:-1], x.shape[-1])
        q, x = q.reshape(-1, *q.shape[-2:]), x.reshape(-1, *x.shape[-2:])
        out = q.new_zeros(*q.shape[:-1], x.shape[-1])
        lse = q.new_empty(*q.shape[:-1], 1)
        for e, inputs in blocks(q, x):  # softmax state: running row max, sum, weighted sum
            peak, total, acc = torch.full_like(lse[e], -math.inf), torch.zeros_like(lse[e]), out[e]
            for c in inputs:
                weights = q[e] @ x[e, c].transpose(-2, -1)
                new_peak = torch.maximum(peak, weights.amax(dim=-1, keepdim=True))
                rescale = floored_exp_(peak, new_peak)  # what earlier blocks summed
                floored_exp_(weights, new_peak)
                total.mul_(rescale).add_(weights.sum(dim=-1, keepdim=True))
                acc.mul_(rescale).baddbmm_(weights, x[e, c])
                peak = new_peak
            acc.div_(total)
            lse[e] = peak + total.log()
        return out.view(shape), lse.view(*shape[:-1], 1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        q, x = inputs
        out, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, x, out, lse)

    @staticmethod
    def vmap(info, in_dims, q: Tensor, x: Tensor):
        """Under torch.func.vmap (a seed pack's stacked models, experiments/packing.py) the
        mapped dimension is one more leading dim of the same kernel."""
        q, x = (t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
                for t, d in zip((q, x), in_dims, strict=True))
        return InputAttention.apply(q, x), (0, 0)

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None = None):
        q, x, out, lse = ctx.saved_tensors
        q_shape = q.shape
        q, x = q.reshape(-1, *q.shape[-2:]), x.reshape(-1, *x.shape[-2:])
        out, lse = out.reshape(*q.shape[:-1], -1), lse.reshape(*q.shape[:-1], 1)
        grad_out = grad_out.reshape(out.shape)
        delta = (grad_out * out).sum(dim=-1, keepdim=True)  # rowsum(dP * P)
        grad_q = torch.zeros_like(q)
        for e, inputs in blocks(q, x):
            for c in inputs:
                xt = x[e, c].transpose(-2, -1)
                weights = floored_exp_(q[e] @ xt, lse[e])
                grad_logits = (grad_out[e] @ xt).sub_(delta[e]).mul_(weights)
                grad_q[e].baddbmm_(grad_logits, x[e, c])
        return grad_q.view(q_shape), None


def attend_inputs(q: Tensor, x: Tensor, scale: float) -> Tensor:
    """softmax(q x^T * scale) x for inputs x (B, heads, M, d) that need no gradient; q may
    lack x's batch dims."""
    q = q.expand(*x.shape[:-2], *q.shape[-2:])
    if x.device.type == "cpu" and q.dtype in (torch.float32, torch.float64):
        return InputAttention.apply(q * scale, x)[0]
    return sdpa(q, x, x, scale)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(..., L, heads * d) -> (..., heads, L, d), a view."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """(..., heads, L, d) -> (..., L, heads * d)."""
    return x.transpose(-3, -2).flatten(-2)


class MLP(nn.Module):
    """x + Linear(GELU(Linear(LN(x)))); widening factor 1 in the paper (no bottleneck)."""

    def __init__(self, channels: int, widening_factor: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, widening_factor * channels)
        self.proj = nn.Linear(widening_factor * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(F.gelu(self.fc(self.norm(x))))


class CrossAttend(nn.Module):
    """Latents (N, D) attend to inputs (B, M, C): the asymmetric attention of the paper.

    q from LN(latents) with qk_channels, fused k/v from LN(inputs) with qk_channels and
    v_channels, output projected back to D; then the MLP. The latents may come in unbatched
    (N, D) (the learned initial array): their norm and query projection then run once for
    the whole batch, never on B copies of the array.

    With one head and k/v at least as wide as the inputs (the paper's choice: qk = v = C),
    the M keys and values are never projected. LN(x) = n(x) * g + b with n the plain
    normalisation; with x' = [n(x), 1] and W'_k = [W_k diag(g) | W_k b + b_k],
    q k_j^T = (q W'_k) x'_j^T and sum_j a_j (W'_v x'_j) = W'_v sum_j a_j x'_j, so attention
    runs over x' itself with the query folded through W'_k and W'_v applied to its N
    outputs: the same function, parameters and gradients (up to rounding), without the
    (B, M, qk + v) projection, its backward and its activations, and x' needs no gradient
    (InputAttention). The FLOP count (perceiver_core/accounting.py) counts the projected
    form, as the paper does.
    """

    def __init__(self, latent_channels: int, input_channels: int, qk_channels: int,
                 v_channels: int, heads: int, widening_factor: int):
        super().__init__()
        self.heads, self.qk_channels = heads, qk_channels
        self.latent_norm = nn.LayerNorm(latent_channels)
        self.input_norm = nn.LayerNorm(input_channels)
        self.q = nn.Linear(latent_channels, qk_channels)
        self.kv = nn.Linear(input_channels, qk_channels + v_channels)
        self.out = nn.Linear(v_channels, latent_channels)
        self.mlp = MLP(latent_channels, widening_factor)
        self.foldable = heads == 1 and min(qk_channels, v_channels) >= input_channels

    def keys_values(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """(k, v), each (B, heads, M, d), from LN(inputs): the part of the cross-attend that
        scales with M besides the attention itself. Folded: k = v = [n(inputs), 1]."""
        if self.foldable:
            norm = self.input_norm
            x = F.layer_norm(inputs, norm.normalized_shape, eps=norm.eps)
            x = F.pad(x, (0, 1), value=1.0).unsqueeze(-3)
            return x, x
        x = self.input_norm(inputs)
        k, v = self.kv(x).split([self.qk_channels, self.kv.out_features - self.qk_channels],
                                dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def forward(self, latents: Tensor, keys_values: tuple[Tensor, Tensor],
                return_attention: bool = False):
        """`keys_values` = self.keys_values(inputs), computed apart so that cross-attends
        sharing these weights compute it once."""
        q = split_heads(self.q(self.latent_norm(latents)), self.heads)
        k, v = keys_values
        if self.foldable:  # one head: (..., 1, N, qk) -> (..., 1, N, C + 1) and back
            weight, norm = self.kv.weight, self.input_norm
            w = torch.cat([weight * norm.weight, (weight @ norm.bias + self.kv.bias)[:, None]],
                          dim=1)
            w_k, w_v = w[:self.qk_channels], w[self.qk_channels:]
            scale = self.qk_channels ** -0.5
            if return_attention:
                out, maps = attend(q @ w_k, k, v, return_attention, scale)
            else:
                out, maps = attend_inputs(q @ w_k, k, scale), None
            out = out @ w_v.T
        else:
            out, maps = attend(q, k, v, return_attention)  # unbatched q broadcasts
        latents = latents + self.out(merge_heads(out))
        return self.mlp(latents), maps


class SelfAttend(nn.Module):
    """Multi-head self-attention over (B, L, D) with one fused qkv projection; then the MLP."""

    def __init__(self, channels: int, heads: int, widening_factor: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.mlp = MLP(channels, widening_factor)

    def forward(self, x: Tensor) -> Tensor:
        # (B, L, 3, heads, d) unbound on the 3: the backward stacks the three gradients
        # straight into the (B, L, 3D) layout the qkv weight gradient needs (a split on the
        # heads axis costs a second copy).
        qkv = self.qkv(self.norm(x)).unflatten(-1, (3, self.heads, -1)).unbind(-3)
        q, k, v = (t.transpose(-3, -2) for t in qkv)
        out, _ = attend(q, k, v)
        return self.mlp(x + self.out(merge_heads(out)))


def check_heads(name: str, channels: int, heads: int, hint: str) -> None:
    """Raised at build time: widths that depend on the data cannot be checked in the config."""
    if channels % heads:
        raise ConfigError(f"{name}={channels} is not divisible by {heads} heads; {hint}")
