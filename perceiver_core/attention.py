"""Pre-LayerNorm residual attention layers: the Perceiver's cross-attend and self-attend.

Both are `x + Attention(LN(x), ...)` followed by `x + MLP(LN(x))` (paper sec. 2, appendix).
Attention never keeps an (N, M) matrix for backward: it runs through
`F.scaled_dot_product_attention` (fused flash / memory-efficient kernels), or on CPU, when
there are too few batch x heads to keep every core busy in that kernel, through
GemmAttention (large matmuls, weights recomputed in backward). The explicit path that
materialises the attention maps runs only when they are asked for.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceiver_core.config import ConfigError

# GemmAttention holds at most this many attention weights at a time (256 MiB in fp32).
CHUNK_ELEMENTS = 2**26


def attend(q: Tensor, k: Tensor, v: Tensor, return_attention: bool = False):
    """softmax(q k^T / sqrt(d)) v over (..., heads, len, d) tensors -> (out, maps or None).

    q may lack the leading batch dims of k and v (the learned latents, shared by the
    batch). maps = {"logits": pre-softmax scores, "weights": softmax rows}, each
    (..., heads, Nq, Nk).
    """
    if not return_attention:
        # fp32 only (bf16 softmax over M inputs is too coarse); fvcore's FLOP count traces
        # with torch.jit and so gets the SDPA op, which it knows how to count.
        few = math.prod(k.shape[:-2]) < 2 * torch.get_num_threads()
        full_precision = torch.finfo(k.dtype).bits >= 32
        if k.device.type == "cpu" and few and full_precision and not torch.jit.is_tracing():
            return GemmAttention.apply(q, k, v), None
        return sdpa(q.expand(*k.shape[:-2], *q.shape[-2:]), k, v), None
    logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    weights = logits.float().softmax(dim=-1)  # fp32 under autocast too: maps are for analysis
    return weights.to(v.dtype) @ v, {"logits": logits, "weights": weights}


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """F.scaled_dot_product_attention. On CUDA, head widths are zero-padded to a multiple of
    8 (scale kept at 1/sqrt(true width)), which the flash and memory-efficient kernels need:
    the paper's 261-channel cross-attend would otherwise take the math kernel, which
    materialises the (N, M) attention matrix."""
    width, v_width = q.shape[-1], v.shape[-1]
    if q.device.type != "cuda" or (width % 8 == 0 and v_width % 8 == 0):
        return F.scaled_dot_product_attention(q, k, v)
    q, k = (F.pad(t, (0, -width % 8)) for t in (q, k))
    out = F.scaled_dot_product_attention(q, k, F.pad(v, (0, -v_width % 8)), scale=width**-0.5)
    return out[..., :v_width]


class GemmAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d)) v in a few large matmuls, keeping only q, k, v, the output
    and each row's log-sum-exp for backward, which recomputes the weights (as flash
    attention does, but untiled).

    Why: torch's CPU flash kernel parallelises its backward over batch x heads only, in
    small tiles; the cross-attend at batch 1 (one head) ran its backward on one core. These
    matmuls use every core at full-size BLAS efficiency. The (Nq, Nk) weights exist only
    transiently, for as many examples at a time as fit in CHUNK_ELEMENTS.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scale = q.shape[-1] ** -0.5
        out = v.new_empty(*k.shape[:-2], q.shape[-2], v.shape[-1])
        lse = v.new_empty(*k.shape[:-2], q.shape[-2], 1)
        for b in batch_chunks(q, k):
            # In place, and normalising the (Nq, d) output rather than the (Nq, Nk) weights:
            # the fewest passes over the big matrix.
            weights = torch.matmul(rows(q, k, b) * scale, k[b].transpose(-2, -1))
            top = weights.amax(dim=-1, keepdim=True)
            total = weights.sub_(top).exp_().sum(dim=-1, keepdim=True)
            torch.matmul(weights, v[b], out=out[b]).div_(total)
            lse[b] = top + total.log()
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_q = torch.zeros_like(q)
        grad_k, grad_v = torch.empty_like(k), torch.empty_like(v)
        delta = (grad_out * out).sum(-1, keepdim=True)  # rowsum(dO * O) = rowsum(P * dP)
        for b in batch_chunks(q, k):
            q_b = rows(q, k, b) * scale
            weights = torch.matmul(q_b, k[b].transpose(-2, -1)).sub_(lse[b]).exp_()
            torch.matmul(weights.transpose(-2, -1), grad_out[b], out=grad_v[b])
            # dS = P * (dP - delta), with dP = dO v^T; scale folded into q_b and grad_q.
            grad_logits = torch.matmul(grad_out[b], v[b].transpose(-2, -1))
            grad_logits = grad_logits.sub_(delta[b]).mul_(weights)
            torch.matmul(grad_logits.transpose(-2, -1), q_b, out=grad_k[b])
            grad_q_b = torch.matmul(grad_logits, k[b]).mul_(scale)
            if q.dim() < k.dim():  # shared by the batch: sum over it
                grad_q += grad_q_b.sum_to_size(q.shape)
            else:
                grad_q[b] = grad_q_b
        return grad_q, grad_k, grad_v


def batch_chunks(q: Tensor, k: Tensor) -> list[slice]:
    """Slices of k's first dim holding at most CHUNK_ELEMENTS weights (one example at least)."""
    per_example = math.prod(k.shape[1:-2]) * q.shape[-2] * k.shape[-2]
    size = max(1, CHUNK_ELEMENTS // per_example)
    return [slice(i, i + size) for i in range(0, k.shape[0], size)]


def rows(q: Tensor, k: Tensor, b: slice) -> Tensor:
    """q for the examples b of k (q itself when it is shared by the batch)."""
    return q if q.dim() < k.dim() else q[b]


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

    def forward(self, latents: Tensor, inputs: Tensor, return_attention: bool = False):
        q = split_heads(self.q(self.latent_norm(latents)), self.heads)
        k, v = self.kv(self.input_norm(inputs)).split(
            [self.qk_channels, self.kv.out_features - self.qk_channels], dim=-1)
        k, v = split_heads(k, self.heads), split_heads(v, self.heads)
        out, maps = attend(q, k, v, return_attention)  # unbatched q broadcasts over the batch
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
