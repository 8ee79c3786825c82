"""Non-causal multi-head self-attention with rotary positions."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._config import AttentionKernel
from ._layers import CastedLinear

Rope = tuple[Tensor, Tensor]


def rotary_cos_sin(head_dim: int, length: int, theta: float, device: torch.device) -> Rope:
    """float32 ``(cos, sin)`` tables of shape ``[length, head_dim]``, halves repeated."""
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    )
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, rope: Rope) -> Tensor:
    """Rotate ``x`` of shape ``[B, S, heads, head_dim]`` in float32."""
    cos, sin = (t.unsqueeze(-2) for t in rope)
    x32 = x.float()
    return (x32 * cos + _rotate_half(x32) * sin).to(x.dtype)


def _math_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


def attention_core(
    qkv: Tensor, rope: Rope | None, num_heads: int, kernel: AttentionKernel
) -> Tensor:
    """From the fused ``[B, S, 3 * width]`` projections to the attended ``[B, S, width]``:
    rotary on q and k, then attention. Everything between the two linear layers, as one
    function so that `TRM.compile_regions` can compile it."""
    batch, length, width = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = qkv.view(batch, length, 3, num_heads, -1).unbind(dim=2)
    if rope is not None:
        q, k = apply_rotary(q, rope), apply_rotary(k, rope)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    attend = F.scaled_dot_product_attention if kernel == "sdpa" else _math_attention
    out: Tensor = attend(q, k, v)
    return out.transpose(1, 2).reshape(batch, length, width)


AttentionCore = Callable[[Tensor, Rope | None, int, AttentionKernel], Tensor]


class Attention(nn.Module):
    """Self-attention with a fused q/k/v projection (q rows, then k, then v) and no biases."""

    def __init__(self, hidden_size: int, num_heads: int, kernel: AttentionKernel) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kernel = kernel
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)
        # A plain function attribute: `TRM.compile_regions` swaps in its compiled version.
        self.core: AttentionCore = attention_core

    def forward(self, x: Tensor, rope: Rope | None) -> Tensor:
        qkv: Tensor = self.qkv_proj(x)
        projected: Tensor = self.o_proj(self.core(qkv, rope, self.num_heads, self.kernel))
        return projected
