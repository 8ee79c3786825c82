"""Leaf layers and the functions between them.

Every trainable parameter lives in a :class:`CastedLinear` or :class:`CastedEmbedding`
(subclasses of ``nn.Linear`` / ``nn.Embedding``): Jacobian engines that hook leaf modules
(torchjd's autogram, per-sample-gradient engines) see standard layers fed batch-first
tensors. Parameters stay float32; the forward casts them to the activations' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def trunc_normal_(tensor: Tensor, *, std: float, generator: torch.Generator) -> Tensor:
    """Fill ``tensor`` in place with a normal truncated at +-2 std, std corrected for it.

    ``nn.init.trunc_normal_`` truncates a normal of the given std, so its samples have a
    smaller std; TRM (like JAX/Flax) scales the underlying normal so that the truncated
    samples have exactly ``std``.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        lower, upper = -2.0, 2.0
        sqrt2 = math.sqrt(2.0)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u = c * math.exp(-0.5 * lower**2)
        pdf_l = c * math.exp(-0.5 * upper**2)
        comp_std = std / math.sqrt(
            1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2
        )
        tensor.uniform_(a, b, generator=generator)
        tensor.erfinv_()
        tensor.mul_(sqrt2 * comp_std)
        return tensor.clip_(lower * comp_std, upper * comp_std)


class CastedLinear(nn.Linear):
    """``nn.Linear`` computing in the input's dtype from float32 master weights."""

    def forward(self, input: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(input.dtype)
        return F.linear(input, self.weight.to(input.dtype), bias)

    def reset_parameters_from(self, generator: torch.Generator) -> None:
        """LeCun truncated normal weights (std 1/sqrt(fan_in)), zero bias."""
        trunc_normal_(self.weight, std=self.in_features**-0.5, generator=generator)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()


class CastedEmbedding(nn.Embedding):
    """``nn.Embedding`` whose float32 table is read in the forward dtype."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: torch.dtype) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self.forward_dtype = dtype

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(input, self.weight.to(self.forward_dtype))


def swiglu_width(width: int, expansion: float) -> int:
    """The SwiGLU inner width: round(expansion * width * 2/3), rounded up to 256."""
    inner = round(expansion * width * 2 / 3)
    return -(inner // -256) * 256


class SwiGLU(nn.Module):
    """``down(silu(gate) * up)`` with the gate and up projections fused (gate rows first)."""

    def __init__(self, width: int, expansion: float) -> None:
        super().__init__()
        inner = swiglu_width(width, expansion)
        self.gate_up_proj = CastedLinear(width, 2 * inner, bias=False)
        self.down_proj = CastedLinear(inner, width, bias=False)
        # A plain function attribute: `TRM.compile_regions` swaps in its compiled version.
        self.activation: Callable[[Tensor], Tensor] = swiglu_activation

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.down_proj(self.activation(self.gate_up_proj(x)))
        return out


def swiglu_activation(gate_up: Tensor) -> Tensor:
    """``silu(gate) * up`` from the fused projection (gate first)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """RMS normalisation over the last axis without weight, computed in float32."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return x32.to(x.dtype)


def add_rms_norm(x: Tensor, update: Tensor, eps: float) -> Tensor:
    """``rms_norm(x + update)``: a residual connection and its post-norm."""
    return rms_norm(x + update, eps)


def dropout(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Inverted dropout whose mask comes from ``generator`` (no global RNG)."""
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)
